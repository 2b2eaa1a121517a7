"""WeChat through the app: pushes in (plaintext, safe mode; JSON and XML) verified, stored,
answered `success` at once, the answer out through the customer-service API at the local
stand-in (tools/fake_wechat.py); retries processed once, across a restart too; bad input refused
with nothing stored; buttons as numbered choices; linked users signed in; the hand-off's agent
messages out the same way, 45015 marking them undelivered; a bot that is down gets an apology."""
from __future__ import annotations

import base64
import json
import secrets
import time
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text

from _accounts_fixtures import ADMIN, FakeRasa, make_client
from assistant.rasa_client import BotTurn, BotUnavailable
from channels.wechat.crypto import WeChatCipher, signature
from tools import fake_wechat

TOKEN, APPID, SECRET = "tok-" + secrets.token_hex(4), "wx" + secrets.token_hex(8), "secret-" + secrets.token_hex(8)
AES_KEY = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
OPENID = "oUser" + secrets.token_hex(10)


@pytest.fixture
def fake():
    with fake_wechat.running(APPID, SECRET) as stand_in:
        yield stand_in


def settings_for(tmp_path, fake, **more):
    return {"wechat_token": TOKEN, "wechat_appid": APPID, "wechat_appsecret": SECRET, "wechat_aes_key": AES_KEY,
            "wechat_api_base": fake.base_url, "database_url": f"sqlite:///{tmp_path / 'hc.db'}",
            "hotline_hours": "00:00-24:00", "channel_give_up_s": 2.0, **more}


@contextmanager
def app(tmp_path, fake, rasa=None, **more):
    from assistant import conversations

    conversations.configure(None)       # its cache of known conversations belongs to one database
    with make_client(tmp_path, **settings_for(tmp_path, fake, **more)) as client:
        real = client.app.state.rasa
        client.app.state.rasa = rasa or FakeRasa()
        try:
            yield client
        finally:
            client.app.state.rasa = real


@pytest.fixture
def client(tmp_path, fake):
    with app(tmp_path, fake) as c:
        yield c


def query(body_signature_parts=(), *, ts=None, nonce="n" + secrets.token_hex(3), safe_encrypt=None):
    ts = str(int(time.time()) if ts is None else ts)
    q = {"timestamp": ts, "nonce": nonce, "signature": signature(TOKEN, ts, nonce), "openid": OPENID}
    if safe_encrypt is not None:
        q |= {"encrypt_type": "aes", "msg_signature": signature(TOKEN, ts, nonce, safe_encrypt)}
    return q


def text_push(content, msg_id=None, openid=OPENID, **extra):
    return {"ToUserName": "gh_test", "FromUserName": openid, "CreateTime": int(time.time()), "MsgType": "text",
            "Content": content, "MsgId": msg_id or int(secrets.token_hex(6), 16), **extra}


def xml_of(fields):
    return "<xml>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items()) + "</xml>"


def post_json(client, fields, **q):
    return client.post("/channels/wechat", params=query(**q), content=json.dumps(fields, ensure_ascii=False),
                       headers={"content-type": "application/json"})


def post_safe_xml(client, fields, appid=APPID, key=AES_KEY):
    encrypt = WeChatCipher(key, appid).encrypt(xml_of(fields).encode())
    body = f"<xml><ToUserName><![CDATA[gh_test]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    return client.post("/channels/wechat", params=query(safe_encrypt=encrypt), content=body,
                       headers={"content-type": "text/xml"})


