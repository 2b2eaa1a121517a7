"""The diagnosis service the bot's actions call: sign-in gate, account read, findings as a reply."""
from __future__ import annotations

import pytest

from _accounts_fixtures import RAW_PII, db, document  # noqa: F401  (db is a fixture)
from accounts import service
from assistant import diagnose
from diagnosis.account import parse_account


def put(user_id: str, **changes) -> None:
    service.put_account(user_id, parse_account(document(user_id, **changes)))


def all_text(reply) -> str:
    return " ".join(m.text for m in reply.messages)


def test_anonymous_user_is_asked_to_sign_in_and_shown_nothing():
    reply = diagnose.explain(None, "orange", conversation_id="c1", lang="zh")
    assert reply.meta["signin_required"] is True
    assert reply.meta["diagnosis"] == []
    assert "登录" in all_text(reply)


def test_quarantine_release_pending_names_the_hotline_and_offers_a_ticket(db, monkeypatch):
    from datetime import date
    monkeypatch.setattr(diagnose, "china_today", lambda: date(2026, 11, 27))
    put("u-orange")
    reply = diagnose.explain("u-orange", "orange", conversation_id="c2", lang="zh")
    assert reply.meta["diagnosis"] == ["orange.quarantine_release_pending"]
    assert "0591-62623959" in all_text(reply)
    assert reply.messages[-1].buttons[0].payload == "/request_human"
    assert not any(p in all_text(reply) for p in RAW_PII)


def test_english_reply_for_english_users(db, monkeypatch):
    from datetime import date
    monkeypatch.setattr(diagnose, "china_today", lambda: date(2026, 11, 27))
    put("u-en")
    reply = diagnose.explain("u-en", "orange", conversation_id="c3", lang="en")
    assert all_text(reply).isascii() or "0591-62623959" in all_text(reply)
    assert "hotline" in all_text(reply).lower()


def test_unknown_user_gets_no_account_message(db):
    reply = diagnose.explain("nobody", "face", conversation_id="c4", lang="zh")
    assert reply.meta["diagnosis"] == []
    assert "0591-62623959" in all_text(reply)


def test_family_relation_taken_from_the_text(db):
    put("u-fam", code={"color": "green"}, arrival="none",
        family=[{"relation": "spouse", "name": "王芳", "id_number": "350102199201011234"}])
    reply = diagnose.explain("u-fam", "family", conversation_id="c5", lang="zh", text="我能给老婆申领吗")
    assert reply.meta["diagnosis"] == ["family.quota_full"]


@pytest.mark.parametrize("text, relation", [
    ("我妈的码能帮她弄吗", "parent"), ("岳父能申领吗", "parent"), ("帮儿子申请", "child"),
    ("给老婆办一个", "spouse"), ("Can I apply for my mother?", "parent"),
    ("my son needs a code", "child"), ("what about my wife", "spouse"), ("能帮别人申请吗", None),
])
def test_relation_words(text, relation):
    assert diagnose.relation_in(text) == relation


def test_every_read_is_audited(db):
    from sqlalchemy import text as sql
    put("u-audit")
    diagnose.explain("u-audit", "generate", conversation_id="c6", lang="zh")
    with db.connect() as conn:
        rows = conn.execute(sql("select actor, purpose from account_reads")).fetchall()
    assert ("bot", "diagnosis:generate") in [tuple(r) for r in rows]


def test_next_step_follow_up():
    reply = diagnose.next_step(["orange.quarantine_release_pending"], "zh")
    assert "0591-62623959" in all_text(reply)
    assert diagnose.next_step(["ok"], "zh").messages == ()
