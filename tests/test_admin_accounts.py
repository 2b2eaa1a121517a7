"""Admin routes: accounts (POST validated, GET masked, audited), sessions, agents; admin auth."""
from __future__ import annotations

import json
from datetime import datetime

import pytest
from sqlalchemy import select

from _accounts_fixtures import (ADMIN, FAMILY_ID, FAMILY_NAME, ID_NUMBER, NAME, PHONE, RAW_PII, admin,  # noqa: F401
                                api, db, document, make_client)
from accounts import service
from accounts.source import HttpAccountSource
from store.models import AccountRead, AccountRow

ROUTES = [("post", "/api/v1/admin/accounts/demo-0001", document()),
          ("get", "/api/v1/admin/accounts/demo-0001", None),
          ("post", "/api/v1/admin/sessions", {"user_id": "demo-0001"}),
          ("post", "/api/v1/admin/agents", {"name": "坐席 3"})]


@pytest.mark.parametrize("method,path,body", ROUTES)
def test_admin_routes_need_the_admin_token(api, method, path, body):
    client, _ = api
    kwargs = {"json": body} if body is not None else {}
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = getattr(client, method)(path, headers=admin("wrong"), **kwargs)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    # A user's own session token is not an admin token either.
    token, _ = service.create_session("demo-0001", ttl_s=60)
    assert getattr(client, method)(path, headers=admin(token), **kwargs).status_code == 403


def test_admin_routes_off_without_admin_token(db, tmp_path):
    with make_client(tmp_path, admin_token=None) as client:
        r = client.post("/api/v1/admin/sessions", json={"user_id": "u1"}, headers=admin("anything"))
        assert r.status_code == 503 and r.json()["error"]["code"] == "admin_disabled"


def test_post_creates_then_replaces(api, db):
    client, _ = api
    r = client.post("/api/v1/admin/accounts/demo-0001", json=document(), headers=admin())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == "demo-0001" and datetime.fromisoformat(body["updated_at"])
    r2 = client.post("/api/v1/admin/accounts/demo-0001", json={"auth_level": "L3"}, headers=admin())
    assert r2.status_code == 200
    assert r2.json()["updated_at"] >= body["updated_at"]
    with db.connect() as conn:
        [row] = conn.execute(select(AccountRow)).mappings().all()
    # Sealed at rest (core.sealing): the stored row shows nothing of the document.
    assert set(row["document"]) == {"sealed", "n", "c"} and "auth_level" not in repr(row["document"])
    # Replaced, not merged; the path's user_id is written into a document that had none.
    assert service.source().get("demo-0001").document() == {"auth_level": "L3", "user_id": "demo-0001"}


def test_documents_are_sealed_at_rest_and_bound_to_their_row(api, db):
    from accounts.source import SourceUnavailable

    client, _ = api
    client.post("/api/v1/admin/accounts/u-a", json=document("u-a"), headers=admin())
    client.post("/api/v1/admin/accounts/u-b", json=document("u-b", name="王五"), headers=admin())
    with db.begin() as conn:
        stored = "\n".join(repr(r) for r in conn.execute(select(AccountRow)).all())
        for raw in RAW_PII + ("王五",):
            assert raw not in stored
        # A sealed document copied onto another user's row does not open there.
        a = conn.execute(select(AccountRow.document).where(AccountRow.user_id == "u-a")).scalar_one()
        conn.execute(AccountRow.__table__.update().where(AccountRow.user_id == "u-b").values(document=a))
    with pytest.raises(SourceUnavailable):
        service.source().get("u-b")
    assert service.source().get("u-a").name == "林小明"


def test_a_document_stored_in_clear_by_an_older_version_still_opens(api, db):
    client, _ = api
    with db.begin() as conn:
        conn.execute(AccountRow.__table__.insert().values(user_id="old", document={"auth_level": "L2"},
                                                          updated_at=datetime.now(), is_demo=False))
    assert service.source().get("old").auth_level == "L2"


