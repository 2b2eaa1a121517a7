"""The app's Rasa client with several servers (assistant/rasa_client.py): each conversation is
pinned to one server by its id, a server that refuses the connection hands the turn to the
next, any other failure is BotUnavailable; ready only when every server answers."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from assistant.rasa_client import BotUnavailable, RasaClient, pinned, server_urls

URLS = "http://rasa-a:1, http://rasa-b:2/"


def client_with(handler) -> RasaClient:
    client = RasaClient(URLS, "secret", 5)
    asyncio.run(client._client.aclose())
    client._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return client


def answering(seen: list, down: frozenset = frozenset()):
    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in down:
            raise httpx.ConnectError("refused", request=request)
        if request.method == "GET":
            return httpx.Response(200, json={"status": "ok"})
        body = json.loads(request.content)
        assert request.headers["x-hc-internal-token"] == "secret"
        seen.append((host, body["sender"]))
        return httpx.Response(200, json={"messages": [{"text": host}], "intent": {"name": "greet"}})
    return handler


def test_urls_are_split_and_trimmed():
    assert server_urls(URLS) == ["http://rasa-a:1", "http://rasa-b:2"]
    with pytest.raises(ValueError):
        server_urls(" , ")


def test_each_conversation_stays_on_one_server_and_both_are_used():
    seen: list = []
    client = client_with(answering(seen))
    senders = [f"conv-{i}" for i in range(40)]

    async def run():
        for _ in range(3):
            for s in senders:
                await client.send(s, "你好", {})
        await client.close()

    asyncio.run(run())
    hosts = {}
    for host, sender in seen:
        hosts.setdefault(sender, set()).add(host)
    assert all(len(h) == 1 for h in hosts.values())                 # pinned
    assert {h for hs in hosts.values() for h in hs} == {"rasa-a", "rasa-b"}
    assert all(hosts[s] == {["rasa-a", "rasa-b"][pinned(s, 2)]} for s in senders)
    # Evenly: ids that differ in a digit or two spread over both servers.
    shares = [sum(pinned(f"bench-{w}-{i}", 2) == k for w in range(16) for i in range(50)) / 800 for k in (0, 1)]
    assert min(shares) > 0.4, shares


def test_a_refused_connection_goes_to_the_next_server_and_all_down_is_unavailable():
    seen: list = []
    sender = next(s for s in (f"c{i}" for i in range(100)) if pinned(s, 2) == 0)      # pinned to rasa-a
    client = client_with(answering(seen, down=frozenset({"rasa-a"})))
    turn = asyncio.run(client.send(sender, "你好", {}))
    assert turn.messages[0]["text"] == "rasa-b" and seen == [("rasa-b", sender)]
    assert asyncio.run(client.ready()) is False                    # one down: not fully up

    client = client_with(answering([], down=frozenset({"rasa-a", "rasa-b"})))
    with pytest.raises(BotUnavailable):
        asyncio.run(client.send(sender, "你好", {}))


def test_a_server_error_is_not_retried_elsewhere():
    calls = []

    def handler(request):
        calls.append(request.url.host)
        return httpx.Response(500)

    client = client_with(handler)
    with pytest.raises(BotUnavailable):
        asyncio.run(client.send("c1", "你好", {}))
    assert len(calls) == 1            # it may have run the turn: sending it again could repeat it


def test_ready_when_every_server_answers():
    assert asyncio.run(client_with(answering([])).ready()) is True
