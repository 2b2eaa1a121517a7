"""accounts.source and accounts.service: the built-in store, the upstream HTTP source, audited reads."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import pytest
from sqlalchemy import select, text

from _accounts_fixtures import DOCUMENT, FAMILY_NAME, ID_NUMBER, NAME, PHONE, RAW_PII, db, document  # noqa: F401
from accounts import audit, service
from accounts.source import (AccountSource, HttpAccountSource, ReadOnlySource, SourceUnavailable,
                             SqlAccountStore)
from assistant import feedback
from core.settings import Settings
from diagnosis.account import parse_account
from store import session_factory
from store.models import AccountRead, AccountRow


def test_store_round_trip_keeps_the_whole_document(db):
    store = SqlAccountStore(session_factory(db))
    assert isinstance(store, AccountSource)
    assert store.get("demo-0001") is None
    before = datetime.now(timezone.utc)
    stored_at = store.put("demo-0001", parse_account(document()))
    assert stored_at >= before and stored_at.tzinfo is not None
    got = store.get("demo-0001")
    assert got.document() == parse_account(DOCUMENT).document()
    assert got.document()["vendor_flag"] == {"kept": True}       # unknown fields survive
    assert got.family[0].relation == "parent" and got.code.color == "orange"
    assert abs((store.updated_at("demo-0001") - stored_at).total_seconds()) < 1
    assert store.get("demo-0002") is None


def test_store_replaces_not_merges(db):
    store = SqlAccountStore(session_factory(db))
    first = store.put("u1", parse_account(document("u1")))
    second = store.put("u1", parse_account({"user_id": "u1", "auth_level": "L2"}))
    assert second >= first
    assert store.get("u1").document() == {"user_id": "u1", "auth_level": "L2"}
    with db.connect() as conn:
        assert conn.execute(select(AccountRow.user_id)).scalars().all() == ["u1"]


def test_stored_document_that_no_longer_validates_is_an_error_not_a_guess(db):
    store = SqlAccountStore(session_factory(db))
    store.put("u1", parse_account({"user_id": "u1"}))
    with db.begin() as conn:
        conn.execute(AccountRow.__table__.update().values(document={"auth_level": "L9"}))
    with pytest.raises(SourceUnavailable):
        store.get("u1")


# --- the upstream source ------------------------------------------------------------------------
def upstream(handler) -> HttpAccountSource:
    return HttpAccountSource("https://platform.example/api/", "up-token",
                             transport=httpx.MockTransport(handler))


def test_http_source_gets_the_document_with_its_token():
    seen = []

    def handler(request: httpx.Request):
        seen.append(request)
        return httpx.Response(200, json=document("a/b c"))

    account = upstream(handler).get("a/b c")
    assert account.name == NAME and account.code.reasons == ["quarantine"]
    assert str(seen[0].url) == "https://platform.example/api/accounts/a%2Fb%20c"  # one path segment
    assert seen[0].headers["authorization"] == "Bearer up-token"


def test_http_source_404_is_none():
    assert upstream(lambda r: httpx.Response(404, json={"error": "nope"})).get("u9") is None


@pytest.mark.parametrize("response", [
    httpx.Response(500, text="boom"),
    httpx.Response(200, text="{not json"),
    httpx.Response(200, json={"auth_level": "L7"}),                 # off the contract
    httpx.Response(200, json={"user_id": "someone-else"}),          # not the user asked for
])
def test_http_source_failures_are_unavailable(response):
    with pytest.raises(SourceUnavailable):
        upstream(lambda r: response).get("u1")


def test_http_source_timeout_is_unavailable():
    def handler(request):
        raise httpx.ConnectTimeout("slow", request=request)

    with pytest.raises(SourceUnavailable):
        upstream(handler).get("u1")


def test_http_source_is_read_only():
    with pytest.raises(ReadOnlySource):
        upstream(lambda r: httpx.Response(200)).put("u1", parse_account({}))


def test_settings_choose_the_source(db):
    sessions = session_factory(db)
    assert isinstance(service.source_from_settings(Settings(), sessions), SqlAccountStore)
    http = service.source_from_settings(
        Settings(account_source="http", account_upstream_url="https://platform.example"), sessions)
    assert isinstance(http, HttpAccountSource)
    with pytest.raises(ValueError):
        service.source_from_settings(Settings(account_source="http"), sessions)   # no URL: refuse


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("HC_ACCOUNT_SOURCE", "http")
    monkeypatch.setenv("HC_ACCOUNT_UPSTREAM_URL", "https://platform.example")
    monkeypatch.setenv("HC_SESSION_TTL_S", "600")
    s = Settings()
    assert (s.account_source, s.account_upstream_url, s.session_ttl_s) == \
        ("http", "https://platform.example", 600)
    monkeypatch.setenv("HC_ACCOUNT_SOURCE", "ftp")
    with pytest.raises(ValueError):
        Settings()


# --- audited reads ------------------------------------------------------------------------------
def audit_rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(AccountRead).order_by(AccountRead.id)).mappings()]


def test_every_read_is_audited(db):
    service.put_account("demo-0001", parse_account(document()))
    account = service.read_account_for("demo-0001", conversation_id="user:ab12:wx-42", actor="bot",
                                       purpose="diagnosis")
    assert account.name == NAME
    assert service.read_account_for("nobody", conversation_id=None, actor="admin",
                                    purpose="admin_view") is None
    first, second = audit_rows(db)
    assert (first["actor"], first["user_id"], first["purpose"], first["found"]) == \
        ("bot", "demo-0001", "diagnosis", True)
    assert first["conversation"] == audit.conversation_ref("user:ab12:wx-42") != "user:ab12:wx-42"
    assert first["conversation"] == feedback.conversation_ref("user:ab12:wx-42")   # joinable
    at = first["at"] if first["at"].tzinfo else first["at"].replace(tzinfo=timezone.utc)
    assert abs((datetime.now(timezone.utc) - at).total_seconds()) < 60
    assert (second["actor"], second["user_id"], second["conversation"], second["found"]) == \
        ("admin", "nobody", None, False)
    entries = audit.reads(service.sessions(), "demo-0001")
    assert [(e.actor, e.purpose, e.found) for e in entries] == [("bot", "diagnosis", True)]


def test_audit_rows_hold_no_personal_data(db):
    service.put_account("demo-0001", parse_account(document()))
    # Even a careless caller passing personal data as labels leaves none in the audit.
    service.read_account_for("demo-0001", conversation_id=f"wx-{PHONE}", actor=f"agent {PHONE}",
                             purpose=f"id {ID_NUMBER}")
    with db.connect() as conn:
        dumped = repr(conn.execute(text("SELECT * FROM account_reads")).all())
    for raw in RAW_PII:
        assert raw not in dumped


def test_no_audit_no_read(db, monkeypatch):
    """When the audit row cannot be written, the account is not handed out."""
    service.put_account("demo-0001", parse_account(document()))

    def broken(*args, **kwargs):
        raise RuntimeError("audit table unavailable")

    monkeypatch.setattr(audit, "record_read", broken)
    with pytest.raises(RuntimeError):
        service.read_account_for("demo-0001", conversation_id="c", actor="bot")


def test_service_logs_carry_no_personal_data(db, caplog):
    caplog.set_level("INFO")
    service.put_account("13912345678", parse_account(document("13912345678")))
    service.read_account_for("13912345678", conversation_id="c", actor="bot")
    logged = caplog.text + json.dumps([getattr(r, "fields", {}) for r in caplog.records], ensure_ascii=False)
    assert "account_stored" in caplog.text and "account_read" in caplog.text
    for raw in (*RAW_PII, "13912345678"):       # not even a user_id that is a phone number
        assert raw not in logged


def test_personal_strings_for_masking():
    account = parse_account(document(family=[{"relation": "parent", "name": "林小明大", "id_number": "X1"}]))
    strings = service.personal_strings(account)
    assert strings[0] == "350102199001011234"
    assert strings.index("林小明大") < strings.index(NAME)     # longest first
    assert "X1" in strings and PHONE in strings
    assert service.personal_strings(None) == ()
    assert service.personal_strings(parse_account({"name": "林"})) == ()   # one char: not maskable text
    assert FAMILY_NAME not in strings
