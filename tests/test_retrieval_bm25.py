"""The BM25 scorer ranks by shared rare terms and keeps its relative score in [0, 1]."""
from __future__ import annotations

import numpy as np
import pytest

from retrieval.bm25 import BM25

DOCS = [["健康码", "截图", "打印"], ["人脸识别", "失败", "健康码"], ["家人", "申领", "几个", "健康码"]]


def test_rare_shared_term_wins():
    bm = BM25(DOCS)
    assert bm.scores(["截图"]).argmax() == 0
    assert bm.scores(["人脸识别", "健康码"]).argmax() == 1
    assert bm.scores(["家人", "几个"]).argmax() == 2


def test_common_term_weighs_less_than_rare_one():
    bm = BM25(DOCS)
    s = bm.scores(["健康码"])
    assert np.ptp(s) < 0.2 * bm.scores(["截图"]).max()


def test_relative_scores_bounded_and_lower_for_unknown_words():
    bm = BM25(DOCS)
    exact = bm.relative_scores(["健康码", "截图", "打印"])
    diluted = bm.relative_scores(["健康码", "截图", "天气", "明天", "下雨"])
    assert 0.0 <= exact.min() and exact.max() <= 1.0
    assert exact[0] > 0.8
    assert diluted[0] < 0.5 * exact[0]
    assert not bm.relative_scores(["天气"]).any()
    assert not bm.relative_scores([]).any()


def test_empty_corpus_rejected():
    with pytest.raises(ValueError):
        BM25([])
