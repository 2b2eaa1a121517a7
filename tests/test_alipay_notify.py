"""channels/alipay/notify.py: 生活号 notifications in, the signed answers out."""
from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from _alipay_keys import new_key, private_pem, public_pem
from defusedxml.ElementTree import fromstring

from channels.alipay.notify import (
    RESPONSE_MEDIA_TYPE,
    SERVICE_CHECK,
    SERVICE_MESSAGE,
    BadNotification,
    Notification,
    ack_response,
    check_response,
    decode_form,
    dedupe_key,
    is_fresh,
    parse_notification,
    verified_notification,
)
from channels.alipay.sign import NOTIFY_GATEWAY, NOTIFY_PAYMENT, SignatureInvalid, rsa2_verify
from tools.fake_alipay import (
    check_biz_content,
    event_biz_content,
    form_body,
    signed_notification,
    text_biz_content,
)

APP_ID = "2021000000000001"
USER = "2088000000000001"


_private_pem, _public_pem = private_pem, public_pem


@pytest.fixture(scope="module")
def alipay_key():
    """Stands in for Alipay's gateway key pair (it signs notifications)."""
    return new_key()


@pytest.fixture(scope="module")
def app_key():
    return new_key()


def _form(biz: str, service: str = SERVICE_MESSAGE, charset: str = "GBK") -> dict:
    return {"service": service, "biz_content": biz, "charset": charset, "sign_type": "RSA2"}


# --- parsing --------------------------------------------------------------------------------------

def test_text_message():
    biz = ("<XML><AppId><![CDATA[2021000000000001]]></AppId><FromUserId><![CDATA[aYMvrMC8+old]]></FromUserId>"
           "<FromAlipayUserId><![CDATA[2088000000000001]]></FromAlipayUserId>"
           "<CreateTime>1796092800123</CreateTime>"
           "<MsgType><![CDATA[text]]></MsgType><Text><Content><![CDATA[健康码 <怎么> 变黄了]]></Content></Text>"
           "<MsgId><![CDATA[160308464406000001]]></MsgId>"
           '<UserInfo><![CDATA[{"logon_id":"135****1009","user_name":"*小虎"}]]></UserInfo></XML>')
    n = parse_notification(_form(biz))
    assert (n.service, n.app_id, n.from_user_id, n.create_time, n.msg_type) == (
        SERVICE_MESSAGE, APP_ID, USER, "1796092800123", "text")
    assert n.content == "健康码 <怎么> 变黄了"
    assert n.msg_id == "160308464406000001"
    assert n.fields["Text.Content"] == "健康码 <怎么> 变黄了"
    assert "UserInfo" not in n.fields
    assert not n.is_check and n.event_type is None
    assert dedupe_key(n) == "160308464406000001"


def test_liberal_shapes_bare_content_and_from_user_id():
    biz = ('<?xml version="1.0" encoding="gbk"?><XML><AppId>2021000000000001</AppId>'
           "<FromUserId> u-old </FromUserId>"
           "<CreateTime>1796092800123</CreateTime><MsgType>text</MsgType><Content>你好</Content></XML>")
    n = parse_notification(_form(biz))
    assert (n.from_user_id, n.content, n.msg_id) == ("u-old", "你好", None)
    assert dedupe_key(n) == "u-old|1796092800123|text|"


def test_events_are_kept():
    n = parse_notification(_form(event_biz_content(APP_ID, USER, "follow", create_time_ms="1796092800000")))
    assert (n.msg_type, n.event_type, n.content) == ("event", "follow", None)
    assert n.fields["ActionParam"] == ""
    enter = parse_notification(_form(event_biz_content(APP_ID, USER, "enter",
                                                       create_time_ms="1796092800000")))
    assert dedupe_key(n) != dedupe_key(enter)
    assert dedupe_key(n) == f"{USER}|1796092800000|event|follow"


def test_check():
    n = parse_notification(_form(check_biz_content(APP_ID, "1796092800000"), service=SERVICE_CHECK))
    assert n.is_check and n.event_type == "verifygw"
    assert (n.app_id, n.from_user_id, n.msg_type) == (APP_ID, "", "event")
    # The platform has been seen to send a check with an empty biz_content: still a check.
    assert parse_notification(_form("", service=SERVICE_CHECK)).is_check


