"""Follow-ups from the issue against the real index and e5 model (slow: loads the model)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from _env import missing
from assistant import faq, feedback, runtime
from core.settings import REPO_ROOT

pytestmark = pytest.mark.slow
KB_PATH = REPO_ROOT / "kb" / "faq_zh.md"


@pytest.fixture(scope="module")
def retriever():
    index, model = os.environ.get("HC_INDEX_DIR"), os.environ.get("HC_MODEL_DIR")
    if not (index and model and Path(index, "meta.json").is_file()):
        missing("no built index/model (run `make setup`)")
    from retrieval.index import load_retriever

    return load_retriever(index, KB_PATH, model)


@pytest.fixture(autouse=True)
def installed(retriever, monkeypatch):
    monkeypatch.setattr(runtime, "_retriever", retriever)
    monkeypatch.setattr(feedback, "record_unanswered", lambda *a: None, raising=False)


@pytest.mark.parametrize(("previous", "text", "lang", "expected"), [
    ("family.howto", "那最多几个?", "zh", "family.quota"),
    ("family.howto", "老人呢?", "zh", "family.elderly"),
    ("family.quota", "老人呢?", "zh", "family.elderly"),
    ("overseas.howto", "那外国人呢", "zh", "overseas.foreigner_bamin"),
    ("personal.howto", "截图呢", "zh", "personal.screenshot"),
    ("family.howto", "what about elderly people?", "en", "family.elderly"),
])
def test_follow_up_answers_the_entry_the_topic_points_to(previous, text, lang, expected):
    reply = faq.answer(text, lang, previous_faq_id=previous, conversation_id="real")
    assert reply.meta["faq_id"] == expected, reply.meta


def test_follow_up_with_nothing_to_do_with_the_topic_is_not_answered():
    reply = faq.answer("那明天天气呢", "zh", previous_faq_id="family.howto", conversation_id="real")
    assert reply.meta["faq_id"] is None