def wait_sends(fake, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(fake.sends()) >= n:
            return fake.sends()
        time.sleep(0.05)
    raise AssertionError(f"expected {n} sends, got {fake.sends()}")


def inbox_rows(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'hc.db'}")
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM channel_inbox"))]
    engine.dispose()
    return rows


# --- URL check ------------------------------------------------------------------------------------
def test_url_verification_echoes_only_with_the_right_signature(client):
    q = query() | {"echostr": "4375120948345356249"}
    resp = client.get("/channels/wechat", params=q)
    assert resp.status_code == 200 and resp.text == "4375120948345356249"
    assert client.get("/channels/wechat", params=q | {"signature": "0" * 40}).status_code == 403
    assert client.get("/channels/wechat", params={k: v for k, v in q.items() if k != "signature"}).status_code == 401


# --- pushes ---------------------------------------------------------------------------------------
def test_a_json_push_is_answered_once_through_the_customer_service_api(client, fake, tmp_path):
    push = text_push("健康码可以截图吗")
    t0 = time.monotonic()
    resp = post_json(client, push)
    assert resp.status_code == 200 and resp.text == "success" and time.monotonic() - t0 < 5
    [sent] = wait_sends(fake, 1)
    assert sent["touser"] == OPENID and sent["msgtype"] == "text" and sent["text"]["content"].startswith("好的")
    assert fake.calls("stable_token") and len(fake.calls("stable_token")) == 1
    assert fake.calls("business/typing")                              # typing while the bot works
    # WeChat's retry of the same push: success again, nothing more sent or stored.
    assert post_json(client, push).text == "success"
    time.sleep(1.0)
    assert len(fake.sends()) == 1 and len(inbox_rows(tmp_path)) == 1
    assert all(r["payload"] is None and r["status"] == "done" for r in inbox_rows(tmp_path))


def test_a_safe_mode_xml_push_is_decrypted_answered_and_deduped(client, fake):
    push = text_push("我想问一下健康码")
    assert post_safe_xml(client, push).text == "success"
    [sent] = wait_sends(fake, 1)
    assert sent["touser"] == OPENID
    assert post_safe_xml(client, push).text == "success"        # same MsgId, new ciphertext
    time.sleep(0.8)
    assert len(fake.sends()) == 1


@pytest.mark.parametrize("case", ["tampered_signature", "stale", "other_appid", "wrong_key", "missing_signature"])
def test_refused_pushes_store_and_send_nothing(client, fake, tmp_path, case):
    push = text_push("hi")
    if case == "tampered_signature":
        q = query() | {"signature": signature(TOKEN, "1", "2")}
        resp = client.post("/channels/wechat", params=q, json=push)
    elif case == "missing_signature":
        q = {k: v for k, v in query().items() if k != "signature"}
        resp = client.post("/channels/wechat", params=q, json=push)
    elif case == "stale":
        resp = post_json(client, push, ts=int(time.time()) - 3600)
    elif case == "other_appid":
        resp = post_safe_xml(client, push, appid="wxsomeoneelse0000")
    else:
        resp = post_safe_xml(client, push, key=base64.b64encode(secrets.token_bytes(32)).decode().rstrip("="))
    assert resp.status_code in (400, 401, 403), resp.text
    assert resp.json()["error"]["code"]
    time.sleep(0.3)
    assert inbox_rows(tmp_path) == [] and fake.sends() == []


BOMB = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        '<xml><Content>&lol2;</Content></xml>')
XXE = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Content>&e;</Content></xml>'


@pytest.mark.parametrize("body,ctype,status", [
    (BOMB, "text/xml", 400), (XXE, "text/xml", 400), ("<xml><Content>", "text/xml", 400),
    ("{not json", "application/json", 400), ("[1,2]", "application/json", 400), ("", "text/xml", 400),
    ('{"MsgType": "text"}', "application/json", 400),
    ("x" * 200_000, "text/xml", 413), ("x" * 1_000_000, "text/xml", 413)])
def test_broken_bodies_get_a_clear_4xx(client, fake, tmp_path, body, ctype, status):
    resp = client.post("/channels/wechat", params=query(), content=body, headers={"content-type": ctype})
    assert resp.status_code == status, resp.text
    assert inbox_rows(tmp_path) == [] and fake.sends() == []


