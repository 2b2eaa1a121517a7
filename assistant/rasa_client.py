"""The app's only way to the Rasa server(s): the internal `hc` channel on loopback, with a shared secret.

With several servers (HC_RASA_URL="http://a,http://b") each conversation is pinned to one by a
stable hash of its id: its turns queue behind Rasa's lock store in one process, never race in
two. A server that refuses the connection (dead, restarting) hands the turn to the next one: the
request never reached it, and the tracker store is shared, so the conversation goes on there.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import httpx

from core.settings import INTERNAL_TOKEN_HEADER


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


class RasaClient:
    def __init__(self, base_url: str, internal_token: str, timeout_s: float):
        self._bases = server_urls(base_url)
        self._headers = {INTERNAL_TOKEN_HEADER: internal_token}
        self._client = httpx.AsyncClient(timeout=timeout_s, limits=httpx.Limits(max_connections=64))

    async def send(self, sender: str, text: str, metadata: dict[str, Any]) -> BotTurn:
        first = pinned(sender, len(self._bases))
        order = self._bases[first:] + self._bases[:first]
        payload = {"sender": sender, "message": text, "metadata": metadata}
        for i, base in enumerate(order):
            try:
                resp = await self._client.post(base + "/webhooks/hc/webhook", headers=self._headers, json=payload)
                resp.raise_for_status()
                body = resp.json()
                break
            except httpx.ConnectError as exc:
                if i + 1 < len(order):
                    continue                    # never reached that server: the next one takes it
                raise BotUnavailable(f"Rasa did not answer: {exc.__class__.__name__}") from exc
            except (httpx.HTTPError, ValueError) as exc:
                raise BotUnavailable(f"Rasa did not answer: {exc.__class__.__name__}") from exc
        intent = body.get("intent") or {}
        return BotTurn(body.get("messages") or [], intent.get("name"), intent.get("confidence"),
                       body.get("lang"))

    async def ready(self) -> bool:
        """Every server answers its health route (a stack with one down is not fully up)."""
        for base in self._bases:
            try:
                resp = await self._client.get(base + "/webhooks/hc/", timeout=2.0)
            except httpx.HTTPError:
                return False
            if resp.status_code != 200:
                return False
        return True

    async def close(self) -> None:
        await self._client.aclose()
