"""POST /api/v1/chat: one user turn, anonymous or signed in with a user session token."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from accounts import service as accounts
from accounts.source import SourceUnavailable
from api.deps import CurrentUser, RasaDep, SettingsDep
from api.errors import ApiError
from api.openapi import VISIBLE_TEXT
from api.ratelimit import refusal_body
from assistant.chat import EmptyText, converse, rasa_sender
from assistant.rasa_client import BotUnavailable

router = APIRouter(prefix="/api/v1", tags=["chat"])


class ChatIn(BaseModel):
    sender: str = Field(min_length=1, max_length=128, description="conversation id chosen by the client")
    # At least one visible character (else 422 `empty_text`); longer than HC_MAX_TEXT_CHARS (2,000)
    # gets a polite "too long" reply, not an error.
    text: str = Field(max_length=20000, json_schema_extra={"pattern": VISIBLE_TEXT},
                      description="the user's message: at least one visible character")


class ButtonOut(BaseModel):
    title: str
    payload: str


class MessageOut(BaseModel):
    id: str | None = None      # its place in the conversation's message log (/chat/messages cursor)
    text: str
    buttons: list[ButtonOut] = []


class MetaOut(BaseModel, extra="allow"):
    cursor: str | None = None  # the last message of this turn: /chat/messages?after= continues from it
    intent: str | None = None
    faq_id: str | None = None
    diagnosis: list[str] = []
    ticket_id: str | None = None
    handoff: bool = False


class ChatOut(BaseModel):
    messages: list[MessageOut]
    meta: MetaOut


async def _own_names(user_id: str, sender: str) -> tuple[str, ...]:
    """The signed-in user's names and ID numbers, to mask in what they type (an audited read).

    Masking is best effort on top of the regexes: an unreachable source must not stop the chat."""
    try:
        account = await asyncio.to_thread(accounts.read_account_for, user_id,
                                          conversation_id=rasa_sender(sender, user_id),
                                          actor="chat", purpose="mask_input")
    except SourceUnavailable:
        return ()
    return accounts.personal_strings(account)


async def limit_conversation(request: Request, conversation_id: str) -> None:
    """HC_RATE_LIMIT_CONVERSATION for this conversation (api.ratelimit): 429 with Retry-After."""
    refusal = await request.app.state.ratelimiter.check_conversation(conversation_id)
    if refusal is not None:
        raise ApiError(429, "rate_limited", refusal_body(refusal)["error"]["message"],
                       headers={"Retry-After": str(refusal.retry_after)})


@router.post("/chat", response_model=ChatOut)
async def chat(body: ChatIn, request: Request, rasa: RasaDep, settings: SettingsDep, user_id: CurrentUser):
    """One user message in, the bot's messages out.

    The account is the bearer session token's user (CurrentUser) and nobody else's: no body
    field can name a user. No token: anonymous (FAQ only); an unknown or expired one: 401.
    A conversation sending more than HC_RATE_LIMIT_CONVERSATION turns: 429 with Retry-After."""
    await limit_conversation(request, rasa_sender(body.sender, user_id))
    if not request.app.state.turns_ready():
        # Just started, the index still loading: a turn now would get the busy apology.
        raise ApiError(503, "bot_unavailable", "the assistant is starting; please try again shortly",
                       headers={"Retry-After": "5"})
    names = await _own_names(user_id, body.sender) if user_id is not None else ()
    try:
        result = await converse(rasa, body.sender, body.text, user_id=user_id,
                                max_chars=settings.max_text_chars, names=names, look_ahead=settings.look_ahead_turns)
    except EmptyText:
        raise ApiError(422, "empty_text", "text must contain a question") from None
    except BotUnavailable:
        # Rasa restarting (its supervisor brings it back within seconds): say when to try again.
        raise ApiError(503, "bot_unavailable", "the assistant is restarting; please try again shortly",
                       headers={"Retry-After": "5"}) from None
    return result.as_dict()
