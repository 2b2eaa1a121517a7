"""The app's Rasa client with several servers (assistant/rasa_client.py): each conversation is
pinned to one server by its id, a server that refuses the connection hands the turn to the
next, any other failure is BotUnavailable; ready only when every server answers.

Against real HTTP servers on loopback (aiohttp.web), and a port nothing listens on for "down"."""
from __future__ import annotations

import asyncio
import json
import socket
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from assistant.rasa_client import BotUnavailable, RasaClient, pinned, server_urls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def servers(names: list[str], seen: list, down: frozenset = frozenset(), status: int = 200,
                  body: bytes | None = None):
    """One server per name (a down one is a port nothing listens on); yields the client's URLs."""
    runners, urls = [], []
    for name in names:
        port = free_port()
        urls.append(f"http://127.0.0.1:{port}")
        if name in down:
            continue

        async def webhook(request: web.Request, name=name) -> web.Response:
            payload = json.loads(await request.read())
            assert request.headers["x-hc-internal-token"] == "secret"
            seen.append((name, payload["sender"], payload["message"], payload["metadata"]))
            if status != 200:
                return web.Response(status=status)
            if body is not None:
                return web.Response(body=body, content_type="application/json")
            return web.json_response({"messages": [{"text": name}], "intent": {"name": "greet", "confidence": 0.9},
                                      "lang": "zh"})

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        app = web.Application()
        app.router.add_post("/webhooks/hc/webhook", webhook)
        app.router.add_get("/webhooks/hc/", health)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    try:
        yield ",".join(urls)
    finally:
        for runner in runners:
            await runner.cleanup()


def test_urls_are_split_and_trimmed():
    assert server_urls(" http://rasa-a:1, http://rasa-b:2/") == ["http://rasa-a:1", "http://rasa-b:2"]
    with pytest.raises(ValueError):
        server_urls(" , ")


def test_a_turn_reaches_rasa_and_comes_back():
    seen: list = []

    async def run():
        async with servers(["a"], seen) as urls:
            client = RasaClient(urls, "secret", 5)
            turn = await client.send("anon:s1", "健康码可以截图吗 😀", {"lang": "zh"})
            await client.close()
            return turn

    turn = asyncio.run(run())
    assert turn.messages == [{"text": "a"}] and turn.intent == "greet" and turn.confidence == 0.9
    assert turn.lang == "zh"
    assert seen == [("a", "anon:s1", "健康码可以截图吗 😀", {"lang": "zh"})]


def test_each_conversation_stays_on_one_server_and_both_are_used():
    seen: list = []
    senders = [f"conv-{i}" for i in range(40)]

    async def run():
        async with servers(["a", "b"], seen) as urls:
            client = RasaClient(urls, "secret", 5)
            for _ in range(3):
                for s in senders:
                    await client.send(s, "你好", {})
            await client.close()

    asyncio.run(run())
    hosts: dict = {}
    for name, sender, _text, _meta in seen:
        hosts.setdefault(sender, set()).add(name)
    assert all(len(h) == 1 for h in hosts.values())                 # pinned
    assert {h for hs in hosts.values() for h in hs} == {"a", "b"}
    assert all(hosts[s] == {["a", "b"][pinned(s, 2)]} for s in senders)
    # Evenly: ids that differ in a digit or two spread over both servers.
    shares = [sum(pinned(f"bench-{w}-{i}", 2) == k for w in range(16) for i in range(50)) / 800 for k in (0, 1)]
    assert min(shares) > 0.4, shares


def test_a_refused_connection_goes_to_the_next_server_and_all_down_is_unavailable():
    sender = next(s for s in (f"c{i}" for i in range(100)) if pinned(s, 2) == 0)      # pinned to "a"

    async def one_down():
        seen: list = []
        async with servers(["a", "b"], seen, down=frozenset({"a"})) as urls:
            client = RasaClient(urls, "secret", 5)
            turn = await client.send(sender, "你好", {})
            ready = await client.ready()
            await client.close()
        return turn, seen, ready

    turn, seen, ready = asyncio.run(one_down())
    assert turn.messages[0]["text"] == "b" and [(n, s) for n, s, *_ in seen] == [("b", sender)]
    assert ready is False                                          # one down: not fully up

    async def all_down():
        async with servers(["a", "b"], [], down=frozenset({"a", "b"})) as urls:
            client = RasaClient(urls, "secret", 5)
            try:
                await client.send(sender, "你好", {})
            finally:
                await client.close()

    with pytest.raises(BotUnavailable):
        asyncio.run(all_down())


@pytest.mark.parametrize("status, body", [(500, None), (404, None), (200, b"{not json"), (200, b"[1, 2]")])
def test_a_bad_answer_is_unavailable_and_not_retried_elsewhere(status, body):
    seen: list = []

    async def run():
        async with servers(["a", "b"], seen, status=status, body=body) as urls:
            client = RasaClient(urls, "secret", 5)
            try:
                await client.send("c1", "你好", {})
            finally:
                await client.close()

    with pytest.raises(BotUnavailable):
        asyncio.run(run())
    assert len(seen) == 1            # it may have run the turn: sending it again could repeat it


def test_a_server_slower_than_the_timeout_is_unavailable():
    async def run():
        async def slow(request):
            await asyncio.sleep(2)
            return web.json_response({})
        app = web.Application()
        app.router.add_post("/webhooks/hc/webhook", slow)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        client = RasaClient(f"http://127.0.0.1:{port}", "secret", 0.3)
        try:
            await client.send("c1", "你好", {})
        finally:
            await client.close()
            await runner.cleanup()

    with pytest.raises(BotUnavailable):
        asyncio.run(run())


def test_ready_when_every_server_answers_and_one_client_serves_several_loops():
    async def run(client_holder: list):
        async with servers(["a", "b"], []) as urls:
            if not client_holder:
                client_holder.append(RasaClient(urls, "secret", 5))
            client = client_holder[0]
            client._bases = server_urls(urls)
            return await client.ready()

    holder: list = []
    assert asyncio.run(run(holder)) is True
    assert asyncio.run(run(holder)) is True        # a second event loop: a new session, not a dead one
