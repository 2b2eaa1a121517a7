"""Was the last answer helpful? Recorded against the entry it was about."""
from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

from assistant import feedback as feedback_service

from .common import call_service, current_lang, dispatch_reply, latest_entity, with_offer_after_misses

# Button payloads say "yes"/"no"; typed feedback is mapped to the same values by NLU synonyms.
HELPFUL_VALUES = {"yes": True, "no": False}


class ActionRecordFeedback(Action):
    def name(self) -> str:
        return "action_record_feedback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        helpful = HELPFUL_VALUES.get((latest_entity(tracker, "helpful") or "").lower())
        if helpful is None:
            # Nothing to record without a verdict; don't invent one.
            dispatcher.utter_message(response="utter_anything_else")
            return []
        # Typed feedback carries no id: it is about the answer given last.
        faq_id = latest_entity(tracker, "faq_id") or tracker.get_slot("last_faq_id")
        reply = await call_service(
            feedback_service.record,
            tracker.sender_id,
            faq_id,
            helpful,
            current_lang(tracker),
        )
        reply, streak = with_offer_after_misses(tracker, reply, missed=not helpful)
        dispatch_reply(dispatcher, reply)
        return streak
