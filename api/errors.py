"""Every error leaves as {"error": {"code", "message"}}; bad input is a 4xx, never a 500."""
from __future__ import annotations

import logging
import traceback

from fastapi import FastAPI, Request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("hc.api")
# Database errors that mean "not reachable right now" (connection refused or lost, locked, pool
# exhausted): the client gets a 503 to retry, not a 500.
UNAVAILABLE = (OperationalError, InterfaceError)


def error_kind(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return type(exc).__name__ + (f"({type(orig).__name__})" if orig is not None else "")


def error_where(exc: BaseException) -> str:
    """The traceback's frames (files, lines, code) without the exception's message, which can
    quote the values being handled: enough to find the bug."""
    return "".join(traceback.format_tb(exc.__traceback__))[-4000:]


class ErrorDetail(BaseModel):
    """What went wrong: a stable `code` to branch on and a message for people. Some errors add
    fields (`line` for a malformed KB, `errors` for an invalid account document)."""
    model_config = ConfigDict(extra="allow", title="ErrorDetail")

    code: str = Field(description="machine-readable: not_found, rate_limited, invalid_request, ...")
    message: str = Field(description="human-readable; never quotes a secret or personal data")


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer of the API: {"error": {"code", "message"}}."""
    model_config = ConfigDict(title="ErrorResponse")

    error: ErrorDetail


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def _validation_message(exc: RequestValidationError) -> tuple[str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return "invalid_json", "The request body is not valid JSON."
    parts = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {e.get('msg', 'invalid')}")
    return "invalid_request", "; ".join(parts)


def allowed_methods(request: Request) -> list[str]:
    from fastapi import routing
    from starlette.routing import Match

    methods: set[str] = set()
    for context in routing.iter_route_contexts(request.app.routes):
        try:
            match, _ = context.matches(request.scope)
        except Exception:  # noqa: BLE001 - a route that cannot say: not this one
            continue
        if match != Match.NONE:
            methods |= set(getattr(context, "methods", None) or ())
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        code, message = _validation_message(exc)
        return JSONResponse(error_body(code, message), status_code=400 if code == "invalid_json" else 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names the methods of the first route that matched the path only; a
            # path served by several routes (GET and POST apart) allows all of theirs.
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        codes = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 413: "too_large", 429: "rate_limited"}
        return JSONResponse(error_body(codes.get(exc.status_code, "http_error"), str(exc.detail)),
                            status_code=exc.status_code, headers=headers)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(SQLAlchemyTimeout)
    async def _store_down(_: Request, exc: Exception):
        if isinstance(exc, DBAPIError) and not isinstance(exc, UNAVAILABLE):
            return await _unexpected(_, exc)
        # The class names only: a driver's message can quote the statement's values.
        log.error("database unavailable", extra={"fields": {"error": error_kind(exc)}})
        return JSONResponse(error_body("store_unavailable", "The service is busy; please try again shortly."),
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        log.error("unhandled error", extra={"fields": {"error": error_kind(exc), "where": error_where(exc)}})
        return JSONResponse(error_body("internal_error", "Something went wrong on our side."), status_code=500)