BOMB = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;">]><XML><AppId>&lol3;</AppId></XML>')
EXTERNAL = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            "<XML><AppId>1</AppId><FromAlipayUserId>&xxe;</FromAlipayUserId></XML>")
DTD_ONLY = '<?xml version="1.0"?><!DOCTYPE XML SYSTEM "http://127.0.0.1:9/x.dtd"><XML><AppId>1</AppId></XML>'
GOOD = text_biz_content(APP_ID, USER, "hi", create_time_ms="1796092800000")


@pytest.mark.parametrize("biz", [
    BOMB, EXTERNAL, DTD_ONLY,
    "<XML><AppId>1</AppId><Text><Content>" + "长" * 30000 + "</Content></Text></XML>",   # > 64 KiB as UTF-8
    "not xml", "<XML><AppId>1</AppId>", "<root><AppId>1</AppId></root>",
    GOOD.replace("<MsgType><![CDATA[text]]></MsgType>", ""),
    GOOD.replace("FromAlipayUserId", "Nobody"),
    GOOD.replace("<CreateTime><![CDATA[1796092800000]]></CreateTime>", ""),
    GOOD.replace("1796092800000", "yesterday"),
    GOOD.replace("<Text><Content><![CDATA[hi]]></Content></Text>", ""),
    GOOD.replace("<AppId>", "<AppId>x</AppId><AppId>"),
    GOOD.replace(USER, "a b"),
    "",
], ids=["bomb", "external-entity", "dtd", "huge", "not-xml", "unclosed", "root", "no-msgtype", "no-user",
        "no-time", "bad-time", "text-without-content", "duplicate", "id-with-space", "empty"])
def test_bad_message_notifications(biz):
    with pytest.raises(BadNotification):
        parse_notification(_form(biz))


def test_bad_forms():
    with pytest.raises(BadNotification):
        parse_notification({**_form(GOOD), "service": "alipay.trade.pay"})
    with pytest.raises(BadNotification):
        parse_notification({k: v for k, v in _form(GOOD).items() if k != "service"})
    with pytest.raises(BadNotification):
        parse_notification({**_form(GOOD), "biz_content": b"<XML/>"})
    with pytest.raises(BadNotification):
        parse_notification(_form(EXTERNAL, service=SERVICE_CHECK))


def test_bad_notification_messages_do_not_echo_the_data():
    with pytest.raises(BadNotification) as info:
        parse_notification(_form(GOOD.replace(USER, "secret id")))
    assert "secret" not in str(info.value)


# --- the wire: decode, verify, parse ------------------------------------------------------------

def test_gbk_form_end_to_end(alipay_key):
    fields = signed_notification(_form(text_biz_content(APP_ID, USER, "我的健康码是黄码", msg_id="m-1")),
                                 _private_pem(alipay_key), NOTIFY_GATEWAY)
    body = form_body(fields)
    assert quote("我".encode("gbk")) in body.decode("ascii")       # really GBK on the wire
    decoded = decode_form(body)
    assert decoded == fields
    n = verified_notification(decoded, _public_pem(alipay_key))
    assert (n.content, n.msg_id, n.from_user_id) == ("我的健康码是黄码", "m-1", USER)


def test_utf8_form_and_fields_in_the_query(alipay_key):
    fields = signed_notification(_form(GOOD, charset="UTF-8"), _private_pem(alipay_key), NOTIFY_GATEWAY)
    body = form_body({k: v for k, v in fields.items() if k != "sign"})
    query = "sign=" + quote(fields["sign"], safe="")
    decoded = decode_form(body, query)
    assert verified_notification(decoded, alipay_key.public_key()).content == "hi"


def test_decode_form_refusals():
    with pytest.raises(BadNotification):
        decode_form(b"service=a&service=b")
    with pytest.raises(BadNotification):
        decode_form(b"charset=EBCDIC&service=a")
    with pytest.raises(BadNotification):
        decode_form(b"charset=UTF-8&biz_content=%B0%A1%FF")            # GBK bytes claimed as UTF-8
    with pytest.raises(BadNotification):
        decode_form(b"a=" + b"x" * (200 * 1024))
    with pytest.raises(BadNotification):
        decode_form(b"&".join(b"k%d=v" % i for i in range(40)))


