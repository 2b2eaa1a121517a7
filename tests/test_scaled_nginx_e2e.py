"""The scaled stack (tools/run_scaled.py) end to end: nginx in front of two app instances, two Rasa
servers, one PostgreSQL database (a throwaway one) and Redis, every process supervised.

Through nginx a FAQ and a signed-in diagnosis work; a conversation whose turns go alternately to
instance A and instance B (their own ports) keeps its context; an agent's message sent through A
reaches the user's stream on B (and through nginx). Then, under a bounded load on loopback,
`kill -9` of app instance A and then of Rasa server B: the other keeps answering through nginx
(the service answers again within 30 s: in practice at once), the supervisor has app A back
within 30 s and Rasa B within 60 s, no ticket and no stored message is lost, and the
WeChat pushes taken with `success` just before the kill are answered after it. Last, a short
soak (tools/soak.py) on the same stack: no lost message, no 5xx, nothing personal at rest."""
from __future__ import annotations

import base64
import os
import random
import secrets
import signal
import threading
import time
import urllib.request
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field

import httpx
import pytest

from _env import require_redis, throwaway_postgres_database
from test_sse import Stream
from tools import fake_wechat
from tools.run_scaled import Running, running_scaled
from tools.try_channels import wechat_push

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(900)]

ADMIN = "scaled-nginx-admin-token"
# The service recovers from each kill within 30 s (the figure): requests through nginx
# are answered again at once, by the other instance or the other Rasa server. The killed app
# instance is itself back within 30 s (its port opens once its index is loaded: until then nginx
# sends everything to the other one), and so is the killed Rasa server (started with
# tools/rasa_boot's fast model load, as make run does: 23 s measured here with the machine fully
# loaded). Both can be set (HC_TEST_BACK_WITHIN_S, HC_TEST_RASA_BACK_WITHIN_S); the measured
# figures are printed either way.
RECOVERY_S = 30
BACK_WITHIN_S = float(os.environ.get("HC_TEST_BACK_WITHIN_S", "30"))
RASA_BACK_WITHIN_S = float(os.environ.get("HC_TEST_RASA_BACK_WITHIN_S", "30"))
FAQ = ["健康码可以截图吗", "八闽健康码在哪里申请", "怎么为家人申领", "健康码可以打印吗", "老人没有智能手机怎么办",
       "How do I create my own health code?", "境外入闽怎么申请健康码", "健康码颜色代表什么"]


@dataclass
class Scaled:
    run: Running
    db: str
    wx: fake_wechat.FakeWeChat
    wx_creds: dict


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    with ExitStack() as stack:
        db = stack.enter_context(throwaway_postgres_database("hc_ngx"))
        token, appid, secret = "tok" + secrets.token_hex(4), "wx" + secrets.token_hex(8), secrets.token_hex(12)
        aes_key = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        wx = stack.enter_context(fake_wechat.running(appid, secret))
        env = {"HC_DATABASE_URL": db, "HC_REDIS_URL": require_redis(), "HC_ADMIN_TOKEN": ADMIN,
               "HC_DEMO": "1", "HC_RATE_LIMIT_ENABLED": "0",
               "HC_WECHAT_TOKEN": token, "HC_WECHAT_APPID": appid, "HC_WECHAT_APPSECRET": secret,
               "HC_WECHAT_AES_KEY": aes_key, "HC_WECHAT_API_BASE": wx.base_url}
        run = stack.enter_context(running_scaled(tmp_path_factory.mktemp("scaled-nginx"), env=env))
        print(f"scaled stack healthy in {run.startup_s:.1f}s")
        yield Scaled(run, db, wx, {"token": token, "appid": appid, "aes_key": aes_key})


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def chat(client: httpx.Client, sender: str, text: str, token: str | None = None) -> dict:
    r = client.post("/api/v1/chat", json={"sender": sender, "text": text}, headers=bearer(token) if token else {})
    assert r.status_code == 200, r.text
    return r.json()


def new_agent(client: httpx.Client, name: str) -> str:
    r = client.post("/api/v1/admin/agents", json={"name": name}, headers=bearer(ADMIN))
    assert r.status_code == 200, r.text
    return r.json()["token"]


