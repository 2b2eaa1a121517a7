"""Diagnosis rules: pure functions from an account document to findings, one topic per question.

`diagnose(account, topic, today=…)` answers one of the questions users ask about their own code:

    orange    why is my code orange (or red)?        generate  why can't I generate a code?
    face      why does L4 face verification fail?    name      the name on my code is wrong
    family    may I apply for a family member?       overseas  why can't I get the overseas code?

Reading the data: a missing field is "unknown"; a rule whose data is unknown says nothing (no
finding), and `ok` comes only when the account positively shows nothing wrong for the question.
An empty list therefore means "the account does not settle it": callers fall back to the FAQ's
general answer. Findings carry only non-personal facts (counts, dates of events, colours, the
relation, a masked name), so they can go into `meta`, tickets and logs as they are.

Order — most actionable first. Every code has a place in `ORDER`, grouped by what the user can
do about it, because the first paragraph is the one people act on:
  1. self_service: a step the user can take right now that removes the cause (daily check-in,
     re-registering, switching login, finishing L4, a family member applying);
  2. hotline: a call to 0591-62623959 with proof, where staff pass it on (ticket offered);
  3. wait: another party has to act first (origin province's upload, the face service, the
     user's own orange code to be cleared);
  4. none: nothing the user can do but wait for time or an authority (observation, risk tags,
     arrival status, a full quota).
Within a group, the order in `ORDER` is the order of the codes' likelihood of being the whole
story (e.g. a quarantine release pending before an origin sync problem).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from core.pii import mask_name
from diagnosis.account import RELATIONS, Account, effective_birth_date, parse_account

TOPICS = ("orange", "generate", "face", "name", "family", "overseas")

# (code, action group) in reply order; the index is the finding's priority (lower first).
ORDER: tuple[tuple[str, str], ...] = (
    ("overseas.checkin_missing", "self_service"),
    ("face.identity_mismatch", "self_service"),
    ("face.retry_other_login", "self_service"),
    ("generate.minor", "self_service"),
    ("generate.auth_level_low", "self_service"),
    ("orange.quarantine_release_pending", "hotline"),
    ("name.mismatch", "hotline"),
    ("orange.origin_not_synced", "wait"),
    ("generate.origin_missing", "wait"),
    ("face.service_error", "wait"),
    ("family.blocked_orange", "wait"),
    ("orange.overseas_observation", "none"),
    ("overseas.not_eligible", "none"),
    ("orange.risk", "none"),
    ("family.quota_full", "none"),
    ("family.blocked_domestic_arrival", "none"),
    ("family.blocked_overseas_arrival", "none"),
    ("ok", "none"),
)
CODES: tuple[str, ...] = tuple(code for code, _ in ORDER)
_PRIORITY = {code: i for i, (code, _) in enumerate(ORDER)}
_ACTION = dict(ORDER)

# 为家人申领: at most 8 family members, 4 parents (incl. the spouse's), 3 children, 1 spouse.
FAMILY_QUOTA = {"parent": 4, "child": 3, "spouse": 1}
FAMILY_TOTAL = sum(FAMILY_QUOTA.values())
QUARANTINE_DAYS = 14
ADULT_AGE = 18


@dataclass(frozen=True)
class Finding:
    code: str
    priority: int
    action: str  # self_service | hotline | wait | none (see the module docstring)
    facts: dict[str, Any] = field(default_factory=dict, hash=False)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "priority": self.priority, "action": self.action,
                "facts": dict(self.facts)}


def finding(code: str, **facts: Any) -> Finding:
    """A finding with its place in `ORDER`; facts that are None (unknown) are left out."""
    return Finding(code, _PRIORITY[code], _ACTION[code], {k: v for k, v in facts.items() if v is not None})


def codes(findings: list[Finding]) -> list[str]:
    """What goes into meta.diagnosis."""
    return [f.code for f in findings]


def diagnose(account: Account | Mapping[str, Any], topic: str, *, today: date,
             relation: str | None = None) -> list[Finding]:
    """All findings for `topic`, most actionable first.

    `today` is the user's calendar date (China time); passing it in keeps the rules pure and the
    13-vs-14-day and 18th-birthday edges testable. `relation` only matters for "family".
    """
    if topic not in _RULES:
        raise ValueError(f"unknown topic {topic!r}; expected one of {', '.join(TOPICS)}")
    if relation is not None and relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r}; expected one of {', '.join(RELATIONS)}")
    if not isinstance(account, Account):
        account = parse_account(account)  # AccountInvalid (a ValueError) with clear messages
    found = _RULES[topic](account, today, relation)
    return sorted(found, key=lambda f: f.priority)  # stable: equal codes keep rule order


# --- helpers -------------------------------------------------------------------------------------

def _color(a: Account) -> str | None:
    return a.code.color if a.code else None


def _reasons(a: Account) -> set[str] | None:
    """The platform's tags on the code; None when unknown (not the same as "no tags")."""
    return set(a.code.reasons) if a.code and a.code.reasons is not None else None


