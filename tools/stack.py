"""Start the whole stack (tools.run_stack) in a subprocess for tests and benchmarks, and stop it after."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from core.settings import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_stack(var_dir: Path, env: dict[str, str] | None = None, timeout_s: float = 240):
    """Yields (base_url, startup_seconds, pid)."""
    port, rasa_port, actions_port = free_port(), free_port(), free_port()
    # The stack keeps its state in var_dir (its SQLite database included) unless told otherwise:
    # a test process's own HC_DATABASE_URL (tests/conftest.py) is not the stack's.
    inherited = {k: v for k, v in os.environ.items() if k != "HC_DATABASE_URL"}
    full_env = {**inherited, "HC_PORT": str(port), "HC_RASA_PORT": str(rasa_port),
                "HC_ACTIONS_PORT": str(actions_port),
                "HC_VAR_DIR": str(var_dir), "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    # artifacts.json lives in the repo's var/; the test stack gets its own var dir for state.
    var_dir.mkdir(parents=True, exist_ok=True)
    src = REPO_ROOT / "var" / "artifacts.json"
    if src.exists() and not (var_dir / "artifacts.json").exists():
        (var_dir / "artifacts.json").write_text(src.read_text())
    log = open(var_dir / "stack.log", "ab")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "tools.run_stack"], cwd=REPO_ROOT, env=full_env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(proc, lambda: _healthy(base), t0, timeout_s, f"the stack (see {var_dir / 'stack.log'})")
        yield base, time.monotonic() - t0, proc.pid
    finally:
        stop_group(proc)
        log.close()


def _healthy(base: str) -> bool:
    with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
        return resp.status == 200


def wait_until(proc: subprocess.Popen, ready, t0: float, timeout_s: float, what: str) -> None:
    """Poll `ready()` (OSError counts as not yet) until it is true; RuntimeError when `proc`
    exits first or `timeout_s` passes since `t0`."""
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if ready():
                return
        except OSError:
            pass
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"{what} not ready after {timeout_s}s")
        time.sleep(0.5)


def stop_group(proc: subprocess.Popen, timeout_s: float = 30) -> bool:
    """SIGINT to the process group started with start_new_session, SIGKILL after timeout_s.
    True when it had to kill (what a caller with more process groups to stop needs to know)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return True
    return False
