"""Forwarding tickets and their updates to the hotline's own system: an outbox and a relay.

    enqueue(session, "ticket.created", payload)   # in the caller's transaction; no-op when off
    wake()                                        # after commit: the relay looks now, not in ~1 s
    relay = start(settings)                       # the app's lifespan: None when forwarding is off
    stop(relay)                                   # at shutdown, waits for the relay's thread

Off unless HC_HOTLINE_WEBHOOK_URL is set (then HC_HOTLINE_WEBHOOK_SECRET is required too).

**The outbox.** `enqueue` adds an `outbox` row to the caller's session, so the row commits or
rolls back with the ticket change it reports: a webhook that is down loses nothing, and a
restart resumes from the table. A relay (`relay_once`, run by `Relay` every ~1 s and on
`wake()`) sends due rows (`sent_at IS NULL AND next_try_at <= now`) oldest first. A failed try
sets `attempts + 1`, `last_error` (a status or an error class, never a body) and `next_try_at`
from the pure `next_try_at()` (2 s, 4 s, 8 s … capped at 10 min, with jitter). It never gives
up: a ticket update must not be dropped; a receiver that keeps refusing shows up in the logs
(one JSON line per try: outbox id, topic, attempt, status or error class; never the payload).

**Order.** Rows go out in id order, one at a time, and a row waits until every older row is
delivered (head-of-line): a ticket's updates therefore never overtake each other, even with
several relays. The cost is that a receiver refusing one row holds back the rest until it
accepts it; that is the receiver's bug to fix, and nothing is lost meanwhile.

**Several app instances.** Each runs a relay; a relay claims rows before it sends them, by
pushing their `next_try_at` forward by a lease (longer than the sends can take) in one short
transaction. PostgreSQL: `SELECT … FOR UPDATE SKIP LOCKED` over the oldest unsent rows, then
the lease in the same transaction; SQLite (which has no row locks): each claim is a guarded
`UPDATE … WHERE id = ? AND next_try_at = ? AND sent_at IS NULL`, and the first that matches
nothing ends the claim. A relay only ever claims a run that starts at the oldest unsent row, so
two relays never send the same row, nor two batches at once. A relay that is stopped hands its
unsent claimed rows back at once; one that dies keeps them until the lease expires.

**At-least-once.** A relay that dies after the receiver accepted a row but before it recorded
`sent_at` sends that row again after the lease. Receivers must dedupe on `X-HC-Delivery`.

**The webhook** (`WebhookForwarder`): `POST <url>` with the JSON body
`{"id": <outbox id>, "topic": "...", "payload": {...}, "created_at": "<ISO 8601, UTC>"}` and

    X-HC-Timestamp: <unix seconds when sent>
    X-HC-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>
    X-HC-Delivery:  <outbox id>

Any 2xx means delivered; anything else (3xx included: redirects are not followed), a timeout or
a network error means try again later. A receiver verifies a request like this (Python):

    raw = request.body()                                   # the exact bytes, before any JSON parse
    ts = request.headers["X-HC-Timestamp"]
    expected = "sha256=" + hmac.new(secret, ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("X-HC-Signature", "")):
        return 401                                         # constant-time compare, never ==
    if abs(time.time() - int(ts)) > 300:                   # freshness window: a replay is refused
        return 401
    if already_seen(request.headers["X-HC-Delivery"]):     # at-least-once: dedupe on the id
        return 200                                         # accept again, do nothing twice
    handle(json.loads(raw)); remember(...); return 200

The signature covers the timestamp, so a captured request cannot be replayed outside the window;
within it, the delivery id dedupe makes a replay harmless.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Protocol, runtime_checkable

import httpx
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.logs import log_event
from core.pii import mask_text
from core.settings import Settings, get_settings
from store import default_sessions, session_factory
from store.models import OutboxRow, utcnow

log = logging.getLogger("hc.forwarding")

# The retry schedule: BASE_S, 2·BASE_S, 4·BASE_S … never more than CAP_S, times a jitter factor
# in [1 - JITTER, 1] so that instances that failed together do not retry together.
BASE_S = 2.0
CAP_S = 10 * 60.0
JITTER = 0.2
# How long a claimed row stays out of other relays' reach, on top of the sends' own timeouts.
LEASE_MARGIN_S = 30.0
_ERROR_CHARS = 200          # outbox.last_error is String(200)

_lock = threading.Lock()
_settings: Settings | None = None
_sessions: sessionmaker[Session] | None = None
_running: set["Relay"] = set()


# --- configuration ------------------------------------------------------------------------------
def use_settings(settings: Settings | None) -> None:
    """The app's own settings, set at start-up; None: the environment's (get_settings())."""
    global _settings
    with _lock:
        _settings = settings


def settings() -> Settings:
    return _settings or get_settings()


def configure(target: Engine | sessionmaker | None) -> None:
    """Use this (migrated) database for the relay started by `start()` (tests); None: the
    process's shared one (store.default_sessions)."""
    global _sessions
    with _lock:
        _sessions = target if target is None or isinstance(target, sessionmaker) else session_factory(target)


