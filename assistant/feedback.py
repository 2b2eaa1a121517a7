""""Was this helpful?" button presses."""
from __future__ import annotations

import logging

from assistant.texts import text
from assistant.types import Message, Reply
from core.logs import log_event

log = logging.getLogger("hc.feedback")


def record(conversation_id: str, faq_id: str | None, helpful: bool, lang: str) -> Reply:
    log_event(log, "faq_feedback", conversation=conversation_id, faq_id=faq_id, helpful=helpful, lang=lang)
    key = "feedback_thanks_yes" if helpful else "feedback_thanks_no"
    return Reply((Message(text(key, lang)),), {"faq_id": faq_id, "feedback": helpful})
