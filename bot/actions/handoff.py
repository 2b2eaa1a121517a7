"""Hand the conversation to the hotline staff: for now the hotline number (no ticket queue yet)."""
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
        try:
            reply = await call_service(
                handoff_service.request,
                tracker.sender_id,
                latest_text(tracker),
                current_lang(tracker),
            )
        except Exception:
            # Someone asking for a person must still get the hotline when the service
            # fails; the failure is logged, not hidden.
            logger.exception("handoff: the hand-off service failed")
            dispatcher.utter_message(response="utter_handoff")
            dispatcher.utter_message(json_message={"meta": {"handoff": True}})
            return []
        dispatch_reply(dispatcher, reply)
        return []
