"""`make run`: start the Rasa server and the app, wait until /healthz is 200, keep both running
until Ctrl-C (or SIGTERM), then stop both.

The children run under tools/supervisor.py: one that dies (a crash, `kill -9`, the OOM killer) is
reported and started again with back-off (1 s, 2 s, 4 s, 8 s, then every 15 s; back to 1 s once it
stayed up a minute) while the other keeps serving: with Rasa down the app answers chat with a
polite 503 `bot_unavailable` (Retry-After) and FAQ search still works; with the app down its port
refuses connections until it is back. Only a start-up that never gets healthy is a clear stop:
a child that dies STARTUP_DEATHS times before the first /healthz 200, or no 200 within
STARTUP_TIMEOUT_S. Production gets the same from systemd (deploy/systemd/).
"""
from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path

from core.artifacts import load_artifacts
from core.rasa_endpoints import write_endpoints
from core.settings import REPO_ROOT, get_settings
from tools.supervisor import Spec, Supervisor, probe

STARTUP_TIMEOUT_S = 240
RASA_BOOT = REPO_ROOT / "tools" / "rasa_boot"
# The Rasa server's import path: the bot's own modules, then tools/rasa_boot, whose sitecustomize
# makes Rasa's model load ~3x faster (a restart after kill -9 is ~10 s instead of ~25 s);
# HC_RASA_FAST_LOAD=0 turns it off. make run and make run-scaled both start Rasa with it.
RASA_PYTHONPATH = os.pathsep.join([str(REPO_ROOT / "bot"), str(RASA_BOOT)])
STARTUP_DEATHS = 3          # deaths of one child before the first healthy /healthz: give up


def say(msg: str) -> None:
    print(f"[run] {msg}", flush=True)


def rasa_ports(settings) -> list[int]:
    """HC_RASA_PORT for the first Rasa server, free ports for the others (HC_RASA_SERVERS)."""
    from tools.stack import free_port

    return [settings.rasa_port] + [free_port() for _ in range(settings.rasa_servers - 1)]


def specs(settings, art, env: dict[str, str], endpoints: str, logs: Path, ports: list[int]) -> list[Spec]:
    """The stack's processes (the Rasa servers, then the app), as the supervisor starts (and
    restarts) them."""
    out = []
    for i, port in enumerate(ports):
        name = "rasa" if i == 0 else f"rasa-{i + 1}"
        out.append(Spec(name, [str(art.rasa_venv / "bin/rasa"), "run", "--model", str(art.rasa_model),
                               "--endpoints", endpoints, "--credentials", "credentials.yml",
                               "-i", "127.0.0.1", "-p", str(port), "--quiet"],
                        {**env, "PYTHONPATH": RASA_PYTHONPATH},
                        REPO_ROOT / "bot", logs / f"{name}.log",
                        health_url=f"http://127.0.0.1:{port}/webhooks/hc/"))
    out.append(Spec("api", [sys.executable, "-m", "api.main"], env, REPO_ROOT, logs / "api.log",
                    health_url=f"http://127.0.0.1:{settings.port}/healthz"))
    return out


def main() -> int:
    settings = get_settings()
    art = load_artifacts(settings)
    if not (art.rasa_model and art.rasa_venv):
        say("no Rasa model: run `make setup` first")
        return 2
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    logs = settings.var_dir / "logs"
    logs.mkdir(exist_ok=True)

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2", "TOKENIZERS_PARALLELISM": "false"}
    env["HC_INTERNAL_TOKEN"] = settings.internal_token = settings.internal_token or secrets.token_urlsafe(24)
    if not settings.admin_token:
        env["HC_ADMIN_TOKEN"] = secrets.token_urlsafe(24)
        say(f"admin token (generated for this run; set HC_ADMIN_TOKEN to choose one): {env['HC_ADMIN_TOKEN']}")
    ports = rasa_ports(settings)
    # Several servers share the tracker store; the app pins each conversation to one of them.
    env["HC_RASA_URL"] = ",".join(f"http://127.0.0.1:{port}" for port in ports)

    endpoints = write_endpoints(settings)
    t0 = time.monotonic()
    supervisor = Supervisor(specs(settings, art, env, endpoints, logs, ports), say=say)
    stopping = {"flag": False}

    def on_signal(signum, _frame):
        stopping["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    base = f"http://127.0.0.1:{settings.port}"
    ready = False
    supervisor.start()
    try:
        while not stopping["flag"]:
            supervisor.poll()
            if not ready:
                dying = [name for name, n in supervisor.deaths().items() if n >= STARTUP_DEATHS]
                if dying:
                    say(f"{', '.join(dying)} kept dying before the stack was ever ready; see the logs in {logs}")
                    return 1
                if probe(base + "/healthz", timeout_s=2):
                    ready = True
                    say(f"ready in {time.monotonic() - t0:.1f}s")
                    say(f"API      {base}   (docs: {base}/docs)")
                    say(f"health   {base}/healthz")
                    say(f"widget   {base}/widget   (the citizens' chat; demo sign-in with HC_DEMO=1)")
                    say(f"agents   {base}/agent    (sign in with a token from POST /api/v1/admin/agents)")
                    # Encoded: the server refuses raw UTF-8 in a request line.
                    say(f"try:     curl -s -G --data-urlencode 'q=健康码可以截图吗' {base}/api/v1/faq/search")
                    say("Ctrl-C stops everything")
                elif time.monotonic() - t0 > STARTUP_TIMEOUT_S:
                    say(f"not healthy after {STARTUP_TIMEOUT_S}s; see the logs in {logs}")
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        supervisor.stop()


if __name__ == "__main__":
    sys.exit(main())
