"""The hotline agents' routes (bearer agent token): the ticket queue and the assist panel's data.

Every route takes the agent from its token (CurrentAgent); the service does the work in a worker
thread. Responses are the *Public models: masked texts only, never the conversation id, never a
raw phone number (that is POST …/reveal-phone, audited)."""
from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from api.deps import CurrentAgent
from api.errors import ApiError, ErrorResponse
from api.openapi import NOT_BLANK
from tickets import service

router = APIRouter(prefix="/api/v1/agent", tags=["agent"])

TicketId = Annotated[str, Path(max_length=32)]
AgentText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                             max_length=service.MAX_TEXT_CHARS),
                      WithJsonSchema({"type": "string", "minLength": 1, "maxLength": service.MAX_TEXT_CHARS,
                                      "pattern": NOT_BLANK,
                                      "description": "1–2000 characters once surrounding white space is "
                                                     "stripped"})]


# --- schemas ------------------------------------------------------------------------------------
ErrorPublic = ErrorResponse      # the one error shape (api.errors), declared once in /openapi.json


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    what = {400: "The request body is not valid JSON.",
            401: "No agent token, or a token that is not an agent's.",
            403: "Forbidden.",
            404: "No such ticket (`not_found`).",
            409: "The ticket's state does not allow it (`already_claimed`, `not_holder`, `ticket_resolved`).",
            422: "Invalid input (`invalid_request`).",
            503: "The database is unreachable; retry."}
    return {s: {"model": ErrorPublic, "description": what[s]} for s in statuses}


class MessageCreate(BaseModel):
    text: AgentText


class NoteCreate(BaseModel):
    text: AgentText


class ResolveCreate(BaseModel):
    resolution: AgentText


class TicketPublic(BaseModel):
    id: str
    user_id: str | None
    category: str
    status: str
    created_at: str
    diagnosis: list[str]
    summary: str
    channel: str
    claimed_by: str | None
    claimed_by_id: int | None = None
    lang: str
    awaiting_contact: bool
    has_callback_phone: bool
    sla_due_at: str
    overdue: bool
    claimed_at: str | None = None
    first_response_at: str | None = None
    resolved_at: str | None = None
    resolution: str | None = None
    satisfaction: int | None = None
    updated_at: str | None = None


class TicketListPublic(BaseModel):
    tickets: list[TicketPublic]


class TranscriptLinePublic(BaseModel):
    """One message of the conversation; `from` is user, bot, agent or system."""
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    text: str
    at: str


class FindingPublic(BaseModel):
    code: str
    text: str


class SuggestionPublic(BaseModel):
    text: str
    source: str
    title: str | None = None


class NotePublic(BaseModel):
    id: int
    text: str
    at: str
    by: str


class EventPublic(BaseModel):
    id: int
    kind: str
    actor: str
    at: str
    changes: dict[str, Any]


class AccountLinePublic(BaseModel):
    label: str
    value: str


class AgentPublic(BaseModel):
    id: int
    name: str


class TicketDetailPublic(TicketPublic):
    account: list[AccountLinePublic] | None = Field(
        None, description="masked account summary (null: anonymous, or the source did not answer)")
    transcript: list[TranscriptLinePublic]
    findings: list[FindingPublic]
    suggestions: list[SuggestionPublic]
    notes: list[NotePublic]
    history: list[EventPublic]


class MessagePostedPublic(BaseModel):
    message_id: str
    at: str
    text: str
    undelivered: str | None = None
    ticket: TicketPublic


class PhonePublic(BaseModel):
    phone: str | None


# --- calling the service ------------------------------------------------------------------------
async def call(fn, *args):
    """The service in a worker thread; its refusals as {"error": {...}} with their status."""
    try:
        return await asyncio.to_thread(fn, *args)
    except service.TicketError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


def _detail(raw: dict) -> TicketDetailPublic:
    return TicketDetailPublic.model_validate(raw)


