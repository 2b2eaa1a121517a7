"""Helpers shared by the actions: the reply language and how a service Reply is sent."""
from __future__ import annotations

import asyncio
from typing import Any, Callable, TypeVar

from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from assistant.types import Reply

DEFAULT_LANG = "zh"
FAQ_DECISIONS = ("answer", "clarify", "none")   # the values of slot faq_decision
MISS_SLOT = "miss_streak"   # abstains and "not helpful" presses in a row
MISSES_BEFORE_OFFER = 2
T = TypeVar("T")


def current_lang(tracker: Tracker) -> str:
    return tracker.get_slot("lang") or DEFAULT_LANG


def latest_text(tracker: Tracker) -> str:
    return tracker.latest_message.get("text") or ""


def latest_entity(tracker: Tracker, entity: str) -> str | None:
    """The entity's latest value when it is text. A payload anyone can type
    (/feedback{"helpful":1,"faq_id":{"a":1}}) gives entities of any JSON type: those are ignored."""
    return next((v for v in tracker.get_latest_entity_values(entity) if isinstance(v, str) and v), None)


async def call_service(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # Services are synchronous (retrieval, SQL); running them in a worker thread keeps the
    # app's event loop free for other chats while one waits on the index or the database.
    return await asyncio.to_thread(fn, *args, **kwargs)


def dispatch_reply(dispatcher: CollectingDispatcher, reply: Reply) -> None:
    for message in reply.messages:
        dispatcher.utter_message(
            text=message.text,
            buttons=[{"title": b.title, "payload": b.payload} for b in message.buttons],
        )
    # A trailing custom message carries the service's meta (faq_id, handoff, ticket_id...)
    # so the API can merge it into its response instead of guessing from the text.
    dispatcher.utter_message(json_message={"meta": dict(reply.meta)})


def with_offer_after_misses(tracker: Tracker, reply: Reply, missed: bool) -> tuple[Reply, list[dict[str, Any]]]:
    """Count abstains / "not helpful" in a row; at the second, offer a person (and start again)."""
    from assistant import handoff

    streak = (int(tracker.get_slot(MISS_SLOT) or 0) + 1) if missed else 0
    if streak >= MISSES_BEFORE_OFFER:
        offered = Reply((*reply.messages, handoff.offer(current_lang(tracker))), reply.meta)
        return offered, [SlotSet(MISS_SLOT, 0)]
    return reply, [SlotSet(MISS_SLOT, streak)]


def remember_faq(reply: Reply) -> list[dict[str, Any]]:
    """The answered entry (the topic a follow-up refers to; kept when nothing was answered) and
    what the turn did (a 都不是 right after a clarification gets its own reply)."""
    events = []
    faq_id = reply.meta.get("faq_id")
    if faq_id:
        events.append(SlotSet("last_faq_id", faq_id))
    if reply.meta.get("decision") in FAQ_DECISIONS:
        events.append(SlotSet("faq_decision", reply.meta["decision"]))
    return events
