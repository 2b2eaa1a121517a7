"""Revoking session and agent tokens (api/routes/sessions.py, accounts.sessions), on SQLite and
PostgreSQL: each session's public token_id, the admin routes that list and revoke sessions (one,
or all of a user's) and agents, a revoked token refused (401 invalid_token) at once on every
route that takes one, revocations logged by reference only, and migration 0007 giving the
sessions already stored their ids. An open stream ends when its session or agent is revoked, and a stream ticket issued before
the revocation is refused."""
from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from fastapi import routing
from sqlalchemy import select, text

import delivery
from _accounts_fixtures import ADMIN, FakeRasa, make_client
from _store_fixtures import DATABASES, engine_for, migrated_with_tickets
from accounts import service as accounts
from accounts import sessions as tokens
from assistant import conversations
from assistant.chat import rasa_sender
from channels import links
from core.settings import Settings
from store import migrate, session_factory
from store.db import alembic_config, current_revision
from store.models import Agent, TicketEvent, UserSession
from tickets import service as tickets

SETTINGS = Settings(hotline_hours="00:00-24:00", demo_accounts=False)
APP = {"hotline_hours": "00:00-24:00", "rate_limit_enabled": False}
TOKEN_ID = re.compile(r"^[A-Za-z0-9_\-]{16}$")


@pytest.fixture(params=DATABASES)
def db(request, tmp_path):
    with migrated_with_tickets(request.param, tmp_path, SETTINGS, accounts, conversations, delivery,
                               links) as engine:
        yield engine


@pytest.fixture
def client(db, tmp_path):
    with make_client(tmp_path, **APP) as c:
        real, c.app.state.rasa = c.app.state.rasa, FakeRasa()
        try:
            yield c
        finally:
            c.app.state.rasa = real


