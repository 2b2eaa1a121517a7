"""The diagnosis actions against real rasa_sdk trackers, with assistant.diagnose / assistant.faq
replaced: what they pass the services (whose user id, which topic) and what they hand back."""
from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest
from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from assistant import conversations
from assistant import diagnose as diagnose_service_module
from assistant import faq as faq_service_module
from assistant.types import Button, Message, Reply
from bot.actions import diagnosis as diag_actions
from bot.actions import faq as faq_actions
from core.settings import REPO_ROOT
from retrieval.kb import load_kb

KB = load_kb(REPO_ROOT / "kb" / "faq_zh.md")
SIGNED_IN = {"signed_in": True, "user_id": "demo-a", "lang": "zh"}
# The conversation the app recorded as demo-a's (assistant.conversations); any other is anonymous.
SIGNED_IN_SENDER = "user:abc:conv-1"
ANON_SENDER = "anon:conv-1"


def make_tracker(text: str = "", *, intent: str = "why_orange", metadata: dict[str, Any] | None = None,
                 slots: dict[str, Any] | None = None, sender_id: str | None = None) -> Tracker:
    # A signed-in turn is one of demo-a's conversation and carries the metadata the app sends.
    sender_id = sender_id or (SIGNED_IN_SENDER if metadata is SIGNED_IN else ANON_SENDER)
    return Tracker.from_dict({
        "sender_id": sender_id,
        "slots": {"lang": "zh", "last_faq_id": None, "last_diagnosis": None, **(slots or {})},
        "latest_message": {"text": text, "intent": {"name": intent, "confidence": 1.0},
                           "entities": [], "metadata": metadata if metadata is not None else {}},
        "events": [], "paused": False, "followup_action": None, "active_loop": {},
        "latest_action_name": "action_listen",
    })


def run(action: Any, tracker: Tracker):
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, tracker, {}))
    return dispatcher.messages, events


def texts(messages) -> list[str]:
    return [m["text"] for m in messages if m.get("text")]


def meta_of(messages) -> dict[str, Any]:
    metas = [m["custom"]["meta"] for m in messages if m.get("custom")]
    assert len(metas) == 1
    return metas[0]


class Recorder:
    def __init__(self, reply):
        self.reply = reply
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.reply(*args, **kwargs) if callable(self.reply) else self.reply


def faq_answer(faq_id: str, topics: list[str], text: str = "一般性的回答") -> Reply:
    return Reply((Message(text), Message("这个回答有帮助吗？", (Button("有帮助", "/feedback"),))),
                 {"faq_id": faq_id, "decision": "answer", "diagnosis_topics": topics})


NONE = Reply((Message("没找到"),), {"faq_id": None, "decision": "none"})
SIGN_IN = Reply((Message("请先登录"),), {"diagnosis": [], "signin_required": True, "diagnosis_topic": "orange"})
FINDING = Reply((Message("您隔离已满14天，请拨打0591-62623959。", (Button("转人工", "/request_human"),)),),
                {"diagnosis": ["orange.quarantine_release_pending"], "diagnosis_topic": "orange"})
NOTHING = Reply((), {"diagnosis": [], "diagnosis_topic": "orange"})


@pytest.fixture(autouse=True)
def recorded_conversations(monkeypatch):
    """The app's record of whose conversation is whose: demo-a's one, nobody else's."""
    monkeypatch.setattr(conversations, "user_of", {SIGNED_IN_SENDER: "demo-a"}.get)


@pytest.fixture
def services(monkeypatch):
    """explain / next_step / answer / answer_by_id replaced by recorders the test configures;
    orange_causes is the real one on the real KB (no retriever loaded)."""
    s = type("Services", (), {})()
    s.explain = Recorder(lambda user_id, topic, **kw: SIGN_IN if user_id is None else FINDING)
    s.next_step = Recorder(Reply((Message("请拨打热线0591-62623959。"),), {"diagnosis": ["x"]}))
    s.answer = Recorder(NONE)
    s.answer_by_id = Recorder(lambda faq_id, lang: faq_answer(faq_id, ["orange"], f"答:{faq_id}"))
    monkeypatch.setattr(diag_actions.diagnose_service, "explain", s.explain)
    monkeypatch.setattr(diag_actions.diagnose_service, "next_step", s.next_step)
    monkeypatch.setattr(faq_service_module, "answer", s.answer)
    monkeypatch.setattr(faq_service_module, "answer_by_id", s.answer_by_id)
    monkeypatch.setattr(diag_actions.diagnose_service, "orange_causes",
                        functools.partial(diagnose_service_module.orange_causes, kb=KB))
    return s