def db_ids(db: str) -> tuple[set[str], set[int]]:
    import psycopg

    with psycopg.connect(db) as conn:
        tickets = {r[0] for r in conn.execute("select id from tickets")}
        messages = {r[0] for r in conn.execute("select id from conversation_messages")}
    return tickets, messages


# --- through nginx, and across instances ----------------------------------------------------------
def test_faq_and_a_signed_in_diagnosis_through_nginx(scaled):
    run = scaled.run
    with httpx.Client(base_url=run.base, timeout=60) as api:
        health = api.get("/healthz")
        assert health.status_code == 200 and health.headers["server"] == "nginx"
        body = chat(api, f"n-{uuid.uuid4().hex}", "健康码可以截图吗")
        assert body["meta"]["faq_id"] == "personal.screenshot"

        doc = {"user_id": "ngx-user", "auth_level": "L3", "identity_check": "mismatch", "arrival": "none",
               "face_attempts": [{"at": "2026-11-26T09:30:00+08:00", "ok": False, "reason": "identity_mismatch"}]}
        assert api.post("/api/v1/admin/accounts/ngx-user", json=doc, headers=bearer(ADMIN)).status_code == 200
        token = api.post("/api/v1/admin/sessions", json={"user_id": "ngx-user"}, headers=bearer(ADMIN)).json()["token"]
        body = chat(api, f"n-{uuid.uuid4().hex}", "我刷脸一直不通过是怎么回事", token)
        assert body["meta"]["diagnosis"] == ["face.identity_mismatch"], body

        # Both instances take requests (nginx's access log names the upstream of each).
        for _ in range(6):
            assert api.get("/api/v1/faq/search", params={"q": "健康码可以打印吗"}).status_code == 200
        # A body over HC_MAX_BODY_BYTES: nginx refuses it itself, in the API's error shape.
        big = api.post("/api/v1/chat", content=b'{"sender":"x","text":"' + b"a" * 300_000 + b'"}',
                       headers={"content-type": "application/json"})
        assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    log = (run.run_dir / "logs" / "nginx-access.log").read_text()
    searches = [line.split()[7] for line in log.splitlines() if " /api/v1/faq/search " in line]
    assert {f"127.0.0.1:{p}" for p in run.state()["ports"]["app"].values()} <= set(searches), searches
    assert "健康码" not in log and "q=" not in log            # no query strings in nginx's log


def test_a_conversation_hopping_between_instances_keeps_its_context(scaled):
    run = scaled.run
    with httpx.Client(base_url=run.apps["a"], timeout=60) as a, httpx.Client(base_url=run.apps["b"], timeout=60) as b:
        sender = f"hop-{uuid.uuid4().hex}"
        assert chat(a, sender, "怎么为家人申领")["meta"]["faq_id"] == "family.howto"
        # A follow-up that only the tracker (PostgreSQL, written by the other Rasa) can answer.
        follow = chat(b, sender, "那最多几个?")
        assert follow["meta"]["faq_id"] == "family.quota" and follow["meta"].get("followup_of") == "family.howto", follow
        assert chat(a, sender, "老人呢?")["meta"]["faq_id"] == "family.elderly"
        # Control: the same words with no history are not answered as family.quota.
        assert chat(b, f"hop-{uuid.uuid4().hex}", "那最多几个?")["meta"]["decision"] != "answer"

        # A two-turn hand-off: the number asked for on A is taken as the callback number on B.
        anon = f"hop-anon-{uuid.uuid4().hex}"
        first = chat(a, anon, "转人工")
        ticket_id = first["meta"]["ticket_id"]
        assert ticket_id and len(first["messages"]) == 2
        left = chat(b, anon, "我的手机是 139-1234-5678")
        assert "139****5678" in left["messages"][0]["text"] and left["meta"]["ticket_id"] == ticket_id
        agent = new_agent(a, "坐席跳转")
        assert a.post(f"/api/v1/agent/tickets/{ticket_id}/claim", headers=bearer(agent)).status_code == 200
        detail = b.get(f"/api/v1/agent/tickets/{ticket_id}", headers=bearer(agent)).json()
        assert detail["has_callback_phone"] is True and detail["awaiting_contact"] is False


