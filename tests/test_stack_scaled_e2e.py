"""The scale-out configuration against real servers: PostgreSQL for the app's store and Rasa's
tracker store, Redis for Rasa's lock store (HC_DATABASE_URL, HC_REDIS_URL)."""
from __future__ import annotations

import httpx
import pytest

from _env import require_redis, throwaway_postgres_database
from tools.stack import running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def database():
    with throwaway_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def api(database, tmp_path_factory):
    env = {"HC_DATABASE_URL": database, "HC_REDIS_URL": require_redis(), "HC_ADMIN_TOKEN": "t"}
    with running_stack(tmp_path_factory.mktemp("scaled"), env=env) as (base, _startup, _pid):
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client


def test_faq_and_diagnosis_work_on_postgresql_and_redis(api, database):
    import psycopg

    body = api.post("/api/v1/chat", json={"sender": "pg-1", "text": "健康码可以截图吗"}).json()
    assert body["meta"]["faq_id"] == "personal.screenshot"

    admin = {"Authorization": "Bearer t"}
    doc = {"user_id": "pg-user", "auth_level": "L3", "identity_check": "mismatch", "arrival": "none",
           "face_attempts": [{"at": "2026-11-26T09:30:00+08:00", "ok": False, "reason": "identity_mismatch"}]}
    assert api.post("/api/v1/admin/accounts/pg-user", json=doc, headers=admin).status_code == 200
    token = api.post("/api/v1/admin/sessions", json={"user_id": "pg-user"}, headers=admin).json()["token"]
    body = api.post("/api/v1/chat", json={"sender": "pg-2", "text": "我刷脸一直不通过是怎么回事"},
                    headers={"Authorization": f"Bearer {token}"}).json()
    assert body["meta"]["diagnosis"] == ["face.identity_mismatch"], body

    with psycopg.connect(database) as conn:
        events = conn.execute("select count(*) from events").fetchone()[0]       # Rasa's tracker store
        reads = conn.execute("select count(*) from account_reads").fetchone()[0]  # the app's audit
    assert events > 0 and reads > 0
