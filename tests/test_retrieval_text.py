"""Normalising user text, guessing its language, and spotting greetings and noise."""
from __future__ import annotations

import pytest

from retrieval.text import (MAX_QUERY_CHARS, clean, detect_lang, for_encoder, is_blank_or_noise,
                            is_smalltalk, normalize)


def test_full_width_becomes_half_width_and_latin_lower_case():
    assert normalize("Ｌ４人脸识别？ＡＢＣ") == "l4人脸识别?abc"


def test_control_characters_removed_and_whitespace_collapsed():
    assert normalize("健康\u200b码\x00  能\t\n截图\u202e吗 ") == "健康码 能 截图吗"


def test_traditional_becomes_simplified():
    assert normalize("為什麼我不能為家人申領健康碼") == "为什么我不能为家人申领健康码"


def test_length_is_capped():
    assert len(normalize("码" * 5000)) == MAX_QUERY_CHARS
    assert len(clean("a " * 5000, max_chars=10)) <= 10


def test_for_encoder_keeps_case_but_simplifies():
    assert for_encoder("Can I use 八閩健康碼？") == "Can I use 八闽健康码?"


@pytest.mark.parametrize("text, lang", [
    ("健康码可以截图吗", "zh"),
    ("为什么L4人脸识别不通过", "zh"),
    ("健康碼可以截圖嗎", "zh-hant"),
    ("Can I use a screenshot of my health code?", "en"),
    ("How do I apply for the 八闽健康码?", "en"),
    ("", "zh"),
])
def test_detect_lang(text, lang):
    assert detect_lang(text) == lang


@pytest.mark.parametrize("text", ["", "   ", "？？？", "😀😀😀", "......", "aaaaaa", "sdfghjkl", "1"])
def test_noise(text):
    assert is_blank_or_noise(text)


@pytest.mark.parametrize("text", ["健康码", "L4", "码?", "why", "14天"])
def test_short_real_questions_are_not_noise(text):
    assert not is_blank_or_noise(text)


@pytest.mark.parametrize("text", ["你好", "您好！", "谢谢", "好的谢谢", "再见", "hello", "Thank you!", "ok"])
def test_smalltalk(text):
    assert is_smalltalk(text)


@pytest.mark.parametrize("text", ["你好,健康码能截图吗", "谢谢,那外国人能申领吗", "hello, can I print my code?"])
def test_questions_after_a_greeting_are_not_smalltalk(text):
    assert not is_smalltalk(text)


@pytest.mark.parametrize("typo, fixed", [
    ("建康码可以截图吗", "健康码可以截图吗"),
    ("健康吗咋是橙的", "健康码咋是橙的"),
    ("闽证通刷脸不行", "闽政通刷脸不行"),
    ("八闽建康码到省外能用吗", "八闽健康码到省外能用吗"),
    ("為家人申請健康碼", "为家人申领健康码"),          # traditional first, then the typo table
    ("境外入民健康码申岭不了", "境外入闽健康码申领不了"),
])
def test_domain_typos_and_homophones_are_fixed(typo, fixed):
    assert normalize(typo) == fixed
    assert for_encoder(typo) == fixed


def test_typo_table_leaves_correct_text_alone():
    text = "健康码吗?我在闽政通为家人申领了"
    assert normalize(text) == text
