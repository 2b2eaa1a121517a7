"""One user turn, whatever the channel (API, widget, WeChat, Alipay): clean, route to Rasa, shape the reply."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import delivery
from assistant import conversations, faq, hotline_turns
from assistant.lang import localise, to_traditional
from assistant.rasa_client import RasaClient
from assistant.texts import text as fixed_text
from core.logs import log_event
from core.pii import conversation_ref, mask_text
from retrieval.text import clean, detect_lang

log = logging.getLogger("hc.chat")


class EmptyText(ValueError):
    pass


@dataclass
class ChatResult:
    messages: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    # The replies as stored in the conversation's log (delivery.MessageView): what a channel
    # that pushes sends through delivery.dispatch.
    logged: list[Any] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "meta": self.meta}


def empty_meta() -> dict[str, Any]:
    return {"intent": None, "faq_id": None, "diagnosis": [], "ticket_id": None, "handoff": False}


def language_signal(text: str) -> str | None:
    """The language a message shows, or None when it shows none: a button payload, or Chinese
    written only with characters that are the same in both scripts (那打印呢)."""
    if text.startswith("/"):
        return None
    lang = detect_lang(text)
    if lang == "zh" and to_traditional(text) == text:
        return None
    return lang


def rasa_sender(sender: str, user_id: str | None) -> str:
    """Namespace conversations so an anonymous sender id can never land in a signed-in user's tracker."""
    if user_id is None:
        return f"anon:{sender}"
    return f"user:{hashlib.sha256(user_id.encode()).hexdigest()[:16]}:{sender}"


# The shape of each contract meta field: whatever an action sends, the response keeps it.
_META_TYPES: dict[str, tuple[type, ...]] = {"intent": (str,), "faq_id": (str,), "ticket_id": (str,),
                                            "handoff": (bool,), "diagnosis": (list,)}


def _merge_meta(meta: dict[str, Any], update: Any) -> None:
    if not isinstance(update, dict):
        return
    for key, value in update.items():
        if not isinstance(key, str) or (value is None and key in meta):
            continue
        expected = _META_TYPES.get(key)
        if expected and value is not None and not isinstance(value, expected):
            continue  # a malformed value never reaches (or breaks) the response
        if key == "diagnosis":
            value = [c for c in value or [] if isinstance(c, str)]
        meta[key] = value


