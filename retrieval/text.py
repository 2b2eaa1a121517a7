"""Normalising user text before it reaches the tokeniser or the encoder, and guessing its language.

Everything here is pure string work; the opencc converter is built on first use (it reads its
dictionaries from the package) and shared, since converting is read-only.
"""
from __future__ import annotations

import re
import threading
import unicodedata
from functools import lru_cache
from typing import Literal

Lang = Literal["zh", "zh-hant", "en"]

MAX_QUERY_CHARS = 200   # longer input is a paste, not a question; the head carries the question

_converter = None
_converter_lock = threading.Lock()

_WS = re.compile(r"\s+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_WORD_CHAR = re.compile(r"[0-9A-Za-z\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

# Greetings, thanks and acknowledgements: they must never be answered with an FAQ entry, and
# the embedding model scores such short texts unpredictably, so they are caught by pattern.
_SMALLTALK = re.compile(
    r"^(?:"
    r"(?:你好|您好|哈喽|嗨|在吗|在不在|有人吗|早上好|中午好|下午好|晚上好|早安|晚安|喂)+"
    r"|(?:谢谢|多谢|感谢|谢了|谢谢你|谢谢您|辛苦了|麻烦了)+(?:你|您|啦|了|哈)*"
    r"|(?:好的|好|嗯|嗯嗯|哦|噢|行|可以|知道了|明白了|收到|ok|okay)+(?:谢谢|的|了|啦)*"
    r"|(?:再见|拜拜|bye|88)+"
    r"|(?:哈)+|(?:呵)+"
    r"|(?:hi|hello|hey|yo|thanks|thank you|thank you very much|thank you so much|thx|ty"
    r"|good (?:morning|afternoon|evening|night)|goodbye|bye bye|see you|cheers|great|cool|nice)"
    r")[\s!！。.,，~～?？]*$"
)


def _t2s():
    global _converter
    if _converter is None:
        with _converter_lock:
            if _converter is None:
                from opencc import OpenCC  # the reimplementation is pure Python: cheap to build
                _converter = OpenCC("t2s")
    return _converter


@lru_cache(maxsize=4096)
def to_simplified(text: str) -> str:
    # Cached: one search converts the same question four times (normalising, matching, language,
    # the encoders' text), and the pure-Python converter is a visible share of a turn.
    return _t2s().convert(text)


# Typos and homophones of this domain's own words (pinyin input picks the wrong character of the
# same sound: 建康码, 健康吗, 闽证通). Each fix is a string no correct question contains, so it
# is applied everywhere, to the KB phrasings as well as to questions. Order: longer first.
DOMAIN_FIXES: tuple[tuple[str, str], ...] = (
    ("为家人申请", "为家人申领"),
    ("健康吗", "健康码"), ("建康码", "健康码"), ("键康码", "健康码"), ("健康玛", "健康码"),
    ("健康马", "健康码"), ("建康", "健康"),
    ("闽证通", "闽政通"), ("闽正通", "闽政通"), ("闽政同", "闽政通"), ("闵政通", "闽政通"),
    ("敏政通", "闽政通"), ("明政通", "闽政通"), ("八闵", "八闽"), ("八敏", "八闽"),
    ("入民健康码", "入闽健康码"), ("境外入民", "境外入闽"), ("省外入民", "省外入闽"),
    ("申岭", "申领"), ("申令", "申领"), ("申铃", "申领"),
    ("人脸失别", "人脸识别"), ("人脸识另", "人脸识别"), ("人脸视别", "人脸识别"),
    ("隔里", "隔离"), ("橙马", "橙码"), ("绿马", "绿码"), ("红马", "红码"), ("黄马", "黄码"),
)
_FIX_FIRST = frozenset(w[0] for w, _ in DOMAIN_FIXES)


def fix_domain_typos(text: str) -> str:
    """Simplified-character text with the known domain typos corrected."""
    if not _FIX_FIRST.intersection(text):
        return text
    for wrong, right in DOMAIN_FIXES:
        if wrong in text:
            text = text.replace(wrong, right)
    return text


def _strip_controls(text: str) -> str:
    # Control and format characters (zero-width joiners, BOMs, RTL marks) hide inside pasted
    # text and split tokens; whitespace controls become plain spaces.
    out = []
    for ch in text:
        if ch in "\t\n\r\f\v":
            out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs"):
            continue
        else:
            out.append(ch)
    return "".join(out)


def clean(text: str, max_chars: int = MAX_QUERY_CHARS) -> str:
    """NFKC (full-width → half-width), no control characters, single spaces, capped length.

    Case and script are kept: this is the form shown back to people and used for detect_lang.
    """
    text = unicodedata.normalize("NFKC", text or "")
    text = _strip_controls(text)
    text = _WS.sub(" ", text).strip()
    return text[:max_chars].strip()


def normalize(text: str, max_chars: int = MAX_QUERY_CHARS) -> str:
    """The matching form: clean(), lower-case Latin, traditional characters made simplified,
    domain typos fixed."""
    text = clean(text, max_chars).lower()
    if _CJK.search(text):
        text = fix_domain_typos(to_simplified(text))
    return text


_NOT_WORD = re.compile(r"[\W_]+")


def match_key(text: str) -> str:
    """normalize() without punctuation or spaces: two texts with the same key ask the same thing."""
    return _NOT_WORD.sub("", normalize(text))


def for_encoder(text: str, max_chars: int = MAX_QUERY_CHARS) -> str:
    """What the embedding model sees: clean() and simplified characters, case kept (the model's
    own vocabulary is cased, and lower-casing English names costs it); domain typos fixed."""
    text = clean(text, max_chars)
    if _CJK.search(text):
        text = fix_domain_typos(to_simplified(text))
    return text


def detect_lang(text: str) -> Lang:
    """'en' when Latin letters dominate; 'zh-hant' when t2s changes a character; else 'zh'."""
    text = clean(text)
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    # An English sentence naming "八闽健康码" still has several letters per Chinese character;
    # a Chinese one mentioning "L4" or "App" has far fewer.
    if latin > 2 * cjk:
        return "en"
    if cjk and to_simplified(text) != text:
        return "zh-hant"
    return "zh"


def is_blank_or_noise(text: str) -> bool:
    """Nothing a person could mean as a question: empty, punctuation or emoji only, a key mash."""
    text = normalize(text)
    chars = _WORD_CHAR.findall(text)
    if not chars:
        return True
    # One character repeated ("aaaaa", "？？？1") or a single Latin letter/digit.
    if len(set(chars)) == 1 and not _CJK.match(chars[0]):
        return True
    if len(chars) > 3 and len(set(chars)) == 1:
        return True
    # Latin letters only, nearly vowel-less or all from one keyboard row ("sdfghjkl",
    # "asdfghjkl"): a key mash, not a word.
    if not _CJK.search(text) and not re.search(r"\d", text):
        letters = "".join(c for c in chars if c.isalpha())
        vowels = sum(c in "aeiouy" for c in letters)
        one_row = any(set(letters) <= set(row) for row in _KEYBOARD_ROWS)
        if len(letters) >= 5 and (vowels == 0 or (one_row and vowels / len(letters) < 0.3)):
            return True
    return False


def is_smalltalk(text: str) -> bool:
    """Greetings, thanks, acknowledgements and good-byes (zh and en)."""
    return bool(_SMALLTALK.match(normalize(text)))
