"""accounts.is_demo: which accounts the demo loader created (HC_DEMO sign-in is for those only)

Existing rows become real accounts (false): the flag is never inferred from a user_id or a
document field, so every account stored before this revision is closed to demo sign-in, and the
demo loader, which never overwrites a real account, leaves it alone. A demo database from
before this revision gets its demo accounts back by deleting those rows (or the database).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite cannot alter a table in place beyond simple cases; PostgreSQL runs a
    # plain ALTER TABLE. The server default fills the rows already there.
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("is_demo", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("is_demo")
