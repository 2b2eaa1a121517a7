"""The whole stack as `make run` starts it (Rasa + app, real model and index), driven over HTTP."""
from __future__ import annotations

import json

import httpx
import pytest

from retrieval.kb import load_kb
from core.settings import REPO_ROOT
from tools import pii_scan
from tools.stack import running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
KB = load_kb(REPO_ROOT / "kb" / "faq_zh.md")


ADMIN = "e2e-admin-token"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("stack")
    with running_stack(var_dir, env={"HC_ADMIN_TOKEN": ADMIN}) as (base, _startup, _pid):
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client, var_dir


@pytest.fixture(scope="module")
def api(stack):
    return stack[0]


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


def test_the_action_webhook_is_not_on_the_user_facing_port(api):
    for path in ("/internal/actions/webhook", "/webhook"):
        resp = api.post(path, json={"next_action": "action_answer_faq"})
        assert resp.status_code in (404, 405)


@pytest.mark.parametrize("payload", ['/feedback{"helpful":"yes","faq_id":{"a":1}}', '/feedback{"helpful":1}',
                                     '/feedback{"helpful":["no"]}', '/choose_faq{"faq_id":123}',
                                     '/choose_faq{"faq_id":"no.such"}', "/no_such_intent", "/",
                                     '/feedback{"helpful":"yes"'])
def test_typed_payloads_get_a_reply_not_an_error(api, payload):
    body = chat(api, payload, sender="typed")
    assert body["messages"] and all(m["text"] or m["buttons"] for m in body["messages"])
    assert body["meta"]["faq_id"] is None or isinstance(body["meta"]["faq_id"], str)


def test_a_20_mb_body_is_413(api):
    resp = api.post("/api/v1/chat", content=b'{"sender":"x","text":"' + b"a" * (20 << 20) + b'"}',
                    headers={"content-type": "application/json"})
    assert resp.status_code == 413


def test_openapi_docs_served(api):
    assert api.get("/docs").status_code == 200
    assert "/api/v1/chat" in api.get("/openapi.json").json()["paths"]


# --- personal data at rest, read from what the stack itself stored and logged --------------------
NAME, FAMILY, ID_NUMBER, PHONE, CONTACT = "林小明", "林大山", "350102199001011234", "13812345678", "13912345678"
ACCOUNT = {
    "user_id": "e2e-user", "name": NAME, "id_type": "resident_id", "id_number": ID_NUMBER, "phone": PHONE,
    "birth_date": "1990-01-01", "auth_level": "L4", "identity_check": "match", "arrival": "none",
    "code": {"color": "orange", "reasons": ["quarantine"]},
    "quarantine": {"start": "2026-11-01", "end": "2026-11-15", "symptoms": False},
    "family": [{"relation": "parent", "name": FAMILY, "id_number": "350102196001011234", "phone": "13712345678"}],
    "emergency_contact": {"name": "王芳", "phone": CONTACT},
}
WRITTEN = [  # every way the review found numbers getting through, and the signed-in user's names
    f"/我的身份证{ID_NUMBER} 电话{PHONE}", f"我叫{NAME},身份证{ID_NUMBER},手机{PHONE},想给我爸{FAMILY}申领",
    "电话 +86 138 1234 5678", "138-1234-5678 能打通吗", "手机138 1234 5678", "ID350102199001011234 查不到",
    "350102 19900101 1234 这个号码申领不了", f"/feedback{{\"helpful\":\"no\",\"faq_id\":\"{PHONE}\"}}",
    f'/choose_faq{{"faq_id":"{ID_NUMBER}"}}', f"My health code is orange, why? My phone is +86 {PHONE}",
    f"為什麼我的健康碼是橙色?身份證{ID_NUMBER}", "我的码为什么是橙色", "转人工,我的电话13812345678",
]
RAW = (NAME, FAMILY, ID_NUMBER, PHONE, CONTACT, "350102196001011234", "13712345678", "王芳",
       "138 1234 5678", "138-1234-5678")


def test_nothing_personal_is_stored_or_logged_in_clear(stack):
    api, var_dir = stack
    auth = {"Authorization": f"Bearer {ADMIN}"}
    assert api.post("/api/v1/admin/accounts/e2e-user", json=ACCOUNT, headers=auth).status_code == 200
    token = api.post("/api/v1/admin/sessions", json={"user_id": "e2e-user"}, headers=auth).json()["token"]
    for text in WRITTEN:
        for headers, sender in (({"Authorization": f"Bearer {token}"}, "pii-signed"), ({}, "pii-anon")):
            if not headers and (NAME in text or FAMILY in text):
                continue   # an anonymous user's name is not known to the app: nothing to mask it by
            resp = api.post("/api/v1/chat", json={"sender": sender, "text": text}, headers=headers)
            assert resp.status_code == 200, (text, resp.text)
            body = resp.json()
            assert body["messages"], text
            for raw in RAW:
                assert raw not in resp.text, (text, raw)
    view = api.get("/api/v1/admin/accounts/e2e-user", headers=auth)
    assert view.status_code == 200
    for raw in RAW:
        assert raw not in view.text, raw
    # Everything the stack wrote: the app database, Rasa's tracker database (with their WAL
    # files), every log; read as bytes.
    files = [p.name for p in pii_scan.files_under(var_dir)]
    assert "hc.db" in files and "rasa_tracker.db" in files and "api.log" in files and "rasa.log" in files
    hits = pii_scan.scan_dir(var_dir, known=RAW)
    assert hits == [], hits
