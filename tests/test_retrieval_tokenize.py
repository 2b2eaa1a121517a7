"""Tokens for BM25: domain words whole, numbers with their units, English stemmed."""
from __future__ import annotations

from retrieval.tokenize import BIGRAM_PREFIX, char_bigrams, stem, terms, words


def test_domain_words_stay_whole():
    toks = words("闽政通里八闽健康码为家人申领失败,人脸识别和实名认证都做了")
    for w in ("闽政通", "八闽健康码", "为家人申领", "人脸识别", "实名认证"):
        assert w in toks, (w, toks)


def test_mixed_latin_digits_and_chinese():
    toks = words("已隔离14天,L4认证后拨打0591-62623959")
    assert "14天" in toks
    assert "l4" in toks
    assert "0591-62623959" in toks


def test_full_width_and_traditional_input_gives_the_same_tokens():
    assert words("ＬＡ健康碼能截圖嗎") == words("la健康码能截图吗")


def test_stop_words_dropped():
    toks = words("请问我的健康码是什么颜色的呢")
    assert "的" not in toks and "呢" not in toks and "请问" not in toks
    assert "健康码" in toks and "颜色" in toks
    assert words("Can I use the code?") == ["use", stem("code")]


def test_english_stemming_matches_inflections():
    assert stem("applying") == stem("applied") == stem("apply")
    assert stem("codes") == stem("code")
    assert stem("families") == stem("family")


def test_colloquial_question_words_map_to_one_form():
    assert "怎么" in words("健康码咋弄")
    assert "什么" in words("这是啥")


def test_bigrams_cover_chinese_runs_only():
    assert char_bigrams("健康码L4截图") == [BIGRAM_PREFIX + "健康", BIGRAM_PREFIX + "康码",
                                          BIGRAM_PREFIX + "截图"]
    assert set(terms("健康码", bigrams=True)) > set(terms("健康码", bigrams=False))
