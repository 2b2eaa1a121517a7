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
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from core.sealing import SealError, data_key, is_sealed, seal, unseal
from diagnosis.account import Account, AccountInvalid, parse_account
from store.models import AccountRow, UserSession, utcnow


class SourceUnavailable(RuntimeError):
    """The source could not answer (upstream down, timeout, a document it returned is invalid)."""


class ReadOnlySource(RuntimeError):
    """This source does not accept writes (the upstream platform is the record, not us)."""


@runtime_checkable
class AccountSource(Protocol):
    def get(self, user_id: str) -> Account | None:
        """The user's account, or None when the source knows no such user."""

    def put(self, user_id: str, account: Account) -> datetime:
        """Create or replace the user's account; returns when it was stored. The account is a
        real one from then on (closed to demo sign-in), whatever it was before."""

    def put_demo(self, user_id: str, account: Account) -> datetime | None:
        """Store a fictitious demo account (accounts.demo) flagged as such; None, and nothing
        stored, when a real account holds this user_id."""

    def is_demo(self, user_id: str) -> bool:
        """True only for an account that put_demo stored and put has not replaced since."""


def as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone=True columns; we only ever store UTC.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


class SqlAccountStore:
    """The built-in store: table `accounts` (user_id, document JSON, updated_at, is_demo).

    Documents are sealed at rest (core.sealing; key: HC_DATA_KEY or var/secrets/), each bound to
    its user_id; one stored in clear by an older version still opens and is sealed when next
    written."""

    def __init__(self, sessions: sessionmaker[Session], key: bytes | None = None):
        self._sessions = sessions
        self._key = key

    def _data_key(self) -> bytes:
        if self._key is None:
            from core.settings import get_settings

            self._key = data_key(get_settings())
        return self._key

    def _sealed(self, user_id: str, document: dict) -> dict:
        return seal(document, self._data_key(), bound_to=f"account:{user_id}")

    def _opened(self, user_id: str, stored: dict) -> dict:
        if not is_sealed(stored):
            return stored
        try:
            return unseal(stored, self._data_key(), bound_to=f"account:{user_id}")
        except SealError:
            raise SourceUnavailable("stored account does not open with this data key (HC_DATA_KEY)") from None

    def get(self, user_id: str) -> Account | None:
        with self._sessions() as session:
            row = session.get(AccountRow, user_id)
            document = None if row is None else self._opened(user_id, row.document)
        if document is None:
            return None
        try:
            return parse_account(document)
        except AccountInvalid as exc:   # stored before a stricter declaration: say so, don't guess
            raise SourceUnavailable(f"stored account no longer valid: {exc}") from None

    def put(self, user_id: str, account: Account) -> datetime:
        stored = self._put(user_id, account, demo=False)
        assert stored is not None
        return stored

    def put_demo(self, user_id: str, account: Account) -> datetime | None:
        return self._put(user_id, account, demo=True)

    def is_demo(self, user_id: str) -> bool:
        with self._sessions() as session:
            row = session.get(AccountRow, user_id)
            return row is not None and row.is_demo is True

    def _put(self, user_id: str, account: Account, *, demo: bool) -> datetime | None:
        document, now = self._sealed(user_id, account.document()), utcnow()
        try:
            return self._upsert(user_id, document, now, demo=demo)
        except IntegrityError:
            # Two admins created this user at once and the other INSERT won: now it is an update.
            return self._upsert(user_id, document, now, demo=demo)

    def _upsert(self, user_id: str, document: dict, now: datetime, *, demo: bool) -> datetime | None:
        with self._sessions.begin() as session:
            row = session.get(AccountRow, user_id, with_for_update=True)
            if row is None:
                session.add(AccountRow(user_id=user_id, document=document, updated_at=now, is_demo=demo))
                return now
            if demo and not row.is_demo:
                return None             # a real account: the demo loader never overwrites one
            if row.is_demo and not demo:
                # A demo account becomes a real one: sessions handed out by the open demo sign-in
                # must not carry over to it.
                session.execute(delete(UserSession).where(UserSession.user_id == user_id))
            row.document, row.updated_at, row.is_demo = document, now, demo
            return now

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

    def put_demo(self, user_id: str, account: Account) -> datetime | None:
        return self.put(user_id, account)

    def is_demo(self, user_id: str) -> bool:
        return False        # every upstream account is a real person's: no demo sign-in

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
