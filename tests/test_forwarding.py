"""Forwarding to the hotline's own system: outbox rows, the signed webhook, the relay's retries,
restarts and concurrency, on SQLite and PostgreSQL, against a real HTTP receiver on 127.0.0.1."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from _store_fixtures import DATABASES, migrated_for
from core.logs import JsonFormatter
from core.settings import Settings
from store import get_engine, session_factory
from store.models import OutboxRow
from tickets import forwarding

SECRET = "test-webhook-secret"


# --- a receiver, written from the module docstring's recipe -------------------------------------
class Receiver:
    """A threaded http.server on 127.0.0.1 that verifies every request's signature and follows a
    plan: "500" answers 500, "slow" answers after the sender's timeout, anything else accepts."""

    def __init__(self, secret: str = SECRET, plan: list[str] | None = None, delay_s: float = 0.0,
                 slow_s: float = 1.0):
        self.secret = secret.encode()
        self.plan = list(plan or [])
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.lock = threading.Lock()
        self.accepted: list[tuple[int, dict]] = []    # (X-HC-Delivery, body) of every 2xx answer
        self.tries: list[tuple[int, str]] = []        # every request: (delivery id, what it got)
        self.bad: list[str] = []
        self.port = 0
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hotline/tickets"

    def accepted_ids(self) -> list[int]:
        with self.lock:
            return [i for i, _ in self.accepted]

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                ts = self.headers.get("X-HC-Timestamp", "")
                expected = "sha256=" + hmac.new(receiver.secret, ts.encode() + b"." + raw,
                                                hashlib.sha256).hexdigest()
                body = json.loads(raw)
                delivery = int(self.headers.get("X-HC-Delivery", "-1"))
                if not hmac.compare_digest(expected, self.headers.get("X-HC-Signature", "")) \
                        or abs(time.time() - int(ts)) > 300 or delivery != body["id"]:
                    with receiver.lock:
                        receiver.bad.append(self.headers.get("X-HC-Signature", ""))
                    self._answer(401)
                    return
                with receiver.lock:
                    mode = receiver.plan.pop(0) if receiver.plan else "ok"
                    receiver.tries.append((delivery, mode))
                if mode == "500":
                    self._answer(500)
                    return
                if mode == "slow":
                    time.sleep(receiver.slow_s)
                    self._answer(200)     # too late: the sender gave up and will try again
                    return
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver.lock:
                    receiver.accepted.append((delivery, body))
                self._answer(204)

            def _answer(self, status: int):
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

        return Handler

    def start(self) -> "Receiver":
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        server.block_on_close = False
        self.port = server.server_address[1]
        self.server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs).start())
        return made[-1]
    yield make
    for r in made:
        r.stop()


def on(url: str = "http://127.0.0.1:9/unused", **extra) -> Settings:
    return Settings(hotline_webhook_url=url, hotline_webhook_secret=SECRET, **extra)


@pytest.fixture
def settings_on():
    """Forwarding configured (enqueue writes rows); reset afterwards."""
    forwarding.use_settings(on())
    yield
    forwarding.use_settings(None)


@pytest.fixture(params=DATABASES)
def db(request, tmp_path):
    with migrated_for(request.param, tmp_path, forwarding) as engine:
        yield engine


def add(sessions, ticket: str, seq: int, topic: str = "ticket.updated", **extra) -> None:
    with sessions.begin() as session:
        forwarding.enqueue(session, topic, {"ticket_id": ticket, "seq": seq, **extra})


def rows(sessions) -> list[OutboxRow]:
    with sessions() as session:
        return list(session.scalars(select(OutboxRow).order_by(OutboxRow.id)))


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def drain(sessions, forwarder, now: datetime, *, limit: int = 20, rounds: int = 50) -> int:
    """relay_once until nothing is left, moving the injected clock past any backoff."""
    sent = 0
    for _ in range(rounds):
        if not any(r.sent_at is None for r in rows(sessions)):
            return sent
        sent += forwarding.relay_once(sessions, forwarder, now=now, limit=limit, rng=random.Random(1))
        now += timedelta(minutes=11)
    raise AssertionError("the outbox did not drain")


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


# --- the retry decision (pure: no clock, no database) -------------------------------------------
class _Fixed(random.Random):
    def __init__(self, value: float):
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


NOW = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


