"""The durable inbox of channel pushes: stored before the platform hears `success`, handled after.

    accept(channel, dedupe_key, conversation_id, payload)  → row id, or None for a repeat (a retry)
    claim(now, limit, lease_s)                             → [Item]   due rows, leased to this caller
    finish(item, outcome)                                  the row is done; its payload is cleared
    retry_later(item, now, error)                          back to pending with a backoff
    purge(older_than)                                      forget done rows (the dedupe window)

A push is accepted once per (channel, dedupe_key): the unique index decides, so WeChat's retries,
a restart and a second instance cannot make a second answer. The user's text is sealed
(core.sealing, bound to the row's key) while it waits and cleared once handled: the table never
shows what anyone typed. `claim` hands out only the oldest pending row of each conversation, so a
conversation's messages are answered in order even with several workers; a lease (next_try_at
pushed forward) keeps two workers off the same row, and a worker that dies leaves its rows to be
picked up when the lease runs out (at-least-once: an answer sent just before a crash may be sent
again; a push is never left unanswered)."""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, delete, exists, null, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from accounts.source import as_utc
from core.sealing import seal, unseal
from store import default_sessions, session_factory
from store.models import ChannelInbox, utcnow

_sessions: sessionmaker[Session] | None = None
_key: bytes | None = None


@dataclass(frozen=True)
class Item:
    id: int
    channel: str
    conversation_id: str
    payload: dict
    attempts: int          # tries so far, this one included
    created_at: datetime


def configure(target: Engine | sessionmaker | None, key: bytes | None) -> None:
    """The database and the data key (core.sealing.data_key(settings)); None: back to defaults."""
    global _sessions, _key
    _sessions = target if target is None or isinstance(target, sessionmaker) else session_factory(target)
    _key = key


def sessions() -> sessionmaker[Session]:
    return _sessions if _sessions is not None else default_sessions()


def _data_key() -> bytes:
    if _key is None:
        raise RuntimeError("channels.inbox.configure(..., key) first")
    return _key


def _bound(channel: str, dedupe_key: str) -> str:
    return f"inbox:{channel}:{dedupe_key}"


def stored_key(dedupe_key: str) -> str:
    """The platform's message id as stored: a digest (a MsgId or a user id + time can look like a
    number worth masking, and the table needs only equality)."""
    return hashlib.sha256(dedupe_key.encode()).hexdigest()


def accept(channel: str, dedupe_key: str, conversation_id: str, payload: dict) -> int | None:
    dedupe_key = stored_key(dedupe_key)
    row = ChannelInbox(channel=channel, dedupe_key=dedupe_key, conversation_id=conversation_id,
                       payload=seal(payload, _data_key(), bound_to=_bound(channel, dedupe_key)),
                       status="pending", attempts=0, next_try_at=utcnow())
    try:
        with sessions().begin() as session:
            session.add(row)
            session.flush()
            return row.id
    except IntegrityError:
        return None


def claim(now: datetime, limit: int = 8, lease_s: float = 60.0) -> list[Item]:
    older = aliased(ChannelInbox)
    earlier_pending = exists().where(and_(older.conversation_id == ChannelInbox.conversation_id,
                                          older.id < ChannelInbox.id, older.status == "pending"))
    stmt = (select(ChannelInbox.id, ChannelInbox.next_try_at)
            .where(ChannelInbox.status == "pending", ChannelInbox.next_try_at <= now, ~earlier_pending)
            .order_by(ChannelInbox.id).limit(limit))
    lease_until = now + timedelta(seconds=lease_s)
    items: list[Item] = []
    with sessions().begin() as session:
        candidates = list(session.execute(stmt))
    for row_id, due in candidates:
        # Guarded: of two workers that saw the same row, one moves its next_try_at, the other
        # matches nothing (no row locks needed, so SQLite and PostgreSQL behave alike).
        with sessions().begin() as session:
            moved = session.execute(
                update(ChannelInbox).where(ChannelInbox.id == row_id, ChannelInbox.status == "pending",
                                           ChannelInbox.next_try_at == due)
                .values(next_try_at=lease_until, attempts=ChannelInbox.attempts + 1)
                .execution_options(synchronize_session=False)).rowcount
            if moved != 1:
                continue
            row = session.get(ChannelInbox, row_id)
            payload = unseal(row.payload, _data_key(), bound_to=_bound(row.channel, row.dedupe_key))
            items.append(Item(row.id, row.channel, row.conversation_id, payload, row.attempts,
                              as_utc(row.created_at)))
    return items


def finish(item: Item, outcome: str) -> None:
    with sessions().begin() as session:
        session.execute(update(ChannelInbox).where(ChannelInbox.id == item.id)
                        .values(status="done", payload=null(), done_at=utcnow(), outcome=outcome[:64]))


def backoff_s(attempts: int, rng: random.Random | None = None) -> float:
    """1 s, 2 s, 4 s … capped at 30 s, with jitter: a bot that restarts is tried again soon."""
    base = min(30.0, 2.0 ** max(0, attempts - 1))
    return base * (0.8 + 0.4 * (rng or random).random())


def retry_later(item: Item, now: datetime, error: str) -> None:
    with sessions().begin() as session:
        session.execute(update(ChannelInbox).where(ChannelInbox.id == item.id, ChannelInbox.status == "pending")
                        .values(next_try_at=now + timedelta(seconds=backoff_s(item.attempts)),
                                outcome=f"retry:{error}"[:64]))


def purge(older_than: datetime) -> int:
    with sessions().begin() as session:
        return session.execute(delete(ChannelInbox).where(ChannelInbox.status == "done",
                                                          ChannelInbox.done_at < older_than)).rowcount


def pending_count() -> int:
    from sqlalchemy import func

    with sessions()() as session:
        return int(session.scalar(select(func.count()).select_from(ChannelInbox)
                                  .where(ChannelInbox.status == "pending")) or 0)
