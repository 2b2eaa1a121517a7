"""The bot's custom actions against real rasa_sdk trackers, with the services replaced.

The services (assistant.faq/feedback/handoff) are tested on their own; here we check what
each action passes them and what it hands back to Rasa: messages, the meta custom message
and slot events.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import ActionExecutor, CollectingDispatcher

from _env import missing
from assistant.types import Button, Message, Reply
from bot.actions import faq as faq_actions
from bot.actions import feedback as feedback_actions
from bot.actions import handoff as handoff_actions
from bot.components.lang import lang_entity, normalise_lang

DOMAIN_FILE = Path(__file__).resolve().parent.parent / "bot" / "domain.yml"


def make_tracker(
    text: str = "",
    *,
    intent: str = "faq",
    entities: list[dict[str, Any]] | None = None,
    metadata: dict[str, Any] | None = None,
    slots: dict[str, Any] | None = None,
    sender_id: str = "conv-1",
) -> Tracker:
    return Tracker.from_dict(
        {
            "sender_id": sender_id,
            "slots": {"lang": "zh", "last_faq_id": None, **(slots or {})},
            "latest_message": {
                "text": text,
                "intent": {"name": intent, "confidence": 1.0},
                "entities": entities or [],
                "metadata": metadata or {},
            },
            "events": [],
            "paused": False,
            "followup_action": None,
            "active_loop": {},
            "latest_action_name": "action_listen",
        }
    )


def run(action: Any, tracker: Tracker, domain: dict[str, Any] | None = None):
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, tracker, domain or {}))
    return dispatcher.messages, events


class Recorder:
    """Stands in for one service function: remembers its calls, returns a fixed Reply."""

    def __init__(self, reply: Reply | Exception) -> None:
        self.reply = reply
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Reply:
        self.calls.append((args, kwargs))
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


ANSWER = Reply(
    (
        Message("不能。健康码有效期为1分钟。"),
        Message(
            "这个回答有帮助吗？",
            (
                Button("有帮助", '/feedback{"helpful":"yes","faq_id":"personal.screenshot"}'),
                Button("没帮助", '/feedback{"helpful":"no","faq_id":"personal.screenshot"}'),
            ),
        ),
    ),
    {"faq_id": "personal.screenshot", "decision": "answer"},
)
CLARIFY = Reply(
    (Message("您想问的是哪一个？", (Button("截图", '/choose_faq{"faq_id":"personal.screenshot"}'),)),),
    {"faq_id": None, "decision": "clarify"},
)


# --- FAQ ---------------------------------------------------------------------------------


def test_answer_faq_passes_text_lang_and_previous_entry(monkeypatch):
    answer = Recorder(ANSWER)
    monkeypatch.setattr(faq_actions.faq_service, "answer", answer)
    tracker = make_tracker("健康码能截图吗", slots={"lang": "en", "last_faq_id": "family.quota"})

    run(faq_actions.ActionAnswerFaq(), tracker)

    assert answer.calls == [
        (("健康码能截图吗", "en"), {"previous_faq_id": "family.quota", "conversation_id": "conv-1"})
    ]


def test_answer_faq_dispatches_messages_buttons_then_meta(monkeypatch):
    monkeypatch.setattr(faq_actions.faq_service, "answer", Recorder(ANSWER))

    messages, events = run(faq_actions.ActionAnswerFaq(), make_tracker("截图能用吗"))

    assert [m["text"] for m in messages[:2]] == ["不能。健康码有效期为1分钟。", "这个回答有帮助吗？"]
    assert messages[0]["buttons"] == []
    assert messages[1]["buttons"] == [
        {"title": "有帮助", "payload": '/feedback{"helpful":"yes","faq_id":"personal.screenshot"}'},
        {"title": "没帮助", "payload": '/feedback{"helpful":"no","faq_id":"personal.screenshot"}'},
    ]
    # The meta goes last, as a custom message the API merges rather than shows.
    assert len(messages) == 3
    assert messages[2]["custom"] == {"meta": {"faq_id": "personal.screenshot", "decision": "answer"}}
    assert messages[2]["text"] is None
    # An entry without a diagnosis link, anonymous: nothing personal, and no stale finding left.
    assert events == [SlotSet("last_faq_id", "personal.screenshot"), SlotSet("faq_decision", "answer"),
                      SlotSet("last_diagnosis", None), SlotSet("miss_streak", 0)]


def test_answer_faq_keeps_last_faq_id_when_no_entry_was_answered(monkeypatch):
    monkeypatch.setattr(faq_actions.faq_service, "answer", Recorder(CLARIFY))

    messages, events = run(
        faq_actions.ActionAnswerFaq(), make_tracker("健康码", slots={"last_faq_id": "family.quota"})
    )

    # The follow-up topic stays the last answered entry; the decision lets 都不是 be understood.
    # A clarification is no miss: the streak towards offering a person starts again.
    assert events == [SlotSet("faq_decision", "clarify"), SlotSet("miss_streak", 0)]
    assert messages[0]["buttons"][0]["payload"] == '/choose_faq{"faq_id":"personal.screenshot"}'
    assert messages[-1]["custom"] == {"meta": {"faq_id": None, "decision": "clarify"}}


def test_answer_faq_defaults_to_chinese_when_lang_slot_is_empty(monkeypatch):
    answer = Recorder(ANSWER)
    monkeypatch.setattr(faq_actions.faq_service, "answer", answer)

    run(faq_actions.ActionAnswerFaq(), make_tracker("截图", slots={"lang": None}))

    assert answer.calls[0][0] == ("截图", "zh")


def test_answer_by_id_uses_the_button_entity(monkeypatch):
    by_id = Recorder(ANSWER)
    answer = Recorder(CLARIFY)
    monkeypatch.setattr(faq_actions.faq_service, "answer_by_id", by_id)
    monkeypatch.setattr(faq_actions.faq_service, "answer", answer)
    tracker = make_tracker(
        '/choose_faq{"faq_id":"personal.screenshot"}',
        intent="choose_faq",
        entities=[{"entity": "faq_id", "value": "personal.screenshot"}],
        slots={"lang": "zh-hant"},
    )

    messages, events = run(faq_actions.ActionAnswerFaqById(), tracker)

    assert by_id.calls == [(("personal.screenshot", "zh-hant"), {})]
    assert answer.calls == []
    # An entry without a diagnosis link, anonymous: nothing personal, and no stale finding left.
    assert events == [SlotSet("last_faq_id", "personal.screenshot"), SlotSet("faq_decision", "answer"),
                      SlotSet("last_diagnosis", None), SlotSet("miss_streak", 0)]
    assert messages[-1]["custom"]["meta"]["faq_id"] == "personal.screenshot"


def test_answer_by_id_without_an_id_lets_retrieval_read_the_text(monkeypatch):
    by_id = Recorder(ANSWER)
    answer = Recorder(ANSWER)
    monkeypatch.setattr(faq_actions.faq_service, "answer_by_id", by_id)
    monkeypatch.setattr(faq_actions.faq_service, "answer", answer)

    run(faq_actions.ActionAnswerFaqById(), make_tracker("选截图那个", intent="choose_faq"))

    assert by_id.calls == []
    assert answer.calls == [(("选截图那个", "zh"), {"previous_faq_id": None, "conversation_id": "conv-1"})]


# --- feedback ----------------------------------------------------------------------------


def test_feedback_button_records_verdict_for_its_entry(monkeypatch):
    record = Recorder(Reply((Message("感谢您的反馈！"),), {"feedback": "recorded"}))
    monkeypatch.setattr(feedback_actions.feedback_service, "record", record)
    tracker = make_tracker(
        '/feedback{"helpful":"no","faq_id":"family.quota"}',
        intent="feedback",
        entities=[
            {"entity": "helpful", "value": "no"},
            {"entity": "faq_id", "value": "family.quota"},
        ],
        slots={"lang": "en", "last_faq_id": "personal.screenshot"},
        sender_id="conv-42",
    )

    messages, events = run(feedback_actions.ActionRecordFeedback(), tracker)

    assert record.calls == [(("conv-42", "family.quota", False, "en"), {})]
    assert messages[0]["text"] == "感谢您的反馈！"
    assert messages[-1]["custom"] == {"meta": {"feedback": "recorded"}}
    assert events == [SlotSet("miss_streak", 1)]        # a "not helpful" counts towards offering a person


def test_typed_feedback_is_about_the_last_answer(monkeypatch):
    record = Recorder(Reply((Message("谢谢"),)))
    monkeypatch.setattr(feedback_actions.feedback_service, "record", record)
    tracker = make_tracker(
        "这个回答有帮助",
        intent="feedback",
        entities=[{"entity": "helpful", "value": "yes"}],
        slots={"last_faq_id": "personal.face_fail"},
    )

    run(feedback_actions.ActionRecordFeedback(), tracker)

    assert record.calls == [(("conv-1", "personal.face_fail", True, "zh"), {})]


def test_feedback_without_a_verdict_records_nothing(monkeypatch):
    record = Recorder(Reply(()))
    monkeypatch.setattr(feedback_actions.feedback_service, "record", record)

    messages, events = run(
        feedback_actions.ActionRecordFeedback(), make_tracker("反馈一下", intent="feedback")
    )

    assert record.calls == []
    assert [m["response"] for m in messages] == ["utter_anything_else"]
    assert events == []


# --- handoff -----------------------------------------------------------------------------


def test_handoff_passes_conversation_text_lang_and_the_last_finding(monkeypatch):
    reply = Reply((Message("已为您登记热线工单 HC-20261201-0001"),), {"handoff": True, "ticket_id": "HC-20261201-0001"})
    request = Recorder(reply)
    monkeypatch.setattr(handoff_actions.handoff_service, "request", request)
    tracker = make_tracker("转人工", intent="request_human", sender_id="conv-7",
                           slots={"lang": "en", "last_diagnosis": ["name.mismatch"]})

    messages, events = run(handoff_actions.ActionHandoff(), tracker)

    assert request.calls == [(("conv-7", "转人工", "en", ["name.mismatch"]), {})]
    assert messages[-1]["custom"] == {"meta": {"handoff": True, "ticket_id": "HC-20261201-0001"}}
    assert events == []


def test_handoff_gives_the_hotline_and_no_ticket_id_when_the_queue_fails(monkeypatch, caplog):
    monkeypatch.setattr(handoff_actions.handoff_service, "request", Recorder(RuntimeError("db down")))

    for lang, word in (("zh", "0591-62623959"), ("en", "hotline 0591-62623959")):
        messages, _ = run(handoff_actions.ActionHandoff(),
                          make_tracker("人工", intent="request_human", slots={"lang": lang}))
        assert word in messages[0]["text"]
        assert messages[-1]["custom"] == {"meta": {"handoff": True}}
    assert "the hand-off service failed" in caplog.text


# --- lang slot ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (None, "zh"),
        ("", "zh"),
        ("zh", "zh"),
        ("en", "en"),
        ("EN", "en"),
        ("en-US", "en"),
        ("zh-hant", "zh-hant"),
        ("zh-Hant-TW", "zh-hant"),
        ("zh_TW", "zh-hant"),
        ("zh-HK", "zh-hant"),
        ("fr", "zh"),
        (42, "zh"),
    ],
)
def test_normalise_lang(sent, expected):
    assert normalise_lang(sent) == expected


DOMAIN = yaml.safe_load(DOMAIN_FILE.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [({"lang": "en"}, "en"), ({"lang": "zh-Hant-TW"}, "zh-hant"), ({"lang": None}, "zh"), ({"lang": "fr"}, "zh")],
)
def test_metadata_lang_becomes_the_lang_entity(metadata, expected):
    entity = lang_entity(metadata)
    assert entity["entity"] == "lang" and entity["value"] == expected


@pytest.mark.parametrize("metadata", [None, {}, {"channel": "web"}, "en"])
def test_no_lang_in_metadata_gives_no_entity_so_the_slot_keeps_its_value(metadata):
    assert lang_entity(metadata) is None


def test_lang_slot_is_filled_from_the_entity_without_an_action_call():
    slot = DOMAIN["slots"]["lang"]
    assert slot["mappings"] == [{"type": "from_entity", "entity": "lang"}]
    assert "lang" in DOMAIN["entities"]
    # Rasa calls the action server after every message only when this action is declared.
    assert "action_validate_slot_mappings" not in DOMAIN["actions"]


RASA_PYTHON = Path(__file__).resolve().parent.parent / ".venv-rasa" / "bin" / "python"


def test_lang_component_inside_rasa():
    if not RASA_PYTHON.exists():
        missing("no Rasa venv (make setup builds it)")
    import subprocess

    code = (
        "from rasa.shared.nlu.training_data.message import Message\n"
        "from components.lang_metadata import LangFromMetadata\n"
        "c = LangFromMetadata.create({}, None, None, None)\n"
        "ms = c.process([Message(data={'text': 'hi', 'metadata': {'lang': 'en-US'}}),"
        " Message(data={'text': '/deny', 'metadata': {}})])\n"
        "print([[(e['entity'], e['value']) for e in m.get('entities', [])] for m in ms])\n"
    )
    bot = DOMAIN_FILE.parent
    out = subprocess.run([str(RASA_PYTHON), "-c", code], cwd=bot, env={"PYTHONPATH": str(bot)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[[('lang', 'en')], []]"


# --- wiring ------------------------------------------------------------------------------


def test_every_custom_action_in_the_domain_is_served_by_the_package():
    executor = ActionExecutor()
    executor.register_package("bot.actions")

    assert set(DOMAIN["actions"]) <= set(executor.actions)


def test_two_abstains_in_a_row_offer_a_person_then_the_count_starts_again(monkeypatch):
    none = Reply((Message("抱歉,这个问题我暂时无法准确回答。"),), {"faq_id": None, "decision": "none"})
    monkeypatch.setattr(faq_actions.faq_service, "answer", Recorder(none))

    messages, events = run(faq_actions.ActionAnswerFaq(), make_tracker("??", slots={"miss_streak": 0}))
    assert SlotSet("miss_streak", 1) in events
    assert not any(b["payload"] == "/request_human" for m in messages for b in m.get("buttons") or [])

    messages, events = run(faq_actions.ActionAnswerFaq(), make_tracker("??", slots={"miss_streak": 1}))
    assert SlotSet("miss_streak", 0) in events
    offer = [m for m in messages if any(b["payload"] == "/request_human" for b in m.get("buttons") or [])]
    assert offer and "转人工" in offer[0]["buttons"][0]["title"]


def test_two_not_helpful_presses_offer_a_person(monkeypatch):


    monkeypatch.setattr(feedback_actions.feedback_service, "record",
                        Recorder(Reply((Message("感谢反馈"),), {"faq_id": "personal.screenshot"})))
    tracker = make_tracker('/feedback{"helpful":"no"}', intent="feedback",
                           entities=[{"entity": "helpful", "value": "no"}],
                           slots={"miss_streak": 1, "last_faq_id": "personal.screenshot"})
    messages, events = run(feedback_actions.ActionRecordFeedback(), tracker)
    assert any(b["payload"] == "/request_human" for m in messages for b in m.get("buttons") or [])
    assert SlotSet("miss_streak", 0) in events

