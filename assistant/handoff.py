"""The user asks for a person: give the hotline and flag the conversation for hand-off."""
from __future__ import annotations

import logging

from assistant.texts import text
from assistant.types import Message, Reply
from core.logs import log_event
from core.pii import mask_text

log = logging.getLogger("hc.handoff")


def request(conversation_id: str, text_in: str, lang: str) -> Reply:
    log_event(log, "handoff_requested", conversation=conversation_id, text=mask_text(text_in)[:200])
    return Reply((Message(text("handoff", lang)),), {"handoff": True})