def bearer(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


ADMIN_H = bearer(ADMIN)


def sign_in(client, user_id: str) -> dict:
    resp = client.post("/api/v1/admin/sessions", json={"user_id": user_id}, headers=ADMIN_H)
    assert resp.status_code == 200, resp.text
    return resp.json()


def route_table(app) -> list[tuple[str, str]]:
    """(METHOD, path template) of every route the app serves, generated from app.routes."""
    out = []
    for rc in routing.iter_route_contexts(app.routes):
        for method in sorted(rc.methods or ()):
            if method != "HEAD":
                out.append((method, rc.path))
    return out


# What each user-token route is called with in the checks below; every /api/v1/chat* route must
# be here (test_every_user_token_route_is_checked), so a new one cannot be forgotten.
def user_calls(sender: str) -> dict[tuple[str, str], dict]:
    return {("POST", "/api/v1/chat"): {"json": {"sender": sender, "text": "我的健康码为什么是橙色"}},
            ("GET", "/api/v1/chat/messages"): {"params": {"sender": sender}},
            ("GET", "/api/v1/chat/handoff"): {"params": {"sender": sender}},
            ("POST", "/api/v1/chat/stream-ticket"): {"json": {"sender": sender}},
            ("GET", "/api/v1/chat/stream"): {"params": {"sender": sender}}}


def call(client, method: str, path: str, headers: dict, **kwargs):
    return client.request(method, path, headers=headers, **kwargs)


def refused_everywhere(client, token: str, sender: str = "s1") -> None:
    for (method, path), kwargs in user_calls(sender).items():
        resp = call(client, method, path, bearer(token), **kwargs)
        assert resp.status_code == 401, (method, path, resp.status_code, resp.text[:200])
        assert resp.json()["error"]["code"] == "invalid_token", (method, path, resp.text)


def accepted_everywhere(client, token: str, sender: str = "s1") -> None:
    for (method, path), kwargs in user_calls(sender).items():
        if path == "/api/v1/chat/stream":
            continue          # a live stream never ends in-process; the streams are checked on a server
        resp = call(client, method, path, bearer(token), **kwargs)
        assert resp.status_code == 200, (method, path, resp.status_code, resp.text[:200])


# --- the public id ------------------------------------------------------------------------------
def test_a_session_has_a_public_token_id_and_the_listing_shows_no_secret(client, db):
    first, second = sign_in(client, "u1"), sign_in(client, "u1")
    other = sign_in(client, "u2")
    assert set(first) == {"token", "token_id", "expires_at"}
    for s in (first, second, other):
        assert TOKEN_ID.match(s["token_id"]) and s["token_id"] not in s["token"]
    assert len({first["token_id"], second["token_id"], other["token_id"]}) == 3
    listed = client.get("/api/v1/admin/users/u1/sessions", headers=ADMIN_H)
    assert listed.status_code == 200
    body = listed.json()
    assert body["user_id"] == "u1"
    assert [s["token_id"] for s in body["sessions"]] == [first["token_id"], second["token_id"]]
    assert all(set(s) == {"token_id", "created_at", "expires_at"} for s in body["sessions"])
    assert body["sessions"][0]["expires_at"].startswith(first["expires_at"][:19])
    for s in (first, second, other):
        assert s["token"] not in listed.text
        assert hashlib.sha256(s["token"].encode()).hexdigest() not in listed.text
    assert other["token_id"] not in listed.text
    assert client.get("/api/v1/admin/users/nobody/sessions", headers=ADMIN_H).json() == {
        "user_id": "nobody", "sessions": []}
    # Stored: the hash and the id, never the token.
    with db.connect() as conn:
        rows = repr(conn.execute(text("SELECT * FROM user_sessions")).all())
    assert first["token"] not in rows and first["token_id"] in rows


def test_expired_sessions_are_not_listed_and_not_revocable(client, db):
    sessions = session_factory(db)
    past = datetime.now(timezone.utc) - timedelta(days=2)
    old = tokens.issue_session(sessions, "u1", ttl_s=60, now=past)
    live = sign_in(client, "u1")        # this sign-in sweeps the expired row
    assert [s["token_id"] for s in client.get("/api/v1/admin/users/u1/sessions", headers=ADMIN_H).json()["sessions"]] \
        == [live["token_id"]]
    assert client.delete(f"/api/v1/admin/sessions/{old.token_id}", headers=ADMIN_H).status_code == 404
    # An expired row that is still there (no sign-in swept it) is not a live session either.
    stale = tokens.issue_session(sessions, "u3", ttl_s=60, now=datetime.now(timezone.utc) - timedelta(seconds=61))
    assert client.get("/api/v1/admin/users/u3/sessions", headers=ADMIN_H).json()["sessions"] == []
    assert client.delete(f"/api/v1/admin/sessions/{stale.token_id}", headers=ADMIN_H).status_code == 404
    assert client.delete("/api/v1/admin/users/u3/sessions", headers=ADMIN_H).json() == {"revoked": 0}


# --- revoking -----------------------------------------------------------------------------------
def test_revoking_one_session_refuses_its_token_at_once_and_only_that_one(client):
    doomed, kept = sign_in(client, "u1"), sign_in(client, "u1")
    accepted_everywhere(client, doomed["token"])
    resp = client.delete(f"/api/v1/admin/sessions/{doomed['token_id']}", headers=ADMIN_H)
    assert resp.status_code == 204 and resp.content == b""
    refused_everywhere(client, doomed["token"])
    accepted_everywhere(client, kept["token"])
    assert accounts.user_for_token(doomed["token"]) is None
    again = client.delete(f"/api/v1/admin/sessions/{doomed['token_id']}", headers=ADMIN_H)
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    listed = client.get("/api/v1/admin/users/u1/sessions", headers=ADMIN_H).json()["sessions"]
    assert [s["token_id"] for s in listed] == [kept["token_id"]]


@pytest.mark.parametrize("token_id", ["AAAAAAAAAAAAAAAA", "x", "..", "%2e%2e", "a" * 64, "ünïcödé-ünïcödé1"])
def test_unknown_or_malformed_token_ids_are_404(client, token_id):
    sign_in(client, "u1")
    resp = client.delete(f"/api/v1/admin/sessions/{token_id}", headers=ADMIN_H)
    assert resp.status_code == 404, resp.text


def test_a_token_or_its_hash_is_not_a_token_id(client):
    s = sign_in(client, "u1")
    for name in (s["token"], hashlib.sha256(s["token"].encode()).hexdigest()):
        assert client.delete(f"/api/v1/admin/sessions/{name}", headers=ADMIN_H).status_code in (404, 422)
    accepted_everywhere(client, s["token"])


def test_revoking_a_users_sessions_signs_them_out_everywhere_and_nobody_else(client):
    mine = [sign_in(client, "u1") for _ in range(3)]
    theirs = sign_in(client, "u2")
    anonymous, _ = accounts.create_anonymous_session()
    resp = client.delete("/api/v1/admin/users/u1/sessions", headers=ADMIN_H)
    assert resp.status_code == 200 and resp.json() == {"revoked": 3}
    for s in mine:
        refused_everywhere(client, s["token"])
    accepted_everywhere(client, theirs["token"])
    accepted_everywhere(client, anonymous)
    assert client.get("/api/v1/admin/users/u1/sessions", headers=ADMIN_H).json()["sessions"] == []
    assert client.delete("/api/v1/admin/users/u1/sessions", headers=ADMIN_H).json() == {"revoked": 0}
    # Signing in again works as before.
    accepted_everywhere(client, sign_in(client, "u1")["token"])


def test_anonymous_channel_sessions_are_revoked_one_by_one_never_as_a_user(client, db):
    """The ANONYMOUS "" user id is nobody's: no route names it (a path segment is never empty),
    and the service refuses it, so one channel user's revocation never signs out all the others."""
    first = tokens.issue_session(session_factory(db), "", ttl_s=3600, anonymous=True)
    second, _ = accounts.create_anonymous_session()
    with pytest.raises(ValueError):
        accounts.revoke_user_sessions("")
    assert client.delete("/api/v1/admin/users//sessions", headers=ADMIN_H).status_code in (404, 405, 422)
    assert client.delete(f"/api/v1/admin/sessions/{first.token_id}", headers=ADMIN_H).status_code == 204
    refused_everywhere(client, first.token)
    accepted_everywhere(client, second)


def test_user_ids_are_path_segments_not_patterns(client):
    """No wildcard, no prefix match: "%" or "u" revokes nothing of u1's."""
    s = sign_in(client, "u1")
    for user_id in ("%", "u", "u%", "*", "U1", " u1"):
        assert client.delete(f"/api/v1/admin/users/{user_id}/sessions", headers=ADMIN_H).json() == {"revoked": 0}
        assert client.get(f"/api/v1/admin/users/{user_id}/sessions", headers=ADMIN_H).json()["sessions"] == []
    accepted_everywhere(client, s["token"])
    assert client.get("/api/v1/admin/users/" + "x" * 129 + "/sessions", headers=ADMIN_H).status_code == 422


def test_the_revocation_routes_are_admin_only(client):
    s = sign_in(client, "u1")
    agent_id, agent_token = accounts.create_agent("坐席一")
    routes = [("DELETE", f"/api/v1/admin/sessions/{s['token_id']}"), ("GET", "/api/v1/admin/users/u1/sessions"),
              ("DELETE", "/api/v1/admin/users/u1/sessions"), ("DELETE", f"/api/v1/admin/agents/{agent_id}"),
              ("POST", "/api/v1/admin/sessions")]
    for headers, status in (({}, 401), (bearer(s["token"]), 403), (bearer(agent_token), 403),
                            (bearer("x" * 300), 403), ({"Authorization": f"Basic {ADMIN}"}, 401)):
        for method, path in routes:
            kwargs = {"json": {"user_id": "u1"}} if method == "POST" else {}
            resp = client.request(method, path, headers=headers, **kwargs)
            assert resp.status_code == status, (method, path, headers, resp.text)
            assert s["token_id"] not in resp.text
    accepted_everywhere(client, s["token"])                        # nothing was revoked
    assert accounts.agent_for_token(agent_token).id == agent_id


def test_every_user_token_route_is_checked(client):
    """Every /api/v1/chat* route takes a user token: each is in user_calls (so a revoked token is
    checked on it)."""
    chat = {(m, p) for m, p in route_table(client.app) if p == "/api/v1/chat" or p.startswith("/api/v1/chat/")}
    assert chat == set(user_calls("s")), chat ^ set(user_calls("s"))


# --- agents -------------------------------------------------------------------------------------
def agent_calls(ticket_id: str) -> list[tuple[str, str, dict]]:
    return [("GET", "/api/v1/agent/me", {}), ("GET", "/api/v1/agent/tickets", {}),
            ("GET", f"/api/v1/agent/tickets/{ticket_id}", {}),
            ("POST", f"/api/v1/agent/tickets/{ticket_id}/claim", {}),
            ("POST", f"/api/v1/agent/tickets/{ticket_id}/unclaim", {}),
            ("POST", f"/api/v1/agent/tickets/{ticket_id}/messages", {"json": {"text": "您好"}}),
            ("POST", f"/api/v1/agent/tickets/{ticket_id}/notes", {"json": {"text": "备注"}}),
            ("POST", f"/api/v1/agent/tickets/{ticket_id}/resolve", {"json": {"resolution": "好了"}}),
            ("POST", f"/api/v1/agent/tickets/{ticket_id}/reveal-phone", {}),
            ("POST", "/api/v1/agent/stream-ticket", {}), ("GET", "/api/v1/agent/stream", {})]


def test_revoking_an_agent_refuses_its_token_everywhere_and_frees_its_tickets(client, db):
    conversation = rasa_sender("c1", "u1")
    delivery.append(conversation, "user", "我要转人工")
    view, _ = tickets.create_or_get(conversation, channel="api", user_id="u1", lang="zh", category="other",
                                    summary="转人工", findings=[])
    x_id, x = accounts.create_agent("坐席一")
    _y_id, y = accounts.create_agent("坐席二")
    assert client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=bearer(x)).status_code == 200
    assert client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=bearer(y)).status_code == 409

    resp = client.delete(f"/api/v1/admin/agents/{x_id}", headers=ADMIN_H)
    assert resp.status_code == 204 and resp.content == b""
    for method, path, kwargs in agent_calls(view.id):
        r = client.request(method, path, headers=bearer(x), **kwargs)
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["error"]["code"] == "invalid_token"
    # Every agent route is in agent_calls: a new one is checked too.
    listed = {(m, p.replace("{ticket_id}", view.id)) for m, p in route_table(client.app) if p.startswith("/api/v1/agent/")}
    assert listed == {(m, p) for m, p, _ in agent_calls(view.id)}

    # The ticket it held is back in the queue (by the admin, in its history); another agent takes it.
    assert tickets.get(view.id).status == "open"
    with db.connect() as conn:
        last = conn.execute(select(TicketEvent.kind, TicketEvent.actor).where(TicketEvent.ticket_id == view.id)
                            .order_by(TicketEvent.id.desc())).first()
    assert tuple(last) == ("unclaimed", "admin")
    assert client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=bearer(y)).status_code == 200
    # The history still names the revoked agent.
    detail = client.get(f"/api/v1/agent/tickets/{view.id}", headers=bearer(y)).json()
    assert detail["history"][1]["actor"] in ("坐席一", f"agent:{x_id}")
    with db.connect() as conn:
        row = conn.execute(select(Agent.revoked_at, Agent.token_hash).where(Agent.id == x_id)).one()
    assert row.revoked_at is not None and row.token_hash != hashlib.sha256(x.encode()).hexdigest()

    again = client.delete(f"/api/v1/admin/agents/{x_id}", headers=ADMIN_H)
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    assert client.delete("/api/v1/admin/agents/99999", headers=ADMIN_H).status_code == 404
    for bad in ("0", "-1", "abc", str(2**40), "1.5"):
        assert client.delete(f"/api/v1/admin/agents/{bad}", headers=ADMIN_H).status_code == 422, bad
    assert client.get("/api/v1/agent/me", headers=bearer(y)).status_code == 200


