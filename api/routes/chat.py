from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api.deps import RasaDep, SettingsDep, bearer
from api.errors import ApiError
from assistant.chat import EmptyText, converse
from assistant.rasa_client import BotUnavailable

router = APIRouter(prefix="/api/v1", tags=["chat"])


class ChatIn(BaseModel):
    sender: str = Field(min_length=1, max_length=128, description="conversation id chosen by the client")
    text: str = Field(max_length=20000)


class ButtonOut(BaseModel):
    title: str
    payload: str


class MessageOut(BaseModel):
    text: str
    buttons: list[ButtonOut] = []


class MetaOut(BaseModel, extra="allow"):
    intent: str | None = None
    faq_id: str | None = None
    diagnosis: list[str] = []
    ticket_id: str | None = None
    handoff: bool = False


class ChatOut(BaseModel):
    messages: list[MessageOut]
    meta: MetaOut


@router.post("/chat", response_model=ChatOut)
async def chat(body: ChatIn, request: Request, rasa: RasaDep, settings: SettingsDep):
    """One user message in, the bot's messages out. A bearer session token binds it to an account."""
    if bearer(request) is not None:
        raise ApiError(401, "invalid_token", "unknown or expired session token")
    try:
        result = await converse(rasa, body.sender, body.text, max_chars=settings.max_text_chars)
    except EmptyText:
        raise ApiError(422, "empty_text", "text must contain a question") from None
    except BotUnavailable:
        raise ApiError(503, "bot_unavailable", "the assistant is restarting; please try again shortly") from None
    return result.as_dict()
