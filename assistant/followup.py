"""Short follow-up questions that lean on the previous answer's topic.

After 「怎么为家人申领」 a user asks 「那最多几个?」 or 「老人呢?」: on its own such a question is
a close call or names nothing, but the conversation says which part of the FAQ it is about.
`resolve` keeps the question's own result when that is confident and otherwise uses the topic
in two ways, each of which must be confident on its own terms:

1. enriched: the question retried with the previous entry's title in front of it
   (「为家人申领步骤 那最多几个?」), taken only when that search answers outright, and not when
   it merely falls back on the previous entry (the title words pull towards it) unless the bare
   question pointed there too;
2. same topic: the bare question's best entry, when it is a close call only, lies in the previous
   entry's section, is not the previous entry, and leads the rest of that section by the
   retriever's own margin (「老人呢?」 ranks family.elderly first but below the answer threshold).

Anything else keeps the bare question's clarify/none result: a guess is worse than asking back.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable

from retrieval.types import KnowledgeBase, SearchResult

# Elliptical openers and closers. Chinese questions ending in 呢 are follow-ups by form
# (「截图呢」, 「那外国人呢」); English ones start with what about / and / what if.
_ZH_LEAD = ("那么", "那", "还有", "如果", "要是", "另外", "那如果")
_EN_LEAD = re.compile(r"^(?:what about|how about|what if|and|also|then)\b", re.IGNORECASE)
_ZH_TAIL = re.compile(r"呢\s*[?？!！。.~～]*\s*$")
_CJK = re.compile(r"[\u3400-\u9fff]")
_WORD = re.compile(r"[A-Za-z0-9']+")

# A follow-up is short; a long sentence that happens to start with 那 carries its own topic.
MAX_ZH_CHARS = 14
MAX_EN_WORDS = 8


def is_followup(text: str) -> bool:
    """True for an elliptical question that only makes sense after the previous turn."""
    t = (text or "").strip()
    if not t or t.startswith("/"):
        return False
    if _CJK.search(t):
        if len(re.sub(r"\s", "", t)) > MAX_ZH_CHARS:
            return False
        return t.startswith(_ZH_LEAD) or bool(_ZH_TAIL.search(t))
    words = _WORD.findall(t)
    if not words or len(words) > MAX_EN_WORDS:
        return False
    return bool(_EN_LEAD.match(t))


@dataclass(frozen=True)
class Resolution:
    result: SearchResult
    how: str          # "plain" | "enriched" | "same_topic"


def resolve(text: str, previous_faq_id: str | None, kb: KnowledgeBase,
            search: Callable[[str], SearchResult], margin: float) -> Resolution:
    """The search result to act on for `text`, using the previous entry when it is a follow-up.

    `search` is one retriever's search (all entries scored, best first) so that a KB swap in the
    middle cannot mix two indexes; `margin` is that retriever's answer margin.
    """
    plain = search(text)
    if plain.decision == "answer" or not previous_faq_id or not is_followup(text):
        return Resolution(plain, "plain")
    try:
        previous = kb.get(previous_faq_id)
    except KeyError:   # the entry left the KB in a reload since it was answered
        return Resolution(plain, "plain")

    enriched = search(f"{previous.title} {text}")
    if enriched.decision == "answer" and enriched.top is not None:
        new_entry = enriched.top.faq_id != previous.id
        bare_agrees = plain.top is not None and plain.top.faq_id == enriched.top.faq_id
        if new_entry or bare_agrees:
            return Resolution(replace(enriched, query=text), "enriched")

    if plain.decision == "clarify" and plain.top is not None and plain.top.faq_id != previous.id:
        section = [h for h in plain.results if _section(kb, h.faq_id) == previous.section]
        if section and section[0].faq_id == plain.top.faq_id:
            runner_up = section[1].score if len(section) > 1 else 0.0
            if plain.top.score - runner_up >= margin:
                return Resolution(replace(plain, decision="answer"), "same_topic")
    return Resolution(plain, "plain")


def _section(kb: KnowledgeBase, faq_id: str) -> str | None:
    try:
        return kb.get(faq_id).section
    except KeyError:
        return None
