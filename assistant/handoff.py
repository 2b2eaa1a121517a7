"""The user asks for a person: a hotline ticket that arrives with what the bot learned.

    request(conversation_id, text, lang, codes=())  # the hand-off action → the confirmation Reply
    offer(lang)                                      # the 转人工/登记工单 offer after two misses
    confirmation(ticket, lang, created=...)          # "HC-… registered, N ahead, ~M minutes"

The ticket carries the conversation's user (from the app's record, never the message), the
diagnosis codes of the last finding as its category and findings (re-read from the account, so
the agent sees the cause and next step in plain words), and a masked summary of what the user
asked. One open ticket per conversation: asking again gives the same one. An anonymous user is
asked to sign in or to leave a callback number (assistant.chat takes the number before masking).
Synchronous: the action runs it in a worker thread.
"""
from __future__ import annotations

import logging
from datetime import datetime

from assistant import conversations
from assistant import diagnose as diagnose_service
from assistant.texts import text
from assistant.types import Button, Message, Reply
from core.logs import log_event
from core.pii import conversation_ref, mask_text
from delivery import recent
from diagnosis import replies
from diagnosis.rules import TOPICS
from tickets import service as tickets

log = logging.getLogger("hc.handoff")

SUMMARY_CHARS = 300
RECENT_QUESTIONS = 3


def _category(codes: list[str]) -> str:
    """The code that led to the ticket: one where staff act first, else the first real finding."""
    real = [c for c in codes if c != "ok"]
    for code in real:
        if replies.ticket_offered(code):
            return code
    return real[0] if real else "other"


def _findings(user_id: str | None, codes: list[str], conversation_id: str, lang: str) -> list[dict]:
    """Each code with the bot's words for it (cause and next step), read again from the account."""
    real = [c for c in codes if c != "ok"]
    if not real:
        return []
    texts: dict[str, str] = {}
    topic = real[0].split(".", 1)[0]
    if user_id is not None and topic in TOPICS:
        found = diagnose_service.explain(user_id, topic, conversation_id=conversation_id, lang=lang)
        texts = dict(zip(found.meta.get("diagnosis") or [], (m.text for m in found.messages)))
    return [{"code": c, "text": mask_text(texts.get(c) or replies.next_step(c, "en" if lang == "en" else "zh"))}
            for c in real]


def _summary(conversation_id: str, text_in: str, lang: str) -> str:
    """What the user asked before asking for a person (their last few questions), masked."""
    asked = [m.text for m in recent(conversation_id, limit=20) if m.sender == "user" and not m.text.startswith("/")]
    asked = [t for t in asked if t != text_in][-RECENT_QUESTIONS:]
    head = "用户问:" if lang != "en" else "The user asked: "
    summary = head + (" / ".join(asked) if asked else mask_text(text_in))
    return mask_text(summary)[:SUMMARY_CHARS]


def _minutes(seconds: int) -> int:
    return max(1, round(seconds / 60))


def _opens_at(iso: str | None, lang: str) -> str:
    if not iso:
        return ""
    at = datetime.fromisoformat(iso)
    return at.strftime("%m-%d %H:%M") if lang != "en" else at.strftime("%d %b %H:%M")


def confirmation(ticket, lang: str, *, created: bool) -> Reply:
    """The confirmation with the ticket id, the place in the queue and the expected wait."""
    if ticket.status == "claimed":
        parts = [text("handoff_claimed", lang).format(ticket_id=ticket.id)]
    else:
        key = "handoff_created" if created else "handoff_existing"
        parts = [text(key, lang).format(ticket_id=ticket.id)]
        place = tickets.queue_place(ticket.id)
        ahead = max(0, place.position - 1)
        parts.append(text("handoff_place", lang).format(
            ahead=ahead, ahead_en="is nobody" if ahead == 0 else ("is 1 person" if ahead == 1 else f"are {ahead} people"),
            minutes=_minutes(place.expected_wait_s)))
        if not place.in_hours:
            parts.append(text("handoff_after_hours", lang).format(
                hours=tickets.settings().hotline_hours, opens_at=_opens_at(place.opens_at, lang)))
    parts.append(text("handoff_hotline", lang))
    messages = [Message(("" if lang != "en" else " ").join(parts))]
    if ticket.user_id is None and ticket.awaiting_contact:
        messages.append(Message(text("handoff_anonymous", lang)))
    return Reply(tuple(messages), {"handoff": True, "ticket_id": ticket.id})


def request(conversation_id: str, text_in: str, lang: str, codes: list[str] | tuple[str, ...] = ()) -> Reply:
    try:
        user_id = conversations.user_of(conversation_id)
        channel = conversations.channel_of(conversation_id)
    except conversations.UnknownConversation:
        user_id, channel = None, "api"
    codes = [c for c in codes or () if isinstance(c, str)]
    existing = tickets.open_for(conversation_id)
    if existing is not None:
        return confirmation(existing, lang, created=False)
    ticket, created = tickets.create_or_get(
        conversation_id, channel=channel, user_id=user_id, lang=lang, category=_category(codes),
        findings=_findings(user_id, codes, conversation_id, lang), summary=_summary(conversation_id, text_in, lang),
        awaiting_contact=user_id is None, actor="bot")
    log_event(log, "handoff_requested", conversation=conversation_ref(conversation_id), ticket=ticket.id,
              created=created, category=ticket.category, signed_in=user_id is not None)
    return confirmation(ticket, lang, created=created)


def unavailable(lang: str) -> Reply:
    """The ticket queue could not be reached: the hotline number, and no promise of a ticket."""
    return Reply((Message(text("handoff_unavailable", lang)),), {"handoff": True})


def offer(lang: str) -> Message:
    """After two unhelpful answers or abstains in a row: a person is one tap away."""
    return Message(text("handoff_offer", lang), (Button(text("ticket_button", lang), "/request_human"),))
