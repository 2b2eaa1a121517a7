"""WeChat pushes end to end: verify and accept (the route, within WeChat's 5 s), handle (the
inbox worker), send (delivery's sender for the "wechat" channel).

    verify_url(settings, query)                   → echostr          (GET /channels/wechat)
    accept_push(settings, query, body, ctype)     → Accepted         (POST /channels/wechat)
    WeChatHandler(rasa, api, settings)            the worker's handler for "wechat" items
    sender(api)                                   delivery.register_sender("wechat", sender(api))

Refusals are PushRefused(status, code): 401 without a signature, 403 for a wrong one, a stale
timestamp or a ciphertext for another app, 400 for a body that does not parse. Nothing refused
is stored or processed."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import delivery
from assistant.chat import language_signal
from assistant.rasa_client import RasaClient
from channels import identity, inbox, turns
from channels.wechat import api as wx_api
from channels.wechat.crypto import CryptoError, WeChatCipher, WrongAppId, signature_ok
from channels.wechat.messages import BadPush, encrypted_field, parse_body, push_from_fields
from core.logs import log_event
from core.pii import conversation_ref
from core.settings import Settings

log = logging.getLogger("hc.channels.wechat")
CHANNEL = "wechat"
ENTER_EVENTS = {"user_enter_tempsession", "subscribe"}
TEXT_TYPES = {"text"}


class PushRefused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Accepted:
    new: bool                 # False: a repeat of a push already taken (a WeChat retry), or ignored
    kind: str | None = None   # text | enter | other (None: an event nobody answers)


def _fresh(settings: Settings, timestamp: str | None) -> None:
    if settings.wechat_max_age_s <= 0:
        return
    try:
        age = abs(time.time() - int(timestamp or ""))
    except ValueError:
        raise PushRefused(403, "bad_timestamp", "timestamp is not a number") from None
    if age > settings.wechat_max_age_s:
        raise PushRefused(403, "stale_timestamp", "timestamp outside the accepted window")


def _check(given: str | None, *parts: str | None) -> None:
    if not given:
        raise PushRefused(401, "missing_signature", "signature required")
    if any(p is None for p in parts) or not signature_ok(given, *parts):
        raise PushRefused(403, "bad_signature", "signature does not match")


def verify_url(settings: Settings, query: Mapping[str, str]) -> str:
    """WeChat's URL check: the signature over token, timestamp and nonce; answer echostr as is."""
    _check(query.get("signature"), settings.wechat_token, query.get("timestamp"), query.get("nonce"))
    _fresh(settings, query.get("timestamp"))
    echostr = query.get("echostr")
    if not echostr:
        raise PushRefused(400, "missing_echostr", "echostr required")
    return echostr


def _fields(settings: Settings, query: Mapping[str, str], body: bytes, content_type: str | None) -> dict[str, str]:
    """The push's fields, from the plaintext body or (safe and compatible mode) the ciphertext."""
    timestamp, nonce = query.get("timestamp"), query.get("nonce")
    try:
        outer = parse_body(body, content_type)
    except BadPush as exc:
        raise PushRefused(400, "bad_body", str(exc)) from None
    encrypt = encrypted_field(outer)
    if query.get("encrypt_type", "").lower() == "aes" or (encrypt and query.get("msg_signature")):
        if not settings.wechat_aes_key:
            raise PushRefused(400, "aes_not_configured", "safe mode needs HC_WECHAT_AES_KEY")
        if not encrypt:
            raise PushRefused(400, "bad_body", "Encrypt missing")
        _check(query.get("msg_signature"), settings.wechat_token, timestamp, nonce, encrypt)
        _fresh(settings, timestamp)
        try:
            plain = WeChatCipher(settings.wechat_aes_key, settings.wechat_appid or "").decrypt(encrypt)
        except WrongAppId:
            raise PushRefused(403, "wrong_appid", "ciphertext is for another app") from None
        except CryptoError:
            raise PushRefused(400, "bad_ciphertext", "ciphertext does not decrypt") from None
        try:
            return parse_body(plain, None)
        except BadPush as exc:
            raise PushRefused(400, "bad_body", str(exc)) from None
    _check(query.get("signature"), settings.wechat_token, timestamp, nonce)
    _fresh(settings, timestamp)
    return outer


def _kind(msg_type: str, event: str | None) -> str | None:
    if msg_type in TEXT_TYPES:
        return "text"
    if msg_type == "event":
        return "enter" if (event or "").lower() in ENTER_EVENTS else None
    return "other"            # image, voice, video, location, miniprogrampage, a type not yet known


def accept_push(settings: Settings, query: Mapping[str, str], body: bytes, content_type: str | None) -> Accepted:
    fields = _fields(settings, query, body, content_type)
    try:
        push = push_from_fields(fields)
    except BadPush as exc:
        raise PushRefused(400, "bad_body", str(exc)) from None
    if not identity.valid_external_id(push.from_user):
        raise PushRefused(400, "bad_body", "FromUserName is not an openid")
    kind = _kind(push.msg_type, push.event)
    if kind is None:
        return Accepted(False, None)
    user = identity.resolve(CHANNEL, push.from_user)
    payload = {"openid": push.from_user, "user_id": user.user_id, "kind": kind,
               "text": (push.content or "") if kind == "text" else ""}
    row = inbox.accept(CHANNEL, push.dedupe_key, user.conversation_id, payload)
    log_event(log, "wechat_push", kind=kind, new=row is not None, conversation=conversation_ref(user.conversation_id))
    return Accepted(row is not None, kind)


# --- the worker's side ----------------------------------------------------------------------------
def WeChatHandler(rasa: Callable[[], RasaClient], api: wx_api.WeChatApi, settings: Settings) -> turns.InboxHandler:
    """The worker's handler for "wechat" items: typing shown while the bot works."""
    return turns.InboxHandler(CHANNEL, rasa, settings, id_field="openid", typing=api.typing)


UNREACHABLE_RETRIES_S = (0.5, 1.5)


def _send_retrying(api: wx_api.WeChatApi, openid: str, piece: str) -> None:
    """A network blip must not cost the user the answer: two more tries, then undelivered."""
    for pause in (*UNREACHABLE_RETRIES_S, None):
        try:
            api.send_text(openid, piece)
            return
        except wx_api.WeChatUnavailable:
            if pause is None:
                raise
            time.sleep(pause)


def sender(api: wx_api.WeChatApi):
    """delivery's sender for WeChat conversations: buttons as numbered choices, long text split."""

    def send(conversation_id: str, view: delivery.MessageView) -> None:
        openid = identity.external_id_of(conversation_id, CHANNEL)
        if openid is None:
            return
        lang = language_signal(view.text) or "zh"
        text = wx_api.render_choices(view.text, list(view.buttons), lang)
        try:
            for piece in wx_api.split_text(text):
                _send_retrying(api, openid, piece)
        except wx_api.WindowClosed:
            raise delivery.Undeliverable("45015 window over") from None
        except wx_api.TooManyMessages:
            raise delivery.Undeliverable("45047 too many messages") from None
        except wx_api.WeChatUnavailable:
            raise delivery.Undeliverable("wechat unreachable") from None
        except wx_api.WeChatApiError as exc:
            raise delivery.Undeliverable(f"wechat {exc.errcode}") from None

    return send
