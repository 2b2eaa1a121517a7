"""A small TCP forwarder on loopback that can make a backend (PostgreSQL, Redis) "go away" and come
back, for the store-outage tests (tests/test_store_outage.py):

    with TcpProxy("127.0.0.1", 5432) as proxy:        # listens on 127.0.0.1:<proxy.port>
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/db"
        ...
        proxy.pause()              # every open connection is reset, new ones are refused
        proxy.pause("blackhole")   # or: new connections are accepted and never answered
        proxy.resume()             # forwarding again, on the same port

It runs its own asyncio loop in a daemon thread, so the caller's code stays synchronous.

Modes of pause():
* "refuse" (default): what a crashed or restarting server looks like. The listening socket is
  closed (a connect gets ECONNREFUSED) and every forwarded connection is aborted (RST), so a
  pooled connection breaks on its next use.
* "blackhole": what a network partition looks like. Open connections are aborted too, but new
  ones are accepted and then neither forwarded nor closed: a client without a connect or read
  timeout hangs. (Everything held this way is closed on resume().)

Also runnable alone, for trying an outage by hand against a `make run`:

    python -m tools.tcp_proxy --listen 15432 --target 127.0.0.1:5432
    (then type `pause`, `pause blackhole`, `resume` or `quit` on its stdin)
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import threading

BUFFER = 64 * 1024
MODES = ("refuse", "blackhole")


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0):
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = listen_port
        self.mode: str | None = None             # None: forwarding; else the pause mode
        self.accepted = 0                         # connections accepted since start (all modes)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()    # both sides of every live pair
        self._held: set[asyncio.StreamWriter] = set()     # blackholed client connections

    # -- the caller's side (any thread) ------------------------------------------------------
    def start(self) -> "TcpProxy":
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:       # a port taken: the caller hears it
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close_all())
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name=f"tcp-proxy-{self.target[1]}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._close_all)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def pause(self, mode: str = "refuse") -> None:
        """The backend is gone: open connections reset; new ones refused, or held unanswered."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self._call(self._pause, mode)

    def resume(self) -> None:
        """Forward again (same port); connections held by a blackhole are closed."""
        self._call(self._resume)

    @property
    def paused(self) -> bool:
        return self.mode is not None

    @property
    def url_host(self) -> str:
        return f"{self.listen_host}:{self.port}"

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _call(self, coro_fn, *args) -> None:
        if self._loop is None:
            raise RuntimeError("proxy not started")
        asyncio.run_coroutine_threadsafe(coro_fn(*args), self._loop).result(10)

    # -- the loop's side ---------------------------------------------------------------------
    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _pause(self, mode: str) -> None:
        self.mode = mode                 # from now on _accept forwards nothing
        self._abort(self._conns)
        if mode == "refuse":
            await self._stop_listening()
        elif self._server is None:
            await self._listen()

    async def _resume(self) -> None:
        self.mode = None
        self._abort(self._held)
        if self._server is None:
            await self._listen()

    async def _close_all(self) -> None:
        self.mode = "refuse"
        self._abort(self._conns)
        self._abort(self._held)
        await self._stop_listening()

    @staticmethod
    def _abort(writers: set[asyncio.StreamWriter]) -> None:
        for writer in list(writers):
            transport = writer.transport
            with contextlib.suppress(Exception):
                sock = transport.get_extra_info("socket")
                if sock is not None:     # RST rather than FIN: the peer sees a broken connection
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            transport.abort()
        writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "blackhole":
            self._held.add(writer)
            return
        if self.mode == "refuse":       # accepted just before the listener closed
            self._abort({writer})
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, asyncio.TimeoutError):
            self._abort({writer})
            return
        if self.mode is not None:        # paused while connecting
            self._abort({writer, up_writer})
            return
        pair = {writer, up_writer}
        self._conns.update(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in pair:
                self._conns.discard(w)
                with contextlib.suppress(Exception):
                    w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(BUFFER)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if writer.can_write_eof():
                    writer.write_eof()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True, help="loopback port to listen on")
    parser.add_argument("--target", required=True, help="host:port to forward to")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    proxy = TcpProxy(host or "127.0.0.1", int(port), listen_port=args.listen).start()
    print(f"forwarding 127.0.0.1:{proxy.port} → {args.target}; commands: pause [blackhole], resume, quit",
          flush=True)
    try:
        for line in iter(sys.stdin.readline, ""):      # line by line, not read-ahead
            words = line.split()
            if not words:
                continue
            if words[0] == "pause":
                proxy.pause(words[1] if len(words) > 1 else "refuse")
                print(f"paused ({proxy.mode})", flush=True)
            elif words[0] == "resume":
                proxy.resume()
                print("forwarding", flush=True)
            elif words[0] in ("quit", "exit"):
                break
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()


if __name__ == "__main__":
    main()
