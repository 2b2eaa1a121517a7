"""Shared pieces of the accounts tests: a migrated database the service uses, the API with a fake bot."""
from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient

from _store_fixtures import DATABASES, migrated_for
from accounts import service
import delivery
from assistant import conversations
from tickets import service as tickets
from bot.actions.personal import signed_in_user
from assistant.rasa_client import BotTurn
from core.settings import Settings

ADMIN = "admin-secret-for-tests"
NAME, FAMILY_NAME = "林小明", "林大山"
ID_NUMBER, FAMILY_ID, PHONE = "350102199001011234", "350102196001011234", "13800138000"

DOCUMENT = {
    "user_id": "demo-0001",
    "name": NAME,
    "id_type": "resident_id",
    "id_number": ID_NUMBER,
    "phone": PHONE,
    "birth_date": "1990-01-01",
    "auth_level": "L4",
    "identity_check": "match",
    "face_attempts": [{"at": "2026-11-26T09:30:00+08:00", "ok": False, "reason": "liveness"}],
    "arrival": "none",
    "code": {"color": "orange", "reasons": ["quarantine"], "since": "2026-11-01T10:00:00+08:00"},
    "quarantine": {"start": "2026-11-01", "end": "2026-11-15", "symptoms": False},
    "family": [{"relation": "parent", "name": FAMILY_NAME, "id_number": FAMILY_ID}],
    "vendor_flag": {"kept": True},
}
RAW_PII = (NAME, FAMILY_NAME, ID_NUMBER, FAMILY_ID, PHONE)


def document(user_id: str = "demo-0001", **changes) -> dict:
    doc = copy.deepcopy(DOCUMENT)
    doc["user_id"] = user_id
    doc.update(changes)
    return doc


@pytest.fixture(params=DATABASES)
def db(request, tmp_path):
    """An empty, migrated database (SQLite, then PostgreSQL) that accounts.service and the
    conversation record, the ticket queue and the message log use."""
    with migrated_for(request.param, tmp_path, service, conversations, tickets, delivery) as engine:
        yield engine


@dataclass
class _Tracker:
    sender_id: str


@dataclass
class FakeRasa:
    """Stands in for app.state.rasa: records what the bot would have been sent."""
    calls: list[dict] = field(default_factory=list)

    async def send(self, sender, text, metadata):
        self.calls.append({"sender": sender, "text": text, "metadata": dict(metadata)})
        # The reply names the user an action would find for this conversation (the app's own
        # record, as bot/actions reads it), so tests can pair responses to tokens.
        user = await asyncio.to_thread(signed_in_user, _Tracker(sender))
        return BotTurn([{"text": f"好的 {user or '-'}"}], "faq", 0.9)

    async def ready(self):
        return True

    async def close(self):
        pass


def make_client(tmp_path, **settings):
    from api.main import create_app

    app = create_app(Settings(**{"admin_token": ADMIN, "var_dir": tmp_path, "demo_accounts": False, **settings}),
                     load_index=False)
    return TestClient(app)


@pytest.fixture
def api(db, tmp_path):
    """(TestClient, FakeRasa) on the `db` database, the app started (lifespan run)."""
    with make_client(tmp_path) as client:
        real, fake = client.app.state.rasa, FakeRasa()
        client.app.state.rasa = fake
        try:
            yield client, fake
        finally:
            client.app.state.rasa = real     # so shutdown closes the real client's pool


def admin(token: str = ADMIN) -> dict:
    return {"Authorization": f"Bearer {token}"}
