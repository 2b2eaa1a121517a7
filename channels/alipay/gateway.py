"""Calls to Alipay's open-platform gateway (openapi.alipay.com/gateway.do), signed and verified.

    AlipayGateway(url, app_id, private_key_pem, alipay_public_key_pem, timeout_s=5.0, client=None)
        .call(method, biz_content=None, **params) -> dict     the verified response object
        .oauth_token(auth_code) -> {"user_id", "access_token", "expires_in"}
        .send_text(to_user_id, content) -> dict
    GatewayError(code, sub_code, msg)   Alipay answered, and not with success
    GatewayUnavailable                  network, timeout, non-200, a body that is not Alipay's
    SignatureInvalid                    (from sign) the answer is unsigned or does not verify

Synchronous httpx: the caller runs it in a thread. The common fields, their signing and the
split of the request (common fields and `sign` in the query string, biz fields in the form body)
follow the official SDK, alipay/alipay-sdk-python-all `DefaultAlipayClient.__prepare_request`.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import httpx

from channels.alipay.sign import (
    ResponseMalformed,
    SignatureInvalid,
    load_private_key,
    load_public_key,
    response_text,
    rsa2_sign,
    sign_content,
    verify_response,
)

SUCCESS_CODE = "10000"
# China has had no daylight saving since 1991: a fixed +08:00 needs no tz database.
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
MAX_RESPONSE_BYTES = 1024 * 1024
_COMMON = ("app_id", "method", "format", "charset", "sign_type", "timestamp", "version", "sign")
_OPTIONAL_COMMON = ("app_auth_token", "auth_token", "notify_url", "return_url")

__all__ = ["AlipayGateway", "GatewayError", "GatewayUnavailable", "SignatureInvalid", "beijing_timestamp"]


class GatewayError(Exception):
    """Alipay's answer carried a failure code. `verified` is False only for an unsigned
    `error_response` (some gateway failures come unsigned): a failure either way, nothing to
    process. Alipay's `sub_msg` is kept off the message, which only names codes."""

    def __init__(self, code: str, sub_code: str | None, msg: str | None, *, verified: bool = True):
        self.code, self.sub_code, self.msg, self.verified = code, sub_code, msg, verified
        super().__init__(f"alipay gateway error {code}" + (f" ({sub_code})" if sub_code else ""))


class GatewayUnavailable(Exception):
    """The gateway could not be reached or did not answer like the gateway; worth a retry."""


def beijing_timestamp(now: datetime | None = None) -> str:
    """`yyyy-MM-dd HH:mm:ss` in Beijing time, as the gateway checks it."""
    now = now or datetime.now(timezone.utc)
    return now.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def _biz_json(biz_content: dict) -> str:
    return json.dumps(biz_content, ensure_ascii=False, separators=(",", ":"))


class AlipayGateway:
    def __init__(
        self,
        url: str,
        app_id: str,
        private_key_pem: str,
        alipay_public_key_pem: str,
        timeout_s: float = 5.0,
        client: httpx.Client | None = None,
    ):
        if not url or not app_id:
            raise ValueError("the gateway URL and app_id are required")
        self.url, self.app_id, self.timeout_s = url, app_id, timeout_s
        # Keys parse at construction: a bad setting fails at start-up, not on the first user.
        self._private_key = load_private_key(private_key_pem)
        self._alipay_key = load_public_key(alipay_public_key_pem)
        self._client = client

    # --- the one signed call ---

    def signed_params(self, method: str, biz_content: dict | None = None, **params: str) -> dict[str, str]:
        """Every field of a call, `sign` included (no I/O; the stand-in's tests use it too)."""
        clash = set(params) & set(_COMMON)
        if clash:
            raise ValueError(f"common fields are set by the gateway client: {sorted(clash)}")
        fields = {
            "app_id": self.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": beijing_timestamp(),
            "version": "1.0",
        }
        if biz_content is not None:
            fields["biz_content"] = _biz_json(biz_content)
        fields.update({k: str(v) for k, v in params.items() if v is not None})
        fields["sign"] = rsa2_sign(sign_content(fields), self._private_key)
        return fields

    def call(self, method: str, biz_content: dict | None = None, **params: str) -> dict:
        fields = self.signed_params(method, biz_content, **params)
        raw = self._post(fields)
        response = self._verified(raw, method)
        code = str(response.get("code", SUCCESS_CODE))
        # alipay.system.oauth.token answers success with no `code` at all; failures always carry one.
        if code != SUCCESS_CODE:
            raise GatewayError(code, response.get("sub_code"), response.get("msg"))
        return response

    def _post(self, fields: dict[str, str]) -> str:
        query_keys = set(_COMMON) | set(_OPTIONAL_COMMON)
        query = urlencode({k: v for k, v in fields.items() if k in query_keys})
        body = urlencode({k: v for k, v in fields.items() if k not in query_keys})
        url = self.url + ("&" if "?" in self.url else "?") + query
        headers = {"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"}
        try:
            resp = self._http().post(url, content=body.encode("utf-8"), headers=headers,
                                     timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(f"alipay gateway unreachable: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise GatewayUnavailable(f"alipay gateway answered HTTP {resp.status_code}")
        if len(resp.content) > MAX_RESPONSE_BYTES:
            raise GatewayUnavailable("alipay gateway answer too large")
        try:
            return resp.content.decode("utf-8")
        except UnicodeDecodeError:
            raise GatewayUnavailable("alipay gateway answer is not UTF-8") from None

    def _verified(self, raw: str, method: str) -> dict:
        try:
            return verify_response(raw, method, self._alipay_key)
        except ResponseMalformed:
            raise GatewayUnavailable("alipay gateway answer is not a gateway response") from None
        except SignatureInvalid:
            _raise_if_unsigned_failure(raw, method)
            raise

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # --- the methods the assistant uses ---

    def oauth_token(self, auth_code: str) -> dict:
        """The mini-program sign-in: `my.getAuthCode`'s code → the Alipay user id.

        Apps on the newer open-id scheme get `open_id` instead of `user_id`; either is the
        user's stable id for this app. The access token is a credential: do not store or log it."""
        if not auth_code:
            raise ValueError("auth_code is required")
        response = self.call("alipay.system.oauth.token", grant_type="authorization_code", code=auth_code)
        user_id = response.get("user_id") or response.get("open_id")
        if not user_id:
            code = str(response.get("code", SUCCESS_CODE))
            raise GatewayError(code, "hc.no-user-id", "no user id in the answer")
        return {
            "user_id": str(user_id),
            "access_token": response.get("access_token"),
            "expires_in": _int_or_none(response.get("expires_in")),
        }

    def send_text(self, to_user_id: str, content: str) -> dict:
        """A 生活号 customer-service text message to one user."""
        if not to_user_id or not content:
            raise ValueError("to_user_id and content are required")
        biz = {"to_user_id": to_user_id, "msg_type": "text", "text": {"content": content}}
        return self.call("alipay.open.public.message.custom.send", biz)


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _raise_if_unsigned_failure(raw: str, method: str) -> None:
    """A failure answer with no (or an empty) `sign` is a report we cannot verify; say so as a
    GatewayError (verified=False) rather than a forgery. A sign that is present and wrong stays
    SignatureInvalid."""
    try:
        text, sign = response_text(raw, method)
        response = json.loads(text)
    except (SignatureInvalid, ValueError):
        return
    code = str(response.get("code", SUCCESS_CODE))
    if not sign and code != SUCCESS_CODE:
        raise GatewayError(code, response.get("sub_code"), response.get("msg"), verified=False)