def test_backoff_doubles_from_two_seconds_up_to_ten_minutes():
    delays = [(forwarding.next_try_at(n, NOW, _Fixed(0.0)) - NOW).total_seconds() for n in range(1, 13)]
    assert delays == [2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600, 600]


def test_jitter_stays_within_twenty_percent_below_and_never_past_the_cap():
    low = [(forwarding.next_try_at(n, NOW, _Fixed(0.999999)) - NOW).total_seconds() for n in (1, 2, 20)]
    assert low == pytest.approx([1.6, 3.2, 480.0], rel=1e-4)
    rng = random.Random(7)
    for attempts in list(range(-2, 60)) + [10**6]:     # never gives up, never overflows
        delay = (forwarding.next_try_at(attempts, NOW, rng) - NOW).total_seconds()
        assert 1.6 <= delay <= 600


def test_retry_decision_is_deterministic_for_a_seeded_rng():
    a = [forwarding.next_try_at(n, NOW, random.Random(42)) for n in range(1, 8)]
    b = [forwarding.next_try_at(n, NOW, random.Random(42)) for n in range(1, 8)]
    assert a == b and a == sorted(a)


# --- the signature ------------------------------------------------------------------------------
def test_the_signature_a_receiver_computes_matches():
    captured: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        return httpx.Response(200)

    forwarder = forwarding.WebhookForwarder("https://hotline.example/hook", SECRET, 2.0,
                                            transport=httpx.MockTransport(handler), clock=lambda: 1764576000.7)
    delivery = forwarding.Delivery(17, "ticket.created", {"ticket_id": "T1", "summary": "健康码黄码"},
                                   datetime(2026, 12, 1, 8, 0))
    assert forwarder.send(delivery) == forwarding.Outcome(True, status=200)
    request = captured[0]
    raw = request.content
    assert json.loads(raw) == {"id": 17, "topic": "ticket.created",
                               "payload": {"ticket_id": "T1", "summary": "健康码黄码"},
                               "created_at": "2026-12-01T08:00:00+00:00"}
    assert request.headers["X-HC-Timestamp"] == "1764576000"
    assert request.headers["X-HC-Delivery"] == "17"
    assert request.headers["content-type"].startswith("application/json")
    # What a receiver computes from the docstring's recipe, independently of the module.
    expected = "sha256=" + hmac.new(SECRET.encode(), b"1764576000." + raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, request.headers["X-HC-Signature"])
    assert forwarding.signature(SECRET, "1764576000", raw) == expected
    # A changed body, timestamp or secret does not verify.
    assert forwarding.signature(SECRET, "1764576000", raw + b" ") != expected
    assert forwarding.signature(SECRET, "1764576001", raw) != expected
    assert forwarding.signature("other", "1764576000", raw) != expected
    # A fixed vector, so a change of format is a visible change.
    assert forwarding.signature("k", "1", b"{}") == \
        "sha256=" + hmac.new(b"k", b"1.{}", hashlib.sha256).hexdigest()


@pytest.mark.parametrize("status", [199, 301, 400, 404, 500, 503])
def test_anything_but_2xx_is_a_retry(status):
    forwarder = forwarding.WebhookForwarder(
        "https://hotline.example/hook", SECRET, transport=httpx.MockTransport(lambda r: httpx.Response(status)))
    outcome = forwarder.send(forwarding.Delivery(1, "t", {}, NOW))
    assert outcome == forwarding.Outcome(False, status=status, error=f"HTTP {status}")


def test_forwarder_from_settings():
    assert forwarding.forwarder_from_settings(Settings(hotline_webhook_url=None)) is None
    forwarder = forwarding.forwarder_from_settings(on("https://hotline.example/hook", hotline_webhook_timeout_s=3))
    assert isinstance(forwarder, forwarding.WebhookForwarder)
    assert isinstance(forwarder, forwarding.Forwarder)
    assert forwarder.url == "https://hotline.example/hook" and forwarder.timeout_s == 3
    with pytest.raises(ValueError, match="SECRET"):        # unsigned forwarding is never started
        forwarding.forwarder_from_settings(Settings(hotline_webhook_url="https://hotline.example/hook"))
    with pytest.raises(ValueError, match="URL"):
        forwarding.WebhookForwarder("ftp://hotline.example", SECRET)


