"""The agents' routes (/api/v1/agent) through the app, on SQLite and PostgreSQL: auth, the contract's
shapes, claims (409 already_claimed), messages and resolutions reaching the conversation, notes
staying private, the audited phone reveal, bad input, and no raw personal data anywhere."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text

import delivery
from _accounts_fixtures import ADMIN, DOCUMENT, FAMILY_NAME, ID_NUMBER, NAME, PHONE, RAW_PII, make_client
from _store_fixtures import DATABASES, migrated_with_tickets
from accounts import service as accounts
from assistant import conversations, kb_reload, runtime
from core.settings import REPO_ROOT, Settings
from diagnosis.account import Account
from retrieval.kb import load_kb
from store.models import TicketEvent
from tickets import service

CALLBACK = "13912345678"
SETTINGS = Settings(hotline_hours="00:00-24:00", demo_accounts=False)
CONTRACT_FIELDS = {"id", "user_id", "category", "status", "created_at", "diagnosis", "summary", "channel",
                   "claimed_by"}
UNKNOWN = "HC-20990101-0001"


@pytest.fixture(params=DATABASES)
def db(request, tmp_path):
    with migrated_with_tickets(request.param, tmp_path, SETTINGS, accounts, conversations, delivery) as engine:
        yield engine


@pytest.fixture
def client(db, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "_retriever", None)
    runtime.install(kb_reload._bm25_retriever(load_kb(REPO_ROOT / "kb" / "faq_zh.md")))
    with make_client(tmp_path) as c:
        yield c


@pytest.fixture
def agents(db):
    return [accounts.create_agent(name)[1] for name in ("坐席一", "坐席二")]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def handoff(conversation="web:c1", *, user_id=None, summary="用户问健康码上的名字不对", lang="zh",
            category="name.mismatch", said=("健康码上的名字和我本人不一样怎么办",)):
    """What the conversation side does: the turns are in the log, then the ticket is made."""
    for line in said:
        delivery.append(conversation, "user", line)
        delivery.append(conversation, "bot", "这个问题需要人工核实。", meta={"decision": "answer"})
    view, _ = service.create_or_get(
        conversation, channel="api", user_id=user_id, lang=lang, category=category, summary=summary,
        findings=[{"code": category, "text": "健康码上的姓名与本人不一致，需要客服人员核实处理。"}]
        if category != "other" else [])
    return view


def routes(ticket_id: str):
    return [("get", "/api/v1/agent/tickets", None), ("get", f"/api/v1/agent/tickets/{ticket_id}", None),
            ("post", f"/api/v1/agent/tickets/{ticket_id}/claim", None),
            ("post", f"/api/v1/agent/tickets/{ticket_id}/unclaim", None),
            ("post", f"/api/v1/agent/tickets/{ticket_id}/messages", {"text": "您好"}),
            ("post", f"/api/v1/agent/tickets/{ticket_id}/notes", {"text": "备注"}),
            ("post", f"/api/v1/agent/tickets/{ticket_id}/resolve", {"resolution": "好了"}),
            ("post", f"/api/v1/agent/tickets/{ticket_id}/reveal-phone", None)]


def call(client, method, path, body, headers):
    return client.request(method.upper(), path, headers=headers, **({"json": body} if body is not None else {}))


# --- who may call -------------------------------------------------------------------------------
def test_only_agent_tokens_open_the_agent_routes(client, agents):
    view = handoff()
    user_token, _ = accounts.create_session("u1")
    for headers in ({}, bearer(user_token), bearer("not-a-token"), bearer(ADMIN), {"Authorization": "Basic x"},
                    bearer("x" * 500)):
        for method, path, body in routes(view.id):
            resp = call(client, method, path, body, headers)
            assert resp.status_code == 401, (method, path, headers, resp.text)
            assert resp.json()["error"]["code"] in ("unauthorized", "invalid_token")
    assert service.get(view.id).status == "open"          # nothing happened


# --- the list and the detail ---------------------------------------------------------------------
def test_list_is_the_contract_shape_longest_waiting_first(client, agents):
    first = handoff("web:a")
    second = handoff("web:b", category="other", said=())
    client.post(f"/api/v1/agent/tickets/{second.id}/claim", headers=bearer(agents[0]))
    resp = client.get("/api/v1/agent/tickets", headers=bearer(agents[1]))
    assert resp.status_code == 200
    tickets = resp.json()["tickets"]
    assert [t["id"] for t in tickets] == [first.id, second.id]
    assert CONTRACT_FIELDS <= set(tickets[0])
    assert "conversation_id" not in json.dumps(tickets) and "web:a" not in json.dumps(tickets)
    a, b = tickets
    assert (a["status"], a["user_id"], a["category"], a["diagnosis"], a["claimed_by"], a["channel"]) == (
        "open", None, "name.mismatch", ["name.mismatch"], None, "api")
    assert (b["status"], b["category"], b["diagnosis"], b["claimed_by"]) == ("claimed", "other", [], "坐席一")
    assert a["summary"] == "用户问健康码上的名字不对" and a["created_at"]
    only = lambda q: [t["id"] for t in client.get(f"/api/v1/agent/tickets{q}",  # noqa: E731
                                                  headers=bearer(agents[1])).json()["tickets"]]
    assert only("?status=open") == [first.id]
    assert only("?status=claimed") == [second.id]
    assert only("?status=resolved") == []
    assert only("?category=other") == [second.id]
    assert only("?status=open&category=other") == []
    assert only("?status=&category=") == [first.id, second.id]
    assert only("?limit=1") == [first.id]
    assert client.get("/api/v1/agent/tickets?status=bogus", headers=bearer(agents[1])).status_code == 422


def test_detail_has_transcript_findings_and_suggestions_from_the_bots_services(client, agents):
    view = handoff(said=("健康码上的名字和我本人不一样怎么办", "还有健康码可以截图吗"))
    resp = client.get(f"/api/v1/agent/tickets/{view.id}", headers=bearer(agents[0]))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert CONTRACT_FIELDS <= set(body)
    assert [(line["from"], line["text"]) for line in body["transcript"]] == [
        ("user", "健康码上的名字和我本人不一样怎么办"), ("bot", "这个问题需要人工核实。"),
        ("user", "还有健康码可以截图吗"), ("bot", "这个问题需要人工核实。")]
    assert all(line["at"] for line in body["transcript"])
    assert body["findings"] == [{"code": "name.mismatch", "text": "健康码上的姓名与本人不一致，需要客服人员核实处理。"}]
    sources = [s["source"] for s in body["suggestions"]]
    assert sources[0] == "diagnosis:name.mismatch"
    assert {"faq:personal.name_mismatch", "faq:personal.screenshot"} <= set(sources)
    kb = runtime.retriever().kb
    by_source = {s["source"]: s["text"] for s in body["suggestions"]}
    assert by_source["faq:personal.screenshot"] == kb.get("personal.screenshot").answer
    from diagnosis.replies import next_step
    assert by_source["diagnosis:name.mismatch"] == next_step("name.mismatch", "zh")
    assert len(set(by_source.values())) == len(body["suggestions"])       # never the same text twice
    assert body["notes"] == [] and body["history"][0]["kind"] == "created"


def test_suggestions_follow_the_tickets_language(client, agents):
    view = handoff("web:en", lang="en", said=("Can I use a screenshot of my health code?",))
    body = client.get(f"/api/v1/agent/tickets/{view.id}", headers=bearer(agents[0])).json()
    kb = runtime.retriever().kb
    by_source = {s["source"]: s["text"] for s in body["suggestions"]}
    assert by_source["faq:personal.screenshot"] == kb.get("personal.screenshot").answer_en
    assert by_source["diagnosis:name.mismatch"].startswith("Please call")


def test_detail_without_the_index_still_opens(client, agents, monkeypatch):
    monkeypatch.setattr(runtime, "_retriever", None)
    view = handoff()
    body = client.get(f"/api/v1/agent/tickets/{view.id}", headers=bearer(agents[0])).json()
    assert [s["source"] for s in body["suggestions"]] == ["diagnosis:name.mismatch"]


# --- claiming and answering ----------------------------------------------------------------------
def test_claim_then_another_agent_gets_409(client, agents):
    view = handoff()
    a, b = agents
    resp = client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=bearer(a))
    assert resp.status_code == 200 and resp.json()["status"] == "claimed" and resp.json()["claimed_by"] == "坐席一"
    again = client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=bearer(a))
    assert again.status_code == 200                       # the holder again: unchanged
    other = client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=bearer(b))
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "already_claimed" and other.json()["error"]["message"]
    assert client.post(f"/api/v1/agent/tickets/{view.id}/unclaim", headers=bearer(b)).status_code == 409
    back = client.post(f"/api/v1/agent/tickets/{view.id}/unclaim", headers=bearer(a))
    assert back.status_code == 200 and back.json()["status"] == "open" and back.json()["claimed_by"] is None
    assert client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=bearer(b)).status_code == 200


def test_messages_reach_the_conversation_only_from_the_holder(client, agents, db):
    view = handoff()
    a, b = agents
    url = f"/api/v1/agent/tickets/{view.id}/messages"
    assert client.post(url, json={"text": "先别认领就发"}, headers=bearer(a)).status_code == 409
    client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=bearer(a))
    for bad in ({"text": ""}, {"text": "   \n "}, {"text": "x" * 10_000}, {"text": "x" * 2001}, {}, {"text": 5},
                {"words": "hi"}):
        resp = client.post(url, json=bad, headers=bearer(a))
        assert resp.status_code == 422, (bad, resp.text)
        assert resp.json()["error"]["code"] == "invalid_request"
    assert client.post(url, content=b"{not json", headers={**bearer(a), "content-type": "application/json"}
                       ).status_code == 400
    not_mine = client.post(url, json={"text": "我来回答"}, headers=bearer(b))
    assert not_mine.status_code == 409 and not_mine.json()["error"]["code"] == "not_holder"
    resp = client.post(url, json={"text": "  您好,我是客服,马上为您核实。  "}, headers=bearer(a))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["text"] == "您好,我是客服,马上为您核实。" and body["ticket"]["first_response_at"]
    delivered = delivery.messages_after("web:c1", senders=("agent",))
    assert [(m.id, m.text, m.ticket_id) for m in delivered] == [(body["message_id"], body["text"], view.id)]
    assert client.post(url, json={"text": "x" * 2000}, headers=bearer(a)).status_code == 200
    detail = client.get(f"/api/v1/agent/tickets/{view.id}", headers=bearer(a)).json()
    assert detail["transcript"][-2]["from"] == "agent"


def test_notes_stay_private(client, agents):
    view = handoff()
    resp = client.post(f"/api/v1/agent/tickets/{view.id}/notes", json={"text": "要上传隔离证明"},
                       headers=bearer(agents[1]))
    assert resp.status_code == 200 and resp.json()["by"] == "坐席二"
    assert client.post(f"/api/v1/agent/tickets/{view.id}/notes", json={"text": ""},
                       headers=bearer(agents[1])).status_code == 422
    assert [m.sender for m in delivery.messages_after("web:c1", senders=None)] == ["user", "bot"]
    detail = client.get(f"/api/v1/agent/tickets/{view.id}", headers=bearer(agents[0])).json()
    assert [(n["text"], n["by"]) for n in detail["notes"]] == [("要上传隔离证明", "坐席二")]
    assert all(line["text"] != "要上传隔离证明" for line in detail["transcript"])


def test_resolve_tells_the_user_and_the_bot_is_back(client, agents):
    view = handoff()
    a, b = agents
    client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=bearer(a))
    url = f"/api/v1/agent/tickets/{view.id}/resolve"
    assert client.post(url, json={"resolution": "好了"}, headers=bearer(b)).status_code == 409
    assert client.post(url, json={"resolution": " "}, headers=bearer(a)).status_code == 422
    assert client.post(url, json={}, headers=bearer(a)).status_code == 422
    resp = client.post(url, json={"resolution": "已为您提交姓名更正,预计1个工作日内生效。"}, headers=bearer(a))
    assert resp.status_code == 200 and resp.json()["status"] == "resolved"
    assert resp.json()["resolution"] == "已为您提交姓名更正,预计1个工作日内生效。"
    claimed, notice = delivery.messages_after("web:c1", senders=("system",))
    assert claimed.text.startswith("人工客服已接入")
    assert "已为您提交姓名更正" in notice.text
    assert [x["payload"] for x in notice.buttons] == [
        f'/rate_ticket{{"ticket_id":"{view.id}","score":{s}}}' for s in (3, 2, 1)]
    assert service.open_for("web:c1") is None
    assert client.post(url, json={"resolution": "再来"}, headers=bearer(a)).status_code == 409
    assert client.get("/api/v1/agent/tickets?status=resolved", headers=bearer(a)).json()["tickets"][0]["id"] == view.id


def test_reveal_phone_is_for_the_holder_and_audited(client, agents, db):
    view = handoff(category="other", said=())
    service.set_callback_phone(view.id, "139 1234 5678")
    a, b = agents
    url = f"/api/v1/agent/tickets/{view.id}/reveal-phone"
    listed = client.get("/api/v1/agent/tickets", headers=bearer(a)).json()["tickets"][0]
    assert listed["has_callback_phone"] is True and CALLBACK not in json.dumps(listed)
    assert client.post(url, headers=bearer(a)).status_code == 409          # claim first
    client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=bearer(a))
    assert client.post(url, headers=bearer(b)).status_code == 409
    resp = client.post(url, headers=bearer(a))
    assert resp.status_code == 200 and resp.json() == {"phone": CALLBACK}
    history = client.get(f"/api/v1/agent/tickets/{view.id}", headers=bearer(b)).json()["history"]
    assert [e["kind"] for e in history][-1] == "phone_revealed"
    with db.connect() as conn:
        actor = conn.execute(select(TicketEvent.actor).where(TicketEvent.kind == "phone_revealed")).scalar()
    assert actor.startswith("agent:")
    assert CALLBACK not in json.dumps(history)
    other = handoff("web:nophone", category="other", said=())
    client.post(f"/api/v1/agent/tickets/{other.id}/claim", headers=bearer(a))
    assert client.post(f"/api/v1/agent/tickets/{other.id}/reveal-phone", headers=bearer(a)).json() == {"phone": None}


def test_unknown_ticket_is_404_everywhere(client, agents):
    for method, path, body in routes(UNKNOWN)[1:]:
        resp = call(client, method, path, body, bearer(agents[0]))
        assert resp.status_code == 404, (path, resp.text)
        assert resp.json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/agent/tickets/" + "x" * 100, headers=bearer(agents[0])).status_code == 422


def test_openapi_lists_each_routes_statuses(client):
    spec = client.get("/openapi.json").json()["paths"]
    expect = {("/api/v1/agent/tickets", "get"): {"200", "401", "422"},
              ("/api/v1/agent/tickets/{ticket_id}", "get"): {"200", "401", "404", "422"},
              ("/api/v1/agent/tickets/{ticket_id}/claim", "post"): {"200", "401", "404", "409"},
              ("/api/v1/agent/tickets/{ticket_id}/unclaim", "post"): {"200", "401", "404", "409"},
              ("/api/v1/agent/tickets/{ticket_id}/messages", "post"): {"200", "401", "404", "409", "422"},
              ("/api/v1/agent/tickets/{ticket_id}/notes", "post"): {"200", "401", "404", "422"},
              ("/api/v1/agent/tickets/{ticket_id}/resolve", "post"): {"200", "401", "404", "409", "422"},
              ("/api/v1/agent/tickets/{ticket_id}/reveal-phone", "post"): {"200", "401", "404", "409"},
              ("/api/v1/admin/stats", "get"): {"200", "401", "403", "422"}}
    for (path, method), statuses in expect.items():
        assert statuses <= set(spec[path][method]["responses"]), (path, method)


# --- personal data ------------------------------------------------------------------------------
def test_no_raw_personal_data_in_any_response_or_stored_row(client, agents, db):
    """A signed-in user's ticket whose summary, findings and transcript carry their name, their
    family's, ID and phone numbers, with a callback number: responses and rows are masked."""
    accounts.put_account("u1", Account.model_validate(DOCUMENT))
    raw = f"我是{NAME},给母亲{FAMILY_NAME}办,身份证{ID_NUMBER},手机{PHONE}"
    conversation = "api:user:u1"
    # The log's own masking (delivery) covers the numbers; the detail masks the names again.
    delivery.append(conversation, "user", f"我叫{NAME} 身份证 {ID_NUMBER[:6]} {ID_NUMBER[6:14]} {ID_NUMBER[14:]}")
    delivery.append(conversation, "user", f"电话 +86 {PHONE[:3]}-{PHONE[3:7]}-{PHONE[7:]}")
    view, _ = service.create_or_get(conversation, channel="api", user_id="u1", lang="zh", category="name.mismatch",
                                    findings=[{"code": "name.mismatch", "text": raw}], summary=raw)
    service.set_callback_phone(view.id, CALLBACK)
    a = bearer(agents[0])
    responses = [client.get("/api/v1/agent/tickets", headers=a),
                 client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=a),
                 client.post(f"/api/v1/agent/tickets/{view.id}/messages", json={"text": f"{NAME}您好,{PHONE}"},
                             headers=a),
                 client.post(f"/api/v1/agent/tickets/{view.id}/notes", json={"text": raw}, headers=a),
                 client.get(f"/api/v1/agent/tickets/{view.id}", headers=a),
                 client.post(f"/api/v1/agent/tickets/{view.id}/resolve", json={"resolution": raw}, headers=a)]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    shown = "\n".join(r.text for r in responses)
    detail = responses[4].json()
    assert detail["user_id"] == "u1" and "林**" in detail["summary"]
    assert any("林**" in line["text"] for line in detail["transcript"])
    with db.connect() as conn:
        dump = lambda tables, where="": "\n".join(  # noqa: E731
            repr(tuple(r)) for t in tables for r in conn.execute(text(f"SELECT * FROM {t}{where}")))
        mine = dump(("tickets", "ticket_events", "outbox", "account_reads"))
        # What the agents sent (through delivery); the user's own turns are the conversation
        # side's to mask by name (it does, before anything); their numbers delivery masks.
        sent = dump(("conversation_messages",), " WHERE sender <> 'user'")
        turns = dump(("conversation_messages",))
    for value in RAW_PII + (CALLBACK,):
        assert value not in shown, value
        assert value not in mine, value
        assert value not in sent, value
    for value in (ID_NUMBER, PHONE, CALLBACK):
        assert value not in turns, value
    # The only raw value that leaves: the audited reveal.
    assert client.post(f"/api/v1/agent/tickets/{view.id}/reveal-phone", headers=a).json() == {"phone": CALLBACK}


