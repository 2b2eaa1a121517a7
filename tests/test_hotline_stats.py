"""The hotline figures (tickets.stats): the same numbers from the function, GET /api/v1/admin/stats
and `python -m tickets report`, over rows inserted by hand, on SQLite and PostgreSQL."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

import delivery
from _accounts_fixtures import admin, make_client
from _store_fixtures import DATABASES, migrated_for
from accounts import service as accounts
from core.pii import conversation_ref
from core.settings import REPO_ROOT, Settings
from store import session_factory
from store.models import Conversation, ConversationMessage, FaqFeedback, Ticket
from tickets import service, stats
from tickets.__main__ import main
from tickets.queue import BEIJING

DAY_START = datetime(2026, 12, 1, 0, 0, tzinfo=BEIJING)          # 2026-11-30T16:00Z


def utc(hours: float) -> datetime:
    """A time on 2026-12-01 (Beijing), `hours` after midnight, in UTC."""
    return (DAY_START + timedelta(hours=hours)).astimezone(timezone.utc)


@pytest.fixture(params=DATABASES)
def db(request, tmp_path):
    with migrated_for(request.param, tmp_path, accounts, delivery) as engine:
        service.configure(engine, settings=Settings(demo_accounts=False))
        try:
            yield engine
        finally:
            service.configure(None)


def ticket(tid, conversation, category, *, created, status="open", claimed=None, first=None, resolved=None,
           satisfaction=None):
    c = utc(created)
    at = lambda s: None if s is None else c + timedelta(seconds=s)  # noqa: E731
    return Ticket(id=tid, conversation_id=conversation, open_key=None if status == "resolved" else conversation,
                  channel="api", user_id=None, lang="zh", category=category, findings=[], summary="s",
                  status=status, claimed_by=1 if claimed is not None else None, awaiting_contact=False,
                  created_at=c, updated_at=c, claimed_at=at(claimed), first_response_at=at(first),
                  resolved_at=at(resolved), satisfaction=satisfaction)


def msg(conversation, sender, hours, decision=None, meta=None):
    return ConversationMessage(conversation_id=conversation, sender=sender, text="t", buttons=[], at=utc(hours),
                               meta=meta if meta is not None else ({"decision": decision, "intent": "faq"}
                                                                   if decision else None))


@pytest.fixture
def rows(db):
    with session_factory(db).begin() as s:
        for cid, hours in (("c1", 1), ("c2", 2), ("c3", 3), ("c4", 4), ("c5", 5), ("c6", 6),
                           ("before", -1), ("after", 25)):
            s.add(Conversation(id=cid, user_id=None, channel="api", created_at=utc(hours)))
        s.add_all([
            # c1: an answer of two bot messages (one turn), then a clarification.
            msg("c1", "user", 1.0), msg("c1", "bot", 1.01, "answer"), msg("c1", "bot", 1.02, "answer"),
            msg("c1", "user", 1.1), msg("c1", "bot", 1.11, "clarify"),
            # c2: the bot abstains; a bot row without a decision and an agent's message count nothing.
            msg("c2", "user", 2.0), msg("c2", "bot", 2.01, "none"), msg("c2", "bot", 2.02),
            msg("c2", "agent", 2.03, meta={"decision": "answer"}),
            msg("c3", "user", 3.0), msg("c3", "bot", 3.01, "answer"),
            # outside the period
            msg("before", "user", -1.0), msg("before", "bot", -0.99, "answer"),
            msg("after", "user", 25.0), msg("after", "bot", 25.01, "none"),
        ])
        s.add_all([
            ticket("HC-20261201-0001", "c3", "name.mismatch", created=3.5, status="resolved", claimed=60,
                   first=120, resolved=600, satisfaction=3),
            ticket("HC-20261201-0002", "c4", "other", created=4.5, status="claimed", claimed=300),
            ticket("HC-20261201-0003", "c6", "name.mismatch", created=6.5),
            ticket("HC-20261201-0004", "c6x", "orange.quarantine_release_pending", created=7, status="resolved",
                   claimed=100, first=100, resolved=1800, satisfaction=1),
            ticket("HC-20261130-0001", "before", "other", created=-1, status="resolved", claimed=5, resolved=9,
                   satisfaction=2),
        ])
        s.add_all([FaqFeedback(conversation=conversation_ref("c5"), faq_id="personal.screenshot", helpful=False,
                               lang="zh", created_at=utc(5.1)),
                   FaqFeedback(conversation=conversation_ref("c1"), faq_id="personal.screenshot", helpful=True,
                               lang="zh", created_at=utc(1.05))])
    return db


EXPECTED = {
    "conversations": 6, "answered": 2, "clarified": 1, "abstained": 1, "handoffs": 4,
    "tickets_by_category": {"name.mismatch": 2, "orange.quarantine_release_pending": 1, "other": 1},
    "tickets_by_status": {"open": 1, "claimed": 1, "resolved": 2},
    "wait_to_claim_s": {"count": 3, "median": 100.0, "p90": 260.0},
    "first_response_s": {"count": 2, "median": 110.0, "p90": 118.0},
    "time_to_resolve_s": {"count": 2, "median": 1200.0, "p90": 1680.0},
    "satisfaction": {"counts": {"1": 1, "2": 0, "3": 1}, "rated": 2, "mean": 2.0},
    # c1 and c2: c3, c4 and c6 went to the hotline, c5 pressed "not helpful".
    "containment": {"contained": 2, "rate": 0.333},
}


def figures(rep: dict) -> dict:
    return {k: v for k, v in rep.items() if k not in ("since", "until")}


def test_report_counts_what_happened_in_the_period(rows):
    since, until = stats.period("2026-12-01", "2026-12-02")
    assert since == DAY_START and until == DAY_START + timedelta(days=1)
    rep = stats.report(since, until)
    assert figures(rep) == EXPECTED
    assert rep["since"] == "2026-11-30T16:00:00+00:00" and rep["until"] == "2026-12-01T16:00:00+00:00"
    text = stats.format_report(rep)
    assert "hand-offs           4" in text and "containment         2 of 6" in text
    assert "wait to claim       median 100 s, p90 260 s (n=3)" in text


def test_an_empty_period(db):
    rep = stats.report(*stats.period("2030-01-01", "2030-01-02"))
    assert rep["conversations"] == 0 and rep["handoffs"] == 0
    assert rep["wait_to_claim_s"] == {"count": 0, "median": None, "p90": None}
    assert rep["satisfaction"]["mean"] is None and rep["containment"]["rate"] is None
    assert "none rated" in stats.format_report(rep)


def test_period_bounds():
    assert stats.period("2026-12-01T08:00:00+08:00", "2026-12-01T09:00")[1] == datetime(
        2026, 12, 1, 9, 0, tzinfo=BEIJING)
    now = datetime(2026, 12, 8, tzinfo=timezone.utc)
    assert stats.period(None, None, now=now) == (now - timedelta(days=7), now)
    for since, until in (("2026-12-02", "2026-12-01"), ("yesterday", None), ("2026-13-01", None)):
        with pytest.raises(ValueError):
            stats.period(since, until)


def test_the_admin_route_gives_the_same(rows, tmp_path):
    with make_client(tmp_path) as client:
        url = "/api/v1/admin/stats?since=2026-12-01&until=2026-12-02"
        resp = client.get(url, headers=admin())
        assert resp.status_code == 200, resp.text
        assert resp.json() == stats.report(*stats.period("2026-12-01", "2026-12-02"))
        assert figures(resp.json()) == EXPECTED
        assert client.get(url).status_code == 401
        assert client.get(url, headers=admin("wrong")).status_code == 403
        for bad in ("since=2026-12-02&until=2026-12-01", "since=soon", "until=" + "9" * 50):
            r = client.get(f"/api/v1/admin/stats?{bad}", headers=admin())
            assert r.status_code == 422, (bad, r.text)
            assert r.json()["error"]["code"] == "invalid_request"
        assert client.get("/api/v1/admin/stats", headers=admin()).status_code == 200     # the last 7 days
        _id, agent_token = accounts.create_agent("坐席")
        assert client.get(url, headers={"Authorization": f"Bearer {agent_token}"}).status_code == 403


def test_the_command_prints_the_same(rows, capsys):
    assert main(["report", "--since", "2026-12-01", "--until", "2026-12-02", "--json"]) == 0
    assert figures(json.loads(capsys.readouterr().out)) == EXPECTED
    assert main(["report", "--since", "2026-12-01", "--until", "2026-12-02"]) == 0
    assert "hand-offs           4" in capsys.readouterr().out
    assert main(["report", "--since", "2026-12-02", "--until", "2026-12-01"]) == 2


def test_python_m_tickets_report_runs(rows):
    env = {**os.environ, "HC_DATABASE_URL": rows.url.render_as_string(hide_password=False),
           "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-m", "tickets", "report", "--since", "2026-12-01", "--until",
                          "2026-12-02", "--json"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert figures(json.loads(out.stdout)) == EXPECTED