def test_an_agent_message_through_a_reaches_the_users_stream_on_b_and_through_nginx(scaled):
    run = scaled.run
    sender = f"sse-{uuid.uuid4().hex}"
    timeout = httpx.Timeout(20, read=20)
    with httpx.Client(base_url=run.apps["a"], timeout=timeout) as a, \
            httpx.Client(base_url=run.apps["b"], timeout=timeout) as b, \
            httpx.Client(base_url=run.base, timeout=timeout) as edge:
        ticket_id = chat(edge, sender, "转人工")["meta"]["ticket_id"]
        agent = new_agent(a, "坐席甲")
        on_b = Stream(b, "/api/v1/chat/stream", params={"sender": sender}).wait_connected()
        via_nginx = Stream(edge, "/api/v1/chat/stream", params={"sender": sender}).wait_connected()
        try:
            assert a.post(f"/api/v1/agent/tickets/{ticket_id}/claim", headers=bearer(agent)).status_code == 200
            [notice] = on_b.take(1, timeout=5)
            assert notice["from"] == "system" and notice["ticket_id"] == ticket_id
            assert via_nginx.take(1, timeout=5)[0]["id"] == notice["id"]
            started = time.monotonic()
            r = a.post(f"/api/v1/agent/tickets/{ticket_id}/messages", json={"text": "您好,我是客服甲"},
                       headers=bearer(agent))
            assert r.status_code == 200
            [got] = on_b.take(1, timeout=5)
            [edge_got] = via_nginx.take(1, timeout=5)      # nginx does not buffer the stream
            elapsed = time.monotonic() - started
            assert got["id"] == edge_got["id"] == r.json()["message_id"] and got["from"] == "agent"
            assert got["text"] == "您好,我是客服甲"
            assert elapsed < 5, elapsed                    # Redis pub/sub, not the stream's own re-read
        finally:
            on_b.response.close()
            via_nginx.response.close()


# --- faults under load ----------------------------------------------------------------------------
@dataclass
class Result:
    at: float          # monotonic, when the request was sent
    route: str
    status: int        # 0: no HTTP answer at all (connection refused, reset, timeout)
    code: str | None = None


@dataclass
class Load:
    """A few client threads and one agent thread on loopback, all through nginx; bounded by a
    pause between requests."""
    base: str
    agent_token: str
    threads: int = 3
    pause_s: float = 0.4
    results: list[Result] = field(default_factory=list)
    tickets: dict[str, str] = field(default_factory=dict)          # ticket id → sender
    message_ids: set[int] = field(default_factory=set)             # every id a client was given
    agent_messages: dict[int, str] = field(default_factory=dict)   # agent message id → sender
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> "Load":
        self._workers = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.threads)]
        self._workers.append(threading.Thread(target=self._agent, daemon=True))
        for w in self._workers:
            w.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(30)

    def _call(self, client: httpx.Client, route: str, method: str, url: str, **kw) -> httpx.Response | None:
        at = time.monotonic()
        try:
            r = client.request(method, url, **kw)
        except httpx.HTTPError:
            with self._lock:
                self.results.append(Result(at, route, 0))
            return None
        code = None
        if r.status_code >= 400:
            try:
                code = r.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "not-json"
        with self._lock:
            self.results.append(Result(at, route, r.status_code, code))
        return r

    def _client(self, i: int) -> None:
        rng = random.Random(i)
        with httpx.Client(base_url=self.base, timeout=30) as client:
            n = 0
            sender = f"load{i}-{uuid.uuid4().hex}"
            while not self._stop.is_set():
                n += 1
                roll = rng.random()
                if roll < 0.15:
                    self._call(client, "GET /faq/search", "GET", "/api/v1/faq/search", params={"q": rng.choice(FAQ)})
                elif roll < 0.27:
                    handoff = f"load-ho{i}-{uuid.uuid4().hex}"
                    r = self._call(client, "POST /chat", "POST", "/api/v1/chat", json={"sender": handoff, "text": "转人工"})
                    self._took(r, handoff)
                else:
                    if n % 4 == 0:
                        sender = f"load{i}-{uuid.uuid4().hex}"
                    r = self._call(client, "POST /chat", "POST", "/api/v1/chat",
                                   json={"sender": sender, "text": rng.choice(FAQ)})
                    self._took(r, sender)
                self._stop.wait(self.pause_s)

    def _took(self, r: httpx.Response | None, sender: str) -> None:
        if r is None or r.status_code != 200:
            return
        body = r.json()
        with self._lock:
            self.message_ids.update(int(m["id"]) for m in body["messages"] if m.get("id"))
            if body["meta"].get("ticket_id"):
                self.tickets[body["meta"]["ticket_id"]] = sender

    def _agent(self) -> None:
        done: set[str] = set()
        with httpx.Client(base_url=self.base, timeout=30, headers=bearer(self.agent_token)) as client:
            while not self._stop.is_set():
                with self._lock:
                    todo = [(t, s) for t, s in self.tickets.items() if t not in done]
                for ticket_id, sender in todo[:3]:
                    r = self._call(client, "POST /agent/claim", "POST", f"/api/v1/agent/tickets/{ticket_id}/claim")
                    if r is None or r.status_code not in (200, 409):
                        continue                     # tried again next round
                    r = self._call(client, "POST /agent/messages", "POST",
                                   f"/api/v1/agent/tickets/{ticket_id}/messages", json={"text": "您好,客服已收到"})
                    if r is not None and r.status_code == 200:
                        done.add(ticket_id)
                        with self._lock:
                            self.agent_messages[int(r.json()["message_id"])] = sender
                self._stop.wait(0.5)

    def between(self, start: float, end: float) -> list[Result]:
        with self._lock:
            return [r for r in self.results if start <= r.at <= end]


