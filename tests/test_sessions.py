"""accounts.sessions: random session and agent tokens, stored only hashed, sessions expiring."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text

from _accounts_fixtures import db  # noqa: F401
from accounts import service
from accounts import sessions as tokens
from store import session_factory
from store.models import Agent, UserSession


def dump(engine, table: str) -> str:
    with engine.connect() as conn:
        return repr(conn.execute(text(f"SELECT * FROM {table}")).all())


def test_create_and_resolve(db):
    token, expires_at = service.create_session("demo-0001", ttl_s=3600)
    assert len(token) >= 40                                    # 32 random bytes, url-safe
    left = (expires_at - datetime.now(timezone.utc)).total_seconds()
    assert 3590 < left <= 3600
    assert service.user_for_token(token) == "demo-0001"
    other, _ = service.create_session("demo-0001", ttl_s=3600)
    assert other != token and service.user_for_token(other) == "demo-0001"   # one per sign-in


def test_default_ttl_comes_from_settings(db, monkeypatch):
    from core import settings

    monkeypatch.setattr(settings.get_settings(), "session_ttl_s", 120)
    _, expires_at = service.create_session("u1")
    assert 110 < (expires_at - datetime.now(timezone.utc)).total_seconds() <= 120


@pytest.mark.parametrize("token", [None, "", "nope", "x" * 5000, "Bearer abc"])
def test_unknown_tokens_resolve_to_nobody(db, token):
    service.create_session("demo-0001", ttl_s=3600)
    assert service.user_for_token(token) is None


def test_expired_session_resolves_to_nobody(db):
    sessions = session_factory(db)
    start = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)
    token, expires_at = tokens.create_session(sessions, "u1", ttl_s=60, now=start)
    assert expires_at == start + timedelta(seconds=60)
    assert tokens.resolve(sessions, token, now=start + timedelta(seconds=59)) == "u1"
    assert tokens.resolve(sessions, token, now=start + timedelta(seconds=60)) is None
    assert tokens.resolve(sessions, token, now=start + timedelta(days=2)) is None


def test_sign_in_sweeps_expired_sessions(db):
    sessions = session_factory(db)
    start = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)
    tokens.create_session(sessions, "u1", ttl_s=60, now=start)
    live, _ = tokens.create_session(sessions, "u2", ttl_s=3600, now=start)
    tokens.create_session(sessions, "u3", ttl_s=60, now=start + timedelta(minutes=5))
    with sessions() as s:
        assert sorted(s.scalars(select(UserSession.user_id))) == ["u2", "u3"]
    assert tokens.resolve(sessions, live, now=start + timedelta(minutes=5)) == "u2"


def test_tokens_are_stored_only_as_sha256(db):
    token, _ = service.create_session("demo-0001", ttl_s=3600)
    agent_id, agent_token = service.create_agent("坐席 3")
    sessions_dump, agents_dump = dump(db, "user_sessions"), dump(db, "agents")
    assert token not in sessions_dump and agent_token not in agents_dump
    assert hashlib.sha256(token.encode()).hexdigest() in sessions_dump
    assert hashlib.sha256(agent_token.encode()).hexdigest() in agents_dump


def test_bad_arguments(db):
    with pytest.raises(ValueError):
        service.create_session("", ttl_s=60)
    with pytest.raises(ValueError):
        service.create_session("u1", ttl_s=0)
    with pytest.raises(ValueError):
        service.create_agent("   ")


def test_agents(db):
    first_id, first = service.create_agent("坐席 3")
    second_id, second = service.create_agent("坐席 3")       # same name, another agent
    assert first_id != second_id and first != second
    agent = service.agent_for_token(first)
    assert (agent.id, agent.name, agent.actor) == (first_id, "坐席 3", f"agent:{first_id}")
    assert service.agent_for_token(second).id == second_id
    assert service.agent_for_token("nope") is None and service.agent_for_token(None) is None
    with db.connect() as conn:
        assert conn.execute(select(Agent.name)).scalars().all() == ["坐席 3", "坐席 3"]


def test_session_tokens_are_not_agent_tokens(db):
    token, _ = service.create_session("u1", ttl_s=3600)
    _, agent_token = service.create_agent("a")
    assert service.agent_for_token(token) is None
    assert service.user_for_token(agent_token) is None
