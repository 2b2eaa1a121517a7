"""Rate limits (api/ratelimit.py): 429 + Retry-After per client address and per conversation,
X-Forwarded-For believed from a trusted proxy only, the channels' own limit, counters shared
through Redis by two app instances, and a Redis outage that limits nothing and breaks nothing."""
from __future__ import annotations

import logging
import uuid

import pytest
from fastapi.testclient import TestClient

from _accounts_fixtures import ADMIN, FakeRasa
from _env import require_redis
from _store_fixtures import migrated_for
from accounts import service
import delivery
from api import ratelimit
from assistant import conversations
from core.settings import Settings
from tickets import service as tickets

# A path every app answers without the index, the bot or an account: 404 with demo mode off.
API_PATH = "/api/v1/demo/accounts"


@pytest.fixture
def sqlite_db(tmp_path):
    with migrated_for("sqlite", tmp_path, service, conversations, tickets, delivery) as engine:
        yield engine


def limited_client(tmp_path, client=("203.0.113.7", 50000), **overrides) -> TestClient:
    from api.main import create_app

    settings = Settings(**{"admin_token": ADMIN, "var_dir": tmp_path, "demo_accounts": False,
                           "rate_limit_enabled": True, "rate_limit": "1000/minute",
                           "rate_limit_conversation": "1000/minute", "rate_limit_channel": "1000/minute",
                           "redis_url": None, **overrides})
    return TestClient(create_app(settings, load_index=False), client=client)


@pytest.fixture
def make(sqlite_db, tmp_path):
    """make(**settings) → a started TestClient (FakeRasa as the bot); all stopped afterwards."""
    started = []

    def factory(client=("203.0.113.7", 50000), **overrides):
        c = limited_client(tmp_path, client=client, **overrides)
        c.__enter__()
        c.app.state.real_rasa, c.app.state.rasa = c.app.state.rasa, FakeRasa()
        started.append(c)
        return c

    yield factory
    for c in started:
        c.app.state.rasa = c.app.state.real_rasa
        c.__exit__(None, None, None)


def assert_limited(resp) -> int:
    assert resp.status_code == 429, resp.text
    assert resp.json()["error"]["code"] == "rate_limited" and resp.json()["error"]["message"]
    retry = resp.headers["retry-after"]
    assert retry.isdigit() and 1 <= int(retry) <= 60, retry
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["x-content-type-options"] == "nosniff"
    return int(retry)


def test_per_address_limit_gives_429_with_retry_after(make):
    client = make(rate_limit="5/minute")
    statuses = [client.get(API_PATH).status_code for _ in range(5)]
    assert statuses == [404] * 5                      # counted whatever the answer
    assert_limited(client.get(API_PATH))
    assert_limited(client.post("/api/v1/chat", json={"sender": "s", "text": "健康码"}))  # every /api route


def test_300_quick_requests_from_one_client_see_429s_with_the_defaults(make):
    client = make(rate_limit=Settings.model_fields["rate_limit"].default)
    statuses = [client.get(API_PATH).status_code for _ in range(300)]
    assert statuses.count(429) >= 100 and statuses[0] == 404


def test_pages_health_and_the_schema_are_not_limited(make):
    client = make(rate_limit="2/minute")
    for _ in range(6):
        assert client.get("/healthz").status_code in (200, 503)
        assert client.get("/widget").status_code == 200
        assert client.get("/openapi.json").status_code == 200
    assert client.get(API_PATH).status_code == 404


def test_per_conversation_limit_is_separate_from_the_address(make):
    client = make(rate_limit="100/minute", rate_limit_conversation="3/minute")
    fake = client.app.state.rasa
    for _ in range(3):
        assert client.post("/api/v1/chat", json={"sender": "talkative", "text": "健康码可以截图吗"}).status_code == 200
    retry = assert_limited(client.post("/api/v1/chat", json={"sender": "talkative", "text": "健康码可以截图吗"}))
    assert retry >= 1
    assert len(fake.calls) == 3                       # the refused turn never reached the bot
    # Another conversation from the same address still talks; other routes too.
    assert client.post("/api/v1/chat", json={"sender": "quiet", "text": "健康码可以截图吗"}).status_code == 200
    assert client.get("/api/v1/chat/messages", params={"sender": "talkative"}).status_code == 200