# --- what the pages need (web/agent, web/widget) ---------------------------------------------------
def test_me_names_the_agent_of_the_token(client, agents):
    resp = client.get("/api/v1/agent/me", headers=bearer(agents[1]))
    assert resp.status_code == 200 and resp.json()["name"] == "坐席二" and isinstance(resp.json()["id"], int)
    assert client.get("/api/v1/agent/me").status_code == 401
    assert client.get("/api/v1/agent/me", headers=bearer(accounts.create_session("u1")[0])).status_code == 401


def test_claim_tells_the_user_a_person_joined_and_names_the_holder_by_id(client, agents):
    view = handoff()
    zh = client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=bearer(agents[0])).json()
    me = client.get("/api/v1/agent/me", headers=bearer(agents[0])).json()
    assert zh["claimed_by_id"] == me["id"]
    (notice,) = delivery.messages_after("web:c1", senders=("system",))
    assert notice.text == f"人工客服已接入(工单{view.id}),请直接在这里说明您的问题。"
    assert notice.ticket_id == view.id
    # Claiming again (the holder) says nothing twice.
    client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=bearer(agents[0]))
    assert len(delivery.messages_after("web:c1", senders=("system",))) == 1
    en = handoff("web:en", lang="en", said=("I need a person",))
    client.post(f"/api/v1/agent/tickets/{en.id}/claim", headers=bearer(agents[1]))
    (notice,) = delivery.messages_after("web:en", senders=("system",))
    assert notice.text.startswith(f"An agent has joined (ticket {en.id})")


