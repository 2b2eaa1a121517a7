"""Bad input through the user-facing app: a clear 4xx or a polite reply, never a 500.

Oversized bodies (declared or chunked), typed values an action can send back, a database that
is down while the chat reads the user's own names, a KB reload pointed at an impossible folder."""
from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import OperationalError

from _accounts_fixtures import ADMIN, FakeRasa, admin, api, db, document  # noqa: F401
from accounts import service
from assistant import chat as chat_service
from assistant.rasa_client import BotTurn
from core.logs import JsonFormatter

MB = 1024 * 1024


def test_a_20_mb_body_is_413_before_any_route_reads_it(api):
    client, fake = api
    big = b'{"sender": "x", "text": "' + b"a" * (20 * MB) + b'"}'
    r = client.post("/api/v1/chat", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert fake.calls == []


def test_a_chunked_body_over_the_limit_is_413(api):
    client, fake = api

    def chunks():
        for _ in range(40):
            yield b"a" * (MB // 2)

    r = client.post("/api/v1/chat", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert fake.calls == []


def test_a_chunked_body_under_the_limit_is_read_normally(api):
    client, fake = api

    def chunks():
        yield b'{"sender": "x", '
        yield '"text": "健康码可以截图吗"}'.encode()

    r = client.post("/api/v1/chat", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(fake.calls) == 1


def test_admin_routes_are_limited_too(api):
    client, _ = api
    r = client.post("/api/v1/admin/accounts/u1", content=b"{" + b" " * (2 * MB) + b"}",
                    headers={**admin(), "content-type": "application/json"})
    assert r.status_code == 413


def test_a_long_text_is_refused_politely_before_any_per_character_work(api, monkeypatch):
    client, fake = api
    seen = []
    real = chat_service.language_signal
    monkeypatch.setattr(chat_service, "language_signal", lambda t: seen.append(len(t)) or real(t))
    r = client.post("/api/v1/chat", json={"sender": "x", "text": "健康碼" * 3400})
    assert r.status_code == 200 and "太長" in r.json()["messages"][0]["text"]
    assert fake.calls == [] and max(seen) <= 200


@pytest.mark.parametrize("meta", [
    {"faq_id": {"a": 1}, "diagnosis": "ok", "handoff": "yes", "ticket_id": 7},
    {"faq_id": ["x"], "diagnosis": [1, None, "ok"], "intent": {"n": 1}},
    "not a dict", None, [1, 2],
])
def test_whatever_meta_an_action_sends_the_response_keeps_its_shape(api, meta):
    client, fake = api

    async def send(sender, text, metadata):
        return BotTurn([{"text": "好的", "buttons": [{"title": 3}, "x"]}, {"custom": {"meta": meta}}, "junk",
                        {"text": {"nested": 1}}], "faq", 0.9)

    fake.send = send
    r = client.post("/api/v1/chat", json={"sender": "x", "text": "健康码可以截图吗"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["messages"][0]["text"] == "好的"
    assert body["meta"]["faq_id"] is None and body["meta"]["handoff"] is False
    assert all(isinstance(c, str) for c in body["meta"]["diagnosis"])


def test_a_database_failure_while_reading_the_users_names_is_503(api, monkeypatch, caplog):
    client, fake = api
    client.post("/api/v1/admin/accounts/u1", json=document("u1"), headers=admin())
    token = client.post("/api/v1/admin/sessions", json={"user_id": "u1"}, headers=admin()).json()["token"]

    def down(*a, **k):
        raise OperationalError("INSERT INTO account_reads VALUES (?)", ("13812345678",), Exception("db down"))

    monkeypatch.setattr(service, "read_account_for", down)
    caplog.set_level(logging.INFO)
    r = client.post("/api/v1/chat", json={"sender": "x", "text": "我的码为什么是橙色"},
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
    assert r.headers["retry-after"]
    assert fake.calls == []
    logged = "\n".join(JsonFormatter().format(rec) for rec in caplog.records)
    assert "database unavailable" in logged and "13812345678" not in logged


def test_database_errors_do_not_carry_the_values(tmp_path):
    """hide_parameters: what an error says names no bound value (an account document, a text)."""
    from sqlalchemy import text

    from store import get_engine

    engine = get_engine(url=f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(Exception) as caught:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO no_such_table VALUES (:v)"), {"v": "350102199001011234"})
    assert "350102199001011234" not in str(caught.value)
    engine.dispose()


@pytest.mark.parametrize("index_dir", ["x" * 1000, "/proc/self/mem/x", "\x00bad"])
def test_kb_reload_with_an_impossible_index_dir_is_4xx(api, monkeypatch, index_dir, tmp_path):
    from assistant import kb_reload, runtime
    from core.settings import REPO_ROOT
    from retrieval.kb import load_kb

    client, _ = api
    monkeypatch.setattr(runtime, "_retriever", None)
    runtime.install(kb_reload._bm25_retriever(load_kb(REPO_ROOT / "kb" / "faq_zh.md")))
    settings = client.app.state.settings
    monkeypatch.setattr(settings, "retrieval_mode", "hybrid")
    monkeypatch.setattr(settings, "model_dir", tmp_path)   # a model folder, so index_dir is looked at
    r = client.post("/api/v1/admin/kb/reload", json={"index_dir": index_dir}, headers=admin())
    assert 400 <= r.status_code < 500, r.text
