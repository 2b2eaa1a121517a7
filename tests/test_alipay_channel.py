"""Alipay through the app: the mini-program sign-in (auth code → gateway → session token, signed
in only when linked; a tampered gateway answer refused), and the 生活号 gateway (alipay.service.check
answered with our signed public key; a signed text message answered through custom.send once,
retries deduped; a tampered or unsigned one refused with nothing stored), against the local
stand-in gateway (tools/fake_alipay.py)."""
from __future__ import annotations

import re
import secrets
import time
from contextlib import contextmanager

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import create_engine, text

from _accounts_fixtures import ADMIN, FakeRasa, make_client
from channels.alipay.service import app_public_key_b64
from channels.alipay.sign import NOTIFY_GATEWAY, load_public_key, rsa2_verify
from tools import fake_alipay

APP_ID = "2021" + secrets.token_hex(6)
APP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
APP_PRIVATE = APP_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
APP_PUBLIC = APP_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
USER = "2088" + str(secrets.randbelow(10**12)).zfill(12)


@pytest.fixture(scope="module")
def gateway():
    with fake_alipay.running(APP_PUBLIC, app_id=APP_ID) as fake:
        yield fake


@pytest.fixture
def client(tmp_path, gateway):
    from assistant import conversations

    gateway.clear()
    conversations.configure(None)
    settings = {"alipay_app_id": APP_ID, "alipay_private_key": APP_PRIVATE, "alipay_public_key": gateway.public_key_pem,
                "alipay_gateway": gateway.url, "database_url": f"sqlite:///{tmp_path / 'hc.db'}"}
    with make_client(tmp_path, **settings) as c:
        real = c.app.state.rasa
        c.app.state.rasa = FakeRasa()
        try:
            yield c
        finally:
            c.app.state.rasa = real


def notify(client, gateway, biz, *, tamper=False, sign=True):
    fields = {"service": "alipay.mobile.public.message.notify", "charset": "GBK", "biz_content": biz}
    if sign:
        fields = fake_alipay.signed_notification(fields, gateway.private_key_pem, NOTIFY_GATEWAY)
    if tamper:
        fields["biz_content"] = fields["biz_content"].replace("健康码", "健康吗")
    return client.post("/channels/alipay", content=fake_alipay.form_body(fields),
                       headers={"content-type": "application/x-www-form-urlencoded"})


