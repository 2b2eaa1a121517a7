"""assistant.feedback: presses and unanswered questions stored masked, lazily, never breaking a reply."""
from __future__ import annotations

import pytest
from sqlalchemy import select, text

from _store_fixtures import DATABASES, migrated_for
from assistant import feedback
from core.settings import get_settings
from retrieval.types import Hit
from store import dispose_default, get_engine
from store.models import FaqFeedback, UnansweredQuestion

ID_NUMBER = "350102199001011234"
PHONE = "13800138000"
PASSPORT = "E12345678"


@pytest.fixture(params=DATABASES)
def db(request, tmp_path):
    with migrated_for(request.param, tmp_path, feedback) as engine:
        yield engine


def rows(engine, model):
    with engine.connect() as conn:
        return list(conn.execute(select(model)).mappings())


def dump(engine) -> str:
    """Every stored value of both tables, as one string (to look for raw personal data)."""
    with engine.connect() as conn:
        out = []
        for table in ("faq_feedback", "unanswered_question"):
            out += [repr(tuple(r)) for r in conn.execute(text(f"SELECT * FROM {table}"))]
    return "\n".join(out)


def test_record_stores_the_press_and_thanks(db):
    reply = feedback.record("wx-user-42", "personal.screenshot", True, "zh", kb_version="kb1")
    assert reply.meta == {"faq_id": "personal.screenshot", "feedback": True}
    assert reply.messages and reply.messages[0].text
    [row] = rows(db, FaqFeedback)
    assert (row["faq_id"], row["helpful"], row["lang"], row["kb_version"]) == \
        ("personal.screenshot", True, "zh", "kb1")
    # A pseudonym: stable per conversation, and not the sender id itself.
    assert row["conversation"] == feedback.conversation_ref("wx-user-42") != "wx-user-42"
    assert "wx-user-42" not in dump(db)
    assert rows(db, UnansweredQuestion) == []   # a helpful answer is not a KB gap


def test_not_helpful_with_its_question_is_listed_masked(db):
    feedback.record("c9", "personal.name_mismatch", False, "zh",
                    question=f"我身份证{ID_NUMBER}手机{PHONE}名字不对咋办", kb_version="kb1")
    [fb] = rows(db, FaqFeedback)
    assert fb["helpful"] is False
    [uq] = rows(db, UnansweredQuestion)
    assert uq["decision"] == "not_helpful"
    assert uq["candidates"] == [{"faq_id": "personal.name_mismatch", "score": None}]
    assert "3501**********1234" in uq["text_masked"] and "138****8000" in uq["text_masked"]
    stored = dump(db)
    assert ID_NUMBER not in stored and PHONE not in stored
    assert "01199001" not in stored   # not even the birth date part of the id


def test_record_unanswered_masks_and_normalises(db):
    hits = (Hit("personal.screenshot", "健康码可以截图使用吗?", 0.41), Hit("personal.howto", "个人健康码操作流程", 0.3))
    text_in = f"  護照{PASSPORT}，電話 {PHONE}：碼咋截圖？ "
    assert feedback.record_unanswered("c1", text_in, "clarify", hits, "zh-hant", "kb2") is True
    [uq] = rows(db, UnansweredQuestion)
    assert PHONE not in uq["text_masked"] and PASSPORT not in uq["text_masked"]
    assert "138****8000" in uq["text_masked"]
    assert uq["text_masked"].startswith("護照")           # shown as the user wrote it (cleaned)
    assert uq["text_normalised"] == "护照e*******78电话138****8000码咋截图".replace("*", "")
    assert uq["candidates"] == [{"faq_id": "personal.screenshot", "score": 0.41},
                                {"faq_id": "personal.howto", "score": 0.3}]
    assert (uq["decision"], uq["lang"], uq["kb_version"]) == ("clarify", "zh-hant", "kb2")
    stored = dump(db)
    assert PHONE not in stored and PASSPORT not in stored and "c1" not in stored.split("'")


def test_candidates_as_dicts_or_ids(db):
    feedback.record_unanswered("c1", "外国人能弄码吗", "none", ["overseas.foreigner_bamin"], "zh", None)
    feedback.record_unanswered("c1", "外国人能弄码吗", "none", [{"faq_id": "x.y", "score": 0.1}], "zh", None)
    got = [r["candidates"] for r in rows(db, UnansweredQuestion)]
    assert sorted(map(str, got)) == sorted(map(str, [[{"faq_id": "overseas.foreigner_bamin", "score": None}],
                                                     [{"faq_id": "x.y", "score": 0.1}]]))


@pytest.mark.parametrize("text_in", ["你好", "谢谢！", "   ", "？？？", "asdfghjkl"])
def test_greetings_and_noise_are_not_kb_gaps(db, text_in):
    assert feedback.record_unanswered("c1", text_in, "none", [], "zh", None) is False
    assert rows(db, UnansweredQuestion) == []


def test_bad_decision_is_a_programming_error(db):
    with pytest.raises(ValueError):
        feedback.record_unanswered("c1", "码咋是橙的", "answer", [], "zh", None)


def test_storage_failure_never_breaks_the_reply(tmp_path):
    engine = get_engine(url=f"sqlite:///{tmp_path / 'unmigrated.db'}")   # no tables at all
    feedback.configure(engine)
    try:
        reply = feedback.record("c1", "personal.screenshot", False, "en", question="why")
        assert reply.meta["feedback"] is False and reply.messages
        assert feedback.record_unanswered("c1", "码咋是橙的", "none", [], "zh", None) is False
    finally:
        feedback.configure(None)
        engine.dispose()


def test_database_is_opened_lazily_and_migrated(tmp_path, monkeypatch):
    db_file = tmp_path / "lazy" / "hc.db"
    monkeypatch.setenv("HC_DATABASE_URL", f"sqlite:///{db_file}")
    get_settings.cache_clear()
    dispose_default()
    feedback.configure(None)
    try:
        assert not db_file.exists()        # nothing opened by importing or configuring
        assert feedback.record_unanswered("c1", "码咋是橙的", "none", [], "zh", None) is True
        assert db_file.exists()
        assert [q.text_masked for q in feedback.unanswered()] == ["码咋是橙的"]
    finally:
        feedback.configure(None)
        dispose_default()
        get_settings.cache_clear()


def test_reading_back_since_and_not_helpful_counts(db):
    from datetime import datetime, timedelta, timezone

    from store import session_factory

    feedback.record_unanswered("c1", "码咋是橙的", "none", [], "zh", None)
    with session_factory(db).begin() as s:
        s.add(UnansweredQuestion(created_at=datetime.now(timezone.utc) - timedelta(days=40),
                                 conversation="old", text_masked="旧问题", text_normalised="旧问题",
                                 decision="none", candidates=[], lang="zh", kb_version=None))
    assert [q.text_masked for q in feedback.unanswered(7)] == ["码咋是橙的"]
    assert [q.text_masked for q in feedback.unanswered()] == ["码咋是橙的", "旧问题"]   # newest first

    for helpful in (False, False, True):
        feedback.record("c2", "family.quota", helpful, "zh")
    feedback.record("c3", "personal.howto", True, "zh")
    bad = feedback.not_helpful_by_entry()
    assert [(b.faq_id, b.not_helpful, b.total) for b in bad] == [("family.quota", 2, 3)]
