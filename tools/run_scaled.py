"""`make run-scaled`: two app instances and two Rasa servers on PostgreSQL + Redis behind nginx.

    python -m tools.run_scaled [--port 8000] [--host 127.0.0.1] [--internal-base 18000]

How it is wired (every internal port on 127.0.0.1; free ports unless --internal-base N, which
takes N..N+8):

    client ──► nginx :PORT ──► app A (HC_PORT a, actions a) ─┐ HC_RASA_URL = nginx :rasa-lb-a
                         └───► app B (HC_PORT b, actions b) ─┤ HC_RASA_URL = nginx :rasa-lb-b
    nginx :rasa-lb-a ──► Rasa A (backup: Rasa B)             │
    nginx :rasa-lb-b ──► Rasa B (backup: Rasa A)             │
    Rasa A's action webhook ──► app A's actions port; Rasa B's ──► app B's

Each app instance talks to "its" Rasa server, with the other one as nginx's backup: a turn
never waits on a dead Rasa (the connection is refused, nginx passes it on) and a Rasa server
only calls its own app's actions, so a dead app instance leaves no Rasa calling into nothing
(nobody sends turns to its Rasa but itself). Round-robin over both Rasa servers would make
half of every instance's turns depend on the other app instance's action webhook.

All of them on one PostgreSQL database (HC_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/hc_scaled, created when missing): the app's tables and
Rasa's tracker store; and one Redis (HC_REDIS_URL, default redis://127.0.0.1:6379/0): Rasa's
lock store, the streams' pub/sub, the WeChat token cache and the rate limits. The migrations run
once, here, before anything starts (each app's own start-up then finds the schema at head, under
the same advisory lock). HC_INTERNAL_TOKEN and HC_ADMIN_TOKEN are the same for every process,
generated for the run when unset (the admin token is printed); HC_DATA_KEY too, except that an
unset one is kept in the var dir (core.sealing's key file) rather than made up per run: sealed
rows in a database that outlives the run must stay readable.

Every process is a child of tools.supervisor (nginx included, `nginx -c <conf> -p <run dir>
-g 'daemon off;'`): one that dies is restarted with back-off; Ctrl-C stops them all. The run's
wiring, pids and restart counts are kept up to date in <var>/scaled/state.json (tests and
tools/soak.py read it).
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from core.settings import REPO_ROOT, Settings, get_settings
from tools.run_stack import RASA_PYTHONPATH
from tools.stack import stop_group

STARTUP_TIMEOUT_S = 300
TEMPLATE = REPO_ROOT / "deploy" / "nginx" / "hc-assistant.conf.template"
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/hc_scaled"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
INSTANCES = ("a", "b")
# Rasa's conversation lock (Redis) outlives a Rasa server killed mid-turn by this long: the next
# turn of that conversation, on the other server, waits at most this (Rasa's default is 60 s).
LOCK_LIFETIME_S = "15"


def say(msg: str) -> None:
    print(f"[scaled] {msg}", flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Ports:
    public: int
    status: int
    app: dict[str, int]
    actions: dict[str, int]
    rasa: dict[str, int]
    rasa_lb: dict[str, int]

    @classmethod
    def plan(cls, public: int, internal_base: int | None = None) -> "Ports":
        if internal_base:
            nxt = iter(range(internal_base, internal_base + 9))
            pick = lambda: next(nxt)  # noqa: E731
        else:
            pick = free_port
        return cls(public=public, status=pick(), app={i: pick() for i in INSTANCES},
                   actions={i: pick() for i in INSTANCES}, rasa={i: pick() for i in INSTANCES},
                   rasa_lb={i: pick() for i in INSTANCES})


# --- nginx -----------------------------------------------------------------------------------------
def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if Path(p).exists()), None)


def render(template: str, values: dict[str, object]) -> str:
    """{{name}} → value; a name the template uses and `values` lacks is an error, not a blank."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise KeyError(f"nginx template needs {{{{{m.group(1)}}}}}")
        return str(values[m.group(1)])

    return re.sub(r"\{\{(\w+)\}\}", sub, template)


