"""Stream tickets: what a browser's EventSource (which cannot send Authorization) shows instead.

    ticket = issue(settings, {"k": "chat", "c": conversation_id, "s": sender})    # 60 s
    claims = verify(settings, ticket, kind="chat")                                 # or TicketInvalid

A ticket is the claims sealed with AES-256-GCM (authenticated encryption: signed and opaque, so
a URL in a proxy's log shows neither the conversation id nor the agent) under a key derived from
the data key, HMAC-SHA256(HC_DATA_KEY, "hc-stream-ticket/v1"): a key of its own (a ticket can
never be confused with a sealed account document), and every instance that shares HC_DATA_KEY,
which several instances must anyway (README), accepts every other's tickets without a database
row or a round trip. The claims carry their kind (chat | agent), an expiry and, for a chat ticket issued to a
session, its public token_id ("t"): the route refuses the ticket once that session is revoked,
and the open stream re-checks the session (or the agent) on every wake. The expiry is checked
when a stream connects, not afterwards (an open stream outlives its ticket; a reconnect needs a
fresh one once it expired). Not single-use: EventSource reconnects by itself with the same URL.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.sealing import data_key
from core.settings import Settings

TTL_S = 60
_LABEL = b"hc-stream-ticket/v1"
_AAD = b"hc-stream-ticket"
MAX_TICKET_CHARS = 2048


class TicketInvalid(ValueError):
    """Not a ticket of ours, altered, of another kind, or expired."""


def _key(settings: Settings) -> bytes:
    return hmac.new(data_key(settings), _LABEL, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(settings: Settings, claims: dict[str, Any], *, ttl_s: int = TTL_S) -> str:
    body = {**claims, "e": int(time.time()) + int(ttl_s)}
    nonce = secrets.token_bytes(12)
    plain = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return _b64(nonce + AESGCM(_key(settings)).encrypt(nonce, plain, _AAD))


def verify(settings: Settings, ticket: str, *, kind: str) -> dict[str, Any]:
    if not ticket or len(ticket) > MAX_TICKET_CHARS:
        raise TicketInvalid("malformed")
    try:
        raw = _unb64(ticket)
        plain = AESGCM(_key(settings)).decrypt(raw[:12], raw[12:], _AAD)
        claims = json.loads(plain)
    except (ValueError, InvalidTag, TypeError):
        raise TicketInvalid("malformed") from None
    if not isinstance(claims, dict) or claims.get("k") != kind:
        raise TicketInvalid("wrong kind")
    if not isinstance(claims.get("e"), int) or claims["e"] < time.time():
        raise TicketInvalid("expired")
    return claims