# --- logs ---------------------------------------------------------------------------------------
def test_revocations_are_logged_by_reference_never_the_token(client, caplog):
    caplog.set_level("INFO")
    one, two = sign_in(client, "u-log"), sign_in(client, "u-log")
    agent_id, agent_token = accounts.create_agent("坐席一")
    client.delete(f"/api/v1/admin/sessions/{one['token_id']}", headers=ADMIN_H)
    client.delete("/api/v1/admin/users/u-log/sessions", headers=ADMIN_H)
    client.delete(f"/api/v1/admin/agents/{agent_id}", headers=ADMIN_H)
    records = {r.getMessage(): getattr(r, "fields", {}) for r in caplog.records if r.name == "hc.accounts"}
    assert records["session_revoked"]["session"] == one["token_id"]
    assert records["user_sessions_revoked"]["sessions"] == [two["token_id"]]
    assert records["user_sessions_revoked"]["count"] == 1
    assert records["agent_revoked"]["agent_id"] == agent_id
    assert all(f.get("by") == "admin" for k, f in records.items() if "revoked" in k)
    logged = caplog.text + json.dumps([getattr(r, "fields", {}) for r in caplog.records], ensure_ascii=False,
                                      default=str)
    for secret in (one["token"], two["token"], agent_token, ADMIN):
        assert secret not in logged, secret
    # The service's lines name the user by reference (user_ref), not by id. (The access log's
    # path is api/middleware.py's: it carries the path as requested.)
    assert "u-log" not in json.dumps(records, ensure_ascii=False, default=str)
    assert records["user_sessions_revoked"]["user"] == accounts.user_ref("u-log")
    for s in (one, two):
        assert hashlib.sha256(s["token"].encode()).hexdigest() not in logged


