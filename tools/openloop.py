"""An open-loop load driver: requests arrive at a fixed rate whether or not earlier ones finished.

A closed-loop client waits for each answer before it asks again, so a slow server slows its own
load down and the waiting time never shows up in the figures ("coordinated omission"). Here
request i is due at t0 + i / rate; it is sent at that time on an idle keep-alive connection of a
bounded pool (a new connection when every open one is busy; past the bound it waits for one to
come free), and its latency is measured from the time it was *due*, not from when it could be
sent, so time spent queued behind a busy pool or a lagging scheduler counts.
"""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from tools.loadgen import Connection

# call(conn, i) -> True for a good answer; raising or returning False counts as an error.
Call = Callable[[Connection, int], Awaitable[bool]]
# What a reused connection that the server had already closed raises (EOF before a status line).
STALE = (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Pool:
    """Idle keep-alive connections, most recently used first; at most `limit` open at once."""

    def __init__(self, base: str, limit: int):
        self.base, self.limit = base, limit
        self.idle: list[Connection] = []
        self.open = 0
        self.peak = 0
        self.freed = asyncio.Condition()

    async def get(self) -> tuple[Connection, bool]:
        """(connection, reused). Waits only when `limit` connections are all busy."""
        async with self.freed:
            while True:
                while self.idle:
                    conn = self.idle.pop()
                    if conn.usable():
                        return conn, True
                    conn.close()          # the server closed it while idle (keep-alive timeout)
                    self.open -= 1
                if self.open < self.limit:
                    self.open += 1
                    self.peak = max(self.peak, self.open)
                    break
                await self.freed.wait()
        try:
            return await Connection(self.base).connect(), False
        except BaseException:
            await self.discard(None)
            raise

    async def put(self, conn: Connection) -> None:
        async with self.freed:
            self.idle.append(conn)
            self.freed.notify()

    async def discard(self, conn: Connection | None) -> None:
        if conn is not None:
            conn.close()
        async with self.freed:
            self.open -= 1
            self.freed.notify()

    def close_all(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


async def open_loop(base: str, call: Call, rate: float, duration_s: float, *, max_connections: int = 256,
                    timeout_s: float = 30.0, late_ms: float = 100.0) -> dict:
    """Offer `rate` requests/s for `duration_s` seconds; return what was achieved.

    late: requests that got onto a connection more than `late_ms` after they were due (the pool
    was full, or the scheduler itself fell behind): a sign the driver, not only the server, was
    the bottleneck, so the figures should be read with care."""
    total = max(1, int(round(rate * duration_s)))
    pool = Pool(base, max_connections)
    latencies: list[float] = []
    errors = late = 0
    last_done = 0.0

    async def one(i: int, due: float) -> None:
        nonlocal errors, late, last_done
        ok, conn = False, None
        try:
            async with asyncio.timeout(timeout_s):
                conn, reused = await pool.get()
                if (time.perf_counter() - due) * 1000 > late_ms:
                    late += 1
                try:
                    ok = await call(conn, i)
                except STALE:
                    # A kept-alive connection the server closed just as we reused it: one retry on
                    # a fresh one, as an HTTP client library would (the time still counts).
                    if not reused:
                        raise
                    stale, conn = conn, None
                    await pool.discard(stale)
                    conn, _ = await pool.get()
                    ok = await call(conn, i)
            await pool.put(conn)
            conn = None
        except Exception:  # noqa: BLE001 - any failure (timeout, refused, bad reply) is an error here
            ok = False
        finally:
            if conn is not None:      # abandoned mid-request: its state is unknown, so not reused
                await pool.discard(conn)
        done = time.perf_counter()
        last_done = max(last_done, done)
        if ok:
            latencies.append((done - due) * 1000)
        else:
            errors += 1

    tasks = []
    t0 = time.perf_counter()
    for i in range(total):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    pool.close_all()
    wall = max(last_done - t0, 1e-9)
    row = {"offered_rps": round(rate, 1), "duration_s": round(duration_s, 1), "n": total,
           "ok": len(latencies), "errors": errors, "late": late,
           "achieved_rps": round(len(latencies) / wall, 1), "connections": pool.peak}
    if latencies:
        row.update(p50_ms=round(percentile(latencies, 0.5), 1), p95_ms=round(percentile(latencies, 0.95), 1),
                   p99_ms=round(percentile(latencies, 0.99), 1), max_ms=round(max(latencies), 1))
    else:
        row.update(p50_ms=None, p95_ms=None, p99_ms=None, max_ms=None)
    return row
