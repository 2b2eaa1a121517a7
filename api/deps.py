"""Dependencies the routes declare: settings, the Rasa client, the action executor, auth checks.

All are coroutines: FastAPI runs a plain `def` dependency in its thread pool, a hop that cost a
chat turn more than the dependency itself. Only a database look-up (a bearer token's session)
goes to a worker thread, and only when there is a token to look up."""
from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from accounts import service as accounts
from accounts.sessions import AgentIdentity, SessionInfo
from api.errors import ApiError
from assistant.rasa_client import RasaClient
from core.settings import INTERNAL_TOKEN_HEADER, Settings


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_rasa(request: Request) -> RasaClient:
    return request.app.state.rasa


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RasaDep = Annotated[RasaClient, Depends(get_rasa)]


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def same_secret(given: str | None, expected: str | None) -> bool:
    return bool(given and expected) and hmac.compare_digest(given.encode(), expected.encode())


async def require_internal(request: Request) -> None:
    """Only the Rasa server (holding the shared secret, in a header) may call internal routes."""
    settings: Settings = request.app.state.settings
    if not same_secret(request.headers.get(INTERNAL_TOKEN_HEADER), settings.internal_token):
        raise ApiError(403, "forbidden", "internal route")


async def require_admin(request: Request) -> None:
    """Admin routes: `Authorization: Bearer $HC_ADMIN_TOKEN`, compared in constant time.

    401 without a bearer token, 403 with a wrong one, 503 when no admin token is configured
    (admin routes are off rather than open)."""
    settings: Settings = request.app.state.settings
    if not settings.admin_token:
        raise ApiError(503, "admin_disabled", "admin disabled: HC_ADMIN_TOKEN is not set")
    given = bearer(request)
    if given is None:
        raise StarletteHTTPException(401, "admin token required (Authorization: Bearer ...)",
                                     headers={"WWW-Authenticate": "Bearer"})
    if not same_secret(given, settings.admin_token):
        raise ApiError(403, "forbidden", "wrong admin token")


async def current_session(request: Request) -> SessionInfo | None:
    """The bearer session token's live session (its token_id and user), None without a token.

    An unknown, expired or revoked token is a 401 (the client must sign in again), not anonymous."""
    token = bearer(request)
    if token is None:
        return None
    info = await run_in_threadpool(accounts.session_for_token, token)
    if info is None:
        raise ApiError(401, "invalid_token", "unknown or expired session token")
    return info


async def current_user(request: Request) -> str | None:
    """The signed-in user: the user_id of the bearer session token, None without a token.

    The only way a request names an account: never a user_id from the body or the query.
    An unknown or expired token is a 401 (the client must sign in again), not anonymous."""
    info = await current_session(request)
    # A live token that signs in nobody (accounts.sessions.ANONYMOUS): anonymous, not refused.
    return (info.user_id or None) if info is not None else None


async def require_agent(request: Request) -> AgentIdentity:
    """Agent routes: `Authorization: Bearer <agent token>`. 401 without one, and 401 for a token
    that is not an agent's (a user session token, an expired or made-up one): the client must
    sign in as an agent.

    Returns the agent: its `actor` (not its name) goes into the audit and the ticket history."""
    token = bearer(request)
    if token is None:
        raise StarletteHTTPException(401, "agent token required (Authorization: Bearer ...)",
                                     headers={"WWW-Authenticate": "Bearer"})
    agent = await run_in_threadpool(accounts.agent_for_token, token)
    if agent is None:
        raise ApiError(401, "invalid_token", "not an agent token")
    return agent


CurrentUser = Annotated[str | None, Depends(current_user)]
CurrentSession = Annotated[SessionInfo | None, Depends(current_session)]
CurrentAgent = Annotated[AgentIdentity, Depends(require_agent)]
