"""The read audit: one account_reads row for every time anybody looks at an account.

Who (actor: "bot", "admin", "agent:3"), when, whose (user_id), in which conversation (a hash:
rows of one conversation group together, the sender id is not stored) and why (purpose). No
row ever holds a name, an ID or a phone number: actor and purpose are short labels, masked
anyway in case a caller passes something personal.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accounts.source import as_utc
from core.pii import conversation_ref, mask_text
from store.models import AccountRead, utcnow


def _label(value: str, limit: int) -> str:
    return mask_text(value or "-")[:limit]


def record_read(session: Session, *, user_id: str, actor: str, purpose: str,
                conversation_id: str | None, found: bool, at: datetime | None = None) -> None:
    """Add the row to the caller's transaction (the read is refused when it cannot be written)."""
    session.add(AccountRead(
        at=at or utcnow(), actor=_label(actor, 64), user_id=user_id[:128], purpose=_label(purpose, 32),
        conversation=None if conversation_id is None else conversation_ref(conversation_id),
        found=bool(found)))


@dataclass(frozen=True)
class ReadEntry:
    at: datetime
    actor: str
    user_id: str
    conversation: str | None
    purpose: str
    found: bool


def reads(sessions: sessionmaker[Session], user_id: str | None = None, *, limit: int = 100) -> list[ReadEntry]:
    """The latest reads, newest first (one user's when user_id is given)."""
    stmt = select(AccountRead).order_by(AccountRead.at.desc(), AccountRead.id.desc()).limit(limit)
    if user_id is not None:
        stmt = stmt.where(AccountRead.user_id == user_id)
    with sessions() as session:
        return [ReadEntry(as_utc(r.at), r.actor, r.user_id, r.conversation, r.purpose, r.found)
                for r in session.scalars(stmt)]
