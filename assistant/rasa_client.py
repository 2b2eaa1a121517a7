"""The app's only way to the Rasa server(s): the internal `hc` channel on loopback, with a shared secret.

With several servers (HC_RASA_URL="http://a,http://b") each conversation is pinned to one by a
stable hash of its id: its turns queue behind Rasa's lock store in one process, never race in
two. A server that refuses the connection (dead, restarting) hands the turn to the next one: the
request never reached it, and the tracker store is shared, so the conversation goes on there.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from core.settings import INTERNAL_TOKEN_HEADER

# Below Rasa's (Sanic's) own 5 s keep-alive, so a pooled connection is never one the server is
# closing just as a turn is sent on it (a turn is never retried: it may have been processed).
KEEP_ALIVE_S = 3.0


class BotUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class BotTurn:
    messages: list[dict[str, Any]]   # Rasa's collected output: text/buttons/custom
    intent: str | None
    confidence: float | None
    lang: str | None = None          # the conversation's reply language after this turn


def server_urls(base_urls: str) -> list[str]:
    urls = [u.strip().rstrip("/") for u in base_urls.split(",") if u.strip()]
    if not urls:
        raise ValueError("no Rasa server URL")
    return urls


def pinned(sender: str, count: int) -> int:
    """The server index of a conversation: a keyed-nothing blake2b of its id, so the same in
    every app instance and process (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(sender.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def _unavailable(exc: BaseException) -> BotUnavailable:
    return BotUnavailable(f"Rasa did not answer: {exc.__class__.__name__}")


class RasaClient:
    """aiohttp, not httpx: on this path httpx cost ~1.2 ms of CPU per turn, aiohttp ~0.15 ms.
    The session belongs to the event loop it was made in; a new loop gets a new one."""

    def __init__(self, base_url: str, internal_token: str, timeout_s: float):
        self._bases = server_urls(base_url)
        self._headers = {INTERNAL_TOKEN_HEADER: internal_token, "Content-Type": "application/json"}
        self._timeout = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=KEEP_ALIVE_S)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                  timeout=aiohttp.ClientTimeout(total=self._timeout))
            self._loop = loop
        return self._session

    async def send(self, sender: str, text: str, metadata: dict[str, Any]) -> BotTurn:
        first = pinned(sender, len(self._bases))
        order = self._bases[first:] + self._bases[:first]
        data = json.dumps({"sender": sender, "message": text, "metadata": metadata},
                          ensure_ascii=False).encode("utf-8")
        client = self._client()
        for i, base in enumerate(order):
            try:
                async with client.post(base + "/webhooks/hc/webhook", headers=self._headers, data=data) as resp:
                    resp.raise_for_status()
                    body = json.loads(await resp.read())
                break
            except aiohttp.ClientConnectorError as exc:
                if i + 1 < len(order):
                    continue                    # never reached that server: the next one takes it
                raise _unavailable(exc) from exc
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                raise _unavailable(exc) from exc
        if not isinstance(body, dict):
            raise BotUnavailable("Rasa did not answer: not a JSON object")
        intent = body.get("intent") if isinstance(body.get("intent"), dict) else {}
        return BotTurn(body.get("messages") or [], intent.get("name"), intent.get("confidence"),
                       body.get("lang"))

    async def ready(self) -> bool:
        """Every server answers its health route (a stack with one down is not fully up)."""
        client = self._client()
        for base in self._bases:
            try:
                async with client.get(base + "/webhooks/hc/", timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
                    if resp.status != 200:
                        return False
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return False
        return True

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
