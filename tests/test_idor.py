"""The IDOR suite: every route that names a ticket, a conversation, a sender, a session, an agent or
a user, tried with the other party's credentials (another user's session token, none, an
anonymous channel session, an agent token where a user one is expected and the other way round,
the non-holding agent, a made-up token), on a real server (SQLite and PostgreSQL): 0 reads.

The world: users A and B with accounts (A's is the contract's DOCUMENT), sessions, chat turns;
a ticket for A's conversation held by agent X (A writes to X, X answers A, a callback number
on the ticket), a second agent Y; A's WeChat and Alipay ids linked to A, B's Alipay id to B.
Then each case: its status is one the route may answer (401/403/404/409, or 200 where the
route gives the caller only their own objects), and no body, streamed bytes included, holds
anything of A's: A's words, the bot's and agent's replies to A, A's user id, name, ID and
phone numbers (raw or masked), A's ticket id (where the caller may not see the queue), the
callback number, A's token, its token_id or a stream ticket. The owner's own reads are checked
first, so every marker is one that would be seen if it leaked.

The route list is generated from the app (app.routes): a route this suite does not know fails
test_every_route_is_in_the_suite, and one taking a parameter that names an object must have
cases here, so a new route cannot be added without deciding who may read it.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import routing
from pydantic import BaseModel

import delivery
from _accounts_fixtures import (FAMILY_ID, FAMILY_NAME, ID_NUMBER, NAME, PHONE, FakeRasa,
                                document)
from _store_fixtures import DATABASES, migrated_with_tickets
from accounts import service as accounts
from assistant import conversations
from assistant.chat import rasa_sender
from channels import links
from core.pii import mask_id_number, mask_name, mask_phone
from core.settings import Settings
from tickets import service as tickets

ADMIN = "admin-secret-for-idor-tests"
SETTINGS = Settings(hotline_hours="00:00-24:00", demo_accounts=False)
PING_S = 0.2

A, B = "idor-user-a", "demo-idor-b"        # B's "demo-" prefix must open nothing (it is a real account)
SA, SB = "a-conv-1", "b-conv-1"            # the senders (conversation ids) each client chose
SA2 = "a-conv-2"
A_SAID = f"我叫{NAME},身份证{ID_NUMBER},手机{PHONE},为什么我的码是橙色 QX71"
A_SAID_TO_AGENT = "请尽快帮我核实 QX72"
X_SAID_TO_A = "您好,坐席正在为您核实 QX73"
B_SAID = "乙的问题 QB01"
CALLBACK = "13912345678"
B_NAME, B_ID, B_PHONE = "王小红", "350203198502023456", "13700001111"

OPENID_A = "oA" + secrets.token_hex(13)
ALI_A, ALI_B, ALI_U = ("2088" + str(secrets.randbelow(10**12)).zfill(12) for _ in range(3))
APP_ID = "2021" + secrets.token_hex(6)
_APP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
APP_PRIVATE = _APP_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
APP_PUBLIC = _APP_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
WECHAT_TOKEN, WECHAT_APPID = "tok-" + secrets.token_hex(4), "wx" + secrets.token_hex(8)

# Parameters (path, query or body field) that name an object: a route taking one must have cases.
OBJECT_PARAMS = {"sender", "user_id", "ticket_id", "token_id", "agent_id", "channel", "external_id",
                 "stream_ticket", "after", "name", "auth_code"}
# Routes that name no object and return nothing of anyone's: what they are, instead of cases.
EXEMPT = {
    ("GET", "/openapi.json"): "the API description",
    ("GET", "/docs"): "the API description",
    ("GET", "/docs/oauth2-redirect"): "the API description",
    ("GET", "/redoc"): "the API description",
    ("GET", "/healthz"): "readiness, no object",
    ("GET", "/api/v1/faq/search"): "the public knowledge base",
    ("GET", "/widget"): "a static page", ("GET", "/widget/"): "a redirect",
    ("GET", "/agent"): "a static page", ("GET", "/agent/"): "a redirect",
}


# --- the world ----------------------------------------------------------------------------------
def bearer(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass
class World:
    client: httpx.Client
    app: Any
    tokens: dict[str, str | None] = field(default_factory=dict)   # credential name → bearer token
    a_token_id: str = ""
    x_id: int = 0
    y_id: int = 0
    ticket: str = ""
    resolved: str = ""                          # another of A's tickets, resolved and not rated yet
    a_cursor: str = "0"
    a_stream_ticket: str = ""
    b_stream_ticket_for_sa: str = ""
    x_stream_ticket: str = ""
    a_alipay_token: str = ""

    def headers(self, cred: str) -> dict:
        return bearer(self.tokens[cred])

    def private(self) -> tuple[str, ...]:
        """Everything of A's that nobody else may read, in every form it could take."""
        return (*self.texts(), A, NAME, FAMILY_NAME, ID_NUMBER, FAMILY_ID, PHONE, mask_name(NAME),
                mask_name(FAMILY_NAME), mask_id_number(ID_NUMBER), mask_id_number(FAMILY_ID), mask_phone(PHONE),
                self.ticket, CALLBACK, mask_phone(CALLBACK), *self.secrets())

    def texts(self) -> tuple[str, ...]:
        return ("QX71", "QX72", "QX73")

    def secrets(self) -> tuple[str, ...]:
        return (self.tokens["A"], self.a_token_id, self.a_stream_ticket, self.tokens["X"], self.x_stream_ticket,
                self.a_alipay_token, ADMIN)

    def raw(self) -> tuple[str, ...]:
        """What not even an agent sees: raw personal values, the callback number, the tokens."""
        return (NAME, FAMILY_NAME, ID_NUMBER, FAMILY_ID, PHONE, CALLBACK, *self.secrets())


