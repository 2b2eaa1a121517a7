"""User session tokens and agent tokens: random, shown once, stored only as their SHA-256.

A session binds a conversation to one user: the chat route resolves the bearer token to a
user_id and nothing else (never a user_id from the request body) decides whose account the bot
reads. A leaked copy of the tables signs nobody in: only hashes are stored, and 256 random bits
need no salt or slow hash against guessing. A token is only ever looked up by its hash (an
index lookup, never a comparison of the secret itself).

Each session also has a public, non-secret `token_id` (16 url-safe characters, random, not
derived from the token): what an admin names to revoke one session, what a listing shows, what
log lines carry. Revoking deletes the row, so the token is unknown (a 401) on the next request.

    issued = issue_session(sessions, "demo-0001", ttl_s=86400)   # .token (shown once), .token_id, .expires_at
    token, expires_at = create_session(sessions, "demo-0001", ttl_s=86400)
    resolve(sessions, token)          # → "demo-0001", or None once expired / revoked / unknown
    live_sessions(sessions, "demo-0001")            # → [SessionInfo], never a token or its hash
    revoke_session(sessions, token_id)              # → the revoked SessionInfo, or None
    revoke_user_sessions(sessions, "demo-0001")     # → the live ones revoked
    agent_id, token = create_agent(sessions, "坐席 3")
    resolve_agent(sessions, token)    # → AgentIdentity(id, name) or None (unknown or revoked)
    revoke_agent(sessions, agent_id)  # → AgentIdentity of the revoked agent, or None
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from accounts.source import as_utc
from store.models import Agent, UserSession, utcnow

# Anything longer is not one of our tokens: refuse before hashing attacker-sized input.
MAX_TOKEN_CHARS = 200
# 12 random bytes → 16 url-safe characters: unique in practice, and the unique index makes sure.
TOKEN_ID_BYTES = 12
TOKEN_ID = re.compile(r"^[A-Za-z0-9_\-]{16}$")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def new_token_id() -> str:
    return secrets.token_urlsafe(TOKEN_ID_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# The user id of a session that signs in nobody: a channel user with no linked account (Alipay
# mini-program sign-in) gets a token all the same, and /api/v1/chat treats it as anonymous.
ANONYMOUS = ""


@dataclass(frozen=True)
class IssuedSession:
    token: str                 # shown once: only its hash is stored
    token_id: str              # public: names the session for listing and revocation
    expires_at: datetime


@dataclass(frozen=True)
class SessionInfo:
    """What may be shown of a session: never the token, never its hash."""
    token_id: str
    user_id: str
    created_at: datetime
    expires_at: datetime

    def public(self) -> dict:
        return {"token_id": self.token_id, "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat()}


def _info(row: UserSession) -> SessionInfo:
    return SessionInfo(row.token_id, row.user_id, as_utc(row.created_at), as_utc(row.expires_at))


def issue_session(sessions: sessionmaker[Session], user_id: str, *, ttl_s: float,
                  now: datetime | None = None, anonymous: bool = False) -> IssuedSession:
    """A new session for user_id: its token (shown once), its public id and when it expires;
    anonymous=True: a token for nobody (user_id ANONYMOUS)."""
    if anonymous:
        user_id = ANONYMOUS
    elif not user_id:
        raise ValueError("user_id is required")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    now = now or utcnow()
    token, token_id, expires_at = new_token(), new_token_id(), now + timedelta(seconds=ttl_s)
    with sessions.begin() as session:
        # Expired rows are useless and only grow the table: each sign-in sweeps them.
        session.execute(delete(UserSession).where(UserSession.expires_at <= now))
        session.add(UserSession(token_hash=token_hash(token), token_id=token_id, user_id=user_id,
                                created_at=now, expires_at=expires_at))
    return IssuedSession(token, token_id, expires_at)


def create_session(sessions: sessionmaker[Session], user_id: str, *, ttl_s: float,
                   now: datetime | None = None, anonymous: bool = False) -> tuple[str, datetime]:
    """issue_session, as (token, expires_at)."""
    issued = issue_session(sessions, user_id, ttl_s=ttl_s, now=now, anonymous=anonymous)
    return issued.token, issued.expires_at


def resolve(sessions: sessionmaker[Session], token: str | None, *,
            now: datetime | None = None) -> str | None:
    """The user_id a live session token belongs to; None for unknown, revoked or expired tokens."""
    info = session_for_token(sessions, token, now=now)
    return None if info is None else info.user_id


def session_for_token(sessions: sessionmaker[Session], token: str | None, *,
                      now: datetime | None = None) -> SessionInfo | None:
    """The live session of a token (its token_id, user, times); None when unknown or expired."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    with sessions() as session:
        row = session.get(UserSession, token_hash(token))
        if row is None:
            return None
        info = _info(row)
    return info if info.expires_at > (now or utcnow()) else None


