"""The whole hand-off loop through the contract only, on the real stack (Rasa + app):
a signed-in user whose name differs gets a name.mismatch ticket, asking again gives the same id,
two agents race to claim (one 200, one 409), the agent's message reaches the user's
/chat/messages and /chat/stream, the user's next message goes to the ticket and gets no bot
answer, after resolve the user is told and rates, and the bot answers a FAQ again; an anonymous
hand-off with a callback number; no raw personal data in any response or anything stored.

Runs on the embedded defaults (SQLite, in-process broker) and on PostgreSQL + Redis."""
from __future__ import annotations

import contextlib
import json
import threading
import uuid

import httpx
import pytest

from _env import require_redis, throwaway_postgres_database
from tools import pii_scan
from tools.stack import running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
ADMIN = "handoff-admin-token"
NAME, ID_NUMBER, PHONE = "林小明", "350102199001011234", "13812345678"
ACCOUNT = {"user_id": "ho-user", "name": NAME, "id_type": "resident_id", "id_number": ID_NUMBER,
           "phone": PHONE, "auth_level": "L4", "identity_check": "match", "arrival": "none",
           "code": {"color": "green", "reasons": []}}
RAW = (NAME, ID_NUMBER, PHONE, "13912345678")


@pytest.fixture(scope="module", params=["sqlite", "postgres+redis"])
def stack(request, tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("handoff")
    env = {"HC_ADMIN_TOKEN": ADMIN}
    with contextlib.ExitStack() as stack_:
        if request.param == "postgres+redis":
            env.update(HC_DATABASE_URL=stack_.enter_context(throwaway_postgres_database("hc_ho")),
                       HC_REDIS_URL=require_redis())
        with running_stack(var_dir, env=env) as (base, _startup, _pid):
            with httpx.Client(base_url=base, timeout=60) as client:
                yield client, var_dir, base, env.get("HC_DATABASE_URL")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def say(api, text, sender, token=None):
    r = api.post("/api/v1/chat", json={"sender": sender, "text": text}, headers=bearer(token) if token else {})
    assert r.status_code == 200, r.text
    for raw in RAW:
        assert raw not in r.text
    return r.json()


def agent(api, name):
    r = api.post("/api/v1/admin/agents", json={"name": name}, headers=bearer(ADMIN))
    assert r.status_code == 200
    return r.json()["token"]


def read_stream(base, sender, token, want, got, ready):
    """The user's SSE stream until `want` messages arrived (or 30 s)."""
    with httpx.Client(base_url=base, timeout=httpx.Timeout(30, read=30)) as c:
        with c.stream("GET", "/api/v1/chat/stream", params={"sender": sender}, headers=bearer(token)) as r:
            ready.set()
            for line in r.iter_lines():
                if line.startswith("data:"):
                    got.append(json.loads(line[5:]))
                    if len(got) >= want:
                        return


def test_the_hand_off_loop(stack):
    api, var_dir, base, _db = stack
    assert api.post("/api/v1/admin/accounts/ho-user", json=ACCOUNT, headers=bearer(ADMIN)).status_code == 200
    token = api.post("/api/v1/admin/sessions", json={"user_id": "ho-user"}, headers=bearer(ADMIN)).json()["token"]
    sender = f"ho-{uuid.uuid4().hex}"

    # The diagnosis offers the ticket; taking it creates one, with the finding as its category.
    found = say(api, "我的健康码上名字显示错误", sender, token)
    assert found["meta"]["diagnosis"] == ["name.mismatch"]
    button = next(b for m in found["messages"] for b in m["buttons"] if b["payload"] == "/request_human")
    first = say(api, button["payload"], sender, token)
    ticket_id = first["meta"]["ticket_id"]
    assert ticket_id and ticket_id.startswith("HC-") and first["meta"]["handoff"] is True
    assert ticket_id in first["messages"][0]["text"]
    again = say(api, "帮我登记工单", sender, token)
    assert again["meta"]["ticket_id"] == ticket_id

    a1, a2 = agent(api, "坐席甲"), agent(api, "坐席乙")
    listed = api.get("/api/v1/agent/tickets", params={"status": "open"}, headers=bearer(a1)).json()["tickets"]
    mine = next(t for t in listed if t["id"] == ticket_id)
    assert mine["category"] == "name.mismatch" and mine["user_id"] == "ho-user" and mine["diagnosis"]
    assert api.get("/api/v1/agent/tickets", headers=bearer(token)).status_code == 401   # a user token

    # Two agents race to claim: one wins.
    results = []
    threads = [threading.Thread(target=lambda t=t: results.append(
        api.post(f"/api/v1/agent/tickets/{ticket_id}/claim", headers=bearer(t)).status_code)) for t in (a1, a2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 409]
    claimed_by = api.get(f"/api/v1/agent/tickets/{ticket_id}", headers=bearer(a1)).json()["claimed_by"]
    holder, other_agent = (a1, a2) if claimed_by == "坐席甲" else (a2, a1)
    r = api.post(f"/api/v1/agent/tickets/{ticket_id}/messages", json={"text": "你好"}, headers=bearer(other_agent))
    assert r.status_code == 409                                  # only the holder writes to the user

    # The agent's message reaches the user's feed and live stream.
    cursor = again["meta"]["cursor"]
    got, ready = [], threading.Event()
    reader = threading.Thread(target=read_stream, args=(base, sender, token, 1, got, ready), daemon=True)
    reader.start()
    assert ready.wait(30)
    r = api.post(f"/api/v1/agent/tickets/{ticket_id}/messages", json={"text": "您好,我是客服,请问码上显示的名字是?"},
                 headers=bearer(holder))
    assert r.status_code == 200
    reader.join(30)
    assert got and got[0]["from"] == "agent" and "客服" in got[0]["text"]
    feed = api.get("/api/v1/chat/messages", params={"sender": sender, "after": cursor}, headers=bearer(token)).json()
    # 人工客服已接入 (the claim's notice), then the agent's words.
    assert [m["from"] for m in feed["messages"]] == ["system", "agent"]
    assert feed["messages"][0]["text"].startswith("人工客服已接入") and feed["messages"][0]["ticket_id"] == ticket_id
    # Another user, or nobody, never sees this conversation's messages.
    other = api.post("/api/v1/admin/sessions", json={"user_id": "someone-else"}, headers=bearer(ADMIN)).json()["token"]
    assert api.get("/api/v1/chat/messages", params={"sender": sender}, headers=bearer(other)).json()["messages"] == []
    assert api.get("/api/v1/chat/messages", params={"sender": sender}).json()["messages"] == []

    # The user's next message goes to the ticket; the bot stays quiet.
    quiet = say(api, f"显示的是林晓明,我的电话{PHONE}", sender, token)
    assert quiet["messages"] == [] and quiet["meta"]["handoff"] is True and quiet["meta"]["ticket_id"] == ticket_id
    detail = api.get(f"/api/v1/agent/tickets/{ticket_id}", headers=bearer(holder)).json()
    assert any(t["from"] == "user" and "林晓明" in t["text"] for t in detail["transcript"])
    assert detail["findings"] and detail["suggestions"]
    for raw in RAW:
        assert raw not in json.dumps(detail, ensure_ascii=False)

    # Resolve: the user is told and asked to rate; then the bot answers again.
    r = api.post(f"/api/v1/agent/tickets/{ticket_id}/resolve", json={"resolution": "已更正姓名,请刷新健康码查看。"},
                 headers=bearer(holder))
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    told = api.get("/api/v1/chat/messages", params={"sender": sender, "after": feed["cursor"]},
                   headers=bearer(token)).json()["messages"]
    assert any("已更正姓名" in m["text"] for m in told)
    rate = next(b for m in told for b in m["buttons"] if b["payload"].startswith("/rate_ticket"))
    rated = say(api, rate["payload"], sender, token)
    assert rated["messages"] and rated["meta"]["handoff"] is False
    back = say(api, "健康码可以截图吗", sender, token)
    assert back["meta"]["faq_id"] == "personal.screenshot" and back["meta"]["handoff"] is False


def test_an_anonymous_hand_off_with_a_callback_number(stack):
    api, var_dir, _base, db_url = stack
    sender = f"anon-{uuid.uuid4().hex}"
    first = say(api, "转人工", sender)
    ticket_id = first["meta"]["ticket_id"]
    assert ticket_id and len(first["messages"]) == 2            # the confirmation + sign in or leave a number
    left = say(api, "我的手机是 139-1234-5678", sender)
    assert "139****5678" in left["messages"][0]["text"]
    a = agent(api, "坐席丙")
    listed = api.get("/api/v1/agent/tickets", headers=bearer(a)).json()["tickets"]
    mine = next(t for t in listed if t["id"] == ticket_id)
    assert mine["user_id"] is None and mine["category"] == "other"
    api.post(f"/api/v1/agent/tickets/{ticket_id}/claim", headers=bearer(a))
    revealed = api.post(f"/api/v1/agent/tickets/{ticket_id}/reveal-phone", headers=bearer(a)).json()
    assert revealed["phone"] == "13912345678"                   # the one audited way out
    # Nothing the stack stored or logged holds a raw number or name (the PostgreSQL store too).
    hits = pii_scan.scan_dir(var_dir, known=RAW)
    if db_url:
        hits += pii_scan.scan_database(db_url, known=RAW)
    assert hits == [], hits
