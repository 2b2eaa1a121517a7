"""The signed-in user's own situation: why is *my* code orange, why can't *I* generate one, ...

The user id is taken only from the message metadata the app sets after verifying a session
token, and only when it also says signed_in; anything else is an anonymous user, who gets the
sign-in message and the general FAQ answer, never anything about an account.
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


def signed_in_user(tracker: Tracker) -> str | None:
    """The verified user id the app put in the metadata, or None for an anonymous user."""
    metadata = tracker.latest_message.get("metadata") or {}
    user_id = metadata.get("user_id")
    if metadata.get("signed_in") is True and isinstance(user_id, str) and user_id:
        return user_id
    return None


def diagnosis_events(codes: list[str]) -> list[dict[str, Any]]:
    # Cleared when nothing was found, so a later 「那我该怎么办」 is not answered from a stale finding.
    return [SlotSet("last_diagnosis", list(codes) or None)]


def general_answer(topic: str, text: str, lang: str, tracker: Tracker) -> Reply:
    """The FAQ's general answer for the topic: the entry retrieval picks for the user's own words
    when it is one linked to this topic (外省绿码福建橙码 has its own entry), else the topic's entry."""
    # No conversation id: the question is answered either way, so it is not logged as unanswered.
    reply = faq_service.answer(text, lang, previous_faq_id=tracker.get_slot("last_faq_id"),
                               conversation_id=None)
    if reply.meta.get("decision") == "answer" and topic in (reply.meta.get("diagnosis_topics") or ()):
        return reply
    return faq_service.answer_by_id(FAQ_BY_TOPIC[topic], lang)


def build_diagnosis_reply(tracker: Tracker, topic: str) -> tuple[Reply, list[dict[str, Any]]]:
    lang = current_lang(tracker)
    text = latest_text(tracker)
    found = diagnose_service.explain(signed_in_user(tracker), topic, conversation_id=tracker.sender_id,
                                     lang=lang, text=text)
    codes = list(found.meta.get("diagnosis") or [])
    if codes:
        return found, [SlotSet("last_faq_id", FAQ_BY_TOPIC[topic]), *diagnosis_events(codes)]
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
            reply = await call_service(faq_service.answer, latest_text(tracker), current_lang(tracker),
                                       previous_faq_id=tracker.get_slot("last_faq_id"),
                                       conversation_id=tracker.sender_id)
            dispatch_reply(dispatcher, reply)
            return remember_faq(reply)
        reply, events = await call_service(build_diagnosis_reply, tracker, topic)
        dispatch_reply(dispatcher, reply)
        return events


def with_own_finding(tracker: Tracker, reply: Reply) -> tuple[Reply, list[dict[str, Any]]]:
    """An answered FAQ entry linked to a diagnosis, for a signed-in user: add their own finding
    for the entry's first topic. The general answer stands even if the account read fails."""
    if reply.meta.get("decision") != "answer":
        return reply, []
    topics = reply.meta.get("diagnosis_topics") or []
    user_id = signed_in_user(tracker)
    if not topics or user_id is None:
        # A new topic answered: 「那我该怎么办」 now refers to it, not to an earlier finding.
        return reply, diagnosis_events([])
    lang = current_lang(tracker)
    try:
        own = diagnose_service.explain(user_id, topics[0], conversation_id=tracker.sender_id,
                                       lang=lang, text=latest_text(tracker))
    except Exception:
        log.exception("diagnosis after a FAQ answer failed")
        return reply, diagnosis_events([])
    if not own.messages:
        return reply, diagnosis_events([])
    codes = list(own.meta.get("diagnosis") or [])
    return faq_service.with_personal(reply, own, lang), diagnosis_events(codes)


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
        reply = await call_service(faq_service.answer, latest_text(tracker), lang,
                                   previous_faq_id=tracker.get_slot("last_faq_id"),
                                   conversation_id=tracker.sender_id)
        dispatch_reply(dispatcher, reply)
        return remember_faq(reply)