def wait_back(run: Running, name: str, old_pid: int, health_url: str, killed_at: float, limit_s: float = 90) -> float:
    """Seconds from the kill until the supervisor runs a new process and it answers healthy."""
    while time.monotonic() - killed_at < limit_s:
        pid = run.state()["pids"].get(name)
        if pid and pid != old_pid:
            try:
                with urllib.request.urlopen(health_url, timeout=2) as resp:
                    if resp.status == 200:
                        return time.monotonic() - killed_at
            except OSError:
                pass
        time.sleep(0.25)
    raise AssertionError(f"{name} not back within {limit_s}s")


def recovered_after(window: list[Result], killed_at: float) -> float:
    """Seconds from the kill to the last request that was not answered 200 (0: none failed)."""
    failed = [r.at for r in window if r.status != 200]
    return max(failed) - killed_at if failed else 0.0


def summary(results: list[Result]) -> Counter:
    return Counter(f"{r.status}{':' + r.code if r.code else ''}" for r in results)


def test_kill_an_app_instance_then_a_rasa_server_under_load(scaled):
    run, db, wx, creds = scaled.run, scaled.db, scaled.wx, scaled.wx_creds
    with httpx.Client(base_url=run.base, timeout=30) as api:
        agent = new_agent(api, "坐席负载")
    tickets_before, messages_before = db_ids(db)
    load = Load(run.base, agent).start()
    try:
        time.sleep(5)
        # WeChat pushes taken by app A with `success`, and A killed the moment it said so.
        openids = [f"oKill-{uuid.uuid4().hex}" for _ in range(3)]
        for openid in openids:
            status, body, _s = wechat_push(run.apps["a"], creds["token"], creds["appid"], creds["aes_key"],
                                           openid, "健康码可以截图吗")
            assert status == 200 and body == b"success"
        app_pid = run.pid_of("app-a")
        os.kill(app_pid, signal.SIGKILL)
        killed_app = time.monotonic()
        answered_before_kill = {s["touser"] for s in wx.sends()} & set(openids)
        app_back = wait_back(run, "app-a", app_pid, run.apps["a"] + "/healthz", killed_app)
        time.sleep(3)

        rasa_pid = run.pid_of("rasa-b")
        os.kill(rasa_pid, signal.SIGKILL)
        killed_rasa = time.monotonic()
        rasa_back = wait_back(run, "rasa-b", rasa_pid, run.state()["rasa"]["b"] + "/webhooks/hc/", killed_rasa)
        time.sleep(3)
    finally:
        load.stop()
    ended = time.monotonic()

    app_window = load.between(killed_app, killed_app + app_back)
    rasa_window = load.between(killed_rasa, killed_rasa + rasa_back)
    everything = load.between(0, ended)
    app_recovered, rasa_recovered = recovered_after(app_window, killed_app), recovered_after(rasa_window, killed_rasa)
    print(f"\napp-a back in {app_back:.1f}s (service answering again {app_recovered:.1f}s after the kill): "
          f"{dict(summary(app_window))}")
    print(f"rasa-b back in {rasa_back:.1f}s (service answering again {rasa_recovered:.1f}s after the kill): "
          f"{dict(summary(rasa_window))}")
    print(f"whole run ({len(everything)} requests): {dict(summary(everything))}; "
          f"pushes answered before the kill: {len(answered_before_kill)}/{len(openids)}")

    state = run.state()
    assert state["restarts"]["app-a"] >= 1 and state["restarts"]["rasa-b"] >= 1
    for window in (app_window, rasa_window):
        # The other instance kept answering through nginx the whole time ...
        assert sum(r.status == 200 for r in window) >= 5, summary(window)
        # ... and the few that fell into the switch got a polite 503, never a bare 502 or a 500.
        failed = [r for r in window if r.status != 200]
        assert len(failed) <= 8, summary(window)
        assert all(r.status == 503 and r.code != "not-json" for r in failed), summary(window)
    outside = [r for r in everything if r.status != 200 and not (killed_app <= r.at <= killed_app + app_back)
               and not (killed_rasa <= r.at <= killed_rasa + rasa_back)]
    assert len(outside) <= 4, summary(outside)
    assert load.tickets and load.agent_messages

    # Nothing lost: what the database held before, every ticket and message a client was given.
    tickets_after, messages_after = db_ids(db)
    assert tickets_before <= tickets_after and messages_before <= messages_after
    assert set(load.tickets) <= tickets_after
    assert load.message_ids <= messages_after and set(load.agent_messages) <= messages_after
    # Every agent message reached its user's feed.
    with httpx.Client(base_url=run.base, timeout=30) as api:
        for message_id, sender in load.agent_messages.items():
            feed = api.get("/api/v1/chat/messages", params={"sender": sender}).json()["messages"]
            assert str(message_id) in {m["id"] for m in feed}, (message_id, sender)

    # Every push A said `success` to is answered (the inbox row outlives the process).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not set(openids) <= {s["touser"] for s in wx.sends()}:
        time.sleep(1)
    assert set(openids) <= {s["touser"] for s in wx.sends()}
    import psycopg

    with psycopg.connect(db) as conn:
        rows = conn.execute("select status, outcome from channel_inbox").fetchall()
    assert rows and all(r == ("done", "answered") for r in rows), rows

    # Last, so that a slow restart on a busy machine does not hide what the checks above say.
    assert app_recovered <= RECOVERY_S and rasa_recovered <= RECOVERY_S, (app_recovered, rasa_recovered)
    assert app_back <= BACK_WITHIN_S and rasa_back <= RASA_BACK_WITHIN_S, (app_back, rasa_back)


