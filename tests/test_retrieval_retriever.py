"""Fusion, the answer / clarify / none decision, calibration and the batching encoder."""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from _retrieval_fakes import FakeEncoder, tiny_kb
from retrieval.calibrate import Target, calibrate
from retrieval.dense import BatchingQueryEncoder
from retrieval.retriever import Params, Retriever, decide
from retrieval.types import KnowledgeBase

OOS = ["明天福州会下雨吗", "社保卡丢了怎么补办", "What's the weather tomorrow?", "公积金怎么提取",
       "附近有什么好吃的", "怎么办理护照", "驾驶证到期怎么换", "How do I pay my electricity bill?"]


@pytest.fixture(scope="module")
def bm25_retriever():
    r = Retriever(tiny_kb(), None, params=Params(bm25_only=True, t_answer=0.5, t_clarify=0.2, margin=0.1))
    r.warm_up()
    return r


@pytest.fixture(scope="module")
def fused_retriever():
    r = Retriever(tiny_kb(), FakeEncoder(), params=Params(w_dense=0.5, dense_lo=0.2, dense_hi=0.9))
    r.warm_up()
    return r


def test_constructor_validates_only():
    enc = FakeEncoder()
    r = Retriever(tiny_kb(), enc)
    assert not enc.warmed and not r.ready
    with pytest.raises(RuntimeError):
        r.search("健康码能截图吗")
    with pytest.raises(ValueError):
        Retriever(tiny_kb(), None, params=Params(bm25_only=False))
    with pytest.raises(ValueError):
        Retriever(KnowledgeBase(entries=(), version="x"), None)
    with pytest.raises(ValueError):
        Retriever(tiny_kb(), None, params=Params(bm25_only=True, t_answer=0.2, t_clarify=0.5))


