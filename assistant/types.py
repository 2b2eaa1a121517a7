"""What a service hands back to its callers (Rasa actions, API routes, channels)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Button:
    title: str
    payload: str


@dataclass(frozen=True)
class Message:
    text: str
    buttons: tuple[Button, ...] = ()


@dataclass(frozen=True)
class Reply:
    messages: tuple[Message, ...]
    # Merged into the API's `meta` (faq_id, diagnosis, ticket_id, handoff, kb_version, decision).
    meta: dict[str, Any] = field(default_factory=dict)
