"""PostgreSQL or Redis unreachable for a few seconds, on the real stack (Rasa + app) pointed at
both through tools/tcp_proxy.py: requests that need the store get 503 (with Retry-After) at once,
none a 500 or a hang; after the outage they succeed again without any process being restarted
(the app's pool and Rasa's tracker store reconnect; the pub/sub of the message streams
re-subscribes and wakes its streams, so what was posted meanwhile arrives)."""
from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid

import httpx
import pytest

from tests._env import require_redis, throwaway_postgres_database
from tests.test_supervisor import children_of
from tools.stack import running_stack
from tools.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.timeout(900)]
ADMIN = "outage-admin-token"
OUTAGE_S = 6.0
# Longer than the connect timeout (store/db.py: 5 s): a request that waited for the server to
# answer would take the whole outage; bounded, it takes the timeout.
BLACKHOLE_S = 12.0
RECOVER_WITHIN_S = 20.0
CLIENT_TIMEOUT_S = 15.0


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --- the proxy itself -------------------------------------------------------------------------------
@contextlib.contextmanager
def echo_server():
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def echo(conn) -> None:
        with contextlib.suppress(OSError), conn:
            for data in iter(lambda: conn.recv(4096), b""):
                conn.sendall(data)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()


def test_the_proxy_forwards_refuses_blackholes_and_resumes():
    import socket

    def connect(port: int, timeout: float = 2.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=timeout)

    with echo_server() as target, TcpProxy("127.0.0.1", target) as proxy:
        with connect(proxy.port) as a:
            a.sendall(b"ping")
            assert a.recv(10) == b"ping"
            proxy.pause()
            assert proxy.paused and proxy.mode == "refuse"
            # The open connection is reset, a new one refused.
            with pytest.raises(OSError):
                a.sendall(b"again")
                if not a.recv(10):
                    raise ConnectionResetError("closed")
        with pytest.raises(ConnectionRefusedError):
            connect(proxy.port)
        proxy.resume()
        with connect(proxy.port) as b:
            b.sendall(b"back")
            assert b.recv(10) == b"back"
            proxy.pause("blackhole")
            with pytest.raises(OSError):
                b.sendall(b"x")
                if not b.recv(10):
                    raise ConnectionResetError("closed")
        # Accepted, never answered: only a client timeout ends the wait.
        with connect(proxy.port, timeout=0.5) as c:
            c.sendall(b"hello?")
            with pytest.raises(socket.timeout):
                c.recv(10)
            proxy.resume()                 # what the blackhole held is closed (reset)
            with pytest.raises(ConnectionResetError):
                if not c.recv(10):
                    raise ConnectionResetError("closed")
        with connect(proxy.port) as d:
            d.sendall(b"ok")
            assert d.recv(10) == b"ok"
    with pytest.raises(OSError):           # stopped: nothing listens
        connect(proxy.port)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from core.settings import REPO_ROOT
    from tests._env import missing

    if not (REPO_ROOT / "var" / "artifacts.json").exists():
        missing("no artefacts: run `make setup`")
    redis_url = require_redis()
    with contextlib.ExitStack() as es:
        database = es.enter_context(throwaway_postgres_database("hc_outage"))
        pg = es.enter_context(TcpProxy("127.0.0.1", 5432))
        rd = es.enter_context(TcpProxy("127.0.0.1", 6379))
        name = database.rsplit("/", 1)[1]
        env = {"HC_ADMIN_TOKEN": ADMIN,
               "HC_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg.port}/{name}",
               "HC_REDIS_URL": f"redis://127.0.0.1:{rd.port}/{redis_url.rsplit('/', 1)[1]}",
               # The limiter stays on (in Redis, so the Redis outage reaches it too), far from its limits.
               "HC_RATE_LIMIT": "100000/minute", "HC_RATE_LIMIT_CONVERSATION": "100000/minute",
               "HC_RATE_LIMIT_KEY_PREFIX": f"hc-rl-outage-{uuid.uuid4().hex[:8]}"}
        var_dir = tmp_path_factory.mktemp("outage")
        base, _startup, pid = es.enter_context(running_stack(var_dir, env=env))
        client = es.enter_context(httpx.Client(base_url=base, timeout=CLIENT_TIMEOUT_S))
        yield {"client": client, "base": base, "pid": pid, "pg": pg, "redis": rd, "redis_url": redis_url,
               "var_dir": var_dir}