@pytest.fixture(scope="module")
def gateway():
    from tools import fake_alipay

    with fake_alipay.running(APP_PUBLIC, app_id=APP_ID) as fake:
        yield fake


def make_app(tmp_path, database_url: str, gateway):
    from api.main import create_app

    return create_app(Settings(
        admin_token=ADMIN, var_dir=tmp_path, database_url=database_url, redis_url=None, sse_ping_s=PING_S,
        demo=True, demo_accounts=False, hotline_hours="00:00-24:00", rate_limit_enabled=False,
        alipay_app_id=APP_ID, alipay_private_key=APP_PRIVATE, alipay_public_key=gateway.public_key_pem,
        alipay_gateway=gateway.url, wechat_token=WECHAT_TOKEN, wechat_appid=WECHAT_APPID,
        wechat_api_base="http://127.0.0.1:9"), load_index=False)


@pytest.fixture(scope="module", params=DATABASES)
def world(request, tmp_path_factory, gateway):
    from test_sse import LiveServer

    tmp = tmp_path_factory.mktemp(f"idor-{request.param}")
    with migrated_with_tickets(request.param, tmp, SETTINGS, accounts, conversations, delivery, links) as engine:
        app = make_app(tmp, engine.url.render_as_string(hide_password=False), gateway)
        with LiveServer(app) as server, httpx.Client(base_url=server.base, trust_env=False,
                                                     timeout=httpx.Timeout(10, read=5)) as client:
            real, app.state.rasa = app.state.rasa, FakeRasa()
            try:
                yield build(World(client, app), gateway)
            finally:
                app.state.rasa = real


def ok(resp: httpx.Response) -> dict:
    assert resp.status_code == 200, (resp.request.method, resp.request.url, resp.text)
    return resp.json()