def sessions() -> sessionmaker[Session]:
    return _sessions or default_sessions(settings())


def enabled(s: Settings | None = None) -> bool:
    """Forwarding is on exactly when a webhook URL is configured."""
    return bool((s or settings()).hotline_webhook_url)


# --- the write side -----------------------------------------------------------------------------
def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {str(k): _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    return value


def enqueue(session: Session, topic: str, payload: dict) -> None:
    """Add one outbox row to the caller's session: it commits or rolls back with the ticket
    change it reports. A no-op when forwarding is not configured.

    The payload is expected masked already; its strings are masked once more (a net). Call
    `wake()` after the commit for the relay to send it now rather than within a second."""
    if not enabled():
        return
    now = utcnow()
    session.add(OutboxRow(topic=topic, payload=_masked(payload), created_at=now, attempts=0,
                          next_try_at=now))


def wake() -> None:
    """Ask the running relay(s) to look now; a cheap no-op when none runs (forwarding off)."""
    if not _running:
        return
    with _lock:
        relays = list(_running)
    for relay in relays:
        relay.wake()


# --- the retry decision -------------------------------------------------------------------------
def next_try_at(attempts: int, now: datetime, rng: random.Random) -> datetime:
    """When to try a row again after its `attempts`-th failed try (1 for the first failure).

    Exponential backoff: 2 s, 4 s, 8 s … capped at 10 min, times a jitter factor in [0.8, 1];
    never later than `now + 10 min`, never `now` itself, and no attempt count means giving up."""
    exponent = max(0, attempts - 1)
    nominal = CAP_S if exponent >= 32 else min(CAP_S, BASE_S * (2 ** exponent))
    delay = nominal * (1.0 - JITTER * rng.random())
    return now + timedelta(seconds=delay)


# --- the send side ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    id: int
    topic: str
    payload: dict
    created_at: datetime


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status: int | None = None       # the HTTP status, when there was an answer
    error: str | None = None        # short: "HTTP 500", "ConnectError" — never a body

    @property
    def detail(self) -> str:
        return (self.error or (f"HTTP {self.status}" if self.status is not None else "ok"))[:_ERROR_CHARS]


@runtime_checkable
class Forwarder(Protocol):
    timeout_s: float

    def send(self, delivery: Delivery) -> Outcome:
        """Try once to hand the delivery over; never raises for a refusal or a network error."""

    def close(self) -> None:
        """Release connections."""


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone=True columns; we only ever store UTC.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def signature(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The X-HC-Signature value: "sha256=" + hex HMAC-SHA256(secret, f"{timestamp}.{body}")."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def body_of(delivery: Delivery) -> bytes:
    return json.dumps({"id": delivery.id, "topic": delivery.topic, "payload": delivery.payload,
                       "created_at": _as_utc(delivery.created_at).isoformat()},
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class WebhookForwarder:
    """POST each delivery as signed JSON to the hotline's webhook (see the module docstring)."""

    def __init__(self, url: str, secret: str, timeout_s: float = 5.0, *,
                 transport: httpx.BaseTransport | None = None, clock: Callable[[], float] = time.time):
        if not url or not url.startswith(("http://", "https://")):
            raise ValueError("the hotline webhook needs an http(s) URL (HC_HOTLINE_WEBHOOK_URL)")
        if not secret:
            raise ValueError("the hotline webhook needs a signing secret (HC_HOTLINE_WEBHOOK_SECRET)")
        self.url = url
        self.timeout_s = float(timeout_s)
        self._secret = secret.encode()
        self._transport = transport
        self._clock = clock
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout_s, transport=self._transport,
                                            follow_redirects=False)
            return self._client

    def headers_for(self, delivery: Delivery, body: bytes) -> dict[str, str]:
        timestamp = str(int(self._clock()))
        return {"Content-Type": "application/json; charset=utf-8",
                "X-HC-Timestamp": timestamp,
                "X-HC-Signature": signature(self._secret, timestamp, body),
                "X-HC-Delivery": str(delivery.id)}

    def send(self, delivery: Delivery) -> Outcome:
        body = body_of(delivery)
        try:
            resp = self._http().post(self.url, content=body, headers=self.headers_for(delivery, body))
        except httpx.HTTPError as exc:
            return Outcome(False, error=exc.__class__.__name__)
        if 200 <= resp.status_code < 300:
            return Outcome(True, status=resp.status_code)
        return Outcome(False, status=resp.status_code, error=f"HTTP {resp.status_code}")

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def forwarder_from_settings(s: Settings | None = None) -> Forwarder | None:
    """The deployment's forwarder: None when HC_HOTLINE_WEBHOOK_URL is unset (forwarding off);
    a URL without HC_HOTLINE_WEBHOOK_SECRET is a configuration error (ValueError)."""
    s = s or settings()
    if not enabled(s):
        return None
    return WebhookForwarder(s.hotline_webhook_url, s.hotline_webhook_secret or "",
                            s.hotline_webhook_timeout_s)


# --- the relay ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Claimed:
    id: int
    topic: str
    payload: dict
    created_at: datetime
    attempts: int
    next_try_at: datetime           # as it was before the claim (handed back on stop)


def _claim(sessions: sessionmaker[Session], now: datetime, limit: int, lease_until: datetime) -> list[_Claimed]:
    """Claim the run of due rows that starts at the oldest unsent row (at most `limit`)."""
    unsent = OutboxRow.sent_at.is_(None)
    with sessions.begin() as session:
        postgres = session.get_bind().dialect.name == "postgresql"
        query = select(OutboxRow).where(unsent).order_by(OutboxRow.id).limit(limit)
        if postgres:
            # Rows another relay is claiming right now are skipped, not waited for; the head check
            # below then sees that this relay's run does not start at the oldest row.
            query = query.with_for_update(skip_locked=True)
        rows = session.scalars(query).all()
        if not rows:
            return []
        # The oldest unsent ids as committed (no lock): the claimed run must be their prefix, so
        # a relay never sends a row while an older one is still someone else's or not yet due.
        head = [i for (i,) in session.execute(
            select(OutboxRow.id).where(unsent).order_by(OutboxRow.id).limit(limit)).all()] if postgres \
            else [row.id for row in rows]
        claimed: list[_Claimed] = []
        for row, expected_id in zip(rows, head):
            if row.id != expected_id or _as_utc(row.next_try_at) > now:
                break
            # The guarded UPDATE is the claim on SQLite (no row locks there); on PostgreSQL the
            # row is locked already and the guard just holds.
            result = session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row.id, OutboxRow.next_try_at == row.next_try_at, unsent)
                .values(next_try_at=lease_until)
                .execution_options(synchronize_session=False))
            if result.rowcount != 1:
                break               # another relay got there first: stop at the gap
            claimed.append(_Claimed(row.id, row.topic, row.payload, row.created_at, row.attempts or 0,
                                    row.next_try_at))
        return claimed