def post_raw(client, content: bytes | str, user_id: str = "demo-0001"):
    return client.post(f"/api/v1/admin/accounts/{user_id}", content=content,
                       headers={**admin(), "content-type": "application/json"})


def test_broken_json_is_400(api):
    client, _ = api
    for raw in (b"{not json", b"", "{\"name\": \"林".encode()[:-1], b"\xff\xfe"):
        r = post_raw(client, raw)
        assert r.status_code == 400, raw
        assert r.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("doc,paths", [
    (document(auth_level="L5"), ["auth_level"]),                                   # bad enum
    (document(family=[{"relation": "cousin", "id_number": FAMILY_ID}]), ["family[0].relation"]),
    (document(birth_date="1990-13-45"), ["birth_date"]),                          # bad date
    (document(quarantine={"start": "2026-11-15", "end": "2026-11-01"}), ["quarantine"]),
    (document(face_attempts="many"), ["face_attempts"]),                          # wrong type
    (document(code={"color": "orange", "reasons": "quarantine"}), ["code.reasons"]),
    (document(auth_level="L5", arrival="mars"), ["auth_level", "arrival"]),       # all reported
    (document(user_id="demo-0002"), ["user_id"]),                                 # path ≠ body
])
def test_invalid_documents_are_422_naming_the_fields(api, db, doc, paths):
    client, _ = api
    r = client.post("/api/v1/admin/accounts/demo-0001", json=doc, headers=admin())
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_account"
    for path in paths:
        assert any(m.startswith(f"{path}:") for m in err["errors"]), (path, err)
        assert path in err["message"]
    with db.connect() as conn:
        assert conn.execute(select(AccountRow)).all() == []       # nothing stored


def test_422_never_echoes_the_values(api):
    client, _ = api
    doc = document(id_number=12345678901, phone=["13800138000"], name={"x": NAME},
                   family=[{"relation": PHONE, "name": FAMILY_NAME}])
    r = client.post("/api/v1/admin/accounts/demo-0001", json=doc, headers=admin())
    assert r.status_code == 422
    assert {"id_number", "phone", "name", "family[0].relation"} <= \
        {m.split(":")[0] for m in r.json()["error"]["errors"]}
    for raw in (*RAW_PII, "12345678901"):
        assert raw not in r.text


@pytest.mark.parametrize("raw", ['[]', '"text"', '42', 'null'])
def test_a_document_must_be_an_object(api, raw):
    client, _ = api
    r = post_raw(client, raw)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_account"


def test_oversized_document_is_refused(api):
    client, _ = api
    r = post_raw(client, json.dumps(document(notes="x" * 300_000)))
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_get_is_masked_and_audited(api, db):
    client, _ = api
    client.post("/api/v1/admin/accounts/demo-0001", json=document(), headers=admin())
    r = client.get("/api/v1/admin/accounts/demo-0001", headers=admin())
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] == "demo-0001"
    account = body["account"]
    assert account["name"] == "林**" and account["id_number"] == "3501**********1234"
    assert account["phone"] == "138****8000"
    assert account["family"][0]["name"] == "林**"
    assert account["family"][0]["id_number"] == "3501**********1234"
    assert account["code"]["reasons"] == ["quarantine"] and account["vendor_flag"] == {"kept": True}
    for raw in RAW_PII:
        assert raw not in r.text
    with db.connect() as conn:
        [row] = conn.execute(select(AccountRead)).mappings().all()
    assert (row["actor"], row["user_id"], row["purpose"], row["found"], row["conversation"]) == \
        ("admin", "demo-0001", "admin_view", True, None)


