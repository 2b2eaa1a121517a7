"""core.pii: every way people write an ID or a phone number is masked; the hotline is not."""
from __future__ import annotations

import logging

import pytest

from core.logs import JsonFormatter
from core.pii import conversation_ref, mask_text

RAW_ID, RAW_PHONE = "350102199001011234", "13812345678"


@pytest.mark.parametrize("written, expected", [
    ("身份证350102199001011234", "身份证3501**********1234"),
    ("ID350102199001011234", "ID3501**********1234"),
    ("id:35010219900101123X", "id:3501**********123X"),
    ("350102 19900101 1234", "3501**********1234"),
    ("350102-19900101-1234", "3501**********1234"),
    ("老身份证350102900101123", "老身份证3501*******1123"),
    ("电话13812345678", "电话138****5678"),
    ("+86 138 1234 5678", "138****5678"),
    ("+8613812345678", "138****5678"),
    ("0086-13812345678", "138****5678"),
    ("86 13812345678", "138****5678"),
    ("138-1234-5678", "138****5678"),
    ("138 1234 5678", "138****5678"),
    ("138.1234.5678", "138****5678"),
    ("tel13812345678,谢谢", "tel138****5678,谢谢"),
    ("护照E12345678", "护照E******78"),
    ("/我的身份证350102199001011234 电话13812345678", "/我的身份证3501**********1234 电话138****5678"),
])
def test_every_written_form_is_masked(written, expected):
    assert mask_text(written) == expected


@pytest.mark.parametrize("kept", [
    "请拨打客服热线0591-62623959", "2026-12-01 07:12:49", "隔离14天", "L4人脸识别", "1764573169.123",
    "订单号20261201123456", "4个父母名额、3个子女",
])
def test_what_is_not_personal_stays_readable(kept):
    assert mask_text(kept) == kept


def test_names_given_are_masked_longest_first():
    assert mask_text("我叫林小明,我爸林大山", ("林大山", "林小明")) == "我叫林**,我爸林**"


def test_conversation_ref_is_stable_and_not_the_id():
    assert conversation_ref("anon:x") == conversation_ref("anon:x") != conversation_ref("anon:y")
    assert "anon:x" not in conversation_ref("anon:x")


def test_the_log_formatter_masks_whatever_a_line_carries():
    """A third-party message or an exception that quotes a number never reaches the log raw."""
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, f"failed for {RAW_PHONE}", None, None)
    record.fields = {"detail": f"id {RAW_ID}"}
    try:
        raise ValueError(f"bad value {RAW_ID}")
    except ValueError:
        import sys
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert RAW_ID not in line and RAW_PHONE not in line
    assert "138****5678" in line and "3501**********1234" in line


@pytest.mark.parametrize("value, masked", [
    ("350102199001011234", "3501**********1234"), ("E12345678", "E******78"), ("H1234567", "H*****67"),
    ("AB1", "A**"), ("", ""),
])
def test_document_numbers_keep_little(value, masked):
    from core.pii import mask_id_number

    assert mask_id_number(value) == masked
