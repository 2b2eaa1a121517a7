"""channel_inbox, channel_links, channel_link_events: WeChat and Alipay

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "channel_inbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("dedupe_key", sa.String(200), nullable=False),
        sa.Column("conversation_id", sa.String(255), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_try_at", TZ, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("done_at", TZ, nullable=True),
        sa.Column("outcome", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_channel_inbox"),
        sa.UniqueConstraint("channel", "dedupe_key", name="uq_channel_inbox_dedupe"),
        sa.CheckConstraint("status IN ('pending', 'done')", name="ck_channel_inbox_status"),
    )
    for column in ("conversation_id", "status", "next_try_at", "created_at"):
        op.create_index(f"ix_channel_inbox_{column}", "channel_inbox", [column])
    op.create_table(
        "channel_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_channel_links"),
        sa.UniqueConstraint("channel", "external_id", name="uq_channel_links_external"),
    )
    op.create_index("ix_channel_links_user_id", "channel_links", ["user_id"])
    op.create_table(
        "channel_link_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_channel_link_events"),
    )
    op.create_index("ix_channel_link_events_at", "channel_link_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_channel_link_events_at", table_name="channel_link_events")
    op.drop_table("channel_link_events")
    op.drop_index("ix_channel_links_user_id", table_name="channel_links")
    op.drop_table("channel_links")
    for column in ("conversation_id", "status", "next_try_at", "created_at"):
        op.drop_index(f"ix_channel_inbox_{column}", table_name="channel_inbox")
    op.drop_table("channel_inbox")
