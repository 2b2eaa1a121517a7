"""Answer a question from the FAQ: the one service behind the bot's FAQ action and the search route.

Three outcomes, decided by the retriever's calibrated thresholds (never by numbers here):
  answer   the entry's answer, then "was this helpful?" buttons
  clarify  a close call: the top entries as buttons (KB 标题, or the English question for English
           users), plus 都不是 (/deny) and 转人工 (/request_human)
  none     nothing close: say so and give the hotline (with the nearest entries if any are near)
Every reply's meta carries the KB version it came from.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace

from assistant import feedback, followup, runtime
from assistant.texts import text
from assistant.types import Button, Message, Reply
from retrieval.types import FaqEntry, SearchResult

log = logging.getLogger("hc.faq")

SHOWN = 3   # entries offered as buttons when asking back


def search(query: str, k: int = 3) -> SearchResult:
    return runtime.retriever().search(query, k=k)


def cached(query: str, k: int = 3) -> SearchResult | None:
    """search's result if this exact question was searched lately, without searching."""
    return runtime.retriever().cached_result(query, k)


def answer(text_in: str, lang: str = "zh", *, previous_faq_id: str | None = None,
           conversation_id: str | None = None) -> Reply:
    # One retriever for the whole turn: a KB reload swapping the index in between must not
    # leave this reply half on the old KB (an id the new one lacks) and half on the new.
    retriever = runtime.retriever()
    resolved = followup.resolve(text_in, previous_faq_id, retriever.kb, _all_scores(retriever),
                                retriever.params.margin)
    result = replace(resolved.result, results=resolved.result.results[:SHOWN])
    if result.decision == "answer" and result.top:
        reply = _answer_reply(retriever, result.top.faq_id, lang, result)
    elif result.decision == "clarify":
        reply = _clarify_reply(retriever, result, lang)
    else:
        reply = _no_answer_reply(retriever, result, lang)
    if resolved.how != "plain":
        reply.meta["followup_of"] = previous_faq_id
    if result.decision != "answer":
        _remember_unanswered(conversation_id, text_in, result, lang)
    return reply


def _all_scores(retriever):
    every = len(retriever.kb.entries)   # all scores, so a follow-up can compare within a section
    return lambda q: retriever.search(q, k=every)


def look_ahead(text_in: str) -> None:
    """Run now the search answer() will start with for this text (the retriever keeps the result,
    and a search asked for while this one runs waits for it): the chat service calls it while
    Rasa is still reading the message. Any failure is answer()'s to report, later."""
    try:
        _all_scores(runtime.retriever())(text_in)
    except Exception:           # noqa: BLE001 - not ready, a KB swap: the action searches itself
        log.debug("look-ahead search failed", exc_info=True)


def answer_by_id(faq_id: str, lang: str = "zh") -> Reply:
    """A clarification button was pressed: answer that entry (an unknown id gets the no-answer reply)."""
    retriever = runtime.retriever()
    kb = retriever.kb
    if faq_id not in kb.ids:
        return _no_answer_reply(retriever, SearchResult(query="", decision="none", kb_version=kb.version),
                                lang)
    return _answer_reply(retriever, faq_id, lang, None)


# Heads the signed-in user's own finding after a general answer (with_personal).
OWN_FINDING = {"zh": "您的账户情况:", "en": "Your account:"}


def with_personal(general: Reply, own: Reply, lang: str = "zh") -> Reply:
    """A general answer followed by the user's own finding (assistant.diagnose.explain's reply):
    the answer, then "您的账户情况: …", then the rest (the helpful? buttons stay last).
    meta keeps the entry's and adds the finding's codes."""
    if not own.messages:
        return general
    head = OWN_FINDING["en" if lang == "en" else "zh"]
    first = own.messages[0]
    sep = " " if lang == "en" else ""
    own_messages = (Message(f"{head}{sep}{first.text}", first.buttons),) + own.messages[1:]
    messages = general.messages[:1] + own_messages + general.messages[1:]
    meta = {**general.meta, "diagnosis": list(own.meta.get("diagnosis") or []),
            "diagnosis_topic": own.meta.get("diagnosis_topic")}
    return Reply(messages, meta)


def entry_answer(entry: FaqEntry, lang: str) -> str:
    return entry.answer_en if lang == "en" else entry.answer


def entry_title(entry: FaqEntry, lang: str) -> str:
    return entry.question_en if lang == "en" else entry.title


def _payload(intent: str, **entities: str) -> str:
    if not entities:
        return f"/{intent}"
    return f"/{intent}{json.dumps(entities, ensure_ascii=False, separators=(',', ':'))}"


def _remember_unanswered(conversation_id: str | None, text_in: str, result: SearchResult, lang: str) -> None:
    # The feedback store lists what the bot could not answer for the KB editors; it is optional
    # here (a build without it, or a database that is down, must still answer the user).
    record = getattr(feedback, "record_unanswered", None)
    if record is None or conversation_id is None:
        return
    try:
        record(conversation_id, text_in, result.decision, result.results, lang, result.kb_version)
    except Exception:
        log.exception("recording an unanswered question failed")


def _answer_reply(retriever, faq_id: str, lang: str, result: SearchResult | None) -> Reply:
    kb = retriever.kb
    entry = kb.get(faq_id)
    buttons = (
        Button(text("helpful_yes", lang), _payload("feedback", helpful="yes", faq_id=faq_id)),
        Button(text("helpful_no", lang), _payload("feedback", helpful="no", faq_id=faq_id)),
    )
    messages = (Message(entry_answer(entry, lang)), Message(text("helpful_prompt", lang), buttons))
    meta = {"faq_id": faq_id, "decision": "answer", "kb_version": kb.version, "lang": lang,
            "score": round(result.top.score, 4) if result and result.top else None,
            "diagnosis_topics": list(entry.diagnosis)}
    return Reply(messages, meta)


def _entry_buttons(retriever, result: SearchResult, lang: str, floor: float = 0.0) -> tuple[Button, ...]:
    kb = retriever.kb
    return tuple(Button(entry_title(kb.get(hit.faq_id), lang), _payload("choose_faq", faq_id=hit.faq_id))
                 for hit in result.results if hit.score >= floor and hit.faq_id in kb.ids)


def _clarify_reply(retriever, result: SearchResult, lang: str) -> Reply:
    buttons = _entry_buttons(retriever, result, lang) + (
        Button(text("none_of_these", lang), "/deny"),
        Button(text("to_human", lang), "/request_human"),
    )
    meta = {"faq_id": None, "decision": "clarify", "kb_version": result.kb_version, "lang": lang,
            "candidates": [h.faq_id for h in result.results]}
    return Reply((Message(text("clarify", lang), buttons),), meta)


def _no_answer_reply(retriever, result: SearchResult, lang: str) -> Reply:
    messages = [Message(text("no_answer", lang))]
    closest = _entry_buttons(retriever, result, lang, floor=retriever.params.t_suggest)
    if closest:
        messages.append(Message(text("no_answer_closest", lang), closest))
    meta = {"faq_id": None, "decision": "none", "kb_version": result.kb_version, "lang": lang,
            "candidates": [h.faq_id for h in result.results]}
    return Reply(tuple(messages), meta)