def nginx_conf(ports: Ports, host: str, max_body_bytes: int) -> str:
    loop = lambda port: f"127.0.0.1:{port}"  # noqa: E731
    listen = f"[{host}]:{ports.public}" if ":" in host else f"{host}:{ports.public}"
    return render(TEMPLATE.read_text(), {
        "worker_processes": 1,          # 2 cores shared with four Python processes: one is plenty
        "listen": listen, "status": loop(ports.status), "max_body_bytes": max_body_bytes,
        "app_a": loop(ports.app["a"]), "app_b": loop(ports.app["b"]),
        "rasa_a": loop(ports.rasa["a"]), "rasa_b": loop(ports.rasa["b"]),
        "rasa_lb_a": loop(ports.rasa_lb["a"]), "rasa_lb_b": loop(ports.rasa_lb["b"]),
    })


def check_port_free(host: str, port: int) -> None:
    """nginx would otherwise fail to bind and be restarted forever: say so at once."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        try:
            s.bind((host, port))
        except OSError:
            raise RuntimeError(f"{host}:{port} is taken (another stack?): choose one with --port or HC_PORT") from None


def check_nginx(binary: str, conf: Path, run_dir: Path) -> None:
    out = subprocess.run([binary, "-t", "-q", "-c", str(conf), "-p", str(run_dir), "-e", str(run_dir / "logs/nginx-error.log")],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"nginx refuses {conf}: {out.stderr.strip()}")


# --- PostgreSQL and Redis --------------------------------------------------------------------------
def ensure_database(url: str) -> bool:
    """Create the URL's database when it is missing (True: created). Connects to `postgres`."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url.replace("postgresql+psycopg", "postgresql"))
    name = parts.path.lstrip("/") or "postgres"
    plain = urlunsplit(parts)
    try:
        with psycopg.connect(plain, connect_timeout=5):
            return False
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise RuntimeError(f"PostgreSQL unreachable at {parts.hostname}:{parts.port or 5432}") from None
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True, connect_timeout=5) as conn:
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return True


def check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.exceptions.RedisError:
        raise RuntimeError(f"Redis unreachable at {urlsplit(url).hostname}:{urlsplit(url).port or 6379}") from None


def migrate_once(url: str) -> None:
    import store

    engine = store.get_engine(url=url)
    try:
        store.migrate(engine)
    finally:
        engine.dispose()


