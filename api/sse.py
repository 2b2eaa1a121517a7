"""Server-sent events (STYLE.md 14): a safe encoder and a response that races stream, ping and
disconnect.

    EventStream(events(), ping_s=settings.sse_ping_s)      # events(): async iterator of bytes
    encode_event(json_text, id="42")                        # b"id: 42\\ndata: {...}\\n\\n"

The encoder keeps the wire format intact whatever the text holds: data is split on every line
break SSE knows (CRLF, CR, LF) into one `data:` line each, so a message with newlines arrives
whole and cannot inject a field or end the event early; an id or event name that holds a line
break or NUL is refused (an id with NUL would be ignored by browsers, breaking Last-Event-ID).
UTF-8 throughout.

The response sends its headers at once (`Cache-Control: no-store`, `X-Accel-Buffering: no` so
nginx does not buffer the stream), then three tasks race: the event iterator, a ping comment
every `ping_s` (keeps proxies and idle-timeouts from closing the connection), and a listener for
the client's disconnect. The first to finish ends the others: the iterator ending (its
subscription dropped, the broker closed), the client leaving, or a failed send. A write never
interleaves with another (one lock). An error in the iterator after the headers are out is
logged by type and the stream ends cleanly: the client reconnects with Last-Event-ID.
"""
from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger("hc.api")

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
RETRY_MS = 3000


def _field(name: str, value: str) -> str:
    if _LINE_BREAK.search(value) or "\x00" in value:
        raise ValueError(f"an SSE {name} cannot hold a line break or NUL")
    return f"{name}: {value}\n"


def encode_event(data: str, *, id: str | None = None, event: str | None = None,
                 retry_ms: int | None = None) -> bytes:
    out = []
    if id is not None:
        out.append(_field("id", id))
    if event is not None:
        out.append(_field("event", event))
    if retry_ms is not None:
        out.append(f"retry: {int(retry_ms)}\n")
    out.extend(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    out.append("\n")
    return "".join(out).encode("utf-8")


def encode_comment(text: str = "") -> bytes:
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode("utf-8") + b"\n"


def encode_retry(retry_ms: int = RETRY_MS) -> bytes:
    return f"retry: {int(retry_ms)}\n\n".encode()


class EventStream(Response):
    media_type = "text/event-stream"
    charset = "utf-8"

    def __init__(self, events: AsyncIterator[bytes], *, ping_s: float, status_code: int = 200,
                 headers: dict[str, str] | None = None):
        self.events = events
        self.ping_s = ping_s
        self.status_code = status_code
        self.background = None
        self.init_headers({**HEADERS, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lock = anyio.Lock()
        closed = False

        async def write(chunk: bytes) -> None:
            async with lock:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async with anyio.create_task_group() as tg:
            async def first_done(fn) -> None:
                nonlocal closed
                try:
                    await fn()
                except OSError:
                    closed = True              # the client is gone: nothing more to send
                except anyio.get_cancelled_exc_class():
                    raise
                except Exception as exc:
                    log.warning("sse_stream_failed", extra={"fields": {"error": type(exc).__name__}})
                tg.cancel_scope.cancel()

            async def stream() -> None:
                async for chunk in self.events:
                    await write(chunk)

            async def ping() -> None:
                while True:
                    await anyio.sleep(self.ping_s)
                    await write(b": ping\n\n")

            async def disconnect() -> None:
                nonlocal closed
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        closed = True
                        return

            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            tg.start_soon(first_done, stream)
            tg.start_soon(first_done, ping)
            tg.start_soon(first_done, disconnect)
        aclose = getattr(self.events, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await aclose()
                except Exception:
                    pass
        if not closed:
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass


def app_broker(app):
    """The broker this app's streams subscribe through (app.state.broker, set at start-up).

    An app started without its lifespan (a bare TestClient) gets the process's broker, or a
    memory one that becomes the process's, so publish() and the streams still meet."""
    from delivery import MemoryBroker, current_broker, use_broker

    broker = getattr(app.state, "broker", None)
    if broker is None:
        broker = current_broker()
        if broker is None:
            broker = MemoryBroker()
            use_broker(broker)
        app.state.broker = broker
    return broker


def recheck_s(ping_s: float) -> float:
    """How long a connected stream trusts the broker before re-reading its log anyway (a lost
    notification delays a message by at most this much)."""
    return max(4 * ping_s, 1.0)
