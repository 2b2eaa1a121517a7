"""The channels' durable inbox and links, on SQLite and PostgreSQL: a push is taken once however
often it is repeated, waits sealed, is handed out in order per conversation to one worker at a
time, survives a worker that dies, and the worker retries then apologises; links are audited."""
from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlalchemy import text

from _store_fixtures import DATABASES, migrated_for
from channels import identity, inbox, links
from channels.worker import Worker
from store.models import utcnow

KEY = bytes(range(32))


class Keyed:
    """inbox.configure takes a key as well: a module-like wrapper for migrated_for."""

    @staticmethod
    def configure(target):
        inbox.configure(target, KEY if target is not None else None)


@pytest.fixture(params=DATABASES)
def db(request, tmp_path):
    with migrated_for(request.param, tmp_path, Keyed, links) as engine:
        yield engine


def rows(db, sql="SELECT * FROM channel_inbox"):
    with db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql))]


def test_a_push_is_taken_once_and_waits_sealed(db):
    first = inbox.accept("wechat", "msg:1", "wechat:anon:o1", {"text": "我的手机13812345678"})
    assert first is not None
    assert inbox.accept("wechat", "msg:1", "wechat:anon:o1", {"text": "again"}) is None     # the retry
    assert inbox.accept("alipay", "msg:1", "alipay:anon:o1", {"text": "other channel"}) is not None
    stored = json.dumps([r["payload"] for r in rows(db)], default=str)
    assert "13812345678" not in stored and "我的手机" not in stored
    (item,) = [i for i in inbox.claim(utcnow(), 10) if i.channel == "wechat"]
    assert item.payload == {"text": "我的手机13812345678"} and item.attempts == 1
    inbox.finish(item, "answered")
    done = [r for r in rows(db) if r["id"] == first][0]
    assert done["status"] == "done" and done["payload"] is None and done["outcome"] == "answered"
    # Still remembered: a retry after it was answered is a no-op too.
    assert inbox.accept("wechat", "msg:1", "wechat:anon:o1", {"text": "late retry"}) is None


def test_one_conversation_in_order_and_one_worker_per_row(db):
    for n in range(3):
        inbox.accept("wechat", f"msg:a{n}", "wechat:anon:a", {"n": n})
    inbox.accept("wechat", "msg:b0", "wechat:anon:b", {"n": 0})
    now = utcnow()
    first = inbox.claim(now, 10)
    assert sorted((i.conversation_id, i.payload["n"]) for i in first) == [("wechat:anon:a", 0), ("wechat:anon:b", 0)]
    assert inbox.claim(now, 10) == []           # leased: a second worker gets nothing
    a0 = next(i for i in first if i.conversation_id == "wechat:anon:a")
    inbox.finish(a0, "answered")
    assert [i.payload["n"] for i in inbox.claim(now, 10)] == [1]   # then the next of that conversation


def test_a_dead_workers_rows_come_back_after_the_lease(db):
    inbox.accept("wechat", "msg:x", "wechat:anon:x", {"n": 1})
    now = utcnow()
    assert len(inbox.claim(now, 10, lease_s=30)) == 1
    assert inbox.claim(now + timedelta(seconds=10), 10) == []
    again = inbox.claim(now + timedelta(seconds=31), 10)
    assert [i.attempts for i in again] == [2]


def test_purge_forgets_only_old_done_rows(db):
    inbox.accept("wechat", "msg:old", "c", {})
    inbox.accept("wechat", "msg:pending", "d", {})
    (old, _pending) = sorted(inbox.claim(utcnow(), 10), key=lambda i: i.id)
    inbox.finish(old, "answered")
    assert inbox.purge(utcnow() + timedelta(seconds=1)) == 1
    assert [r["dedupe_key"] for r in rows(db)] == [inbox.stored_key("msg:pending")]


class Handler:
    def __init__(self, fail_times=0):
        self.fail_times, self.handled, self.apologised = fail_times, [], []

    async def handle(self, item):
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("bot down")
        self.handled.append(item.payload)
        return "answered"

    async def give_up(self, item):
        self.apologised.append(item.payload)


def test_worker_retries_a_failing_turn_then_answers(db, monkeypatch):
    monkeypatch.setattr(inbox, "backoff_s", lambda attempts, rng=None: 0.0)
    handler = Handler(fail_times=2)
    worker = Worker({"wechat": handler}, give_up_after_s=60)
    inbox.accept("wechat", "msg:r", "c", {"text": "hi"})

    async def rounds():
        for _ in range(3):
            await worker.run_once()

    asyncio.run(rounds())
    assert handler.handled == [{"text": "hi"}] and handler.apologised == []
    (row,) = rows(db)
    assert row["status"] == "done" and row["attempts"] == 3 and row["outcome"] == "answered"


def test_worker_apologises_when_the_bot_stays_down(db):
    handler = Handler(fail_times=99)
    worker = Worker({"wechat": handler}, give_up_after_s=0)
    inbox.accept("wechat", "msg:down", "c", {"text": "hi"})
    asyncio.run(worker.run_once())
    assert handler.apologised == [{"text": "hi"}]
    assert rows(db)[0]["outcome"] == "failed_politely"


def test_worker_runs_until_stopped_and_wakes_at_once(db):
    handler = Handler()

    async def scenario():
        worker = Worker({"wechat": handler}, interval_s=30)
        worker.start()
        await asyncio.sleep(0.05)
        inbox.accept("wechat", "msg:w", "c", {"text": "wake"})
        worker.wake()
        for _ in range(100):
            if handler.handled:
                break
            await asyncio.sleep(0.02)
        await worker.stop()

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert handler.handled == [{"text": "wake"}]


def test_links_are_audited_and_decide_the_conversation(db):
    assert identity.resolve("wechat", "oABC").user_id is None
    assert links.link("wechat", "oABC", "u1", "admin") == "linked"
    assert links.link("wechat", "oABC", "u1", "admin") == "unchanged"
    assert links.link("wechat", "oABC", "u2", "admin") == "replaced"
    user = identity.resolve("wechat", "oABC")
    assert user.user_id == "u2" and user.conversation_id.startswith("wechat:user:")
    assert identity.external_id_of(user.conversation_id, "wechat") == "oABC"
    assert links.user_for("alipay", "oABC") is None              # per channel
    assert links.unlink("wechat", "oABC", "admin") and not links.unlink("wechat", "oABC", "admin")
    events = [(r["action"], r["user_id"]) for r in rows(db, "SELECT * FROM channel_link_events ORDER BY id")]
    assert events == [("linked", "u1"), ("unlinked", "u1"), ("replaced", "u2"), ("unlinked", "u2")]


def test_channel_conversations_never_collide_with_api_ones():
    from assistant.chat import rasa_sender

    assert identity.conversation_id("wechat", "o1", None) == "wechat:anon:o1"
    for sender in ("wechat:anon:o1", "o1", "anon:o1"):
        assert not rasa_sender(sender, None).startswith("wechat:")
        assert not rasa_sender(sender, "u").startswith("wechat:")
    assert identity.external_id_of("anon:wechat:anon:o1", "wechat") is None
    assert not identity.valid_external_id("o1/../x") and not identity.valid_external_id("")