# --- the plan --------------------------------------------------------------------------------------
@dataclass
class Plan:
    run_dir: Path
    ports: Ports
    base: str
    apps: dict[str, str]
    database_url: str
    redis_url: str
    admin_token_generated: bool
    specs: list = field(default_factory=list)

    def describe(self) -> dict:
        return {"base": self.base, "apps": self.apps, "ports": asdict(self.ports),
                "database": _without_password(self.database_url), "redis": _without_password(self.redis_url),
                "rasa": {i: f"http://127.0.0.1:{self.ports.rasa[i]}" for i in INSTANCES},
                "rasa_via_nginx": {i: f"http://127.0.0.1:{self.ports.rasa_lb[i]}" for i in INSTANCES}}


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def build(settings: Settings, ports: Ports, host: str) -> Plan:
    from core.artifacts import load_artifacts
    from core.rasa_endpoints import endpoints
    from core.sealing import data_key
    from tools.supervisor import Spec

    art = load_artifacts(settings)
    if not (art.rasa_model and art.rasa_venv):
        raise RuntimeError("no Rasa model: run `make setup` first")
    nginx = nginx_binary()
    if not nginx:
        raise RuntimeError("nginx is not installed: run `make setup` (or apt-get install nginx-light)")

    run_dir = settings.var_dir / "scaled"
    logs = run_dir / "logs"
    for sub in ("logs", "tmp"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)        # endpoints files hold the internal token (and a DB password)

    check_port_free(host, ports.public)
    database_url = settings.database_url or DEFAULT_DATABASE
    redis_url = settings.redis_url or DEFAULT_REDIS
    if not database_url.startswith("postgresql"):
        raise RuntimeError("the scaled stack needs PostgreSQL: HC_DATABASE_URL=postgresql://…")
    check_redis(redis_url)
    if ensure_database(database_url):
        say(f"created the database {_without_password(database_url)}")
    migrate_once(database_url)

    internal = settings.internal_token or secrets.token_urlsafe(24)
    admin = settings.admin_token
    generated = not admin
    admin = admin or secrets.token_urlsafe(24)
    key = base64.b64encode(data_key(settings)).decode()   # HC_DATA_KEY, or the var dir's key file

    common = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
              "RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2", "TOKENIZERS_PARALLELISM": "false",
              "HC_VAR_DIR": str(settings.var_dir), "HC_DATABASE_URL": database_url, "HC_REDIS_URL": redis_url,
              "HC_INTERNAL_TOKEN": internal, "HC_ADMIN_TOKEN": admin, "HC_DATA_KEY": key}
    # Two e5 encoders and two Rasa servers on a small machine: one BLAS thread each, or they fight.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        common.setdefault(var, "1")

    conf = run_dir / "nginx.conf"
    conf.write_text(nginx_conf(ports, host, settings.max_body_bytes))
    check_nginx(nginx, conf, run_dir)
    specs = [Spec("nginx", [nginx, "-c", str(conf), "-p", str(run_dir), "-e", str(logs / "nginx-error.log"),
                            "-g", "daemon off;"], dict(common), run_dir, logs / "nginx.log",
                  health_url=f"http://127.0.0.1:{ports.status}/healthz")]
    apps = {}
    for i in INSTANCES:
        own = settings.model_copy(update={"actions_port": ports.actions[i], "database_url": database_url,
                                          "redis_url": redis_url, "internal_token": internal})
        path = run_dir / f"endpoints-{i}.yml"
        path.write_text(json.dumps(endpoints(own), indent=2) + "\n")
        path.chmod(0o600)
        rasa_env = {**common, "PYTHONPATH": RASA_PYTHONPATH, "HC_ACTIONS_PORT": str(ports.actions[i])}
        rasa_env.setdefault("TICKET_LOCK_LIFETIME", LOCK_LIFETIME_S)
        specs.append(Spec(f"rasa-{i}", [str(art.rasa_venv / "bin/rasa"), "run", "--model", str(art.rasa_model),
                                         "--endpoints", str(path), "--credentials", "credentials.yml",
                                         "-i", "127.0.0.1", "-p", str(ports.rasa[i]), "--quiet"],
                          rasa_env, REPO_ROOT / "bot", logs / f"rasa-{i}.log",
                          health_url=f"http://127.0.0.1:{ports.rasa[i]}/webhooks/hc/"))
    for i in INSTANCES:
        app_env = {**common, "HC_HOST": "127.0.0.1", "HC_PORT": str(ports.app[i]),
                   "HC_ACTIONS_PORT": str(ports.actions[i]),
                   "HC_RASA_URL": f"http://127.0.0.1:{ports.rasa_lb[i]}", "HC_RASA_PORT": str(ports.rasa[i])}
        apps[i] = f"http://127.0.0.1:{ports.app[i]}"
        specs.append(Spec(f"app-{i}", [sys.executable, "-m", "api.main"], app_env, REPO_ROOT, logs / f"app-{i}.log",
                          health_url=f"{apps[i]}/healthz"))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    plan = Plan(run_dir, ports, f"http://{shown}:{ports.public}", apps, database_url, redis_url, generated, specs)
    if generated:
        say(f"admin token (generated for this run; set HC_ADMIN_TOKEN to choose one): {admin}")
    return plan


# --- the run ---------------------------------------------------------------------------------------
def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def write_state(plan: Plan, sup, ready: bool) -> dict:
    state = {**plan.describe(), "ready": ready, "supervisor_pid": os.getpid(), "pids": sup.pids(),
             "restarts": sup.restarts(), "downtimes": sup.downtimes(), "at": time.time()}
    tmp = plan.run_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(plan.run_dir / "state.json")
    return state


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=settings.port, help="nginx's public port (HC_PORT; default 8000)")
    ap.add_argument("--host", default=settings.host, help="nginx's public address (HC_HOST; default 127.0.0.1)")
    ap.add_argument("--internal-base", type=int, default=None,
                    help="internal ports from here (9 of them); default: free ports")
    args = ap.parse_args(argv)

    from tools.supervisor import Supervisor

    settings.var_dir.mkdir(parents=True, exist_ok=True)
    try:
        plan = build(settings, Ports.plan(args.port, args.internal_base), args.host)
    except RuntimeError as exc:
        say(str(exc))
        return 2
    sup = Supervisor(plan.specs, say=say)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    t0 = time.monotonic()
    say(f"logs in {plan.run_dir / 'logs'}")
    sup.start()
    ready, last, last_check = False, None, 0.0
    try:
        while not stop.is_set():
            sup.poll()
            now = time.monotonic()
            if not ready and now - last_check >= 1.0:
                last_check = now
                # Every process on its own port first, nginx only then: a probe through nginx
                # while the instances still answer 503 would have nginx count them as failed
                # and leave one out of the rotation for a few seconds after the start.
                ready = sup.all_healthy() and healthy(plan.base + "/healthz")
                if ready:
                    announce(plan, time.monotonic() - t0)
                elif now - t0 > STARTUP_TIMEOUT_S:
                    say(f"not healthy after {STARTUP_TIMEOUT_S}s; see the logs in {plan.run_dir / 'logs'}")
                    return 1
            snapshot = (ready, sup.pids(), sup.restarts(), sup.downtimes())
            if snapshot != last:
                write_state(plan, sup, ready)
                last = snapshot
            stop.wait(0.5)
        return 0
    finally:
        sup.stop()
        write_state(plan, sup, False)


