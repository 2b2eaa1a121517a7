"""tools/openloop.py against a tiny local HTTP server that takes a fixed 20 ms per request.

Behaviour, not tight timings (the machine is shared): the driver keeps the offered rate when the
server keeps up, and when it does not (a server serving one request at a time, or a pool too small
for the load) the latency it reports includes the time requests spent waiting, because it is
measured from each request's scheduled time, not from when it could be sent.
"""
from __future__ import annotations

import asyncio
import contextlib

from tools.openloop import open_loop

SERVICE_S = 0.020


@contextlib.asynccontextmanager
async def slow_server(serial: bool = False):
    """Yields (base_url, stats). HTTP/1.1 keep-alive, Content-Length bodies; each request sleeps
    SERVICE_S. serial: one request at a time across all connections (a server with one worker)."""
    lock = asyncio.Lock()
    stats = {"requests": 0, "connections": 0}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        try:
            while True:
                if not await reader.readline():
                    return
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                async with lock if serial else contextlib.nullcontext():
                    await asyncio.sleep(SERVICE_S)
                stats["requests"] += 1
                body = b'{"ok": true}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", stats
    finally:
        server.close()
        await asyncio.sleep(0.1)   # let handlers see their clients' closes before the loop ends


async def ok_call(conn, i: int) -> bool:
    status, body = await conn.request("POST", "/chat", json_body={"sender": f"t-{i}", "text": f"q {i}"})
    return status == 200 and body == b'{"ok": true}'


def run(coro):
    return asyncio.run(coro)


def test_keeps_the_offered_rate_when_the_server_keeps_up():
    async def go():
        async with slow_server() as (base, stats):
            row = await open_loop(base, ok_call, rate=40, duration_s=2)
            return row, stats

    row, stats = run(go())
    assert row["n"] == 80 and row["ok"] == 80 and row["errors"] == 0
    assert stats["requests"] == 80
    assert row["achieved_rps"] >= 0.8 * 40
    # Every request costs at least the server's 20 ms, and nothing queues for long.
    assert SERVICE_S * 1000 <= row["p50_ms"] < 500
    assert row["late"] <= 8
    # Keep-alive: far fewer connections than requests.
    assert stats["connections"] < 40


def test_latency_includes_queueing_when_the_server_is_slower_than_the_arrivals():
    # One request at a time at 20 ms each is at most 50/s; 100/s arrive for 1.5 s, so the queue
    # grows all along and the last request waits roughly 1.5 s. A closed-loop client (or one timing
    # from when the server took the request) would still see about 20 ms.
    async def go():
        async with slow_server(serial=True) as (base, stats):
            return await open_loop(base, ok_call, rate=100, duration_s=1.5)

    row = run(go())
    assert row["ok"] == 150 and row["errors"] == 0
    assert row["achieved_rps"] < 0.8 * 100
    assert row["p50_ms"] > 10 * SERVICE_S * 1000
    assert row["p99_ms"] > row["p50_ms"]


def test_time_waiting_for_a_connection_counts():
    # The server could keep up (20 ms per request, in parallel), but the driver may hold only two
    # connections: at most 100/s, while 150/s arrive. Requests queue in the pool, so many start
    # late, and that wait is part of their latency (timed from when a connection was free, they
    # would all look like 20 ms).
    async def go():
        async with slow_server() as (base, stats):
            return await open_loop(base, ok_call, rate=150, duration_s=1.5, max_connections=2), stats

    row, stats = run(go())
    assert stats["connections"] <= 2
    assert row["ok"] == 225 and row["errors"] == 0
    assert row["late"] > 0
    assert row["p95_ms"] > 5 * SERVICE_S * 1000


def test_a_server_that_refuses_counts_errors_not_latency():
    async def go():
        async with slow_server() as (base, _):
            pass                                   # closed again: nothing listens on the port now
        return await open_loop(base, ok_call, rate=50, duration_s=0.4, timeout_s=2)

    row = run(go())
    assert row["ok"] == 0 and row["errors"] == row["n"] == 20
    assert row["p50_ms"] is None