def test_verified_notification_refuses_forgeries(alipay_key, app_key):
    private = _private_pem(alipay_key)
    good = signed_notification(_form(GOOD), private, NOTIFY_GATEWAY)
    with pytest.raises(SignatureInvalid):
        verified_notification({**good, "biz_content": GOOD.replace("hi", "ho")}, alipay_key.public_key())
    with pytest.raises(SignatureInvalid):
        verified_notification(signed_notification(_form(GOOD), _private_pem(app_key), NOTIFY_GATEWAY),
                              alipay_key.public_key())
    # Signed the payment way (sign_type left out): not a gateway notification's signature.
    with pytest.raises(SignatureInvalid):
        verified_notification(signed_notification(_form(GOOD), private, NOTIFY_PAYMENT),
                              alipay_key.public_key())
    with pytest.raises(SignatureInvalid):
        verified_notification({k: v for k, v in good.items() if k != "sign"}, alipay_key.public_key())
    # A forged XML bomb never reaches the parser: the signature check comes first.
    with pytest.raises(SignatureInvalid):
        verified_notification({**good, "biz_content": BOMB}, alipay_key.public_key())


def test_freshness():
    n = parse_notification(_form(text_biz_content(APP_ID, USER, "hi", create_time_ms="1796092800000")))
    assert is_fresh(n, 300, now=1796092800.0 + 299)
    assert is_fresh(n, 300, now=1796092800.0 - 299)          # a gateway clock a little ahead
    assert not is_fresh(n, 300, now=1796092800.0 + 301)
    assert is_fresh(n, 0, now=0)
    check = parse_notification(_form("", service=SERVICE_CHECK))
    assert not is_fresh(check, 300) and is_fresh(check, 0)


# --- the answers ------------------------------------------------------------------------------------

def _inner(xml: str) -> str:
    return re.search(r"<response>(.*)</response>", xml, re.S).group(1)


def _sign(xml: str) -> str:
    return re.search(r"<sign>(.*)</sign>", xml).group(1)


def test_check_response(app_key):
    spki_body = "".join(_public_pem(app_key).splitlines()[1:-1])
    xml = check_response(spki_body, app_key)
    assert xml.startswith('<?xml version="1.0" encoding="GBK"?><alipay><response>')
    assert xml.encode("gbk").decode("gbk") == xml
    assert _inner(xml) == f"<success>true</success><biz_content>{spki_body}</biz_content>"
    assert xml.endswith("<sign_type>RSA2</sign_type></alipay>")
    # The sign covers the content inside <response>, not the tags (Java SDK encryptAndSign).
    assert rsa2_verify(_inner(xml), _sign(xml), app_key.public_key(), charset="GBK")
    assert not rsa2_verify("<response>" + _inner(xml) + "</response>", _sign(xml), app_key.public_key())
    root = fromstring(xml)
    assert root.find("response/success").text == "true"
    assert root.find("response/biz_content").text == spki_body
    # A PEM or a key object says the same.
    assert check_response(_public_pem(app_key), app_key) == xml
    assert check_response(app_key.public_key(), _private_pem(app_key)) == xml
    assert RESPONSE_MEDIA_TYPE == "text/xml;charset=GBK"
    with pytest.raises(ValueError):
        check_response("not-a-key", app_key)


def test_ack_response(app_key):
    n = parse_notification(_form(text_biz_content(APP_ID, USER, "hi", msg_id="m-9")))
    xml = ack_response(app_key, n, now_ms=1796092800123)
    assert _inner(xml) == (f"<XML><ToUserId><![CDATA[{USER}]]></ToUserId><AppId><![CDATA[{APP_ID}]]></AppId>"
                           "<CreateTime>1796092800123</CreateTime><MsgType><![CDATA[ack]]></MsgType></XML>")
    assert rsa2_verify(_inner(xml), _sign(xml), app_key.public_key(), charset="GBK")
    bare = ack_response(app_key)
    assert _inner(bare) == "<success>true</success><biz_content></biz_content>"
    assert rsa2_verify(_inner(bare), _sign(bare), app_key.public_key())
    fromstring(bare)


def test_ack_cdata_cannot_be_broken_out_of(app_key):
    n = Notification(SERVICE_MESSAGE, APP_ID, "a]]><x/>", "1", "text", "hi", None, {})
    root = fromstring(ack_response(app_key, n, now_ms=1))
    assert root.find("response/XML/ToUserId").text == "a]]><x/>"