def wait_healthy(client, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if client.get("/healthz").status_code == 200:
                return
        time.sleep(0.5)
    raise AssertionError("stack not healthy")


def chat(client, sender: str, text: str, token: str | None = None) -> dict:
    r = client.post("/api/v1/chat", json={"sender": sender, "text": text}, headers=bearer(token) if token else {})
    assert r.status_code == 200, r.text
    return r.json()


class Outcomes:
    """(name, status, error code, seconds, Retry-After) of every request made."""

    def __init__(self):
        self.rows: list[tuple[str, object, str | None, float, str | None]] = []

    def call(self, name: str, fn) -> tuple[object, str | None]:
        t0 = time.monotonic()
        try:
            r = fn()
        except httpx.HTTPError as exc:
            self.rows.append((name, type(exc).__name__, None, time.monotonic() - t0, None))
            return type(exc).__name__, None
        code = None
        if r.status_code != 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                code = r.json()["error"]["code"]
        self.rows.append((name, r.status_code, code, time.monotonic() - t0, r.headers.get("retry-after")))
        return r.status_code, code


def store_requests(client, agent: str, sender: str, ticket: str) -> dict:
    """Requests that each need the app's database, by name."""
    return {
        "messages": lambda: client.get("/api/v1/chat/messages", params={"sender": sender, "after": "0"}),
        "handoff": lambda: client.get("/api/v1/chat/handoff", params={"sender": sender}),
        "agent_tickets": lambda: client.get("/api/v1/agent/tickets", headers=bearer(agent)),
        "agent_ticket": lambda: client.get(f"/api/v1/agent/tickets/{ticket}", headers=bearer(agent)),
        "new_agent": lambda: client.post("/api/v1/admin/agents", json={"name": "坐席" + uuid.uuid4().hex[:4]},
                                         headers=bearer(ADMIN)),
        "chat": lambda: client.post("/api/v1/chat", json={"sender": sender + "-q", "text": "健康码可以截图吗"}),
    }


def until_all_ok(requests: dict, out: Outcomes, within_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within_s:
        if all(out.call(name, fn)[0] == 200 for name, fn in requests.items()):
            return time.monotonic() - t0
        time.sleep(0.5)
    return float("inf")


@pytest.fixture(scope="module")
def agent(stack):
    client = stack["client"]
    wait_healthy(client)
    r = client.post("/api/v1/admin/agents", json={"name": "坐席甲"}, headers=bearer(ADMIN))
    assert r.status_code == 200, r.text
    return r.json()["token"]


@pytest.mark.e2e
@pytest.mark.postgres
def test_postgresql_unreachable_for_a_few_seconds(stack, agent):
    client, pg = stack["client"], stack["pg"]
    wait_healthy(client)
    sender = f"pg-{uuid.uuid4().hex[:8]}"
    ticket = chat(client, sender, "转人工")["meta"]["ticket_id"]
    assert ticket
    requests = store_requests(client, agent, sender, ticket)
    out = Outcomes()
    assert until_all_ok(requests, out, 10) < 10
    kids = children_of(stack["pid"])

    for mode in ("refuse", "blackhole"):
        pg.pause(mode)
        t0 = time.monotonic()
        during = Outcomes()
        try:
            while time.monotonic() - t0 < (OUTAGE_S if mode == "refuse" else BLACKHOLE_S):
                for name, fn in requests.items():
                    during.call(name, fn)
                search = during.call("search", lambda: client.get("/api/v1/faq/search", params={"q": "健康码可以截图吗"}))
                assert search[0] == 200, search           # the FAQ does not need the database
        finally:
            pg.resume()
        print(f"\n{mode}: " + json.dumps(summarise(during.rows), ensure_ascii=False))
        for name, status, code, seconds, retry_after in during.rows:
            if name == "search":
                continue
            assert status == 503, (mode, name, status, code)
            # chat: the app's store, or Rasa's tracker store on the same server, whichever noticed first.
            assert code in (("store_unavailable", "bot_unavailable") if name == "chat" else ("store_unavailable",)), \
                (mode, name, code)
            assert retry_after and int(retry_after) > 0, (mode, name)
            # Refused: at once. A server that never answers: the connect timeout (5 s), not forever.
            assert seconds < (2.0 if mode == "refuse" else 8.0), (mode, name, seconds)
        back = until_all_ok(requests, out, RECOVER_WITHIN_S)
        print(f"{mode}: every request 200 again {back:.1f}s after the outage ended")
        assert back <= RECOVER_WITHIN_S, f"not back within {RECOVER_WITHIN_S}s after a {mode} outage"
        # And it stays back: a few rounds in a row, every one 200.
        for _ in range(3):
            for name, fn in requests.items():
                assert out.call(name, fn)[0] == 200, (mode, name, out.rows[-1])
    assert children_of(stack["pid"]) == kids, "a process was restarted: recovery must not need one"
    assert not [r for r in out.rows + during.rows if r[1] == 500]


def summarise(rows) -> dict:
    counts: dict[str, int] = {}
    slowest: dict[str, float] = {}
    for name, status, code, seconds, _ra in rows:
        key = f"{name}:{status}:{code}" if code else f"{name}:{status}"
        counts[key] = counts.get(key, 0) + 1
        slowest[name] = max(slowest.get(name, 0.0), round(seconds, 2))
    return {"counts": counts, "slowest_s": slowest}


def read_stream(base: str, sender: str, got: list, ready: threading.Event, stop: threading.Event) -> None:
    """The conversation's SSE stream, kept open (reconnecting with Last-Event-ID) until `stop`."""
    last = None
    while not stop.is_set():
        headers = {"Last-Event-ID": last} if last else {}
        try:
            with httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=40)) as c:
                with c.stream("GET", "/api/v1/chat/stream", params={"sender": sender}, headers=headers) as r:
                    for line in r.iter_lines():
                        if line.startswith(": connected"):
                            ready.set()
                        elif line.startswith("id:"):
                            last = line[3:].strip()
                        elif line.startswith("data:"):
                            got.append((time.monotonic(), json.loads(line[5:])))
                        if stop.is_set():
                            return
        except httpx.HTTPError:
            time.sleep(0.5)