# --- off unless configured ----------------------------------------------------------------------
def test_off_unless_configured(db):
    forwarding.use_settings(Settings(hotline_webhook_url=None))
    try:
        sessions = session_factory(db)
        add(sessions, "T1", 1)
        assert rows(sessions) == []
        assert not forwarding.enabled()
        assert forwarding.start() is None
        assert not forwarding._running
        forwarding.wake()                       # a no-op, not an error
    finally:
        forwarding.use_settings(None)


def test_the_app_starts_no_relay_unless_configured(tmp_path):
    from api.main import create_app

    settings = Settings(var_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'off.db'}",
                        internal_token="x", demo_accounts=False, hotline_webhook_url=None)
    with TestClient(create_app(settings, load_index=False)) as client:
        assert client.app.state.forwarding_relay is None
        assert not forwarding._running
        assert not forwarding.enabled()
    assert forwarding._settings is None


def test_the_app_runs_the_relay_when_configured_and_stops_it(tmp_path, receiver):
    from api.main import create_app
    from store import default_sessions

    hotline = receiver()
    settings = Settings(var_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'on.db'}", internal_token="x",
                        demo_accounts=False, hotline_webhook_url=hotline.url, hotline_webhook_secret=SECRET,
                        hotline_webhook_timeout_s=2)
    with TestClient(create_app(settings, load_index=False)) as client:
        relay = client.app.state.forwarding_relay
        assert relay is not None and relay.running and relay in forwarding._running
        add(default_sessions(), "T9", 1, topic="ticket.created")
        forwarding.wake()
        wait_for(lambda: hotline.accepted_ids() == [1])
    assert not relay.running and not forwarding._running
    assert hotline.accepted[0][1]["payload"] == {"ticket_id": "T9", "seq": 1}
    assert hotline.bad == []


# --- the outbox ---------------------------------------------------------------------------------
def test_enqueue_commits_and_rolls_back_with_the_caller(db, settings_on):
    sessions = session_factory(db)
    add(sessions, "T1", 1, note="回电 13800138000", nested={"id": ["350102199001011234"]})
    with pytest.raises(RuntimeError):
        with sessions.begin() as session:
            forwarding.enqueue(session, "ticket.updated", {"ticket_id": "T1", "seq": 2})
            raise RuntimeError("the ticket change failed")
    [row] = rows(sessions)
    assert row.topic == "ticket.updated" and row.attempts == 0 and row.sent_at is None
    assert row.payload == {"ticket_id": "T1", "seq": 1, "note": "回电 138****8000",
                           "nested": {"id": ["3501**********1234"]}}
    assert utc(row.next_try_at) <= datetime.now(timezone.utc)


