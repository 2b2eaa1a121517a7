"""`make run`: start the Rasa server and the app, wait until /healthz is 200, stop both on Ctrl-C.

A process that dies is reported and takes the stack down with it: a half-running assistant that
silently answers nothing is worse than a clear stop.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from core.artifacts import load_artifacts
from core.rasa_endpoints import write_endpoints
from core.settings import REPO_ROOT, get_settings

STARTUP_TIMEOUT_S = 240


def say(msg: str) -> None:
    print(f"[run] {msg}", flush=True)


def start(name: str, cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen:
    say(f"starting {name}: logs in {log_path}")
    log = open(log_path, "ab")
    # Own process group: Ctrl-C in the terminal reaches us, and we stop each child group cleanly.
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop(procs: dict[str, subprocess.Popen]) -> None:
    for name, proc in procs.items():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        say(f"{name} stopped")


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
    env["HC_RASA_URL"] = f"http://127.0.0.1:{settings.rasa_port}"

    endpoints = write_endpoints(settings)
    t0 = time.monotonic()
    procs = {
        "rasa": start("rasa", [str(art.rasa_venv / "bin/rasa"), "run", "--model", str(art.rasa_model),
                               "--endpoints", endpoints, "--credentials", "credentials.yml",
                               "-i", "127.0.0.1", "-p", str(settings.rasa_port), "--quiet"],
                      {**env, "PYTHONPATH": str(REPO_ROOT / "bot")}, REPO_ROOT / "bot", logs / "rasa.log"),
        "api": start("api", [sys.executable, "-m", "api.main"], env, REPO_ROOT, logs / "api.log"),
    }
    stopping = {"flag": False}

    def on_signal(signum, _frame):
        stopping["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    base = f"http://127.0.0.1:{settings.port}"
    ready = False
    try:
        while not stopping["flag"]:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    say(f"{name} exited with status {proc.returncode}; see {logs / (name + '.log')}")
                    return 1
            if not ready and healthy(base + "/healthz"):
                ready = True
                say(f"ready in {time.monotonic() - t0:.1f}s")
                say(f"API      {base}   (docs: {base}/docs)")
                say(f"health   {base}/healthz")
                say(f"widget   {base}/widget   (the citizens' chat; demo sign-in with HC_DEMO=1)")
                say(f"agents   {base}/agent    (sign in with a token from POST /api/v1/admin/agents)")
                # Encoded: the server refuses raw UTF-8 in a request line.
                say(f"try:     curl -s -G --data-urlencode 'q=健康码可以截图吗' {base}/api/v1/faq/search")
                say("Ctrl-C stops everything")
            elif not ready and time.monotonic() - t0 > STARTUP_TIMEOUT_S:
                say(f"not healthy after {STARTUP_TIMEOUT_S}s; see the logs in {logs}")
                return 1
            time.sleep(0.5)
        return 0
    finally:
        stop(procs)


if __name__ == "__main__":
    sys.exit(main())
