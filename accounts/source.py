"""Where account documents come from: the built-in table, or the upstream platform's HTTP API.

Both speak `AccountSource`, so the service, the bot's actions and the admin routes never know
which one a deployment uses (HC_ACCOUNT_SOURCE=builtin|http). Calls are synchronous: callers run
them in worker threads (the actions and routes already do), so a slow upstream never blocks
the event loop.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Protocol, runtime_checkable
from urllib.parse import quote

import httpx
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from diagnosis.account import Account, AccountInvalid, parse_account
from store.models import AccountRow, utcnow


class SourceUnavailable(RuntimeError):
    """The source could not answer (upstream down, timeout, a document it returned is invalid)."""


class ReadOnlySource(RuntimeError):
    """This source does not accept writes (the upstream platform is the record, not us)."""


@runtime_checkable
class AccountSource(Protocol):
    def get(self, user_id: str) -> Account | None:
        """The user's account, or None when the source knows no such user."""

    def put(self, user_id: str, account: Account) -> datetime:
        """Create or replace the user's account; returns when it was stored."""


def as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone=True columns; we only ever store UTC.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


class SqlAccountStore:
    """The built-in store: table `accounts` (user_id, document JSON, updated_at)."""

    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions

    def get(self, user_id: str) -> Account | None:
        with self._sessions() as session:
            row = session.get(AccountRow, user_id)
            document = None if row is None else row.document
        if document is None:
            return None
        try:
            return parse_account(document)
        except AccountInvalid as exc:   # stored before a stricter declaration: say so, don't guess
            raise SourceUnavailable(f"stored account no longer valid: {exc}") from None

    def put(self, user_id: str, account: Account) -> datetime:
        document, now = account.document(), utcnow()
        try:
            self._upsert(user_id, document, now)
        except IntegrityError:
            # Two admins created this user at once and the other INSERT won: now it is an update.
            self._upsert(user_id, document, now)
        return now

    def _upsert(self, user_id: str, document: dict, now: datetime) -> None:
        with self._sessions.begin() as session:
            row = session.get(AccountRow, user_id)
            if row is None:
                session.add(AccountRow(user_id=user_id, document=document, updated_at=now))
            else:
                row.document, row.updated_at = document, now

    def updated_at(self, user_id: str) -> datetime | None:
        with self._sessions() as session:
            row = session.get(AccountRow, user_id)
            return None if row is None else as_utc(row.updated_at)


class HttpAccountSource:
    """The upstream platform: GET {base_url}/accounts/{user_id} → the account document (404: none).

    Read-only: the platform is the record of account state, so the admin route refuses writes
    instead of forking a local copy that would silently disagree with it."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout_s: float = 5.0,
                 transport: httpx.BaseTransport | None = None):
        if not base_url:
            raise ValueError("HttpAccountSource needs the upstream URL (HC_ACCOUNT_UPSTREAM_URL)")
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout_s
        self._transport = transport
        self._client: httpx.Client | None = None   # created on first use, not at construction

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout, headers=self._headers,
                                        transport=self._transport)
        return self._client

    def get(self, user_id: str) -> Account | None:
        url = f"{self._base}/accounts/{quote(user_id, safe='')}"
        try:
            resp = self._http().get(url)
        except httpx.HTTPError as exc:
            raise SourceUnavailable(f"upstream unreachable: {exc.__class__.__name__}") from None
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise SourceUnavailable(f"upstream answered HTTP {resp.status_code}")
        try:
            account = parse_account(resp.json())
        except ValueError as exc:        # broken JSON, or a document off the contract
            raise SourceUnavailable(f"upstream sent an invalid account: {exc}") from None
        if account.user_id is not None and account.user_id != user_id:
            raise SourceUnavailable("upstream sent another user's account")
        return account

    def put(self, user_id: str, account: Account) -> datetime:
        raise ReadOnlySource("accounts come from the upstream platform (HC_ACCOUNT_SOURCE=http); "
                             "change them there")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