# --- action_diagnose -------------------------------------------------------------------------


@pytest.mark.parametrize("intent, topic, faq_id, text", [
    # Orange has two entries: words naming the cause (隔离) pick one (see the orange tests below).
    ("why_orange", "orange", "personal.orange_after_quarantine", "我隔离满14天了,我的码还是橙的"),
    ("why_cannot_generate", "generate", "personal.cannot_generate", "我的码"),
    ("why_face_fail", "face", "personal.face_fail", "我的码"),
    ("name_wrong", "name", "personal.name_mismatch", "我的码"),
    ("can_apply_family", "family", "family.not_allowed", "我的码"),
    ("why_no_overseas_code", "overseas", "overseas.cannot_apply", "我的码"),
])
def test_intent_names_the_topic_and_its_faq_entry(services, intent, topic, faq_id, text):
    services.explain.reply = NOTHING   # the account does not settle it: the topic's entry answers
    messages, events = run(diag_actions.ActionDiagnose(), make_tracker(text, intent=intent,
                                                                        metadata=SIGNED_IN))
    assert services.explain.calls[0][0] == ("demo-a", topic)
    assert services.answer_by_id.calls == [((faq_id, "zh"), {})]
    assert texts(messages)[0] == f"答:{faq_id}"
    assert meta_of(messages)["diagnosis"] == []
    assert SlotSet("last_faq_id", faq_id) in events
    assert SlotSet("last_diagnosis", None) in events


def test_every_topic_has_an_intent_in_the_domain_and_a_faq_entry():
    from pathlib import Path

    import yaml

    from diagnosis.rules import TOPICS
    domain = yaml.safe_load((Path(__file__).resolve().parent.parent / "bot" / "domain.yml").read_text())
    assert set(diag_actions.TOPIC_BY_INTENT.values()) == set(TOPICS) == set(diag_actions.FAQ_BY_TOPIC)
    assert set(diag_actions.TOPIC_BY_INTENT) | {"ask_next_step"} <= set(domain["intents"])
    assert {"action_diagnose", "action_next_step"} <= set(domain["actions"])
    assert "last_diagnosis" in domain["slots"]


def test_topic_entries_exist_and_are_linked_to_their_topic():
    from core.settings import REPO_ROOT
    from retrieval.kb import load_kb
    kb = load_kb(REPO_ROOT / "kb" / "faq_zh.md")
    for topic, faq_id in diag_actions.FAQ_BY_TOPIC.items():
        assert topic in kb.get(faq_id).diagnosis, faq_id


def test_signed_in_user_gets_the_findings_with_codes_in_meta(services):
    tracker = make_tracker("我的码为啥是橙的", metadata=SIGNED_IN, slots={"lang": "en"})
    messages, events = run(diag_actions.ActionDiagnose(), tracker)

    (args, kwargs), = services.explain.calls
    assert args == ("demo-a", "orange")
    assert kwargs == {"conversation_id": "user:abc:conv-1", "lang": "en", "text": "我的码为啥是橙的"}
    assert texts(messages) == ["您隔离已满14天，请拨打0591-62623959。"]
    assert messages[0]["buttons"] == [{"title": "转人工", "payload": "/request_human"}]
    assert meta_of(messages)["diagnosis"] == ["orange.quarantine_release_pending"]
    assert services.answer_by_id.calls == [] and services.answer.calls == []
    assert events == [SlotSet("last_faq_id", "personal.orange_after_quarantine"),
                      SlotSet("last_diagnosis", ["orange.quarantine_release_pending"])]


def test_anonymous_user_gets_sign_in_and_the_general_answer_and_no_diagnosis(services):
    messages, events = run(diag_actions.ActionDiagnose(),
                           make_tracker("隔离14天了我的码为什么还是橙的",
                                        metadata={"signed_in": False, "lang": "zh"}))

    assert services.explain.calls[0][0] == (None, "orange")
    # The general answer first (what was asked, in general), then how to sign in, then feedback.
    assert texts(messages) == ["答:personal.orange_after_quarantine", "请先登录", "这个回答有帮助吗？"]
    meta = meta_of(messages)
    assert meta["diagnosis"] == [] and meta["signin_required"] is True
    assert meta["faq_id"] == "personal.orange_after_quarantine"
    assert SlotSet("last_diagnosis", None) in events


