"""Instances following a KB reload made on another one (assistant/kb_sync.py): woken by the
broker's "kb" topic, each compares the KB on disk with the one it serves and reloads only when
they differ; a malformed KB or a busy reload leaves the index in use serving."""
from __future__ import annotations

import asyncio
import shutil
from types import SimpleNamespace

import pytest

from assistant import kb_reload, kb_sync, runtime
from core.settings import REPO_ROOT, Settings
from delivery.broker import MemoryBroker
from retrieval.kb import load_kb


@pytest.fixture
def kb_file(tmp_path):
    path = tmp_path / "faq_zh.md"
    shutil.copy(REPO_ROOT / "kb" / "faq_zh.md", path)
    return path


@pytest.fixture
def serving(kb_file):
    """A stand-in retriever serving the KB as it is now (only .kb.version is read)."""
    previous = runtime.install(SimpleNamespace(kb=SimpleNamespace(version=load_kb(kb_file).version)))
    yield
    if previous is None:
        runtime._retriever = None
    else:
        runtime.install(previous)


def settings_for(kb_file) -> Settings:
    return Settings(kb_path=kb_file, var_dir=kb_file.parent)


def edit(kb_file) -> None:
    kb_file.write_text(kb_file.read_text(encoding="utf-8").replace("0591-62623959", "0591-62623959 ", 1),
                       encoding="utf-8")


def test_the_same_kb_is_not_reloaded(kb_file, serving):
    calls = []
    assert kb_sync.catch_up(settings_for(kb_file), calls.append) is False
    assert calls == []


def test_a_changed_kb_is_reloaded(kb_file, serving):
    calls = []
    edit(kb_file)
    assert load_kb(kb_file).version != runtime.retriever().kb.version
    assert kb_sync.catch_up(settings_for(kb_file), calls.append) is True
    assert len(calls) == 1


def test_a_malformed_kb_or_a_busy_reload_changes_nothing(kb_file, serving):
    def busy(_settings):
        raise kb_reload.ReloadBusy("a KB reload is already running")

    edit(kb_file)
    assert kb_sync.catch_up(settings_for(kb_file), busy) is False
    kb_file.write_text("not a knowledge base", encoding="utf-8")
    calls = []
    assert kb_sync.catch_up(settings_for(kb_file), calls.append) is False
    assert calls == []


def test_nothing_happens_before_the_index_is_loaded(kb_file):
    previous = runtime.install(None)  # type: ignore[arg-type]
    try:
        calls = []
        assert kb_sync.catch_up(settings_for(kb_file), calls.append) is False
        assert calls == []
    finally:
        if previous is not None:
            runtime.install(previous)


def test_a_published_kb_topic_wakes_the_follower(kb_file, serving):
    async def scenario():
        broker, calls = MemoryBroker(), []
        task = asyncio.create_task(kb_sync.follow(broker, settings_for(kb_file), calls.append))
        try:
            for _ in range(100):                       # subscribed
                if broker.subscriber_count(kb_sync.KB_TOPIC):
                    break
                await asyncio.sleep(0.01)
            broker.publish(kb_sync.KB_TOPIC)           # nothing changed on disk: nothing to do
            await asyncio.sleep(0.2)
            assert calls == []
            edit(kb_file)
            broker.publish(kb_sync.KB_TOPIC)
            for _ in range(200):
                if calls:
                    break
                await asyncio.sleep(0.01)
            assert len(calls) == 1
        finally:
            await kb_sync.stop(task)
            await broker.close()

    asyncio.run(scenario())
