"""SSE: the encoder, the response (headers, pings, disconnect), /chat/messages, /chat/stream with
Last-Event-ID resume, stream tickets; on a real uvicorn server (SQLite and PostgreSQL)."""
from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
import uvicorn

import delivery
from _store_fixtures import DATABASES, migrated_for
from accounts import service as accounts_service
from api.sse import encode_comment, encode_event
from assistant import conversations
from assistant.chat import rasa_sender
from core.settings import Settings
from delivery import stream_tickets

ADMIN = "admin-secret-for-sse-tests"
PING_S = 0.2


# --- helpers shared with test_pubsub_redis.py -----------------------------------------------------
class LiveServer:
    """A real uvicorn server for `app` in a thread, on a free port of 127.0.0.1 (lifespan run)."""

    def __init__(self, app):
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                                    timeout_graceful_shutdown=3))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.app.state.test_server = self
        return self

    @property
    def loop(self):
        return self.server.servers[0].get_loop()

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(20)
        self.sock.close()


def make_app(tmp_path, database_url: str, **settings):
    from api.main import create_app

    return create_app(Settings(**{"admin_token": ADMIN, "var_dir": tmp_path, "demo_accounts": False,
                                  "database_url": database_url, "redis_url": None, "sse_ping_s": PING_S,
                                  **settings}), load_index=False)


def engine_url(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def parse_sse(response):
    """Events off a streaming httpx response: {"id", "data", "event"} or {"comment"}."""
    event: dict = {}
    data: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield {**event, "data": "\n".join(data)}
            elif event:
                yield event                      # retry: and the like, no data
            event, data = {}, []
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            else:
                event[name] = value


class Stream:
    """One open SSE connection; take(n) reads n data events (pings skipped) within a deadline."""

    def __init__(self, client: httpx.Client, url: str, **kwargs):
        self._cm = client.stream("GET", url, **kwargs)
        self.response = self._cm.__enter__()
        self.events = parse_sse(self.response) if self.response.status_code == 200 else iter(())
        self.comments: list[str] = []
        self.ended = False

    def wait_connected(self, timeout: float = 10) -> "Stream":
        deadline = time.monotonic() + timeout
        for item in self.events:
            if item.get("comment") == "connected":
                return self
            assert time.monotonic() < deadline, "no 'connected' comment"
        raise AssertionError("stream ended before it was connected")

    def take(self, n: int, timeout: float = 10) -> list[dict]:
        got, deadline = [], time.monotonic() + timeout
        for item in self.events:
            if "comment" in item:
                self.comments.append(item["comment"])
            elif "data" in item:
                payload = json.loads(item["data"])
                assert str(payload["id"]) == item.get("id"), "the event id is the item's id"
                got.append(payload)
                if len(got) >= n:
                    return got
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"wanted {n} events, got {got}")

    def quiet_for(self, seconds: float) -> list[dict]:
        """The data events that arrive within `seconds` (pings keep the loop turning)."""
        got, deadline = [], time.monotonic() + seconds
        for item in self.events:
            if "comment" in item:
                self.comments.append(item["comment"])
            elif "data" in item:
                got.append(json.loads(item["data"]))
            if time.monotonic() > deadline:
                break
        else:
            self.ended = True
        return got

    def close(self):
        self._cm.__exit__(None, None, None)


def bearer(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def wait_until(predicate, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# --- the encoder ----------------------------------------------------------------------------------
def test_encoder_keeps_multiline_data_and_ids_safe():
    raw = encode_event("第一行\r\n第二行\rthird\nid: 999\n\ndata: x", id="42")
    text = raw.decode("utf-8")
    assert text == ("id: 42\ndata: 第一行\ndata: 第二行\ndata: third\ndata: id: 999\ndata: \n"
                    "data: data: x\n\n")
    assert text.endswith("\n\n") and text.count("\n\n") == 1        # one event, never two
    for bad in ("4\n2", "4\r2", "4\x002"):
        with pytest.raises(ValueError):
            encode_event("x", id=bad)
    with pytest.raises(ValueError):
        encode_event("x", event="a\nb")
    assert encode_comment("a\nb") == b": a\n: b\n\n"


def test_encoded_json_survives_a_parser():
    message = {"text": "换行\n在这里\r\n还有", "emoji": "🙂"}

    class Fake:
        def iter_lines(self):
            yield from encode_event(json.dumps(message, ensure_ascii=False), id="7").decode().split("\n")

    [event] = list(parse_sse(Fake()))
    assert event["id"] == "7" and json.loads(event["data"]) == message


# --- the app --------------------------------------------------------------------------------------
@pytest.fixture(params=DATABASES)
def live(request, tmp_path):
    """(base URL, app) of a real server on a migrated database the services use."""
    from tickets import service as tickets

    with migrated_for(request.param, tmp_path, delivery, accounts_service, conversations, tickets) as engine:
        app = make_app(tmp_path, engine_url(engine))
        with LiveServer(app) as server:
            yield server.base, app


@pytest.fixture
def client(live):
    base, _app = live
    with httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=5)) as c:
        yield c


