"""Answer a question from the FAQ: the one service behind the bot's FAQ action and the search route."""
from __future__ import annotations

import json

from assistant import runtime
from assistant.texts import text
from assistant.types import Button, Message, Reply
from retrieval.types import FaqEntry, SearchResult


def search(query: str, k: int = 3) -> SearchResult:
    return runtime.retriever().search(query, k=k)


def answer(text_in: str, lang: str = "zh", *, previous_faq_id: str | None = None) -> Reply:
    result = search(text_in, k=3)
    if result.decision == "answer" and result.top:
        return _answer_reply(result.top.faq_id, lang, result)
    if result.decision == "clarify":
        return _clarify_reply(result, lang)
    return _no_answer_reply(result, lang)


def answer_by_id(faq_id: str, lang: str = "zh") -> Reply:
    """A clarification button was pressed: answer that entry (an unknown id gets the no-answer reply)."""
    kb = runtime.retriever().kb
    if faq_id not in kb.ids:
        return _no_answer_reply(SearchResult(query="", decision="none", kb_version=kb.version), lang)
    return _answer_reply(faq_id, lang, None)


def entry_answer(entry: FaqEntry, lang: str) -> str:
    return entry.answer_en if lang == "en" else entry.answer


def entry_title(entry: FaqEntry, lang: str) -> str:
    return entry.question_en if lang == "en" else entry.title


def _payload(intent: str, **entities: str) -> str:
    return f"/{intent}{json.dumps(entities, ensure_ascii=False, separators=(',', ':'))}" if entities else f"/{intent}"


def _answer_reply(faq_id: str, lang: str, result: SearchResult | None) -> Reply:
    kb = runtime.retriever().kb
    entry = kb.get(faq_id)
    feedback = (
        Button(text("helpful_yes", lang), _payload("feedback", helpful="yes", faq_id=faq_id)),
        Button(text("helpful_no", lang), _payload("feedback", helpful="no", faq_id=faq_id)),
    )
    messages = (Message(entry_answer(entry, lang)), Message(text("helpful_prompt", lang), feedback))
    meta = {"faq_id": faq_id, "decision": "answer", "kb_version": kb.version,
            "score": round(result.top.score, 4) if result and result.top else None,
            "diagnosis_topics": list(entry.diagnosis)}
    return Reply(messages, meta)


def _entry_buttons(result: SearchResult, lang: str, floor: float = 0.0) -> tuple[Button, ...]:
    kb = runtime.retriever().kb
    return tuple(Button(entry_title(kb.get(hit.faq_id), lang), _payload("choose_faq", faq_id=hit.faq_id))
                 for hit in result.results if hit.score >= floor)


def _clarify_reply(result: SearchResult, lang: str) -> Reply:
    buttons = _entry_buttons(result, lang) + (
        Button(text("none_of_these", lang), "/deny"),
        Button(text("to_human", lang), "/request_human"),
    )
    meta = {"faq_id": None, "decision": "clarify", "kb_version": result.kb_version,
            "candidates": [h.faq_id for h in result.results]}
    return Reply((Message(text("clarify", lang), buttons),), meta)


def _no_answer_reply(result: SearchResult, lang: str) -> Reply:
    messages = [Message(text("no_answer", lang))]
    closest = _entry_buttons(result, lang, floor=runtime.retriever().params.t_suggest)
    if closest:
        messages.append(Message(text("no_answer_closest", lang), closest))
    meta = {"faq_id": None, "decision": "none", "kb_version": result.kb_version,
            "candidates": [h.faq_id for h in result.results]}
    return Reply(tuple(messages), meta)
