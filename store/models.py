"""Table models. The schema itself is created and changed only by the migrations under migrations/.

Every text column that can hold something a user typed is stored masked (core.pii.mask_text);
conversation ids are stored as a hash so rows can be counted per conversation but not traced back.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, Boolean, CheckConstraint, DateTime, Integer, MetaData, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints and indexes, so later migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

UNANSWERED_DECISIONS = ("none", "clarify", "not_helpful")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class FaqFeedback(Base):
    """One press of "was this helpful?" under an answer."""
    __tablename__ = "faq_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    conversation: Mapped[str] = mapped_column(String(64), index=True)
    faq_id: Mapped[str | None] = mapped_column(String(100), index=True)
    helpful: Mapped[bool] = mapped_column(Boolean)
    lang: Mapped[str] = mapped_column(String(16))
    kb_version: Mapped[str | None] = mapped_column(String(64))


class UnansweredQuestion(Base):
    """A question the bot did not answer outright (none, clarify) or whose answer was not helpful."""
    __tablename__ = "unanswered_question"
    __table_args__ = (
        CheckConstraint("decision IN ('none', 'clarify', 'not_helpful')", name="decision"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    conversation: Mapped[str] = mapped_column(String(64), index=True)
    text_masked: Mapped[str] = mapped_column(Text)
    # Grouping key: simplified, lower-case, no punctuation (retrieval.text.match_key of the masked text).
    text_normalised: Mapped[str] = mapped_column(String(500), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    # [{"faq_id": str, "score": float | None}, ...] best first: what the bot offered, if anything.
    candidates: Mapped[list] = mapped_column(JSON, default=list)
    lang: Mapped[str] = mapped_column(String(16))
    kb_version: Mapped[str | None] = mapped_column(String(64))


# --- accounts (accounts/): account state, user sessions, agents, the read audit ------------------
class AccountRow(Base):
    """One user's account document (diagnosis.account), as the admin route last stored it.

    The document is the platform's record and is kept whole (rules need the real values); it
    leaves this table only through Account.masked_document() unless it goes to the rules.

    `is_demo` is true only for the fictitious accounts accounts.demo loaded (HC_DEMO sign-in is
    open to exactly those); storing a document through the admin route makes it false again."""
    __tablename__ = "accounts"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    document: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class UserSession(Base):
    """A user session token, stored only as its SHA-256: a copy of this table signs nobody in."""
    __tablename__ = "user_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Agent(Base):
    """A hotline agent's bearer token (hashed) for the agent routes."""
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AccountRead(Base):
    """One read of an account: who (actor), when, whose, in which conversation (hashed), why."""
    __tablename__ = "account_reads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    conversation: Mapped[str | None] = mapped_column(String(64), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    found: Mapped[bool] = mapped_column(Boolean)


# --- conversations (assistant/conversations.py) -------------------------------------------------
class Conversation(Base):
    """The app's own record of a conversation: whose it is (None: anonymous) and where it came from.

    The bot's actions take the user from here, by Rasa's sender id, never from what a message
    carries; the id is the namespaced one (assistant.chat.rasa_sender), so a row never changes owner."""
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(128), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