@pytest.mark.parametrize("metadata", [
    {"user_id": "demo-a"},                              # no signed_in flag
    {"signed_in": False, "user_id": "demo-a"},          # says signed out
    {"signed_in": "true", "user_id": "demo-a"},         # not the boolean the app sends
    {"signed_in": True},                                # signed in without an id
    {"signed_in": True, "user_id": ""},
    {},
])
def test_user_id_in_metadata_is_ignored_unless_signed_in(services, metadata):
    run(diag_actions.ActionDiagnose(), make_tracker("我的码", metadata=metadata))
    assert services.explain.calls[0][0][0] is None


def test_retrieval_picks_a_closer_entry_of_the_same_topic(services):
    # 外省绿码、福建橙码 has its own entry, linked to orange too: that one is the general answer.
    services.answer.reply = faq_answer("domestic.mutual_orange", ["orange"], "互认的答案")
    messages, events = run(diag_actions.ActionDiagnose(), make_tracker("外省绿码到福建怎么成橙码了"))
    assert texts(messages)[0] == "互认的答案"
    assert services.answer_by_id.calls == []
    assert services.answer.calls[0][1]["conversation_id"] is None   # answered: not logged as unanswered
    assert SlotSet("last_faq_id", "domestic.mutual_orange") in events


@pytest.mark.parametrize("text, retrieved, expected", [
    # The words name the cause; retrieval's other orange entry is not given as the reason.
    ("我从外省过来,八闽码怎么是橙的", "personal.orange_after_quarantine", "domestic.mutual_orange"),
    ("我隔离都满两周了码还是橙色", "domestic.mutual_orange", "personal.orange_after_quarantine"),
    ("my home province code is green, why is my Fujian code orange", "personal.orange_after_quarantine",
     "domestic.mutual_orange"),
    ("隔離14天了我的碼還是橙的", "domestic.mutual_orange", "personal.orange_after_quarantine"),
])
def test_orange_words_naming_one_cause_get_that_entry(services, text, retrieved, expected):
    services.answer.reply = faq_answer(retrieved, ["orange"], "检索的答案")
    messages, events = run(diag_actions.ActionDiagnose(), make_tracker(text))
    assert services.answer_by_id.calls == [((expected, "zh"), {})]
    assert texts(messages) == [f"答:{expected}", "请先登录", "这个回答有帮助吗？"]
    assert SlotSet("last_faq_id", expected) in events


def test_retrieval_entry_of_another_topic_is_not_used(services):
    services.answer.reply = faq_answer("personal.screenshot", [], "截图的答案")
    messages, _ = run(diag_actions.ActionDiagnose(), make_tracker("隔离完了我的码为什么是橙的"))
    assert texts(messages)[0] == "答:personal.orange_after_quarantine"


# --- why is my code orange, anonymous and without a cause: both entries ---------------------------

ORANGE_PAYLOADS = ['/choose_faq{"faq_id":"personal.orange_after_quarantine"}',
                   '/choose_faq{"faq_id":"domestic.mutual_orange"}']