def test_a_failing_receiver_still_gets_every_row_once_in_order(db, settings_on, receiver, caplog):
    sessions = session_factory(db)
    for seq in range(1, 4):                     # three tickets' updates, interleaved
        for ticket in ("T1", "T2", "T3"):
            add(sessions, ticket, seq, secret_marker="PAYLOAD-MARKER")
    ids = [r.id for r in rows(sessions)]
    hotline = receiver(slow_s=1.0)
    forwarder = forwarding.WebhookForwarder(hotline.url, SECRET, timeout_s=0.3)
    caplog.set_level(logging.INFO, logger="hc.forwarding")
    t0 = datetime.now(timezone.utc) + timedelta(seconds=1)

    # Try 1: 500. Only the oldest row was tried; it waits ~2 s, and so do the rows behind it.
    hotline.plan = ["500"]
    assert forwarding.relay_once(sessions, forwarder, now=t0, limit=4, rng=random.Random(1)) == 0
    first, *rest = rows(sessions)
    assert (first.attempts, first.last_error, first.sent_at) == (1, "HTTP 500", None)
    assert t0 + timedelta(seconds=1.6) <= utc(first.next_try_at) <= t0 + timedelta(seconds=2)
    assert all(r.attempts == 0 and utc(r.next_try_at) <= t0 for r in rest)     # handed back as they were
    # No tight loop: before the backoff is over nothing is sent, not even the rows behind.
    assert forwarding.relay_once(sessions, forwarder, now=t0 + timedelta(seconds=1.5)) == 0
    assert len(hotline.tries) == 1

    # Try 2: the port is closed.
    hotline.stop()
    t1 = t0 + timedelta(seconds=2)
    assert forwarding.relay_once(sessions, forwarder, now=t1, limit=4, rng=random.Random(1)) == 0
    first = rows(sessions)[0]
    assert (first.attempts, first.last_error) == (2, "ConnectError")
    assert t1 + timedelta(seconds=3.2) <= utc(first.next_try_at) <= t1 + timedelta(seconds=4)

    # Try 3: the receiver is back on the same port but answers after the sender's timeout.
    hotline.plan = ["slow"]
    hotline.start()
    t2 = t1 + timedelta(seconds=4)
    assert forwarding.relay_once(sessions, forwarder, now=t2, limit=4, rng=random.Random(1)) == 0
    first = rows(sessions)[0]
    assert (first.attempts, first.last_error) == (3, "ReadTimeout")
    assert t2 + timedelta(seconds=6.4) <= utc(first.next_try_at) <= t2 + timedelta(seconds=8)

    # Then it accepts: everything goes out, in batches of 4, each row once, oldest first.
    t3 = t2 + timedelta(seconds=8)
    assert drain(sessions, forwarder, t3, limit=4) == 9
    assert hotline.accepted_ids() == ids
    # The receiver saw the 500 and the late answer (the closed port saw nothing), then each row.
    assert hotline.tries == [(ids[0], "500"), (ids[0], "slow")] + [(i, "ok") for i in ids]
    for ticket in ("T1", "T2", "T3"):
        assert [b["payload"]["seq"] for _, b in hotline.accepted if b["payload"]["ticket_id"] == ticket] == [1, 2, 3]
    assert hotline.bad == []
    done = rows(sessions)
    assert all(r.sent_at is not None for r in done)
    assert (done[0].attempts, utc(done[0].sent_at)) == (4, t3)
    assert all(r.attempts == 1 for r in done[1:])

    # One JSON log line per try, with id, topic, attempt and status/error class; never the payload.
    outcomes = [(r.msg, r.fields["outbox_id"], r.fields["attempt"], r.fields.get("error"))
                for r in caplog.records if r.msg in ("outbox_retry", "outbox_delivered")]
    assert outcomes[:4] == [("outbox_retry", ids[0], 1, "HTTP 500"), ("outbox_retry", ids[0], 2, "ConnectError"),
                            ("outbox_retry", ids[0], 3, "ReadTimeout"), ("outbox_delivered", ids[0], 4, None)]
    assert len(outcomes) == 12
    assert all(r.fields["topic"] == "ticket.updated" for r in caplog.records
               if r.msg in ("outbox_retry", "outbox_delivered"))
    formatted = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "PAYLOAD-MARKER" not in formatted and '"outbox_id"' in formatted


def test_a_restarted_relay_resumes_and_loses_nothing(db, settings_on, receiver):
    sessions = session_factory(db)
    for seq in range(30):
        add(sessions, f"T{seq % 4}", seq)
    ids = [r.id for r in rows(sessions)]
    hotline = receiver(delay_s=0.03)
    first = forwarding.Relay(sessions, forwarding.WebhookForwarder(hotline.url, SECRET, 2.0),
                             interval_s=0.05, limit=5).start()
    wait_for(lambda: len(hotline.accepted_ids()) >= 7)
    first.stop()                                 # mid-way: in the middle of a batch
    assert not first.running and first not in forwarding._running
    stopped_at = len(hotline.accepted_ids())
    assert 7 <= stopped_at < 30
    left = [r for r in rows(sessions) if r.sent_at is None]
    # The rows it had claimed but not tried were handed back: due now, not leased.
    assert left and all(utc(r.next_try_at) <= datetime.now(timezone.utc) for r in left)

    # A new instance over the same database (its own engine and pool).
    engine = get_engine(url=db.url)
    try:
        second = forwarding.Relay(session_factory(engine), forwarding.WebhookForwarder(hotline.url, SECRET, 2.0),
                                  interval_s=0.05, limit=5).start()
        wait_for(lambda: len(hotline.accepted_ids()) >= 30)
        second.stop()
    finally:
        engine.dispose()
    assert hotline.accepted_ids() == ids                         # each once, in order
    assert all(r.sent_at is not None for r in rows(sessions))


class _Crash(BaseException):
    """The process dies (not an exception the relay could handle)."""


