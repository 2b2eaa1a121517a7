"""Privacy through the chat route: the account is the token's user's only; nothing personal leaks
into what Rasa stores, into logs, into audit rows or into what admins see."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text

from _accounts_fixtures import (ADMIN, FAMILY_NAME, ID_NUMBER, NAME, PHONE, RAW_PII, admin, api, db,  # noqa: F401
                                document)
from accounts import audit, service
from assistant import conversations
from accounts import sessions as tokens
from assistant.chat import rasa_sender
from core.logs import JsonFormatter
from store.models import AccountRead


def sign_in(client, user_id: str) -> str:
    r = client.post("/api/v1/admin/sessions", json={"user_id": user_id}, headers=admin())
    assert r.status_code == 200
    return r.json()["token"]


def chat(client, text_in: str, token: str | None = None, sender: str = "wx-1", **extra):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/api/v1/chat", json={"sender": sender, "text": text_in, **extra}, headers=headers)


def test_anonymous_chat_names_no_user(api):
    client, fake = api
    r = chat(client, "健康码可以截图吗")
    assert r.status_code == 200 and r.json()["messages"][0]["text"]
    [call] = fake.calls
    assert call["sender"] == "anon:wx-1"
    assert "user_id" not in call["metadata"]
    assert conversations.user_of("anon:wx-1") is None


def test_the_token_alone_decides_the_user(api):
    client, fake = api
    for uid in ("user-a", "user-b"):
        client.post(f"/api/v1/admin/accounts/{uid}", json=document(uid), headers=admin())
    token_a, token_b = sign_in(client, "user-a"), sign_in(client, "user-b")
    # A names B every way a body could: ignored. The same client sender id for both users.
    responses = [chat(client, "我的码为什么是橙色", token_a, user_id="user-b", metadata={"user_id": "user-b"}),
                 chat(client, "我的码为什么是橙色", token_b),
                 chat(client, "我的码为什么是橙色", token_a, sender="user:x:user-b")]
    assert all(r.status_code == 200 for r in responses)
    a1, b1, a2 = fake.calls
    # What the actions will take as the user: the app's record of each conversation. The
    # message itself names nobody (Rasa stores message metadata with every event).
    assert [r.json()["messages"][0]["text"] for r in responses] == ["好的 user-a", "好的 user-b", "好的 user-a"]
    assert all("user_id" not in c["metadata"] for c in fake.calls)
    # Separate Rasa conversations, so not even the tracker of one can serve the other.
    assert a1["sender"] == rasa_sender("wx-1", "user-a") != b1["sender"] == rasa_sender("wx-1", "user-b")
    assert a1["sender"] != "anon:wx-1"
    # The route's own account reads were only ever of the token's user.
    entries = audit.reads(service.sessions())
    assert sorted(e.user_id for e in entries) == ["user-a", "user-a", "user-b"]


def test_many_interleaved_users_never_cross(api):
    client, fake = api
    users = [f"u{i}" for i in range(6)]
    tokens_ = {u: sign_in(client, u) for u in users}
    for round_ in range(3):
        for u in users:
            r = chat(client, f"第{round_}问", tokens_[u], sender="shared")
            assert r.status_code == 200 and r.json()["messages"][0]["text"] == f"好的 {u}"
    assert len(fake.calls) == 18
    for i, call in enumerate(fake.calls):
        expected = users[i % len(users)]
        assert conversations.user_of(call["sender"]) == expected
        assert call["sender"] == rasa_sender("shared", expected)


@pytest.mark.parametrize("token", ["not-a-session", ADMIN, "x" * 300])
def test_unknown_token_is_401_and_reaches_no_bot(api, token):
    client, fake = api
    r = chat(client, "我的码为什么是橙色", token)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"
    assert fake.calls == []


def test_expired_token_is_401(api):
    client, fake = api
    past = datetime.now(timezone.utc) - timedelta(days=2)
    token, _ = tokens.create_session(service.sessions(), "user-a", ttl_s=3600, now=past)
    r = chat(client, "我的码为什么是橙色", token)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"
    assert fake.calls == []


def test_agent_token_is_not_a_session(api):
    client, fake = api
    _, agent_token = service.create_agent("坐席 3")
    assert chat(client, "你好", agent_token).status_code == 401
    assert fake.calls == []


TYPED = f"我叫{NAME}，身份证{ID_NUMBER}，手机{PHONE}，想给我爸{FAMILY_NAME}申领"


def test_what_the_app_sends_rasa_is_masked(api):
    """The app side of it: the user's own name, ID and phone are masked in what Rasa is sent.
    What Rasa actually stored (its tracker database, its log) is read in tests/test_stack_e2e.py."""
    client, fake = api
    client.post("/api/v1/admin/accounts/demo-0001", json=document(), headers=admin())
    token = sign_in(client, "demo-0001")
    assert chat(client, TYPED, token).status_code == 200
    sent = fake.calls[-1]["text"]
    for raw in RAW_PII:
        assert raw not in sent
    assert "林**" in sent and "3501**********1234" in sent and "138****8000" in sent
    assert "想给我爸" in sent                       # the rest of the question is intact
    # Anonymous: no account to take names from, but the numbers are masked all the same.
    chat(client, TYPED)
    anon = fake.calls[-1]["text"]
    assert ID_NUMBER not in anon and PHONE not in anon


def test_chat_reads_are_audited_per_conversation(api, db):
    client, _ = api
    client.post("/api/v1/admin/accounts/demo-0001", json=document(), headers=admin())
    token = sign_in(client, "demo-0001")
    chat(client, "你好", token, sender="wx-9")
    with db.connect() as conn:
        [row] = conn.execute(select(AccountRead)).mappings().all()
    assert (row["actor"], row["user_id"], row["purpose"], row["found"]) == \
        ("chat", "demo-0001", "mask_input", True)
    assert row["conversation"] == audit.conversation_ref(rasa_sender("wx-9", "demo-0001"))


def test_an_account_source_outage_does_not_stop_the_chat(api, db, monkeypatch):
    from accounts.source import SourceUnavailable

    client, fake = api
    token = sign_in(client, "demo-0001")

    def down(*args, **kwargs):
        raise SourceUnavailable("upstream down")

    monkeypatch.setattr(service, "read_account_for", down)
    r = chat(client, f"手机{PHONE}", token)
    assert r.status_code == 200
    assert PHONE not in fake.calls[-1]["text"]           # the regexes still mask


def test_nothing_personal_in_logs_or_stored_rows(api, db, caplog):
    """A whole session's worth of traffic: admin POST, GET, sign-in, chat. Logs and the audit,
    session and agent tables hold no name, ID number, phone number or token."""
    caplog.set_level("INFO")
    client, _ = api
    client.post("/api/v1/admin/accounts/demo-0001", json=document(), headers=admin())
    client.get("/api/v1/admin/accounts/demo-0001", headers=admin())
    token = sign_in(client, "demo-0001")
    r = client.post("/api/v1/admin/agents", json={"name": "坐席 3"}, headers=admin())
    agent_token = r.json()["token"]
    chat(client, TYPED, token)
    chat(client, TYPED)
    client.post("/api/v1/admin/accounts/demo-0001", json=document(auth_level="L9"), headers=admin())
    formatter = JsonFormatter()
    logged = "\n".join(formatter.format(rec) for rec in caplog.records)
    assert "account_read" in logged and "session_created" in logged and "chat_turn" in logged
    with db.connect() as conn:
        stored = "\n".join(repr(conn.execute(text(f"SELECT * FROM {t}")).all())
                           for t in ("account_reads", "user_sessions", "agents"))
    for raw in (*RAW_PII, token, agent_token, ADMIN):
        assert raw not in logged, raw
        assert raw not in stored, raw


def test_concurrent_chats_keep_their_users(api):
    """Requests in flight at once, each answered for its own token's user."""
    client, fake = api
    tokens_ = {u: sign_in(client, u) for u in ("p", "q")}

    async def burst():
        import httpx

        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
            return await asyncio.gather(*[
                ac.post("/api/v1/chat", json={"sender": "s", "text": "hi"},
                        headers={"Authorization": f"Bearer {tokens_[u]}"}) for u in "pqpqpqpq"])

    responses = client.portal.call(burst)
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["messages"][0]["text"] for r in responses] == [f"好的 {u}" for u in "pqpqpqpq"]
    assert sorted(conversations.user_of(c["sender"]) for c in fake.calls) == ["p"] * 4 + ["q"] * 4
    for c in fake.calls:
        assert c["sender"] == rasa_sender("s", conversations.user_of(c["sender"]))