def session_live(sessions: sessionmaker[Session], token_id: str | None, *,
                 now: datetime | None = None) -> bool:
    """Whether the session with this public id still signs its user in (not revoked, not
    expired): what a stream holding only a token_id can re-check."""
    if not token_id or not TOKEN_ID.match(token_id):
        return False
    with sessions() as session:
        expires_at = session.scalars(select(UserSession.expires_at)
                                     .where(UserSession.token_id == token_id)).first()
    return expires_at is not None and as_utc(expires_at) > (now or utcnow())


def live_sessions(sessions: sessionmaker[Session], user_id: str, *,
                  now: datetime | None = None) -> list[SessionInfo]:
    """The user's sessions that still sign them in, oldest first."""
    now = now or utcnow()
    with sessions() as session:
        rows = session.scalars(select(UserSession).where(UserSession.user_id == user_id,
                                                         UserSession.expires_at > now)
                               .order_by(UserSession.created_at, UserSession.token_id)).all()
        return [_info(row) for row in rows]


def revoke_session(sessions: sessionmaker[Session], token_id: str, *,
                   now: datetime | None = None) -> SessionInfo | None:
    """Revoke one session by its public id: its token is unknown from the next request on.

    Returns the session revoked; None when no live session has this id (unknown, malformed, or
    expired already: an expired row is swept all the same)."""
    if not token_id or not TOKEN_ID.match(token_id):
        return None
    now = now or utcnow()
    with sessions.begin() as session:
        row = session.scalars(select(UserSession).where(UserSession.token_id == token_id)).first()
        if row is None:
            return None
        info = _info(row)
        session.delete(row)
    return info if info.expires_at > now else None


def revoke_user_sessions(sessions: sessionmaker[Session], user_id: str, *,
                         now: datetime | None = None) -> list[SessionInfo]:
    """Revoke every session of user_id (expired ones are swept too); the live ones revoked.

    The anonymous user id is nobody's: its sessions belong to as many channel users as there
    are, so they are revoked one by one (revoke_session), never all at once by this."""
    if not user_id:
        raise ValueError("user_id is required")
    now = now or utcnow()
    with sessions.begin() as session:
        rows = session.scalars(select(UserSession).where(UserSession.user_id == user_id)).all()
        infos = [_info(row) for row in rows]
        if rows:
            session.execute(delete(UserSession).where(UserSession.token_hash.in_([r.token_hash for r in rows])))
    return [info for info in infos if info.expires_at > now]


@dataclass(frozen=True)
class AgentIdentity:
    id: int
    name: str

    @property
    def actor(self) -> str:
        """How audit rows name this agent (the id, not the person's name)."""
        return f"agent:{self.id}"


def create_agent(sessions: sessionmaker[Session], name: str) -> tuple[int, str]:
    """A new agent and its bearer token (shown once)."""
    name = (name or "").strip()
    if not name:
        raise ValueError("name is required")
    token = new_token()
    with sessions.begin() as session:
        agent = Agent(name=name[:100], token_hash=token_hash(token))
        session.add(agent)
        session.flush()
        agent_id = agent.id
    return agent_id, token


def resolve_agent(sessions: sessionmaker[Session], token: str | None) -> AgentIdentity | None:
    """The agent of a token (looked up by its hash); None when unknown or revoked."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    with sessions() as session:
        agent = session.scalars(select(Agent).where(Agent.token_hash == token_hash(token),
                                                    Agent.revoked_at.is_(None))).first()
        return None if agent is None else AgentIdentity(agent.id, agent.name)


def agent_active(sessions: sessionmaker[Session], agent_id: int) -> bool:
    """Whether this agent's token still works (exists, not revoked): for a stream to re-check."""
    with sessions() as session:
        agent = session.get(Agent, agent_id)
        return agent is not None and agent.revoked_at is None


def revoke_agent(sessions: sessionmaker[Session], agent_id: int, *,
                 now: datetime | None = None) -> AgentIdentity | None:
    """Revoke an agent's token: from the next request on it is refused (401).

    The row stays (tickets and their history name the agent by id, and show its name), marked
    revoked_at, and its token_hash is replaced by the hash of a fresh token nobody ever saw: the
    old token can never resolve again, whatever checks a reader forgets. None when there is no
    such agent or it is revoked already."""
    now = now or utcnow()
    with sessions.begin() as session:
        agent = session.get(Agent, agent_id, with_for_update=True)
        if agent is None or agent.revoked_at is not None:
            return None
        agent.revoked_at = now
        agent.token_hash = token_hash(new_token())
        return AgentIdentity(agent.id, agent.name)
