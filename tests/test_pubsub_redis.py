"""Redis pub/sub across instances (HC_REDIS_URL), against the real Redis on 127.0.0.1:6379.

The two-instance test starts two real uvicorn servers in this process, each with its own
RedisBroker (app.state.broker: its own subscribing connection). The process's broker, through
which services publish (delivery.publish / deliver), is pointed at instance A's; the user's
stream is on instance B. With pings (and so the streams' safety re-reads) far apart, only Redis
can carry the wake-up from A to B in time."""
from __future__ import annotations

import asyncio
import threading
import time
import uuid

import httpx
import pytest

import delivery
from _env import missing
from _store_fixtures import DATABASES, migrated_for
from accounts import service as accounts_service
from assistant import conversations
from assistant.chat import rasa_sender
from delivery.broker import REDIS_PREFIX, RedisBroker
from test_sse import LiveServer, Stream, bearer, engine_url, make_app

REDIS_URL = "redis://127.0.0.1:6379/0"
SLOW_PING_S = 10.0          # the streams' own re-read every 40 s: never within these tests


@pytest.fixture(scope="module")
def redis_client():
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        missing(f"Redis unreachable at {REDIS_URL}")
    yield client
    client.close()


def topic() -> str:
    return f"test:{uuid.uuid4().hex}"


def numsub(redis_client, name: str) -> int:
    return dict(redis_client.pubsub_numsub(REDIS_PREFIX + name)).get((REDIS_PREFIX + name).encode(), 0)


def test_a_publish_on_one_broker_wakes_a_subscriber_of_another(redis_client):
    a, b = RedisBroker(REDIS_URL), RedisBroker(REDIS_URL)
    t, quiet = topic(), topic()

    async def main():
        async with b.subscribe(t) as sub, b.subscribe(t) as twin, b.subscribe(quiet) as other:
            assert numsub(redis_client, t) == 1            # one connection per broker, not per subscriber
            await asyncio.to_thread(a.publish, t)           # from a worker thread, through A
            assert await sub.wait(3) == t and await twin.wait(3) == t
            assert await other.wait(0.2) is None
            for _ in range(20):                              # a burst: coalesced, one look
                a.publish(t)
            assert await sub.wait(3) == t
            await asyncio.sleep(0.2)
            assert await sub.wait(0.05) is None
        await asyncio.sleep(0.1)
        assert numsub(redis_client, t) == 0                 # the last subscriber left: UNSUBSCRIBEd
        await a.close()
        await b.close()

    asyncio.run(main())


def test_a_broken_pubsub_connection_reconnects_and_wakes_everyone(redis_client):
    a, b = RedisBroker(REDIS_URL), RedisBroker(REDIS_URL)
    t = topic()

    async def main():
        async with b.subscribe(t) as sub:
            killed = 0
            for client in redis_client.client_list():
                if client.get("name") == b.client_name:
                    killed += redis_client.client_kill_filter(_id=client["id"])
            assert killed == 1
            # Whatever was published while it was down is lost: the reconnect wakes every
            # subscriber to re-read its log instead.
            assert await sub.wait(10) == t
            deadline = time.monotonic() + 5
            while numsub(redis_client, t) != 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            a.publish(t)
            assert await sub.wait(3) == t
        await a.close()
        await b.close()

    asyncio.run(main())


def test_publishing_with_redis_down_neither_raises_nor_hangs():
    broker = RedisBroker("redis://127.0.0.1:1/0")
    started = time.monotonic()
    broker.publish("anything")
    assert time.monotonic() - started < 3
    asyncio.run(broker.close())


# --- two app instances on one Redis -------------------------------------------------------------
@pytest.fixture(params=DATABASES)
def two_instances(request, tmp_path, redis_client):
    """Instances A and B of the app on one shared database and one Redis; the process's
    broker (services' publish) is A's."""
    from tickets import service as tickets

    with migrated_for(request.param, tmp_path, delivery, accounts_service, conversations, tickets) as engine:
        url = engine_url(engine)
        apps = [make_app(tmp_path / name, url, redis_url=REDIS_URL, sse_ping_s=SLOW_PING_S) for name in "ab"]
        with LiveServer(apps[0]) as a, LiveServer(apps[1]) as b:
            broker_a, broker_b = apps[0].state.broker, apps[1].state.broker
            assert isinstance(broker_a, RedisBroker) and isinstance(broker_b, RedisBroker)
            assert broker_a is not broker_b
            previous = delivery.current_broker()
            delivery.use_broker(broker_a)
            try:
                yield a, b
            finally:
                delivery.use_broker(previous)


