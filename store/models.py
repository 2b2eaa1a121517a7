"""Table models. The schema itself is created and changed only by the migrations under migrations/.

Every text column that can hold something a user typed is stored masked (core.pii.mask_text);
conversation ids are stored as a hash so rows can be counted per conversation but not traced back.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, Boolean, CheckConstraint, DateTime, Integer, MetaData, String, Text,
                        UniqueConstraint, false)
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
    """A user session token, stored only as its SHA-256: a copy of this table signs nobody in.

    `token_id` is the session's public name (random, not derived from the token): what an admin
    lists and revokes, and what log lines carry. Revoking deletes the row."""
    __tablename__ = "user_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Agent(Base):
    """A hotline agent's bearer token (hashed) for the agent routes. A revoked agent keeps its row
    (tickets name it) with `revoked_at` set, and its token no longer resolves."""
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


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


# --- hotline tickets (tickets/) ----------------------------------------------------------------
TICKET_STATUSES = ("open", "claimed", "resolved")


class Ticket(Base):
    """A conversation handed to the hotline. Text columns hold masked text only; the callback
    phone an anonymous user leaves is sealed (core.sealing) and shown only through an audited
    reveal. `open_key` is the conversation id while the ticket is not resolved (NULL after): the
    unique index makes "one open ticket per conversation" a fact of the database."""
    __tablename__ = "tickets"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'claimed', 'resolved')", name="status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)          # HC-20261201-0007
    conversation_id: Mapped[str] = mapped_column(String(255), index=True)
    open_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    channel: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(128), index=True)
    lang: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(64), index=True)           # a diagnosis code or "other"
    # [{"code": str, "text": str}] (text masked): the bot's findings when the ticket was made.
    findings: Mapped[list] = mapped_column(JSON, default=list)
    summary: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    claimed_by: Mapped[int | None] = mapped_column(Integer, index=True)   # agents.id
    callback_phone: Mapped[dict | None] = mapped_column(JSON)              # sealed, or None
    awaiting_contact: Mapped[bool] = mapped_column(Boolean, default=False)
    resolution: Mapped[str | None] = mapped_column(Text)
    satisfaction: Mapped[int | None] = mapped_column(Integer)             # 1 (bad) .. 3 (good)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_response_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TicketEvent(Base):
    """Every change of a ticket, one row each (who, when, what: {field: [old, new]}), also the
    cursor of the agents' live stream. Private notes are events too (kind "note")."""
    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[str] = mapped_column(String(32), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))          # "bot", "user", "agent:3", "admin", "system"
    kind: Mapped[str] = mapped_column(String(32))           # created, claimed, unclaimed, message, note, ...
    changes: Mapped[dict] = mapped_column(JSON, default=dict)
    note: Mapped[str | None] = mapped_column(Text)          # masked


class TicketCounter(Base):
    """The last readable ticket number handed out per day (Beijing date, 20261201)."""
    __tablename__ = "ticket_counters"

    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


class ConversationMessage(Base):
    """The conversation's message log: every user turn, bot reply, agent message and system notice,
    masked. The source of truth for /chat/messages and the SSE streams (id is the cursor)."""
    __tablename__ = "conversation_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(255), index=True)
    sender: Mapped[str] = mapped_column(String(16))         # user | bot | agent | system
    text: Mapped[str] = mapped_column(Text)
    buttons: Mapped[list] = mapped_column(JSON, default=list)
    ticket_id: Mapped[str | None] = mapped_column(String(32), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A channel that pushes (WeChat, Alipay) could not deliver it: the agent calls back instead.
    undelivered: Mapped[str | None] = mapped_column(String(64))
    # For a bot reply: {"intent", "faq_id", "decision", "diagnosis"} of its turn (the figures).
    meta: Mapped[dict | None] = mapped_column(JSON)


class OutboxRow(Base):
    """A message for an outside system (the hotline's own ticket system), written in the same
    transaction as the change it reports and sent by a relay with retries (tickets/forwarding.py)."""
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    last_error: Mapped[str | None] = mapped_column(String(200))


# --- channels that push (channels/) --------------------------------------------------------------
INBOX_STATUSES = ("pending", "done")


class ChannelInbox(Base):
    """A message a channel pushed (WeChat, Alipay), stored before the platform is told `success`:
    a restart or a second instance picks it up, and the unique (channel, dedupe_key) makes the
    platform's retries of the same push no-ops. The payload (what the user typed) is sealed
    (core.sealing) while pending and cleared once handled."""
    __tablename__ = "channel_inbox"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'done')", name="status"),
        UniqueConstraint("channel", "dedupe_key", name="uq_channel_inbox_dedupe"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[str] = mapped_column(String(200))
    conversation_id: Mapped[str] = mapped_column(String(255), index=True)
    payload: Mapped[dict | None] = mapped_column(JSON)          # sealed {"text", "kind", ...}
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(String(64))    # answered, failed_politely, ... (no content)


class ChannelLink(Base):
    """A channel's user (WeChat openid, Alipay user id) bound to an account: that user signed in
    (stands in for the 闽政通 account binding). One account per external id."""
    __tablename__ = "channel_links"
    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_channel_links_external"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))


class ChannelLinkEvent(Base):
    """The audit of links: who linked or unlinked which external id to which account, when."""
    __tablename__ = "channel_link_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))            # linked | unlinked | replaced
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
