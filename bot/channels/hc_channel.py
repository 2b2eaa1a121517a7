"""The only way into the Rasa server: an internal webhook the app calls per user message.

It answers synchronously with the bot's messages *and* the intent NLU chose, which the
REST channel cannot give, and it refuses callers without the shared internal token, so a
Rasa reachable on localhost still only talks to the app.
"""
from __future__ import annotations

import hmac
import logging
import os
from typing import Any, Awaitable, Callable, Dict, Optional, Text

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from rasa.core.channels.channel import (
    CollectingOutputChannel,
    InputChannel,
    UserMessage,
)

from channels import rasa_patches

rasa_patches.apply()
logger = logging.getLogger(__name__)

TOKEN_ENV = "HC_INTERNAL_TOKEN"
TOKEN_HEADER = "X-HC-Internal-Token"


def _error(status: int, code: str, message: str) -> HTTPResponse:
    return response.json({"error": {"code": code, "message": message}}, status=status)


class HCInput(InputChannel):
    @classmethod
    def name(cls) -> Text:
        return "hc"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> "HCInput":
        token = os.environ.get(TOKEN_ENV, "")
        if not token:
            # No silent default: without a secret every caller would be trusted.
            raise ValueError(f"{TOKEN_ENV} must be set for the hc channel")
        return cls(token)

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def _authorised(self, request: Request) -> bool:
        given = (request.headers.get(TOKEN_HEADER) or "").encode()
        return hmac.compare_digest(given, self._token)

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> Blueprint:
        hc_webhook = Blueprint("hc_webhook", __name__)

        @hc_webhook.listener("after_server_stop")
        async def close_action_sessions(_app: Any, _loop: Any) -> None:
            await rasa_patches.close_sessions()

        @hc_webhook.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @hc_webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            if not self._authorised(request):
                return _error(403, "forbidden", "bad or missing internal token")
            try:
                body = request.json
            except Exception:  # sanic raises its own error type on malformed JSON
                body = None
            if not isinstance(body, dict):
                return _error(400, "bad_request", "body must be a JSON object")
            sender, text = body.get("sender"), body.get("message")
            metadata = body.get("metadata") or {}
            if not isinstance(sender, str) or not sender or not isinstance(text, str):
                return _error(400, "bad_request", "sender and message must be strings")
            if not isinstance(metadata, dict):
                return _error(400, "bad_request", "metadata must be an object")

            collector = CollectingOutputChannel()
            rasa_patches.last_parse.set(None)
            rasa_patches.last_lang.set(None)
            try:
                await on_new_message(
                    UserMessage(
                        text,
                        collector,
                        sender,
                        input_channel=self.name(),
                        metadata=metadata,
                    )
                )
            except Exception:
                # Don't hand back a half-collected turn as if it were a whole reply.
                logger.exception("hc channel: processing the message failed")
                return _error(500, "bot_error", "the bot failed to process the message")
            return response.json(
                {
                    "messages": collector.messages,
                    "intent": _intent(rasa_patches.last_parse.get()),
                    "lang": rasa_patches.last_lang.get(),
                }
            )

        return hc_webhook


def _intent(parsed: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    intent = (parsed or {}).get("intent") or {}
    return {
        "name": intent.get("name"),
        "confidence": float(intent.get("confidence") or 0.0),
    }
