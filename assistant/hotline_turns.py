"""A user's turn while the conversation is with the hotline, before (or instead of) the bot.

    before_bot(conversation_id, text, masked, lang) -> HotlineTurn

- an agent holds the conversation's ticket: the message goes to the ticket (the agent sees it
  live) and the bot stays quiet, so it never talks over a person;
- an anonymous user whose ticket waits for a callback number types one: it is taken from the
  text before masking, sealed on the ticket, and only a masked form is ever shown;
- the satisfaction buttons sent at resolve (/rate_ticket{"ticket_id": …, "score": 1..3}) are
  answered here: a rating concerns the ticket, not the bot.

Anything else is the bot's (handled is None), and `ticket` says which ticket is still open for
the conversation (meta.ticket_id / meta.handoff). Synchronous: the chat service runs it in a
worker thread.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from assistant.texts import text
from core.pii import find_mobile, mask_phone
from delivery import append
from tickets import service as tickets

_RATE = re.compile(r"^/rate_ticket(\{.*\})$", re.S)


@dataclass(frozen=True)
class HotlineTurn:
    handled: list[dict[str, Any]] | None      # the reply when the bot must not answer, else None
    ticket: Any = None                         # the conversation's open ticket (TicketView) or None
    user_logged: bool = False                  # the user's message is already in the message log


def _reply(*texts: str) -> list[dict[str, Any]]:
    return [{"text": t, "buttons": []} for t in texts]


def _rating(conversation_id: str, payload: str, lang: str) -> list[dict[str, Any]] | None:
    m = _RATE.match(payload)
    if m is None:
        return None
    try:
        data = json.loads(m.group(1))
        ticket_id, score = str(data["ticket_id"]), int(data["score"])
        ticket = tickets.get(ticket_id)
    except (ValueError, KeyError, TypeError, tickets.TicketNotFound):
        return _reply(text("rating_not_open", lang))
    if ticket.conversation_id != conversation_id:     # one conversation cannot rate another's
        return _reply(text("rating_not_open", lang))
    try:
        tickets.rate(ticket_id, score, actor="user")
    except (tickets.TicketError, ValueError):
        return _reply(text("rating_not_open", lang))
    return _reply(text("rating_thanks", lang))


def before_bot(conversation_id: str, text_in: str, masked: str, signal: str | None,
               new_conversation: bool = False) -> HotlineTurn:
    """text_in: the cleaned text (raw numbers: the callback phone is read from it); masked: what
    may be stored and shown; signal: the language the text shows, if any (else the ticket's).
    new_conversation: this turn created the conversation (conversations.record), so it has no
    ticket to look up."""
    ticket = None if new_conversation else tickets.open_for(conversation_id)
    lang = signal or (ticket.lang if ticket is not None else "zh")
    rated = _rating(conversation_id, text_in, lang)
    if rated is not None:
        return HotlineTurn(rated, ticket)
    if ticket is None:
        return HotlineTurn(None)
    if ticket.awaiting_contact and ticket.user_id is None:
        phone = find_mobile(text_in)
        if phone is not None:
            append(conversation_id, "user", masked, ticket_id=ticket.id)
            ticket = tickets.set_callback_phone(ticket.id, phone)
            return HotlineTurn(_reply(text("callback_saved", lang).format(phone=mask_phone(phone))), ticket,
                               user_logged=True)
    if ticket.status == "claimed":
        # Logged before the agents' stream is told, so the panel finds it when it looks.
        append(conversation_id, "user", masked, ticket_id=ticket.id)
        tickets.record_user_message(ticket.id, masked)
        return HotlineTurn([], ticket, user_logged=True)
    return HotlineTurn(None, ticket)