def _shape(turn_messages: list[dict[str, Any]], meta: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for m in turn_messages:
        if not isinstance(m, dict):
            continue
        custom = m.get("custom")
        if isinstance(custom, dict) and "meta" in custom:
            _merge_meta(meta, custom["meta"])
            continue
        text_out = m.get("text") if isinstance(m.get("text"), str) else ""
        buttons = [b for b in m.get("buttons") or [] if isinstance(b, dict)]
        if text_out or buttons:
            out.append({"text": text_out,
                        "buttons": [{"title": str(b.get("title", "")), "payload": str(b.get("payload", ""))}
                                    for b in buttons]})
    return out


# This process's turns sent to Rasa and not answered yet (the event loop's own count).
_waiting = 0


def _look_ahead(text: str, below: int) -> None:
    """While few turns are waiting on Rasa (spare CPU), start the FAQ search of this text now, in
    a worker thread, beside Rasa's NLU and policy: the FAQ action then finds it done or under
    way instead of starting it. Under load it would only add work for turns that are no FAQ
    question (a greeting, a diagnosis), so it stops at `below` waiting turns."""
    if below <= 0 or _waiting >= below or text.startswith("/"):
        return
    # Rasa strips the text (UserMessage); the action searches what Rasa stored.
    asyncio.get_running_loop().run_in_executor(None, faq.look_ahead, text.strip())


async def converse(rasa: RasaClient, sender: str, text: str, *, user_id: str | None = None,
                   max_chars: int = 2000, lang_hint: str | None = None,
                   names: tuple[str, ...] = (), channel: str = "api",
                   conversation_id: str | None = None, look_ahead: int = 0) -> ChatResult:
    """names: the signed-in user's own personal strings (names, ID numbers) to mask in the text.
    conversation_id: a channel's own namespaced id (channels.identity); else rasa_sender's.
    look_ahead: Settings.look_ahead_turns (0: the FAQ action starts its own search)."""
    global _waiting
    started = time.perf_counter()
    # Only a bounded head is cleaned: the length check comes before any per-character work on
    # the whole text (the body-size limit bounds it too).
    cleaned = clean(text[: max_chars * 4 + 16], max_chars=max_chars * 4 + 16)
    if not cleaned:
        raise EmptyText("text is empty")
    meta = empty_meta()
    if len(cleaned) > max_chars:
        lang = lang_hint or language_signal(cleaned[:200]) or "zh"
        messages = [{"text": fixed_text("too_long", lang), "buttons": []}]
        meta["lang"] = lang
        return ChatResult(localise(messages, lang), meta)
    signal = lang_hint or language_signal(cleaned)

    # The bot never needs the digits of an ID or phone number, nor the user's name: mask them
    # before Rasa stores the turn in its tracker and its log. Button payloads ("/intent{...}")
    # too: anyone can type one, with anything inside.
    bot_text = mask_text(cleaned, names)
    conversation_id = conversation_id or rasa_sender(sender, user_id)
    _look_ahead(bot_text, look_ahead)
    hotline = await asyncio.to_thread(_before_bot, conversation_id, user_id, channel, cleaned, bot_text, signal)
    ticket = hotline.ticket
    if hotline.handled is not None:
        # With the hotline (an agent holds it, a callback number, a rating): not the bot's turn.
        lang = signal or (ticket.lang if ticket is not None else "zh")
        messages = localise(hotline.handled, lang)
    else:
        metadata: dict = {}
        if signal:  # without one, Rasa keeps the conversation's language (slot `lang`)
            metadata["lang"] = signal
        _waiting += 1
        try:
            turn = await rasa.send(conversation_id, bot_text, metadata)
        finally:
            _waiting -= 1
        lang = turn.lang or signal or "zh"
        meta["intent"] = turn.intent
        messages = localise(_shape(turn.messages, meta), lang)
    if ticket is not None and not meta.get("ticket_id"):
        meta["ticket_id"] = ticket.id
    meta["handoff"] = bool(meta.get("handoff") or meta.get("ticket_id"))
    meta["lang"] = lang          # the widget's interface follows the conversation's language
    logged = await asyncio.to_thread(_log_turn, conversation_id, None if hotline.user_logged else bot_text,
                                     messages, meta)
    ids = [v.id for v in logged]
    for message, message_id in zip(messages, ids):
        message["id"] = message_id
    if ids:
        meta["cursor"] = ids[-1]
    log_event(log, "chat_turn", sender=conversation_ref(conversation_id), lang=lang, intent=meta.get("intent"),
              faq_id=meta.get("faq_id"), decision=meta.get("decision"), ticket=meta.get("ticket_id"),
              ms=round((time.perf_counter() - started) * 1000, 1))
    return ChatResult(messages, meta, logged)


def _before_bot(conversation_id: str, user_id: str | None, channel: str, cleaned: str, masked: str,
                signal: str | None) -> hotline_turns.HotlineTurn:
    # Whose conversation this is lives in the app's own record, which the actions read; the
    # message carries no user id for Rasa to store.
    created = conversations.record(conversation_id, user_id, channel)
    return hotline_turns.before_bot(conversation_id, cleaned, masked, signal, new_conversation=created)


def _log_turn(conversation_id: str, user_text: str | None, messages: list[dict[str, Any]],
              meta: dict[str, Any]) -> list[delivery.MessageView]:
    """The turn in the conversation's message log (what the agent's transcript and the user's
    history show): the user's masked text, then each reply; the ids of the replies."""
    ticket_id = meta.get("ticket_id")
    # The turn's meta on its first reply only: the figures count turns, not messages.
    turn_meta = {k: meta.get(k) for k in ("intent", "faq_id", "decision", "diagnosis")}
    rows = [delivery.NewMessage("user", user_text, ticket_id=ticket_id)] if user_text is not None else []
    rows += [delivery.NewMessage("bot", m["text"], m.get("buttons") or (), ticket_id, turn_meta if i == 0 else None)
             for i, m in enumerate(messages)]
    views = delivery.append_many(conversation_id, rows)     # one transaction for the whole turn
    # The conversation's other tabs and devices see the turn now, not at their next re-read.
    delivery.publish(delivery.conversation_topic(conversation_id))
    return [v for v in views if v.sender == "bot"]