def test_messages_history_after_and_who_may_read(live, client):
    token, _ = accounts_service.create_session("sse-user-1")
    other, _ = accounts_service.create_session("sse-user-2")
    mine = rasa_sender("c1", "sse-user-1")
    delivery.append(mine, "user", "我的健康码为什么是橙色")
    delivery.append(mine, "bot", "因为……", [{"title": "转人工", "payload": "/request_human"}])
    delivery.append(rasa_sender("c1", None), "bot", "the anonymous c1's")

    r = client.get("/api/v1/chat/messages", params={"sender": "c1"}, headers=bearer(token))
    assert r.status_code == 200
    body = r.json()
    assert [(m["from"], m["text"]) for m in body["messages"]] == [("user", "我的健康码为什么是橙色"), ("bot", "因为……")]
    assert body["messages"][1]["buttons"] == [{"title": "转人工", "payload": "/request_human"}]
    assert set(body["messages"][0]) == {"id", "from", "text", "buttons", "at"}
    assert body["cursor"] == body["messages"][-1]["id"]

    empty = client.get("/api/v1/chat/messages", params={"sender": "c1", "after": body["cursor"]},
                       headers=bearer(token)).json()
    assert empty == {"messages": [], "cursor": body["cursor"]}
    agent = delivery.deliver(mine, "agent", "您好,我是客服", ticket_id="HC-20261201-0001")
    delivery.append(mine, "user", "好的")                                   # user turns: history only
    later = client.get("/api/v1/chat/messages", params={"sender": "c1", "after": body["cursor"]},
                       headers=bearer(token)).json()
    assert later["messages"] == [agent.as_dict()] and later["cursor"] == agent.id
    assert later["messages"][0]["ticket_id"] == "HC-20261201-0001"

    # Another user's token, or none, names another conversation: never this one.
    assert [m["text"] for m in client.get("/api/v1/chat/messages", params={"sender": "c1"},
                                          headers=bearer(other)).json()["messages"]] == []
    assert [m["text"] for m in client.get("/api/v1/chat/messages", params={"sender": "c1"}).json()["messages"]] \
        == ["the anonymous c1's"]
    assert client.get("/api/v1/chat/messages", params={"sender": "c1"},
                      headers=bearer("not-a-token")).status_code == 401


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "99999999999999999999", "", " ", "١٢"])
def test_a_bad_cursor_is_a_422(live, client, bad):
    r = client.get("/api/v1/chat/messages", params={"sender": "c1", "after": bad})
    assert r.status_code == 422 and r.json()["error"]["code"] in ("invalid_cursor", "invalid_request")
    r = client.get("/api/v1/chat/stream", params={"sender": "c1"}, headers={"Last-Event-ID": "x1"})
    assert r.status_code == 422


def test_stream_headers_pings_and_only_new_messages(live, client):
    base, app = live
    cid = rasa_sender("s-new", None)
    delivery.deliver(cid, "bot", "before the stream")                     # not shown: only new ones
    stream = Stream(client, "/api/v1/chat/stream", params={"sender": "s-new"}).wait_connected()
    try:
        headers = stream.response.headers
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-store" and headers["x-accel-buffering"] == "no"
        view = delivery.deliver(cid, "agent", "多行\n消息")
        [event] = stream.take(1)
        assert event["id"] == view.id and event["text"] == "多行\n消息" and event["from"] == "agent"
        stream.quiet_for(3 * PING_S)
        assert "ping" in stream.comments
    finally:
        stream.close()