def test_other_message_types_get_a_polite_please_type(client, fake):
    for msg_type in ("image", "voice", "miniprogrampage", "some_type_from_2030"):
        push = text_push("", MsgType=msg_type, PicUrl="http://x/y.jpg")
        assert post_json(client, push).text == "success"
    sends = wait_sends(fake, 4)
    assert all("文字" in s["text"]["content"] for s in sends)


def test_entering_the_session_gets_a_greeting_and_other_events_nothing(client, fake):
    rasa = client.app.state.rasa
    enter = {"ToUserName": "gh", "FromUserName": OPENID, "CreateTime": int(time.time()), "MsgType": "event",
             "Event": "user_enter_tempsession", "SessionFrom": "menu"}
    assert post_json(client, enter).text == "success"
    wait_sends(fake, 1)
    assert rasa.calls[-1]["text"] == "/greet"
    other = enter | {"Event": "kf_close_session", "CreateTime": int(time.time()) + 1}
    assert post_json(client, other).text == "success"
    time.sleep(0.5)
    assert len(fake.sends()) == 1


class ButtonRasa(FakeRasa):
    async def send(self, sender, text, metadata):
        self.calls.append({"sender": sender, "text": text, "metadata": dict(metadata)})
        if text.startswith("/"):
            return BotTurn([{"text": f"你选了 {text}"}], "choice", 0.9)
        return BotTurn([{"text": "您想问哪一个?", "buttons": [
            {"title": "健康码可以截图吗", "payload": '/faq{"faq_id":"personal.screenshot"}'},
            {"title": "转人工", "payload": "/request_human"}]}], "clarify", 0.5)


def test_buttons_become_numbered_choices_and_a_number_picks_one(tmp_path, fake):
    rasa = ButtonRasa()
    with app(tmp_path, fake, rasa) as client:
        post_json(client, text_push("健康码"))
        [first] = wait_sends(fake, 1)
        assert "1. 健康码可以截图吗" in first["text"]["content"] and "2. 转人工" in first["text"]["content"]
        post_json(client, text_push("回复1"))
        wait_sends(fake, 2)
        assert rasa.calls[-1]["text"] == '/faq{"faq_id":"personal.screenshot"}'
        post_json(client, text_push("1"))          # no list since the last answer: just text
        wait_sends(fake, 3)
        assert rasa.calls[-1]["text"] == "1"


def test_long_answers_are_split_to_fit(tmp_path, fake):
    class Long(FakeRasa):
        async def send(self, sender, text, metadata):
            return BotTurn([{"text": "健康码说明。" * 400}], "faq", 0.9)

    with app(tmp_path, fake, Long()) as client:
        post_json(client, text_push("长"))
        # 7,200 bytes of text: at least 4 pieces; wait for all of them, not for the first few.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "".join(
                s["text"]["content"] for s in fake.sends()).count("健康码说明") < 400:
            time.sleep(0.05)
        sends = fake.sends()
        assert len(sends) >= 4 and all(len(s["text"]["content"].encode()) <= 2000 for s in sends)
        assert "".join(s["text"]["content"] for s in sends).count("健康码说明") == 400


def test_a_linked_openid_talks_as_the_signed_in_user(client, fake):
    resp = client.post("/api/v1/admin/channel-links", headers={"Authorization": f"Bearer {ADMIN}"},
                       json={"channel": "wechat", "external_id": OPENID, "user_id": "u-linked"})
    assert resp.status_code == 200 and resp.json()["status"] == "linked"
    post_json(client, text_push("我的码为什么是橙色"))
    [sent] = wait_sends(fake, 1)
    assert sent["text"]["content"] == "好的 u-linked"           # the action found the linked user
    assert client.post("/api/v1/admin/channel-links", json={"channel": "wechat", "external_id": OPENID,
                                                           "user_id": "x"}).status_code == 401
    bad = client.post("/api/v1/admin/channel-links", headers={"Authorization": f"Bearer {ADMIN}"},
                      json={"channel": "sms", "external_id": "a/b", "user_id": "x"})
    assert bad.status_code == 422