# --- routes -------------------------------------------------------------------------------------
@router.get("/me", response_model=AgentPublic, responses=errors(401, 503))
async def me(agent: CurrentAgent):
    """The agent this token belongs to (the panel's sign-in check)."""
    return AgentPublic(id=agent.id, name=agent.name)


@router.get("/tickets", response_model=TicketListPublic, responses=errors(401, 422, 503))
async def list_tickets(agent: CurrentAgent,
                       status: Literal["open", "claimed", "resolved", ""] | None = None,
                       category: Annotated[str | None, Query(max_length=64)] = None,
                       limit: Annotated[int, Query(ge=1, le=service.LIST_LIMIT)] = service.LIST_LIMIT):
    """Tickets, longest waiting first; `status` and `category` filter (empty: no filter; then
    the waiting ones come before the resolved ones)."""
    views = await call(service.list_tickets, status or None, category or None, limit)
    return TicketListPublic(tickets=[TicketPublic(**v.public()) for v in views])


@router.get("/tickets/{ticket_id}", response_model=TicketDetailPublic, responses=errors(401, 404, 422, 503))
async def ticket_detail(ticket_id: TicketId, agent: CurrentAgent):
    """The ticket, its transcript (oldest first), findings, suggested answers, notes, history."""
    return _detail(await call(service.detail, ticket_id, agent))


@router.post("/tickets/{ticket_id}/claim", response_model=TicketPublic, responses=errors(401, 404, 409, 422, 503))
async def claim(ticket_id: TicketId, agent: CurrentAgent):
    """Take the ticket; 409 `already_claimed` when another agent holds it."""
    view = await call(service.claim, ticket_id, agent)
    return TicketPublic(**view.public())


@router.post("/tickets/{ticket_id}/unclaim", response_model=TicketPublic,
             responses=errors(401, 404, 409, 422, 503))
async def unclaim(ticket_id: TicketId, agent: CurrentAgent):
    """Give the ticket back to the queue; 409 `not_holder` unless this agent holds it."""
    view = await call(service.unclaim, ticket_id, agent)
    return TicketPublic(**view.public())


@router.post("/tickets/{ticket_id}/messages", response_model=MessagePostedPublic,
             responses=errors(400, 401, 404, 409, 422, 503))
async def send_message(ticket_id: TicketId, body: MessageCreate, agent: CurrentAgent):
    """Send a text (1–2000 characters) to the user, on whatever channel the conversation came
    from; 409 `not_holder` unless this agent holds the ticket."""
    return MessagePostedPublic(**await call(service.agent_message, ticket_id, agent, body.text))


@router.post("/tickets/{ticket_id}/notes", response_model=NotePublic, responses=errors(400, 401, 404, 422, 503))
async def add_note(ticket_id: TicketId, body: NoteCreate, agent: CurrentAgent):
    """A private note on the ticket: shown to agents, never delivered to the user."""
    return NotePublic(**await call(service.add_note, ticket_id, agent, body.text))


@router.post("/tickets/{ticket_id}/resolve", response_model=TicketPublic,
             responses=errors(400, 401, 404, 409, 422, 503))
async def resolve(ticket_id: TicketId, body: ResolveCreate, agent: CurrentAgent):
    """Tell the user the resolution and ask for a rating; the ticket is `resolved`. 409
    `not_holder` when another agent holds it, `ticket_resolved` when it is resolved already."""
    view = await call(service.resolve, ticket_id, agent, body.resolution)
    return TicketPublic(**view.public())


@router.post("/tickets/{ticket_id}/reveal-phone", response_model=PhonePublic,
             responses=errors(401, 404, 409, 422, 503))
async def reveal_phone(ticket_id: TicketId, agent: CurrentAgent):
    """The callback number the user left (null when none), for the agent holding the ticket.
    Audited: every reveal is an event in the ticket's history and an audit log line."""
    return PhonePublic(phone=await call(service.reveal_phone, ticket_id, agent))
