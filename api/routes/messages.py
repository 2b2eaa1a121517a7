"""Messages that reach a user outside a reply (CONTRACT.md): poll, stream, stream tickets.

    GET  /api/v1/chat/messages?sender=S[&after=CURSOR]   → {"messages": [...], "cursor": str}
    GET  /api/v1/chat/stream?sender=S[&after=|Last-Event-ID][&stream_ticket=T]   text/event-stream
    POST /api/v1/chat/stream-ticket {"sender"}           → {"ticket", "expires_in": 60}

Same authorisation as /api/v1/chat: the conversation is assistant.chat.rasa_sender(S, user)
with the user from the bearer session token (none: the anonymous conversation of S), so another
user's token, or none, names another conversation and never sees this one. Cursors are message
ids (decimal); the stream's event id is the message id, so a reconnect resumes from Last-Event-ID.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, Field

import delivery
from accounts import service as accounts
from api.deps import CurrentSession, CurrentUser, SettingsDep, current_session
from api.errors import ApiError, ErrorResponse
from api.openapi import SSE_EVENT
from api.sse import EventStream, app_broker, encode_comment, encode_event, encode_retry, recheck_s
from assistant.chat import rasa_sender
from delivery import stream_tickets
from delivery.broker import Broker, SubscriptionDropped

router = APIRouter(prefix="/api/v1/chat", tags=["chat"])

HISTORY_LIMIT = 50
PAGE_LIMIT = 100
MAX_CURSOR = 2**63 - 1

Sender = Annotated[str, Query(min_length=1, max_length=128, description="the conversation id chosen by the client (as in /chat)")]


ErrorOut = ErrorResponse         # the one error shape (api.errors), declared once in /openapi.json


_WHAT = {400: "The request body is not valid JSON (`invalid_json`).",
         401: "Unknown or expired token, or a bad or expired stream ticket (`invalid_token`, `unauthorized`).",
         422: "A bad sender, cursor or Last-Event-ID (`invalid_cursor`, `invalid_request`).",
         503: "The database is unreachable; retry (`store_unavailable`)."}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorOut, "description": _WHAT[s]} for s in statuses}


ERR_401, ERR_422, ERR_503 = errors(401), errors(422), errors(503)


class ButtonOut(BaseModel):
    title: str
    payload: str


class MessageOut(BaseModel):
    id: str
    from_: str = Field(alias="from", description="user | bot | agent | system")
    text: str
    buttons: list[ButtonOut] = []
    at: str
    ticket_id: str | None = None

    model_config = {"populate_by_name": True}


class MessagesOut(BaseModel):
    messages: list[MessageOut]
    cursor: str


class HandoffTicketOut(BaseModel):
    id: str
    status: str = Field(description="open | claimed | resolved")
    rating_pending: bool = Field(description="resolved and not rated yet: the satisfaction question stands")
    queue: dict[str, Any] | None = Field(None, description="while open: position (1 = next), expected_wait_s, "
                                                           "in_hours, opens_at")


class HandoffOut(BaseModel):
    ticket: HandoffTicketOut | None


class StreamTicketIn(BaseModel):
    sender: str = Field(min_length=1, max_length=128)


class StreamTicketOut(BaseModel):
    ticket: str
    expires_in: int


CURSOR_PATTERN = "^[0-9]{1,19}$"
# Cursors as the schema says them: decimal digits, at most 19 (what the server takes, exactly).
Cursor = Annotated[str | None, Query(max_length=32, description="a cursor from an earlier answer",
                                     json_schema_extra={"anyOf": [{"type": "string", "pattern": CURSOR_PATTERN}]})]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", max_length=32,
                                           description="the id of the last event received (a reconnect)",
                                           json_schema_extra={"anyOf": [{"type": "string",
                                                                         "pattern": "^[0-9]{0,19}$"}]})]


def parse_cursor(value: str | None, where: str = "after") -> int | None:
    """A cursor is a message (or event) id as decimal text (ASCII digits, at most 19, no spaces);
    anything else is a 422. One past every id there is (up to 10^19 - 1) simply finds nothing."""
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise ApiError(422, "invalid_cursor", f"{where} must be a cursor this API returned")
    return min(int(value), MAX_CURSOR)


# --- shared by the user and agent streams ---------------------------------------------------------
def event_source(broker: Broker, topic: str, fetch: Callable[[int, int], Sequence[Any]],
                 cursor: int, *, ping_s: float, limit: int = PAGE_LIMIT,
                 still_allowed: Callable[[], bool] | None = None) -> AsyncIterator[bytes]:
    """The events after `cursor`, then each new one as `topic` says there is one.

    Subscribes before the first read, so nothing that lands between the read and the
    subscription is missed; `fetch(cursor, limit)` returns items with an "id" (dicts or
    MessageView) oldest first. A `: connected` comment follows the backlog: the stream is live.
    Ends when the subscription is dropped (the client reconnects with Last-Event-ID and
    re-reads: no gap, no repeat), and when `still_allowed()` turns false: it is asked after every
    wake (a new event or the periodic recheck) before anything more is read, so a session or agent
    revoked while its stream is open receives nothing sent after the revocation, and its
    reconnect is refused (401)."""

    async def events() -> AsyncIterator[bytes]:
        nonlocal cursor
        yield encode_retry()
        async with broker.subscribe(topic) as sub:
            caught_up = woken = False
            while True:
                if woken and still_allowed is not None and not await asyncio.to_thread(still_allowed):
                    return
                batch = await asyncio.to_thread(fetch, cursor, limit)
                if batch:
                    chunks = []
                    for item in batch:
                        payload = item.as_dict() if hasattr(item, "as_dict") else item
                        chunks.append(encode_event(json.dumps(payload, ensure_ascii=False, default=str),
                                                   id=str(payload["id"])))
                        cursor = int(payload["id"])
                    yield b"".join(chunks)
                    if len(batch) >= limit:
                        continue
                if not caught_up:
                    # Subscribed and the backlog sent: from here on the broker wakes us.
                    caught_up = True
                    yield encode_comment("connected")
                try:
                    await sub.wait(recheck_s(ping_s))
                except SubscriptionDropped:
                    return
                woken = True

    return events()


def resume_cursor(last_event_id: str | None, after: str | None) -> int | None:
    """Last-Event-ID (the browser's reconnect) wins over ?after= (the page's own resume)."""
    if last_event_id:
        return parse_cursor(last_event_id, "Last-Event-ID")
    return parse_cursor(after)


# --- routes ---------------------------------------------------------------------------------------
@router.get("/messages", response_model=MessagesOut, response_model_by_alias=True,
            response_model_exclude_none=True, responses={**ERR_401, **ERR_422, **ERR_503})
async def messages(sender: Sender, user_id: CurrentUser, after: Cursor = None,
                   limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT)] = PAGE_LIMIT):
    """What was delivered to the conversation after `after` (bot, agent and system messages),
    or, without `after`, its recent history with the user's own turns as "from": "user".
    `cursor` continues from the last message returned (the same cursor when there is none)."""
    cursor = parse_cursor(after)
    conversation_id = rasa_sender(sender, user_id)
    if cursor is None:
        views = await asyncio.to_thread(delivery.recent, conversation_id, min(limit, HISTORY_LIMIT))
        next_cursor = views[-1].id if views else "0"
    else:
        views = await asyncio.to_thread(delivery.messages_after, conversation_id, cursor, limit)
        next_cursor = views[-1].id if views else str(cursor)
    return {"messages": [v.as_dict() for v in views], "cursor": next_cursor}


@router.get("/handoff", response_model=HandoffOut, responses={**ERR_401, **ERR_422, **ERR_503})
async def handoff(sender: Sender, user_id: CurrentUser):
    """The conversation's hand-off state for the widget's banner: its open ticket (waiting or
    with an agent), or else its last one, or null when it never went to the hotline."""
    from tickets import service as tickets

    conversation_id = rasa_sender(sender, user_id)

    def state() -> dict:
        view = tickets.latest_for(conversation_id)
        if view is None:
            return {"ticket": None}
        queue = tickets.queue_place(view.id).as_dict() if view.status == "open" else None
        return {"ticket": {"id": view.id, "status": view.status, "queue": queue,
                           "rating_pending": view.status == "resolved" and view.satisfaction is None}}

    return await asyncio.to_thread(state)


@router.post("/stream-ticket", response_model=StreamTicketOut, responses=errors(400, 401, 422, 503))
async def chat_stream_ticket(body: StreamTicketIn, session: CurrentSession, settings: SettingsDep):
    """A short-lived ticket for `GET /chat/stream?stream_ticket=` (EventSource cannot send
    Authorization). It names this conversation only and expires in `expires_in` seconds; one
    issued to a session is refused once that session is revoked."""
    conversation_id = rasa_sender(body.sender, session.user_id or None if session else None)
    claims = {"k": "chat", "c": conversation_id, "s": body.sender}
    if session is not None:
        claims["t"] = session.token_id
    ticket = stream_tickets.issue(settings, claims)
    return {"ticket": ticket, "expires_in": stream_tickets.TTL_S}


STREAM_RESPONSES = {
    200: {"description": "server-sent events: `id` = message id, `data` = the message JSON; "
                         "`: ping` comments every HC_SSE_PING_S",
          "content": {"text/event-stream": {"schema": SSE_EVENT}}},
    **ERR_401, **ERR_422, **ERR_503,
}


@router.get("/stream", response_class=EventStream, responses=STREAM_RESPONSES)
async def chat_stream(request: Request, sender: Sender, settings: SettingsDep, after: Cursor = None,
                      stream_ticket: Annotated[str | None, Query(max_length=stream_tickets.MAX_TICKET_CHARS)] = None,
                      last_event_id: LastEventId = None):
    """The conversation's bot, agent and system messages as they are delivered.

    Starts after `Last-Event-ID` (a reconnect) or `after`; with neither, only new ones.
    Authorised by the bearer session token as /chat is, or by `stream_ticket`
    (POST /chat/stream-ticket) for EventSource, which cannot send headers."""
    if stream_ticket is not None:
        try:
            claims = stream_tickets.verify(settings, stream_ticket, kind="chat")
        except stream_tickets.TicketInvalid:
            raise ApiError(401, "invalid_token", "unknown or expired stream ticket") from None
        if claims.get("s") != sender or not isinstance(claims.get("c"), str):
            raise ApiError(401, "invalid_token", "the stream ticket is for another conversation")
        conversation_id, token_id = claims["c"], claims.get("t")
        if token_id is not None and not await asyncio.to_thread(accounts.session_live, token_id):
            raise ApiError(401, "invalid_token", "the session of this stream ticket has ended")
    else:
        session = await current_session(request)
        conversation_id = rasa_sender(sender, session.user_id or None if session else None)
        token_id = session.token_id if session is not None else None
    cursor = resume_cursor(last_event_id, after)
    if cursor is None:
        cursor = await asyncio.to_thread(delivery.last_id, conversation_id)

    def fetch(after_id: int, limit: int):
        return delivery.messages_after(conversation_id, after_id, limit)

    # A stream opened with a session (its token or its ticket) ends when the session does.
    still_allowed = None if token_id is None else (lambda: accounts.session_live(token_id))
    events = event_source(app_broker(request.app), delivery.conversation_topic(conversation_id),
                          fetch, cursor, ping_s=settings.sse_ping_s, still_allowed=still_allowed)
    return EventStream(events, ping_s=settings.sse_ping_s)
