"""The action webhook as Rasa 3.6 calls it with enable_selective_domain: no domain in the call,
and no digest. rasa-sdk alone would answer 449 (which Rasa 3.6 does not retry), so every custom
action turn would lose its reply; the webhook supplies the bot's own domain."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.routes.actions import load_domain
from assistant import kb_reload, runtime
from core.settings import REPO_ROOT, Settings
from retrieval.kb import load_kb

INTERNAL = {"X-HC-Internal-Token": "x"}


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "_retriever", None)
    runtime.install(kb_reload._bm25_retriever(load_kb(REPO_ROOT / "kb" / "faq_zh.md")))
    with TestClient(create_app(Settings(var_dir=tmp_path, internal_token="x"), load_index=False)) as c:
        yield c


def call(action: str, text: str, intent: str, **extra) -> dict:
    return {"next_action": action, "sender_id": "anon:web-1", "version": "3.6.21", **extra,
            "tracker": {"sender_id": "anon:web-1", "slots": {"lang": "zh"}, "events": [],
                        "latest_message": {"text": text, "intent": {"name": intent, "confidence": 0.9},
                                           "entities": [], "metadata": {"signed_in": False}},
                        "latest_event_time": None, "paused": False, "followup_action": None,
                        "active_loop": {}, "latest_action_name": "action_listen"}}


def test_a_call_without_the_domain_runs_the_action(client):
    resp = client.post("/internal/actions/webhook", headers=INTERNAL,
                       json=call("action_diagnose", "我的码为什么是橙的", "why_orange"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["responses"] and body["responses"][0]["text"]


def test_a_domain_rasa_does_send_is_used_as_is(client):
    domain = load_domain()
    resp = client.post("/internal/actions/webhook", headers=INTERNAL,
                       json=call("action_diagnose", "我的码为什么是橙的", "why_orange", domain=domain))
    assert resp.status_code == 200 and resp.json()["responses"]


def test_the_domain_file_is_the_bots():
    domain = load_domain()
    assert "action_diagnose" in domain["actions"] and "lang" in domain["slots"]
