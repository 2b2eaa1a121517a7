"""delivery: the conversation's message log (masked), deliver() = append + publish + channel
senders, and the in-process broker (thread-safe publish, coalesced and bounded wake-ups)."""
from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import select

import delivery
from _store_fixtures import DATABASES, migrated_for
from assistant import conversations
from delivery.broker import MemoryBroker, RedisBroker, SubscriptionDropped, broker_from_url
from store.models import ConversationMessage

CID = "anon:test-conversation-0001"
ID_NUMBER, PHONE = "350102199001011234", "13800138000"


@pytest.fixture(params=DATABASES)
def db(request, tmp_path):
    with migrated_for(request.param, tmp_path, delivery, conversations) as engine:
        yield engine


@pytest.fixture
def broker():
    """A memory broker as the process's one, for the test only."""
    previous = delivery.current_broker()
    b = MemoryBroker()
    delivery.use_broker(b)
    try:
        yield b
    finally:
        delivery.use_broker(previous)


def rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(ConversationMessage).order_by(ConversationMessage.id)).all()


# --- the log ------------------------------------------------------------------------------------
def test_append_masks_text_and_buttons_and_returns_the_view(db):
    view = delivery.append(CID, "bot", f"身份证 {ID_NUMBER} 电话 {PHONE}",
                           [{"title": f"打 {PHONE}", "payload": f"/call{{\"p\":\"{PHONE}\"}}"}],
                           ticket_id="HC-20261201-0001", meta={"intent": "faq"})
    assert isinstance(view, delivery.MessageView)
    assert view.sender == "bot" and view.ticket_id == "HC-20261201-0001" and view.id.isdigit()
    assert ID_NUMBER not in view.text and PHONE not in view.text and "138****8000" in view.text
    assert PHONE not in view.buttons[0]["title"] and PHONE not in view.buttons[0]["payload"]
    stored = rows(db)
    assert len(stored) == 1
    raw = repr(tuple(stored[0]))
    assert ID_NUMBER not in raw and PHONE not in raw
    assert stored[0].meta == {"intent": "faq"} and stored[0].undelivered is None
    shape = view.as_dict()
    assert set(shape) == {"id", "from", "text", "buttons", "at", "ticket_id"} and shape["from"] == "bot"
    assert shape["at"].endswith("+00:00")
    plain = delivery.append(CID, "user", "你好")
    assert set(plain.as_dict()) == {"id", "from", "text", "buttons", "at"}
    assert int(plain.id) > int(view.id)
    with pytest.raises(Exception):
        view.text = "x"          # frozen


def test_append_refuses_an_unknown_sender(db):
    with pytest.raises(ValueError):
        delivery.append(CID, "admin", "hi")


def test_messages_after_and_recent(db):
    ids = [delivery.append(CID, s, f"m{i}").id
           for i, s in enumerate(["user", "bot", "user", "bot", "agent", "system"])]
    delivery.append("anon:someone-else", "bot", "not yours")
    after = delivery.messages_after(CID)
    assert [m.text for m in after] == ["m1", "m3", "m4", "m5"]          # no user turns
    assert [m.text for m in delivery.messages_after(CID, int(ids[3]))] == ["m4", "m5"]
    assert [m.text for m in delivery.messages_after(CID, int(ids[0]), limit=2)] == ["m1", "m3"]
    assert [m.text for m in delivery.messages_after(CID, senders=None)] == [f"m{i}" for i in range(6)]
    assert delivery.messages_after(CID, int(ids[-1])) == []
    assert [m.text for m in delivery.recent(CID)] == [f"m{i}" for i in range(6)]   # oldest first
    assert [m.text for m in delivery.recent(CID, limit=2)] == ["m4", "m5"]
    assert delivery.last_id(CID) == int(ids[-1]) and delivery.last_id("anon:nobody") == 0


# --- deliver ------------------------------------------------------------------------------------
def test_deliver_appends_then_wakes_the_conversation_from_a_worker_thread(db, broker):
    async def main():
        async with broker.subscribe(delivery.conversation_topic(CID)) as sub, \
                broker.subscribe(delivery.conversation_topic("anon:other")) as other:
            view = await asyncio.to_thread(delivery.deliver, CID, "agent", f"回电 {PHONE}")
            assert await sub.wait(2) == delivery.conversation_topic(CID)
            assert await other.wait(0.1) is None
            return view

    view = asyncio.run(main())
    assert view.sender == "agent" and PHONE not in view.text and view.undelivered is None
    assert [m.id for m in delivery.messages_after(CID)] == [view.id]


