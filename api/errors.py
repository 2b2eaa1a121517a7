"""Every error leaves as {"error": {"code", "message"}}; bad input is a 4xx, never a 500."""
from __future__ import annotations

import logging
import traceback

from fastapi import FastAPI, Request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


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


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        code, message = _validation_message(exc)
        return JSONResponse(error_body(code, message), status_code=400 if code == "invalid_json" else 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}
        return JSONResponse(error_body(codes.get(exc.status_code, "http_error"), str(exc.detail)),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

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
