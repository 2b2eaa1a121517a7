"""FAQ answers: retrieval decides which entry (or abstains); Rasa only routed here."""
from __future__ import annotations

from typing import Any, Callable

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

from assistant import faq as faq_service

from .common import (
    call_service,
    current_lang,
    dispatch_reply,
    latest_entity,
    latest_text,
    remember_faq,
    with_offer_after_misses,
)
from .personal import with_own_finding


def _answer_text(tracker: Tracker):
    """Retrieval reads the user's text, with the previous entry as context for a follow-up."""
    return faq_service.answer(latest_text(tracker), current_lang(tracker),
                              previous_faq_id=tracker.get_slot("last_faq_id"),
                              conversation_id=tracker.sender_id)


def _with_finding(tracker: Tracker, make_reply: Callable[[], Any]):
    # An entry linked to a diagnosis also gets the signed-in user's own finding.
    return with_own_finding(tracker, make_reply())


async def _send(dispatcher: CollectingDispatcher, tracker: Tracker, make_reply: Callable[[], Any]) -> list[dict[str, Any]]:
    # The reply and the user's finding in one worker-thread hop, not one each.
    reply, events = await call_service(_with_finding, tracker, make_reply)
    reply, streak = with_offer_after_misses(tracker, reply, missed=reply.meta.get("decision") == "none")
    dispatch_reply(dispatcher, reply)
    return [*remember_faq(reply), *events, *streak]


async def answer_question(dispatcher: CollectingDispatcher, tracker: Tracker) -> list[dict[str, Any]]:
    """The one way an action answers the user's words from the FAQ (whichever action NLU chose):
    retrieval's answer, clarification or none, with the signed-in user's own finding."""
    return await _send(dispatcher, tracker, lambda: _answer_text(tracker))


class ActionAnswerFaq(Action):
    def name(self) -> str:
        return "action_answer_faq"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return await answer_question(dispatcher, tracker)


class ActionAnswerFaqById(Action):
    """A clarification button (or a typed id) names the entry outright."""

    def name(self) -> str:
        return "action_answer_faq_by_id"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        faq_id = latest_entity(tracker, "faq_id")
        if not faq_id:
            # NLU chose the intent without finding an id: let retrieval read the text.
            return await answer_question(dispatcher, tracker)
        lang = current_lang(tracker)
        return await _send(dispatcher, tracker, lambda: faq_service.answer_by_id(faq_id, lang))
