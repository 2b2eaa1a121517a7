"""The feedback loop: "was this helpful?" presses and the questions the bot could not answer.

Both are stored (masked) so `python -m retrieval report` can show a KB editor what to add.

    record(conversation_id, faq_id, helpful, lang)                   # the feedback action
    record_unanswered(conversation_id, text, decision, candidates,   # the FAQ service, when it
                      lang, kb_version)                              # abstains or asks back

The database is the process's shared one (store.default_sessions: HC_DATABASE_URL, else SQLite
under var/), opened and migrated on first use; `configure()` points the service elsewhere
(tests). Calls are synchronous: the actions run them in worker threads, so a write never holds
the event loop (a row costs ~0.5 ms on SQLite, ~4 ms on PostgreSQL here).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import Engine, case, func, select
from sqlalchemy.orm import Session, sessionmaker

from assistant.texts import text
from assistant.types import Message, Reply
from core.logs import log_event
from core.pii import conversation_ref, mask_text
from store import default_sessions, session_factory
from store.models import UNANSWERED_DECISIONS, FaqFeedback, UnansweredQuestion

log = logging.getLogger("hc.feedback")

MAX_STORED_CHARS = 1000   # a question, not a paste: the head carries it
_sessions: sessionmaker[Session] | None = None


# --- where rows go ------------------------------------------------------------------------------
def configure(target: Engine | sessionmaker | None) -> None:
    """Use this engine / session factory from now on (already migrated); None: back to settings."""
    global _sessions
    _sessions = target if target is None or isinstance(target, sessionmaker) else session_factory(target)


def sessions() -> sessionmaker[Session]:
    """The configured factory, else the process's shared database (opened and migrated lazily)."""
    current = _sessions
    return current if current is not None else default_sessions()


def database_label() -> str:
    """Where rows go, for people (no password)."""
    bind = sessions().kw.get("bind")
    return bind.url.render_as_string(hide_password=True) if bind is not None else "?"


def _short(value: str | None, limit: int) -> str | None:
    return mask_text(value)[:limit] if value else value


def _current_kb_version() -> str | None:
    from assistant import runtime

    return runtime.retriever().kb.version if runtime.ready() else None


def _candidates(candidates: Iterable[Any]) -> list[dict]:
    """Hits, {"faq_id", "score"} dicts or bare ids → [{"faq_id": str, "score": float | None}]."""
    out = []
    for c in candidates or ():
        if isinstance(c, str):
            faq_id, score = c, None
        elif isinstance(c, dict):
            faq_id, score = c.get("faq_id"), c.get("score")
        else:
            faq_id, score = getattr(c, "faq_id", None), getattr(c, "score", None)
        if faq_id:
            out.append({"faq_id": _short(str(faq_id), 100),
                        "score": None if score is None else round(float(score), 4)})
    return out[:10]


# --- writing ------------------------------------------------------------------------------------
def record(conversation_id: str, faq_id: str | None, helpful: bool, lang: str, *,
           question: str | None = None, kb_version: str | None = None) -> Reply:
    """Store a "was this helpful?" press and thank the user.

    question: the user's question the answer was for, when the caller knows it; a "not helpful"
    with its question also lands in the unanswered list, where a KB editor looks."""
    kb_version = kb_version or _current_kb_version()
    log_event(log, "faq_feedback", conversation=conversation_ref(conversation_id), faq_id=faq_id,
              helpful=helpful, lang=lang)
    try:
        with sessions().begin() as session:
            session.add(FaqFeedback(conversation=conversation_ref(conversation_id),
                                    faq_id=_short(faq_id, 100), helpful=bool(helpful),
                                    lang=(lang or "")[:16], kb_version=kb_version))
            if not helpful and question:
                row = _unanswered_row(conversation_id, question, "not_helpful",
                                      [faq_id] if faq_id else [], lang, kb_version)
                if row is not None:
                    session.add(row)
    except Exception:
        # The user still gets the thank-you: losing one feedback row beats an error reply.
        log.exception("storing feedback failed")
    key = "feedback_thanks_yes" if helpful else "feedback_thanks_no"
    return Reply((Message(text(key, lang)),), {"faq_id": faq_id, "feedback": helpful})