def announce(plan: Plan, seconds: float) -> None:
    p = plan.ports
    say(f"ready in {seconds:.1f}s")
    say(f"API      {plan.base}   (docs: {plan.base}/docs)   through nginx")
    say(f"widget   {plan.base}/widget    agents {plan.base}/agent")
    for i in INSTANCES:
        say(f"app {i.upper()}    127.0.0.1:{p.app[i]} (actions :{p.actions[i]}) → Rasa via nginx :{p.rasa_lb[i]} "
            f"= Rasa {i.upper()} :{p.rasa[i]}, backup Rasa {'B' if i == 'a' else 'A'}")
    say(f"store    {_without_password(plan.database_url)} (app tables + Rasa tracker)   "
        f"redis {_without_password(plan.redis_url)}")
    say(f"state    {plan.run_dir / 'state.json'} (pids, restarts)")
    say(f"try:     curl -s -G --data-urlencode 'q=健康码可以截图吗' {plan.base}/api/v1/faq/search")
    say("Ctrl-C stops everything")


# --- for tests and tools/soak.py -------------------------------------------------------------------
@dataclass
class Running:
    base: str                   # nginx
    apps: dict[str, str]        # "a"/"b" → the instance's own URL
    var_dir: Path
    run_dir: Path
    startup_s: float
    pid: int                    # the run_scaled process (its own process group)

    def state(self) -> dict:
        return json.loads((self.run_dir / "state.json").read_text())

    def pid_of(self, name: str) -> int | None:
        return self.state()["pids"].get(name)


@contextlib.contextmanager
def running_scaled(var_dir: Path, env: dict[str, str] | None = None, timeout_s: float = STARTUP_TIMEOUT_S):
    """`python -m tools.run_scaled` in a subprocess on a free public port; yields Running once
    nginx and all four processes are healthy; Ctrl-C (SIGINT) to its group after."""
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if k not in ("HC_DATABASE_URL", "HC_PORT")}
    full_env = {**inherited, "HC_PORT": str(port), "HC_VAR_DIR": str(var_dir), "PYTHONPATH": str(REPO_ROOT),
                **(env or {})}
    var_dir.mkdir(parents=True, exist_ok=True)
    src = REPO_ROOT / "var" / "artifacts.json"
    if src.exists() and not (var_dir / "artifacts.json").exists():
        (var_dir / "artifacts.json").write_text(src.read_text())
    state_path = var_dir / "scaled" / "state.json"
    state_path.unlink(missing_ok=True)
    log = open(var_dir / "run_scaled.log", "ab")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "tools.run_scaled", "--port", str(port)], cwd=REPO_ROOT,
                            env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"run_scaled exited with {proc.returncode}; see {var_dir / 'run_scaled.log'}")
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(state_path.read_text())
                if state.get("ready"):
                    break
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"scaled stack not healthy after {timeout_s}s; see {var_dir / 'run_scaled.log'}")
            time.sleep(0.5)
        yield Running(state["base"], state["apps"], var_dir, var_dir / "scaled", time.monotonic() - t0, proc.pid)
    finally:
        if stop_group(proc, timeout_s=45):
            # Its children run in process groups of their own: stop them by their ids.
            with contextlib.suppress(OSError, ValueError):
                for child in json.loads(state_path.read_text()).get("pids", {}).values():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(child, signal.SIGKILL)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
