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


# --- why is my code orange, when neither the words nor the account say which cause -------------

ORANGE_IDS = ["personal.orange_after_quarantine", "domestic.mutual_orange"]


@pytest.fixture(scope="module")
def kb():
    from core.settings import REPO_ROOT
    from retrieval.kb import load_kb
    return load_kb(REPO_ROOT / "kb" / "faq_zh.md")


def test_the_two_orange_entries_are_the_kbs_orange_entries(kb):
    assert [e.id for e in kb.entries if "orange" in e.diagnosis] == ORANGE_IDS
    assert list(diagnose.ORANGE_ENTRIES) == ORANGE_IDS


@pytest.mark.parametrize("text, cause", [
    ("我的码为什么是橙的", None), ("码咋是橙的", None), ("為什麼我的健康碼是橙色", None),
    ("why is my code orange?", None), ("my code turned orange??", None),
    ("隔离满14天了码还是橙的", "personal.orange_after_quarantine"),
    ("隔離結束了碼還是橙色", "personal.orange_after_quarantine"),
    ("隔里完了还是橙码", "personal.orange_after_quarantine"),          # typo fixed by normalize
    ("I did two weeks of quarantine and I'm still orange", "personal.orange_after_quarantine"),
    ("我在广东是绿码,到福建成了橙码", "domestic.mutual_orange"),
    ("出发地的码是绿的,八闽码橙色", "domestic.mutual_orange"),
    ("不是互認了嗎,為啥我是橙碼", "domestic.mutual_orange"),
    ("green in my home province, orange here", "domestic.mutual_orange"),
    ("从外省回来隔离了14天还是橙码", None),                               # both named: still both
])
def test_orange_cause_from_the_users_words(text, cause):
    assert diagnose.orange_cause(text) == cause


@pytest.mark.parametrize("lang", ["zh", "zh-hant", "en"])
def test_anonymous_orange_question_offers_both_entries_and_sign_in(kb, lang):
    found = diagnose.explain(None, "orange", conversation_id="c7", lang=lang)
    reply = diagnose.orange_causes(found, lang, kb=kb)

    first, sign_in = reply.messages
    assert [b.payload for b in first.buttons] == [f'/choose_faq{{"faq_id":"{i}"}}' for i in ORANGE_IDS]
    if lang == "en":
        assert [b.title for b in first.buttons] == [kb.get(i).question_en for i in ORANGE_IDS]
        assert "quarantine" in first.text and "province" in first.text and "0591-62623959" in first.text
        assert "sign in" in sign_in.text
    else:   # zh-hant: the same simplified text, converted at the edge (assistant.lang)
        assert [b.title for b in first.buttons] == [kb.get(i).title for i in ORANGE_IDS]
        assert "隔离" in first.text and "外省" in first.text and "0591-62623959" in first.text
        assert "登录" in sign_in.text and "哪一种" in sign_in.text
    assert reply.meta["signin_required"] is True and reply.meta["diagnosis"] == []
    assert reply.meta["decision"] == "clarify" and reply.meta["faq_id"] is None
    assert reply.meta["candidates"] == ORANGE_IDS


def test_both_causes_after_a_no_data_message_keep_it(kb, db):
    found = diagnose.explain("nobody", "orange", conversation_id="c8", lang="en")
    reply = diagnose.orange_causes(found, "en", kb=kb)
    assert len(reply.messages[0].buttons) == 2
    assert reply.messages[1:] == found.messages
    assert "signin_required" not in reply.meta


def test_signed_in_user_still_gets_their_own_orange_finding(db, monkeypatch):
    from datetime import date
    monkeypatch.setattr(diagnose, "china_today", lambda: date(2026, 11, 27))
    put("u-orange-own")
    for lang in ("zh", "en"):
        reply = diagnose.explain("u-orange-own", "orange", conversation_id="c9", lang=lang,
                                 text="why is my code orange?")
        assert reply.meta["diagnosis"] == ["orange.quarantine_release_pending"]
        assert "signin_required" not in reply.meta