@pytest.mark.parametrize("text, lang", [
    ("我的码为什么是橙的", "zh"), ("码咋是橙的", "zh"), ("為什麼我的健康碼是橙色", "zh-hant"),
    ("why is my code orange?", "en"), ("My health code is orange, why?", "en"),
])
def test_anonymous_generic_orange_offers_both_causes_and_sign_in(services, text, lang):
    # Retrieval would answer one of the two entries; it is not given as the reason.
    services.answer.reply = faq_answer("personal.orange_after_quarantine", ["orange"], "隔离的答案")
    messages, events = run(diag_actions.ActionDiagnose(), make_tracker(text, slots={"lang": lang}))

    assert services.explain.calls[0][0] == (None, "orange")
    assert services.answer_by_id.calls == []
    assert "隔离的答案" not in texts(messages)
    first, sign_in = messages[0], messages[1]
    assert [b["payload"] for b in first["buttons"]] == ORANGE_PAYLOADS
    assert [b["title"] for b in first["buttons"]] == (
        [KB.get("personal.orange_after_quarantine").question_en, KB.get("domestic.mutual_orange").question_en]
        if lang == "en" else ["隔离期满仍是橙码", "本省码正常八闽码橙色"])
    if lang == "en":
        assert "quarantine" in first["text"] and "another province" in first["text"]
        assert "sign in" in sign_in["text"] and "which one applies" in sign_in["text"]
    else:   # zh-hant is converted from zh at the edge, like every reply
        assert "隔离" in first["text"] and "外省" in first["text"] and "0591-62623959" in first["text"]
        assert "登录" in sign_in["text"] and "哪一种" in sign_in["text"]
    assert "请先登录" not in texts(messages)   # the plain sign-in message is replaced, not repeated
    meta = meta_of(messages)
    assert meta["diagnosis"] == [] and meta["signin_required"] is True
    assert meta["faq_id"] is None and meta["decision"] == "clarify"
    assert meta["candidates"] == ["personal.orange_after_quarantine", "domestic.mutual_orange"]
    # A 都不是 next gets the clarification's reply; no entry is remembered as answered.
    assert events == [SlotSet("faq_decision", "clarify"), SlotSet("last_diagnosis", None)]


def test_both_causes_reach_the_user_in_traditional_characters(services):
    from assistant.lang import localise
    messages, _ = run(diag_actions.ActionDiagnose(), make_tracker("我的碼為什麼是橙的", slots={"lang": "zh-hant"}))
    shown = localise([m for m in messages if m.get("text")], "zh-hant")
    assert "隔離" in shown[0]["text"] and "登錄" in shown[1]["text"]
    assert [b["title"] for b in shown[0]["buttons"]] == ["隔離期滿仍是橙碼", "本省碼正常八閩碼橙色"]


def test_signed_in_user_with_an_orange_finding_gets_it_not_the_two_causes(services):
    messages, events = run(diag_actions.ActionDiagnose(), make_tracker("我的码为啥是橙的", metadata=SIGNED_IN))
    assert texts(messages) == ["您隔离已满14天，请拨打0591-62623959。"]
    assert meta_of(messages)["diagnosis"] == ["orange.quarantine_release_pending"]
    assert SlotSet("last_diagnosis", ["orange.quarantine_release_pending"]) in events


def test_signed_in_user_whose_account_does_not_settle_it_gets_both_causes_and_no_sign_in(services):
    no_data = Reply((Message("暂时查不到您账户的健康码数据。"),), {"diagnosis": [], "diagnosis_topic": "orange"})
    services.explain.reply = no_data
    messages, _ = run(diag_actions.ActionDiagnose(), make_tracker("我的码为什么是橙的", metadata=SIGNED_IN))
    assert [b["payload"] for b in messages[0]["buttons"]] == ORANGE_PAYLOADS
    assert texts(messages)[1:] == ["暂时查不到您账户的健康码数据。"]
    assert "signin_required" not in meta_of(messages)


def test_family_relation_text_reaches_the_service(services):
    run(diag_actions.ActionDiagnose(), make_tracker("我能给岳父申请吗", intent="can_apply_family",
                                                     metadata=SIGNED_IN))
    args, kwargs = services.explain.calls[0]
    assert args == ("demo-a", "family") and kwargs["text"] == "我能给岳父申请吗"


# --- action_answer_faq with the user's own finding ------------------------------------------------


def test_linked_faq_entry_gets_the_signed_in_users_finding_after_the_general_answer(services, monkeypatch):
    monkeypatch.setattr(faq_actions.faq_service, "answer",
                        Recorder(faq_answer("personal.orange_after_quarantine", ["orange", "generate"])))
    messages, events = run(faq_actions.ActionAnswerFaq(),
                           make_tracker("隔离完了码还是橙的", intent="faq", metadata=SIGNED_IN))

    assert services.explain.calls[0][0] == ("demo-a", "orange")     # the first linked topic
    assert texts(messages) == ["一般性的回答", "您的账户情况:您隔离已满14天，请拨打0591-62623959。",
                               "这个回答有帮助吗？"]
    assert messages[1]["buttons"] == [{"title": "转人工", "payload": "/request_human"}]
    meta = meta_of(messages)
    assert meta["faq_id"] == "personal.orange_after_quarantine"
    assert meta["diagnosis"] == ["orange.quarantine_release_pending"]
    assert SlotSet("last_diagnosis", ["orange.quarantine_release_pending"]) in events
    assert SlotSet("last_faq_id", "personal.orange_after_quarantine") in events


