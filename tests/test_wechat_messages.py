"""channels.wechat.messages: XML and JSON pushes to fields and a Push, the dedupe keys, hostile
bodies refused as BadPush (never echoing them), and the passive reply."""
from __future__ import annotations

import json
from xml.etree import ElementTree

import pytest

from channels.wechat.crypto import WeChatCipher
from channels.wechat.messages import (MAX_BODY_BYTES, SUCCESS, BadPush, Push, encrypted_field, parse_body,
                                      passive_text_reply_xml, push_from_fields, success)

JSON_SAMPLE = (b'{"ToUserName":"toUser","FromUserName":"fromUser","CreateTime":1482048670,"MsgType":"text",'
               b'"Content":"this is a test","MsgId":1234567890123456}')
XML_TEXT = """<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>
  <FromUserName><![CDATA[o9AgO5Kd5ggOC-bXrbNODIiE3bGY]]></FromUserName>
  <CreateTime>1714037059</CreateTime>
  <MsgType><![CDATA[TEXT]]></MsgType>
  <Content><![CDATA[健康码为什么是黄码？ <b>&</b>]]></Content>
  <MsgId>24602305821212345</MsgId>
</xml>""".encode()
XML_ENTER = b"""<xml><ToUserName>gh_1</ToUserName><FromUserName>oUser_1</FromUserName>
<CreateTime>1714037100</CreateTime><MsgType>event</MsgType><Event>user_enter_tempsession</Event>
<SessionFrom>sessionFromPage</SessionFrom></xml>"""


def push(body: bytes, content_type: str | None = None) -> Push:
    return push_from_fields(parse_body(body, content_type))


# --- well-formed pushes ---------------------------------------------------------------------------

def test_json_sample_keeps_every_digit_of_the_msg_id():
    p = push(JSON_SAMPLE, "application/json")
    assert (p.to_user, p.from_user, p.create_time, p.msg_type) == ("toUser", "fromUser", 1482048670, "text")
    assert p.content == "this is a test"
    assert p.msg_id == "1234567890123456"
    assert p.dedupe_key == "msg:1234567890123456"
    assert p.fields["CreateTime"] == "1482048670"


def test_xml_text_push():
    p = push(XML_TEXT, "text/xml; charset=utf-8")
    assert p.from_user == "o9AgO5Kd5ggOC-bXrbNODIiE3bGY"
    assert p.msg_type == "text"                       # lower-cased
    assert p.content == "健康码为什么是黄码？ <b>&</b>"
    assert p.dedupe_key == "msg:24602305821212345"
    assert p.event is None and p.session_from is None


def test_the_repr_leaves_out_what_the_user_typed():
    assert "this is a test" not in repr(push(JSON_SAMPLE))


def test_event_without_msg_id_dedupes_on_user_and_time():
    p = push(XML_ENTER)
    assert p.msg_type == "event" and p.event == "user_enter_tempsession"
    assert p.session_from == "sessionFromPage"
    assert p.msg_id is None and p.content is None
    assert p.dedupe_key == "evt:oUser_1:1714037100"


def test_the_same_push_twice_has_the_same_key_and_another_one_does_not():
    again = push(XML_ENTER.replace(b"\n", b" "))
    later = push(XML_ENTER.replace(b"1714037100", b"1714037101"))
    assert again.dedupe_key == push(XML_ENTER).dedupe_key != later.dedupe_key


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/octet-stream"])
def test_format_is_sniffed_without_a_useful_content_type(content_type):
    assert push(b"  \n" + JSON_SAMPLE, content_type).msg_id == "1234567890123456"
    assert push(XML_TEXT, content_type).msg_type == "text"


def test_a_utf8_bom_is_accepted():
    assert push(b"\xef\xbb\xbf" + JSON_SAMPLE).from_user == "fromUser"


def test_json_nested_values_are_compact_json_and_null_is_absent():
    body = json.dumps({"FromUserName": "u", "MsgType": "event", "CreateTime": 1, "Event": "x",
                       "ScanCodeInfo": {"ScanType": "qrcode", "ScanResult": "码"}, "List": [1, 2],
                       "Flag": True, "Ratio": 0.5, "Gone": None}, ensure_ascii=False).encode()
    fields = parse_body(body, "application/json")
    assert fields["ScanCodeInfo"] == '{"ScanType":"qrcode","ScanResult":"码"}'
    assert fields["List"] == "[1,2]" and fields["Flag"] == "true" and fields["Ratio"] == "0.5"
    assert "Gone" not in fields


def test_xml_nested_elements_are_left_out():
    body = (b"<xml><FromUserName>u</FromUserName><MsgType>event</MsgType><CreateTime>1</CreateTime>"
            b"<ScanCodeInfo><ScanType>qrcode</ScanType></ScanCodeInfo><Empty/></xml>")
    fields = parse_body(body, "text/xml")
    assert "ScanCodeInfo" not in fields and "ScanType" not in fields
    assert fields["Empty"] == ""


