"""The signed-in user's own situation: why is *my* code orange, why can't *I* generate one, ...

The user is the one the app recorded for this conversation when it verified a session token
(personal.signed_in_user); anyone else is an anonymous user, who gets the sign-in message and
the general FAQ answer, never anything about an account.
"""
from __future__ import annotations

import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from assistant import diagnose as diagnose_service
from assistant import faq as faq_service
from assistant.types import Reply

from .common import call_service, current_lang, dispatch_reply, latest_text, remember_faq
from .faq import answer_question
from .personal import diagnosis_events, signed_in_user

log = logging.getLogger(__name__)

# Intent → diagnosis topic (diagnosis.rules.TOPICS).
TOPIC_BY_INTENT = {
    "why_orange": "orange",
    "why_cannot_generate": "generate",
    "why_face_fail": "face",
    "name_wrong": "name",
    "can_apply_family": "family",
    "why_no_overseas_code": "overseas",
}
# The FAQ entry that answers a topic in general, when the account cannot (or may not) settle it.
FAQ_BY_TOPIC = {
    "orange": "personal.orange_after_quarantine",
    "generate": "personal.cannot_generate",
    "face": "personal.face_fail",
    "name": "personal.name_mismatch",
    "family": "family.not_allowed",
    "overseas": "overseas.cannot_apply",
}


def general_answer(topic: str, text: str, lang: str, tracker: Tracker) -> Reply:
    """The FAQ's general answer for the topic: the entry retrieval picks for the user's own words
    when it is one linked to this topic (外省绿码福建橙码 has its own entry), else the topic's entry.
    For orange, the entry the words name (隔离 / 外省) wins over retrieval's other orange entry."""
    # No conversation id: the question is answered either way, so it is not logged as unanswered.
    reply = faq_service.answer(text, lang, previous_faq_id=tracker.get_slot("last_faq_id"),
                               conversation_id=None)
    named = diagnose_service.orange_cause(text) if topic == "orange" else None
    if (reply.meta.get("decision") == "answer" and topic in (reply.meta.get("diagnosis_topics") or ())
            and named in (None, reply.meta.get("faq_id"))):
        return reply
    return faq_service.answer_by_id(named or FAQ_BY_TOPIC[topic], lang)


def build_diagnosis_reply(tracker: Tracker, topic: str) -> tuple[Reply, list[dict[str, Any]]]:
    lang = current_lang(tracker)
    text = latest_text(tracker)
    found = diagnose_service.explain(signed_in_user(tracker), topic, conversation_id=tracker.sender_id,
                                     lang=lang, text=text)
    codes = list(found.meta.get("diagnosis") or [])
    if codes:
        return found, [SlotSet("last_faq_id", FAQ_BY_TOPIC[topic]), *diagnosis_events(codes)]
    if topic == "orange" and diagnose_service.orange_cause(text) is None:
        # Two entries explain an orange code and neither the words nor the account say which:
        # both are offered (and, signed out, that signing in would tell), not one as the reason.
        reply = diagnose_service.orange_causes(found, lang)
        return reply, [*remember_faq(reply), *diagnosis_events([])]
    # Signed out, no account, or the account does not settle it: the general answer first (what
    # the user asked, in general), then the service's own message (sign in / no data), if any.
    general = general_answer(topic, text, lang, tracker)
    messages = general.messages[:1] + found.messages + general.messages[1:]
    meta = {**general.meta, **found.meta, "diagnosis": []}
    reply = Reply(messages, meta)
    return reply, [*remember_faq(general), *diagnosis_events([])]


class ActionDiagnose(Action):
    def name(self) -> str:
        return "action_diagnose"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        topic = TOPIC_BY_INTENT.get((tracker.latest_message.get("intent") or {}).get("name"))
        if topic is None:
            # Predicted for some other intent (a story Rasa generalised): retrieval decides.
            return await answer_question(dispatcher, tracker)
        reply, events = await call_service(build_diagnosis_reply, tracker, topic)
        dispatch_reply(dispatcher, reply)
        return events


class ActionNextStep(Action):
    """「那我该怎么办」「要多久」: right after a finding, its next step; otherwise a FAQ follow-up."""

    def name(self) -> str:
        return "action_next_step"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        codes = tracker.get_slot("last_diagnosis") or []
        lang = current_lang(tracker)
        if codes:
            reply = await call_service(diagnose_service.next_step, list(codes), lang)
            if reply.messages:
                dispatch_reply(dispatcher, reply)
                return []
        return await answer_question(dispatcher, tracker)
