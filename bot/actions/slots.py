"""Slots filled on every user turn from what the client sends along with the message."""
from __future__ import annotations

from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import ValidationAction

from .common import DEFAULT_LANG

SUPPORTED_LANGS = ("zh", "zh-hant", "en")
# Regional tags some clients send for traditional Chinese.
HANT_ALIASES = {"zh-tw", "zh-hk", "zh-mo"}


def normalise_lang(value: Any) -> str:
    if not isinstance(value, str):
        return DEFAULT_LANG
    tag = value.strip().lower().replace("_", "-")
    if tag in SUPPORTED_LANGS:
        return tag
    if tag in HANT_ALIASES or tag.startswith("zh-hant"):
        return "zh-hant"
    if tag.startswith("en"):
        return "en"
    return DEFAULT_LANG


class ValidateSlotMappings(ValidationAction):
    """Rasa runs `action_validate_slot_mappings` after each user message."""

    async def extract_lang(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        metadata = tracker.latest_message.get("metadata") or {}
        return {"lang": normalise_lang(metadata.get("lang"))}

    async def validate_lang(
        self,
        value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: dict[str, Any],
    ) -> dict[str, Any]:
        # extract_lang already normalised it; returning it is what makes the SDK emit
        # the SlotSet (it only returns events for validated slots).
        return {"lang": value}
