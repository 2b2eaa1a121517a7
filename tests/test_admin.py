"""Admin auth (HC_ADMIN_TOKEN) on the admin routes: 503 when unset, 401 without, 403 wrong."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from assistant import runtime
from core.settings import Settings
from tests._retrieval_fakes import tiny_kb


class _Ready:
    kb = tiny_kb("v-admin")


@pytest.fixture
def make_client(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "_retriever", _Ready())

    def make(token):
        settings = Settings(admin_token=token, var_dir=tmp_path, internal_token="x")
        return TestClient(create_app(settings, load_index=False))
    return make


def test_admin_routes_are_off_without_a_configured_token(make_client):
    resp = make_client(None).get("/api/v1/admin/kb", headers={"Authorization": "Bearer anything"})
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "admin_disabled"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}])
def test_no_bearer_token_is_401(make_client, headers):
    resp = make_client("s3cret").post("/api/v1/admin/kb/reload", headers=headers)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized"
    assert resp.headers["www-authenticate"] == "Bearer"


def test_wrong_token_is_403(make_client):
    resp = make_client("s3cret").post("/api/v1/admin/kb/reload", headers={"Authorization": "Bearer s3cre"})
    assert resp.status_code == 403
    assert resp.json() == {"error": {"code": "forbidden", "message": "wrong admin token"}}


def test_right_token_passes(make_client):
    resp = make_client("s3cret").get("/api/v1/admin/kb", headers={"Authorization": "Bearer s3cret"})
    assert resp.status_code == 200
    assert resp.json() == {"kb_version": "v-admin", "entries": 4}
