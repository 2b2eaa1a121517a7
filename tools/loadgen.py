"""A minimal HTTP/1.1 keep-alive client for the benchmark.

On a 2-core machine the load generator shares the CPU with the server it measures; httpx spends
about a millisecond of CPU per request, which showed up as server latency. This client does only
what the benchmark needs (one connection per virtual client, JSON bodies, Content-Length
responses), so nearly all the CPU goes to the server.
"""
from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode, urlsplit


class Connection:
    def __init__(self, base_url: str):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> "Connection":
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    def usable(self) -> bool:
        """False once the server has closed the connection (e.g. its keep-alive timeout passed
        while the connection sat idle in a pool): reusing it would fail."""
        return bool(self.reader and self.writer) and not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        if self.writer:
            self.writer.close()

    async def __aenter__(self) -> "Connection":
        return await self.connect()

    async def __aexit__(self, *exc) -> None:
        self.close()

    async def request(self, method: str, path: str, *, params: dict | None = None,
                      json_body: dict | None = None) -> tuple[int, bytes]:
        assert self.reader and self.writer
        if params:
            path = f"{path}?{urlencode(params)}"
        body = json.dumps(json_body, ensure_ascii=False).encode() if json_body is not None else b""
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Length: {len(body)}\r\n")
        if json_body is not None:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed by the server before a response")
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        return status, await self.reader.readexactly(length)
