"""Demo accounts: off by default, one per diagnosis family, sign-in limited to the accounts the
demo loader stored (the store's is_demo flag), never to an id that merely starts with "demo-"."""
from __future__ import annotations

from datetime import date

import pytest

from _accounts_fixtures import FakeRasa, admin, db, document, make_client  # noqa: F401  (db is a fixture)
from accounts import demo, service
from diagnosis.account import parse_account
from diagnosis.rules import codes, diagnose

TODAY = date(2026, 11, 27)
EXPECTED = {
    "demo-orange-quarantine": ("orange", "orange.quarantine_release_pending"),
    "demo-orange-origin": ("orange", "orange.origin_not_synced"),
    "demo-orange-overseas": ("orange", "orange.overseas_observation"),
    "demo-face-mismatch": ("face", "face.identity_mismatch"),
    "demo-face-retry": ("face", "face.retry_other_login"),
    "demo-minor": ("generate", "generate.minor"),
    "demo-family-full": ("family", "family.quota_full"),
    "demo-overseas-checkin": ("overseas", "overseas.checkin_missing"),
}


@pytest.mark.parametrize("doc", demo.documents(TODAY), ids=lambda d: d["user_id"])
def test_each_demo_account_shows_its_case(doc):
    topic, code = EXPECTED[doc["user_id"]]
    relation = "child" if topic == "family" else None
    assert code in codes(diagnose(parse_account(doc), topic, today=TODAY, relation=relation))
    assert doc["user_id"].startswith("demo-") and "虚构" in doc["demo_label"]


def test_demo_routes_are_off_by_default(db, tmp_path):
    with make_client(tmp_path) as client:
        assert client.get("/api/v1/demo/accounts").status_code == 404
        assert client.post("/api/v1/demo/sessions", json={"user_id": "demo-minor"}).status_code == 404


