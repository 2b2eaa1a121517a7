"""One turn of a channel that pushes (WeChat, Alipay): the same conversation service as every
other channel, then the answer out through the one delivery path.

    result = await answer(rasa, user, text, settings=s)     # converse + delivery.dispatch
    await say(user, "text_only", lang)                        # a fixed sentence, delivered
    await apologise(user, lang)                               # the polite failure message

A reply the user sends as a number ("1", "回复2") picks the numbered choice of the bot's last
message with buttons (the channels show buttons as numbered lines): the turn carries that
button's payload, as a tap in the widget would."""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

import delivery
from accounts import service as accounts
from accounts.source import SourceUnavailable
from assistant.chat import ChatResult, EmptyText, converse, language_signal
from assistant.lang import localise
from assistant.rasa_client import RasaClient
from assistant.texts import text as fixed_text
from channels.identity import ChannelUser
from core.logs import log_event
from core.settings import Settings

log = logging.getLogger("hc.channels.turns")

RECENT_FOR_CHOICES = 6


def last_buttons(conversation_id: str) -> list[dict]:
    """The buttons of the bot's latest message that had any (what a number reply refers to)."""
    for view in reversed(delivery.recent(conversation_id, RECENT_FOR_CHOICES)):
        if view.sender == "user":
            return []            # the user spoke since: an old list is not what "1" means
        if view.buttons:
            return list(view.buttons)
    return []


def choice_or_text(conversation_id: str, text: str) -> str:
    from channels.wechat.api import choice_payload

    if len(text) > 12:           # a choice is a number, not a sentence
        return text
    buttons = last_buttons(conversation_id)
    return (choice_payload(text, buttons) or text) if buttons else text


def _own_names(user: ChannelUser) -> tuple[str, ...]:
    if user.user_id is None:
        return ()
    try:
        account = accounts.read_account_for(user.user_id, conversation_id=user.conversation_id,
                                            actor=f"channel:{user.channel}", purpose="mask_input")
    except SourceUnavailable:
        return ()
    return accounts.personal_strings(account)


async def answer(rasa: RasaClient, user: ChannelUser, text: str, *, settings: Settings) -> ChatResult:
    """The turn, its replies delivered on the channel. Raises BotUnavailable (try again later)."""
    conversation = user.conversation_id
    names = await asyncio.to_thread(_own_names, user)
    said = await asyncio.to_thread(choice_or_text, conversation, text)
    try:
        result = await converse(rasa, user.external_id, said, user_id=user.user_id, channel=user.channel,
                                conversation_id=conversation, names=names, max_chars=settings.max_text_chars, look_ahead=settings.look_ahead_turns)
    except EmptyText:
        await say(user, "text_only", language_signal(text) or "zh")
        return ChatResult([], {})
    views = result.logged
    if not views and result.messages:
        # A reply that did not pass the bot (too long, with the hotline): log and push it now.
        views = [await asyncio.to_thread(delivery.append, conversation, "bot", m["text"], m.get("buttons") or ())
                 for m in result.messages]
    await asyncio.to_thread(delivery.dispatch, conversation, views)
    return result


async def say(user: ChannelUser, key: str, lang: str | None) -> None:
    """A fixed sentence (assistant.texts) in the user's language, through delivery."""
    from assistant import conversations

    [message] = localise([{"text": fixed_text(key, lang or "zh"), "buttons": []}], lang or "zh")

    def send() -> None:
        # The conversation's record says which channel delivers it (a first push may be an image).
        conversations.record(user.conversation_id, user.user_id, user.channel)
        delivery.deliver(user.conversation_id, "bot", message["text"])

    await asyncio.to_thread(send)


async def apologise(user: ChannelUser, lang: str | None) -> None:
    await say(user, "service_unavailable", lang)


class InboxHandler:
    """The inbox worker's handler for one channel's items, whose payload is {<id_field>: the
    channel's user id, "user_id": the linked account or None, "kind": text | enter | other,
    "text"}: a text is a turn, entering gets a greeting, anything else a polite "please type".
    `typing(external_id)`, when given, is shown first (a courtesy: its failure is ignored)."""

    def __init__(self, channel: str, rasa: Callable[[], RasaClient], settings: Settings, *, id_field: str,
                 typing: Callable[[str], None] | None = None):
        self.channel, self.rasa, self.settings = channel, rasa, settings
        self.id_field, self.typing = id_field, typing

    def _user(self, item) -> ChannelUser:
        return ChannelUser(self.channel, item.payload[self.id_field], item.payload.get("user_id"))

    async def handle(self, item) -> str:
        user, kind = self._user(item), item.payload.get("kind")
        if kind == "other":
            await say(user, "text_only", None)
            return "text_only"
        if self.typing is not None:
            await asyncio.to_thread(self._typing, user.external_id)
        text = item.payload.get("text") or ""
        await answer(self.rasa(), user, "/greet" if kind == "enter" else text, settings=self.settings)
        return "answered"

    async def give_up(self, item) -> None:
        await apologise(self._user(item), language_signal(item.payload.get("text") or ""))

    def _typing(self, external_id: str) -> None:
        try:
            self.typing(external_id)
        except Exception as exc:
            log_event(log, "typing_failed", channel=self.channel, error=type(exc).__name__)
