"""What the ticket service itself says to a user (the resolution notice and the satisfaction question).

Simplified Chinese and English only: a conversation in Traditional Chinese gets the simplified
text, which the app converts at the edge like every other reply (assistant.lang)."""
from __future__ import annotations

import json

# score → button title; the payload is /rate_ticket{"ticket_id":"<id>","score":<score>}
RATING_TITLES: dict[str, dict[int, str]] = {
    "zh": {3: "满意", 2: "一般", 1: "不满意"},
    "en": {3: "Satisfied", 2: "OK", 1: "Not satisfied"},
}

TEXTS: dict[str, dict[str, str]] = {
    "claimed": {
        "zh": "人工客服已接入(工单{ticket_id}),请直接在这里说明您的问题。",
        "en": "An agent has joined (ticket {ticket_id}). Please describe your problem here.",
    },
    "resolved": {
        "zh": "您的工单{ticket_id}已处理完毕:{resolution}",
        "en": "Your ticket {ticket_id} has been resolved: {resolution}",
    },
    "rating_question": {
        "zh": "您对本次人工服务满意吗?",
        "en": "How satisfied are you with the help you got?",
    },
}


def lang_key(lang: str | None) -> str:
    return "en" if lang == "en" else "zh"


def text(key: str, lang: str | None, **values: str) -> str:
    return TEXTS[key][lang_key(lang)].format(**values)


def rating_payload(ticket_id: str, score: int) -> str:
    entities = {"ticket_id": ticket_id, "score": score}
    return "/rate_ticket" + json.dumps(entities, ensure_ascii=False, separators=(",", ":"))


def rating_buttons(ticket_id: str, lang: str | None) -> list[dict]:
    """满意 / 一般 / 不满意 (3 / 2 / 1), best first."""
    titles = RATING_TITLES[lang_key(lang)]
    return [{"title": titles[score], "payload": rating_payload(ticket_id, score)} for score in (3, 2, 1)]


def resolution_message(ticket_id: str, resolution: str, lang: str | None) -> str:
    """The resolution, then the satisfaction question (the buttons go with this message)."""
    return text("resolved", lang, ticket_id=ticket_id, resolution=resolution) + "\n\n" + text("rating_question", lang)
