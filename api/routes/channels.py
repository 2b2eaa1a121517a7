"""The channels' routes: WeChat and Alipay pushes, Alipay mini-program sign-in, admin links.

    GET  /channels/wechat                      URL verification → echostr (text/plain)
    POST /channels/wechat                      a push → "success" within WeChat's 5 s
    POST /channels/alipay                      生活号 gateway notifications → the signed XML answer
    POST /api/v1/channels/alipay/session       {"auth_code"} → {"token", "signed_in"}
    POST /api/v1/admin/channel-links           {"channel", "external_id", "user_id"} (admin, audited)
    DELETE /api/v1/admin/channel-links/{channel}/{external_id}

Each push route verifies, stores the push in the inbox (channels/inbox.py) and answers; the
inbox worker answers the user out of band. A channel whose credentials are not set answers 404."""
from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field, StringConstraints

from api import openapi
from api.deps import SettingsDep, require_admin
from api.errors import ApiError, ErrorResponse
from channels import identity, links

router = APIRouter(tags=["channels"])


ErrorOut = ErrorResponse         # the one error shape (api.errors), declared once in /openapi.json


_WHAT = {400: "A body or field that does not parse (`bad_body`, `bad_ciphertext`, …).",
         401: "No signature (`missing_signature`), or no admin token.",
         403: "A signature that does not verify, a stale timestamp, a ciphertext or notification for another app.",
         404: "The channel is not configured (`channel_off`), or no such link.",
         413: "The body is over the size limit.",
         422: "Invalid input.",
         502: "The platform's gateway refused the call or answered with a bad signature.",
         503: "The platform or the store is unreachable; retry."}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorOut, "description": _WHAT[s]} for s in statuses}


def _channels(request: Request):
    return request.app.state.channels


def _refused(exc) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message)


# --- WeChat -------------------------------------------------------------------------------------
def _wechat_on(settings) -> None:
    if not settings.wechat_enabled:
        raise ApiError(404, "channel_off", "WeChat is not configured (HC_WECHAT_TOKEN, HC_WECHAT_APPID)")


def _wechat_signed(settings, query) -> None:
    """The URL's `signature` (over the token, `timestamp` and `nonce`; WeChat sends it in every
    mode) and the timestamp's age, checked before a byte of the body is parsed: 401 without
    it, 403 when it does not match or is stale. Safe mode's msg_signature is checked after."""
    from channels.wechat import service

    try:
        service._check(query.get("signature"), settings.wechat_token, query.get("timestamp"), query.get("nonce"))
        service._fresh(settings, query.get("timestamp"))
    except service.PushRefused as exc:
        raise _refused(exc) from None


def _query(name: str, description: str, required: bool = True, **schema) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": {"type": "string", "maxLength": 256, **schema}}


WECHAT_SIGNED = [_query("signature", "sha1 of the sorted token, timestamp and nonce (hex)"),
                 _query("timestamp", "seconds since the epoch, as WeChat sent it", pattern="^[0-9]{1,12}$"),
                 _query("nonce", "WeChat's random string")]
WECHAT_VERIFY = {"parameters": [*WECHAT_SIGNED, _query("echostr", "answered as is when the signature matches")]}
WECHAT_PUSH = {
    "parameters": [*WECHAT_SIGNED,
                   _query("openid", "the sender's openid (official accounts)", required=False),
                   _query("encrypt_type", "`aes` in safe mode", required=False, enum=["aes", "raw"]),
                   _query("msg_signature", "safe mode: sha1 over token, timestamp, nonce and the ciphertext",
                          required=False)],
    "requestBody": {"required": True, "description": "the push as WeChat sends it (XML, or JSON for a "
                                                     "mini-program set to JSON); safe mode: the `Encrypt` envelope",
                    "content": {"text/xml": {"schema": {"type": "string"}},
                                "application/json": {"schema": {"type": "object"}}}},
}


@router.get("/channels/wechat", response_class=PlainTextResponse, openapi_extra=WECHAT_VERIFY,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "echostr, as sent"},
                       **errors(400, 401, 403, 404)})
async def wechat_verify(request: Request, settings: SettingsDep):
    """WeChat's server URL check (signature over token, timestamp, nonce)."""
    from channels.wechat import service

    _wechat_on(settings)
    try:
        return PlainTextResponse(service.verify_url(settings, dict(request.query_params)))
    except service.PushRefused as exc:
        raise _refused(exc) from None


@router.post("/channels/wechat", response_class=PlainTextResponse, openapi_extra=WECHAT_PUSH,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "`success`"},
                        **errors(400, 401, 403, 404, 413, 503)})
async def wechat_push(request: Request, settings: SettingsDep):
    """A push (XML or JSON; plaintext, compatible or safe mode). Stored, then `success`; the
    answer follows through the customer-service API."""
    from channels.wechat import service

    from channels.wechat.messages import MAX_BODY_BYTES

    _wechat_on(settings)
    _wechat_signed(settings, request.query_params)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:     # a push is a few hundred bytes; read no further
        raise ApiError(413, "body_too_large", f"a push is at most {MAX_BODY_BYTES} bytes")
    try:
        accepted = await asyncio.to_thread(service.accept_push, settings, dict(request.query_params), body,
                                           request.headers.get("content-type"))
    except service.PushRefused as exc:
        raise _refused(exc) from None
    if accepted.new:
        _channels(request).wake()
    return PlainTextResponse("success")


