"""The signed-in user of a conversation and their own finding beside a general FAQ answer.

Shared by the FAQ and the diagnosis actions. The user is the one the app recorded for the
conversation when it verified a session token (assistant.conversations), never one a message
names.
"""
from __future__ import annotations

import logging
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet

from assistant import conversations
from assistant import diagnose as diagnose_service
from assistant import faq as faq_service
from assistant.types import Reply

from .common import current_lang, latest_text

log = logging.getLogger(__name__)


def signed_in_user(tracker: Tracker) -> str | None:
    """The user the app signed this conversation in as (its own record, by sender id), or None.

    Never read from the message: metadata is whatever the caller of Rasa put there."""
    try:
        return conversations.user_of(tracker.sender_id)
    except conversations.UnknownConversation:
        return None


def diagnosis_events(codes: list[str]) -> list[dict[str, Any]]:
    # Cleared when nothing was found, so a later 「那我该怎么办」 is not answered from a stale finding.
    return [SlotSet("last_diagnosis", list(codes) or None)]


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
