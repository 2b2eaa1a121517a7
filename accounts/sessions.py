"""User session tokens and agent tokens: random, shown once, stored only as their SHA-256.

A session binds a conversation to one user: the chat route resolves the bearer token to a
user_id and nothing else (never a user_id from the request body) decides whose account the bot
reads. A leaked copy of the tables signs nobody in: only hashes are stored, and 256 random bits
need no salt or slow hash against guessing.

    token, expires_at = create_session(sessions, "demo-0001", ttl_s=86400)
    resolve(sessions, token)          # → "demo-0001", or None once expired / unknown
    agent_id, token = create_agent(sessions, "坐席 3")
    resolve_agent(sessions, token)    # → AgentIdentity(id, name) or None
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from accounts.source import as_utc
from store.models import Agent, UserSession, utcnow

# Anything longer is not one of our tokens: refuse before hashing attacker-sized input.
MAX_TOKEN_CHARS = 200


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# The user id of a session that signs in nobody: a channel user with no linked account (Alipay
# mini-program sign-in) gets a token all the same, and /api/v1/chat treats it as anonymous.
ANONYMOUS = ""


def create_session(sessions: sessionmaker[Session], user_id: str, *, ttl_s: float,
                   now: datetime | None = None, anonymous: bool = False) -> tuple[str, datetime]:
    """A new session token for user_id (shown once) and when it expires; anonymous=True: a
    token for nobody (user_id ANONYMOUS)."""
    if anonymous:
        user_id = ANONYMOUS
    elif not user_id:
        raise ValueError("user_id is required")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    now = now or utcnow()
    token, expires_at = new_token(), now + timedelta(seconds=ttl_s)
    with sessions.begin() as session:
        # Expired rows are useless and only grow the table: each sign-in sweeps them.
        session.execute(delete(UserSession).where(UserSession.expires_at <= now))
        session.add(UserSession(token_hash=token_hash(token), user_id=user_id, created_at=now,
                                expires_at=expires_at))
    return token, expires_at


def resolve(sessions: sessionmaker[Session], token: str | None, *,
            now: datetime | None = None) -> str | None:
    """The user_id a live session token belongs to; None for unknown or expired tokens."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    with sessions() as session:
        row = session.get(UserSession, token_hash(token))
        if row is None:
            return None
        user_id, expires_at = row.user_id, as_utc(row.expires_at)
    return user_id if expires_at > (now or utcnow()) else None


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
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    with sessions() as session:
        agent = session.scalars(select(Agent).where(Agent.token_hash == token_hash(token))).first()
        return None if agent is None else AgentIdentity(agent.id, agent.name)
