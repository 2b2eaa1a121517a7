"""tools/supervisor.py, first with tiny Python children (restart after kill -9, back-off that grows
and resets, logs appended, a dead child's process group cleared, stop only on a signal), then on
the real stack `make run` starts (tools.run_stack under tools.stack.running_stack): under a
bounded load on loopback, kill -9 the Rasa server's process group, then the app's; each is back
within 30 s, the clients meanwhile get at most a polite 503 (Rasa down) or a refused connection
(the app down), never a 500 or a hang; and nothing is lost: every ticket, every stored message,
every WeChat push answered `success` is there, or answered, after the restart."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tools.supervisor import Spec, Supervisor

pytestmark = [pytest.mark.timeout(900)]
PY = sys.executable


# --- helpers for the small children --------------------------------------------------------------
class Said:
    """A `say` that keeps every line with its time."""

    def __init__(self):
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self.lines.append((time.monotonic(), line))

    def matching(self, pattern: str) -> list[tuple[float, re.Match]]:
        with self._lock:
            lines = list(self.lines)
        return [(t, m) for t, line in lines if (m := re.search(pattern, line))]


def spec(tmp_path: Path, code: str, name: str = "kid", **kw) -> Spec:
    return Spec(name, [PY, "-c", textwrap.dedent(code)], dict(os.environ), tmp_path, tmp_path / f"{name}.log", **kw)


def until(cond, timeout_s: float, sup: Supervisor | None = None, step: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sup is not None:
            sup.poll()
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"not within {timeout_s}s")


def gone(pid: int) -> bool:
    """No such process, or only its zombie (a reparented grandchild nobody reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


SLEEPER = """
    import os, sys, time
    print(f"child {os.getpid()} up", flush=True)
    time.sleep(300)
"""


def test_a_child_killed_with_sigkill_is_restarted_and_its_log_appended(tmp_path):
    said = Said()
    sup = Supervisor([spec(tmp_path, SLEEPER)], backoff_s=(0.2,), say=said)
    sup.start()
    try:
        first = until(lambda: sup.pids().get("kid"), 5, sup)
        until(lambda: f"child {first} up" in (tmp_path / "kid.log").read_text(), 10, sup)
        os.kill(first, signal.SIGKILL)
        second = until(lambda: (p := sup.pids().get("kid")) and p != first and p, 10, sup)
        until(lambda: f"child {second} up" in (tmp_path / "kid.log").read_text(), 10, sup)
        assert sup.restarts() == {"kid": 1} and sup.deaths() == {"kid": 1}
        assert gone(first) and not gone(second)
        assert said.matching(r"kid exited with signal SIGKILL after [\d.]+s; restarting in 0\.2s")
        assert said.matching(r"kid restarted \(pid \d+, restart #1\)")
        log = (tmp_path / "kid.log").read_text()
        # Appended, not truncated: the first run's lines are still there, each run marked.
        assert f"child {first} up" in log and f"child {second} up" in log
        assert log.index(f"child {first} up") < log.index("restart #1 of kid") < log.index(f"child {second} up")
        assert sup.all_healthy()
    finally:
        sup.stop(timeout_s=5)
    assert gone(second) and sup.pids() == {}


def test_backoff_grows_with_quick_deaths_and_is_capped(tmp_path):
    said = Said()
    sup = Supervisor([spec(tmp_path, "import sys; sys.exit(3)")], backoff_s=(0.2, 0.4, 0.8), healthy_reset_s=30,
                     say=said)
    sup.start()
    try:
        until(lambda: sup.restarts()["kid"] >= 4 and len(said.matching("restarting in")) >= 5, 20, sup, step=0.02)
    finally:
        sup.stop(timeout_s=5)
    delays = [float(m.group(1)) for _t, m in said.matching(r"exited with status 3 .*restarting in ([\d.]+)s")]
    assert delays[:5] == [0.2, 0.4, 0.8, 0.8, 0.8]
    # Each restart waited at least its delay after the death was seen.
    deaths = [t for t, _m in said.matching("exited with status 3")]
    starts = [t for t, _m in said.matching(r"restarted \(pid")]
    for died, started, delay in zip(deaths, starts, delays):
        assert started - died >= delay - 0.01


def test_backoff_resets_once_a_child_stayed_up(tmp_path):
    # Lives 0.6 s each time: longer than healthy_reset_s, so every death counts as the first one.
    said = Said()
    sup = Supervisor([spec(tmp_path, "import time; time.sleep(0.6)")], backoff_s=(0.1, 5), healthy_reset_s=0.3,
                     say=said)
    sup.start()
    try:
        until(lambda: sup.restarts()["kid"] >= 3, 15, sup)
    finally:
        sup.stop(timeout_s=5)
    delays = [float(m.group(1)) for _t, m in said.matching(r"restarting in ([\d.]+)s")]
    assert len(delays) >= 3 and set(delays) == {0.1}

    # The same child with a longer reset: its second death is a quick one and waits longer.
    said = Said()
    sup = Supervisor([spec(tmp_path, "import time; time.sleep(0.6)", name="kid2")], backoff_s=(0.1, 5),
                     healthy_reset_s=30, say=said)
    sup.start()
    try:
        until(lambda: len(said.matching("restarting in")) >= 2, 15, sup)
    finally:
        sup.stop(timeout_s=5)
    assert [float(m.group(1)) for _t, m in said.matching(r"restarting in ([\d.]+)s")][:2] == [0.1, 5.0]


def test_health_url_and_the_time_it_was_down(tmp_path):
    from tools.stack import free_port

    port = free_port()
    code = f"""
        import http.server, time
        time.sleep(0.5)
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
            def log_message(self, *a): pass
        http.server.ThreadingHTTPServer(("127.0.0.1", {port}), H).serve_forever()
    """
    said = Said()
    sup = Supervisor([spec(tmp_path, code, health_url=f"http://127.0.0.1:{port}/")], backoff_s=(0.2,), say=said)
    sup.start()
    try:
        assert not sup.all_healthy()                 # alive, not listening yet
        until(sup.all_healthy, 10, sup)
        pid = sup.pids()["kid"]
        os.kill(pid, signal.SIGKILL)
        until(lambda: said.matching(r"kid is back \(([\d.]+)s after it went down\)"), 15, sup)
        down = sup.downtimes()["kid"]
        assert len(down) == 1 and 0.5 <= down[0] < 10          # its 0.5 s start-up included
        assert sup.all_healthy() and sup.pids()["kid"] != pid
    finally:
        sup.stop(timeout_s=5)
    assert not sup.all_healthy()


def test_what_is_left_of_a_dead_childs_group_is_killed(tmp_path):
    """A child's own children (a worker still holding the port) go with it before the restart."""
    code = f"""
        import os, subprocess, sys, time
        worker = subprocess.Popen([{PY!r}, "-c", "import time; time.sleep(300)"])
        with open({str(tmp_path / 'workers')!r}, "a") as f:
            f.write(f"{{worker.pid}}\\n")
        time.sleep(300)
    """
    sup = Supervisor([spec(tmp_path, code)], backoff_s=(0.2,), say=Said())
    sup.start()
    try:
        workers = tmp_path / "workers"
        until(lambda: workers.exists() and workers.read_text().strip(), 10, sup)
        worker = int(workers.read_text().split()[0])
        os.kill(sup.pids()["kid"], signal.SIGKILL)             # the leader only, as the OOM killer would
        until(lambda: gone(worker), 10, sup)
        until(lambda: len(workers.read_text().split()) == 2, 10, sup)   # restarted, with a new worker
        second = int(workers.read_text().split()[1])
    finally:
        sup.stop(timeout_s=5)
    until(lambda: gone(second), 5)


def test_stop_escalates_to_sigkill(tmp_path):
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(300)
    """
    said = Said()
    sup = Supervisor([spec(tmp_path, code)], say=said)
    sup.start()
    until(lambda: "ready" in (tmp_path / "kid.log").read_text(), 10, sup)
    pid = sup.pids()["kid"]
    t0 = time.monotonic()
    sup.stop(timeout_s=1)
    assert time.monotonic() - t0 < 5 and gone(pid)
    assert said.matching("did not stop within 1s: killed")
    sup.poll()                                        # after stop(): nothing comes back
    assert sup.pids() == {}


def test_run_until_stopped_with_an_event_keeps_restarting_until_set(tmp_path):
    sup = Supervisor([spec(tmp_path, SLEEPER, name="a"), spec(tmp_path, SLEEPER, name="b")],
                     backoff_s=(0.1,), say=Said())
    stop = threading.Event()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(sup.run_until_stopped(stop)))
    runner.start()
    try:
        pids = until(lambda: len(sup.pids()) == 2 and sup.pids(), 10)
        for _ in range(3):                            # three deaths of a: it keeps coming back, b untouched
            old = sup.pids()["a"]
            os.kill(old, signal.SIGKILL)
            until(lambda: sup.pids().get("a") not in (None, old), 10)
        assert sup.pids()["b"] == pids["b"] and sup.restarts() == {"a": 3, "b": 0}
        assert runner.is_alive()
    finally:
        stop.set()
        runner.join(30)
    assert result == [0]
    last = [sup.pids()]
    assert last == [{}] and gone(pids["b"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_only_a_signal_stops_everything(tmp_path, sig):
    """run_until_stopped() without an event: children die and come back; the supervisor ends (0)
    only on SIGTERM or SIGINT, and takes every child with it."""
    pidfile = tmp_path / "pids"
    child = f"""
        import os, time
        with open({str(pidfile)!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        time.sleep(300)
    """
    script = tmp_path / "sup.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from tools.supervisor import Spec, Supervisor
        kid = Spec("kid", [sys.executable, "-c", {textwrap.dedent(child)!r}], dict(os.environ), Path({str(tmp_path)!r}),
                   Path({str(tmp_path / 'kid.log')!r}))
        sys.exit(Supervisor([kid], backoff_s=(0.1,), say=lambda m: print(m, flush=True)).run_until_stopped())
    """))
    from core.settings import REPO_ROOT

    proc = subprocess.Popen([PY, str(script)], cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pids = lambda: [int(p) for p in pidfile.read_text().split()] if pidfile.exists() else []  # noqa: E731
        until(lambda: len(pids()) == 1, 15)
        for n in (2, 3):
            os.kill(pids()[-1], signal.SIGKILL)
            until(lambda: len(pids()) == n, 15)
        assert proc.poll() is None                     # deaths of a child never end the supervisor
        os.kill(proc.pid, sig)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read()
    assert out.count("kid exited with signal SIGKILL") == 2 and "kid stopped" in out
    until(lambda: all(gone(p) for p in pids()), 5)


# --- the real stack --------------------------------------------------------------------------------
ADMIN = "sup-admin-token"
QUESTIONS = ("健康码可以截图吗", "八闽健康码怎么申请", "你好", "健康码显示黄码怎么办")
RECOVERY_S = 30.0
CLIENT_TIMEOUT_S = 20.0


def children_of(pid: int) -> dict[str, int]:
    """run_stack's children by role: {"rasa": pid, "api": pid} (from /proc: ps truncates)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid != pid:
            continue
        if "rasa run" in args:
            found["rasa"] = int(entry.name)
        elif "-m api.main" in args:
            found["api"] = int(entry.name)
    return found


class Load:
    """A bounded load on loopback: `workers` threads doing chat and FAQ search turn about, each
    request with a client timeout, every outcome recorded (time, route, status or error name,
    error code). Chat senders change every few turns; one turn in ten asks for a human (a ticket)."""

    def __init__(self, base: str, workers: int = 3, pause_s: float = 0.15):
        self.base, self.workers, self.pause_s = base, workers, pause_s
        self.records: list[tuple[float, str, object, str | None]] = []
        self.delivered: dict[str, list[str]] = {}     # sender → message ids the API answered with
        self.tickets: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __enter__(self) -> "Load":
        for w in range(self.workers):
            t = threading.Thread(target=self._run, args=(w,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(CLIENT_TIMEOUT_S + 5)

    def since(self, t0: float) -> list[tuple[float, str, object, str | None]]:
        with self._lock:
            return [r for r in self.records if r[0] >= t0]

    def _record(self, route: str, outcome, code: str | None = None) -> None:
        with self._lock:
            self.records.append((time.monotonic(), route, outcome, code))

    def _run(self, w: int) -> None:
        n = 0
        with httpx.Client(base_url=self.base, timeout=CLIENT_TIMEOUT_S) as client:
            while not self._stop.is_set():
                n += 1
                sender = f"load-{w}-{n // 6}-{uuid.uuid4().hex[:6] if n % 10 == 0 else ''}"
                try:
                    if n % 2:
                        text = "转人工" if n % 10 == 0 else QUESTIONS[n % len(QUESTIONS)]
                        r = client.post("/api/v1/chat", json={"sender": sender, "text": text})
                        route = "chat"
                    else:
                        r = client.get("/api/v1/faq/search", params={"q": QUESTIONS[n % len(QUESTIONS)]})
                        route = "search"
                except httpx.HTTPError as exc:
                    self._record("chat" if n % 2 else "search", type(exc).__name__)
                else:
                    code = None
                    if r.status_code != 200:
                        with contextlib.suppress(ValueError, KeyError, TypeError):
                            code = r.json()["error"]["code"]
                        if r.status_code == 503 and not r.headers.get("retry-after"):
                            code = f"{code}:no-retry-after"
                    elif route == "chat":
                        body = r.json()
                        with self._lock:
                            self.delivered.setdefault(sender, []).extend(m["id"] for m in body["messages"] if m.get("id"))
                            if body["meta"].get("ticket_id"):
                                self.tickets.add(body["meta"]["ticket_id"])
                    self._record(route, r.status_code, code)
                self._stop.wait(self.pause_s)


def wait_healthy(client, timeout_s: float = 180) -> None:
    """The stack answers /healthz 200 (a previous test may have left it restarting)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if client.get("/healthz").status_code == 200:
                return
        time.sleep(0.5)
    raise AssertionError(f"stack not healthy within {timeout_s}s")


def first_ok_after(client: httpx.Client, t0: float, timeout_s: float, call, ok=(200,)) -> float:
    """Seconds from t0 until `call(client)` answers 200 (or a status in `ok`; polled every 0.25 s)."""
    deadline = t0 + timeout_s + 30          # wait past the bound, to report how late it was
    while time.monotonic() < deadline:
        try:
            if call(client).status_code in ok:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    return float("inf")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from core.settings import REPO_ROOT
    from tests._env import missing
    from tools import fake_wechat
    from tools.stack import running_stack

    if not (REPO_ROOT / "var" / "artifacts.json").exists():
        missing("no artefacts: run `make setup`")
    import base64
    import secrets

    token, appid, secret = "tok" + secrets.token_hex(4), "wx" + secrets.token_hex(8), secrets.token_hex(12)
    aes_key = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    var_dir = tmp_path_factory.mktemp("supervised")
    with fake_wechat.running(appid, secret) as wx:
        env = {"HC_ADMIN_TOKEN": ADMIN, "HC_WECHAT_TOKEN": token, "HC_WECHAT_APPID": appid,
               "HC_WECHAT_APPSECRET": secret, "HC_WECHAT_AES_KEY": aes_key, "HC_WECHAT_API_BASE": wx.base_url,
               # A push waits for the bot through a restart: the apology only after 5 minutes.
               "HC_CHANNEL_GIVE_UP_S": "300",
               # One loopback client drives all the load: the per-address limits are not what is tested.
               "HC_RATE_LIMIT_ENABLED": "false"}
        with running_stack(var_dir, env=env) as (base, startup_s, pid):
            with httpx.Client(base_url=base, timeout=CLIENT_TIMEOUT_S) as client:
                yield {"client": client, "base": base, "pid": pid, "var_dir": var_dir, "wx": wx,
                       "wechat": (token, appid, aes_key), "startup_s": startup_s}


def push(stack, text: str) -> str:
    """One signed safe-mode WeChat push from a new openid; asserts `success`; returns the openid."""
    from tools.try_channels import wechat_push

    token, appid, aes_key = stack["wechat"]
    openid = "oSup" + uuid.uuid4().hex[:24]
    status, body, _s = wechat_push(stack["base"], token, appid, aes_key, openid, text)
    assert status == 200 and body == b"success", (status, body)
    return openid


def answered(stack, openid: str, want: str) -> bool:
    return any(s.get("touser") == openid and want in s.get("text", {}).get("content", "") for s in stack["wx"].sends())


def agent_token(client) -> str:
    r = client.post("/api/v1/admin/agents", json={"name": f"坐席{uuid.uuid4().hex[:4]}"},
                    headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    return r.json()["token"]


def check_nothing_lost(client, load: Load, t_kill: float) -> None:
    """Every ticket and every message the API handed out before the kill is still there."""
    agent = {"Authorization": f"Bearer {agent_token(client)}"}
    for ticket in sorted(load.tickets):
        r = client.get(f"/api/v1/agent/tickets/{ticket}", headers=agent)
        assert r.status_code == 200, (ticket, r.status_code, r.text)
    for sender, ids in list(load.delivered.items()):
        r = client.get("/api/v1/chat/messages", params={"sender": sender, "after": "0"})
        assert r.status_code == 200, r.text
        have = {m["id"] for m in r.json()["messages"]}
        assert set(ids) <= have, (sender, sorted(set(ids) - have))


def summary(records) -> Counter:
    return Counter((route, outcome, code) for _t, route, outcome, code in records)


@pytest.mark.e2e
def test_kill_9_of_the_rasa_server_under_load(stack):
    client, answer = stack["client"], "1分钟"
    wait_healthy(client)
    kids = children_of(stack["pid"])
    assert set(kids) == {"rasa", "api"}, kids
    with Load(stack["base"]) as load:
        time.sleep(4)
        before = summary(load.records)
        assert before[("chat", 200, None)] > 0 and before[("search", 200, None)] > 0, before
        t_kill = time.monotonic()
        os.killpg(kids["rasa"], signal.SIGKILL)
        # A WeChat push while the bot is down: accepted (`success`) at once, answered once it is back.
        time.sleep(1.0)
        openid = push(stack, "健康码可以截图吗")
        back_s = first_ok_after(client, t_kill, RECOVERY_S, lambda c: real_answer(c, "probe-rasa"))
        time.sleep(2)
    after = children_of(stack["pid"])
    during = summary(load.since(t_kill))
    print(f"\nrasa back after {back_s:.1f}s; outcomes since the kill: {dict(during)}")
    print("supervisor: " + " | ".join(line for line in (stack["var_dir"] / "stack.log").read_text().splitlines()
                                      if "rasa" in line and ("exited" in line or "back" in line)))
    assert back_s <= RECOVERY_S, f"chat not back within {RECOVERY_S}s ({back_s:.1f}s)"
    assert after["api"] == kids["api"] and after["rasa"] != kids["rasa"]      # only Rasa was restarted
    allowed = {("chat", 200, None), ("chat", 503, "bot_unavailable"), ("search", 200, None)}
    assert set(during) <= allowed, during
    assert during[("chat", 503, "bot_unavailable")] > 0, "the load never saw the gap"
    assert until(lambda: answered(stack, openid, answer), 30), "the push taken during the gap was not answered"
    check_nothing_lost(client, load, t_kill)


AFTER_APP_KILL: dict = {}


def real_answer(c: httpx.Client, sender: str):
    """A chat turn that only counts as 200 when it is the FAQ's answer (not the busy apology the
    bot says while the app's index is still loading)."""
    r = c.post("/api/v1/chat", json={"sender": f"{sender}-{uuid.uuid4().hex[:6]}", "text": "健康码可以截图吗"})
    if r.status_code == 200 and r.json()["meta"].get("faq_id") != "personal.screenshot":
        return httpx.Response(599)
    return r


def replies(stack, openid: str) -> list[str]:
    return [s.get("text", {}).get("content", "") for s in stack["wx"].sends() if s.get("touser") == openid]


@pytest.mark.e2e
def test_kill_9_of_the_app_under_load(stack):
    client = stack["client"]
    wait_healthy(client)
    kids = children_of(stack["pid"])
    assert set(kids) == {"rasa", "api"}, kids
    r = client.post("/api/v1/chat", json={"sender": "sup-handoff", "text": "转人工"})
    assert r.status_code == 200 and r.json()["meta"]["ticket_id"], r.text
    handoff_ticket = r.json()["meta"]["ticket_id"]
    with Load(stack["base"]) as load:
        time.sleep(4)
        # Pushes answered `success` just before the kill: whatever the worker was doing with them.
        openids = [push(stack, "健康码可以截图吗") for _ in range(3)]
        t_kill = time.monotonic()
        os.killpg(kids["api"], signal.SIGKILL)
        time.sleep(0.5)
        # And one taken while the app is down (as another instance would take it: into the inbox).
        late = "oSupLate" + uuid.uuid4().hex[:20]
        store_push_directly(stack["var_dir"], late, "健康码可以截图吗")
        port_s = first_ok_after(client, t_kill, RECOVERY_S, lambda c: c.get("/api/v1/agent/tickets"), ok=(401,))
        back_s = first_ok_after(client, t_kill, RECOVERY_S, lambda c: real_answer(c, "probe-app"))
        healthy_s = first_ok_after(client, t_kill, RECOVERY_S, lambda c: c.get("/healthz"))
        time.sleep(2)
    after = children_of(stack["pid"])
    during = summary(load.since(t_kill))
    print(f"\napp: port open after {port_s:.1f}s, healthz 200 after {healthy_s:.1f}s, the FAQ answered again "
          f"after {back_s:.1f}s; outcomes since the kill: {dict(during)}")
    print("supervisor: " + " | ".join(line for line in (stack["var_dir"] / "stack.log").read_text().splitlines()
                                      if "api" in line and ("exited" in line or "back" in line)))
    assert back_s <= RECOVERY_S and healthy_s <= RECOVERY_S, (back_s, healthy_s)
    assert after["rasa"] == kids["rasa"] and after["api"] != kids["api"]
    # The app's port refuses (or a request in flight at the kill is cut): never a 500, never a hang.
    cut = {"ConnectError", "RemoteProtocolError", "ReadError", "WriteError"}
    # A 503 while it starts: chat before Rasa's actions answer, search before the index is loaded.
    polite = {("chat", "bot_unavailable"), ("search", "not_ready")}
    odd = {k: n for k, n in during.items()
           if not (k[1] == 200 or k[1] in cut or (k[1] == 503 and (k[0], (k[2] or "").split(":")[0]) in polite))}
    assert not odd, odd
    without = {k: n for k, n in during.items() if (k[2] or "").endswith(":no-retry-after")}
    assert not without, f"503s without Retry-After: {without}"
    assert any(k[1] == "ConnectError" for k in during), "the load never saw the gap"
    check_nothing_lost(client, load, t_kill)
    listed = client.get("/api/v1/agent/tickets", headers={"Authorization": f"Bearer {agent_token(client)}"})
    assert listed.status_code == 200 and handoff_ticket in {t["id"] for t in listed.json()["tickets"]}
    # Every push taken is replied to after the restart, none left in silence (one the dead worker
    # had leased waits for its lease, 60 s, to run out first).
    t_wait = time.monotonic()
    for openid in (*openids, late):
        with contextlib.suppress(AssertionError):
            until(lambda o=openid: replies(stack, o), 90)
    AFTER_APP_KILL.update({openid: replies(stack, openid) for openid in (*openids, late)})
    print(f"replies to the pushes (after {time.monotonic() - t_wait:.0f}s more): {AFTER_APP_KILL}")
    assert all(AFTER_APP_KILL.values()), AFTER_APP_KILL


@pytest.mark.e2e
def test_the_pushes_around_an_app_restart_get_the_answer_not_the_apology(stack):
    if not AFTER_APP_KILL:
        pytest.skip("test_kill_9_of_the_app_under_load did not run")
    for openid, got in AFTER_APP_KILL.items():
        assert any("1分钟" in text for text in got), (openid, got)


def store_push_directly(var_dir: Path, openid: str, text: str) -> None:
    """A WeChat push as channels.wechat.service.accept_push stores it, straight into the stack's
    database (its SQLite file under var_dir), sealed with the stack's data key."""
    from channels import identity, inbox
    from core.sealing import data_key
    from core.settings import Settings
    from store import get_engine

    engine = get_engine(url=f"sqlite:///{var_dir / 'hc.db'}")
    try:
        inbox.configure(engine, data_key(Settings(var_dir=var_dir)))
        payload = {"openid": openid, "user_id": None, "kind": "text", "text": text}
        assert inbox.accept("wechat", f"late-{uuid.uuid4().hex}", identity.conversation_id("wechat", openid, None),
                            payload) is not None
    finally:
        inbox.configure(None, None)
        engine.dispose()


@pytest.mark.e2e
def test_a_stack_that_never_starts_is_still_a_clear_stop(tmp_path):
    """`make run` with its port taken: the app dies at every start; after a few tries run_stack
    says so and exits 1 (and takes Rasa down with it) instead of restarting forever."""
    import socket

    from core.settings import REPO_ROOT
    from tests._env import missing
    from tools.stack import free_port

    if not (REPO_ROOT / "var" / "artifacts.json").exists():
        missing("no artefacts: run `make setup`")
    (tmp_path / "artifacts.json").write_text((REPO_ROOT / "var" / "artifacts.json").read_text())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**{k: v for k, v in os.environ.items() if k != "HC_DATABASE_URL"}, "HC_PORT": str(port),
               "HC_RASA_PORT": str(free_port()), "HC_ACTIONS_PORT": str(free_port()), "HC_VAR_DIR": str(tmp_path),
               "HC_ADMIN_TOKEN": "x", "PYTHONPATH": str(REPO_ROOT)}
        t0 = time.monotonic()
        # Each try takes the app's whole start-up (it exits once its index has loaded): minutes
        # on a busy machine, hence the generous bound; the point is that it ends, with 1.
        out = subprocess.run([PY, "-m", "tools.run_stack"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                             timeout=400)
    took = time.monotonic() - t0
    print(f"\ngave up after {took:.1f}s:\n{out.stdout}")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "api kept dying before the stack was ever ready" in out.stdout
    assert out.stdout.count("api exited with status") == 3 and out.stdout.count("api restarted") == 2
    assert "rasa stopped" in out.stdout


def test_a_command_that_cannot_start_is_retried_and_counted(tmp_path):
    said = Said()
    missing_binary = Spec("ghost", [str(tmp_path / "no-such-binary")], dict(os.environ), tmp_path, tmp_path / "g.log")
    sup = Supervisor([missing_binary], backoff_s=(0.1,), say=said)
    sup.start()
    try:
        until(lambda: sup.deaths()["ghost"] >= 3, 10, sup)
    finally:
        sup.stop(timeout_s=2)
    assert said.matching("ghost could not start") and sup.pids() == {}


def test_children_die_with_a_supervisor_killed_with_sigkill(tmp_path):
    """The supervisor itself killed -9: its children get SIGTERM from the kernel, none is left
    orphaned holding a port for the next `make run` to trip over."""
    from core.settings import REPO_ROOT

    script = tmp_path / "sup.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from tools.supervisor import Spec, Supervisor
        kid = Spec("kid", [sys.executable, "-c", "import time; time.sleep(300)"], dict(os.environ),
                   Path({str(tmp_path)!r}), Path({str(tmp_path / 'kid.log')!r}))
        sup = Supervisor([kid], say=lambda m: None)
        sup.start()
        print(sup.pids()["kid"], flush=True)
        sup.run_until_stopped()
    """))
    proc = subprocess.Popen([PY, str(script)], cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                            stdout=subprocess.PIPE, text=True)
    try:
        kid = int(proc.stdout.readline())
        assert not gone(kid)
        proc.kill()
        proc.wait(10)
        until(lambda: gone(kid), 10)
    finally:
        if proc.poll() is None:
            proc.kill()


FAST_LOAD_CHECK = """
import asyncio, json, sys, time
t0 = time.monotonic()
from rasa.core.agent import load_agent
from rasa.utils.tensorflow import models
agent = asyncio.run(load_agent(model_path=sys.argv[1]))
took = time.monotonic() - t0
async def ask():
    out = {}
    for q in json.loads(sys.argv[2]):
        p = await agent.parse_message(q)
        out[q] = [(r["name"], round(r["confidence"], 5)) for r in p.get("intent_ranking", [])[:3]]
    return out
print(json.dumps({"patched": getattr(models.RasaModel, "_hc_fast_load", False), "seconds": took,
                  "answers": asyncio.run(ask())}, ensure_ascii=False))
"""


@pytest.mark.e2e
def test_rasa_fast_load_gives_the_same_predictions(tmp_path):
    """tools/rasa_boot (on the Rasa server's PYTHONPATH under make run and systemd): the model
    loads faster and predicts exactly what Rasa's own load predicts."""
    import json

    from core.artifacts import load_artifacts
    from core.settings import REPO_ROOT, get_settings
    from retrieval.kb import load_kb
    from tests._env import missing

    art = load_artifacts(get_settings())
    if not (art.rasa_model and art.rasa_venv):
        missing("no Rasa model: run `make setup`")
    questions = [e.question for e in load_kb(REPO_ROOT / "kb" / "faq_zh.md").entries]
    questions += ["你好", "转人工", "我的健康码为什么是橙色", "明天福州会下雨吗", "谢谢", "Can foreigners apply?"]
    script = tmp_path / "check.py"
    script.write_text(FAST_LOAD_CHECK)
    runs = {}
    for flag in ("0", "1"):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "bot"), str(REPO_ROOT / "tools" / "rasa_boot")]),
               "HC_RASA_FAST_LOAD": flag, "TF_CPP_MIN_LOG_LEVEL": "2", "RASA_TELEMETRY_ENABLED": "false"}
        out = subprocess.run([str(art.rasa_venv / "bin/python"), "-W", "ignore", str(script), str(art.rasa_model),
                              json.dumps(questions, ensure_ascii=False)], cwd=REPO_ROOT / "bot", env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        runs[flag] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nRasa model load: {runs['0']['seconds']:.1f}s as Rasa does it, {runs['1']['seconds']:.1f}s with rasa_boot")
    assert runs["0"]["patched"] is False and runs["1"]["patched"] is True
    assert runs["1"]["answers"] == runs["0"]["answers"]
    assert runs["1"]["seconds"] < runs["0"]["seconds"]
