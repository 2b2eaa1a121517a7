"""Suggested answers for the agent handling a ticket, from the same services the bot uses.

    suggestions(user_texts, findings, lang) -> [{"text", "source", "title"}]

* FAQ entries: what retrieval finds for the user's own messages (the transcript's user turns,
  newest first), exactly as the bot decides: an outright answer gives its entry, a close call
  the entries it would have offered, nothing close only the "related" ones above the retriever's
  suggestion floor. Text: the entry's answer in the ticket's language; source "faq:<id>".
* Findings: the next step of each diagnosis finding the ticket carries
  (diagnosis.replies.next_step); source "diagnosis:<code>".

Nothing is typed here: every text comes from the KB or the diagnosis templates. The same text
is never suggested twice. When the index is not loaded (start-up), only the findings' steps.
"""
from __future__ import annotations

import logging
from typing import Sequence

log = logging.getLogger("hc.tickets")

MAX_SEARCHED = 5         # the newest user turns looked up
MAX_SUGGESTIONS = 6


def _localised(text: str, lang: str) -> str:
    if lang == "zh-hant":
        from assistant.lang import to_traditional

        return to_traditional(text)
    return text


def _worth_searching(text: str) -> bool:
    from retrieval.text import is_blank_or_noise, is_smalltalk

    stripped = (text or "").strip()
    # A button payload (/request_human, /feedback{...}) is not a question.
    return bool(stripped) and not stripped.startswith("/") and not is_blank_or_noise(stripped) \
        and not is_smalltalk(stripped)


def faq_suggestions(user_texts: Sequence[str], lang: str) -> list[dict]:
    from assistant import runtime
    from assistant.faq import entry_answer, entry_title

    try:
        retriever = runtime.retriever()
    except runtime.NotReady:
        return []
    kb = retriever.kb
    out: list[dict] = []
    seen: set[str] = set()
    searched = 0
    for text in reversed(list(user_texts)):
        if searched >= MAX_SEARCHED:
            break
        if not _worth_searching(text):
            continue
        searched += 1
        result = retriever.search(text, k=3)
        if result.decision == "answer":
            hits = list(result.results[:1])
        elif result.decision == "clarify":
            hits = list(result.results)
        else:
            hits = [h for h in result.results if h.score >= retriever.params.t_suggest]
        for hit in hits:
            if hit.faq_id in seen or hit.faq_id not in kb.ids:
                continue
            seen.add(hit.faq_id)
            entry = kb.get(hit.faq_id)
            shown_lang = "en" if lang == "en" else "zh"
            out.append({"text": _localised(entry_answer(entry, shown_lang), lang),
                        "source": f"faq:{hit.faq_id}",
                        "title": _localised(entry_title(entry, shown_lang), lang)})
    return out


def finding_suggestions(findings: Sequence[dict], lang: str) -> list[dict]:
    from diagnosis import replies

    out = []
    for f in findings:
        code = f.get("code")
        if not code or code == "ok" or code not in replies.TEMPLATES:
            continue
        facts = {"basis": f["basis"]} if f.get("basis") else None
        try:
            step = replies.next_step(code, lang if lang in replies.LANGS else "zh", facts)
        except (KeyError, ValueError, IndexError):
            # A variant whose next step needs facts the ticket does not keep: the default one.
            try:
                step = replies.next_step(code, lang if lang in replies.LANGS else "zh")
            except (KeyError, ValueError, IndexError):
                continue
        out.append({"text": step, "source": f"diagnosis:{code}", "title": None})
    return out


def suggestions(user_texts: Sequence[str], findings: Sequence[dict], lang: str) -> list[dict]:
    """The findings' next steps first (about this user's own account), then FAQ answers."""
    try:
        faq = faq_suggestions(user_texts, lang)
    except Exception as exc:    # the panel still opens when retrieval fails
        log.warning("faq suggestions failed", extra={"fields": {"error": type(exc).__name__}})
        faq = []
    out: list[dict] = []
    texts: set[str] = set()
    for item in finding_suggestions(findings, lang) + faq:
        if item["text"] and item["text"] not in texts:
            texts.add(item["text"])
            out.append(item)
    return out[:MAX_SUGGESTIONS]
