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
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from core.pii import mask_id_number, mask_name, mask_phone

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
        """`document()` with names, ID and phone numbers masked: what an agent or a log may see."""
        doc = self.document()
        for key, mask in (("name", mask_name), ("id_number", mask_id_number), ("phone", mask_phone)):
            if isinstance(doc.get(key), str):
                doc[key] = mask(doc[key])
        for member in doc.get("family") or []:
            if isinstance(member.get("name"), str):
                member["name"] = mask_name(member["name"])
            if isinstance(member.get("id_number"), str):
                member["id_number"] = mask_id_number(member["id_number"])
        return doc


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
