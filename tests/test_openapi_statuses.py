"""/openapi.json tells the truth (api/openapi.py): every operation lists what middleware,
dependencies and validation can answer, every error is the one declared ErrorResponse shape,
and real error responses validate against it. Plus the security headers every API answer has."""
from __future__ import annotations

import jsonschema_rs
import pytest

from _accounts_fixtures import ADMIN, FakeRasa, admin, db, make_client  # noqa: F401
from accounts import service
from api import ratelimit

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def client(db, tmp_path):  # noqa: F811
    with make_client(tmp_path, rate_limit_enabled=True, rate_limit="1000/minute",
                     rate_limit_conversation="1000/minute") as c:
        real, c.app.state.rasa = c.app.state.rasa, FakeRasa()
        try:
            yield c
        finally:
            c.app.state.rasa = real


@pytest.fixture
def spec(client):
    return client.get("/openapi.json").json()


def operations(spec):
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def test_every_operation_lists_what_middleware_and_dependencies_answer(spec):
    seen = 0
    for path, method, op in operations(spec):
        seen += 1
        statuses = set(op["responses"])
        assert "413" in statuses, (method, path)                       # BodyLimit: every route
        if path.startswith("/api/") or path.startswith("/channels/"):
            assert {"429", "503"} <= statuses, (method, path)          # the limiter, the store
        if op.get("parameters") or "requestBody" in op:
            assert "422" in statuses, (method, path)
        if "requestBody" in op:
            assert "400" in statuses, (method, path)                   # invalid_json
        if "{" in path:
            assert "404" in statuses, (method, path)
        if path.startswith("/api/v1/admin/"):
            assert {"401", "403"} <= statuses and op["security"] == [{"bearerAuth": []}], (method, path)
        if path.startswith("/api/v1/agent/"):
            assert "401" in statuses and op["security"] == [{"bearerAuth": []}], (method, path)
        if path.startswith("/api/v1/chat"):
            assert "401" in statuses and {} in op["security"], (method, path)    # optional token
    assert seen >= 30


def test_route_specific_statuses_are_kept(spec):
    paths = spec["paths"]
    assert "409" in paths["/api/v1/agent/tickets/{ticket_id}/claim"]["post"]["responses"]
    assert "409" in paths["/api/v1/admin/kb/reload"]["post"]["responses"]
    assert "502" in paths["/api/v1/channels/alipay/session"]["post"]["responses"]
    assert "403" in paths["/api/v1/demo/sessions"]["post"]["responses"]
    assert "400" in paths["/api/v1/admin/accounts/{user_id}"]["post"]["responses"]   # reads its body itself
    assert "requestBody" in paths["/api/v1/admin/accounts/{user_id}"]["post"]


