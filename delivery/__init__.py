"""One way out: every message that reaches a user outside a request/response, and the log of
every turn, through one function (DESIGN.md "Channels, hand-off and delivery").

    append(conversation_id, sender, text, buttons=(), ticket_id=None, meta=None) -> MessageView
        store one message (user turn, bot reply) in the conversation's log, masked; no publish
    append_many(conversation_id, [NewMessage(...), ...]) -> list[MessageView]   (one transaction)
    deliver(conversation_id, sender, text, buttons=(), ticket_id=None) -> MessageView
        append, then publish it to whatever listens (the SSE streams), then call the push
        senders registered for the conversation's channel; view.undelivered says if one failed
    dispatch(conversation_id, views) -> list[MessageView]
        the same for messages already appended (a channel turn's replies, logged with the turn)
    messages_after(conversation_id, after=None, limit=100, senders=("bot", "agent", "system"))
        -> list[MessageView]          oldest first, id > after; senders=None: user turns too
    recent(conversation_id, limit=50) -> list[MessageView]     oldest first, user turns included
    last_id(conversation_id) -> int                             the newest id (0: none)
    publish(topic) / subscribe(topic): the broker (memory:// in one process, redis:// across
        instances); topics conversation_topic(conversation_id) and AGENTS_TOPIC
    use_broker(broker_from_url(url)) / release_broker(broker)  the process's broker (app start-up)
    register_sender(channel, fn) / unregister_sender(channel, fn)
    configure(engine | sessionmaker | None)                     the database (tests)

The stored log is the source of truth: a notification only says "look again", so a stream that
missed one (Redis pub/sub drops while a client is away) loses nothing: it re-reads after its cursor.

Channel senders (WeChat, Alipay: channels that push) register with register_sender(channel, fn);
deliver() calls those of the conversation's channel (assistant.conversations' record) with
(conversation_id, view). A sender that raises marks the message undelivered with a short reason
(`Undeliverable("45015 window over")`'s reason, else the exception's type name: an exception's
message could carry personal data) and the returned view's `undelivered` says so.
Everything here is synchronous except the broker's subscribe; publish() works from any thread.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from sqlalchemy import select

from core.logs import log_event
from core.pii import conversation_ref
from delivery.broker import (Broker, MemoryBroker, RedisBroker, Subscription, SubscriptionDropped,
                             broker_from_url, current_broker, publish, release_broker, use_broker)
from delivery.log import (DELIVERED_SENDERS, SENDERS, MessageView, NewMessage, append, append_many, configure,
                          last_id, mark_undelivered, messages_after, recent, sessions)
from store.models import Conversation

log = logging.getLogger("hc.delivery")

AGENTS_TOPIC = "agents"

Sender = Callable[[str, MessageView], None]


class Undeliverable(Exception):
    """Raised by a channel sender that could not deliver; `reason` is short and has no personal data."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def conversation_topic(conversation_id: str) -> str:
    return f"conversation:{conversation_id}"


def subscribe(*topics: str, broker: Broker | None = None):
    """`async with subscribe(topic) as sub:` on `broker` or the process's one."""
    chosen = broker or current_broker()
    if chosen is None:
        raise RuntimeError("no broker configured (delivery.use_broker)")
    return chosen.subscribe(*topics)


# --- channel senders ------------------------------------------------------------------------------
_senders_lock = threading.Lock()
_senders: dict[str, list[Sender]] = {}


def register_sender(channel: str, fn: Sender) -> None:
    """Call fn(conversation_id, view) for every message delivered to a conversation of `channel`."""
    with _senders_lock:
        bucket = _senders.setdefault(channel, [])
        if fn not in bucket:
            bucket.append(fn)


def unregister_sender(channel: str, fn: Sender) -> None:
    with _senders_lock:
        bucket = _senders.get(channel, [])
        if fn in bucket:
            bucket.remove(fn)


def _senders_for(channel: str | None) -> list[Sender]:
    with _senders_lock:
        return list(_senders.get(channel or "", ()))


def _channel_of(conversation_id: str) -> str | None:
    with sessions()() as session:
        return session.scalar(select(Conversation.channel).where(Conversation.id == conversation_id))


def _reason(exc: Exception) -> str:
    reason = exc.reason if isinstance(exc, Undeliverable) else type(exc).__name__
    return (reason or "failed")[:64]


def deliver(conversation_id: str, sender: str, text: str, buttons: Sequence[dict] = (),
            ticket_id: str | None = None) -> MessageView:
    """Append the message to the conversation's log, wake its streams, push it on its channel."""
    view = append(conversation_id, sender, text, buttons, ticket_id)
    return dispatch(conversation_id, [view])[0]


def dispatch(conversation_id: str, views: Sequence[MessageView]) -> list[MessageView]:
    """Messages already in the log (a channel turn's replies, logged with the turn): wake the
    conversation's streams and push each on its channel, in order. A message a sender could not
    push comes back marked undelivered (and the rest are still tried: each stands alone)."""
    publish(conversation_topic(conversation_id))
    with _senders_lock:
        any_senders = any(_senders.values())
    if not any_senders or not views:
        return list(views)
    channel = _channel_of(conversation_id)
    out = []
    for view in views:
        for fn in _senders_for(channel):
            try:
                fn(conversation_id, view)
            except Exception as exc:
                view = mark_undelivered(view, _reason(exc))
                log_event(log, "message_undelivered", channel=channel, reason=view.undelivered,
                          conversation=conversation_ref(conversation_id), message=view.id)
                break
        out.append(view)
    return out


__all__ = [
    "AGENTS_TOPIC", "Broker", "DELIVERED_SENDERS", "MemoryBroker", "MessageView", "RedisBroker",
    "NewMessage", "SENDERS", "Sender", "Subscription", "SubscriptionDropped", "Undeliverable", "append",
    "append_many",
    "broker_from_url", "configure", "conversation_topic", "current_broker", "deliver", "dispatch", "last_id",
    "mark_undelivered", "messages_after", "publish", "recent", "register_sender", "release_broker",
    "sessions", "subscribe", "unregister_sender", "use_broker",
]
