"""`python -m retrieval report`: unanswered questions grouped (exact and near-duplicate), most frequent first."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from assistant import feedback
from retrieval import gaps
from retrieval.__main__ import main
from retrieval.text import match_key
from store import get_engine, migrate

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


@dataclass
class Row:
    text_masked: str
    decision: str = "none"
    conversation: str = "c"
    candidates: list = field(default_factory=list)
    lang: str = "zh"
    created_at: datetime = NOW
    text_normalised: str = ""

    def __post_init__(self):
        self.text_normalised = self.text_normalised or match_key(self.text_masked)


def test_similarity_of_variants_and_of_different_questions():
    sim = lambda a, b: gaps.similarity(gaps.bigrams(match_key(a)), gaps.bigrams(match_key(b)))  # noqa: E731
    assert sim("码咋是橙的", "码咋是橙的") == 1.0
    assert sim("码咋是橙的", "码咋是橙色的？") >= gaps.DEFAULT_SIMILARITY
    assert sim("核酸检测点在哪里", "核酸检测点在哪儿") >= gaps.DEFAULT_SIMILARITY
    assert sim("码咋是橙的", "外国人能弄码吗") < gaps.DEFAULT_SIMILARITY
    assert sim("核酸检测点在哪里", "疫苗在哪里打") < gaps.DEFAULT_SIMILARITY


def test_groups_exact_and_near_duplicates_most_frequent_first():
    rows = (
        [Row("核酸检测点在哪里", conversation=f"a{i}", candidates=[{"faq_id": "x.a", "score": 0.2}])
         for i in range(3)]
        + [Row("核酸检测点在哪儿？", decision="clarify", conversation="a0",
               candidates=[{"faq_id": "x.b", "score": 0.4}, {"faq_id": "x.a", "score": 0.3}])]
        + [Row("疫苗在哪里打", conversation=f"b{i}") for i in range(2)]
        + [Row("码咋是橙的", decision="not_helpful", candidates=[{"faq_id": "personal.orange_after_quarantine"}],
               created_at=NOW - timedelta(days=1))]
    )
    groups = gaps.group_questions(rows)
    assert [g.count for g in groups] == [4, 2, 1]
    first = groups[0]
    assert first.key == match_key("核酸检测点在哪里")          # named after its commonest form
    assert len(first.conversations) == 3
    assert dict(first.decisions) == {"none": 3, "clarify": 1}
    assert first.candidates.most_common() == [("x.a", 4), ("x.b", 1)]
    assert [e["text"] for e in first.to_dict()["examples"]] == ["核酸检测点在哪里", "核酸检测点在哪儿？"]
    assert groups[2].decisions == {"not_helpful": 1}

    text = gaps.format_groups(groups, limit=2)
    assert text.index("核酸检测点在哪里") < text.index("疫苗在哪里打")
    assert "码咋是橙的" not in text                         # beyond the limit
    assert "×4" in text and "x.a ×4" in text and "3 conversations" in text


def test_ties_broken_by_distinct_conversations():
    rows = [Row("健康码打不开", conversation="same")] * 2 + [Row("核酸报告查不到", conversation=c) for c in "xy"]
    assert [g.key for g in gaps.group_questions(rows)] == [match_key("核酸报告查不到"), match_key("健康码打不开")]


@pytest.fixture()
def stored(tmp_path):
    engine = get_engine(url=f"sqlite:///{tmp_path / 'hc.db'}")
    migrate(engine)
    feedback.configure(engine)
    try:
        for i in range(3):
            feedback.record_unanswered(f"u{i}", "核酸检测点在哪里", "none", [], "zh", "kb1")
        feedback.record_unanswered("u9", "核酸检测点在哪儿", "clarify",
                                   [{"faq_id": "personal.howto", "score": 0.3}], "zh", "kb1")
        feedback.record_unanswered("u5", "我的手机号13800138000收不到验证码", "none", [], "zh", "kb1")
        feedback.record("u7", "family.quota", False, "zh", question="最多几个家人啊我有九个")
        yield engine
    finally:
        feedback.configure(None)
        engine.dispose()


def test_report_command(stored, capsys):
    assert main(["report", "--since", "7", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "6 in 3 groups" in out
    assert out.index("核酸检测点在哪里") < out.index("收不到验证码")
    assert "×4" in out and "entries shown: personal.howto ×1" in out
    assert "138****8000" in out and "13800138000" not in out
    assert "family.quota: 1 / 1" in out


def test_report_command_json(stored, capsys):
    assert main(["report", "--json", "--limit", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["questions"] == 6 and len(data["groups"]) == 1
    top = data["groups"][0]
    assert top["count"] == 4 and top["conversations"] == 4
    assert top["decisions"] == {"none": 3, "clarify": 1}
    assert data["not_helpful"] == [{"faq_id": "family.quota", "not_helpful": 1, "total": 1}]