# --- Alipay -------------------------------------------------------------------------------------
def _alipay_on(settings) -> None:
    if not settings.alipay_enabled:
        raise ApiError(404, "channel_off", "Alipay is not configured (HC_ALIPAY_APP_ID, keys)")


ALIPAY_NOTIFY = {"requestBody": {
    "required": True,
    "description": "the gateway's form fields, RSA2-signed (every field but `sign`), in the form's `charset`",
    "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object",
        "properties": {"service": {"type": "string", "enum": ["alipay.service.check",
                                                              "alipay.mobile.public.message.notify"]},
                       "sign": {"type": "string", "maxLength": 1024},
                       "sign_type": {"type": "string", "enum": ["RSA2"]},
                       "charset": {"type": "string", "enum": ["GBK", "UTF-8"]},
                       "app_id": {"type": "string", "maxLength": 128},
                       # Characters, well inside the byte limits (64 KiB of biz_content, 160 KiB of
                       # form) however each is encoded: a message's XML is a few hundred bytes.
                       "biz_content": {"type": "string", "maxLength": 8192}},
        "required": ["service", "sign", "sign_type", "charset"],
        "additionalProperties": False}}}}}


@router.post("/channels/alipay", openapi_extra=ALIPAY_NOTIFY,
             responses={200: {"content": {"text/xml": {"schema": {"type": "string"}}},
                              "description": "the signed answer Alipay expects"},
                        **errors(400, 401, 403, 404, 413, 503)})
async def alipay_notify(request: Request, settings: SettingsDep):
    """生活号 gateway notifications (form fields, RSA2): `alipay.service.check` and messages."""
    from channels.alipay import service

    from channels.alipay import notify

    _alipay_on(settings)
    # The fields as signed: decoded in the form's own charset (GBK by default), not as a UTF-8
    # form parser would guess them.
    try:
        fields = notify.decode_form(await request.body(), request.url.query)
    except notify.BadNotification as exc:
        raise ApiError(400, "bad_body", str(exc)) from None
    try:
        accepted = await asyncio.to_thread(service.accept_notification, settings, fields)
    except service.NotificationRefused as exc:
        raise _refused(exc) from None
    if accepted.new:
        _channels(request).wake()
    return Response(accepted.reply.encode("gbk"), media_type=notify.RESPONSE_MEDIA_TYPE)


AuthCode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256,
                                            pattern=r"^[A-Za-z0-9_\-]+$")]


class AlipaySessionIn(BaseModel):
    auth_code: AuthCode


class AlipaySessionOut(BaseModel):
    token: str
    token_id: str = Field(description="the session's public id (to list or revoke it)")
    signed_in: bool
    expires_at: str


# The mini-program's code exchange is an OAuth 2.0 authorization-code token endpoint: an auth code
# that Alipay does not know (made up, used, expired) is refused with 400 `auth_code_invalid`.
openapi.EXTRA_SECURITY["alipayAuthCode"] = {
    "type": "oauth2",
    "description": "Alipay mini-program sign-in: `my.getAuthCode` gives a code, POST /api/v1/channels/alipay/session "
                   "exchanges it for a user session token (a bearer token for /api/v1/chat)",
    "flows": {"authorizationCode": {"authorizationUrl": "https://openauth.alipay.com/oauth2/publicAppAuthorize.htm",
                                    "tokenUrl": "/api/v1/channels/alipay/session", "scopes": {}}}}


@router.post("/api/v1/channels/alipay/session", response_model=AlipaySessionOut,
             responses=errors(400, 404, 422, 502, 503))
async def alipay_session(body: AlipaySessionIn, request: Request, settings: SettingsDep):
    """The mini-program's sign-in: `my.getAuthCode`'s code exchanged at the gateway for the Alipay
    user id; a session token for /api/v1/chat, signed in when that id is linked to an account."""
    from channels.alipay import service

    _alipay_on(settings)
    try:
        return await asyncio.to_thread(service.session_for_code, settings, _channels(request).alipay_gateway,
                                       body.auth_code)
    except service.NotificationRefused as exc:
        raise _refused(exc) from None


# --- links (admin) ------------------------------------------------------------------------------
ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=identity.EXTERNAL_ID.pattern)]


class LinkIn(BaseModel):
    channel: Literal["wechat", "alipay"]
    external_id: ExternalId
    user_id: str = Field(min_length=1, max_length=128)


class LinkOut(BaseModel):
    channel: str
    external_id: str
    user_id: str
    status: str = Field(description="linked | replaced | unchanged")


admin = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@admin.post("/channel-links", response_model=LinkOut, responses=errors(401, 403, 422, 503))
async def link(body: LinkIn):
    """Bind a WeChat openid or an Alipay user id to an account (audited): that channel user then
    talks to the bot signed in as the account."""
    status = await asyncio.to_thread(links.link, body.channel, body.external_id, body.user_id, "admin")
    return LinkOut(channel=body.channel, external_id=body.external_id, user_id=body.user_id, status=status)


@admin.delete("/channel-links/{channel}/{external_id}", status_code=204, responses=errors(401, 403, 404, 422, 503))
async def unlink(channel: Annotated[Literal["wechat", "alipay"], Path()], external_id: Annotated[str, Path(max_length=128)]):
    """Remove a link (audited): the channel user is anonymous again."""
    if not await asyncio.to_thread(links.unlink, channel, external_id, "admin"):
        raise ApiError(404, "not_found", "no such link")
    return Response(status_code=204)


routers = (router, admin)
