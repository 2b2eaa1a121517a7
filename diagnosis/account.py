"""The account document of shared/CONTRACT.md as a typed, validated shape.

What the upstream platform knows of one user. Every field is optional: missing means "unknown",
and the rules treat unknown as "cannot tell", never as "fine" or "wrong". Unknown fields are kept
(extra="allow") at every level so a replaced document round-trips unchanged. Enum values are
exactly the contract's; anything else is a validation error, reported by `parse_account` as
plain messages ("family[0].relation: Input should be 'parent', 'child' or 'spouse'") that an
API can return as a 422 — without echoing the offending value, which may be an ID number.
"""
from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, Callable, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from core.pii import mask_id_number, mask_name, mask_phone, mask_text

IdType = Literal["resident_id", "passport", "hk_macau_pass", "taiwan_pass"]
AuthLevel = Literal["L1", "L2", "L3", "L4"]
IdentityCheck = Literal["match", "mismatch"]
FaceReason = Literal["liveness", "photo_mismatch", "identity_mismatch", "poor_image", "service_error"]
Arrival = Literal["none", "domestic", "overseas"]
CodeColor = Literal["green", "orange", "red", "none"]
CodeReason = Literal["quarantine", "origin_not_synced", "overseas_observation", "risk_contact", "risk_area"]
Relation = Literal["parent", "child", "spouse"]

RELATIONS: tuple[str, ...] = get_args(Relation)
CODE_COLORS: tuple[str, ...] = get_args(CodeColor)


class _Part(BaseModel):
    # Unknown fields survive a parse → dump round trip; assignment is validated too, so code
    # that edits a parsed document cannot slip an off-contract value past the declaration.
    model_config = ConfigDict(extra="allow", validate_assignment=True)


class FaceAttempt(_Part):
    at: datetime | None = None
    ok: bool | None = None
    reason: FaceReason | None = None


class Origin(_Part):
    province: str | None = None
    on_national_platform: bool | None = None
    color: CodeColor | None = None
    synced_at: datetime | None = None


class Code(_Part):
    color: CodeColor | None = None
    reasons: list[CodeReason] | None = None
    since: datetime | None = None


class Quarantine(_Part):
    start: date | None = None
    end: date | None = None
    symptoms: bool | None = None

    @model_validator(mode="after")
    def _end_not_before_start(self) -> "Quarantine":
        if self.start and self.end and self.end < self.start:
            raise ValueError("quarantine end is before its start")
        return self


class Overseas(_Part):
    checkin_date: date | None = None
    observation_completed: bool | None = None
    registered: bool | None = None


class FamilyMember(_Part):
    relation: Relation | None = None
    name: str | None = None
    id_number: str | None = None


class Account(_Part):
    user_id: str | None = None
    name: str | None = None
    id_type: IdType | None = None
    id_number: str | None = None
    phone: str | None = None
    birth_date: date | None = None
    auth_level: AuthLevel | None = None
    identity_check: IdentityCheck | None = None
    face_attempts: list[FaceAttempt] | None = None  # newest last; [] = none made, None = unknown
    arrival: Arrival | None = None
    origin: Origin | None = None
    code: Code | None = None
    quarantine: Quarantine | None = None
    overseas: Overseas | None = None
    family: list[FamilyMember] | None = None  # [] = nobody applied for, None = unknown

    def document(self) -> dict[str, Any]:
        """The document as JSON-ready data: only the fields it was given, unknown ones included."""
        return self.model_dump(mode="json", exclude_unset=True)

    def masked_document(self) -> dict[str, Any]:
        """`document()` as an admin, an agent or a log may see it: every key kept, only the values
        `ADMIN_VIEW` declares non-personal in clear, everything else masked by what it is."""
        return masked(self.document(), ADMIN_VIEW)


# --- the masked view ----------------------------------------------------------------------------
# A value is shown in clear only where ADMIN_VIEW says so; a field it does not name (an unknown
# field, at any depth, or an unknown part of a known object) is masked by its kind. Personal data
# can arrive in any field the platform adds, so the default is "masked", never "shown".
Mask = Callable[[Any], Any]


def _clear(value: Any) -> Any:
    """Non-personal by declaration; ID and phone numbers inside a text are masked all the same."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, list):
        return [_clear(v) for v in value]
    if isinstance(value, dict):
        return {mask_text(str(k)): _clear(v) for k, v in value.items()}
    return value


def _opaque(value: Any) -> Any:
    """A value of a field nobody declared: which could be a bare name, so only a hint is left."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        # A count or a score may stay; a long number may be a phone or an ID number.
        return value if abs(value) < 1_000_000 else _opaque(str(value))
    if isinstance(value, list):
        return [_opaque(v) for v in value]
    if isinstance(value, dict):
        return _unknown_object(value)
    text = mask_text(str(value))
    return text[:1] + "**" if len(text) > 1 else "*" * len(text)


