"""channels/alipay/gateway.py against tools/fake_alipay.py (loopback only) and httpx mocks."""
from __future__ import annotations

import json
import re
import socket
import time
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from _alipay_keys import new_key, private_pem, public_pem

from channels.alipay.gateway import AlipayGateway, GatewayError, GatewayUnavailable, beijing_timestamp
from channels.alipay.sign import SignatureInvalid, rsa2_sign, rsa2_verify, sign_content
from tools.fake_alipay import CUSTOM_SEND, OAUTH, running

APP_ID = "2021000000000001"


_private_pem, _public_pem = private_pem, public_pem


@pytest.fixture(scope="module")
def app_key():
    return new_key()


@pytest.fixture(scope="module")
def stranger_key():
    return new_key()


@pytest.fixture(scope="module")
def fake(app_key):
    with running(_public_pem(app_key), app_id=APP_ID) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.clear()


@pytest.fixture
def gateway(fake, app_key):
    gw = AlipayGateway(fake.url, APP_ID, _private_pem(app_key), fake.public_key_pem, timeout_s=2.0)
    yield gw
    gw.close()


# --- against the stand-in -----------------------------------------------------------------------

def test_oauth_token_ok(fake, gateway):
    fake.add_auth_code("code-1", "2088000000000001")
    result = gateway.oauth_token("code-1")
    assert result["user_id"] == "2088000000000001"
    assert result["access_token"].startswith("authusrB")
    assert result["expires_in"] == 1296000
    (call,) = fake.calls(OAUTH)
    assert call["signature_ok"]
    params = call["params"]
    assert params["grant_type"] == "authorization_code" and params["code"] == "code-1"
    assert {k: params[k] for k in ("app_id", "method", "format", "charset", "sign_type", "version")} == {
        "app_id": APP_ID, "method": OAUTH, "format": "JSON", "charset": "utf-8", "sign_type": "RSA2",
        "version": "1.0"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", params["timestamp"])
    assert "biz_content" not in params


def test_oauth_token_open_id(fake, gateway):
    fake.add_auth_code("code-2", "083luGU2ef8yeC95sroZ9WGyojnYtj3lBoBA6lY_2PlBrU4", open_id=True)
    assert gateway.oauth_token("code-2")["user_id"] == "083luGU2ef8yeC95sroZ9WGyojnYtj3lBoBA6lY_2PlBrU4"


def test_unknown_or_reused_code_is_a_gateway_error(fake, gateway):
    with pytest.raises(GatewayError) as info:
        gateway.oauth_token("no-such-code")
    err = info.value
    assert (err.code, err.sub_code, err.verified) == ("40002", "isv.code-invalid", True)
    assert "no-such-code" not in str(err) and "授权码" not in str(err)
    fake.add_auth_code("once", "2088000000000002")
    gateway.oauth_token("once")
    with pytest.raises(GatewayError, match="isv.code-invalid"):
        gateway.oauth_token("once")


def test_a_call_signed_with_another_key_is_refused_by_the_gateway(fake, stranger_key):
    gw = AlipayGateway(fake.url, APP_ID, _private_pem(stranger_key), fake.public_key_pem)
    fake.add_auth_code("code-3", "2088000000000003")
    with pytest.raises(GatewayError) as info:
        gw.oauth_token("code-3")
    assert info.value.sub_code == "isv.invalid-signature"
    assert fake.calls(OAUTH)[0]["signature_ok"] is False


def test_tampered_response_is_signature_invalid(fake, gateway):
    fake.add_auth_code("code-4", "2088000000000004")
    fake.tamper_next_signature()
    with pytest.raises(SignatureInvalid):
        gateway.oauth_token("code-4")
    fake.add_auth_code("code-5", "2088000000000005")
    assert gateway.oauth_token("code-5")["user_id"] == "2088000000000005"


def test_wrong_alipay_public_key_is_signature_invalid(fake, app_key, stranger_key):
    gw = AlipayGateway(fake.url, APP_ID, _private_pem(app_key), _public_pem(stranger_key))
    fake.add_auth_code("code-6", "2088000000000006")
    with pytest.raises(SignatureInvalid):
        gw.oauth_token("code-6")


def test_slow_gateway_is_unavailable_within_the_timeout(fake, app_key):
    gw = AlipayGateway(fake.url, APP_ID, _private_pem(app_key), fake.public_key_pem, timeout_s=0.5)
    fake.add_auth_code("code-7", "2088000000000007")
    fake.delay_s = 3.0
    started = time.monotonic()
    with pytest.raises(GatewayUnavailable):
        gw.oauth_token("code-7")
    assert time.monotonic() - started < 2.0


def test_nothing_listening_is_unavailable(app_key, fake):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/gateway.do"
    gw = AlipayGateway(url, APP_ID, _private_pem(app_key), fake.public_key_pem)
    with pytest.raises(GatewayUnavailable):
        gw.oauth_token("x")


def test_send_text(fake, gateway):
    result = gateway.send_text("2088000000000001", "您的健康码为绿码 \"ok\" & <b>")
    assert result["code"] == "10000"
    assert fake.sends() == [{"to_user_id": "2088000000000001", "msg_type": "text",
                             "text": {"content": "您的健康码为绿码 \"ok\" & <b>"}}]
    (call,) = fake.calls(CUSTOM_SEND)
    # Compact JSON, Chinese as is (ensure_ascii=False), exactly what was signed.
    assert call["params"]["biz_content"] == (
        '{"to_user_id":"2088000000000001","msg_type":"text","text":{"content":"您的健康码为绿码 \\"ok\\" & <b>"}}')
    assert call["signature_ok"]


def test_fail_next_counts_and_methods(fake, gateway):
    fake.fail_next("40004", "isv.user-not-follow", count=2, method=CUSTOM_SEND)
    fake.add_auth_code("code-8", "2088000000000008")
    assert gateway.oauth_token("code-8")["user_id"] == "2088000000000008"
    for _ in range(2):
        with pytest.raises(GatewayError) as info:
            gateway.send_text("2088000000000001", "hi")
        assert (info.value.code, info.value.sub_code) == ("40004", "isv.user-not-follow")
    assert gateway.send_text("2088000000000001", "hi")["code"] == "10000"
    fake.fail_next("20000", "isp.unknow-error")
    with pytest.raises(GatewayError, match="20000"):
        gateway.oauth_token("anything")


def test_common_fields_cannot_be_overridden(gateway):
    with pytest.raises(ValueError):
        gateway.call(OAUTH, sign_type="RSA")
    with pytest.raises(ValueError):
        gateway.send_text("", "hi")


def test_bad_keys_fail_at_construction(fake):
    with pytest.raises(ValueError):
        AlipayGateway(fake.url, APP_ID, "nope", fake.public_key_pem)
    with pytest.raises(ValueError):
        AlipayGateway(fake.url, APP_ID, fake.private_key_pem, "nope")


def test_beijing_time():
    assert beijing_timestamp(datetime(2026, 12, 1, 2, 0, 0, tzinfo=timezone.utc)) == "2026-12-01 10:00:00"
    assert beijing_timestamp(datetime(2026, 11, 30, 20, 30, 5, tzinfo=timezone.utc)) == "2026-12-01 04:30:05"


# --- with an httpx mock: the wire and the odd answers ------------------------------------------

@pytest.fixture(scope="module")
def alipay_key():
    return new_key()


def _mock_gateway(app_key, alipay_key, handler) -> AlipayGateway:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return AlipayGateway("https://openapi.example/gateway.do", APP_ID, _private_pem(app_key),
                         _public_pem(alipay_key), client=client)


def _signed_body(name, obj_text, alipay_key):
    sign = json.dumps(rsa2_sign(obj_text, alipay_key))
    return "{" + json.dumps(name) + ":" + obj_text + ',"sign":' + sign + "}"


def test_request_shape_query_and_body(app_key, alipay_key):
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["query"] = dict(parse_qsl(urlsplit(str(request.url)).query))
        seen["body"] = dict(parse_qsl(request.content.decode("utf-8")))
        seen["ctype"] = request.headers["content-type"]
        obj = '{"code":"10000","msg":"Success"}'
        return httpx.Response(200, text=_signed_body("alipay_open_public_message_custom_send_response",
                                                     obj, alipay_key))

    gw = _mock_gateway(app_key, alipay_key, handler)
    gw.send_text("2088000000000001", "中文")
    query, body = seen["query"], seen["body"]
    assert set(query) == {"app_id", "method", "format", "charset", "sign_type", "timestamp", "version",
                          "sign"}
    assert set(body) == {"biz_content"}
    assert seen["ctype"].startswith("application/x-www-form-urlencoded")
    everything = {**query, **body}
    assert rsa2_verify(sign_content(everything), everything["sign"], app_key.public_key())


@pytest.mark.parametrize("status,text", [(502, "bad gateway"), (200, "<html>maintenance</html>"),
                                         (200, ""), (200, '{"unexpected":1}')])
def test_non_gateway_answers_are_unavailable(app_key, alipay_key, status, text):
    gw = _mock_gateway(app_key, alipay_key, lambda request: httpx.Response(status, text=text))
    with pytest.raises(GatewayUnavailable):
        gw.oauth_token("x")


def test_unsigned_error_response_is_an_unverified_gateway_error(app_key, alipay_key):
    body = ('{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id",'
            '"sub_msg":"无效的AppID参数"},"sign":""}')
    gw = _mock_gateway(app_key, alipay_key, lambda request: httpx.Response(200, text=body))
    with pytest.raises(GatewayError) as info:
        gw.oauth_token("x")
    assert (info.value.sub_code, info.value.verified) == ("isv.invalid-app-id", False)


def test_wrongly_signed_error_or_success_is_signature_invalid(app_key, alipay_key):
    for name, obj in [("error_response", '{"code":"40002","sub_code":"isv.code-invalid"}'),
                      ("alipay_system_oauth_token_response", '{"user_id":"2088","access_token":"t"}')]:
        body = "{" + json.dumps(name) + ":" + obj + ',"sign":"' + rsa2_sign("other", alipay_key) + '"}'
        gw = _mock_gateway(app_key, alipay_key, lambda request, body=body: httpx.Response(200, text=body))
        with pytest.raises(SignatureInvalid):
            gw.oauth_token("x")


def test_oauth_answer_without_a_user_id(app_key, alipay_key):
    body = _signed_body("alipay_system_oauth_token_response", '{"access_token":"t"}', alipay_key)
    gw = _mock_gateway(app_key, alipay_key, lambda request: httpx.Response(200, text=body))
    with pytest.raises(GatewayError, match="hc.no-user-id"):
        gw.oauth_token("x")
