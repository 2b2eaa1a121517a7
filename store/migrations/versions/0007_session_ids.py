"""user_sessions.token_id (a session's public name, for listing and revocation); agents.revoked_at

Every session row already there gets its own random token_id (16 url-safe characters, as
accounts.sessions.new_token_id makes them) before the column becomes NOT NULL with its unique
index, so live tokens keep working and each can be revoked. Agents gain `revoked_at` (NULL:
active); revoking keeps the row, since tickets name their agent by id.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""
from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _new_token_id() -> str:
    # The same shape as accounts.sessions.new_token_id (not imported: a migration must not
    # change when application code does).
    return secrets.token_urlsafe(12)


def upgrade() -> None:
    with op.batch_alter_table("user_sessions") as batch:
        batch.add_column(sa.Column("token_id", sa.String(32), nullable=True))
    bind = op.get_bind()
    sessions = sa.table("user_sessions", sa.column("token_hash", sa.String(64)),
                        sa.column("token_id", sa.String(32)))
    hashes = bind.execute(sa.select(sessions.c.token_hash).where(sessions.c.token_id.is_(None))).scalars().all()
    for token_hash in hashes:
        bind.execute(sessions.update().where(sessions.c.token_hash == token_hash)
                     .values(token_id=_new_token_id()))
    with op.batch_alter_table("user_sessions") as batch:
        batch.alter_column("token_id", existing_type=sa.String(32), nullable=False)
        batch.create_index("ix_user_sessions_token_id", ["token_id"], unique=True)
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("revoked_at", TZ, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("revoked_at")
    with op.batch_alter_table("user_sessions") as batch:
        batch.drop_index("ix_user_sessions_token_id")
        batch.drop_column("token_id")
