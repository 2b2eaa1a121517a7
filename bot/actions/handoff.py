"""Hand the conversation to the hotline: a ticket with what the bot learned, confirmed in the chat."""
from __future__ import annotations

import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

from assistant import handoff as handoff_service

from .common import call_service, current_lang, dispatch_reply, latest_text

logger = logging.getLogger(__name__)


class ActionHandoff(Action):
    def name(self) -> str:
        return "action_handoff"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        lang = current_lang(tracker)
        try:
            reply = await call_service(
                handoff_service.request,
                tracker.sender_id,
                latest_text(tracker),
                lang,
                list(tracker.get_slot("last_diagnosis") or []),
            )
        except Exception:
            # Someone asking for a person must still get the hotline when the queue is down, and
            # no ticket id that does not exist; the failure is logged, not hidden.
            logger.exception("handoff: the hand-off service failed")
            reply = handoff_service.unavailable(lang)
        dispatch_reply(dispatcher, reply)
        return []
