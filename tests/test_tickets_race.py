"""Races, for real, on SQLite and PostgreSQL: threads released together by a barrier, each call
in its own session (the service opens one per call; the engine's pool gives each thread its own
connection). Two agents claiming one ticket: exactly one wins. Two hand-offs of one
conversation: one ticket. Many tickets at once: distinct, consecutive numbers."""
from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import func, select

import delivery
from _store_fixtures import DATABASES, migrated_with_tickets
from accounts import service as accounts
from core.settings import Settings
from store.models import Ticket, TicketEvent
from tickets import service

SETTINGS = Settings(hotline_hours="00:00-24:00", demo_accounts=False)
ROUNDS = 6


@pytest.fixture(params=DATABASES)
def db(request, tmp_path):
    with migrated_with_tickets(request.param, tmp_path, SETTINGS, accounts, delivery) as engine:
        yield engine


def together(n: int, fn) -> list:
    """Run fn(i) in n threads started at the same moment; the results (or exceptions) by i."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:       # collected: the test looks at what each thread got
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return results


def create(conversation: str):
    return service.create_or_get(conversation, channel="api", user_id=None, lang="zh", category="other",
                                 findings=[], summary="转人工")


def test_two_agents_claiming_at_once_one_wins(db):
    agents = [accounts.agent_for_token(accounts.create_agent(f"坐席{i}")[1]) for i in range(4)]
    for round_ in range(ROUNDS):
        view, _ = create(f"web:claim-{round_}")
        results = together(len(agents), lambda i: service.claim(view.id, agents[i]))
        winners = [r for r in results if isinstance(r, service.TicketView)]
        losers = [r for r in results if isinstance(r, service.AlreadyClaimed)]
        assert len(winners) == 1 and len(losers) == len(agents) - 1, results
        held = service.get(view.id)
        assert held.status == "claimed" and held.claimed_by == winners[0].claimed_by
        with db.connect() as conn:
            claims = conn.execute(select(func.count()).select_from(TicketEvent).where(
                TicketEvent.ticket_id == view.id, TicketEvent.kind == "claimed")).scalar()
        assert claims == 1


def test_one_conversation_handed_off_twice_at_once_gets_one_ticket(db):
    for round_ in range(ROUNDS):
        results = together(4, lambda _i: create(f"web:dup-{round_}"))
        assert not [r for r in results if isinstance(r, Exception)], results
        assert len({view.id for view, _created in results}) == 1
        assert sum(created for _view, created in results) == 1
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Ticket)).scalar() == ROUNDS
        kinds = Counter(k for (k,) in conn.execute(select(TicketEvent.kind)))
    assert kinds == {"created": ROUNDS}


def test_many_tickets_at_once_get_consecutive_numbers(db):
    n = 8
    results = together(n, lambda i: create(f"web:many-{i}"))
    assert not [r for r in results if isinstance(r, Exception)], results
    numbers = sorted(int(view.id.rsplit("-", 1)[1]) for view, _ in results)
    assert numbers == list(range(1, n + 1))
    assert len({view.id[:11] for view, _ in results}) == 1        # one Beijing day


def test_events_are_numbered_in_commit_order(db):
    """A stream that reads after its cursor while changes commit concurrently misses nothing: no
    event commits with an id below one a reader has already seen."""
    agents = [accounts.agent_for_token(accounts.create_agent(f"坐席{i}")[1]) for i in range(6)]
    views = [create(f"web:order-{i}")[0] for i in range(6)]
    seen: list[int] = []
    stop = threading.Event()

    def drain():
        for event in service.events_after(seen[-1] if seen else 0, agents[0].id, limit=500):
            seen.append(event["id"])

    def reader():
        while not stop.is_set():
            drain()

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _round in range(3):
            together(6, lambda i: (service.claim(views[i].id, agents[i]),
                                   service.unclaim(views[i].id, agents[i])))
    finally:
        stop.set()
        t.join(30)
    drain()
    everything = [e["id"] for e in service.events_after(0, agents[0].id, limit=500)]
    assert len(everything) == 6 + 3 * 12
    assert seen == everything