def _finish(sessions: sessionmaker[Session], row_id: int, lease_until: datetime, **values) -> bool:
    """Record a try's outcome, only while this relay still holds the row's lease."""
    with sessions.begin() as session:
        result = session.execute(
            update(OutboxRow)
            .where(OutboxRow.id == row_id, OutboxRow.next_try_at == lease_until,
                   OutboxRow.sent_at.is_(None))
            .values(**values)
            .execution_options(synchronize_session=False))
        return result.rowcount == 1


def _hand_back(sessions: sessionmaker[Session], rows: list[_Claimed], lease_until: datetime) -> None:
    """Release claimed rows that were not tried, as due as they were before the claim."""
    if not rows:
        return
    with sessions.begin() as session:
        for row in rows:
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row.id, OutboxRow.next_try_at == lease_until,
                       OutboxRow.sent_at.is_(None))
                .values(next_try_at=row.next_try_at)
                .execution_options(synchronize_session=False))


def relay_once(sessions: sessionmaker[Session], forwarder: Forwarder, *, now: datetime, limit: int = 20,
               rng: random.Random | None = None, should_stop: Callable[[], bool] | None = None,
               lease_s: float | None = None) -> int:
    """Send the due rows, oldest first, and record each outcome; returns how many were delivered.

    At most `limit` rows, claimed first (a lease of `lease_s`, default: every send timing out
    plus 30 s) so that another relay cannot send them too. The first failure ends the call (the
    rows after it wait for it: order), as does `should_stop()` between rows; the rows not tried
    are handed back as they were."""
    now = _as_utc(now)
    rng = rng or random.Random()
    if lease_s is None:
        lease_s = limit * float(getattr(forwarder, "timeout_s", 5.0)) + LEASE_MARGIN_S
    lease_until = now + timedelta(seconds=lease_s)
    claimed = _claim(sessions, now, limit, lease_until)
    delivered = 0
    for index, row in enumerate(claimed):
        if should_stop is not None and should_stop():
            _hand_back(sessions, claimed[index:], lease_until)
            break
        attempt = row.attempts + 1
        try:
            outcome = forwarder.send(Delivery(row.id, row.topic, row.payload, row.created_at))
        except Exception as exc:    # a forwarder's bug must not stop the relay; retried like a refusal
            outcome = Outcome(False, error=exc.__class__.__name__)
        if outcome.delivered:
            kept = _finish(sessions, row.id, lease_until, sent_at=now, attempts=attempt)
            delivered += 1
            log_event(log, "outbox_delivered", outbox_id=row.id, topic=row.topic, attempt=attempt,
                      status=outcome.status, recorded=kept)
            continue
        retry_at = next_try_at(attempt, now, rng)
        kept = _finish(sessions, row.id, lease_until, attempts=attempt, next_try_at=retry_at,
                       last_error=outcome.detail)
        log_event(log, "outbox_retry", outbox_id=row.id, topic=row.topic, attempt=attempt,
                  status=outcome.status, error=outcome.detail,
                  retry_in_s=round((retry_at - now).total_seconds(), 1), recorded=kept)
        _hand_back(sessions, claimed[index + 1:], lease_until)
        break
    return delivered