def test_the_same_sender_signed_in_is_another_conversation(make):
    client = make(rate_limit="100/minute", rate_limit_conversation="2/minute")
    token, _ = service.create_session("u-rate")
    for _ in range(2):
        client.post("/api/v1/chat", json={"sender": "c1", "text": "你好"})
    assert_limited(client.post("/api/v1/chat", json={"sender": "c1", "text": "你好"}))
    # The signed-in user's "c1" is user:<hash>:c1, not anon:c1 (assistant.chat.rasa_sender).
    r = client.post("/api/v1/chat", json={"sender": "c1", "text": "你好"}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(make):
    # The app behind nginx on 10.0.0.2: each forwarded client has its own budget.
    proxied = make(rate_limit="2/minute", trusted_proxies=["10.0.0.0/8"], client=("10.0.0.2", 1))
    for _ in range(2):
        proxied.get(API_PATH, headers={"X-Forwarded-For": "192.0.2.10"})
    assert_limited(proxied.get(API_PATH, headers={"X-Forwarded-For": "192.0.2.10"}))
    assert proxied.get(API_PATH, headers={"X-Forwarded-For": "192.0.2.11"}).status_code == 404
    # A client that prepends a made-up hop still lands in its own bucket (nginx appends the real one).
    assert_limited(proxied.get(API_PATH, headers={"X-Forwarded-For": "1.2.3.4, 192.0.2.10"}))

    # A client talking to the app directly cannot pick a bucket with the header.
    direct = make(rate_limit="2/minute", trusted_proxies=["10.0.0.0/8"], client=("203.0.113.9", 1))
    for i in range(2):
        direct.get(API_PATH, headers={"X-Forwarded-For": f"192.0.2.{100 + i}"})
    assert_limited(direct.get(API_PATH, headers={"X-Forwarded-For": "192.0.2.200"}))


def scope(peer: str, *xff: str) -> dict:
    return {"type": "http", "client": (peer, 1), "headers": [(b"x-forwarded-for", v.encode()) for v in xff]}


def test_client_address_rules():
    trusted = ratelimit.parse_networks(["127.0.0.1", "::1", "10.0.0.0/8"])
    assert ratelimit.client_address(scope("203.0.113.1", "1.1.1.1"), trusted) == "203.0.113.1"
    assert ratelimit.client_address(scope("127.0.0.1", "1.1.1.1"), trusted) == "1.1.1.1"
    assert ratelimit.client_address(scope("127.0.0.1"), trusted) == "127.0.0.1"
    # From the right: the nearest hop that is not one of our proxies.
    assert ratelimit.client_address(scope("127.0.0.1", "6.6.6.6, 2.2.2.2, 10.1.1.1"), trusted) == "2.2.2.2"
    assert ratelimit.client_address(scope("127.0.0.1", "6.6.6.6", "2.2.2.2"), trusted) == "2.2.2.2"
    assert ratelimit.client_address(scope("::1", "[2001:db8::1]:4711"), trusted) == "2001:db8::1"
    assert ratelimit.client_address(scope("127.0.0.1", "198.51.100.3:8080"), trusted) == "198.51.100.3"
    assert ratelimit.client_address(scope("::ffff:127.0.0.1", "5.5.5.5"), trusted) == "5.5.5.5"
    # Nobody trusted: the header means nothing.
    assert ratelimit.client_address(scope("127.0.0.1", "1.1.1.1"), []) == "127.0.0.1"


def test_channel_push_routes_have_their_own_limit(make):
    client = make(rate_limit="2/minute", rate_limit_channel="4/minute")
    statuses = [client.post("/channels/wechat", content=b"<xml/>").status_code for _ in range(4)]
    assert statuses == [404] * 4                       # WeChat not configured: 404, counted
    assert_limited(client.post("/channels/wechat", content=b"<xml/>"))
    # The push budget is not the API's: /api routes still answer.
    assert client.get(API_PATH).status_code == 404


def test_limits_off_means_off(make):
    client = make(rate_limit="1/minute", rate_limit_enabled=False)
    assert [client.get(API_PATH).status_code for _ in range(5)] == [404] * 5


def test_a_bad_limit_setting_names_itself():
    with pytest.raises(ValueError, match="HC_RATE_LIMIT"):
        ratelimit.RateLimiter(Settings(rate_limit="lots"))


def test_redis_down_limits_nothing_and_breaks_nothing(make, caplog):
    client = make(rate_limit="2/minute")
    # Storage opens on the first request: point it at a port where nothing listens.
    client.app.state.ratelimiter.redis_url = "redis://127.0.0.1:1/0"
    with caplog.at_level(logging.WARNING, logger="hc.ratelimit"):
        statuses = [client.get(API_PATH).status_code for _ in range(6)]
    assert statuses == [404] * 6
    downs = [r for r in caplog.records if r.name == "hc.ratelimit"]
    assert len(downs) == 1 and "unavailable" in downs[0].getMessage()
    assert "127.0.0.1:1" not in str(getattr(downs[0], "fields", ""))      # no URL in the log


def test_two_instances_share_the_counters_in_redis(make):
    url = require_redis()
    prefix = f"hc-rl-test-{uuid.uuid4().hex[:10]}"
    a = make(rate_limit="4/minute", redis_url=url, rate_limit_key_prefix=prefix)
    b = make(rate_limit="4/minute", redis_url=url, rate_limit_key_prefix=prefix)
    assert a.app is not b.app
    assert [a.get(API_PATH).status_code, b.get(API_PATH).status_code,
            a.get(API_PATH).status_code, b.get(API_PATH).status_code] == [404] * 4
    assert_limited(a.get(API_PATH))
    assert_limited(b.get(API_PATH))
    # Conversations too: a turn on one instance counts on the other.
    for c in (a, b):
        c.app.state.ratelimiter.per_address = ratelimit.parse_limits("100/minute", "test")
        c.app.state.ratelimiter.per_conversation = ratelimit.parse_limits("2/minute", "test")
    assert a.post("/api/v1/chat", json={"sender": "hop", "text": "你好"}).status_code == 200
    assert b.post("/api/v1/chat", json={"sender": "hop", "text": "你好"}).status_code == 200
    assert_limited(a.post("/api/v1/chat", json={"sender": "hop", "text": "你好"}))
    import redis

    r = redis.Redis.from_url(url)
    keys = r.keys(f"{prefix}*")
    assert keys and all(b"203.0.113.7" not in k and b"hop" not in k for k in keys)   # hashed, not as sent
    r.delete(*keys)
