"""The user's own situation through the whole stack (Rasa + app, demo accounts, real sessions)."""
from __future__ import annotations

import httpx
import pytest

from tools.stack import running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

HOTLINE = "0591-62623959"
DEMO_NAMES = ("演示甲", "演示乙", "演示丙", "演示丁", "演示戊", "演示己", "演示庚", "演示辛")


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("diag-stack")


@pytest.fixture(scope="module")
def api(stack_dir):
    # The stack's own SQLite files (app database and Rasa's tracker store) live in stack_dir.
    env = {"HC_DEMO": "1", "HC_ADMIN_TOKEN": "t", "HC_DATABASE_URL": ""}
    with running_stack(stack_dir, env=env) as (base, _startup, _pid):
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client


def sign_in(api, user_id: str) -> dict[str, str]:
    resp = api.post("/api/v1/demo/sessions", json={"user_id": user_id})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


def chat(api, text: str, sender: str, headers: dict[str, str] | None = None, **extra) -> dict:
    resp = api.post("/api/v1/chat", json={"sender": sender, "text": text, **extra}, headers=headers or {})
    assert resp.status_code == 200, resp.text
    return resp.json()


def reply_text(body: dict) -> str:
    return " ".join(m["text"] for m in body["messages"])


def test_anonymous_my_code_question_asks_to_sign_in_and_reveals_nothing(api):
    for text, sender in (("我的码为什么是橙的", "anon-zh"), ("why is my code orange?", "anon-en")):
        body = chat(api, text, sender)
        assert body["meta"]["diagnosis"] == [], body
        assert body["meta"].get("signin_required") is True, body
        said = reply_text(body)
        assert "登录" in said or "sign in" in said
        assert not any(name in said for name in DEMO_NAMES)


def test_a_user_id_in_the_body_does_not_sign_anyone_in(api):
    body = chat(api, "我的码为什么是橙的", "anon-body", user_id="demo-orange-quarantine",
                metadata={"signed_in": True, "user_id": "demo-orange-quarantine"})
    assert body["meta"]["diagnosis"] == []
    assert "演示甲" not in reply_text(body)


def test_orange_quarantine_in_chinese_then_what_to_do(api):
    headers = sign_in(api, "demo-orange-quarantine")
    body = chat(api, "我的健康码为什么是橙色", "quarantine-zh", headers)
    assert body["meta"]["diagnosis"] == ["orange.quarantine_release_pending"], body
    assert HOTLINE in reply_text(body)
    # The follow-up stays on the finding, not on a FAQ entry.
    body = chat(api, "那我该怎么办", "quarantine-zh", headers)
    assert body["meta"]["diagnosis"] == ["orange.quarantine_release_pending"], body
    assert HOTLINE in reply_text(body)


def test_orange_quarantine_in_english(api):
    headers = sign_in(api, "demo-orange-quarantine")
    body = chat(api, "why is my code orange?", "quarantine-en", headers)
    assert body["meta"]["diagnosis"] == ["orange.quarantine_release_pending"], body
    said = reply_text(body)
    assert HOTLINE in said and "call" in said.lower(), said
    body = chat(api, "what should I do now?", "quarantine-en", headers)
    assert body["meta"]["diagnosis"] == ["orange.quarantine_release_pending"], body
    assert HOTLINE in reply_text(body)


@pytest.mark.parametrize("user_id, text, code", [
    ("demo-orange-origin", "我的码咋是橙的", "orange.origin_not_synced"),
    ("demo-orange-overseas", "why is my health code orange", "orange.overseas_observation"),
    ("demo-face-mismatch", "我刷脸老是通不过", "face.identity_mismatch"),
    ("demo-face-retry", "my face verification keeps failing", "face.retry_other_login"),
    ("demo-minor", "我的健康码怎么生成不了", "generate.minor"),
    ("demo-family-full", "我能给我儿子申请健康码吗", "family.quota_full"),
    ("demo-overseas-checkin", "我从国外回来，境外入闽码怎么申请不了", "overseas.checkin_missing"),
])
def test_each_demo_account_gets_its_own_finding(api, user_id, text, code):
    body = chat(api, text, f"demo-{code}", sign_in(api, user_id))
    assert code in body["meta"]["diagnosis"], body


def test_user_as_token_never_shows_user_bs_situation(api):
    a, b = sign_in(api, "demo-face-retry"), sign_in(api, "demo-face-mismatch")
    # Same client-chosen conversation id for both: the conversations still belong to each token.
    body_a = chat(api, "我的人脸识别为什么一直失败", "shared-sender", a)
    body_b = chat(api, "我的人脸识别为什么一直失败", "shared-sender", b)
    assert body_a["meta"]["diagnosis"] == ["face.retry_other_login"], body_a
    assert body_b["meta"]["diagnosis"] == ["face.identity_mismatch"], body_b
    # A's follow-up stays on A's finding, whatever B asked in between.
    follow_a = chat(api, "那我该怎么办", "shared-sender", a)
    assert follow_a["meta"]["diagnosis"] == ["face.retry_other_login"], follow_a
    # A's token asking about orange sees A's (green) code, never B's or anyone else's.
    orange_a = chat(api, "我的码为什么是橙的", "a-orange", a)
    assert not any(c.startswith("orange.") and c != "ok" for c in orange_a["meta"]["diagnosis"]), orange_a
    assert "演示丁" not in reply_text(orange_a)


def test_general_faq_question_signed_in_gets_the_answer_and_the_own_finding(api):
    headers = sign_in(api, "demo-orange-quarantine")
    body = chat(api, "已隔离14天且无症状,健康码仍显示橙色,该怎么办?", "faq-personal", headers)
    assert body["meta"]["faq_id"] == "personal.orange_after_quarantine", body
    assert body["meta"]["diagnosis"] == ["orange.quarantine_release_pending"], body
    texts = [m["text"] for m in body["messages"]]
    assert texts[1].startswith("您的账户情况")


def test_personal_data_typed_by_the_user_never_reaches_the_tracker_store_or_logs(api, stack_dir):
    import sqlite3

    headers = sign_in(api, "demo-orange-quarantine")
    raw = ("350102199001011234", "13912345678", "演示甲")
    chat(api, "我是演示甲,身份证350102199001011234,电话13912345678,我的码为什么是橙色", "pii-check", headers)
    with sqlite3.connect(stack_dir / "rasa_tracker.db") as db:
        stored = " ".join(row[0] or "" for row in db.execute("select data from events"))
    assert "3501**********1234" in stored and "139****5678" in stored   # the turn is there, masked
    assert not any(value in stored for value in raw)
    logs = " ".join(p.read_text(errors="ignore") for p in (stack_dir / "logs").glob("*.log"))
    assert not any(value in logs for value in raw)
