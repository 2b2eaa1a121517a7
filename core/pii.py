"""Masking of personal data (ID numbers, phone numbers, names) before text is logged, stored or shown."""
from __future__ import annotations

import hashlib
import re

# 18-digit resident IDs (last char may be X; also written 6-8-4 with spaces or hyphens, and after
# letters such as "ID"), the old 15-digit ones, passports / HK-Macau / Taiwan permits, and mobile
# numbers however people write them (+86 138 1234 5678, 138-1234-5678, 0086 13812345678). The
# hotline (0591-62623959) and other landlines match none of these and stay readable.
_SEP = r"[ \t\-.]?"
_RESIDENT_ID = re.compile(rf"(?<!\d)(\d{{4}})\d{{2}}{_SEP}\d{{8}}{_SEP}(\d{{3}}[\dXx])(?![\dA-Za-z])")
_OLD_RESIDENT_ID = re.compile(r"(?<!\d)(\d{4})\d{7}(\d{4})(?!\d)")
_MOBILE = re.compile(rf"(?<!\d)(?:(?:\+|00)?86{_SEP})?(1[3-9]\d){_SEP}\d{{4}}{_SEP}(\d{{4}})(?!\d)")
_PERMIT = re.compile(r"(?<![0-9A-Za-z])([A-Za-z]{1,2})\d{5,6}(\d{2})(?![0-9A-Za-z])")


def find_mobile(text: str) -> str | None:
    """The first mainland mobile number in the text, as 11 digits (+86 and separators dropped)."""
    m = _MOBILE.search(text or "")
    if m is None:
        return None
    digits = re.sub(r"\D", "", m.group(0))
    return digits[-11:]


def mask_id_number(value: str | None) -> str | None:
    """3501**********1234 for a resident ID (first four and last four kept); a shorter document
    number (passport, permit: E12345678 → E******78) keeps its first and last two characters."""
    if not value:
        return value
    if len(value) <= 4:
        return value[0] + "*" * (len(value) - 1)
    if len(value) < 15:
        return value[0] + "*" * (len(value) - 3) + value[-2:]
    return value[:4] + "*" * (len(value) - 8) + value[-4:]


def mask_phone(value: str | None) -> str | None:
    if not value:
        return value
    if len(value) < 7:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def mask_name(value: str | None) -> str | None:
    """林小明 → 林**; Latin names keep their first letter per word."""
    if not value:
        return value
    if value.isascii():
        return " ".join(w[0] + "*" * (len(w) - 1) for w in value.split())
    return value[0] + "*" * (len(value) - 1)


def mask_text(text: str, names: tuple[str, ...] = ()) -> str:
    """Mask ID and phone numbers found in free text, and any of the given names."""
    if not text:
        return text
    out = _RESIDENT_ID.sub(lambda m: m.group(1) + "*" * 10 + m.group(2), text)
    out = _OLD_RESIDENT_ID.sub(lambda m: m.group(1) + "*" * 7 + m.group(2), out)
    out = _MOBILE.sub(lambda m: m.group(1) + "****" + m.group(2), out)
    out = _PERMIT.sub(lambda m: m.group(1) + "*" * (len(m.group(0)) - len(m.group(1)) - 2) + m.group(2), out)
    for name in names:
        if name and len(name) >= 2:
            out = out.replace(name, mask_name(name) or "")
    return out


def conversation_ref(conversation_id: str) -> str:
    """A stable pseudonym for a conversation id in stored rows (feedback, audit): rows of one
    conversation group together, the sender id itself is not stored."""
    return hashlib.sha256(f"hc-conversation:{conversation_id}".encode()).hexdigest()[:32]