# --- a short soak on the same stack (`make soak` runs the long one on a stack of its own) ----------
def test_a_short_soak_through_nginx_loses_nothing(scaled, tmp_path):
    from tools import soak

    run = scaled.run
    report = soak.soak_running(run.base, ADMIN, var_dir=run.var_dir, database_url=scaled.db,
                               conversations=20, duration_s=30, think_s=(1.0, 3.0),
                               sample=lambda: {n: soak.tree_rss(p) for n, p in run.state()["pids"].items()},
                               restarts=lambda: run.state()["restarts"])
    soak.write_report(report, tmp_path)
    print("\n" + soak.render_md(report))
    assert report["turns"] > 50 and report["5xx"] == 0 and report["no_answer"] == 0, report["routes"]
    am, ho = report["agent_messages"], report["handoff"]
    assert ho["tickets"] > 0 and ho["lost_tickets"] == [] and am["sent"] > 0
    assert am["lost"] == 0 and am["missing_from_feed"] == 0, am
    assert {"stream", "poll"} <= set(am["delivery_ms"]), am      # both ways a user can listen
    assert all(v == 0 for v in report["restarts"].values()), report["restarts"]
    assert report["pii_hits"] == 0, report["pii_samples"]
    assert (tmp_path / "soak.json").is_file() and (tmp_path / "soak.md").is_file()