def test_get_masks_personal_data_in_every_field(api):
    """Family phones, unknown fields, nested lists and dicts: no raw value in the response."""
    client, _ = api
    doc = document(
        family=[{"relation": "parent", "name": FAMILY_NAME, "id_number": FAMILY_ID, "phone": "13700137000"}],
        emergency_contact={"name": "王芳", "phone": "13912345678"},
        notes="身份证350102199001011234",
        history=[{"by": "陈建国", "items": ["张伟伟", {"tel": "13612345678", "id": "350102198001011234"}]}],
        vendor={"ref": {"owner": {"full_name": "赵子龙", "mobile": 13512345678}}},
        origin={"province": "广东", "on_national_platform": True, "color": "green"})
    assert client.post("/api/v1/admin/accounts/demo-0001", json=doc, headers=admin()).status_code == 200
    r = client.get("/api/v1/admin/accounts/demo-0001", headers=admin())
    assert r.status_code == 200
    for raw in (*RAW_PII, "13700137000", "王芳", "13912345678", "陈建国", "张伟伟", "13612345678",
                "350102198001011234", "赵子龙", "13512345678", "1990-01-01"):
        assert raw not in r.text, raw
    account = r.json()["account"]
    assert set(account) == set(doc)                      # every field still listed
    assert account["emergency_contact"] == {"name": "王*", "phone": "139****5678"}
    assert account["family"][0]["phone"] == "137****7000"
    # What is not personal stays in clear.
    assert account["auth_level"] == "L4" and account["code"]["color"] == "orange"
    assert account["quarantine"] == {"start": "2026-11-01", "end": "2026-11-15", "symptoms": False}
    assert account["family"][0]["relation"] == "parent"
    assert account["origin"] == {"province": "广东", "on_national_platform": True, "color": "green"}
    assert account["birth_date"] == "1990-**-**"


def test_get_unknown_user_is_404_and_still_audited(api, db):
    client, _ = api
    r = client.get("/api/v1/admin/accounts/nobody", headers=admin())
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    with db.connect() as conn:
        assert conn.execute(select(AccountRead.found)).scalars().all() == [False]


def test_upstream_source_refuses_writes_and_reports_outages(api, db):
    import httpx

    client, _ = api
    source = HttpAccountSource("https://platform.example",
                               transport=httpx.MockTransport(lambda r: httpx.Response(502)))
    service.configure(db, source=source)
    r = client.post("/api/v1/admin/accounts/demo-0001", json=document(), headers=admin())
    assert r.status_code == 409 and r.json()["error"]["code"] == "read_only_source"
    r = client.get("/api/v1/admin/accounts/demo-0001", headers=admin())
    assert r.status_code == 503 and r.json()["error"]["code"] == "account_source_unavailable"


def test_session_route(api, db):
    client, _ = api
    r = client.post("/api/v1/admin/sessions", json={"user_id": "demo-0001"}, headers=admin())
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"token", "token_id", "expires_at"}     # token_id: to revoke it
    assert service.user_for_token(body["token"]) == "demo-0001"
    left = (datetime.fromisoformat(body["expires_at"]) - datetime.now().astimezone()).total_seconds()
    assert 24 * 3600 - 60 < left <= 24 * 3600
    for bad in ({}, {"user_id": ""}, {"user_id": "x" * 129}, {"user_id": 42}):
        r = client.post("/api/v1/admin/sessions", json=bad, headers=admin())
        assert r.status_code == 422, bad
    assert client.post("/api/v1/admin/sessions", content=b"{", headers={**admin(), "content-type":
                       "application/json"}).status_code == 400


def test_agent_route(api, db):
    client, _ = api
    r = client.post("/api/v1/admin/agents", json={"name": "坐席 3"}, headers=admin())
    assert r.status_code == 200, r.text
    body = r.json()
    assert service.agent_for_token(body["token"]).id == body["agent_id"]
    for bad in ({}, {"name": ""}, {"name": "   "}, {"name": "x" * 101}):
        assert client.post("/api/v1/admin/agents", json=bad, headers=admin()).status_code == 422, bad
