"""The agents' live stream of ticket events, and its stream tickets.

    GET  /api/v1/agent/stream[?after=|Last-Event-ID][&stream_ticket=T]    text/event-stream
    POST /api/v1/agent/stream-ticket                                       → {"ticket", "expires_in": 60}

Events are tickets.service.events_after(cursor, agent_id, limit) (new, claimed, unclaimed and
resolved tickets for everyone; the user's messages of the tickets this agent holds), the event
id is the ticket event's id, and the stream wakes on delivery.AGENTS_TOPIC, so a reconnect with
Last-Event-ID misses nothing and repeats nothing. Authorised by an agent token (bearer), or by a
stream ticket for EventSource; an open stream ends once its agent is revoked (re-checked on every
wake), and a ticket issued before the revocation is refused.
"""
from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request

import delivery
from accounts import service as accounts
from api.deps import CurrentAgent, SettingsDep, require_agent
from api.errors import ApiError
from api.openapi import SSE_EVENT
from api.routes.messages import (ERR_401, ERR_422, ERR_503, Cursor, LastEventId, StreamTicketOut,
                                 event_source, resume_cursor)
from api.sse import EventStream, app_broker
from delivery import stream_tickets

router = APIRouter(prefix="/api/v1/agent", tags=["agent"])

AGENT_STREAM_RESPONSES = {
    200: {"description": "server-sent events: `id` = ticket event id, `data` = {id, ticket_id, kind, at, "
                         "actor, ticket[, text]}; `: ping` comments every HC_SSE_PING_S",
          "content": {"text/event-stream": {"schema": SSE_EVENT}}},
    **ERR_401, **ERR_422, **ERR_503,
}


@router.post("/stream-ticket", response_model=StreamTicketOut, responses={**ERR_401, **ERR_503})
async def agent_stream_ticket(agent: CurrentAgent, settings: SettingsDep):
    """A short-lived ticket for `GET /agent/stream?stream_ticket=` (EventSource sends no headers)."""
    ticket = stream_tickets.issue(settings, {"k": "agent", "a": agent.id})
    return {"ticket": ticket, "expires_in": stream_tickets.TTL_S}


@router.get("/stream", response_class=EventStream, responses=AGENT_STREAM_RESPONSES)
async def agent_stream(request: Request, settings: SettingsDep, after: Cursor = None,
                       stream_ticket: Annotated[str | None, Query(max_length=stream_tickets.MAX_TICKET_CHARS)] = None,
                       last_event_id: LastEventId = None):
    """Ticket events as they happen, after `Last-Event-ID` (a reconnect) or `after`; with
    neither, only new ones."""
    from tickets import service as tickets

    if stream_ticket is not None:
        try:
            claims = stream_tickets.verify(settings, stream_ticket, kind="agent")
        except stream_tickets.TicketInvalid:
            raise ApiError(401, "invalid_token", "unknown or expired stream ticket") from None
        if not isinstance(claims.get("a"), int):
            raise ApiError(401, "invalid_token", "unknown or expired stream ticket")
        agent_id = claims["a"]
        if not await asyncio.to_thread(accounts.agent_active, agent_id):
            raise ApiError(401, "invalid_token", "the agent of this stream ticket is revoked")
    else:
        agent_id = (await require_agent(request)).id
    cursor = resume_cursor(last_event_id, after)
    if cursor is None:
        cursor = await asyncio.to_thread(tickets.last_event_id)

    def fetch(after_id: int, limit: int):
        return tickets.events_after(after_id, agent_id, limit)

    events = event_source(app_broker(request.app), delivery.AGENTS_TOPIC, fetch, cursor,
                          ping_s=settings.sse_ping_s, still_allowed=lambda: accounts.agent_active(agent_id))
    return EventStream(events, ping_s=settings.sse_ping_s)