def test_publish_without_a_broker_is_a_no_op(db):
    previous = delivery.current_broker()
    delivery.use_broker(None)
    try:
        delivery.publish(delivery.AGENTS_TOPIC)
        assert delivery.deliver(CID, "system", "ok").text == "ok"
    finally:
        delivery.use_broker(previous)


def test_channel_senders_run_for_their_channel_and_a_failure_marks_undelivered(db, broker):
    conversations.record("wechat:o-openid-1", None, "wechat")
    conversations.record(CID, None, "api")
    pushed = []

    def wechat(conversation_id, view):
        pushed.append((conversation_id, view.text))
        if "late" in view.text:
            raise delivery.Undeliverable("45015 window over")

    def leaky(conversation_id, view):
        raise RuntimeError(f"upstream said: {PHONE}")       # a message with personal data

    delivery.register_sender("wechat", wechat)
    try:
        ok = delivery.deliver("wechat:o-openid-1", "agent", "hello")
        late = delivery.deliver("wechat:o-openid-1", "agent", "late reply")
        api = delivery.deliver(CID, "agent", "widget only")
        delivery.register_sender("alipay", leaky)
        conversations.record("alipay:2088", None, "alipay")
        failed = delivery.deliver("alipay:2088", "agent", "x")
    finally:
        delivery.unregister_sender("wechat", wechat)
        delivery.unregister_sender("alipay", leaky)
    assert pushed == [("wechat:o-openid-1", "hello"), ("wechat:o-openid-1", "late reply")]
    assert ok.undelivered is None and api.undelivered is None
    assert late.undelivered == "45015 window over"
    assert failed.undelivered == "RuntimeError"                  # the type, never the message
    stored = {r.id: r.undelivered for r in rows(db)}
    assert stored[int(late.id)] == "45015 window over" and stored[int(ok.id)] is None
    # Still in the log (the user's feed and the agent's transcript show it).
    assert [m.text for m in delivery.messages_after("wechat:o-openid-1")] == ["hello", "late reply"]


# --- the broker ---------------------------------------------------------------------------------
def test_memory_broker_publish_from_many_threads_reaches_each_subscriber_once_per_look():
    broker = MemoryBroker()

    async def main():
        async with broker.subscribe("t") as a, broker.subscribe("t") as b, broker.subscribe("u") as c:
            threads = [threading.Thread(target=broker.publish, args=("t",)) for _ in range(50)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert await a.wait(2) == "t" and await b.wait(2) == "t"
            # 50 publishes, one re-read: coalesced while pending, drained by wait().
            assert await a.wait(0.05) is None
            assert await c.wait(0.05) is None
        assert broker.subscriber_count("t") == 0

    asyncio.run(main())


def test_a_stuck_subscriber_is_dropped_without_stalling_the_others():
    broker = MemoryBroker(queue_size=2)

    async def main():
        async with broker.subscribe("a", "b", "c") as stuck, broker.subscribe("a") as fine:
            for topic in ("a", "b", "c"):          # three distinct wake-ups, room for two
                broker.publish(topic)
            await asyncio.sleep(0.05)
            with pytest.raises(SubscriptionDropped):
                await stuck.wait(1)
            assert await fine.wait(1) == "a"
            broker.publish("a")
            assert await fine.wait(1) == "a"

    asyncio.run(main())


def test_closing_the_broker_ends_its_subscriptions():
    broker = MemoryBroker()

    async def main():
        async with broker.subscribe("t") as sub:
            waiter = asyncio.create_task(sub.wait(5))
            await asyncio.sleep(0.01)
            await broker.close()
            with pytest.raises(SubscriptionDropped):
                await waiter
        with pytest.raises(RuntimeError):
            async with broker.subscribe("t"):
                pass

    asyncio.run(main())


def test_broker_from_url():
    assert isinstance(broker_from_url("memory://"), MemoryBroker)
    assert isinstance(broker_from_url(None), MemoryBroker)
    redis_broker = broker_from_url("redis://127.0.0.1:6379/0")      # connects lazily
    assert isinstance(redis_broker, RedisBroker)
    asyncio.run(redis_broker.close())
    with pytest.raises(ValueError):
        broker_from_url("kafka://x")


def test_release_broker_only_clears_its_own():
    previous = delivery.current_broker()
    a, b = MemoryBroker(), MemoryBroker()
    try:
        delivery.use_broker(a)
        delivery.use_broker(b)
        delivery.release_broker(a)
        assert delivery.current_broker() is b
        delivery.release_broker(b)
        assert delivery.current_broker() is None
    finally:
        delivery.use_broker(previous)
