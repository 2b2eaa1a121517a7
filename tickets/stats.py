"""The hotline figures for a period: `python -m tickets report` and GET /api/v1/admin/stats.

    rep = report(since, until)          # a dict, the same for the route and the command line
    print(format_report(rep))

Over [since, until):
  conversations       conversations first seen in the period (conversations.created_at)
  answered / clarified / abstained
                      the bot's turns in the period by their decision (meta.decision of its
                      rows in conversation_messages: answer / clarify / none); a turn of several
                      bot messages counts once
  handoffs            tickets created
  tickets             by category and by status (of the tickets created in the period)
  wait_to_claim_s, first_response_s, time_to_resolve_s
                      median and p90 (seconds from creation), of those tickets
  satisfaction        ratings per score (1 bad … 3 good) and their mean
  containment         conversations of the period with no ticket and no "not helpful" press
                      (faq_feedback rows are keyed by core.pii.conversation_ref), and their share
"""
from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accounts.source import as_utc
from core.pii import conversation_ref
from store.models import Conversation, ConversationMessage, FaqFeedback, Ticket, utcnow
from tickets.queue import BEIJING, percentile

DECISIONS = {"answer": "answered", "clarify": "clarified", "none": "abstained"}
DEFAULT_DAYS = 7
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_bound(value: str | None) -> datetime | None:
    """"2026-12-01" (Beijing midnight) or an ISO 8601 time (Beijing when it names no zone);
    None stays None. ValueError for anything else."""
    if value is None or not str(value).strip():
        return None
    value = str(value).strip()
    if _DATE.match(value):
        return datetime.combine(date.fromisoformat(value), time(0, 0), BEIJING)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=BEIJING)


def period(since: str | datetime | None, until: str | datetime | None,
           now: datetime | None = None) -> tuple[datetime, datetime]:
    """The [since, until) the report covers: until defaults to now, since to DEFAULT_DAYS before."""
    end = until if isinstance(until, datetime) else parse_bound(until)
    start = since if isinstance(since, datetime) else parse_bound(since)
    end = end or (now or utcnow())
    start = start or end - timedelta(days=DEFAULT_DAYS)
    if start >= end:
        raise ValueError("since must be before until")
    return start, end


def _spread(values: list[float]) -> dict[str, Any]:
    def r(v):
        return None if v is None else round(v, 1)

    return {"count": len(values), "median": r(percentile(values, 50)), "p90": r(percentile(values, 90))}


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else max((as_utc(end) - as_utc(start)).total_seconds(), 0.0)


def _bot_turns(session: Session, start: datetime, end: datetime) -> Counter:
    """The bot's turns by decision: rows are read per conversation in order, and the bot rows
    after one user turn count once (a reply of two messages is one answer)."""
    stmt = (select(ConversationMessage.conversation_id, ConversationMessage.sender, ConversationMessage.meta)
            .where(ConversationMessage.at >= start, ConversationMessage.at < end,
                   ConversationMessage.sender.in_(("user", "bot")))
            .order_by(ConversationMessage.conversation_id, ConversationMessage.id)
            .execution_options(yield_per=2000))
    counts: Counter = Counter()
    counted: dict[str, bool] = {}
    for conversation_id, sender, meta in session.execute(stmt):
        if sender == "user":
            counted[conversation_id] = False
            continue
        decision = meta.get("decision") if isinstance(meta, dict) else None
        if decision in DECISIONS and not counted.get(conversation_id, False):
            counts[DECISIONS[decision]] += 1
            counted[conversation_id] = True
    return counts


