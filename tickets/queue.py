"""The queue's clock: hotline hours (Beijing time), when a ticket will be handled, how long it waits.

Pure functions over times and numbers, so they are tested without a database:

    hours = parse_hours("08:30-17:30")
    in_hours(now, hours)                  # is somebody answering now?
    next_opening(now, hours)              # when the hotline opens next (now itself when open)
    expected_wait_s(position, waits, default_s=600)
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from statistics import median
from typing import Sequence

BEIJING = timezone(timedelta(hours=8))
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

# How many recently claimed tickets the expected wait is computed from, and its bounds.
RECENT_CLAIMS = 20
MIN_WAIT_S = 60
MAX_WAIT_S = 4 * 3600


@dataclass(frozen=True)
class Hours:
    opens: time
    closes: time

    @property
    def always(self) -> bool:
        return self.opens == self.closes


@dataclass(frozen=True)
class QueuePlace:
    position: int              # 1 = next to be claimed; 0 = not waiting (claimed or resolved)
    expected_wait_s: int       # until an agent is expected to take it (0 when not waiting)
    in_hours: bool             # is the hotline answering now
    opens_at: str | None       # outside hours: when it opens (ISO 8601, Beijing time), else None

    def as_dict(self) -> dict:
        return {"position": self.position, "expected_wait_s": self.expected_wait_s,
                "in_hours": self.in_hours, "opens_at": self.opens_at}


def parse_hours(spec: str) -> Hours:
    """"08:30-17:30" (every day, Beijing time). Equal ends mean round the clock; an end before
    the start means the hours run past midnight ("20:00-08:00")."""
    match = _HOURS.match(spec or "")
    if not match:
        raise ValueError(f"hotline hours must look like 08:30-17:30, not {spec!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"hotline hours out of range: {spec!r}")
    return Hours(time(h1, m1), time(0, 0) if h2 == 24 else time(h2, m2))


def in_hours(now: datetime, hours: Hours) -> bool:
    if hours.always:
        return True
    t = now.astimezone(BEIJING).time()
    if hours.opens < hours.closes:
        return hours.opens <= t < hours.closes
    return t >= hours.opens or t < hours.closes


def next_opening(now: datetime, hours: Hours) -> datetime:
    """`now` (in Beijing time) when the hotline is open, else the next opening."""
    local = now.astimezone(BEIJING)
    if in_hours(local, hours):
        return local
    today = local.replace(hour=hours.opens.hour, minute=hours.opens.minute, second=0, microsecond=0)
    return today if today > local else today + timedelta(days=1)


def expected_wait_s(position: int, recent_waits_s: Sequence[float], default_s: int) -> int:
    """The median of the recent claim waits (default_s without history) times the position,
    within [MIN_WAIT_S, MAX_WAIT_S]; 0 when the ticket is not waiting."""
    if position <= 0:
        return 0
    per_ticket = median(recent_waits_s) if recent_waits_s else float(default_s)
    return int(min(max(per_ticket * position, MIN_WAIT_S), MAX_WAIT_S))


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
