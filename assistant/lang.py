"""The one place replies are put into the user's script: Traditional users get converted text."""
from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _s2t():
    import opencc  # opencc-python-reimplemented: maintained tables, loaded once on first use

    return opencc.OpenCC("s2t")


@lru_cache(maxsize=4096)
def to_traditional(text: str) -> str:
    # Cached: the chat service converts every message once to see its script, and the replies
    # of Traditional conversations are a few fixed texts and KB answers.
    return _s2t().convert(text)


def localise(messages: list[dict[str, Any]], lang: str) -> list[dict[str, Any]]:
    if lang != "zh-hant":
        return messages
    return [{**m, "text": to_traditional(m["text"]),
             "buttons": [{**b, "title": to_traditional(b["title"])} for b in m.get("buttons", [])]}
            for m in messages]