def test_a_dropped_stream_resumes_from_last_event_id_without_loss_or_repeat(live, client):
    base, app = live
    token, _ = accounts_service.create_session("resume-user")
    cid = rasa_sender("r1", "resume-user")
    auth = bearer(token)
    stream = Stream(client, "/api/v1/chat/stream", params={"sender": "r1"}, headers=auth).wait_connected()
    first = delivery.deliver(cid, "agent", "one")
    [got] = stream.take(1)
    assert got["id"] == first.id
    stream.close()
    broker = app.state.broker
    topic = delivery.conversation_topic(cid)
    assert wait_until(lambda: broker.subscriber_count(topic) == 0), "the disconnect did not end the stream"

    # Delivered while nobody listens (a user turn in between: not part of the stream).
    missed = [delivery.deliver(cid, "agent", "two"), delivery.deliver(cid, "system", "three")]
    delivery.append(cid, "user", "typed meanwhile")
    missed.append(delivery.deliver(cid, "bot", "four"))

    again = Stream(client, "/api/v1/chat/stream", params={"sender": "r1"},
                   headers={**auth, "Last-Event-ID": got["id"]})
    try:
        events = again.take(3)
        assert [e["id"] for e in events] == [m.id for m in missed]
        assert [e["text"] for e in events] == ["two", "three", "four"]
        assert again.quiet_for(2 * PING_S) == []                  # nothing repeated
        live_one = delivery.deliver(cid, "agent", "five")
        assert [e["id"] for e in again.take(1)] == [live_one.id]
    finally:
        again.close()
    # ?after= does the same for a page that keeps its own cursor.
    by_query = Stream(client, "/api/v1/chat/stream", params={"sender": "r1", "after": missed[1].id}, headers=auth)
    try:
        assert [e["text"] for e in by_query.take(2)] == ["four", "five"]
    finally:
        by_query.close()
    # Another user's token never reads it.
    other, _ = accounts_service.create_session("resume-other")
    nosy = Stream(client, "/api/v1/chat/stream", params={"sender": "r1", "after": "0"}, headers=bearer(other))
    try:
        assert nosy.quiet_for(3 * PING_S) == []
    finally:
        nosy.close()


def test_many_messages_while_away_come_back_in_pages(live, client):
    cid = rasa_sender("bulk", None)
    start = delivery.deliver(cid, "bot", "start")
    sent = [delivery.append(cid, "bot", f"m{i}").id for i in range(230)]
    stream = Stream(client, "/api/v1/chat/stream", params={"sender": "bulk"}, headers={"Last-Event-ID": start.id})
    try:
        assert [e["id"] for e in stream.take(230)] == sent
    finally:
        stream.close()


def test_stream_ticket_stands_in_for_the_header(live, client, tmp_path):
    base, app = live
    token, _ = accounts_service.create_session("ticket-user")
    r = client.post("/api/v1/chat/stream-ticket", json={"sender": "t1"}, headers=bearer(token))
    assert r.status_code == 200 and r.json()["expires_in"] == 60
    ticket = r.json()["ticket"]
    assert "ticket-user" not in ticket and "t1" not in ticket
    cid = rasa_sender("t1", "ticket-user")

    stream = Stream(client, "/api/v1/chat/stream", params={"sender": "t1", "stream_ticket": ticket}).wait_connected()
    try:
        view = delivery.deliver(cid, "agent", "via ticket")
        assert [e["id"] for e in stream.take(1)] == [view.id]
    finally:
        stream.close()

    def status(**params):
        return client.get("/api/v1/chat/stream", params={"sender": "t1", **params}).status_code

    assert status(stream_ticket=ticket[:-2] + ("AA" if ticket[-2:] != "AA" else "BB")) == 401   # altered
    assert client.get("/api/v1/chat/stream", params={"sender": "t2", "stream_ticket": ticket}).status_code == 401
    settings = app.state.settings
    expired = stream_tickets.issue(settings, {"k": "chat", "c": cid, "s": "t1"}, ttl_s=-1)
    assert status(stream_ticket=expired) == 401
    agent_kind = stream_tickets.issue(settings, {"k": "agent", "a": 1})
    assert status(stream_ticket=agent_kind) == 401
    foreign = stream_tickets.issue(settings.model_copy(update={"data_key": "b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXktMzI="}),
                                   {"k": "chat", "c": cid, "s": "t1"})
    assert status(stream_ticket=foreign) == 401
    # Another instance with the same HC_DATA_KEY accepts it (no shared state but the key).
    assert stream_tickets.verify(Settings(data_key=settings.data_key, var_dir=tmp_path / "other"), ticket,
                                 kind="chat")["c"] == cid
    assert client.post("/api/v1/chat/stream-ticket", json={"sender": "t1"},
                       headers=bearer("nope")).status_code == 401
    assert client.post("/api/v1/chat/stream-ticket", json={"sender": ""}).status_code == 422


def test_closing_the_broker_ends_open_streams(live, client):
    """Shutdown (or a dropped subscription) ends the stream cleanly; the client reconnects."""
    import asyncio

    base, app = live
    server_loop = app.state.test_server.loop
    stream = Stream(client, "/api/v1/chat/stream", params={"sender": "closing"}).wait_connected()
    try:
        asyncio.run_coroutine_threadsafe(app.state.broker.close(), server_loop).result(5)
        started = time.monotonic()
        assert stream.quiet_for(5) == []
        assert stream.ended and time.monotonic() - started < 4
    finally:
        stream.close()