def test_the_five_second_answer_holds_while_the_bot_is_slow_then_the_reply_follows(tmp_path, fake):
    import asyncio

    class Slow(FakeRasa):
        async def send(self, sender, text, metadata):
            await asyncio.sleep(3)
            return BotTurn([{"text": "慢慢的回答"}], "faq", 0.9)

    with app(tmp_path, fake, Slow()) as client:
        t0 = time.monotonic()
        assert post_json(client, text_push("在吗")).text == "success"
        assert time.monotonic() - t0 < 1.0
        [sent] = wait_sends(fake, 1, timeout=15)
        assert sent["text"]["content"] == "慢慢的回答"


def test_a_bot_that_stays_down_gets_the_user_an_apology(tmp_path, fake):
    class Down(FakeRasa):
        async def send(self, sender, text, metadata):
            raise BotUnavailable("down")

    with app(tmp_path, fake, Down(), channel_give_up_s=1.0) as client:
        assert post_json(client, text_push("在吗")).text == "success"
        [sent] = wait_sends(fake, 1, timeout=20)
        assert "0591-62623959" in sent["text"]["content"]


def test_a_push_taken_before_a_restart_is_answered_after_it(tmp_path, fake):
    push = text_push("重启前的问题")
    with app(tmp_path, fake) as client:
        client.portal.call(client.app.state.channels.worker.stop)      # the process "dies" after success
        assert post_json(client, push).text == "success"
        time.sleep(0.3)
        assert fake.sends() == []
    with app(tmp_path, fake) as client:                                # the restart (or another instance)
        [sent] = wait_sends(fake, 1)
        assert sent["touser"] == OPENID
        assert post_json(client, push).text == "success"              # a late retry: still once
        time.sleep(0.5)
        assert len(fake.sends()) == 1


def test_the_hand_off_agent_messages_go_out_and_45015_marks_them_undelivered(client, fake):
    from channels.identity import conversation_id
    from tickets import service

    post_json(client, text_push("转人工"))
    wait_sends(fake, 1)
    conv = conversation_id("wechat", OPENID, None)
    view, _ = service.create_or_get(conv, channel="wechat", user_id=None, lang="zh", category="other",
                                    summary="要人工", findings=[])
    admin = {"Authorization": f"Bearer {ADMIN}"}
    agent = {"Authorization": "Bearer " + client.post("/api/v1/admin/agents", json={"name": "坐席"},
                                                      headers=admin).json()["token"]}
    assert client.get("/api/v1/agent/tickets", headers=agent).json()["tickets"][0]["channel"] == "wechat"
    assert client.post(f"/api/v1/agent/tickets/{view.id}/claim", headers=agent).status_code == 200
    sends = wait_sends(fake, 2)
    assert "人工客服已接入" in sends[-1]["text"]["content"]             # the claim's notice, on WeChat
    ok = client.post(f"/api/v1/agent/tickets/{view.id}/messages", json={"text": "您好,我是客服"}, headers=agent)
    assert ok.status_code == 200 and ok.json()["undelivered"] is None
    assert wait_sends(fake, 3)[-1] == {"touser": OPENID, "msgtype": "text", "text": {"content": "您好,我是客服"}}
    fake.fail_next(45015)
    late = client.post(f"/api/v1/agent/tickets/{view.id}/messages", json={"text": "还在吗"}, headers=agent)
    assert late.status_code == 200 and late.json()["undelivered"] == "45015 window over"
    # While the agent holds it, the user's WeChat messages go to the ticket, not the bot.
    rasa_calls = len(client.app.state.rasa.calls)
    post_json(client, text_push("我在的"))
    time.sleep(1.0)
    assert len(client.app.state.rasa.calls) == rasa_calls
    detail = client.get(f"/api/v1/agent/tickets/{view.id}", headers=agent).json()
    assert any(line["from"] == "user" and line["text"] == "我在的" for line in detail["transcript"])