def build(w: World, gateway) -> World:
    c, admin = w.client, bearer(ADMIN)
    w.tokens.update(none=None, admin=ADMIN, garbage=secrets.token_urlsafe(32))
    ok(c.post(f"/api/v1/admin/accounts/{A}", json=document(A), headers=admin))
    ok(c.post(f"/api/v1/admin/accounts/{B}", headers=admin, json=document(
        B, name=B_NAME, id_number=B_ID, phone=B_PHONE,
        family=[{"relation": "spouse", "name": "王大海", "id_number": "350203198001013457"}])))
    a = ok(c.post("/api/v1/admin/sessions", json={"user_id": A}, headers=admin))
    w.tokens["A"], w.a_token_id = a["token"], a["token_id"]
    w.tokens["B"] = ok(c.post("/api/v1/admin/sessions", json={"user_id": B}, headers=admin))["token"]
    w.tokens["anon"] = accounts.create_anonymous_session()[0]          # a channel session for nobody
    x = ok(c.post("/api/v1/admin/agents", json={"name": "坐席X"}, headers=admin))
    y = ok(c.post("/api/v1/admin/agents", json={"name": "坐席Y"}, headers=admin))
    w.x_id, w.tokens["X"], w.y_id, w.tokens["Y"] = x["agent_id"], x["token"], y["agent_id"], y["token"]
    for channel, external, user in (("wechat", OPENID_A, A), ("alipay", ALI_A, A), ("alipay", ALI_B, B)):
        ok(c.post("/api/v1/admin/channel-links", headers=admin,
                  json={"channel": channel, "external_id": external, "user_id": user}))

    # A's conversation: a turn, a ticket (held by X, with a callback number), A to X, X to A.
    ok(c.post("/api/v1/chat", json={"sender": SA, "text": A_SAID}, headers=w.headers("A")))
    conversation = rasa_sender(SA, A)
    view, _ = tickets.create_or_get(conversation, channel="api", user_id=A, lang="zh", category="name.mismatch",
                                    summary="用户要求人工核实", findings=[{"code": "name.mismatch",
                                                                    "text": "健康码上的姓名与本人不一致"}])
    w.ticket = view.id
    tickets.set_callback_phone(view.id, CALLBACK)
    ok(c.post(f"/api/v1/agent/tickets/{w.ticket}/claim", headers=w.headers("X")))
    ok(c.post("/api/v1/chat", json={"sender": SA, "text": A_SAID_TO_AGENT}, headers=w.headers("A")))
    ok(c.post(f"/api/v1/agent/tickets/{w.ticket}/messages", json={"text": X_SAID_TO_A}, headers=w.headers("X")))
    # A's second conversation: its ticket resolved by X, the rating question open.
    ok(c.post("/api/v1/chat", json={"sender": SA2, "text": "另一个问题"}, headers=w.headers("A")))
    other, _ = tickets.create_or_get(rasa_sender(SA2, A), channel="api", user_id=A, lang="zh", category="other",
                                     summary="另一个问题", findings=[])
    w.resolved = other.id
    ok(c.post(f"/api/v1/agent/tickets/{other.id}/claim", headers=w.headers("X")))
    ok(c.post(f"/api/v1/agent/tickets/{other.id}/resolve", json={"resolution": "已处理"}, headers=w.headers("X")))
    w.a_cursor = str(int(delivery.recent(conversation, 50)[0].id) - 1)    # just before A's first message
    w.a_stream_ticket = ok(c.post("/api/v1/chat/stream-ticket", json={"sender": SA}, headers=w.headers("A")))["ticket"]
    w.b_stream_ticket_for_sa = ok(c.post("/api/v1/chat/stream-ticket", json={"sender": SA},
                                         headers=w.headers("B")))["ticket"]
    w.x_stream_ticket = ok(c.post("/api/v1/agent/stream-ticket", headers=w.headers("X")))["ticket"]
    # A signs in on Alipay (their code is used up); codes for the attackers' cases.
    gateway.add_auth_code("code-a", ALI_A)
    signed = ok(c.post("/api/v1/channels/alipay/session", json={"auth_code": "code-a"}))
    assert signed["signed_in"] is True
    w.a_alipay_token = signed["token"]
    for code, user in (("code-unlinked-1", ALI_U), ("code-unlinked-2", ALI_U), ("code-b", ALI_B)):
        gateway.add_auth_code(code, user)
    return w


# --- cases --------------------------------------------------------------------------------------
@dataclass
class Case:
    route: tuple[str, str]                   # (METHOD, path template) as the app lists it
    cred: str                                # a key of World.tokens
    url: str
    expect: frozenset[int]
    params: dict | None = None
    json: Any = None
    content: bytes | None = None
    headers: dict | None = None
    forbid: str = "private"                  # "private": all of A's; "agent": A's minus the ticket id;
    #                                          "raw": raw values and secrets only (an agent's shared view)
    check: Callable[["World", int, str], str | None] | None = None
    why: str = ""

    @property
    def stream(self) -> bool:
        return self.route[1].endswith("/stream")

    def label(self) -> str:
        return f"{self.route[0]} {self.url} as {self.cred} ({self.why})"


def s(*statuses: int) -> frozenset[int]:
    return frozenset(statuses)


USER_CREDS_REFUSED = ("X", "Y", "admin", "garbage")     # not a user session token: 401 invalid_token
NOT_AGENTS = ("A", "B", "anon", "admin", "garbage", "none")
NOT_ADMINS = ("A", "B", "anon", "X", "Y", "garbage")


def says(fragment: str) -> Callable[[World, int, str], str | None]:
    def check(_w: World, _status: int, body: str) -> str | None:
        return None if fragment in body else f"expected {fragment!r} (the caller's own conversation)"
    return check


def no_ticket(_w: World, _status: int, body: str) -> str | None:
    return None if json.loads(body) == {"ticket": None} else "a ticket for another party's conversation"


def only_own_messages(_w: World, _status: int, body: str) -> str | None:
    texts = [m["text"] for m in json.loads(body)["messages"]]
    return None if all("QX" not in t for t in texts) else f"foreign messages {texts}"


