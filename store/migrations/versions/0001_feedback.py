"""feedback: faq_feedback and unanswered_question

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "faq_feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("conversation", sa.String(64), nullable=False),
        sa.Column("faq_id", sa.String(100), nullable=True),
        sa.Column("helpful", sa.Boolean(), nullable=False),
        sa.Column("lang", sa.String(16), nullable=False),
        sa.Column("kb_version", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_faq_feedback"),
    )
    op.create_index("ix_faq_feedback_created_at", "faq_feedback", ["created_at"])
    op.create_index("ix_faq_feedback_conversation", "faq_feedback", ["conversation"])
    op.create_index("ix_faq_feedback_faq_id", "faq_feedback", ["faq_id"])

    op.create_table(
        "unanswered_question",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("conversation", sa.String(64), nullable=False),
        sa.Column("text_masked", sa.Text(), nullable=False),
        sa.Column("text_normalised", sa.String(500), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("candidates", sa.JSON(), nullable=False),
        sa.Column("lang", sa.String(16), nullable=False),
        sa.Column("kb_version", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_unanswered_question"),
        sa.CheckConstraint("decision IN ('none', 'clarify', 'not_helpful')",
                           name="ck_unanswered_question_decision"),
    )
    op.create_index("ix_unanswered_question_created_at", "unanswered_question", ["created_at"])
    op.create_index("ix_unanswered_question_conversation", "unanswered_question", ["conversation"])
    op.create_index("ix_unanswered_question_text_normalised", "unanswered_question", ["text_normalised"])


def downgrade() -> None:
    op.drop_table("unanswered_question")
    op.drop_table("faq_feedback")