# --- the migration ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", DATABASES)
def test_migration_0007_gives_every_stored_session_an_id_and_keeps_it_working(kind, tmp_path):
    from alembic import command

    live = [tokens.new_token() for _ in range(3)]
    now = datetime.now(timezone.utc)
    with engine_for(kind, tmp_path) as engine:
        migrate(engine, "0006")
        with engine.begin() as conn:
            for i, token in enumerate(live):
                conn.execute(text("INSERT INTO user_sessions (token_hash, user_id, created_at, expires_at) "
                                  "VALUES (:h, :u, :c, :e)"),
                             {"h": tokens.token_hash(token), "u": f"u{i % 2}", "c": now, "e": now + timedelta(hours=1)})
            conn.execute(text("INSERT INTO agents (name, token_hash, created_at) VALUES ('a', :h, :c)"),
                         {"h": tokens.token_hash("agent-token"), "c": now})
        migrate(engine)
        assert current_revision(engine) == "0007"
        sessions = session_factory(engine)
        with sessions() as s:
            ids = s.scalars(select(UserSession.token_id)).all()
        assert len(ids) == 3 and len(set(ids)) == 3 and all(TOKEN_ID.match(i) for i in ids)
        assert [tokens.resolve(sessions, t) for t in live] == ["u0", "u1", "u0"]
        assert tokens.resolve_agent(sessions, "agent-token") is not None      # revoked_at NULL: active
        info = tokens.session_for_token(sessions, live[0])
        assert tokens.revoke_session(sessions, info.token_id).user_id == "u0"
        assert tokens.resolve(sessions, live[0]) is None and tokens.resolve(sessions, live[2]) == "u0"
        # The unique index holds.
        with pytest.raises(Exception):
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO user_sessions (token_hash, token_id, user_id, created_at, expires_at) "
                                  "VALUES ('h-dup', :t, 'u9', :c, :c)"),
                             {"t": tokens.session_for_token(sessions, live[2]).token_id, "c": now})
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0006")
        assert current_revision(engine) == "0006"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM user_sessions")).scalar() == 2