def wait_for_text(got: list, text: str, timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        for _t, message in list(got):
            if message.get("text") == text:
                return time.monotonic() - t0
        time.sleep(0.1)
    return float("inf")


@pytest.mark.e2e
@pytest.mark.postgres
def test_redis_unreachable_for_a_few_seconds(stack, agent):
    import redis

    client, rd, base = stack["client"], stack["redis"], stack["base"]
    wait_healthy(client)
    sender = f"rd-{uuid.uuid4().hex[:8]}"
    ticket = chat(client, sender, "转人工")["meta"]["ticket_id"]
    assert client.post(f"/api/v1/agent/tickets/{ticket}/claim", headers=bearer(agent)).status_code == 200
    kids = children_of(stack["pid"])

    got: list = []
    ready, stop = threading.Event(), threading.Event()
    reader = threading.Thread(target=read_stream, args=(base, sender, got, ready, stop), daemon=True)
    reader.start()
    try:
        assert ready.wait(30), "the stream never connected"

        def say(text: str) -> int:
            return client.post(f"/api/v1/agent/tickets/{ticket}/messages", json={"text": text},
                               headers=bearer(agent)).status_code

        assert say("坐席消息一") == 200
        assert wait_for_text(got, "坐席消息一", 5) < 5            # pub/sub works

        rd.pause()
        t0 = time.monotonic()
        during = Outcomes()
        try:
            # The agent's message is stored (PostgreSQL is up); its notification is lost with Redis.
            assert during.call("agent_message", lambda: client.post(
                f"/api/v1/agent/tickets/{ticket}/messages", json={"text": "坐席消息二"}, headers=bearer(agent)))[0] == 200
            while time.monotonic() - t0 < OUTAGE_S:
                during.call("search", lambda: client.get("/api/v1/faq/search", params={"q": "健康码可以截图吗"}))
                during.call("messages", lambda: client.get("/api/v1/chat/messages", params={"sender": sender, "after": "0"}))
                during.call("chat", lambda: client.post("/api/v1/chat", json={"sender": sender + "-q", "text": "健康码可以截图吗"}))
                time.sleep(0.2)
        finally:
            rd.resume()
        print("\nredis: " + json.dumps(summarise(during.rows), ensure_ascii=False))
        for name, status, code, seconds, retry_after in during.rows:
            assert status != 500 and not isinstance(status, str), (name, status)
            assert seconds < CLIENT_TIMEOUT_S
            if name in ("search", "messages", "agent_message"):
                assert status == 200, (name, status, code)      # none of them needs Redis
            elif status != 200:
                # Rasa's lock store is in Redis: a turn waits for it with a polite 503.
                assert (status, code) == (503, "bot_unavailable") and retry_after, (name, status, code)

        # After the outage: the stream gets what was posted meanwhile (the pub/sub reconnected and
        # woke it), new messages arrive through pub/sub again, and the bot answers again.
        assert wait_for_text(got, "坐席消息二", 15) < 15, "the message posted during the outage never arrived"
        out = Outcomes()
        back = until_all_ok({"chat": lambda: client.post("/api/v1/chat", json={"sender": sender + "-q",
                                                                               "text": "健康码可以截图吗"})},
                            out, RECOVER_WITHIN_S)
        print(f"redis: chat 200 again {back:.1f}s after the outage ended")
        assert back <= RECOVER_WITHIN_S
        assert say("坐席消息三") == 200
        assert wait_for_text(got, "坐席消息三", 5) < 5, "pub/sub did not recover"
        real = redis.Redis.from_url(stack["redis_url"])
        assert [c for c in real.pubsub_channels("hc:conversation:*")], "nobody subscribed again"
    finally:
        stop.set()
        reader.join(45)
    texts = [m["text"] for _t, m in got]
    assert texts.count("坐席消息二") == 1 and texts.count("坐席消息三") == 1     # once each, no repeat
    assert children_of(stack["pid"]) == kids