def wait_sends(gateway, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(gateway.sends()) >= n:
            return gateway.sends()
        time.sleep(0.05)
    raise AssertionError(f"expected {n} sends, got {gateway.sends()}")


def inbox_count(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'hc.db'}")
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM channel_inbox")).scalar()
    engine.dispose()
    return n


# --- the mini-program sign-in ---------------------------------------------------------------------
def test_an_unlinked_user_gets_an_anonymous_token_and_a_linked_one_is_signed_in(client, gateway):
    gateway.add_auth_code("code-anon", USER)
    resp = client.post("/api/v1/channels/alipay/session", json={"auth_code": "code-anon"})
    assert resp.status_code == 200, resp.text
    anon = resp.json()
    assert anon["signed_in"] is False and anon["token"]
    chat = client.post("/api/v1/chat", json={"sender": "mp-1", "text": "我的码为什么是橙色"},
                       headers={"Authorization": f"Bearer {anon['token']}"})
    assert chat.status_code == 200 and chat.json()["messages"][0]["text"] == "好的 -"     # nobody signed in
    [call] = gateway.calls("alipay.system.oauth.token")
    assert call["params"]["code"] == "code-anon" and call["signature_ok"]        # our call was signed

    assert client.post("/api/v1/admin/channel-links", headers={"Authorization": f"Bearer {ADMIN}"},
                       json={"channel": "alipay", "external_id": USER, "user_id": "u-ali"}).status_code == 200
    gateway.add_auth_code("code-linked", USER, open_id=True)
    linked = client.post("/api/v1/channels/alipay/session", json={"auth_code": "code-linked"}).json()
    assert linked["signed_in"] is True
    chat = client.post("/api/v1/chat", json={"sender": "mp-1", "text": "我的码为什么是橙色"},
                       headers={"Authorization": f"Bearer {linked['token']}"})
    assert chat.json()["messages"][0]["text"] == "好的 u-ali"
    # Each sign-in's token_id names its session: revoking it signs the mini-program out.
    assert anon["token_id"] != linked["token_id"]
    assert client.delete(f"/api/v1/admin/sessions/{linked['token_id']}",
                         headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 204
    assert client.post("/api/v1/chat", json={"sender": "mp-1", "text": "你好"},
                       headers={"Authorization": f"Bearer {linked['token']}"}).status_code == 401


def test_a_bad_code_a_refusal_and_a_tampered_answer_are_refused(client, gateway):
    assert client.post("/api/v1/channels/alipay/session", json={"auth_code": "never-issued"}).status_code == 400
    gateway.add_auth_code("code-t", USER)
    gateway.tamper_next_signature()
    resp = client.post("/api/v1/channels/alipay/session", json={"auth_code": "code-t"})
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "bad_gateway_signature"
    gateway.add_auth_code("code-f", USER)
    gateway.fail_next("40004", "isv.unknown-error", method="alipay.system.oauth.token")
    assert client.post("/api/v1/channels/alipay/session", json={"auth_code": "code-f"}).status_code == 502
    for bad in ({}, {"auth_code": ""}, {"auth_code": "a b<script>"}, {"auth_code": "x" * 300}):
        assert client.post("/api/v1/channels/alipay/session", json=bad).status_code == 422


# --- the 生活号 gateway ---------------------------------------------------------------------------
def test_the_gateway_check_is_answered_with_our_signed_public_key(client, gateway):
    fields = fake_alipay.signed_notification({"service": "alipay.service.check", "charset": "GBK",
                                              "biz_content": fake_alipay.check_biz_content(APP_ID)},
                                             gateway.private_key_pem, NOTIFY_GATEWAY)
    resp = client.post("/channels/alipay", content=fake_alipay.form_body(fields),
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 200 and resp.headers["content-type"].lower().startswith("text/xml")
    xml = resp.content.decode("gbk")
    inner = re.search(r"<response>(.*)</response>", xml).group(1)
    assert inner == f"<success>true</success><biz_content>{app_public_key_b64(APP_PRIVATE)}</biz_content>"
    assert rsa2_verify(inner, re.search(r"<sign>(.*)</sign>", xml).group(1), load_public_key(APP_PUBLIC),
                       charset="GBK")


def test_a_signed_text_message_is_answered_once_through_custom_send(client, gateway, tmp_path):
    biz = fake_alipay.text_biz_content(APP_ID, USER, "健康码可以截图吗", msg_id="m-" + secrets.token_hex(4))
    t0 = time.monotonic()
    resp = notify(client, gateway, biz)
    assert resp.status_code == 200 and time.monotonic() - t0 < 5
    assert "<MsgType><![CDATA[ack]]></MsgType>" in resp.content.decode("gbk")
    [sent] = wait_sends(gateway, 1)
    assert sent["to_user_id"] == USER and sent["msg_type"] == "text" and sent["text"]["content"] == "好的 -"
    assert notify(client, gateway, biz).status_code == 200              # the gateway's retry
    time.sleep(0.8)
    assert len(gateway.sends()) == 1 and inbox_count(tmp_path) == 1


@pytest.mark.parametrize("case", ["tampered", "unsigned", "other_app"])
def test_refused_notifications_store_and_send_nothing(client, gateway, tmp_path, case):
    app_id = "2021000000000000" if case == "other_app" else APP_ID
    biz = fake_alipay.text_biz_content(app_id, USER, "健康码在哪里", msg_id="m-" + secrets.token_hex(4))
    resp = notify(client, gateway, biz, tamper=case == "tampered", sign=case != "unsigned")
    assert resp.status_code in (401, 403), resp.text
    time.sleep(0.3)
    assert gateway.sends() == [] and inbox_count(tmp_path) == 0


def test_broken_notifications_get_a_clear_4xx(client, gateway):
    bomb = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            '<XML><AppId>' + APP_ID + '</AppId><MsgType>text</MsgType><Text><Content>&b;</Content></Text></XML>')
    assert notify(client, gateway, bomb).status_code == 400
    assert notify(client, gateway, "<XML><broken").status_code == 400
    junk = client.post("/channels/alipay", content=b"\xff\xfe%%%", headers={"content-type": "application/x-www-form-urlencoded"})
    assert junk.status_code in (400, 401)
    big = client.post("/channels/alipay", content=b"a=" + b"x" * 1_000_000,
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413