# --- what an open stream does (api/routes/messages.py, api/routes/agent_stream.py) -----------------
@pytest.fixture
def live(db, tmp_path):
    from test_sse import LiveServer, make_app

    app = make_app(tmp_path, db.url.render_as_string(hide_password=False), **APP)
    with LiveServer(app) as server:
        with httpx.Client(base_url=server.base, timeout=httpx.Timeout(10, read=5)) as c:
            yield c


def test_a_new_stream_with_a_revoked_token_is_refused(live):
    s = accounts.issue_session("u1")
    live.post("/api/v1/chat/stream-ticket", json={"sender": "s1"}, headers=bearer(s.token)).raise_for_status()
    accounts.revoke_session(s.token_id)
    r = live.get("/api/v1/chat/stream", params={"sender": "s1"}, headers=bearer(s.token))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"
    r = live.post("/api/v1/chat/stream-ticket", json={"sender": "s1"}, headers=bearer(s.token))
    assert r.status_code == 401


def test_an_open_stream_ends_when_its_session_is_revoked(live):
    from test_sse import Stream

    s = accounts.issue_session("u1")
    conversation = rasa_sender("s1", "u1")
    stream = Stream(live, "/api/v1/chat/stream", params={"sender": "s1"}, headers=bearer(s.token)).wait_connected()
    try:
        delivery.deliver(conversation, "agent", "撤销之前")
        assert [e["text"] for e in stream.take(1)] == ["撤销之前"]
        accounts.revoke_session(s.token_id)
        delivery.deliver(conversation, "agent", "撤销之后")
        got = stream.quiet_for(1.5)
        assert "撤销之后" not in [e.get("text") for e in got], "the revoked session still receives messages"
    finally:
        stream.close()


