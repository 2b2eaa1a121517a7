"""A small process supervisor: start children, restart the ones that die (with back-off), stop all
of them only when told to (Ctrl-C / SIGTERM).

    sup = Supervisor([Spec("rasa", [...], env, cwd, log_path, health_url="http://…/"), Spec("api", …)])
    sup.start()
    sup.run_until_stopped()          # poll every 0.5 s until SIGINT/SIGTERM, then stop everything

or, driven from another loop (tools/run_stack.py waits for /healthz meanwhile):

    sup.start()
    while not done:
        sup.poll()                   # non-blocking: restarts whatever exited, once its delay is over
        time.sleep(0.5)
    sup.stop()

What it does.

* Each child runs in its own process group (its own session), so a Ctrl-C in the terminal reaches
  only the supervisor, which then stops each group cleanly: SIGTERM to the group, a wait of up to
  `timeout_s`, SIGKILL to whatever is left.
* A child that exits (for whatever reason: a crash, `kill -9`, the OOM killer) is reported through
  `say`, what is left of its process group is killed (a worker still holding the port would stop
  the new one from binding), and it is started again after a delay taken from `backoff_s`: the
  first restart waits backoff_s[0], each further death of a child that had not stayed up
  `healthy_reset_s` waits the next delay (the last one repeats). A child that stayed up
  `healthy_reset_s` starts again from backoff_s[0]. Nothing stops restarting a child: a process
  manager that gives up leaves a service down, which is what this exists to prevent.
* A child started from the main thread gets SIGTERM from the kernel if the supervisor itself
  dies (PR_SET_PDEATHSIG, Linux): a `kill -9` of `make run` leaves no orphan holding a port.
* Logs are opened in append mode at every start, with a marker line: a restart never loses
  what the dead process wrote (its last lines are usually why it died).
* A child with a `health_url` is "healthy" when a GET on it answers 200; without one, when it is
  alive. After a restart the supervisor reports when the child is healthy again and how long it
  was down (one short probe per poll at most, on loopback).
* Thread-safe: `pids()`, `restarts()`, `all_healthy()` may be called from other threads while
  `run_until_stopped` loops in one.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

POLL_INTERVAL_S = 0.5
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 1.0
PR_SET_PDEATHSIG = 1


@dataclass
class Spec:
    name: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    health_url: str | None = None      # GET → 200 means up (None: alive = up)


def probe(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class _Child:
    spec: Spec
    proc: subprocess.Popen | None = None
    started_at: float = 0.0            # monotonic
    streak: int = 0                    # consecutive quick deaths
    restarts: int = 0
    deaths: int = 0
    next_start_at: float | None = None  # waiting for its back-off (monotonic)
    died_at: float | None = None       # the last death, until it is healthy again
    last_probe: float = 0.0
    downtimes: list[float] = field(default_factory=list)   # died → healthy again, seconds

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    def __init__(self, specs: list[Spec], *, backoff_s: Sequence[float] = (1, 2, 4, 8, 15),
                 healthy_reset_s: float = 60, say: Callable[[str], None] = print):
        if not specs:
            raise ValueError("nothing to supervise")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate child names: {names}")
        if not backoff_s:
            raise ValueError("backoff_s needs at least one delay")
        self.backoff_s = tuple(float(b) for b in backoff_s)
        self.healthy_reset_s = float(healthy_reset_s)
        self.say = say
        self._children = {s.name: _Child(s) for s in specs}
        self._lock = threading.RLock()
        self._stopping = False
        self._started = False

    # -- starting ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start every child (each in its own process group), in the order given."""
        with self._lock:
            if self._started:
                raise RuntimeError("already started")
            self._started = True
            for child in self._children.values():
                self._spawn(child, first=True)

    def _spawn(self, child: _Child, *, first: bool) -> None:
        spec = child.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as log:
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            what = "start" if first else f"restart #{child.restarts}"
            log.write(f"--- [supervisor] {stamp} {what} of {spec.name} ---\n".encode())
            log.flush()
            try:
                child.proc = subprocess.Popen(spec.cmd, cwd=spec.cwd, env=spec.env, stdout=log,
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              start_new_session=True, preexec_fn=_die_with_parent())
            except OSError as exc:       # a missing binary: report it and try again later
                child.proc = None
                child.deaths += 1
                self.say(f"{spec.name} could not start: {exc}")
                self._schedule(child, time.monotonic(), uptime=0.0)
                return
        child.started_at = time.monotonic()
        child.next_start_at = None
        child.last_probe = 0.0
        if first:
            self.say(f"starting {spec.name}: logs in {spec.log_path}")
        else:
            self.say(f"{spec.name} restarted (pid {child.proc.pid}, restart #{child.restarts})")

    # -- watching ----------------------------------------------------------------------------
    def _delay(self, child: _Child) -> float:
        return self.backoff_s[min(child.streak, len(self.backoff_s) - 1)]

    def _schedule(self, child: _Child, now: float, uptime: float) -> float:
        if uptime >= self.healthy_reset_s:
            child.streak = 0
        delay = self._delay(child)
        child.streak += 1
        child.next_start_at = now + delay
        if child.died_at is None:
            child.died_at = now
        return delay

    def poll(self) -> None:
        """Non-blocking: notice children that exited, restart those whose delay is over, report
        the ones that are healthy again (at most one short loopback probe per child and second)."""
        to_probe: list[_Child] = []
        with self._lock:
            if self._stopping or not self._started:
                return
            now = time.monotonic()
            for child in self._children.values():
                proc = child.proc
                if proc is not None and proc.poll() is not None:
                    uptime = now - child.started_at
                    _kill_group(proc.pid, signal.SIGKILL)      # stragglers of the dead group
                    child.proc = None
                    child.deaths += 1
                    delay = self._schedule(child, now, uptime)
                    self.say(f"{child.spec.name} exited with {_status(proc.returncode)} after {uptime:.1f}s; "
                             f"restarting in {delay:g}s; see {child.spec.log_path}")
                    continue
                if child.proc is None and child.next_start_at is not None and now >= child.next_start_at:
                    child.restarts += 1
                    self._spawn(child, first=False)
                    continue
                if child.alive:
                    if now - child.started_at >= self.healthy_reset_s:
                        child.streak = 0
                    if child.died_at is not None and now - child.last_probe >= PROBE_INTERVAL_S:
                        child.last_probe = now
                        to_probe.append(child)
        # Probed outside the lock: pids() and friends never wait for a slow health check.
        for child in to_probe:
            proc = child.proc
            if proc is None or not self._healthy(child):
                continue
            with self._lock:
                if child.proc is proc and child.died_at is not None and not self._stopping:
                    down = time.monotonic() - child.died_at
                    child.downtimes.append(down)
                    child.died_at = None
                    self.say(f"{child.spec.name} is back ({down:.1f}s after it went down)")

    def _healthy(self, child: _Child) -> bool:
        if not child.alive:
            return False
        return child.spec.health_url is None or probe(child.spec.health_url)

    # -- the loop ----------------------------------------------------------------------------
    def run_until_stopped(self, stop: threading.Event | None = None) -> int:
        """poll() every 0.5 s until SIGINT/SIGTERM (handlers installed when `stop` is None; main
        thread only) or until `stop` is set; then stop() everything. Returns 0."""
        previous: dict[int, object] = {}
        if stop is None:
            stop = threading.Event()

            def on_signal(_signum, _frame):
                stop.set()

            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            if not self._started:
                self.start()
            while not stop.is_set():
                self.poll()
                stop.wait(POLL_INTERVAL_S)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    # -- stopping ----------------------------------------------------------------------------
    def stop(self, timeout_s: float = 15) -> None:
        """SIGTERM each child's group, wait up to `timeout_s` for all, SIGKILL what is left.
        No restart happens after (or during) stop()."""
        with self._lock:
            self._stopping = True
            running = [(c.spec.name, c.proc) for c in self._children.values() if c.proc is not None]
            for _name, proc in running:
                if proc.poll() is None:
                    _kill_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            for name, proc in running:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.say(f"{name} did not stop within {timeout_s:g}s: killed")
                    _kill_group(proc.pid, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=5)
                _kill_group(proc.pid, signal.SIGKILL)   # the group's stragglers, if any
                self.say(f"{name} stopped")
            for child in self._children.values():
                child.proc = None
                child.next_start_at = None

    # -- looking -----------------------------------------------------------------------------
    def pids(self) -> dict[str, int]:
        """The pid (= process group id) of every child that is running now; a child waiting for
        its restart is absent."""
        with self._lock:
            return {name: c.proc.pid for name, c in self._children.items() if c.alive}

    def restarts(self) -> dict[str, int]:
        with self._lock:
            return {name: c.restarts for name, c in self._children.items()}

    def deaths(self) -> dict[str, int]:
        """How many times each child was seen to exit (stop() excluded)."""
        with self._lock:
            return {name: c.deaths for name, c in self._children.items()}

    def downtimes(self) -> dict[str, list[float]]:
        """Per child, the seconds from each death until it was healthy again (as poll() saw it)."""
        with self._lock:
            return {name: list(c.downtimes) for name, c in self._children.items()}

    def all_healthy(self) -> bool:
        """Every child alive and, for those with a health_url, answering 200 on it."""
        with self._lock:
            children = list(self._children.values())
        return all(self._healthy(c) for c in children)


def _die_with_parent():
    """A preexec_fn that has the kernel SIGTERM the child when the supervisor dies (even by
    SIGKILL): no orphaned Rasa or app left holding its port. Linux only; only from the main
    thread (the signal follows the thread that forked, and a worker thread may end early)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:          # the supervisor died before prctl took effect
            os._exit(1)

    return preexec


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _status(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"