def chat_cases(w: World) -> list[Case]:
    cases: list[Case] = []
    mine = rasa_sender(SA, A)                    # A's internal conversation id, as a sender
    chat = ("POST", "/api/v1/chat")
    for cred, check in (("B", says(f"好的 {B}")), ("none", says("好的 -")), ("anon", says("好的 -"))):
        cases.append(Case(chat, cred, chat[1], s(200), json={"sender": SA, "text": B_SAID}, check=check,
                          why="A's sender: the caller's own conversation"))
    cases.append(Case(chat, "B", chat[1], s(200), json={"sender": SA, "text": B_SAID, "user_id": A},
                      check=says(f"好的 {B}"), why="a user_id in the body names nobody"))
    cases.append(Case(chat, "B", chat[1], s(200), json={"sender": mine, "text": B_SAID},
                      check=says(f"好的 {B}"), why="A's internal conversation id as the sender"))
    cases += [Case(chat, cred, chat[1], s(401), json={"sender": SA, "text": B_SAID}, why="not a user token")
              for cred in USER_CREDS_REFUSED]
    # The satisfaction button's payload names a ticket: typed by another party, it rates nothing.
    rate = f'/rate_ticket{{"ticket_id":"{w.resolved}","score":1}}'
    for cred, sender in (("B", SB), ("none", SA2), ("anon", SA2), ("B", SA2)):
        cases.append(Case(chat, cred, chat[1], s(200), json={"sender": sender, "text": rate},
                          check=says("这张工单已经评价过或还没有处理完"), why="rating A's ticket from another conversation"))

    for path in ("/api/v1/chat/messages", "/api/v1/chat/handoff"):
        route, check = ("GET", path), only_own_messages if path.endswith("messages") else no_ticket
        for cred in ("B", "none", "anon"):
            cases.append(Case(route, cred, path, s(200), params={"sender": SA}, check=check, why="A's sender"))
            cases.append(Case(route, cred, path, s(200), params={"sender": mine}, check=check,
                              why="A's internal conversation id"))
        cases += [Case(route, cred, path, s(401), params={"sender": SA}, why="not a user token")
                  for cred in USER_CREDS_REFUSED]
    messages = ("GET", "/api/v1/chat/messages")
    for cred in ("B", "none"):
        cases.append(Case(messages, cred, messages[1], s(200), params={"sender": SA, "after": w.a_cursor},
                          check=only_own_messages, why="a cursor just before A's messages"))

    ticket_route = ("POST", "/api/v1/chat/stream-ticket")
    for cred in ("B", "none", "anon"):
        cases.append(Case(ticket_route, cred, ticket_route[1], s(200), json={"sender": SA},
                          why="a ticket for the caller's own conversation (opaque)"))
    cases += [Case(ticket_route, cred, ticket_route[1], s(401), json={"sender": SA}, why="not a user token")
              for cred in USER_CREDS_REFUSED]

    stream = ("GET", "/api/v1/chat/stream")
    for cred in ("B", "none", "anon"):
        cases.append(Case(stream, cred, stream[1], s(200), params={"sender": SA, "after": "0"},
                          why="A's sender, from the start"))
        cases.append(Case(stream, cred, stream[1], s(200), params={"sender": mine, "after": "0"},
                          why="A's internal conversation id"))
    cases += [Case(stream, cred, stream[1], s(401), params={"sender": SA, "after": "0"}, why="not a user token")
              for cred in USER_CREDS_REFUSED]
    tampered = w.a_stream_ticket[:-2] + ("AA" if not w.a_stream_ticket.endswith("AA") else "BB")
    for cred in ("none", "B"):
        cases.append(Case(stream, cred, stream[1], s(401), params={"sender": SB, "stream_ticket": w.a_stream_ticket},
                          why="A's stream ticket with another sender"))
        cases.append(Case(stream, cred, stream[1], s(401), params={"sender": SA, "stream_ticket": tampered},
                          why="A's stream ticket, altered"))
        cases.append(Case(stream, cred, stream[1], s(401), params={"sender": SA, "stream_ticket": w.x_stream_ticket},
                          why="an agent's stream ticket on the user stream"))
        cases.append(Case(stream, cred, stream[1], s(401), params={"sender": SA, "stream_ticket": w.tokens["A"]},
                          why="A's session token as a stream ticket"))
    cases.append(Case(stream, "none", stream[1], s(200),
                      params={"sender": SA, "after": "0", "stream_ticket": w.b_stream_ticket_for_sa},
                      why="B's ticket for sender SA: B's conversation, not A's"))
    return cases


def agent_body(path: str) -> dict | None:
    if path.endswith("/messages") or path.endswith("/notes"):
        return {"text": "越权测试"}
    if path.endswith("/resolve"):
        return {"resolution": "越权测试"}
    return None


