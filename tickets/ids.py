"""Readable ticket ids: HC-20261201-0007, the Beijing date and that day's counter (ticket_counters).

The counter is one upsert that returns the new value (`INSERT … ON CONFLICT (day) DO UPDATE SET
last = last + 1 RETURNING last`), the same statement on SQLite (≥ 3.35) and PostgreSQL: on
PostgreSQL the conflicting row is locked until the transaction ends, so two tickets made at once
wait for each other instead of sharing a number; on SQLite the statement takes the database's
write lock. It runs in the caller's transaction: a ticket that is not created (rolled back)
gives its number back.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.models import TicketCounter

BEIJING = timezone(timedelta(hours=8))
TICKET_ID = re.compile(r"^HC-(\d{8})-(\d{4,})$")


def beijing_day(now: datetime) -> str:
    return now.astimezone(BEIJING).strftime("%Y%m%d")


def format_id(day: str, number: int) -> str:
    return f"HC-{day}-{number:04d}"


def is_ticket_id(value: str) -> bool:
    return bool(TICKET_ID.match(value or ""))


def next_number(session: Session, day: str) -> int:
    """The next number of `day`, allocated atomically in the caller's transaction."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    if dialect not in ("postgresql", "sqlite"):
        raise RuntimeError(f"ticket ids need SQLite or PostgreSQL, not {dialect}")
    stmt = insert(TicketCounter).values(day=day, last=1)
    stmt = stmt.on_conflict_do_update(index_elements=[TicketCounter.day],
                                      set_={"last": TicketCounter.last + 1})
    return int(session.execute(stmt.returning(TicketCounter.last)).scalar_one())


def allocate(session: Session, now: datetime) -> str:
    day = beijing_day(now)
    return format_id(day, next_number(session, day))
