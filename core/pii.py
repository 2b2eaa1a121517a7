"""Masking of personal data (ID numbers, phone numbers, names) before text is logged, stored or shown."""
from __future__ import annotations

import re

# 18-digit resident ID (last char may be X), passports / HK-Macau / Taiwan permits, mobile
# numbers. The hotline (0591-62623959) matches none of these and stays readable.
_RESIDENT_ID = re.compile(r"(?<![0-9A-Za-z])(\d{4})\d{10}(\d{3}[\dXx])(?![0-9A-Za-z])")
_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")
_PERMIT = re.compile(r"(?<![0-9A-Za-z])([A-Za-z]{1,2})\d{5,6}(\d{2})(?![0-9A-Za-z])")


def mask_id_number(value: str | None) -> str | None:
    """3501**********1234 style: keep the first four and last four characters."""
    if not value:
        return value
    if len(value) <= 8:
        return value[0] + "*" * (len(value) - 1)
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
    out = _MOBILE.sub(lambda m: m.group(1) + "****" + m.group(2), out)
    out = _PERMIT.sub(lambda m: m.group(1) + "*" * (len(m.group(0)) - len(m.group(1)) - 2) + m.group(2), out)
    for name in names:
        if name and len(name) >= 2:
            out = out.replace(name, mask_name(name) or "")
    return out
