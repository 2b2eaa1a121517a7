"""Alipay end to end: 生活号 notifications verified and accepted (the route), handled (the inbox
worker), answered (delivery's sender for "alipay"), and the mini-program sign-in.

    accept_notification(settings, form)            → Accepted(new, reply)   (POST /channels/alipay)
    AlipayHandler(rasa, settings)                  the worker's handler for "alipay" items
    sender(gateway)                                delivery.register_sender("alipay", sender(gateway))
    session_for_code(settings, gateway, code)      → {"token", "signed_in", "expires_at"}

Refusals are NotificationRefused(status, code): 401 without a signature, 403 for one that does
not verify or a notification for another app, 400 for fields that do not parse, 502/503 when the
gateway refuses or cannot be reached. Nothing refused is stored or processed."""
from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Callable, Mapping

from cryptography.hazmat.primitives import serialization

import delivery
from accounts import service as accounts
from assistant.chat import language_signal
from assistant.rasa_client import RasaClient
from channels import identity, inbox, links, turns
from channels.alipay import notify, sign
from channels.alipay.gateway import AlipayGateway, GatewayError, GatewayUnavailable
from channels.wechat.api import render_choices, split_text
from core.logs import log_event
from core.pii import conversation_ref
from core.settings import Settings

log = logging.getLogger("hc.channels.alipay")
CHANNEL = "alipay"
CHECK = "alipay.service.check"
ENTER_EVENTS = {"follow", "enter"}


class NotificationRefused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Accepted:
    new: bool
    reply: str                # the signed XML answer the gateway expects


def app_public_key_b64(private_key_pem: str) -> str:
    """Our public key as Alipay's console shows it (base64 of the SPKI DER, no PEM lines):
    what `alipay.service.check` must answer with."""
    public = sign.load_private_key(private_key_pem).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def _kind(n: notify.Notification) -> str | None:
    msg_type = (n.msg_type or "").lower()
    if msg_type == "text":
        return "text"
    if msg_type == "event":
        event = (n.fields.get("EventType") or "").lower()
        return "enter" if event in ENTER_EVENTS else None
    return "other"


def accept_notification(settings: Settings, form: Mapping[str, str]) -> Accepted:
    if not form.get("sign"):
        raise NotificationRefused(401, "missing_signature", "sign required")
    public_key = sign.load_public_key(settings.alipay_public_key)
    if not sign.verify_notification(dict(form), public_key, sign.NOTIFY_GATEWAY):
        raise NotificationRefused(403, "bad_signature", "signature does not verify")
    try:
        n = notify.parse_notification(form)
    except notify.BadNotification as exc:
        raise NotificationRefused(400, "bad_body", str(exc)) from None
    if n.app_id and n.app_id != settings.alipay_app_id:
        raise NotificationRefused(403, "wrong_app", "notification for another app")
    private_key = sign.load_private_key(settings.alipay_private_key)
    if n.service == CHECK:
        return Accepted(False, notify.check_response(app_public_key_b64(settings.alipay_private_key), private_key))
    ack = notify.ack_response(private_key, n)
    kind = _kind(n)
    if kind is None or not identity.valid_external_id(n.from_user_id):
        return Accepted(False, ack)
    user = identity.resolve(CHANNEL, n.from_user_id)
    payload = {"user": n.from_user_id, "user_id": user.user_id, "kind": kind,
               "text": (n.content or "") if kind == "text" else ""}
    row = inbox.accept(CHANNEL, notify.dedupe_key(n), user.conversation_id, payload)
    log_event(log, "alipay_message", kind=kind, new=row is not None, conversation=conversation_ref(user.conversation_id))
    return Accepted(row is not None, ack)


def AlipayHandler(rasa: Callable[[], RasaClient], settings: Settings) -> turns.InboxHandler:
    """The worker's handler for "alipay" items."""
    return turns.InboxHandler(CHANNEL, rasa, settings, id_field="user")


def sender(gateway: AlipayGateway):
    """delivery's sender for Alipay conversations (alipay.open.public.message.custom.send)."""

    def send(conversation_id: str, view: delivery.MessageView) -> None:
        to_user = identity.external_id_of(conversation_id, CHANNEL)
        if to_user is None:
            return
        text = render_choices(view.text, list(view.buttons), language_signal(view.text) or "zh")
        try:
            for piece in split_text(text):
                gateway.send_text(to_user, piece)
        except GatewayError as exc:
            raise delivery.Undeliverable(f"alipay {exc.code} {exc.sub_code or ''}".strip()[:64]) from None
        except GatewayUnavailable:
            raise delivery.Undeliverable("alipay unreachable") from None
        except sign.SignatureInvalid:
            raise delivery.Undeliverable("alipay bad response signature") from None

    return send


def session_for_code(settings: Settings, gateway: AlipayGateway, auth_code: str) -> dict:
    try:
        found = gateway.oauth_token(auth_code)
    except GatewayError as exc:
        # A bad or used code is the caller's (400); any other refusal is ours or the gateway's.
        if exc.sub_code == "isv.code-invalid":
            raise NotificationRefused(400, "auth_code_invalid", "the auth code is invalid or used") from None
        raise NotificationRefused(502, "gateway_refused", "the Alipay gateway refused the call") from None
    except sign.SignatureInvalid:
        raise NotificationRefused(502, "bad_gateway_signature", "the gateway's answer does not verify") from None
    except GatewayUnavailable:
        raise NotificationRefused(503, "gateway_unavailable", "the Alipay gateway is unreachable") from None
    alipay_user = str(found.get("user_id") or "")
    if not identity.valid_external_id(alipay_user):
        raise NotificationRefused(502, "bad_gateway_answer", "the gateway gave no user id")
    user_id = links.user_for(CHANNEL, alipay_user)
    issued = accounts.issue_anonymous_session() if user_id is None else accounts.issue_session(user_id)
    log_event(log, "alipay_session", signed_in=user_id is not None, external=conversation_ref(alipay_user),
              session=issued.token_id)
    return {"token": issued.token, "token_id": issued.token_id, "signed_in": user_id is not None,
            "expires_at": issued.expires_at.isoformat()}
