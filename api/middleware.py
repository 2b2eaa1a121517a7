"""Request id + one structured access-log line per request (paths only: no query text, no bodies),
the security headers every response carries, and the body-size limit."""
from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logs import log_event, request_id_var

log = logging.getLogger("hc.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContext:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _SAFE_ID.match(given) else uuid.uuid4().hex[:16]
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log_event(log, "request", method=scope.get("method"), path=route_template(scope),
                      status=status["code"], ms=round((time.perf_counter() - started) * 1000, 1))
            request_id_var.reset(token)


def route_template(scope: Scope) -> str:
    """The matched route's template (/api/v1/admin/accounts/{user_id}), never the ids in the
    path: a log line must not name a user, a ticket or a channel user."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template:
        return template
    path = scope.get("path") or ""
    for name, value in (scope.get("path_params") or {}).items():
        if value not in (None, ""):
            path = path.replace(str(value), "{" + name + "}")
    return path[:100]


NO_STORE_PREFIXES = ("/api/", "/channels/")
_BASE_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))


class SecurityHeaders:
    """`X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer` on every response (the
    pages set their own CSP and frame rules: kept as they are), and `Cache-Control: no-store` on
    every API answer: chat turns, histories, tickets, accounts, tokens and even a FAQ search
    (it echoes the question) may carry personal data, and no browser or proxy cache may keep them.
    A response that chose its own Cache-Control (the pages, the event streams) keeps it."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        no_store = (scope.get("path") or "").startswith(NO_STORE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in _BASE_HEADERS if k not in present]
                if no_store and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """413 for a body over `max_bytes`, before any route reads it.

    A declared Content-Length is checked at once (the server's framing holds the body to it);
    a chunked body is read here up to the limit and handed on only when it fits."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _refuse(send, 400, "bad_request", "Content-Length is not a number")
            elif int(declared) > self.max_bytes:
                await _refuse(send, 413, "too_large", f"the body is over {self.max_bytes} bytes")
            else:
                await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":      # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await _refuse(send, 413, "too_large", f"the body is over {self.max_bytes} bytes")
                return
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
