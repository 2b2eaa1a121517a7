"""Dependencies the routes declare: settings, the Rasa client, the action executor, auth checks."""
from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from api.errors import ApiError
from assistant.rasa_client import RasaClient
from core.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_rasa(request: Request) -> RasaClient:
    return request.app.state.rasa


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RasaDep = Annotated[RasaClient, Depends(get_rasa)]


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def same_secret(given: str | None, expected: str | None) -> bool:
    return bool(given and expected) and hmac.compare_digest(given.encode(), expected.encode())


def require_internal(request: Request) -> None:
    """Only the Rasa server (holding the shared secret) may call internal routes."""
    settings: Settings = request.app.state.settings
    given = request.query_params.get("token") or request.headers.get("x-hc-internal-token")
    if not same_secret(given, settings.internal_token):
        raise ApiError(403, "forbidden", "internal route")