def test_a_stream_ticket_issued_before_the_revocation_is_refused(live):
    s = accounts.issue_session("u1")
    ticket = live.post("/api/v1/chat/stream-ticket", json={"sender": "s1"}, headers=bearer(s.token)).json()["ticket"]
    accounts.revoke_session(s.token_id)
    with live.stream("GET", "/api/v1/chat/stream", params={"sender": "s1", "stream_ticket": ticket}) as r:
        assert r.status_code == 401


def test_an_open_agent_stream_ends_when_the_agent_is_revoked(live):
    from test_sse import Stream

    agent_id, token = accounts.create_agent("坐席一")
    stream = Stream(live, "/api/v1/agent/stream", headers=bearer(token)).wait_connected()
    try:
        accounts.revoke_agent(agent_id)
        tickets.create_or_get(rasa_sender("c9", None), channel="api", user_id=None, lang="zh", category="other",
                              summary="撤销之后的工单", findings=[])
        got = stream.quiet_for(1.5)
        assert not got, "the revoked agent still receives ticket events"
    finally:
        stream.close()


def test_an_agent_stream_ticket_issued_before_the_revocation_is_refused(live):
    agent_id, token = accounts.create_agent("坐席二")
    ticket = live.post("/api/v1/agent/stream-ticket", headers=bearer(token)).json()["ticket"]
    accounts.revoke_agent(agent_id)
    with live.stream("GET", "/api/v1/agent/stream", params={"stream_ticket": ticket}) as r:
        assert r.status_code == 401


def test_an_anonymous_stream_is_not_ended_by_someone_elses_revocation(live):
    from test_sse import Stream

    other = accounts.issue_session("u1")
    conversation = rasa_sender("s-anon", None)
    stream = Stream(live, "/api/v1/chat/stream", params={"sender": "s-anon"}).wait_connected()
    try:
        accounts.revoke_session(other.token_id)
        delivery.deliver(conversation, "agent", "匿名仍在")
        assert [e["text"] for e in stream.take(1)] == ["匿名仍在"]
    finally:
        stream.close()