@pytest.mark.parametrize("query, expected", [
    ("健康码截图了可以用吗", "personal.screenshot"),
    ("刷脸老是失败", "personal.face_fail"),
    ("最多可以给几个家人申领", "family.quota"),
    ("外国护照能领健康码吗", "overseas.foreign_passport"),
    ("Is a screenshot of the code valid?", "personal.screenshot"),
    ("how many family members can I add", "family.quota"),
])
def test_bm25_ranks_the_right_entry_first(bm25_retriever, query, expected):
    res = bm25_retriever.search(query, k=3)
    assert res.results[0].faq_id == expected
    assert len(res.results) == 3
    assert res.kb_version == "v1"
    scores = [h.score for h in res.results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


@pytest.mark.parametrize("query", ["你好", "谢谢!", "hello", "？？？", "", "asdfghjkl"])
def test_greetings_and_noise_come_out_none(fused_retriever, query):
    res = fused_retriever.search(query)
    assert res.decision == "none" and res.abstain and res.results == ()


def test_fused_search_uses_both_sides(fused_retriever):
    res = fused_retriever.search("外国护照能领健康码吗")
    assert res.results[0].faq_id == "overseas.foreign_passport"
    comps = fused_retriever.components("外国护照能领健康码吗")
    assert comps.dense_rows is not None and comps.dense_rows.shape == (len(fused_retriever.phrasings.texts),)


def test_decide():
    p = Params(bm25_only=True, t_answer=0.6, t_clarify=0.3, margin=0.1)
    assert decide(np.array([0.9, 0.2]), p) == "answer"
    assert decide(np.array([0.9, 0.85]), p) == "clarify"     # close call between the top two
    assert decide(np.array([0.5, 0.1]), p) == "clarify"      # something close, not sure enough
    assert decide(np.array([0.2, 0.1]), p) == "none"
    assert decide(np.array([0.9]), p) == "answer"
    assert decide(np.array([]), p) == "none"


def test_thresholds_drive_the_decision(bm25_retriever):
    q = "健康码截图了可以用吗"
    strict = bm25_retriever.with_params(replace(bm25_retriever.params, t_answer=1.0, t_clarify=1.0))
    lax = bm25_retriever.with_params(replace(bm25_retriever.params, t_answer=0.0, t_clarify=0.0, margin=0.0))
    assert strict.search(q).decision == "none"
    assert lax.search(q).decision == "answer"


def test_calibration_keeps_wrong_answers_under_target(fused_retriever):
    target = Target(max_wrong_rate=0.02, max_oos_answered=0.0)
    p = calibrate(fused_retriever, OOS, target)
    stats = p.calibration
    assert stats["positives"] == sum(fused_retriever.phrasings.alternate) > 0
    assert stats["negatives"] == len(OOS)
    assert stats["wrong_rate"] <= 0.02 and stats["oos_answered"] == 0.0
    assert 0.0 <= p.t_clarify <= p.t_answer <= 1.0
    assert p.dense_lo < p.dense_hi
    tuned = fused_retriever.with_params(p)
    for q in OOS:
        assert tuned.search(q).decision != "answer", q


def test_calibration_bm25_only(bm25_retriever):
    p = calibrate(bm25_retriever, OOS)
    assert p.bm25_only and p.w_dense == 0.0
    assert p.calibration["loo_hit1"] > 0.5


def test_batching_encoder_coalesces_concurrent_queries():
    enc = FakeEncoder()
    gate = threading.Event()
    real = enc.encode_queries

    def slow(texts):
        gate.wait(1.0)          # the first batch blocks until everyone has queued
        return real(texts)

    enc.encode_queries = slow
    batcher = BatchingQueryEncoder(enc, max_wait_s=0.001)
    texts = [f"问题{i}" for i in range(12)]
    out = {}

    def call(t):
        out[t] = batcher.encode_query(t)

    threads = [threading.Thread(target=call, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    threading.Timer(0.2, gate.set).start()
    for t in threads:
        t.join(5)
    assert len(out) == 12
    for t in texts:
        assert np.allclose(out[t], real([t])[0])
    assert len(enc.calls) - 12 < 12 and max(enc.calls) > 1   # fewer encoder calls than queries


def test_batching_encoder_reports_errors():
    class Broken(FakeEncoder):
        def encode_queries(self, texts):
            raise RuntimeError("model gone")

    with pytest.raises(RuntimeError, match="model gone"):
        BatchingQueryEncoder(Broken()).encode_query("x", timeout=5)


def test_dense_entry_score_is_mean_of_best_phrasings():
    from retrieval.retriever import dense_entry_scores, group_rows

    owners = np.array([0, 0, 0, 1, 1])
    groups = group_rows(owners, 2)
    rows = np.array([0.9, 0.5, 0.7, 0.6, 0.2], dtype=np.float32)
    assert np.allclose(dense_entry_scores(rows, groups, 2), [0.8, 0.4])
    assert np.allclose(dense_entry_scores(rows, groups, 1), [0.9, 0.6])
    assert np.allclose(dense_entry_scores(rows, groups, 2, exclude_row=0), [0.6, 0.4])
    assert np.allclose(dense_entry_scores(rows, groups, 5), [0.7, 0.4])   # fewer rows than top


def test_seed_questions_are_not_calibration_positives():
    from retrieval.retriever import Phrasings

    ph = Phrasings.of(tiny_kb())
    kb = tiny_kb()
    official = {t for e in kb.entries for t in (e.question, e.question_en)}
    assert {t for t, alt in zip(ph.texts, ph.alternate) if not alt} == official
    assert len(ph.texts) == sum(len(e.phrasings()) for e in kb.entries)


def test_a_question_asked_exactly_as_a_phrasing_is_answered_by_its_entry(bm25_retriever):
    # Punctuation, width and case differences do not matter; a strict threshold does not either.
    strict = bm25_retriever.with_params(replace(bm25_retriever.params, t_answer=0.99, margin=0.5))
    res = strict.search("健康码可以截图使用吗")
    assert res.decision == "answer" and res.top.faq_id == "personal.screenshot"
    res = strict.search("HOW MANY FAMILY MEMBERS CAN I APPLY FOR")
    assert res.decision == "answer" and res.top.faq_id == "family.quota"


def test_closing_the_batching_encoder_ends_its_thread_and_keeps_answering():
    enc = BatchingQueryEncoder(FakeEncoder())
    first = enc.encode_query("健康码截图")
    worker = enc._worker
    enc.close()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert np.allclose(enc.encode_query("健康码截图"), first)


def _slow_search_retriever(delay_s: float, fail: bool = False):
    r = Retriever(tiny_kb(), None, params=Params(bm25_only=True, t_answer=0.5, t_clarify=0.2, margin=0.1))
    r.warm_up()
    calls = []
    real = r._search

    def slow(query, k):
        calls.append((query, k))
        started.set()
        release.wait(5)
        if fail:
            raise RuntimeError("index gone")
        return real(query, k)

    started, release = threading.Event(), threading.Event()
    r._search = slow
    return r, calls, started, release


def test_a_search_asked_while_the_same_one_runs_waits_for_it():
    """The chat service's look-ahead and the FAQ action ask for the same search: it runs once."""
    r, calls, started, release = _slow_search_retriever(0.2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(r.search("健康码能截图吗", k=3))) for _ in range(3)]
    threads[0].start()
    assert started.wait(5)
    for t in threads[1:]:
        t.start()
    time.sleep(0.2)                       # the two latecomers are waiting on the first by now
    release.set()
    for t in threads:
        t.join(5)
    assert calls == [("健康码能截图吗", 3)]
    assert len(results) == 3 and all(res is results[0] for res in results)
    assert r.search("健康码能截图吗", k=3) is results[0]          # and it is kept for later
    r.search("健康码能截图吗", k=2)                              # another k is another search
    assert len(calls) == 2 and not r._pending


def test_a_failed_search_fails_its_waiters_too_and_is_not_kept():
    r, calls, started, release = _slow_search_retriever(0.2, fail=True)
    errors = []

    def run():
        try:
            r.search("健康码能截图吗")
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    threads[0].start()
    assert started.wait(5)
    threads[1].start()
    time.sleep(0.2)
    release.set()
    for t in threads:
        t.join(5)
    assert len(errors) == 2 and len(calls) == 1 and not r._pending
    assert r.cached_result("健康码能截图吗") is None
