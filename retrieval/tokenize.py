"""Tokens for lexical matching: jieba words for Chinese, stemmed words for English, whole tokens
for numbers that matter here (L4, 14天, 0591-62623959), plus Chinese character bigrams.

The jieba tokenizer is our own instance (not jieba's global one, which other code may load other
dictionaries into), created on first use with the domain dictionary kb/jieba/userdict.txt.
"""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

from retrieval.text import normalize

USERDICT = Path(__file__).resolve().parent.parent / "kb" / "jieba" / "userdict.txt"
BIGRAM_PREFIX = "#"   # keeps bigram features apart from 2-character words of the same text

_tokenizer = None
_tokenizer_lock = threading.Lock()

# Order matters: phone numbers before number+unit before plain Latin/digit runs.
_PIECES = re.compile(
    r"(?P<phone>\d{3,4}-\d{7,8})"
    r"|(?P<qty>\d+(?:周岁|岁|天|日|周|名|个|次|分钟|小时|个月|年))"
    r"|(?P<latin>[a-z0-9]+(?:['’][a-z]+)?)"
    r"|(?P<cjk>[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)"
)

ZH_STOPWORDS = frozenset(
    "的 了 吗 呢 啊 吧 呀 哦 嘛 么 哈 啦 呗 嗯 我 我的 你 您 你们 他 她 它 他们 我们 咱 咱们 这 那 这个 那个 "
    "一下 请问 请 麻烦 是 和 与 及 或 就 都 也 还 又 个 之 其 被 把 给 吧 着 过 得 地 所 就是 一样 话 "
    "谢谢 你好 您好".split()
)
EN_STOPWORDS = frozenset(
    "a an the is are am was were be been being do does did i me my mine you your we our us it its "
    "this that these those to of in on at by for from with and or but if so as please can could would "
    "should will shall may might there here any some just also still yet then than".split()
)
# Colloquial variants that carry the same question: mapped to one form so they match.
SYNONYMS = {
    "咋": "怎么", "咋么": "怎么", "怎样": "怎么", "如何": "怎么", "怎么样": "怎么", "怎么办": "怎么",
    "咋办": "怎么", "咋整": "怎么", "啥": "什么", "为啥": "为什么", "干嘛": "为什么",
    "能不能": "能否", "可不可以": "可以", "能否": "能否", "是不是": "是否",
    # The KB says 申领 where people say 申请 (and jieba keeps 申领 whole via the user dictionary).
    "申请": "申领",
}


def _jieba():
    global _tokenizer
    if _tokenizer is None:
        with _tokenizer_lock:
            if _tokenizer is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)   # its prefix-dict banner is not our log
                tk = jieba.Tokenizer()
                tk.initialize()
                if USERDICT.exists():
                    tk.load_userdict(str(USERDICT))
                _tokenizer = tk
    return _tokenizer


def warm_up() -> None:
    """Load jieba's dictionary now (≈1 s) instead of during the first query."""
    _jieba()


def stem(word: str) -> str:
    """A tiny suffix stripper: enough to match apply/applied/applying, code/codes."""
    w = word.replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) <= 3:
        return w
    if w.endswith("ies") or w.endswith("ied"):
        return w[:-3] + "y"
    if w.endswith("ing") and len(w) > 5:
        w = w[:-3]
    elif w.endswith("ed") and len(w) > 4:
        w = w[:-2]
    elif w.endswith(("sses", "shes", "ches", "xes")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith("ss") and not w.endswith("us"):
        w = w[:-1]
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    return w


def _cjk_words(run: str) -> list[str]:
    out = []
    for word in _jieba().cut(run, HMM=True):
        word = SYNONYMS.get(word, word)
        if word and word not in ZH_STOPWORDS:
            out.append(word)
    return out


def words(text: str) -> list[str]:
    """Normalised word tokens, stop-words dropped."""
    text = normalize(text)
    out: list[str] = []
    for m in _PIECES.finditer(text):
        kind = m.lastgroup
        piece = m.group()
        if kind in ("phone", "qty"):
            out.append(piece)
        elif kind == "latin":
            if piece not in EN_STOPWORDS:
                out.append(stem(piece))
        else:
            out.extend(_cjk_words(piece))
    return out


def char_bigrams(text: str) -> list[str]:
    """Overlapping character pairs of every Chinese run: robust to word-segmentation mistakes."""
    text = normalize(text)
    out = []
    for m in _PIECES.finditer(text):
        if m.lastgroup != "cjk":
            continue
        run = m.group()
        out.extend(BIGRAM_PREFIX + run[i:i + 2] for i in range(len(run) - 1))
    return out


def terms(text: str, bigrams: bool = True) -> list[str]:
    """What BM25 indexes and queries with: words, plus character bigrams."""
    return words(text) + (char_bigrams(text) if bigrams else [])