def test_a_crash_after_sending_resends_after_the_lease_at_least_once(db, settings_on, receiver):
    sessions = session_factory(db)
    for seq in range(5):
        add(sessions, "T1", seq)
    ids = [r.id for r in rows(sessions)]
    hotline = receiver()
    real = forwarding.WebhookForwarder(hotline.url, SECRET, 2.0)

    class CrashesAfterThird:
        timeout_s = 2.0

        def __init__(self):
            self.sent = 0

        def send(self, delivery):
            outcome = real.send(delivery)
            self.sent += 1
            if self.sent == 3:
                raise _Crash()            # the receiver has it; sent_at is never written
            return outcome

        def close(self):
            pass

    t0 = datetime.now(timezone.utc) + timedelta(seconds=1)
    with pytest.raises(_Crash):
        forwarding.relay_once(sessions, CrashesAfterThird(), now=t0, limit=5, lease_s=60)
    assert hotline.accepted_ids() == ids[:3]
    # The dead relay's lease still holds its rows: nobody sends them (or anything after them).
    assert forwarding.relay_once(sessions, real, now=t0 + timedelta(seconds=59)) == 0
    # After the lease, the row that was delivered but not recorded goes again: at-least-once,
    # with the same X-HC-Delivery, so the receiver can tell it is the same one.
    assert forwarding.relay_once(sessions, real, now=t0 + timedelta(seconds=61)) == 3
    assert hotline.accepted_ids() == ids[:3] + ids[2:]
    assert set(hotline.accepted_ids()) == set(ids)


def test_two_relays_at_once_never_send_a_row_twice(db, settings_on, receiver):
    sessions = session_factory(db)
    for seq in range(60):
        add(sessions, f"T{seq % 5}", seq)
    ids = [r.id for r in rows(sessions)]
    hotline = receiver(delay_s=0.002)
    engines = [get_engine(url=db.url), get_engine(url=db.url)]    # two app instances
    tried = Counter()

    class Counted(forwarding.WebhookForwarder):
        def send(self, delivery):
            tried[self.name] += 1
            return super().send(delivery)

    forwarders = [Counted(hotline.url, SECRET, 2.0) for _ in engines]
    for i, f in enumerate(forwarders):
        f.name = f"relay-{i}"
    relays = [forwarding.Relay(session_factory(e), f, interval_s=0.005, limit=3, name=f.name)
              for e, f in zip(engines, forwarders)]
    try:
        for relay in relays:
            relay.start()
        deadline = time.monotonic() + 30
        while len(hotline.accepted_ids()) < 60 and time.monotonic() < deadline:
            forwarding.wake()            # both relays look at once, again and again
            time.sleep(0.002)
    finally:
        for relay in relays:
            relay.stop()
        for engine in engines:
            engine.dispose()
    counts = Counter(hotline.accepted_ids())
    assert set(counts) == set(ids) and max(counts.values()) == 1
    assert hotline.accepted_ids() == ids                           # and still in order
    assert sum(tried.values()) == 60                               # no try was wasted on a taken row
    with sessions() as session:
        assert session.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None))) == 0


def test_while_one_relay_sends_another_sends_nothing(db, settings_on, receiver):
    sessions = session_factory(db)
    for seq in range(5):
        add(sessions, "T1", seq)
    ids = [r.id for r in rows(sessions)]
    hotline = receiver()
    real = forwarding.WebhookForwarder(hotline.url, SECRET, 2.0)
    inside, release = threading.Event(), threading.Event()

    class Held:
        timeout_s = 2.0

        def send(self, delivery):
            inside.set()
            release.wait(10)
            return real.send(delivery)

        def close(self):
            pass

    t0 = datetime.now(timezone.utc) + timedelta(seconds=1)
    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(
        forwarding.relay_once(sessions, Held(), now=t0, limit=3)))
    first.start()
    engine = get_engine(url=db.url)                                # the other instance
    try:
        assert inside.wait(10)
        other = session_factory(engine)
        # Same instant, and later within the lease: neither the claimed rows nor those behind them.
        assert forwarding.relay_once(other, real, now=t0) == 0
        assert forwarding.relay_once(other, real, now=t0 + timedelta(seconds=30)) == 0
        assert hotline.accepted_ids() == []
        release.set()
        first.join(10)
        assert results == [3]
        assert forwarding.relay_once(other, real, now=t0) == 2     # the rest, by the other one
    finally:
        release.set()
        engine.dispose()
    assert hotline.accepted_ids() == ids
