"""Rate limits: per client address on every /api route, per conversation on POST /api/v1/chat,
and per source address on the platforms' push routes (/channels/...), with the `limits` library.

Moving windows: "120/minute" means at most 120 requests in any 60 seconds (a burst of 120 is
allowed, the 121st waits for the oldest to leave the window). A refused request is not counted,
so a client that keeps hammering is let in again as soon as its window has room. The answer is
429 {"error": {"code": "rate_limited", ...}} with `Retry-After` (whole seconds, at least 1).

Counters live in Redis when HC_REDIS_URL is set (every instance shares them), else in this
process's memory. Redis unreachable: every request is allowed (the limiter is a guard, not a
dependency of the service), the outage is logged once and Redis tried again every few seconds.

The client address is the TCP peer, or, when the peer is one of HC_TRUSTED_PROXIES (nginx in
front of the app), the nearest address in X-Forwarded-For that is not a trusted proxy: a client
that talks to the app directly cannot choose its own bucket with a made-up header.

Keys are hashed (sha256): neither an address nor a client-chosen conversation id is written to
Redis as it came."""
from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from starlette.types import ASGIApp, Receive, Scope, Send

from core.logs import log_event
from core.settings import Settings

log = logging.getLogger("hc.ratelimit")

RETRY_STORAGE_S = 5.0          # after a storage failure, requests pass unchecked this long
STORAGE_TIMEOUT_S = 0.5        # one Redis call; past it the request is let through
LIMITED_PREFIX = "/api/"       # every API route; the pages, /healthz and /openapi.json are not limited
CHANNEL_PREFIXES = ("/channels/wechat", "/channels/alipay")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_limits(spec: str, name: str) -> list[RateLimitItem]:
    """"120/minute" or "120/minute;10/second": ValueError naming the setting when it does not parse."""
    try:
        items = parse_many(spec)
    except ValueError as exc:
        raise ValueError(f"{name}: not a rate limit ({spec!r}): {exc}") from None
    if not items:
        raise ValueError(f"{name}: empty rate limit")
    return items


def parse_networks(values: list[str]) -> list[Network]:
    return [ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip()]


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from a header hop: "1.2.3.4", "1.2.3.4:5678", "[::1]:80", "::1"."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


def _trusted(addr, networks: list[Network]) -> bool:
    return addr is not None and any(addr in net for net in networks)


def client_address(scope: Scope, trusted: list[Network]) -> str:
    """The client's address: the peer, or what a trusted proxy in front says it was."""
    peer_text = (scope.get("client") or ("",))[0] or ""
    peer = _address(peer_text)
    if not _trusted(peer, trusted):
        return str(peer) if peer is not None else (peer_text[:64] or "unknown")
    hops: list[str] = []
    for name, value in scope.get("headers") or []:
        if name == b"x-forwarded-for":
            hops += [h for h in value.decode("latin-1").split(",") if h.strip()]
    # Each proxy appends the address it saw: from the right, the first hop that is not one of
    # ours is the client (anything left of it is whatever the client chose to send).
    for hop in reversed(hops):
        addr = _address(hop)
        if addr is None:
            return hop.strip()[:64]
        if not _trusted(addr, trusted):
            return str(addr)
    if hops:                           # a chain of our own proxies only: the first one
        addr = _address(hops[0])
        return str(addr) if addr is not None else hops[0].strip()[:64]
    return str(peer)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class Refusal:
    retry_after: int          # seconds, >= 1
    limit: str                # which limit ("120 per 1 minute"), for the message