def test_english_heading_for_the_finding(services, monkeypatch):
    monkeypatch.setattr(faq_actions.faq_service, "answer",
                        Recorder(faq_answer("personal.face_fail", ["face"], "General.")))
    messages, _ = run(faq_actions.ActionAnswerFaq(),
                      make_tracker("face check fails", intent="faq", metadata=SIGNED_IN, slots={"lang": "en"}))
    assert texts(messages)[1].startswith("Your account: ")


def test_linked_faq_entry_for_an_anonymous_user_is_the_general_answer_only(services, monkeypatch):
    monkeypatch.setattr(faq_actions.faq_service, "answer",
                        Recorder(faq_answer("personal.orange_after_quarantine", ["orange"])))
    messages, events = run(faq_actions.ActionAnswerFaq(), make_tracker("隔离完还是橙码", intent="faq"))
    assert services.explain.calls == []
    assert texts(messages) == ["一般性的回答", "这个回答有帮助吗？"]
    assert "diagnosis" not in meta_of(messages)


def test_unlinked_entry_reads_no_account(services, monkeypatch):
    monkeypatch.setattr(faq_actions.faq_service, "answer", Recorder(faq_answer("personal.screenshot", [])))
    _, events = run(faq_actions.ActionAnswerFaq(), make_tracker("能截图吗", intent="faq", metadata=SIGNED_IN))
    assert services.explain.calls == []
    assert SlotSet("last_diagnosis", None) in events


def test_failed_account_read_keeps_the_general_answer(services, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("db down")
    monkeypatch.setattr(diag_actions.diagnose_service, "explain", boom)
    monkeypatch.setattr(faq_actions.faq_service, "answer",
                        Recorder(faq_answer("personal.face_fail", ["face"])))
    messages, _ = run(faq_actions.ActionAnswerFaq(), make_tracker("刷脸失败", intent="faq", metadata=SIGNED_IN))
    assert texts(messages) == ["一般性的回答", "这个回答有帮助吗？"]


# --- ask_next_step ---------------------------------------------------------------------------------


def test_next_step_stays_on_the_last_finding(services):
    tracker = make_tracker("那我该怎么办", intent="ask_next_step", metadata=SIGNED_IN,
                           slots={"last_diagnosis": ["orange.quarantine_release_pending"],
                                  "last_faq_id": "personal.orange_after_quarantine", "lang": "en"})
    messages, events = run(diag_actions.ActionNextStep(), tracker)
    assert services.next_step.calls == [((["orange.quarantine_release_pending"], "en"), {})]
    assert services.answer.calls == []          # not a FAQ follow-up
    assert texts(messages) == ["请拨打热线0591-62623959。"]
    assert events == []


def test_next_step_without_a_finding_is_a_faq_follow_up(services):
    services.answer.reply = faq_answer("family.quota", ["family"], "最多8个")
    tracker = make_tracker("那要多久", intent="ask_next_step", slots={"last_faq_id": "family.howto"})
    messages, events = run(diag_actions.ActionNextStep(), tracker)
    assert services.next_step.calls == []
    assert services.answer.calls == [(("那要多久", "zh"), {"previous_faq_id": "family.howto",
                                                          "conversation_id": ANON_SENDER})]
    assert texts(messages)[0] == "最多8个"
    assert SlotSet("last_faq_id", "family.quota") in events


def test_next_step_with_only_ok_falls_back_to_the_faq(services):
    services.next_step.reply = Reply((), {"diagnosis": ["ok"]})
    run(diag_actions.ActionNextStep(), make_tracker("那咋办", intent="ask_next_step",
                                                     slots={"last_diagnosis": ["ok"]}))
    assert len(services.answer.calls) == 1


# --- with_personal (assistant.faq) ---------------------------------------------------------------


def test_with_personal_without_a_finding_is_the_general_answer():
    general = faq_answer("personal.face_fail", ["face"])
    assert faq_service_module.with_personal(general, NOTHING, "zh") is general