def age_on(birth: date, today: date) -> int:
    """Whole years; the birthday itself counts (18 on the 18th birthday). 29 Feb birthdays
    turn a year older on 1 Mar in common years."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


# --- orange: why is my code orange / red? --------------------------------------------------------

def _orange(a: Account, today: date, _relation: str | None) -> list[Finding]:
    color = _color(a)
    if color == "green":
        return [finding("ok", topic="orange", basis="orange", color=color)]
    if color == "none":
        return []  # never generated: nothing is orange; the "generate" question is the one to ask
    reasons = _reasons(a)
    out: list[Finding] = []

    # Origin data missing from the national platform (互通互认 but still orange: a sync problem).
    origin = a.origin
    if (reasons is not None and "origin_not_synced" in reasons) or (
            a.arrival == "domestic" and origin is not None and origin.on_national_platform is False):
        out.append(finding("orange.origin_not_synced", color=color,
                           province=origin.province if origin else None))

    # Quarantine. Reading of the seed's "已隔离14天且无症状": the quarantine lasted 14+ days,
    # i.e. end − start ≥ 14 days (1 Nov → 15 Nov is 14), and it has ended, i.e. end < today (the
    # end day itself is still spent in quarantine). Only then is an orange code a release that
    # did not reach the platform. Symptoms change the case: the hotline route is for people
    # without symptoms, so the orange status is one the user cannot clear themselves → orange.risk
    # (basis "symptoms"), whether or not the quarantine has ended. Platform tags, when known,
    # must include "quarantine" for either reading to apply.
    q = a.quarantine
    symptoms = False
    if q is not None and (reasons is None or "quarantine" in reasons):
        days = (q.end - q.start).days if q.start and q.end else None
        since_end = (today - q.end).days if q.end else None
        if q.symptoms is True and color in ("orange", "red"):
            symptoms = True
        elif (q.symptoms is False and color == "orange" and days is not None and days >= QUARANTINE_DAYS
              and since_end is not None and since_end > 0):
            out.append(finding("orange.quarantine_release_pending", color=color, quarantine_days=days,
                               quarantine_end=q.end.isoformat(), days_since_end=since_end))

    # Overseas arrival still in medical observation, or just out of it with the tag still on.
    ov = a.overseas
    completed = ov.observation_completed if ov else None
    tagged = reasons is not None and "overseas_observation" in reasons
    if tagged or (a.arrival == "overseas" and completed is False):
        basis = {False: "in_observation", True: "just_out"}.get(completed, "tagged")
        out.append(finding("orange.overseas_observation", basis=basis, color=color))

    # What the user cannot clear by themselves, reported once: risk tags (contact, risk area),
    # else symptoms during quarantine, else a red code that nothing above explains.
    risk_tags = sorted(reasons & {"risk_contact", "risk_area"}) if reasons else []
    if risk_tags:
        out.append(finding("orange.risk", basis="tags", color=color, tags=risk_tags,
                           symptoms=symptoms or None))
    elif symptoms:
        out.append(finding("orange.risk", basis="symptoms", color=color, symptoms=True))
    elif color == "red" and not out:
        out.append(finding("orange.risk", basis="red", color=color))
    return out


# --- generate: why can't I generate a code? ------------------------------------------------------

def _generate(a: Account, today: date, _relation: str | None) -> list[Finding]:
    out: list[Finding] = []
    birth = effective_birth_date(a)
    age = age_on(birth, today) if birth else None
    if age is not None and age < ADULT_AGE:
        out.append(finding("generate.minor", age=age))
    elif age is not None and a.auth_level is not None and a.auth_level != "L4":
        # The seed's L4 requirement is for adults; with the age unknown we cannot tell which
        # advice applies (a minor below L4 needs a family member, not L4), so we say nothing.
        out.append(finding("generate.auth_level_low", auth_level=a.auth_level))

    origin = a.origin
    if a.arrival == "domestic" and origin is not None:
        if origin.color == "none":  # no origin code at all: apply for it first
            out.append(finding("generate.origin_missing", basis="not_applied", province=origin.province))
        elif origin.on_national_platform is False:  # applied, but not uploaded to the platform
            out.append(finding("generate.origin_missing", basis="not_uploaded", province=origin.province))

    if out:
        return out
    color = _color(a)
    can_generate = (color in ("green", "orange", "red")  # a code exists: generation worked
                    or (age is not None and age >= ADULT_AGE and a.auth_level == "L4"))
    origin_fine = a.arrival in ("none", "overseas") or (
        a.arrival == "domestic" and origin is not None and origin.on_national_platform is True
        and origin.color not in (None, "none"))
    if can_generate and origin_fine:
        return [finding("ok", topic="generate", basis="generate", color=color)]
    return []


# --- face: why does L4 face verification fail? ---------------------------------------------------

def _face(a: Account, _today: date, _relation: str | None) -> list[Finding]:
    attempts = a.face_attempts
    newest = attempts[-1] if attempts else None
    # The L3 identity check decides first: while it differs from the authority's record no
    # face check can pass, so "try again later" or "switch login" would only waste the user's
    # time — a mismatch is reported alone. An explicit identity_check wins over the reason the
    # face service gave; the service's "identity_mismatch" counts only when the check is unknown.
    if a.identity_check == "mismatch" or (
            a.identity_check is None and newest is not None and newest.ok is False
            and newest.reason == "identity_mismatch"):
        return [finding("face.identity_mismatch")]
    if attempts is None:
        return []

    # The run of failed attempts at the end (newest last, as the contract orders them; an
    # attempt whose outcome is unknown ends the run). Service errors say nothing about the face,
    # so they neither count towards nor break "keeps failing" (= the face check itself failed on
    # 2+ of the latest attempts in a row).
    trailing = []
    for attempt in reversed(attempts):
        if attempt.ok is not False:
            break
        trailing.append(attempt)
    face_failures = sum(1 for t in trailing if t.reason != "service_error")

    out: list[Finding] = []
    if a.identity_check == "match" and face_failures >= 2:
        out.append(finding("face.retry_other_login", failed_in_a_row=face_failures))
    if newest is not None and newest.ok is False and newest.reason == "service_error":
        out.append(finding("face.service_error",
                           last_failed_at=newest.at.isoformat() if newest.at else None))
    if out:
        return out
    if a.identity_check == "match" and (newest is None or newest.ok is True):
        return [finding("ok", topic="face", basis="face_passed" if newest else "face_no_attempts")]
    return []  # one ordinary failure, or identity unknown: the general answer fits better


# --- name: the name on the code differs ---------------------------------------------------------

def _name(a: Account, _today: date, _relation: str | None) -> list[Finding]:
    # Only the user can see the difference; the account cannot prove or disprove it. Always a
    # hotline ticket, with the masked name on file so the user can compare.
    if a.name:
        return [finding("name.mismatch", basis="masked", masked_name=mask_name(a.name))]
    return [finding("name.mismatch")]


# --- family: may I apply for a family member? ----------------------------------------------------

def _family(a: Account, _today: date, relation: str | None) -> list[Finding]:
    out: list[Finding] = []
    color = _color(a)
    # Seed: people whose own code is orange may not apply. A red code is read as at least as
    # restrictive (the seed names orange, the platform's worse colour cannot be more lenient).
    if color in ("orange", "red"):
        out.append(finding("family.blocked_orange", color=color))
    if a.arrival == "domestic":
        out.append(finding("family.blocked_domestic_arrival"))
    if a.arrival == "overseas":
        out.append(finding("family.blocked_overseas_arrival"))

    used = None
    if a.family is not None:
        used = {r: sum(1 for m in a.family if m.relation == r) for r in RELATIONS}
        if relation is not None and used[relation] >= FAMILY_QUOTA[relation]:
            out.append(finding("family.quota_full", basis="relation", relation=relation, used=used[relation],
                               limit=FAMILY_QUOTA[relation]))
        elif relation is None and all(used[r] >= FAMILY_QUOTA[r] for r in RELATIONS):
            out.append(finding("family.quota_full", basis="total", used=sum(used.values()),
                               limit=FAMILY_TOTAL))

    if out or used is None or color not in ("green", "none") or a.arrival != "none":
        return out
    free = {r: max(0, FAMILY_QUOTA[r] - used[r]) for r in RELATIONS}
    if relation is not None:
        return [finding("ok", topic="family", basis="family_relation", relation=relation,
                        used=used[relation], limit=FAMILY_QUOTA[relation], free=free[relation])]
    return [finding("ok", topic="family", basis="family", free=free)]


# --- overseas: why can't I get the overseas arrivals code? ---------------------------------------

def _overseas(a: Account, today: date, _relation: str | None) -> list[Finding]:
    ov = a.overseas
    if ov is None:
        return []
    out: list[Finding] = []
    # The check-in is daily: one dated before today does not count. (A date after today is
    # clock skew between the platform and us; it is treated as done.)
    if ov.checkin_date is not None and ov.checkin_date < today:
        out.append(finding("overseas.checkin_missing", last_checkin=ov.checkin_date.isoformat(),
                           days_since=(today - ov.checkin_date).days))
    # Foreign passport holders also need completed centralised medical observation and their
    # health data registered on the overseas arrivals platform.
    if a.id_type == "passport" and (ov.observation_completed is False or ov.registered is False):
        out.append(finding("overseas.not_eligible", observation_completed=ov.observation_completed,
                           registered=ov.registered))
    if out:
        return out
    checked_in = ov.checkin_date is not None
    eligible = a.id_type is not None and (
        a.id_type != "passport" or (ov.observation_completed is True and ov.registered is True))
    if checked_in and eligible:
        return [finding("ok", topic="overseas", basis="overseas")]
    return []


_RULES: dict[str, Callable[[Account, date, str | None], list[Finding]]] = {
    "orange": _orange, "generate": _generate, "face": _face,
    "name": _name, "family": _family, "overseas": _overseas,
}