def record_unanswered(conversation_id: str, text_in: str, decision: str, candidates: Iterable[Any],
                      lang: str, kb_version: str | None) -> bool:
    """Store a question the bot abstained on ("none"), asked back about ("clarify") or answered
    unhelpfully ("not_helpful"). Returns whether a row was written.

    Greetings, noise and empty text are not KB gaps and are skipped. A storage failure is logged,
    never raised: the user's answer must not depend on the feedback table."""
    if decision not in UNANSWERED_DECISIONS:
        raise ValueError(f"decision must be one of {UNANSWERED_DECISIONS}, got {decision!r}")
    row = _unanswered_row(conversation_id, text_in, decision, candidates, lang, kb_version)
    if row is None:
        return False
    try:
        with sessions().begin() as session:
            session.add(row)
    except Exception:
        log.exception("storing an unanswered question failed")
        return False
    log_event(log, "faq_unanswered", conversation=row.conversation, decision=decision, lang=lang,
              candidates=[c["faq_id"] for c in row.candidates])
    return True


def _unanswered_row(conversation_id: str, text_in: str, decision: str, candidates: Iterable[Any],
                    lang: str, kb_version: str | None) -> UnansweredQuestion | None:
    from retrieval.text import clean, is_blank_or_noise, is_smalltalk, match_key

    cleaned = clean(text_in or "", MAX_STORED_CHARS)
    if not cleaned or is_blank_or_noise(cleaned) or is_smalltalk(cleaned):
        return None
    # Mask before anything else sees the text: the normalised key is derived from the masked form.
    masked = mask_text(cleaned)
    return UnansweredQuestion(
        conversation=conversation_ref(conversation_id), text_masked=masked,
        text_normalised=(match_key(masked) or masked)[:500], decision=decision,
        candidates=_candidates(candidates), lang=(lang or "")[:16], kb_version=kb_version)


# --- reading (the report) -----------------------------------------------------------------------
@dataclass(frozen=True)
class NotHelpful:
    faq_id: str | None
    not_helpful: int
    total: int


def _cutoff(since_days: float | None) -> datetime | None:
    return None if since_days is None else datetime.now(timezone.utc) - timedelta(days=since_days)


def unanswered(since_days: float | None = None, *, session: Session | None = None) -> list[UnansweredQuestion]:
    """Stored unanswered questions, newest first (since_days: only the last so many days)."""
    stmt = select(UnansweredQuestion).order_by(UnansweredQuestion.created_at.desc(),
                                               UnansweredQuestion.id.desc())
    cutoff = _cutoff(since_days)
    if cutoff is not None:
        stmt = stmt.where(UnansweredQuestion.created_at >= cutoff)
    if session is not None:
        return list(session.scalars(stmt))
    with sessions()() as own:
        return list(own.scalars(stmt))


def not_helpful_by_entry(since_days: float | None = None, *,
                         session: Session | None = None) -> list[NotHelpful]:
    """Per entry: how many feedback presses said "not helpful", of how many; worst first."""
    bad = func.sum(case((FaqFeedback.helpful.is_(False), 1), else_=0))
    stmt = select(FaqFeedback.faq_id, bad, func.count()).group_by(FaqFeedback.faq_id)
    cutoff = _cutoff(since_days)
    if cutoff is not None:
        stmt = stmt.where(FaqFeedback.created_at >= cutoff)

    def run(s: Session) -> list[NotHelpful]:
        rows = [NotHelpful(faq_id, int(n_bad or 0), int(n)) for faq_id, n_bad, n in s.execute(stmt)]
        return sorted((r for r in rows if r.not_helpful), key=lambda r: (-r.not_helpful, -r.total))

    if session is not None:
        return run(session)
    with sessions()() as own:
        return run(own)
