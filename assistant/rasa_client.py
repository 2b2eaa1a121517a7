"""The app's only way to the Rasa server: the internal `hc` channel on loopback, with a shared secret."""
from __future__ import annotations

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


class RasaClient:
    def __init__(self, base_url: str, internal_token: str, timeout_s: float):
        self._url = base_url.rstrip("/") + "/webhooks/hc/webhook"
        self._health = base_url.rstrip("/") + "/webhooks/hc/"
        self._headers = {INTERNAL_TOKEN_HEADER: internal_token}
        self._client = httpx.AsyncClient(timeout=timeout_s, limits=httpx.Limits(max_connections=64))

    async def send(self, sender: str, text: str, metadata: dict[str, Any]) -> BotTurn:
        try:
            resp = await self._client.post(self._url, headers=self._headers,
                                           json={"sender": sender, "message": text, "metadata": metadata})
            resp.raise_for_status()
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise BotUnavailable(f"Rasa did not answer: {exc.__class__.__name__}") from exc
        intent = body.get("intent") or {}
        return BotTurn(body.get("messages") or [], intent.get("name"), intent.get("confidence"),
                       body.get("lang"))

    async def ready(self) -> bool:
        try:
            resp = await self._client.get(self._health, timeout=2.0)
            return resp.status_code == 200
        except httpx.HTTPError:
            return False

    async def close(self) -> None:
        await self._client.aclose()
