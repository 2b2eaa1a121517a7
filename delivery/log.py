"""The conversation's message log (store.models.ConversationMessage): append, read after a cursor.

Every text that reaches the table is masked (core.pii.mask_text), button titles too; the id is
the cursor of /chat/messages and of the SSE streams. Synchronous (callers run it in worker
threads); the database is the process's shared one unless configure() points elsewhere.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.pii import mask_text
from store import default_sessions, engine_of, session_factory
from store.models import ConversationMessage

SENDERS = ("user", "bot", "agent", "system")
DELIVERED_SENDERS = ("bot", "agent", "system")     # what /chat/messages?after= and the streams carry
MAX_LIMIT = 500
UNDELIVERED_MAX = 64                               # the column's width

_lock = threading.Lock()
_sessions: sessionmaker[Session] | None = None


def configure(target: Engine | sessionmaker | None) -> None:
    """Use this (migrated) database from now on; None: back to the process's shared one."""
    global _sessions
    with _lock:
        _sessions = target if target is None or isinstance(target, sessionmaker) else session_factory(target)


def sessions() -> sessionmaker[Session]:
    current = _sessions
    return current if current is not None else default_sessions()


@dataclass(frozen=True)
class MessageView:
    """One message as clients see it. `undelivered` (a push channel's short failure reason) is for
    the caller of deliver() and the agent side; it is not part of the user-facing shape."""
    id: str
    sender: str
    text: str
    buttons: list[dict[str, str]] = field(default_factory=list)
    at: str = ""
    ticket_id: str | None = None
    undelivered: str | None = None

    @property
    def cursor(self) -> int:
        return int(self.id)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "from": self.sender, "text": self.text,
                               "buttons": [dict(b) for b in self.buttons], "at": self.at}
        if self.ticket_id is not None:
            out["ticket_id"] = self.ticket_id
        return out


def _iso(at: datetime) -> str:
    if at.tzinfo is None:              # SQLite hands timezone-aware columns back naive (UTC)
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).isoformat()


def _view(row: ConversationMessage) -> MessageView:
    return MessageView(id=str(row.id), sender=row.sender, text=row.text,
                       buttons=[dict(b) for b in row.buttons or []], at=_iso(row.at),
                       ticket_id=row.ticket_id, undelivered=row.undelivered)


def _buttons(buttons: Iterable[dict] | None) -> list[dict[str, str]]:
    out = []
    for button in buttons or ():
        if not isinstance(button, dict):
            raise TypeError("a button is a dict with 'title' and 'payload'")
        out.append({"title": mask_text(str(button.get("title") or "")),
                    "payload": mask_text(str(button.get("payload") or ""))})
    return out


@dataclass(frozen=True)
class NewMessage:
    """One message to store: what append takes, for append_many."""
    sender: str
    text: str
    buttons: Sequence[dict] = ()
    ticket_id: str | None = None
    meta: dict | None = None


def _row(conversation_id: str, m: NewMessage, at: datetime) -> dict[str, Any]:
    if m.sender not in SENDERS:
        raise ValueError(f"sender must be one of {SENDERS}")
    if not conversation_id:
        raise ValueError("conversation_id is required")
    return {"conversation_id": conversation_id, "sender": m.sender, "text": mask_text(m.text or ""),
            "buttons": _buttons(m.buttons), "ticket_id": m.ticket_id, "meta": m.meta, "at": at,
            "undelivered": None}


_TABLE = ConversationMessage.__table__
_INSERT_RETURNING_IDS = insert(_TABLE).returning(_TABLE.c.id, sort_by_parameter_order=True)


def append_many(conversation_id: str, messages: Sequence[NewMessage]) -> list[MessageView]:
    """Store several messages (masked) in one transaction, in order (a whole chat turn: the user's
    text and the bot's replies); publishes nothing."""
    at = datetime.now(timezone.utc)
    rows = [_row(conversation_id, m, at) for m in messages]
    if not rows:
        return []
    # One Core INSERT … RETURNING, built once, on a plain connection: ORM objects through a flush
    # (the unit of work), a new statement per call and a session per call were most of the cost
    # of a chat turn's log write.
    with engine_of(sessions()).begin() as conn:
        ids = conn.execute(_INSERT_RETURNING_IDS, rows).scalars().all()
    return [MessageView(id=str(i), sender=r["sender"], text=r["text"], buttons=[dict(b) for b in r["buttons"]],
                        at=_iso(at), ticket_id=r["ticket_id"]) for i, r in zip(ids, rows)]


def append(conversation_id: str, sender: str, text: str, buttons: Sequence[dict] = (),
           ticket_id: str | None = None, meta: dict | None = None) -> MessageView:
    """Store one message (masked) in the conversation's log and return it; publishes nothing."""
    [view] = append_many(conversation_id, [NewMessage(sender, text, buttons, ticket_id, meta)])
    return view


def mark_undelivered(message: MessageView, reason: str) -> MessageView:
    """Record that a push channel could not deliver `message` (the agent calls back instead)."""
    reason = (reason or "failed")[:UNDELIVERED_MAX]
    with sessions().begin() as session:
        session.execute(update(ConversationMessage)
                        .where(ConversationMessage.id == int(message.id))
                        .values(undelivered=reason))
    return replace(message, undelivered=reason)


def _limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_LIMIT))


def messages_after(conversation_id: str, after: int | None = None, limit: int = 100,
                   senders: Sequence[str] | None = DELIVERED_SENDERS) -> list[MessageView]:
    """The conversation's messages with id > after (all when None), oldest first, at most `limit`.

    `senders` None means every sender (user turns included)."""
    query = select(ConversationMessage).where(ConversationMessage.conversation_id == conversation_id)
    if after is not None:
        query = query.where(ConversationMessage.id > int(after))
    if senders is not None:
        query = query.where(ConversationMessage.sender.in_(tuple(senders)))
    query = query.order_by(ConversationMessage.id).limit(_limit(limit))
    with sessions()() as session:
        return [_view(row) for row in session.scalars(query)]


def recent(conversation_id: str, limit: int = 50) -> list[MessageView]:
    """The conversation's last `limit` messages, user turns included, oldest first."""
    query = (select(ConversationMessage)
             .where(ConversationMessage.conversation_id == conversation_id)
             .order_by(ConversationMessage.id.desc()).limit(_limit(limit)))
    with sessions()() as session:
        rows = list(session.scalars(query))
    return [_view(row) for row in reversed(rows)]


def last_id(conversation_id: str) -> int:
    """The cursor of the conversation's newest message (any sender); 0 when there is none."""
    query = (select(ConversationMessage.id)
             .where(ConversationMessage.conversation_id == conversation_id)
             .order_by(ConversationMessage.id.desc()).limit(1))
    with sessions()() as session:
        return session.scalar(query) or 0
