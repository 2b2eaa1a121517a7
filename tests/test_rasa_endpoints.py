"""core/rasa_endpoints: the endpoints.yml Rasa starts with, derived from the app settings."""
from __future__ import annotations

import json

from core.rasa_endpoints import SQLITE_TRACKER_STORE, endpoints, write_endpoints
from core.settings import Settings


def make(tmp_path, **kw) -> Settings:
    return Settings(var_dir=tmp_path, internal_token="secret-token", port=8123, actions_port=8124, **kw)


def test_embedded_default_is_our_sqlite_store_and_in_memory_locks(tmp_path):
    doc = endpoints(make(tmp_path))
    assert doc["tracker_store"] == {"type": SQLITE_TRACKER_STORE, "db": str(tmp_path / "rasa_tracker.db")}
    assert "lock_store" not in doc
    action = doc["action_endpoint"]
    # Its own loopback listener, not the user-facing port; the secret in a header, not the URL.
    assert action["url"] == "http://127.0.0.1:8124/webhook"
    assert action["headers"] == {"X-HC-Internal-Token": "secret-token"}
    assert "token" not in action and "secret-token" not in action["url"]
    # The domain is sent once, not with every action call.
    assert action["enable_selective_domain"] is True


def test_the_store_class_named_is_the_one_in_bot_stores():
    from core.settings import REPO_ROOT

    module, cls = SQLITE_TRACKER_STORE.rsplit(".", 1)
    source = (REPO_ROOT / "bot" / (module.replace(".", "/") + ".py")).read_text()
    assert f"class {cls}(" in source


def test_postgres_and_redis_for_several_instances(tmp_path):
    doc = endpoints(make(tmp_path, database_url="postgresql+psycopg://hc:pw@db.internal:5433/hcdb",
                         redis_url="redis://:rpw@cache:6380/2"))
    assert doc["tracker_store"] == {"type": "SQL", "dialect": "postgresql", "url": "db.internal",
                                    "port": 5433, "db": "hcdb", "username": "hc", "password": "pw"}
    assert doc["lock_store"] == {"type": "redis", "url": "cache", "port": 6380, "db": 2,
                                 "key_prefix": "hc", "password": "rpw"}


def test_written_file_is_private_yaml(tmp_path):
    path = write_endpoints(make(tmp_path))
    assert json.loads(open(path).read())["action_endpoint"]["headers"]["X-HC-Internal-Token"] == "secret-token"
    assert oct((tmp_path / "endpoints.yml").stat().st_mode & 0o777) == "0o600"
