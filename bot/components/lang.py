"""The reply language a client asks for, normalised to the three the bot answers in.

Plain Python (no Rasa import) so the app's tests can check it without the Rasa venv.
"""
from __future__ import annotations

from typing import Any

DEFAULT_LANG = "zh"
SUPPORTED_LANGS = ("zh", "zh-hant", "en")
# Regional tags some clients send for traditional Chinese.
HANT_ALIASES = {"zh-tw", "zh-hk", "zh-mo"}


def normalise_lang(value: Any) -> str:
    if not isinstance(value, str):
        return DEFAULT_LANG
    tag = value.strip().lower().replace("_", "-")
    if tag in SUPPORTED_LANGS:
        return tag
    if tag in HANT_ALIASES or tag.startswith("zh-hant"):
        return "zh-hant"
    if tag.startswith("en"):
        return "en"
    return DEFAULT_LANG


def lang_entity(metadata: Any) -> dict | None:
    """The `lang` entity for a message whose metadata names a language; None when it names none
    (the slot then keeps the conversation's language, e.g. for a button press)."""
    if not isinstance(metadata, dict) or "lang" not in metadata:
        return None
    return {"entity": "lang", "value": normalise_lang(metadata.get("lang")), "start": 0, "end": 0,
            "confidence_entity": 1.0, "extractor": "LangFromMetadata"}