class RateLimiter:
    """The app's limiter (one per app: app.state.ratelimiter), storage opened on first use."""

    def __init__(self, settings: Settings):
        self.enabled = settings.rate_limit_enabled
        self.per_address = parse_limits(settings.rate_limit, "HC_RATE_LIMIT")
        self.per_conversation = parse_limits(settings.rate_limit_conversation, "HC_RATE_LIMIT_CONVERSATION")
        self.per_channel = parse_limits(settings.rate_limit_channel, "HC_RATE_LIMIT_CHANNEL")
        self.trusted = parse_networks(settings.trusted_proxies)
        self.prefix = settings.rate_limit_key_prefix or "hc-rl"
        self.redis_url = settings.redis_url
        self._strategy = None
        self._storage = None
        self._down_until = 0.0
        self._down = False

    # --- storage ------------------------------------------------------------------------------
    @property
    def storage_kind(self) -> str:
        return "redis" if self.redis_url else "memory"

    def _open(self):
        from limits.aio.storage import MemoryStorage, RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter

        if self.redis_url:
            uri = self.redis_url if self.redis_url.startswith("async+") else "async+" + self.redis_url
            self._storage = RedisStorage(uri, implementation="redispy", key_prefix=self.prefix,
                                         wrap_exceptions=True, socket_timeout=STORAGE_TIMEOUT_S,
                                         socket_connect_timeout=STORAGE_TIMEOUT_S)
        else:
            self._storage = MemoryStorage()
        self._strategy = MovingWindowRateLimiter(self._storage)
        return self._strategy

    def _storage_failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY_STORAGE_S
        if not self._down:
            self._down = True
            # The class only: a connection error can quote the URL (and its password).
            log.warning("rate limit storage unavailable: requests are not limited until it is back",
                        extra={"fields": {"event": "rate_limit_storage_down", "storage": self.storage_kind,
                                          "error": type(exc).__name__}})

    def _storage_ok(self) -> None:
        if self._down:
            self._down = False
            log_event(log, "rate_limit_storage_recovered", storage=self.storage_kind)

    async def close(self) -> None:
        bridge = getattr(self._storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            try:
                await client.aclose()
            except Exception:  # noqa: BLE001 - closing a connection that is gone
                pass

    # --- checks -------------------------------------------------------------------------------
    async def hit(self, items: list[RateLimitItem], *key: str) -> Refusal | None:
        """Count one request against each limit of `items` for `key`: None when allowed."""
        if not self.enabled or time.monotonic() < self._down_until:
            return None
        strategy = self._strategy or self._open()
        ident = (self.prefix, *key)
        try:
            for item in items:
                if not await strategy.hit(item, *ident):
                    stats = await strategy.get_window_stats(item, *ident)
                    self._storage_ok()
                    wait = math.ceil(stats.reset_time - time.time())
                    return Refusal(max(1, min(wait, item.get_expiry())), str(item))
        except Exception as exc:  # noqa: BLE001 - any storage failure: allow, never a 500
            self._storage_failed(exc)
            return None
        self._storage_ok()
        return None

    async def check_address(self, scope: Scope) -> Refusal | None:
        return await self.hit(self.per_address, "addr", _digest(client_address(scope, self.trusted)))

    async def check_channel(self, scope: Scope, channel: str) -> Refusal | None:
        return await self.hit(self.per_channel, "chan", channel, _digest(client_address(scope, self.trusted)))

    async def check_conversation(self, conversation_id: str) -> Refusal | None:
        return await self.hit(self.per_conversation, "conv", _digest(conversation_id))


def refusal_body(refusal: Refusal) -> dict:
    return {"error": {"code": "rate_limited",
                      "message": f"Too many requests ({refusal.limit}); retry in {refusal.retry_after} s."}}


class RateLimit:
    """ASGI middleware: the per-address limit on /api/..., the channel limit on the push routes.

    Runs before the body is read (a refused flood costs no parsing). The per-conversation limit
    needs the body's `sender`: POST /api/v1/chat checks it itself (limit_conversation)."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter):
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limiter.enabled or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path") or ""
        refusal = None
        if path.startswith(LIMITED_PREFIX):
            refusal = await self.limiter.check_address(scope)
        else:
            for prefix in CHANNEL_PREFIXES:
                if path == prefix or path.startswith(prefix + "/"):
                    refusal = await self.limiter.check_channel(scope, prefix.rsplit("/", 1)[-1])
                    break
        if refusal is None:
            await self.app(scope, receive, send)
            return
        await send_refusal(send, refusal)


async def send_refusal(send: Send, refusal: Refusal) -> None:
    body = json.dumps(refusal_body(refusal)).encode()
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(refusal.retry_after).encode())]})
    await send({"type": "http.response.body", "body": body})