def test_openapi_lists_the_error_statuses(live, client):
    spec = client.get("/openapi.json").json()["paths"]
    for path, method, statuses in [("/api/v1/chat/messages", "get", {"200", "401", "422", "503"}),
                                   ("/api/v1/chat/stream", "get", {"200", "401", "422", "503"}),
                                   ("/api/v1/chat/stream-ticket", "post", {"200", "401", "422", "503"})]:
        assert statuses <= set(spec[path][method]["responses"]), path
    assert "text/event-stream" in spec["/api/v1/chat/stream"]["get"]["responses"]["200"]["content"]


# --- the agents' stream ---------------------------------------------------------------------------
def _ticket(conversation: str) -> str:
    from tickets import service as tickets

    view, created = tickets.create_or_get(conversation, channel="api", user_id=None, lang="zh",
                                          category="other", findings=[], summary="用户问:转人工")
    assert created
    return view.id


def test_agent_stream_resumes_from_last_event_id_and_keeps_each_agents_own_events(live, client):
    from tickets import service as tickets

    a_id, a_token = accounts_service.create_agent("agent A")
    b_id, b_token = accounts_service.create_agent("agent B")
    old = _ticket("anon:agent-stream-0")                        # before the stream: not shown
    a = Stream(client, "/api/v1/agent/stream", headers=bearer(a_token)).wait_connected()
    t1 = _ticket("anon:agent-stream-1")
    [created] = a.take(1)
    assert created["kind"] == "created" and created["ticket_id"] == t1 and created["ticket"]["id"] == t1
    tickets.claim(t1, accounts_service.agent_for_token(a_token))
    [claimed] = a.take(1)
    assert claimed["kind"] == "claimed" and claimed["id"] > created["id"]
    a.close()

    # While agent A is away: the user writes on A's ticket, and another ticket comes in.
    tickets.record_user_message(t1, "还在吗")
    t2 = _ticket("anon:agent-stream-2")
    again = Stream(client, "/api/v1/agent/stream", headers={**bearer(a_token), "Last-Event-ID": str(claimed["id"])})
    try:
        missed = again.take(2)
        assert [(e["kind"], e["ticket_id"]) for e in missed] == [("user_message", t1), ("created", t2)]
        assert missed[0]["text"] == "还在吗"
        assert again.quiet_for(2 * PING_S) == []
    finally:
        again.close()
    # Agent B, from the start: everyone's ticket changes, not A's user's messages.
    b = Stream(client, "/api/v1/agent/stream", params={"after": "0"}, headers=bearer(b_token))
    try:
        kinds = [(e["kind"], e["ticket_id"]) for e in b.take(4)]
        assert kinds == [("created", old), ("created", t1), ("claimed", t1), ("created", t2)]
        assert b.quiet_for(2 * PING_S) == []
    finally:
        b.close()


def test_agent_stream_auth_and_stream_tickets(live, client):
    _id, token = accounts_service.create_agent("agent T")
    user_token, _ = accounts_service.create_session("not-an-agent")
    assert client.get("/api/v1/agent/stream").status_code == 401
    assert client.get("/api/v1/agent/stream", headers=bearer(user_token)).status_code == 401
    assert client.post("/api/v1/agent/stream-ticket", headers=bearer(user_token)).status_code == 401
    r = client.post("/api/v1/agent/stream-ticket", headers=bearer(token))
    assert r.status_code == 200 and r.json()["expires_in"] == 60
    stream = Stream(client, "/api/v1/agent/stream", params={"stream_ticket": r.json()["ticket"]}).wait_connected()
    try:
        t = _ticket("anon:agent-ticket-1")
        assert [e["ticket_id"] for e in stream.take(1)] == [t]
    finally:
        stream.close()
    chat_ticket = client.post("/api/v1/chat/stream-ticket", json={"sender": "x"}).json()["ticket"]
    assert client.get("/api/v1/agent/stream", params={"stream_ticket": chat_ticket}).status_code == 401
    assert client.get("/api/v1/agent/stream", params={"stream_ticket": "garbage"}).status_code == 401
    assert client.get("/api/v1/agent/stream", headers={**bearer(token), "Last-Event-ID": "nope"}).status_code == 422
    spec = client.get("/openapi.json").json()["paths"]
    assert {"200", "401", "422", "503"} <= set(spec["/api/v1/agent/stream"]["get"]["responses"])
    assert {"200", "401", "503"} <= set(spec["/api/v1/agent/stream-ticket"]["post"]["responses"])
