"""One user turn, whatever the channel (API, widget, WeChat, Alipay): clean, route to Rasa, shape the reply."""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from assistant.lang import localise, to_traditional
from assistant.rasa_client import RasaClient
from assistant.texts import text as fixed_text
from core.logs import log_event
from core.pii import mask_text
from retrieval.text import clean, detect_lang

log = logging.getLogger("hc.chat")


class EmptyText(ValueError):
    pass


@dataclass
class ChatResult:
    messages: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

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


def _shape(turn_messages: list[dict[str, Any]], meta: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for m in turn_messages:
        custom = m.get("custom")
        if isinstance(custom, dict) and "meta" in custom:
            meta.update({k: v for k, v in custom["meta"].items() if v is not None or k not in meta})
            continue
        if m.get("text") or m.get("buttons"):
            out.append({"text": m.get("text") or "",
                        "buttons": [{"title": b.get("title", ""), "payload": b.get("payload", "")}
                                    for b in m.get("buttons") or []]})
    return out


async def converse(rasa: RasaClient, sender: str, text: str, *, user_id: str | None = None,
                   max_chars: int = 2000, lang_hint: str | None = None,
                   names: tuple[str, ...] = ()) -> ChatResult:
    """names: the signed-in user's own personal strings (names, ID numbers) to mask in the text."""
    started = time.perf_counter()
    cleaned = clean(text, max_chars=20000)
    if not cleaned:
        raise EmptyText("text is empty")
    is_payload = cleaned.startswith("/")
    signal = lang_hint or language_signal(cleaned)
    meta = empty_meta()
    if len(cleaned) > max_chars:
        lang = signal or "zh"
        messages = [{"text": fixed_text("too_long", lang), "buttons": []}]
        return ChatResult(localise(messages, lang), meta)

    # The bot never needs the digits of an ID or phone number, nor the user's name: mask them
    # before Rasa stores the turn in its tracker.
    bot_text = cleaned if is_payload else mask_text(cleaned, names)
    metadata: dict = {"signed_in": user_id is not None}
    if signal:  # without one, Rasa keeps the conversation's language (slot `lang`)
        metadata["lang"] = signal
    if user_id is not None:
        metadata["user_id"] = user_id
    turn = await rasa.send(rasa_sender(sender, user_id), bot_text, metadata)
    lang = turn.lang or signal or "zh"
    meta["intent"] = turn.intent
    messages = _shape(turn.messages, meta)
    meta.setdefault("diagnosis", [])
    log_event(log, "chat_turn", sender=rasa_sender(sender, user_id), lang=lang, intent=turn.intent,
              faq_id=meta.get("faq_id"), decision=meta.get("decision"),
              ms=round((time.perf_counter() - started) * 1000, 1))
    return ChatResult(localise(messages, lang), meta)