def test_safe_mode_outer_body_and_its_plaintext():
    cipher = WeChatCipher("A" * 43, "wxappid")
    inner = JSON_SAMPLE
    outer = json.dumps({"ToUserName": "gh_1", "Encrypt": cipher.encrypt(inner)}).encode()
    fields = parse_body(outer, "application/json")
    assert encrypted_field(fields) is not None
    with pytest.raises(BadPush):
        push_from_fields(fields)                     # the outer body alone is not a push
    assert push(cipher.decrypt(encrypted_field(fields))).msg_id == "1234567890123456"


def test_encrypted_field_absent_or_blank():
    assert encrypted_field({"FromUserName": "u"}) is None
    assert encrypted_field({"Encrypt": "  "}) is None


# --- refused bodies -------------------------------------------------------------------------------

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<xml><FromUserName>u</FromUserName><MsgType>text</MsgType><CreateTime>1</CreateTime>
<Content>&lol3;</Content></xml>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><FromUserName>u</FromUserName><MsgType>text</MsgType><CreateTime>1</CreateTime>
<Content>&xxe;</Content></xml>"""
DTD_ONLY = b"""<!DOCTYPE xml SYSTEM "http://example.invalid/x.dtd">
<xml><FromUserName>u</FromUserName></xml>"""


@pytest.mark.parametrize("body,content_type", [
    (BOMB, "text/xml"), (EXTERNAL, "text/xml"), (DTD_ONLY, None),
    (b"<xml><FromUserName>u</FromUserName>", "text/xml"),                   # not closed
    (b"<root><FromUserName>u</FromUserName></root>", "text/xml"),           # wrong root
    (b"<xml><A>1</A><A>2</A></xml>", "text/xml"),                           # a field twice
    (b'{"A": 1, "A": 2}', "application/json"),
    (b"[1, 2]", "application/json"), (b'"text"', "application/json"), (b"null", "application/json"),
    (b"{not json", "application/json"), (b"\xff\xfe{}", "application/json"),
    (b"[" * 50_000, "application/json"),                                   # deep nesting
    (b"hello", None), (b"", None), (b"   ", None),
    (JSON_SAMPLE, "text/xml"),                                              # the type decides
])
def test_refused_bodies(body, content_type):
    with pytest.raises(BadPush):
        parse_body(body, content_type)


@pytest.mark.parametrize("fields", [
    {"MsgType": "text", "CreateTime": "1"},
    {"FromUserName": " ", "MsgType": "text", "CreateTime": "1"},
    {"FromUserName": "u", "CreateTime": "1"},
    {"FromUserName": "u", "MsgType": "text"},
    {"FromUserName": "u", "MsgType": "text", "CreateTime": "1.5"},
    {"FromUserName": "u", "MsgType": "text", "CreateTime": "-1"},
    {"FromUserName": "u", "MsgType": "text", "CreateTime": "１２"},
    {"FromUserName": "u", "MsgType": "text", "CreateTime": "1" * 40},
])
def test_refused_fields(fields):
    with pytest.raises(BadPush):
        push_from_fields(fields)


def test_body_and_field_size_bounds():
    big_field = json.dumps({"FromUserName": "u", "MsgType": "text", "CreateTime": 1, "Content": "x" * 9000})
    with pytest.raises(BadPush, match="field"):
        parse_body(big_field.encode(), "application/json")
    assert parse_body(big_field.replace("x" * 9000, "码" * 2700).encode(), None)["Content"]   # 8100 bytes
    with pytest.raises(BadPush, match="field"):
        parse_body(big_field.replace("x" * 9000, "码" * 2800).encode(), None)                   # 8400 bytes
    with pytest.raises(BadPush, match="large"):
        parse_body(b" " * (MAX_BODY_BYTES + 1), None)


def test_errors_never_echo_the_body():
    secret = "350102199001011234"
    for body, ctype in [(f'{{"FromUserName": "{secret}"'.encode(), "application/json"),
                        (f"<xml><FromUserName>{secret}</xml>".encode(), "text/xml"),
                        (f'{{"FromUserName":"u","MsgType":"t","CreateTime":"{secret}x"}}'.encode(), None)]:
        with pytest.raises(BadPush) as caught:
            push_from_fields(parse_body(body, ctype))
        assert secret not in str(caught.value)


# --- replies --------------------------------------------------------------------------------------

def test_passive_reply_round_trips_hostile_content():
    content = "a]]>b <script>&amp; ]]]]> 健康码\x00\x07"
    xml = passive_text_reply_xml("oUser_1", "gh_1", content, 1714037059)
    root = ElementTree.fromstring(xml)
    assert root.tag == "xml"
    assert [child.tag for child in root] == ["ToUserName", "FromUserName", "CreateTime", "MsgType", "Content"]
    assert root.findtext("Content") == "a]]>b <script>&amp; ]]]]> 健康码"    # control bytes dropped
    assert (root.findtext("ToUserName"), root.findtext("FromUserName")) == ("oUser_1", "gh_1")
    assert root.findtext("CreateTime") == "1714037059" and root.findtext("MsgType") == "text"


def test_success_constant():
    assert SUCCESS == success == "success"