def test_an_agent_on_instance_a_reaches_the_users_stream_on_instance_b(two_instances):
    from tickets import service as tickets

    a, b = two_instances
    token, _ = accounts_service.create_session("redis-user")
    cid = rasa_sender("w1", "redis-user")
    conversations.record(cid, "redis-user", "api")
    ticket, _ = tickets.create_or_get(cid, channel="api", user_id="redis-user", lang="zh",
                                      category="other", findings=[], summary="用户问:转人工")
    agent_id, agent_token = accounts_service.create_agent("agent on A")

    with httpx.Client(base_url=a.base, timeout=10) as on_a, \
            httpx.Client(base_url=b.base, timeout=httpx.Timeout(10, read=SLOW_PING_S * 2)) as on_b:
        # The agents' stream on B, too: the claim on A must wake it through Redis.
        agents_b = Stream(on_b, "/api/v1/agent/stream", headers=bearer(agent_token)).wait_connected()
        user_b = Stream(on_b, "/api/v1/chat/stream", params={"sender": "w1"}, headers=bearer(token)).wait_connected()
        try:
            assert on_a.post(f"/api/v1/agent/tickets/{ticket.id}/claim", headers=bearer(agent_token)).status_code == 200
            [claimed] = agents_b.take(1, timeout=3)
            assert claimed["kind"] == "claimed" and claimed["ticket_id"] == ticket.id
            # The claim's notice to the user (人工客服已接入), delivered on A, reaches B's stream.
            [notice] = user_b.take(1, timeout=3)
            assert notice["from"] == "system" and notice["ticket_id"] == ticket.id

            started = time.monotonic()
            r = on_a.post(f"/api/v1/agent/tickets/{ticket.id}/messages", json={"text": "您好,我是客服"},
                          headers=bearer(agent_token))
            assert r.status_code == 200
            [got] = user_b.take(1, timeout=3)
            assert time.monotonic() - started < 3                  # Redis, not B's own re-read
            assert got["id"] == r.json()["message_id"] and got["from"] == "agent"
            assert got["text"] == "您好,我是客服" and got["ticket_id"] == ticket.id
            last = got["id"]
        finally:
            user_b.close()
            agents_b.close()

        # The user drops; A delivers while nobody listens; the user comes back on B, after the
        # last id it saw: exactly the missed messages, in order.
        missed = [delivery.deliver(cid, "agent", f"离线时的消息 {i}", ticket_id=ticket.id).id for i in range(3)]
        back = Stream(on_b, "/api/v1/chat/stream", params={"sender": "w1"},
                      headers={**bearer(token), "Last-Event-ID": last})
        try:
            assert [e["id"] for e in back.take(3, timeout=3)] == missed
            fresh = delivery.deliver(cid, "system", "客服已结束会话")           # published through A
            [event] = back.take(1, timeout=3)
            assert event["id"] == fresh.id
        finally:
            back.close()


def test_the_process_broker_publishing_from_a_thread_reaches_the_other_instance(two_instances):
    """delivery.publish from a worker thread (how services call it) crosses instances."""
    a, b = two_instances
    cid = rasa_sender(f"anon-{uuid.uuid4().hex}", None)
    sender = cid.split(":", 1)[1]
    with httpx.Client(base_url=b.base, timeout=httpx.Timeout(10, read=SLOW_PING_S * 2)) as on_b:
        stream = Stream(on_b, "/api/v1/chat/stream", params={"sender": sender}).wait_connected()
        try:
            out: list = []
            worker = threading.Thread(target=lambda: out.append(delivery.deliver(cid, "bot", "from a thread")))
            worker.start()
            worker.join(5)
            [event] = stream.take(1, timeout=3)
            assert event["id"] == out[0].id
        finally:
            stream.close()


def test_control_without_redis_between_them_the_other_instance_does_not_hear(two_instances):
    """What makes the tests above honest: publish through a broker B does not share (a memory
    one), and B's stream stays silent until its own re-read, far beyond these tests' waits."""
    from delivery import MemoryBroker

    a, b = two_instances
    cid = rasa_sender(f"anon-{uuid.uuid4().hex}", None)
    delivery.use_broker(MemoryBroker())
    with httpx.Client(base_url=b.base, timeout=httpx.Timeout(10, read=1.5)) as on_b:
        stream = Stream(on_b, "/api/v1/chat/stream", params={"sender": cid.split(":", 1)[1]}).wait_connected()
        try:
            delivery.deliver(cid, "bot", "unheard")
            with pytest.raises(httpx.ReadTimeout):
                stream.take(1, timeout=1.5)
        finally:
            stream.close()
