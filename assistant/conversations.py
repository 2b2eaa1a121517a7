"""The app's record of whose each conversation is, so the bot's actions never take a user id
from a message (Rasa stores every message's metadata; a user id there would be stored too).

    record(conversation_id, user_id, channel)   # the chat service, before a turn goes to Rasa
    user_of(conversation_id)                     # an action: the signed-in user, or None
    channel_of(conversation_id)                  # where it came from (api, wechat, alipay)

conversation_id is Rasa's sender id (assistant.chat.rasa_sender): a signed-in user's carries a
digest of the user id, so a row never changes owner and lookups can be remembered for good.
The database is the process's shared one (several app instances see the same rows); a lookup
the process already made costs nothing.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache

from sqlalchemy import Connection, Engine, bindparam, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from store import default_sessions, engine_of, session_factory
from store.models import Conversation, utcnow

_MISSING = object()
CACHE_SIZE = 50_000

_sessions: sessionmaker[Session] | None = None
_lock = threading.Lock()
_known: OrderedDict[str, tuple[str | None, str]] = OrderedDict()   # id → (user_id, channel)


class UnknownConversation(LookupError):
    """No turn of this conversation went through the app: its actions get no user."""


def configure(target: Engine | sessionmaker | None) -> None:
    """Use this (migrated) database from now on; None: back to settings. Forgets the cache."""
    global _sessions
    with _lock:
        _sessions = target if target is None or isinstance(target, sessionmaker) else session_factory(target)
        _known.clear()


def sessions() -> sessionmaker[Session]:
    current = _sessions
    return current if current is not None else default_sessions()


def _remember(conversation_id: str, user_id: str | None, channel: str) -> None:
    with _lock:
        _known[conversation_id] = (user_id, channel)
        _known.move_to_end(conversation_id)
        while len(_known) > CACHE_SIZE:
            _known.popitem(last=False)


def _cached(conversation_id: str):
    with _lock:
        return _known.get(conversation_id, _MISSING)


def record(conversation_id: str, user_id: str | None, channel: str = "api") -> bool:
    """Write the row on the conversation's first turn (later turns find it in the cache).

    True when this call wrote it: the conversation is new everywhere (rows are never deleted),
    so nothing can refer to it yet, no ticket either (tickets come from its own turns)."""
    if _cached(conversation_id) is not _MISSING:
        return False
    created = False
    values = {"id": conversation_id, "user_id": user_id, "channel": channel, "created_at": utcnow()}
    try:
        # A plain connection and statements built once: a first turn's write was mostly
        # SQLAlchemy building an ORM session and compiling a new statement.
        with engine_of(sessions()).begin() as conn:
            created = _insert_new(conn, values)
            if not created:
                owner = conn.execute(_OWNER, {"id": conversation_id}).scalar_one()
                if owner != user_id:
                    # Impossible with namespaced ids; refuse rather than hand a turn to the wrong user.
                    raise ValueError("conversation id already belongs to another user")
    except IntegrityError:
        created = False  # the same first turn recorded by another instance a moment earlier
    _remember(conversation_id, user_id, channel)
    return created


_TABLE = Conversation.__table__
_OWNER = select(_TABLE.c.user_id).where(_TABLE.c.id == bindparam("id"))


@lru_cache(maxsize=None)
def _insert_if_new(dialect: str):
    """INSERT … ON CONFLICT DO NOTHING RETURNING id where the database has it (SQLite,
    PostgreSQL): one statement, no look-up before it. None elsewhere."""
    if dialect not in ("sqlite", "postgresql"):
        return None
    dialect_insert = sqlite_insert if dialect == "sqlite" else pg_insert
    return dialect_insert(_TABLE).on_conflict_do_nothing(index_elements=["id"]).returning(_TABLE.c.id)


def _insert_new(conn: Connection, values: dict) -> bool:
    """Insert the row unless it exists; True if this call wrote it."""
    stmt = _insert_if_new(conn.dialect.name)
    if stmt is not None:
        return conn.execute(stmt, values).first() is not None     # no row back: it existed
    if conn.execute(_OWNER, {"id": values["id"]}).first() is not None:
        return False
    conn.execute(insert(_TABLE), values)
    return True


def _lookup(conversation_id: str) -> tuple[str | None, str]:
    hit = _cached(conversation_id)
    if hit is not _MISSING:
        return hit
    with sessions()() as session:
        row = session.get(Conversation, conversation_id)
        if row is None:
            raise UnknownConversation(conversation_id)
        found = (row.user_id, row.channel)
    _remember(conversation_id, *found)
    return found


def user_of(conversation_id: str) -> str | None:
    """The user the app signed this conversation in as, or None (anonymous).

    Raises UnknownConversation for a conversation the app never recorded (a message that did
    not come through the app)."""
    return _lookup(conversation_id)[0]


def channel_of(conversation_id: str) -> str:
    """The channel the conversation came in on (raises UnknownConversation like user_of)."""
    return _lookup(conversation_id)[1]