class Relay:
    """A daemon thread that runs `relay_once` every `interval_s` and at once on `wake()`."""

    def __init__(self, sessions: sessionmaker[Session], forwarder: Forwarder, *, interval_s: float = 1.0,
                 limit: int = 20, rng: random.Random | None = None,
                 clock: Callable[[], datetime] = utcnow, name: str = "hc-outbox-relay"):
        self._sessions = sessions
        self.forwarder = forwarder
        self._interval = interval_s
        self._limit = limit
        self._rng = rng or random.Random()
        self._clock = clock
        self._name = name
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "Relay":
        if self._thread is not None:
            raise RuntimeError("this relay was started already")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        with _lock:
            _running.add(self)
        self._thread.start()
        log_event(log, "outbox_relay_started", interval_s=self._interval)
        return self

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the send in flight (if any) and wait for the thread; claimed rows not yet
        tried are handed back for the next relay."""
        self._stopping.set()
        self._wakeup.set()
        with _lock:
            _running.discard(self)
        if self._thread is not None:
            if timeout is None:
                timeout = float(getattr(self.forwarder, "timeout_s", 5.0)) + 10.0
            self._thread.join(timeout)
        log_event(log, "outbox_relay_stopped", stopped=not self.running)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                sent = relay_once(self._sessions, self.forwarder, now=self._clock(), limit=self._limit,
                                  rng=self._rng, should_stop=self._stopping.is_set)
            except Exception as exc:    # the database is down, say: try again at the next tick
                log_event(log, "outbox_relay_error", error=exc.__class__.__name__)
                sent = 0
            if sent >= self._limit:
                continue                # a full batch went out: there may be more right away
            self._wakeup.wait(self._interval)


def start(s: Settings | None = None, *, interval_s: float = 1.0) -> Relay | None:
    """The app's relay when forwarding is configured (started), else None and nothing runs."""
    forwarder = forwarder_from_settings(s)
    if forwarder is None:
        return None
    return Relay(sessions(), forwarder, interval_s=interval_s).start()


def stop(relay: Relay | None) -> None:
    if relay is None:
        return
    relay.stop()
    relay.forwarder.close()
