"""The action webhook (api.actions_app) as Rasa 3.6 calls it, on its own listener.

With enable_selective_domain Rasa sends no domain and no digest; rasa-sdk alone would answer
449 (which Rasa 3.6 does not retry), so every custom action turn would lose its reply: the
webhook supplies the bot's own domain. Anything that is not an action call Rasa would send is
a 4xx; an action whose service fails still answers the user."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from api.actions_app import TURN_ENDS, create_actions_app, load_domain
from api.main import create_app
from assistant import kb_reload, runtime
from core.settings import REPO_ROOT, Settings
from retrieval.kb import load_kb

INTERNAL = {"X-HC-Internal-Token": "x"}


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "_retriever", None)
    runtime.install(kb_reload._bm25_retriever(load_kb(REPO_ROOT / "kb" / "faq_zh.md")))
    with TestClient(create_actions_app(Settings(var_dir=tmp_path, internal_token="x"))) as c:
        yield c


def call(action: str, text: str, intent: str, entities=(), lang="zh", **extra) -> dict:
    return {"next_action": action, "sender_id": "anon:web-1", "version": "3.6.21", **extra,
            "tracker": {"sender_id": "anon:web-1", "slots": {"lang": lang}, "events": [],
                        "latest_message": {"text": text, "intent": {"name": intent, "confidence": 0.9},
                                           "entities": list(entities), "metadata": {}},
                        "latest_event_time": None, "paused": False, "followup_action": None,
                        "active_loop": {}, "latest_action_name": "action_listen"}}


def post(client, body, headers=INTERNAL, **kw):
    return client.post("/webhook", headers=headers, **({"json": body} if not kw else kw))


def test_a_call_without_the_domain_runs_the_action(client):
    resp = post(client, call("action_diagnose", "我的码为什么是橙的", "why_orange"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["responses"] and body["responses"][0]["text"]


def test_a_domain_rasa_does_send_is_used_as_is(client):
    domain = load_domain()
    resp = post(client, call("action_diagnose", "我的码为什么是橙的", "why_orange", domain=domain))
    assert resp.status_code == 200 and resp.json()["responses"]


def test_the_domain_file_is_the_bots():
    domain = load_domain()
    assert "action_diagnose" in domain["actions"] and "lang" in domain["slots"]


@pytest.mark.parametrize("headers", [{}, {"X-HC-Internal-Token": "wrong"}])
def test_the_secret_is_required_in_the_header(client, headers):
    resp = post(client, call("action_answer_faq", "健康码可以截图吗", "faq"), headers=headers)
    assert resp.status_code == 403
    # Not in the URL: Rasa's old `?token=` is refused too.
    resp = client.post("/webhook?token=x", json=call("action_answer_faq", "健康码可以截图吗", "faq"))
    assert resp.status_code == 403


@pytest.mark.parametrize("raw", [
    b"[]", b"[1, 2, 3]", b'"text"', b"null", b"{}", b'{"next_action": 3}',
    b'{"next_action": "action_answer_faq", "tracker": []}',
    b'{"next_action": "action_answer_faq", "tracker": {"sender_id": "s", "latest_message": []}}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b"{not json", b"\xff\xfe",
])
def test_bodies_that_are_no_action_call_are_400(client, raw):
    resp = client.post("/webhook", headers={**INTERNAL, "content-type": "application/json"}, content=raw)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "bad_request"


def test_unknown_action_is_404(client):
    assert post(client, call("action_nope", "hi", "greet")).status_code == 404


@pytest.mark.parametrize("entities", [
    [{"entity": "helpful", "value": "yes"}, {"entity": "faq_id", "value": {"a": 1}}],
    [{"entity": "helpful", "value": 1}],
    [{"entity": "helpful", "value": ["yes"]}, {"entity": "faq_id", "value": None}],
])
def test_typed_payload_values_never_crash_the_feedback_action(client, entities):
    resp = post(client, call("action_record_feedback", "/feedback", "feedback", entities=entities))
    assert resp.status_code == 200, resp.text
    responses = resp.json()["responses"]
    assert any(r.get("text") or r.get("response") for r in responses)
    # Answered by the action itself, not by the webhook's apology for a crash.
    assert all((r.get("custom") or {}).get("meta", {}).get("error") is None for r in responses)


def test_an_action_whose_service_fails_still_answers_politely(client, monkeypatch):
    from assistant import faq

    def down(*a, **k):
        raise RuntimeError("index gone")

    monkeypatch.setattr(faq, "answer", down)
    for lang, word in (("zh", "稍后再试"), ("en", "try again")):
        resp = post(client, call("action_answer_faq", "健康码可以截图吗", "faq", lang=lang))
        assert resp.status_code == 200
        body = resp.json()
        assert word in body["responses"][0]["text"] and "0591-62623959" in body["responses"][0]["text"]
        assert body["events"] == [TURN_ENDS]      # no slot changes; the turn still ends


def test_every_action_response_ends_the_turn(client):
    body = post(client, call("action_answer_faq", "健康码可以截图吗", "faq")).json()
    assert body["events"][-1] == {"event": "followup", "name": "action_listen"}
    assert body["events"].count(TURN_ENDS) == 1


def test_every_custom_action_is_the_last_step_of_its_rules():
    """TURN_ENDS tells Rasa to listen after any custom action: true only while no rule or story
    goes on after one. A rule that does must change the webhook first."""
    bot = Path(__file__).resolve().parents[1] / "bot"
    custom = set(yaml.safe_load((bot / "domain.yml").read_text(encoding="utf-8"))["actions"])
    checked = 0
    for path in sorted((bot / "data").glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for item in [*(data.get("rules") or []), *(data.get("stories") or [])]:
            steps = item.get("steps") or []
            for i, step in enumerate(steps):
                if step.get("action") in custom:
                    checked += 1
                    # Next comes the user's turn (or the rule ends, and the bot waits for one).
                    assert i == len(steps) - 1 or "intent" in steps[i + 1], \
                        f"{path.name}: {item.get('rule') or item.get('story')}"
            assert item.get("wait_for_user_input", True), item
    assert checked >= len(custom)


def test_the_user_facing_app_has_no_action_webhook(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "_retriever", None)
    with TestClient(create_app(Settings(var_dir=tmp_path, internal_token="x"), load_index=False)) as c:
        for path in ("/internal/actions/webhook", "/webhook"):
            assert c.post(path, headers=INTERNAL, json=call("action_answer_faq", "hi", "faq")).status_code in (404, 405)
        assert "/webhook" not in json.dumps(c.get("/openapi.json").json()["paths"])