def test_detail_has_a_masked_account_summary_and_none_when_anonymous(client, agents, db):
    accounts.put_account("u1", Account.model_validate(DOCUMENT))
    view = handoff("api:user:u1", user_id="u1")
    body = client.get(f"/api/v1/agent/tickets/{view.id}", headers=bearer(agents[0])).json()
    lines = {line["label"]: line["value"] for line in body["account"]}
    assert lines["姓名"] == "林**"
    assert lines["证件"] == "居民身份证 3501**********1234"
    assert lines["手机"] == "138****8000"
    assert lines["实名等级"] == "L4" and lines["健康码"].startswith("橙码 (隔离)")
    assert lines["人脸核验"] == "最近 1 次 失败 1 次,最近一次:活体检测未通过"
    assert lines["家人申领"] == "父母 林**"
    assert not any(v in json.dumps(body, ensure_ascii=False) for v in RAW_PII)
    with db.connect() as conn:   # the agent's look at the account is audited
        purposes = [r[0] for r in conn.execute(text("SELECT purpose FROM account_reads WHERE actor LIKE 'agent:%'"))]
    assert "ticket_summary" in purposes
    anonymous = handoff("web:anon")
    assert client.get(f"/api/v1/agent/tickets/{anonymous.id}", headers=bearer(agents[0])).json()["account"] is None


def test_handoff_state_for_the_widget_follows_the_ticket(client, agents):
    state = lambda: client.get("/api/v1/chat/handoff", params={"sender": "w1"}).json()["ticket"]  # noqa: E731
    assert state() is None
    view = handoff("anon:w1")
    first = state()
    assert first["id"] == view.id and first["status"] == "open" and first["queue"]["position"] == 1
    assert first["rating_pending"] is False
    client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=bearer(agents[0]))
    assert state()["status"] == "claimed" and state()["queue"] is None
    client.post(f"/api/v1/agent/tickets/{view.id}/resolve", json={"resolution": "好了"}, headers=bearer(agents[0]))
    assert state() == {"id": view.id, "status": "resolved", "queue": None, "rating_pending": True}
    service.rate(view.id, 3)
    assert state()["rating_pending"] is False
    # Another user's token names another conversation: it never sees this ticket.
    other = accounts.create_session("u2")[0]
    assert client.get("/api/v1/chat/handoff", params={"sender": "w1"}, headers=bearer(other)).json() == {"ticket": None}
    assert client.get("/api/v1/chat/handoff", params={"sender": "w1"}, headers=bearer("bogus")).status_code == 401