def agent_cases(w: World, table: list[tuple[str, str]]) -> list[Case]:
    cases: list[Case] = []
    for method, template in table:
        if not template.startswith("/api/v1/agent/"):
            continue
        url = template.replace("{ticket_id}", w.ticket)
        params = {"after": "0"} if template.endswith("/stream") else None
        for cred in NOT_AGENTS:
            cases.append(Case((method, template), cred, url, s(401), params=params, json=agent_body(template),
                              why="a user token (or none) on an agent route"))
        if "{ticket_id}" in template:
            cases.append(Case((method, template), "X", template.replace("{ticket_id}", "HC-20990101-0001"), s(404),
                              json=agent_body(template), forbid="raw", why="no such ticket"))
    t = w.ticket
    for action, code in (("claim", "already_claimed"), ("unclaim", "not_holder"), ("messages", "not_holder"),
                         ("resolve", "not_holder"), ("reveal-phone", "not_holder")):
        template = f"/api/v1/agent/tickets/{{ticket_id}}/{action}"
        cases.append(Case(("POST", template), "Y", f"/api/v1/agent/tickets/{t}/{action}", s(409),
                          json=agent_body(template), forbid="agent", check=error_code(code),
                          why="the agent who does not hold the ticket"))
    # The queue is shared by design: any agent sees every ticket (masked) and may add a private note.
    for method, template in (("GET", "/api/v1/agent/tickets"), ("GET", "/api/v1/agent/tickets/{ticket_id}"),
                             ("POST", "/api/v1/agent/tickets/{ticket_id}/notes")):
        cases.append(Case((method, template), "Y", template.replace("{ticket_id}", t), s(200),
                          json=agent_body(template), forbid="raw", why="the shared queue (masked)"))
    cases.append(Case(("GET", "/api/v1/agent/me"), "Y", "/api/v1/agent/me", s(200), forbid="raw",
                      check=says("坐席Y"), why="the agent of the token, not another"))
    cases.append(Case(("POST", "/api/v1/agent/stream-ticket"), "Y", "/api/v1/agent/stream-ticket", s(200),
                      forbid="raw", why="a ticket for Y's own stream"))
    stream = ("GET", "/api/v1/agent/stream")
    cases.append(Case(stream, "Y", stream[1], s(200), params={"after": "0"}, forbid="raw",
                      check=lacks("QX72"), why="A's message to X is X's alone"))
    for cred in ("none", "Y"):
        cases.append(Case(stream, cred, stream[1], s(401), params={"after": "0", "stream_ticket": w.a_stream_ticket},
                          why="a user's chat stream ticket on the agents' stream"))
        cases.append(Case(stream, cred, stream[1], s(401), params={"after": "0", "stream_ticket": w.tokens["X"]},
                          why="X's agent token as a stream ticket"))
    return cases


def error_code(code: str) -> Callable[[World, int, str], str | None]:
    def check(_w: World, _status: int, body: str) -> str | None:
        got = json.loads(body).get("error", {}).get("code")
        return None if got == code else f"error code {got!r}, expected {code!r}"
    return check


def lacks(fragment: str) -> Callable[[World, int, str], str | None]:
    def check(_w: World, _status: int, body: str) -> str | None:
        return f"{fragment!r} reached the caller" if fragment in body else None
    return check


def admin_body(w: World, method: str, template: str) -> Any:
    return {("POST", "/api/v1/admin/sessions"): {"user_id": A},
            ("POST", "/api/v1/admin/agents"): {"name": "冒名坐席"},
            ("POST", "/api/v1/admin/accounts/{user_id}"): document(A, name="篡改"),
            ("POST", "/api/v1/admin/channel-links"): {"channel": "wechat", "external_id": OPENID_A, "user_id": B},
            ("POST", "/api/v1/admin/kb/reload"): {}}.get((method, template))


def fill(w: World, template: str) -> str:
    values = {"user_id": A, "token_id": w.a_token_id, "agent_id": str(w.x_id), "channel": "wechat",
              "external_id": OPENID_A, "ticket_id": w.ticket}
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def admin_cases(w: World, table: list[tuple[str, str]]) -> list[Case]:
    cases: list[Case] = []
    for method, template in table:
        if not template.startswith("/api/v1/admin/"):
            continue
        url, body = fill(w, template), admin_body(w, method, template)
        for cred in NOT_ADMINS:
            cases.append(Case((method, template), cred, url, s(403), json=body,
                              why="a user's or agent's token on an admin route"))
        cases.append(Case((method, template), "none", url, s(401), json=body, why="no token on an admin route"))
    return cases


def demo_cases(w: World) -> list[Case]:
    accounts_route, sessions_route = ("GET", "/api/v1/demo/accounts"), ("POST", "/api/v1/demo/sessions")
    cases = [Case(accounts_route, cred, accounts_route[1], s(200), check=no_demo_accounts,
                  why="lists demo accounts only") for cred in ("none", "B", "X")]
    for user in (A, B):
        for cred in ("none", "B", "anon", "X"):
            cases.append(Case(sessions_route, cred, sessions_route[1], s(403), json={"user_id": user},
                              check=error_code("not_a_demo_account"), why="demo sign-in for a real account"))
    return cases


def no_demo_accounts(_w: World, _status: int, body: str) -> str | None:
    return None if json.loads(body) == {"accounts": []} else f"listed {body}"