def _shaped(pattern: str, mask: Callable[[str], str | None]) -> Mask:
    """`mask` for a value of the expected shape; anything else (a name in a phone field…) opaque."""
    shape = re.compile(pattern)

    def apply(value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and shape.fullmatch(value.strip()):
            return mask(value.strip())
        return _opaque(value)

    return apply


def _name(value: Any) -> Any:
    return mask_name(value) if isinstance(value, str) else _opaque(value)


_id_number = _shaped(r"[0-9A-Za-z()\-]{5,30}", mask_id_number)
_phone = _shaped(r"\+?[0-9][0-9 \-]{5,19}", mask_phone)
_year_only = _shaped(r"\d{4}-\d{2}-\d{2}", lambda d: d[:4] + "-**-**")

# Fields that are personal wherever they turn up (emergency_contact.phone, family[].phone…).
PERSONAL_BY_KEY: dict[str, Mask] = {"name": _name, "id_number": _id_number, "phone": _phone}

# The document's view for admins: a dict is an object (its keys the known fields), a one-item
# list a list of such objects, a function how that value is shown. Clear: the contract's fields
# that say nothing about who the user is (levels, statuses, colours, dates of events).
ADMIN_VIEW: dict[str, Any] = {
    "user_id": _clear,
    "name": _name,
    "id_type": _clear,
    "id_number": _id_number,
    "phone": _phone,
    "birth_date": _year_only,       # personal: the year is enough to see "adult or minor"
    "auth_level": _clear,
    "identity_check": _clear,
    "face_attempts": [{"at": _clear, "ok": _clear, "reason": _clear}],
    "arrival": _clear,
    "origin": {"province": _clear, "on_national_platform": _clear, "color": _clear,
               "synced_at": _clear},
    "code": {"color": _clear, "reasons": _clear, "since": _clear},
    "quarantine": {"start": _clear, "end": _clear, "symptoms": _clear},
    "overseas": {"checkin_date": _clear, "observation_completed": _clear, "registered": _clear},
    "family": [{"relation": _clear, "name": _name, "id_number": _id_number, "phone": _phone}],
    "demo_label": _clear,           # accounts.demo: says the account is fictitious
}


def _field(key: str, value: Any, shape: Any) -> Any:
    if shape is not None:
        return masked(value, shape)
    by_key = PERSONAL_BY_KEY.get(key)
    if by_key is not None and not isinstance(value, (dict, list)):
        return by_key(value)
    return _opaque(value)


def _unknown_object(value: dict, shape: dict | None = None) -> dict:
    shape = shape or {}
    out: dict[str, Any] = {}
    for key, item in value.items():
        key = str(key)
        # Keys stay readable (an admin must see which fields exist), minus numbers in them.
        shown = key if key in shape else mask_text(key)
        while shown in out:
            shown += "*"
        out[shown] = _field(key, item, shape.get(key))
    return out


def masked(value: Any, shape: Any) -> Any:
    """`value` shown as `shape` (an ADMIN_VIEW-style declaration) allows."""
    if isinstance(shape, dict):
        return _unknown_object(value, shape) if isinstance(value, dict) else _opaque(value)
    if isinstance(shape, list):
        return [masked(v, shape[0]) for v in value] if isinstance(value, list) else _opaque(value)
    return shape(value)


_RESIDENT_ID = re.compile(r"^\d{6}(\d{8})\d{3}[\dXx]$")


def effective_birth_date(account: Account) -> date | None:
    """The birth date, or the one a mainland resident ID number carries (digits 7–14, YYYYMMDD).

    The declared birth_date wins; the ID number is read only for resident IDs (or an unknown
    id_type with an 18-character resident-ID shape), and an impossible date there stays unknown.
    """
    if account.birth_date:
        return account.birth_date
    if account.id_type not in (None, "resident_id") or not account.id_number:
        return None
    m = _RESIDENT_ID.match(account.id_number)
    if not m:
        return None
    try:
        return datetime.strptime(m.group(1), "%Y%m%d").date()
    except ValueError:
        return None


class AccountInvalid(ValueError):
    """The document breaks the declaration; `messages` are safe to return in a 422 body."""

    def __init__(self, messages: list[str]):
        self.messages = messages
        super().__init__("; ".join(messages))


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "document"


def error_messages(exc: ValidationError) -> list[str]:
    """One "where: what" line per problem, never the input value (it may be personal data)."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{_loc(err['loc'])}: {msg}")
    return out


def parse_account(data: Any) -> Account:
    """Validate an account document (a dict from JSON); raise AccountInvalid with clear messages."""
    try:
        return Account.model_validate(data)
    except ValidationError as exc:
        raise AccountInvalid(error_messages(exc)) from None
