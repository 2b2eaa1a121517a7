"""WeChat pushes: the body (XML or JSON) to flat fields, the fields to a Push, the passive reply.

    parse_body(body, content_type) -> dict[str, str]   raises BadPush
    push_from_fields(fields) -> Push                   raises BadPush
    encrypted_field(fields) -> str | None              the `Encrypt` of safe and compatible mode
    passive_text_reply_xml(to_user, from_user, content, create_time) -> str
    SUCCESS = success = "success"                      the answer that stops WeChat's retries

In safe mode the outer body is only ToUserName + Encrypt: parse it, check msg_signature over
Encrypt (crypto.signature_ok), decrypt, parse the plaintext with the same content type, then
push_from_fields. So parse_body checks the shape and push_from_fields the push's own fields.
A BadPush's message names what is wrong, never what the body said.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as _defused_fromstring

MAX_BODY_BYTES = 64 * 1024
MAX_FIELD_BYTES = 8 * 1024
SUCCESS = success = "success"

_CREATE_TIME = re.compile(r"^[0-9]{1,12}$")
# Characters XML 1.0 cannot carry at all, not even in CDATA.
_NOT_XML_CHARS = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class BadPush(ValueError):
    """A body that is not a push we can take; answer 400 and do not process it."""


@dataclass(frozen=True)
class Push:
    to_user: str
    from_user: str              # the user's openid
    create_time: int
    msg_type: str               # lower-cased: text, image, miniprogrampage, event …
    content: str | None = field(repr=False)      # what the user typed: kept out of logged reprs
    msg_id: str | None
    event: str | None           # as WeChat spells it (user_enter_tempsession, subscribe, CLICK …)
    session_from: str | None
    fields: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def dedupe_key(self) -> str:
        # Events carry no MsgId; WeChat's retries of one repeat FromUserName and CreateTime.
        if self.msg_id:
            return f"msg:{self.msg_id}"
        return f"evt:{self.from_user}:{self.create_time}"


# --- parsing ---------------------------------------------------------------------------------------

def parse_body(body: bytes, content_type: str | None) -> dict[str, str]:
    if not isinstance(body, (bytes, bytearray)):
        raise BadPush("body must be bytes")
    if len(body) > MAX_BODY_BYTES:
        raise BadPush("body too large")
    fmt = _format_of(bytes(body), content_type)
    fields = _xml_fields(bytes(body)) if fmt == "xml" else _json_fields(bytes(body))
    for value in fields.values():
        if len(value.encode("utf-8")) > MAX_FIELD_BYTES:
            raise BadPush("a field is too large")
    return fields


def _format_of(body: bytes, content_type: str | None) -> str:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media.endswith("xml"):
        return "xml"
    if media.endswith("json"):
        return "json"
    first = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if first == b"<":
        return "xml"
    if first in (b"{", b"["):
        return "json"
    raise BadPush("body is neither XML nor JSON")


def _xml_fields(body: bytes) -> dict[str, str]:
    root = _parse_xml(body)
    if root.tag != "xml":
        raise BadPush("XML root must be <xml>")
    fields: dict[str, str] = {}
    for child in root:
        # Nested elements (ScanCodeInfo, SendPicsInfo …) are not part of a push we answer.
        if not isinstance(child.tag, str) or len(child):
            continue
        if child.tag in fields:
            raise BadPush("a field appears twice")
        fields[child.tag] = child.text or ""
    return fields


def _parse_xml(body: bytes) -> Element:
    try:
        # No DTD at all: it is how entity bombs and external entities get in, and pushes have none.
        return _defused_fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise BadPush("XML with a DTD or entities") from None
    except (ParseError, ValueError, SyntaxError, LookupError):
        raise BadPush("body is not well-formed XML") from None


def _json_fields(body: bytes) -> dict[str, str]:
    try:
        data = json.loads(body.decode("utf-8-sig"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BadPush("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadPush("JSON body must be an object")
    return {key: text for key, value in data.items() if (text := _json_text(value)) is not None}


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise BadPush("a field appears twice")
    return dict(pairs)


def _json_text(value: object) -> str | None:
    """The field as WeChat's XML would carry it: numbers as digits (MsgId keeps every digit),
    booleans as true/false, nested values as compact JSON, null as absent."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- the push --------------------------------------------------------------------------------------

def push_from_fields(fields: dict[str, str]) -> Push:
    from_user = _required(fields, "FromUserName")
    msg_type = _required(fields, "MsgType").lower()
    create_time = _required(fields, "CreateTime")
    if not _CREATE_TIME.match(create_time):
        raise BadPush("CreateTime is not an integer")
    return Push(to_user=(fields.get("ToUserName") or "").strip(), from_user=from_user,
                create_time=int(create_time), msg_type=msg_type, content=fields.get("Content"),
                msg_id=_optional(fields, "MsgId"), event=_optional(fields, "Event"),
                session_from=fields.get("SessionFrom"), fields=dict(fields))


def _required(fields: dict[str, str], name: str) -> str:
    value = _optional(fields, name)
    if value is None:
        raise BadPush(f"{name} is missing")
    return value


def _optional(fields: dict[str, str], name: str) -> str | None:
    value = (fields.get(name) or "").strip()
    return value or None


def encrypted_field(fields: dict[str, str]) -> str | None:
    return _optional(fields, "Encrypt")


# --- replies ---------------------------------------------------------------------------------------

def passive_text_reply_xml(to_user: str, from_user: str, content: str, create_time: int) -> str:
    """The official account's passive text reply (to_user: the user's openid, from_user: ours)."""
    return ("<xml>"
            f"<ToUserName>{_cdata(to_user)}</ToUserName>"
            f"<FromUserName>{_cdata(from_user)}</FromUserName>"
            f"<CreateTime>{int(create_time)}</CreateTime>"
            "<MsgType><![CDATA[text]]></MsgType>"
            f"<Content>{_cdata(content)}</Content>"
            "</xml>")


def _cdata(text: str) -> str:
    # "]]>" would end the section early: close before its ">" and reopen.
    safe = _NOT_XML_CHARS.sub("", text).replace("]]>", "]]]]><![CDATA[>")
    return f"<![CDATA[{safe}]]>"
