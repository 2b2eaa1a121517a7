"""Demo accounts: off by default, one per diagnosis family, sign-in limited to demo-* ids."""
from __future__ import annotations

from datetime import date

import pytest

from _accounts_fixtures import FakeRasa, db, make_client  # noqa: F401  (db is a fixture)
from accounts import demo
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
        token = client.post("/api/v1/demo/sessions", json={"user_id": "demo-minor"}).json()["token"]
        resp = client.post("/api/v1/chat", json={"sender": "s", "text": "为什么生成不了健康码"},
                           headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200 and "demo-minor" in resp.json()["messages"][0]["text"]
        assert client.post("/api/v1/demo/sessions", json={"user_id": "someone"}).status_code == 403


def test_demo_accounts_are_loaded_at_start_up_but_sign_in_stays_off(db, tmp_path):
    from accounts import service

    with make_client(tmp_path, demo_accounts=True) as client:
        assert service.source().get("demo-minor") is not None
        assert client.post("/api/v1/demo/sessions", json={"user_id": "demo-minor"}).status_code == 404