def report(since: datetime, until: datetime, *, sessions: sessionmaker[Session] | None = None) -> dict[str, Any]:
    if sessions is None:
        from tickets import service

        sessions = service.sessions()
    # SQLite keeps the UTC wall time of a timestamp and compares text: bounds in UTC too.
    since, until = since.astimezone(timezone.utc), until.astimezone(timezone.utc)
    with sessions() as session:
        conversation_ids = list(session.scalars(select(Conversation.id).where(
            Conversation.created_at >= since, Conversation.created_at < until)))
        turns = _bot_turns(session, since, until)
        tickets = list(session.execute(select(
            Ticket.category, Ticket.status, Ticket.created_at, Ticket.claimed_at, Ticket.first_response_at,
            Ticket.resolved_at, Ticket.satisfaction).where(Ticket.created_at >= since, Ticket.created_at < until)))
        with_ticket: set[str] = set()
        unhelpful: set[str] = set()
        if conversation_ids:
            in_period = (select(Conversation.id).where(Conversation.created_at >= since,
                                                       Conversation.created_at < until)).scalar_subquery()
            with_ticket = set(session.scalars(select(Ticket.conversation_id).distinct()
                                              .where(Ticket.conversation_id.in_(in_period))))
            refs = {conversation_ref(c): c for c in conversation_ids}
            pressed = session.scalars(select(FaqFeedback.conversation).distinct()
                                      .where(FaqFeedback.helpful.is_(False)))
            unhelpful = {refs[r] for r in pressed if r in refs}
    scores = [t.satisfaction for t in tickets if t.satisfaction is not None]
    contained = sum(1 for c in conversation_ids if c not in with_ticket and c not in unhelpful)
    return {
        "since": as_utc(since).isoformat(),
        "until": as_utc(until).isoformat(),
        "conversations": len(conversation_ids),
        "answered": turns.get("answered", 0),
        "clarified": turns.get("clarified", 0),
        "abstained": turns.get("abstained", 0),
        "handoffs": len(tickets),
        "tickets_by_category": dict(sorted(Counter(t.category for t in tickets).items())),
        "tickets_by_status": {s: sum(1 for t in tickets if t.status == s) for s in ("open", "claimed", "resolved")},
        "wait_to_claim_s": _spread([w for t in tickets if (w := _seconds(t.created_at, t.claimed_at)) is not None]),
        "first_response_s": _spread([w for t in tickets
                                     if (w := _seconds(t.created_at, t.first_response_at)) is not None]),
        "time_to_resolve_s": _spread([w for t in tickets
                                      if (w := _seconds(t.created_at, t.resolved_at)) is not None]),
        "satisfaction": {"counts": {str(s): scores.count(s) for s in (1, 2, 3)}, "rated": len(scores),
                         "mean": round(sum(scores) / len(scores), 2) if scores else None},
        "containment": {"contained": contained,
                        "rate": round(contained / len(conversation_ids), 3) if conversation_ids else None},
    }


def format_report(rep: dict[str, Any]) -> str:
    def spread(d):
        if not d["count"]:
            return "–"
        return f"median {d['median']:.0f} s, p90 {d['p90']:.0f} s (n={d['count']})"

    sat = rep["satisfaction"]
    cont = rep["containment"]
    lines = [
        f"hotline figures {rep['since']} – {rep['until']}",
        f"conversations       {rep['conversations']}",
        f"answered            {rep['answered']}",
        f"clarified           {rep['clarified']}",
        f"abstained           {rep['abstained']}",
        f"hand-offs           {rep['handoffs']}",
        "tickets by category " + (", ".join(f"{k} {v}" for k, v in rep["tickets_by_category"].items()) or "–"),
        "tickets by status   " + ", ".join(f"{k} {v}" for k, v in rep["tickets_by_status"].items()),
        f"wait to claim       {spread(rep['wait_to_claim_s'])}",
        f"first response      {spread(rep['first_response_s'])}",
        f"time to resolve     {spread(rep['time_to_resolve_s'])}",
        "satisfaction        " + ", ".join(f"{k}: {v}" for k, v in sat["counts"].items())
        + (f" (mean {sat['mean']:.2f}, n={sat['rated']})" if sat["mean"] is not None else " (none rated)"),
        f"containment         {cont['contained']}"
        + (f" of {rep['conversations']} ({cont['rate']:.1%})" if cont["rate"] is not None else ""),
    ]
    return "\n".join(lines)

