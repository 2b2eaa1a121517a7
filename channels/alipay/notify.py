"""生活号 message-gateway notifications (POST /channels/alipay) and the signed answers to them.

    decode_form(body, query=b"") -> dict[str, str]      raw bytes in the form's own `charset`
    parse_notification(form) -> Notification              raises BadNotification
    verified_notification(form, public_key) -> Notification   verify (NOTIFY_GATEWAY), then parse
    dedupe_key(n) -> str                                  `MsgId`, else user + time + type (+ event)
    is_fresh(n, max_age_s=300, now=None) -> bool          `CreateTime` (ms) within the window
    check_response(app_public_key, private_key) -> str    the answer to `alipay.service.check`
    ack_response(private_key, n=None) -> str              the answer to a processed message
    RESPONSE_MEDIA_TYPE                                   send both as GBK bytes with this type

Alipay posts form fields `service`, `biz_content` (XML), `charset` (GBK unless it says otherwise),
`sign_type=RSA2`, `sign`; every field but `sign` is signed, in the form's charset, so verify the
fields as decoded from the raw body (decode_form), not as a UTF-8 form parser guessed them.

Sources: Alipay's 服务窗 developer doc (2014: the verifygw check, the follow/unfollow/click
samples, `CreateTime` in ms, the passive reply `<XML><ToUserId/><AppId/><CreateTime/>…`); the
官方生活号 demo's `InAlipayVerifyExecutor` (the check answer's content is
`<success>true</success><biz_content>APP_PUBLIC_KEY</biz_content>`), `AlipayMsgBuildUtil.
buildBaseAckMsg` (a message is answered with `MsgType` `ack`), and the Java SDK's
`AlipaySignature.encryptAndSign` (the signature covers the content *inside* `<response>`, not
the tags). `FromAlipayUserId` (the 2088… user id, what oauth.token and custom.send use) replaced
`FromUserId` from 2016 on; both are read.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import unquote_to_bytes
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as _defused_fromstring

from channels.alipay.sign import (
    NOTIFY_GATEWAY,
    SignatureInvalid,
    charset_encoding,
    public_key_body,
    rsa2_sign,
    verify_notification,
)

SERVICE_CHECK = "alipay.service.check"
SERVICE_MESSAGE = "alipay.mobile.public.message.notify"
SERVICES = (SERVICE_CHECK, SERVICE_MESSAGE)
MAX_BIZ_CONTENT_BYTES = 64 * 1024
MAX_FORM_BYTES = 160 * 1024
MAX_FORM_FIELDS = 32
MAX_ID_CHARS = 128
RESPONSE_CHARSET = "GBK"
RESPONSE_MEDIA_TYPE = "text/xml;charset=GBK"
# The user's masked logon id and name: not needed to answer, so not kept.
_DROPPED_FIELDS = {"UserInfo"}


class BadNotification(ValueError):
    """A notification we cannot take; answer 400. The message names what is wrong, not the data."""


@dataclass(frozen=True)
class Notification:
    service: str
    app_id: str
    from_user_id: str            # "" for alipay.service.check, which comes from no user
    create_time: str             # ms since the epoch, as sent ("" when a check omits it)
    msg_type: str                # "text", "event", "image" … ("" when a check omits it)
    content: str | None          # a text message's text
    msg_id: str | None
    fields: Mapping[str, str] = field(default_factory=dict)   # biz_content, flat: "Text.Content"

    @property
    def event_type(self) -> str | None:
        return self.fields.get("EventType") or None

    @property
    def is_check(self) -> bool:
        return self.service == SERVICE_CHECK


# --- the wire ---------------------------------------------------------------------------------

def decode_form(body: bytes, query: bytes | str = b"") -> dict[str, str]:
    """The form's fields decoded in its declared `charset` (GBK when it declares none).

    The old 服务窗 doc puts the fields in the query string of the POST, today's gateway in the
    body: both are read, and a field given twice is refused."""
    if isinstance(query, str):
        query = query.encode("latin-1", "replace")
    if len(body) + len(query) > MAX_FORM_BYTES:
        raise BadNotification("notification too large")
    pairs = _pairs(query) + _pairs(body)
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise BadNotification("a field is given twice")
    raw = dict(pairs)
    encoding = charset_encoding(raw.get(b"charset", b"").decode("ascii", "replace") or RESPONSE_CHARSET)
    if encoding is None:
        raise BadNotification("unsupported charset")
    try:
        return {k.decode(encoding): v.decode(encoding) for k, v in raw.items()}
    except UnicodeDecodeError:
        raise BadNotification("the form is not in its declared charset") from None


def _pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    # By hand: urllib's parse_qsl on bytes decodes escapes as UTF-8 and cannot give GBK back.
    parts = [p for p in data.split(b"&") if p]
    if len(parts) > MAX_FORM_FIELDS:
        raise BadNotification("too many form fields")
    pairs = []
    for part in parts:
        name, _, value = part.partition(b"=")
        pairs.append((_unquote(name), _unquote(value)))
    return pairs


def _unquote(data: bytes) -> bytes:
    return unquote_to_bytes(data.replace(b"+", b" "))


def parse_notification(form: Mapping[str, str]) -> Notification:
    """The notification in `form` (already verified: see verified_notification)."""
    if any(not isinstance(k, str) or not isinstance(v, str) for k, v in form.items()):
        raise BadNotification("form fields must be text")
    service = form.get("service", "")
    if service not in SERVICES:
        raise BadNotification("unknown service")
    biz = form.get("biz_content", "")
    if not biz.strip():
        if service == SERVICE_CHECK:
            return Notification(service, _id(form.get("app_id", ""), "app_id", required=False),
                                "", "", "", None, None, {})
        raise BadNotification("biz_content is missing")
    fields = parse_biz_content(biz)
    if service == SERVICE_CHECK:
        return _check(service, form, fields)
    return _message(service, form, fields)


def verified_notification(form: Mapping[str, str], public_key) -> Notification:
    """Verify with Alipay's public key (the gateway variant), then parse; SignatureInvalid first,
    so nothing of an unsigned body is even parsed."""
    if not verify_notification(form, public_key, NOTIFY_GATEWAY):
        raise SignatureInvalid("the notification does not verify")
    return parse_notification(form)


# --- biz_content ------------------------------------------------------------------------------

def parse_biz_content(xml_text: str) -> dict[str, str]:
    """`<XML>`'s children as flat fields; one level of nesting as `Parent.Child`.

    defusedxml refuses DTDs, entities and external references, so no bomb or file read can
    come in through it; the size cap bounds the rest."""
    if len(xml_text.encode("utf-8", "replace")) > MAX_BIZ_CONTENT_BYTES:
        raise BadNotification("biz_content too large")
    try:
        root = _defused_fromstring(xml_text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise BadNotification("biz_content has a DTD or entities") from None
    except (ParseError, ValueError):
        raise BadNotification("biz_content is not XML") from None
    if root.tag.upper() != "XML":
        raise BadNotification("biz_content is not an <XML> document")
    fields: dict[str, str] = {}
    for child in root:
        children = list(child)
        if not children:
            _put(fields, child.tag, child.text or "")
        for sub in children:
            _put(fields, f"{child.tag}.{sub.tag}", sub.text or "")
    for name in _DROPPED_FIELDS:
        fields.pop(name, None)
    return fields


def _put(fields: dict[str, str], name: str, value: str) -> None:
    if name in fields:
        raise BadNotification("a biz_content field is given twice")
    fields[name] = value


def _check(service: str, form: Mapping[str, str], fields: dict[str, str]) -> Notification:
    return Notification(
        service=service,
        app_id=_id(fields.get("AppId") or form.get("app_id", ""), "AppId", required=False),
        from_user_id="",
        create_time=_create_time(fields.get("CreateTime", ""), required=False),
        msg_type=fields.get("MsgType", "").strip(),
        content=None,
        msg_id=None,
        fields=fields,
    )


def _message(service: str, form: Mapping[str, str], fields: dict[str, str]) -> Notification:
    msg_type = fields.get("MsgType", "").strip()
    if not msg_type:
        raise BadNotification("MsgType is missing")
    content = _content(fields)
    if msg_type == "text" and content is None:
        raise BadNotification("a text message without Content")
    user = fields.get("FromAlipayUserId", "").strip() or fields.get("FromUserId", "").strip()
    return Notification(
        service=service,
        app_id=_id(fields.get("AppId") or form.get("app_id", ""), "AppId"),
        from_user_id=_id(user, "FromAlipayUserId/FromUserId"),
        create_time=_create_time(fields.get("CreateTime", "")),
        msg_type=msg_type,
        content=content if msg_type == "text" else None,
        msg_id=_id(fields.get("MsgId", ""), "MsgId", required=False) or None,
        fields=fields,
    )


def _content(fields: Mapping[str, str]) -> str | None:
    # Seen in the wild: <Text><Content>…</Content></Text>, a bare <Content>, a leaf <Text>.
    for name in ("Text.Content", "Content", "Text"):
        if name in fields:
            return fields[name]
    return None


def _id(value: str, name: str, *, required: bool = True) -> str:
    value = value.strip()
    if not value and required:
        raise BadNotification(f"{name} is missing")
    if len(value) > MAX_ID_CHARS or any(c.isspace() or ord(c) < 32 for c in value):
        raise BadNotification(f"{name} is malformed")
    return value


def _create_time(value: str, *, required: bool = True) -> str:
    value = value.strip()
    if not value and not required:
        return ""
    if not value.isdigit() or not value.isascii() or len(value) > 16:
        raise BadNotification("CreateTime is missing or malformed")
    return value


# --- what the app does with one ---------------------------------------------------------------

def dedupe_key(n: Notification) -> str:
    """One key per message however often Alipay repeats it."""
    if n.msg_id:
        return n.msg_id
    return "|".join([n.from_user_id, n.create_time, n.msg_type, n.event_type or ""])


def is_fresh(n: Notification, max_age_s: float = 300, now: float | None = None) -> bool:
    """`CreateTime` (ms) within `max_age_s` of now, either way (clock skew); 0 = no check."""
    if max_age_s <= 0:
        return True
    if not n.create_time:
        return False
    created = int(n.create_time) / 1000.0
    return abs((time.time() if now is None else now) - created) <= max_age_s


# --- the answers ------------------------------------------------------------------------------

def _signed_envelope(content: str, private_key, charset: str) -> str:
    sign = rsa2_sign(content, private_key, charset=charset)
    return (f'<?xml version="1.0" encoding="{charset}"?><alipay><response>{content}</response>'
            f"<sign>{sign}</sign><sign_type>RSA2</sign_type></alipay>")


def _app_public_key_text(key) -> str:
    # The console's bare base64 goes back as configured (checked to be a key); a PEM or a key
    # object as its SubjectPublicKeyInfo body, the form the console's key tool shows.
    if isinstance(key, str) and "-----BEGIN" not in key:
        public_key_body(key)
        return "".join(key.replace("\\n", "").split())
    return public_key_body(key)


def check_response(biz_content_reply, private_key, *, charset: str = RESPONSE_CHARSET) -> str:
    """The answer to `alipay.service.check`: the app's public key, signed with its private key.

    `biz_content_reply` is the app public key (bare base64 as in the console, a PEM or a key).
    The answer is ASCII; send it encoded as GBK with RESPONSE_MEDIA_TYPE."""
    content = f"<success>true</success><biz_content>{_app_public_key_text(biz_content_reply)}</biz_content>"
    return _signed_envelope(content, private_key, charset)


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def ack_response(private_key, n: Notification | None = None, *, now_ms: int | None = None,
                 charset: str = RESPONSE_CHARSET) -> str:
    """The answer to a message notification once it is stored.

    With the notification: the 生活号 demo's ack, `<XML><ToUserId/><AppId/><CreateTime/>
    <MsgType>ack</MsgType></XML>` for its user and app. Without: `<success>true</success>`
    with an empty `biz_content`. Both in the signed envelope of the check answer."""
    if n is None or not n.from_user_id:
        return _signed_envelope("<success>true</success><biz_content></biz_content>", private_key, charset)
    created = int(time.time() * 1000) if now_ms is None else int(now_ms)
    content = (f"<XML><ToUserId>{_cdata(n.from_user_id)}</ToUserId><AppId>{_cdata(n.app_id)}</AppId>"
               f"<CreateTime>{created}</CreateTime><MsgType>{_cdata('ack')}</MsgType></XML>")
    return _signed_envelope(content, private_key, charset)
