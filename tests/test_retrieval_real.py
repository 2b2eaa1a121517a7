"""The real KB with the real e5 model, measured on the dev set (slow: loads the model).

The dev set is only measured against here; nothing in the KB or the thresholds is fitted to it.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from retrieval import evaluate
from retrieval import index as idx
from retrieval.kb import load_kb

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
DEV = REPO.parent / "shared" / "eval" / "faq_dev.jsonl"
MODEL = Path(os.environ.get("HC_MODEL_DIR") or Path.home() / ".cache" / "hc-try" / "e5-model")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not (MODEL / "model.safetensors").is_file():
        pytest.skip(f"no converted e5 model at {MODEL}")
    out = tmp_path_factory.mktemp("idx") / "index"
    idx.build_index(REPO / "kb" / "faq_zh.md", MODEL, out)
    return out


@pytest.fixture(scope="module")
def retriever(built):
    return idx.load_retriever(built, REPO / "kb" / "faq_zh.md", MODEL)


def test_dev_set_targets(retriever):
    if not DEV.is_file():
        pytest.skip("no dev set")
    rep = evaluate.report(evaluate.run(retriever, evaluate.load_cases(DEV)))
    print(evaluate.format_report(rep))
    assert rep["all"]["hit@1"] >= 0.85
    assert rep["all"]["hit@3"] >= 0.95
    assert rep["all"]["wrong_answer"] <= 0.02
    assert rep["all"]["oos_abstain"] >= 0.9
    assert rep["en"]["hit@1"] >= 0.9


@pytest.mark.parametrize("query, expected", [
    ("健康码截个图给门卫看可以吗", {"personal.screenshot"}),
    ("我爸妈没有智能手机,能用我的账号给他们弄码吗", {"family.elderly", "family.howto"}),
    ("Can a foreigner get the health code?", {"overseas.foreigner_bamin", "overseas.foreign_passport"}),
])
def test_ranks_our_own_examples_first(retriever, query, expected):
    assert retriever.search(query).results[0].faq_id in expected


@pytest.mark.parametrize("query", ["你好", "谢谢", "明天厦门天气怎么样", "How do I renew my passport?",
                                   "社保卡怎么办理"])
def test_out_of_scope_not_answered(retriever, query):
    assert retriever.search(query).decision != "answer"


def test_index_loads_fast_without_reencoding(built, retriever):
    import time

    t0 = time.perf_counter()
    again = idx.load_retriever(built, REPO / "kb" / "faq_zh.md", MODEL, encoder=retriever.encoder)
    assert time.perf_counter() - t0 < 2.0
    assert again.search("健康码能截图吗").results[0].faq_id == "personal.screenshot"
