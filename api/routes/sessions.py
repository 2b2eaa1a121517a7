"""Admin: user session tokens, standing in for the channel's login handshake, and their revocation;
revoking agent tokens (bearer HC_ADMIN_TOKEN).

    POST   /api/v1/admin/sessions                   {"user_id"} → {"token", "token_id", "expires_at"}
    GET    /api/v1/admin/users/{user_id}/sessions   → {"user_id", "sessions": [{"token_id", "created_at", "expires_at"}]}
    DELETE /api/v1/admin/users/{user_id}/sessions   → {"revoked": n}
    DELETE /api/v1/admin/sessions/{token_id}        → 204 (404: no live session has this id)
    DELETE /api/v1/admin/agents/{agent_id}          → 204 (404: no such agent, or revoked already)

`token_id` is the session's public name (never the token, never its hash): a revoked token is
refused (401 `invalid_token`) from the next request on, on every route that takes one. A revoked
agent's token is refused on every agent route, and the tickets it held go back to the queue.
Every revocation is a log line naming the session or agent by reference, never the token."""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response
from pydantic import BaseModel, Field

from accounts import service as accounts
from api.deps import SettingsDep, require_admin
from api.errors import ApiError

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])

UserId = Annotated[str, Path(min_length=1, max_length=128)]
TokenId = Annotated[str, Path(min_length=1, max_length=64, description="a session's token_id")]
AgentId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


_WHAT = {401: "No admin token (`unauthorized`).",
         403: "A wrong admin token (`forbidden`).",
         404: "No such session or agent (`not_found`).",
         413: "The body is over the size limit.",
         422: "Invalid input (`invalid_request`).",
         503: "Admin routes are off (no HC_ADMIN_TOKEN: `admin_disabled`), or the database is unreachable."}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorOut, "description": _WHAT[s]} for s in statuses}


class SessionCreate(BaseModel):
    user_id: str = Field(min_length=1, max_length=128)


class SessionPublic(BaseModel):
    token: str                 # shown once: only its hash is stored
    token_id: str              # public: names this session to list or revoke it
    expires_at: datetime


class SessionInfoPublic(BaseModel):
    token_id: str
    created_at: datetime
    expires_at: datetime


class UserSessionsPublic(BaseModel):
    user_id: str
    sessions: list[SessionInfoPublic]


class RevokedPublic(BaseModel):
    revoked: int


@router.post("/sessions", response_model=SessionPublic, responses=errors(401, 403, 413, 422, 503))
async def create_session(body: SessionCreate, settings: SettingsDep):
    """A session token for user_id; with it, /api/v1/chat reads that user's account and no other."""
    issued = await asyncio.to_thread(accounts.issue_session, body.user_id, ttl_s=settings.session_ttl_s)
    return SessionPublic(token=issued.token, token_id=issued.token_id, expires_at=issued.expires_at)


@router.delete("/sessions/{token_id}", status_code=204, response_class=Response,
               responses=errors(401, 403, 404, 422, 503))
async def revoke_session(token_id: TokenId):
    """Revoke one session: its token is refused (401 `invalid_token`) from the next request on."""
    if await asyncio.to_thread(accounts.revoke_session, token_id) is None:
        raise ApiError(404, "not_found", "no live session has this token_id")
    return Response(status_code=204)


@router.get("/users/{user_id}/sessions", response_model=UserSessionsPublic,
            responses=errors(401, 403, 422, 503))
async def list_user_sessions(user_id: UserId):
    """The user's live sessions, oldest first (never a token or its hash)."""
    infos = await asyncio.to_thread(accounts.user_sessions, user_id)
    return UserSessionsPublic(user_id=user_id, sessions=[
        SessionInfoPublic(token_id=i.token_id, created_at=i.created_at, expires_at=i.expires_at) for i in infos])


@router.delete("/users/{user_id}/sessions", response_model=RevokedPublic, responses=errors(401, 403, 422, 503))
async def revoke_user_sessions(user_id: UserId):
    """Revoke every session of the user (sign them out everywhere); `revoked`: how many were live."""
    return RevokedPublic(revoked=await asyncio.to_thread(accounts.revoke_user_sessions, user_id))


@router.delete("/agents/{agent_id}", status_code=204, response_class=Response,
               responses=errors(401, 403, 404, 422, 503))
async def revoke_agent(agent_id: AgentId):
    """Revoke the agent's token (refused from the next request on, 401); the tickets it held go
    back to the queue for another agent."""
    if not await asyncio.to_thread(accounts.revoke_agent, agent_id):
        raise ApiError(404, "not_found", "no such agent, or it is revoked already")
    return Response(status_code=204)