def channel_cases(w: World) -> list[Case]:
    session = ("POST", "/api/v1/channels/alipay/session")
    cases = [
        Case(session, "none", session[1], s(200), json={"auth_code": "code-unlinked-1", "user_id": A},
             check=follow_up_as_nobody, why="an unlinked Alipay user naming A in the body"),
        Case(session, "B", session[1], s(200), json={"auth_code": "code-unlinked-2"},
             check=follow_up_as_nobody, why="B's bearer token does not sign the Alipay user in as B"),
        Case(session, "none", session[1], s(200), json={"auth_code": "code-b"},
             check=follow_up_as(B), why="B's linked Alipay id: B, never A"),
        Case(session, "none", session[1], s(400), json={"auth_code": "code-a"}, why="A's used code, replayed"),
        Case(session, "none", session[1], s(400), json={"auth_code": "never-issued"}, why="a made-up code"),
        Case(session, "none", session[1], s(422), json={"user_id": A}, why="a user id instead of a code"),
    ]
    ts, nonce = str(int(time.time())), "n" + secrets.token_hex(3)
    push = (f"<xml><ToUserName><![CDATA[gh_x]]></ToUserName><FromUserName><![CDATA[{OPENID_A}]]></FromUserName>"
            f"<CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[我的记录]]></Content>"
            f"<MsgId>{secrets.randbelow(10**12)}</MsgId></xml>").encode()
    wechat_get, wechat_post = ("GET", "/channels/wechat"), ("POST", "/channels/wechat")
    cases += [
        Case(wechat_post, "none", wechat_post[1], s(401), content=push, params={"timestamp": ts, "nonce": nonce},
             headers={"content-type": "text/xml"}, why="a forged push from A's openid, unsigned"),
        Case(wechat_post, "none", wechat_post[1], s(403), content=push,
             params={"timestamp": ts, "nonce": nonce, "signature": "0" * 40, "openid": OPENID_A},
             headers={"content-type": "text/xml"}, why="a forged push from A's openid, wrong signature"),
        Case(wechat_post, "A", wechat_post[1], s(401), content=push, params={"timestamp": ts, "nonce": nonce},
             headers={"content-type": "text/xml"}, why="a session token is no platform signature"),
        Case(wechat_get, "none", wechat_get[1], s(403),
             params={"timestamp": ts, "nonce": nonce, "signature": "0" * 40, "echostr": "x"}, why="wrong signature"),
    ]
    biz = (f"<XML><FromUserId><![CDATA[{ALI_A}]]></FromUserId><MsgType><![CDATA[text]]></MsgType>"
           f"<Text><Content><![CDATA[我的记录]]></Content></Text></XML>")
    form = httpx.QueryParams({"service": "alipay.mobile.public.message.notify", "charset": "UTF-8",
                              "sign_type": "RSA2", "sign": "AAAA", "biz_content": biz}).__str__().encode()
    alipay = ("POST", "/channels/alipay")
    cases.append(Case(alipay, "none", alipay[1], s(400, 401, 403), content=form,
                      headers={"content-type": "application/x-www-form-urlencoded"},
                      why="a forged notification from A's Alipay id"))
    return cases


def follow_up(w: World, token: str, expect_reply: str) -> str | None:
    """With the token a sign-in gave: A's sender is the caller's own conversation, nothing of A's."""
    got = w.client.get("/api/v1/chat/messages", params={"sender": SA}, headers=bearer(token))
    if got.status_code != 200 or any(m in got.text for m in w.private()):
        return f"messages with the new token: {got.status_code} {got.text[:200]}"
    turn = w.client.post("/api/v1/chat", json={"sender": SA, "text": B_SAID}, headers=bearer(token))
    if turn.status_code != 200 or expect_reply not in turn.text or any(m in turn.text for m in w.private()):
        return f"chat with the new token: {turn.status_code} {turn.text[:200]}"
    return None


def follow_up_as_nobody(w: World, _status: int, body: str) -> str | None:
    answer = json.loads(body)
    if answer["signed_in"] is not False:
        return "an unlinked Alipay user was signed in"
    return follow_up(w, answer["token"], "好的 -")


def follow_up_as(user: str) -> Callable[[World, int, str], str | None]:
    def check(w: World, _status: int, body: str) -> str | None:
        answer = json.loads(body)
        if answer["signed_in"] is not True:
            return "a linked Alipay user was not signed in"
        return follow_up(w, answer["token"], f"好的 {user}")
    return check


def page_cases() -> list[Case]:
    cases = []
    for page in ("widget", "agent"):
        for name in ("..%2F..%2Fvar%2Fhc.db", "%2E%2E%2Fagent%2Findex.html", ".env", "hc.db"):
            cases.append(Case(("GET", f"/{page}/{{name}}"), "none", f"/{page}/{name}", s(404),
                              why="a file outside the page's own"))
    return cases


def all_cases(w: World) -> list[Case]:
    table = route_table(w.app)
    return chat_cases(w) + agent_cases(w, table) + admin_cases(w, table) + demo_cases(w) + channel_cases(w) + \
        page_cases()


