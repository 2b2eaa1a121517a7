"""The whole stack as `make run` starts it (Rasa + app, real model and index), driven over HTTP."""
from __future__ import annotations

import json

import httpx
import pytest

from retrieval.kb import load_kb
from core.settings import REPO_ROOT
from tools.stack import running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
KB = load_kb(REPO_ROOT / "kb" / "faq_zh.md")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("stack")) as (base, _startup, _pid):
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client


def chat(api, text, sender="e2e"):
    resp = api.post("/api/v1/chat", json={"sender": sender, "text": text})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_healthz_ok(api):
    body = api.get("/healthz").json()
    assert body["status"] == "ok"
    assert all(body["checks"].values())


@pytest.mark.parametrize("entry", KB.entries, ids=lambda e: e.id)
def test_every_seed_question_answered_with_its_id(api, entry):
    body = chat(api, entry.question, sender=f"seed-{entry.id}")
    assert body["meta"]["faq_id"] == entry.id, body
    assert body["meta"]["intent"]
    assert body["messages"][0]["text"] == entry.answer
    titles = [b["title"] for m in body["messages"] for b in m["buttons"]]
    assert "有帮助" in titles and "没帮助" in titles


def test_screenshot_question_from_the_issue(api):
    body = chat(api, "健康码可以截图吗")
    assert body["meta"]["faq_id"] == "personal.screenshot"
    assert "1分钟" in body["messages"][0]["text"]


def test_english_question_gets_english_answer(api):
    body = chat(api, "Can foreigners apply for the Bamin health code?")
    assert body["meta"]["faq_id"] in {"overseas.foreigner_bamin", "overseas.foreign_passport"}
    assert body["messages"][0]["text"].isascii() or "Bamin" in body["messages"][0]["text"]


def test_greeting_is_not_answered_from_the_faq(api):
    body = chat(api, "你好")
    assert body["meta"]["intent"] == "greet"
    assert body["meta"]["faq_id"] is None


def test_out_of_scope_gets_hotline_not_an_answer(api):
    body = chat(api, "明天福州会下雨吗")
    assert body["meta"]["faq_id"] is None
    assert "0591-62623959" in " ".join(m["text"] for m in body["messages"])


def test_request_human_gives_hotline_and_handoff(api):
    body = chat(api, "我要转人工客服")
    assert body["meta"]["handoff"] is True
    assert "0591-62623959" in body["messages"][0]["text"]


def test_feedback_button_payload(api):
    payload = '/feedback{"helpful":"yes","faq_id":"personal.screenshot"}'
    body = chat(api, payload, sender="fb")
    assert body["meta"]["intent"] == "feedback"
    assert body["messages"]


def test_search_endpoint_contract(api):
    body = api.get("/api/v1/faq/search", params={"q": "健康码可以截图吗", "k": 3}).json()
    assert body["abstain"] is False
    assert body["results"][0]["faq_id"] == "personal.screenshot"
    assert set(body["results"][0]) >= {"faq_id", "question", "score"}


@pytest.mark.parametrize("text", ["", "   \n\t ", "\x00\x01\x02"])
def test_empty_text_is_a_clear_422(api, text):
    resp = api.post("/api/v1/chat", json={"sender": "bad", "text": text})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "empty_text"


def test_very_long_text_gets_a_polite_reply(api):
    body = chat(api, "健康码" * 3400)
    assert "太长" in body["messages"][0]["text"]


def test_emoji_only_gets_a_polite_reply(api):
    body = chat(api, "😀😀🙏")
    assert body["meta"]["faq_id"] is None
    assert body["messages"]


def test_control_characters_inside_text_are_ignored(api):
    body = chat(api, "健康码\x00可以\x1b截图吗\u200b")
    assert body["meta"]["faq_id"] == "personal.screenshot"


def test_broken_json_is_400(api):
    resp = api.post("/api/v1/chat", content=b'{"sender": "x", "text": ', headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_json"


def test_wrong_content_type_is_4xx(api):
    resp = api.post("/api/v1/chat", content="sender=x&text=hi", headers={"content-type": "text/plain"})
    assert 400 <= resp.status_code < 500
    assert "error" in resp.json()


def test_missing_fields_is_422(api):
    resp = api.post("/api/v1/chat", content=json.dumps({"text": "hi"}), headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid_request"


def test_internal_webhook_refuses_without_secret(api):
    resp = api.post("/internal/actions/webhook", json={"next_action": "action_answer_faq"})
    assert resp.status_code == 403


def test_openapi_docs_served(api):
    assert api.get("/docs").status_code == 200
    assert "/api/v1/chat" in api.get("/openapi.json").json()["paths"]