def test_demo_sign_in_only_for_demo_accounts(db, tmp_path):
    with make_client(tmp_path, demo=True, demo_accounts=True) as client:
        client.app.state.rasa = FakeRasa()
        listed = client.get("/api/v1/demo/accounts").json()["accounts"]
        assert {a["user_id"] for a in listed} == set(EXPECTED)
        signed = client.post("/api/v1/demo/sessions", json={"user_id": "demo-minor"}).json()
        token = signed["token"]
        resp = client.post("/api/v1/chat", json={"sender": "s", "text": "为什么生成不了健康码"},
                           headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200 and "demo-minor" in resp.json()["messages"][0]["text"]
        # Its token_id names it for revocation, and the token is refused from then on.
        assert client.delete(f"/api/v1/admin/sessions/{signed['token_id']}", headers=admin()).status_code == 204
        assert client.post("/api/v1/chat", json={"sender": "s", "text": "你好"},
                           headers={"Authorization": f"Bearer {token}"}).status_code == 401
        r = client.post("/api/v1/demo/sessions", json={"user_id": "someone"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "not_a_demo_account"


def test_demo_accounts_are_loaded_at_start_up_but_sign_in_stays_off(db, tmp_path):
    from accounts import service

    with make_client(tmp_path, demo_accounts=True) as client:
        assert service.source().get("demo-minor") is not None
        assert client.post("/api/v1/demo/sessions", json={"user_id": "demo-minor"}).status_code == 404


def sign_in(client, user_id: str):
    return client.post("/api/v1/demo/sessions", json={"user_id": user_id})


def listed(client) -> set[str]:
    return {a["user_id"] for a in client.get("/api/v1/demo/accounts").json()["accounts"]}


def test_loaded_demo_account_signs_in(db, tmp_path):
    with make_client(tmp_path, demo=True, demo_accounts=True) as client:
        r = sign_in(client, "demo-orange-quarantine")
        assert r.status_code == 200, r.text
        assert service.user_for_token(r.json()["token"]) == "demo-orange-quarantine"
        assert service.is_demo_account("demo-orange-quarantine")


def test_a_real_account_with_a_demo_id_is_closed(db, tmp_path):
    """An admin's account is real whatever its id, and whatever its document says about itself."""
    with make_client(tmp_path, demo=True, demo_accounts=True) as client:
        doc = document("demo-real-1", demo_label="演示账户(虚构数据): 冒充", is_demo=True, demo=True)
        assert client.post("/api/v1/admin/accounts/demo-real-1", json=doc, headers=admin()).status_code == 200
        r = sign_in(client, "demo-real-1")
        assert r.status_code == 403 and r.json()["error"]["code"] == "not_a_demo_account"
        assert "token" not in r.text
        assert not service.is_demo_account("demo-real-1")
        assert sign_in(client, "demo-no-such-account").status_code == 403
        assert "demo-real-1" not in listed(client)


def test_a_demo_account_overwritten_by_the_admin_is_closed_for_good(db, tmp_path):
    with make_client(tmp_path, demo=True, demo_accounts=True) as client:
        before = sign_in(client, "demo-minor")
        assert before.status_code == 200
        old_token = before.json()["token"]
        r = client.post("/api/v1/admin/accounts/demo-minor", json=document("demo-minor"), headers=admin())
        assert r.status_code == 200
        r = sign_in(client, "demo-minor")
        assert r.status_code == 403 and r.json()["error"]["code"] == "not_a_demo_account"
        # The token the open sign-in handed out does not reach the real account either.
        assert service.user_for_token(old_token) is None
        assert "demo-minor" not in listed(client)
        # The next start-up's loader leaves the real account alone (and it stays closed).
        loaded = demo.load(TODAY)
        assert "demo-minor" not in loaded and len(loaded) == len(EXPECTED) - 1
        stored = service.source().get("demo-minor").document()
        assert stored == parse_account(document("demo-minor")).document()
        assert sign_in(client, "demo-minor").status_code == 403
        assert sign_in(client, "demo-face-retry").status_code == 200     # the others still open


def test_an_admin_session_for_a_real_account_survives_storing_it_again(db, tmp_path):
    """Only a demo → real change drops sessions; replacing a real account keeps its sign-ins."""
    with make_client(tmp_path, demo=True, demo_accounts=False) as client:
        put = lambda doc: client.post("/api/v1/admin/accounts/u1", json=doc, headers=admin())  # noqa: E731
        assert put(document("u1")).status_code == 200
        token = client.post("/api/v1/admin/sessions", json={"user_id": "u1"}, headers=admin()).json()["token"]
        assert put({"auth_level": "L3"}).status_code == 200
        assert service.user_for_token(token) == "u1"


def test_reloading_demo_accounts_keeps_them_open(db, tmp_path):
    with make_client(tmp_path, demo=True, demo_accounts=True) as client:
        assert set(demo.load(TODAY)) == set(EXPECTED)
        assert sign_in(client, "demo-family-full").status_code == 200


def test_upstream_source_refuses_every_demo_sign_in(db, tmp_path):
    """HC_ACCOUNT_SOURCE=http: every account is a real person's, even one the platform calls demo-*."""
    import httpx

    from accounts.source import HttpAccountSource, ReadOnlySource

    doc = demo.documents(TODAY)[0]
    upstream = HttpAccountSource("https://platform.example",
                                 transport=httpx.MockTransport(lambda r: httpx.Response(200, json=doc)))
    with make_client(tmp_path, demo=True, demo_accounts=False) as client:
        service.configure(db, source=upstream)
        assert service.source().get(doc["user_id"]) is not None
        for user_id in (doc["user_id"], "demo-minor", "anyone"):
            r = sign_in(client, user_id)
            assert r.status_code == 403 and r.json()["error"]["code"] == "not_a_demo_account", user_id
        assert client.get("/api/v1/demo/accounts").json()["accounts"] == []
        with pytest.raises(ReadOnlySource):
            demo.load(TODAY)