# --- the route list -----------------------------------------------------------------------------
def route_table(app) -> list[tuple[str, str]]:
    """(METHOD, path template) of every route the app serves, from app.routes."""
    out = []
    for rc in routing.iter_route_contexts(app.routes):
        for method in sorted(rc.methods or ()):
            if method != "HEAD":
                out.append((method, rc.path))
    return out


def parameters(app) -> dict[tuple[str, str], set[str]]:
    """Each route's path, query and body field names (dependencies' included)."""
    def walk(dependant) -> set[str]:
        names = {p.name for p in (*dependant.path_params, *dependant.query_params)}
        for sub in dependant.dependencies:
            names |= walk(sub)
        return names

    out: dict[tuple[str, str], set[str]] = {}
    for rc in routing.iter_route_contexts(app.routes):
        dependant = getattr(rc, "dependant", None)
        names = walk(dependant) if dependant is not None else set()
        body = getattr(rc, "body_field", None)
        model = getattr(getattr(body, "field_info", None), "annotation", None) if body is not None else None
        for candidate in (model, *getattr(model, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                names |= set(candidate.model_fields)
        for method in rc.methods or ():
            if method != "HEAD":
                out[(method, rc.path)] = names
    return out


def test_every_route_is_in_the_suite():
    """A route the suite has no case for fails here: either it names an object (then it needs
    cases with the other party's credentials) or it goes into EXEMPT with the reason."""
    from api.main import create_app

    app = create_app(Settings(admin_token=ADMIN, demo_accounts=False), load_index=False)
    fake = World(client=None, app=app, tokens={"A": "a", "X": "x"}, a_token_id="t", x_id=1, ticket="HC-1",
                 a_stream_ticket="st", x_stream_ticket="xt", b_stream_ticket_for_sa="bt")
    covered = {case.route for case in all_cases(fake)}
    table, params = route_table(app), parameters(app)
    missing = [r for r in table if r not in covered and r not in EXEMPT]
    assert not missing, f"routes without IDOR cases (add them to tests/test_idor.py): {missing}"
    naming = [r for r in table if params.get(r, set()) & OBJECT_PARAMS and r not in covered]
    assert not naming, f"routes naming an object without cases: {naming}"
    stale = [r for r in set(EXEMPT) | covered if r not in table]
    assert not stale, f"the suite names routes the app no longer has: {stale}"
    # Every API route that names an object is tried with at least two other credentials.
    creds: dict[tuple[str, str], set[str]] = {}
    for case in all_cases(fake):
        creds.setdefault(case.route, set()).add(case.cred)
    thin = [r for r in table if r[1].startswith("/api/v1/") and params.get(r, set()) & OBJECT_PARAMS
            and len(creds.get(r, ())) < 2]
    assert not thin, f"API routes naming an object tried with fewer than two credentials: {thin}"


# --- running the cases --------------------------------------------------------------------------
def read_stream(client: httpx.Client, case: Case, headers: dict, seconds: float = 3.0) -> tuple[int, str]:
    """The first bytes of a stream: up to its `: connected` comment (the backlog is before it)."""
    with client.stream("GET", case.url, params=case.params, headers=headers) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp.status_code, resp.text
        got, deadline = b"", time.monotonic() + seconds
        for chunk in resp.iter_raw():            # pings every PING_S keep this loop turning
            got += chunk
            if b": connected" in got or time.monotonic() > deadline:
                break
        return 200, got.decode("utf-8", "replace")


def run(w: World, case: Case) -> tuple[int, str]:
    headers = {**w.headers(case.cred), **(case.headers or {})}
    if case.stream:
        return read_stream(w.client, case, headers)
    resp = w.client.request(case.route[0], case.url, params=case.params, headers=headers,
                            **({"json": case.json} if case.json is not None else {}),
                            **({"content": case.content} if case.content is not None else {}))
    return resp.status_code, resp.text


def forbidden(w: World, case: Case) -> tuple[str, ...]:
    if case.forbid == "raw":
        return w.raw()
    if case.forbid == "agent":
        return tuple(m for m in w.private() if m != w.ticket)
    return w.private()


def test_the_owner_reads_what_the_suite_looks_for(world):
    """Each marker the suite checks is really there for the party allowed to see it."""
    w, c = world, world.client
    own = c.get("/api/v1/chat/messages", params={"sender": SA}, headers=w.headers("A"))
    assert own.status_code == 200
    for marker in ("QX71", "QX73", mask_name(NAME), mask_id_number(ID_NUMBER), mask_phone(PHONE), f"好的 {A}"):
        assert marker in own.text, marker
    assert c.get("/api/v1/chat/handoff", params={"sender": SA}, headers=w.headers("A")).json()["ticket"]["id"] == w.ticket
    status, streamed = read_stream(c, Case(("GET", "/api/v1/chat/stream"), "A", "/api/v1/chat/stream", s(200),
                                           params={"sender": SA, "after": "0"}), w.headers("A"))
    assert status == 200 and f"好的 {A}" in streamed and "QX73" in streamed     # the stream: bot, agent, system
    status, streamed = read_stream(c, Case(("GET", "/api/v1/chat/stream"), "none", "/api/v1/chat/stream", s(200),
                                           params={"sender": SA, "after": "0", "stream_ticket": w.a_stream_ticket}), {})
    assert status == 200 and "QX73" in streamed
    detail = c.get(f"/api/v1/agent/tickets/{w.ticket}", headers=w.headers("X"))
    assert detail.status_code == 200 and "QX71" in detail.text and w.ticket in detail.text
    status, streamed = read_stream(c, Case(("GET", "/api/v1/agent/stream"), "X", "/api/v1/agent/stream", s(200),
                                           params={"after": "0"}), w.headers("X"))
    assert status == 200 and "QX72" in streamed                 # the holder gets A's message
    assert c.post(f"/api/v1/agent/tickets/{w.ticket}/reveal-phone", headers=w.headers("X")).json() == {"phone": CALLBACK}
    # The checker itself: the owner's read, run as a case, is flagged as a leak.
    for route, params in ((("GET", "/api/v1/chat/messages"), {"sender": SA}),
                          (("GET", "/api/v1/chat/stream"), {"sender": SA, "after": "0"})):
        case = Case(route, "A", route[1], s(200), params=params)
        _status, body = run(w, case)
        assert [m for m in forbidden(w, case) if m and m in body], route
    account = c.get(f"/api/v1/admin/accounts/{A}", headers=bearer(ADMIN))
    assert account.status_code == 200 and mask_name(NAME) in account.text
    sessions = c.get(f"/api/v1/admin/users/{A}/sessions", headers=bearer(ADMIN)).json()["sessions"]
    assert w.a_token_id in [x["token_id"] for x in sessions]


def test_no_route_reads_another_partys_objects(world):
    w = world
    before = state(w)
    cases = all_cases(w)
    failures = []
    for case in cases:
        status, body = run(w, case)
        problems = []
        if status not in case.expect:
            problems.append(f"status {status}, expected {sorted(case.expect)}")
        leaked = [m for m in forbidden(w, case) if m and m in body]
        if leaked:
            problems.append(f"leaked {leaked}")
        if not problems and case.check is not None:
            problem = case.check(w, status, body)
            if problem:
                problems.append(problem)
        if problems:
            failures.append(f"{case.label()}: {'; '.join(problems)} :: {body[:300]!r}")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)
    # Nothing an attacker tried changed anything of A's, X's or the links, nor reached A's ticket.
    assert state(w) == before
    detail = w.client.get(f"/api/v1/agent/tickets/{w.ticket}", headers=w.headers("X")).json()
    assert not [line for line in detail["transcript"] if "QB01" in line["text"] or "越权" in line["text"]]
    assert [n["by"] for n in detail["notes"]] == ["坐席Y"]           # the shared queue's private note
    # The rating the others could not give, A's own conversation gives (so the refusals were real).
    rate = f'/rate_ticket{{"ticket_id":"{w.resolved}","score":3}}'
    ok(w.client.post("/api/v1/chat", json={"sender": SA2, "text": rate}, headers=w.headers("A")))
    assert tickets.get(w.resolved).satisfaction == 3


def state(w: World) -> dict:
    c, admin = w.client, bearer(ADMIN)
    view = tickets.get(w.ticket)
    return {
        "a_sessions": sorted(x["token_id"] for x in c.get(f"/api/v1/admin/users/{A}/sessions",
                                                          headers=admin).json()["sessions"]),
        "a_token": accounts.user_for_token(w.tokens["A"]),
        "a_account": c.get(f"/api/v1/admin/accounts/{A}", headers=admin).json(),
        "x": accounts.agent_for_token(w.tokens["X"]),
        "y": accounts.agent_for_token(w.tokens["Y"]),
        "ticket": (view.status, view.claimed_by, view.resolution),
        "resolved": (tickets.get(w.resolved).status, tickets.get(w.resolved).satisfaction),
        "links": [links.user_for("wechat", OPENID_A), links.user_for("alipay", ALI_A), links.user_for("alipay", ALI_B)],
        "a_messages": [(m.sender, m.text) for m in delivery.recent(rasa_sender(SA, A), 50)],
        "agents": c.get("/api/v1/agent/me", headers=w.headers("X")).json(),
    }


def test_case_count(world):
    """How many (route × credential) cases the suite runs (printed with -s; at least one per route)."""
    cases = all_cases(world)
    routes = {c.route for c in cases}
    print(f"\nIDOR suite: {len(cases)} cases over {len(routes)} routes")
    assert len(cases) >= 150 and len(routes) >= 30
