"""The chat service starts a turn's FAQ search beside Rasa while few turns wait (assistant/chat.py
_look_ahead), and the FAQ action's own search then finds it (the retriever waits for a search
already running: tests/test_retrieval_retriever.py)."""
from __future__ import annotations

import asyncio
import threading

import pytest

from assistant import chat, faq
from assistant.chat import converse
from assistant.rasa_client import BotTurn


class WaitingRasa:
    """Answers once the look-ahead has run (or after a short wait when none comes)."""

    def __init__(self, seen: threading.Event):
        self.seen = seen

    async def send(self, sender, text, metadata):
        await asyncio.to_thread(self.seen.wait, 0.5)
        return BotTurn([{"text": "ok"}], "faq", 0.9, "zh")


@pytest.fixture
def looked(monkeypatch):
    texts: list[str] = []
    seen = threading.Event()

    def record(text):
        texts.append(text)
        seen.set()

    monkeypatch.setattr(faq, "look_ahead", record)
    return texts, seen


def test_the_search_starts_while_rasa_reads_the_message(looked):
    texts, seen = looked
    asyncio.run(converse(WaitingRasa(seen), "la-1", "  健康码可以截图吗  ", look_ahead=2))
    assert texts == ["健康码可以截图吗"]            # as Rasa stores it (stripped), so the action's search matches
    assert chat._waiting == 0


@pytest.mark.parametrize("text, below, waiting", [
    ("健康码可以截图吗", 0, 0),                     # off
    ('/feedback{"helpful":"yes"}', 2, 0),          # a button payload: no question to search
    ("健康码可以截图吗", 2, 2),                     # two turns already waiting: under load, no extra work
])
def test_no_look_ahead(looked, monkeypatch, text, below, waiting):
    texts, seen = looked
    monkeypatch.setattr(chat, "_waiting", waiting)
    asyncio.run(converse(WaitingRasa(seen), "la-2", text, look_ahead=below))
    assert texts == []
    assert chat._waiting == waiting                 # the count is back where it was


def test_the_count_comes_back_when_rasa_fails(looked):
    class Down:
        async def send(self, *a):
            raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        asyncio.run(converse(Down(), "la-3", "健康码可以截图吗", look_ahead=2))
    assert chat._waiting == 0


def test_the_look_ahead_is_the_search_the_faq_answer_makes(monkeypatch):
    """faq.look_ahead and faq.answer's first search are one call: same text, same k."""
    calls = []

    class Retriever:
        class kb:
            entries = [object()] * 7
            ids = ()

        class params:
            margin = 0.1

        def search(self, query, k=3):
            calls.append((query, k))
            raise LookupError("stop here")

    monkeypatch.setattr(faq.runtime, "retriever", lambda: Retriever())
    faq.look_ahead("健康码可以截图吗")                # a failure is swallowed: the action searches again
    with pytest.raises(LookupError):
        faq.answer("健康码可以截图吗")
    assert calls == [("健康码可以截图吗", 7), ("健康码可以截图吗", 7)]