def test_one_error_schema_for_every_error(spec):
    schemas = spec["components"]["schemas"]
    assert "ErrorResponse" in schemas and "ErrorDetail" in schemas
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert not [name for name in schemas if name.startswith("ErrorOut") or name.endswith("__ErrorDetail")]
    for path, method, op in operations(spec):
        for status, response in op["responses"].items():
            if int(status) < 400:
                continue
            assert response["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}, \
                (method, path, status)
            if status == "429":
                assert response["headers"]["Retry-After"]["required"] is True
    detail = schemas["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message"}


def test_pages_are_not_in_the_schema_but_event_streams_are_described(spec):
    assert not [p for p in spec["paths"] if p.startswith("/widget") or p.startswith("/agent")]
    stream = spec["paths"]["/api/v1/chat/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    assert stream["schema"]["properties"]["data"]["type"] == "string"


def validator(spec):
    return jsonschema_rs.validator_for({**spec, "$ref": "#/components/schemas/ErrorResponse"})


def test_real_error_responses_match_the_declared_schema(client, spec):
    check = validator(spec)
    agent_id, agent_token = service.create_agent("坐席")
    bearer = {"Authorization": f"Bearer {agent_token}"}
    samples = {
        "401 agent route without a token": client.get("/api/v1/agent/tickets"),
        "401 unknown session token": client.post("/api/v1/chat", json={"sender": "s", "text": "hi"},
                                                 headers={"Authorization": "Bearer nope"}),
        "403 wrong admin token": client.get("/api/v1/admin/kb", headers=admin("wrong")),
        "404 unknown ticket": client.get("/api/v1/agent/tickets/HC-0", headers=bearer),
        "404 no such route": client.get("/api/v1/nothing-here"),
        "405 method": client.delete("/api/v1/chat"),
        "422 validation": client.post("/api/v1/chat", json={"sender": "", "text": "hi"}),
        "422 empty text": client.post("/api/v1/chat", json={"sender": "s", "text": "  "}),
        "422 bad cursor": client.get("/api/v1/chat/messages", params={"sender": "s", "after": "x"}),
        "400 invalid json": client.post("/api/v1/chat", content=b"{not json", headers={"content-type": "application/json"}),
        "400 invalid json (account)": client.post("/api/v1/admin/accounts/u1", content=b"{", headers=admin()),
        "413 body": client.post("/api/v1/chat", content=b"x" * (300 * 1024), headers={"content-type": "application/json"}),
        "422 account": client.post("/api/v1/admin/accounts/u1", json={"auth_level": "L9"}, headers=admin()),
        "422 stats": client.get("/api/v1/admin/stats", params={"since": "soon"}, headers=admin()),
        "404 demo off": client.get("/api/v1/demo/accounts"),
        "404 channel off": client.post("/channels/wechat", content=b"<xml/>"),
        "503 index not loaded": client.get("/api/v1/faq/search", params={"q": "健康码"}),
        "503 healthz": client.get("/healthz"),
    }
    for what, resp in samples.items():
        status = what.split()[0]
        assert str(resp.status_code) == status, (what, resp.status_code, resp.text)
        assert resp.headers["content-type"].startswith("application/json"), what
        errors = [e.message for e in check.iter_errors(resp.json())]
        assert not errors, (what, resp.json(), errors)
    # The limiter's 429 too.
    client.app.state.ratelimiter.per_address = ratelimit.parse_limits("1/hour", "t")
    client.get("/api/v1/demo/accounts")
    limited = client.get("/api/v1/demo/accounts")
    assert limited.status_code == 429 and check.is_valid(limited.json())
    assert "429" in spec["paths"]["/api/v1/demo/accounts"]["get"]["responses"]


def test_405_allows_every_method_of_the_path(client):
    r = client.put("/api/v1/admin/accounts/u1", headers=admin())
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "POST"}


def test_security_headers_on_api_answers_and_pages_keep_theirs(client):
    for resp in (client.get("/api/v1/chat/messages", params={"sender": "s"}),
                 client.get("/api/v1/agent/tickets"),                        # an error too
                 client.post("/api/v1/chat", json={"sender": "s", "text": "健康码可以截图吗"})):
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["referrer-policy"] == "no-referrer"
        assert resp.headers["cache-control"] == "no-store"
    page = client.get("/widget")
    assert "content-security-policy" in page.headers and page.headers["cache-control"] == "no-cache"
    assert page.headers.get_list("x-content-type-options") == ["nosniff"]      # not twice
    health = client.get("/healthz")
    assert health.headers["x-content-type-options"] == "nosniff" and health.headers["referrer-policy"] == "no-referrer"


def test_no_secret_in_an_error_message(client):
    wrong = "wrong-token-" + "x" * 20
    for resp in (client.get("/api/v1/admin/kb", headers=admin(wrong)),
                 client.get("/api/v1/agent/me", headers={"Authorization": f"Bearer {wrong}"}),
                 client.post("/api/v1/chat", json={"sender": "s", "text": "hi"}, headers={"Authorization": f"Bearer {wrong}"})):
        assert wrong not in resp.text and ADMIN not in resp.text


def test_no_configured_secret_in_a_log_line():
    import logging

    from api.main import RedactingFormatter, secret_values
    from core.logs import JsonFormatter
    from core.settings import Settings

    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----"
    settings = Settings(admin_token="adm-" + "s" * 20, internal_token="int-" + "t" * 20, alipay_private_key=pem,
                        redis_url="redis://:redis-pass-123@127.0.0.1:6379/0")
    fmt = RedactingFormatter(JsonFormatter(), secret_values(settings))
    try:
        raise RuntimeError(f"upstream said {settings.internal_token} and {pem}")
    except RuntimeError:
        import sys

        record = logging.LogRecord("hc.test", logging.ERROR, __file__, 1, "token %s url %s", (settings.admin_token,
                                   settings.redis_url), sys.exc_info())
    record.fields = {"secret": settings.admin_token}
    line = fmt.format(record)
    for secret in (settings.admin_token, settings.internal_token, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "redis-pass-123"):
        assert secret not in line, secret
    assert "[redacted]" in line and "upstream said" in line
