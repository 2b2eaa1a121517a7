"""A local stand-in for Alipay's gateway (openapi.alipay.com/gateway.do), for tests and local tries.

    with running(app_public_key_pem) as fake:      # 127.0.0.1, a free port
        fake.url                                   # point HC_ALIPAY_GATEWAY here
        fake.public_key_pem                        # ... and HC_ALIPAY_PUBLIC_KEY here
        fake.add_auth_code("code-1", "2088000000000001")
        fake.fail_next("40004", "isv.some-failure", count=1, method=None)
        fake.tamper_next_signature()               # the next answer's signature will not verify
        fake.delay_s = 2.0                         # answer late
        fake.calls("alipay.system.oauth.token"), fake.sends(), fake.clear()

    signed_notification(fields, private_key_pem, variant)   a 生活号 notification, signed as Alipay does
    form_body(fields) -> bytes                              ... encoded in its own charset, to POST
    text_biz_content / event_biz_content / check_biz_content    biz_content XML like Alipay's

It checks every request's RSA2 signature with the app's public key (unsigned or wrong → an
`error_response` 40002 `isv.invalid-signature`, as the gateway does) and signs every answer with
its own key pair. `alipay.system.oauth.token` answers like the real one: success without a
`code`, a bad or reused code as `error_response` 40002 `isv.code-invalid`.

    python -m tools.fake_alipay --port 8091 --app-public-key app_public.pem [--auth-code CODE=USER]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from channels.alipay.gateway import beijing_timestamp
from channels.alipay.sign import (
    NotifyVariant,
    charset_encoding,
    load_private_key,
    load_public_key,
    response_key,
    rsa2_sign,
    rsa2_verify,
    sign_content,
)

OAUTH = "alipay.system.oauth.token"
CUSTOM_SEND = "alipay.open.public.message.custom.send"
MAX_REQUEST_BYTES = 1024 * 1024
# The gateway's own wording for its top-level codes.
_MSG = {
    "20000": "Service Currently Unavailable",
    "20001": "Insufficient Token Permissions",
    "40001": "Missing Required Arguments",
    "40002": "Invalid Arguments",
    "40004": "Business Failed",
    "40006": "Insufficient Permissions",
}
# Methods whose failures the real gateway reports under `error_response`, not under their own key.
_ERROR_RESPONSE_METHODS = {OAUTH}


@dataclass
class _Failure:
    code: str
    sub_code: str
    remaining: int
    method: str | None


class _Refusal(Exception):
    def __init__(self, code: str, sub_code: str, sub_msg: str, *, as_error_response: bool = True):
        self.code, self.sub_code, self.sub_msg = code, sub_code, sub_msg
        self.as_error_response = as_error_response


def _pem_private(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def _pem_public(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


class FakeAlipay:
    def __init__(self, app_public_key_pem: str, *, app_id: str | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        self._app_key = load_public_key(app_public_key_pem)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_key_pem = _pem_private(self._key)
        self.public_key_pem = _pem_public(self._key.public_key())
        self.app_id = app_id
        self.delay_s = 0.0
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.clear()

    # --- control ---

    def clear(self) -> None:
        """Forget calls, sends, auth codes, pending failures and tampering; no delay."""
        with self._lock:
            self._codes: dict[str, tuple[str, bool]] = {}
            self._calls: list[dict] = []
            self._sends: list[dict] = []
            self._failures: list[_Failure] = []
            self._tamper = 0
            self.delay_s = 0.0

    def add_auth_code(self, code: str, user_id: str, *, open_id: bool = False) -> None:
        """A one-time auth code; `open_id=True` answers with `open_id` instead of `user_id`."""
        with self._lock:
            self._codes[code] = (user_id, open_id)

    def fail_next(self, code: str, sub_code: str, count: int = 1, method: str | None = None) -> None:
        with self._lock:
            self._failures.append(_Failure(str(code), sub_code, count, method))

    def tamper_next_signature(self, count: int = 1) -> None:
        with self._lock:
            self._tamper += count

    def calls(self, method: str | None = None) -> list[dict]:
        with self._lock:
            return [dict(c) for c in self._calls if method is None or c["method"] == method]

    def sends(self) -> list[dict]:
        with self._lock:
            return [dict(s) for s in self._sends]

    # --- the server ---

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake gateway is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/gateway.do"

    def start(self) -> "FakeAlipay":
        self._stopping.clear()
        self._server = _Server((self._host, self._port), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-alipay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_delay(self) -> None:
        if self.delay_s > 0:
            self._stopping.wait(self.delay_s)

    # --- one request, as text in and text out (no I/O) ---

    def answer(self, params: Mapping[str, str]) -> str:
        method = params.get("method", "")
        signature_ok = params.get("sign_type") == "RSA2" and rsa2_verify(
            sign_content(params), params.get("sign"), self._app_key)
        self._record(method, params, signature_ok)
        try:
            self._check_common(params, signature_ok)
            self._pending_failure(method)
            return self._render(response_key(method), self._dispatch(method, params))
        except _Refusal as refusal:
            key = "error_response" if refusal.as_error_response else response_key(method)
            return self._render(key, {"code": refusal.code, "msg": _MSG.get(refusal.code, "Failed"),
                                      "sub_code": refusal.sub_code, "sub_msg": refusal.sub_msg})

    def _record(self, method: str, params: Mapping[str, str], signature_ok: bool) -> None:
        biz = params.get("biz_content")
        try:
            biz_parsed = json.loads(biz) if biz else None
        except ValueError:
            biz_parsed = None
        entry = {"method": method, "params": {k: v for k, v in params.items() if k != "sign"},
                 "biz_content": biz_parsed, "signature_ok": signature_ok}
        with self._lock:
            self._calls.append(entry)

    def _check_common(self, params: Mapping[str, str], signature_ok: bool) -> None:
        if not signature_ok:
            raise _Refusal("40002", "isv.invalid-signature", "验签出错")
        if not params.get("method"):
            raise _Refusal("40001", "isv.missing-method", "缺少方法名参数")
        if self.app_id is not None and params.get("app_id") != self.app_id:
            raise _Refusal("40002", "isv.invalid-app-id", "无效的AppID参数")
        if params.get("format", "JSON").upper() != "JSON" or params.get("version") != "1.0":
            raise _Refusal("40002", "isv.invalid-parameter", "参数无效")
        if charset_encoding(params.get("charset")) != "utf-8":
            raise _Refusal("40002", "isv.invalid-charset", "字符集错误")
        try:
            datetime.strptime(params.get("timestamp", ""), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise _Refusal("40002", "isv.invalid-timestamp", "非法的时间戳参数") from None

    def _pending_failure(self, method: str) -> None:
        with self._lock:
            for failure in self._failures:
                if failure.remaining > 0 and failure.method in (None, method):
                    failure.remaining -= 1
                    self._failures = [f for f in self._failures if f.remaining > 0]
                    raise _Refusal(failure.code, failure.sub_code, "模拟的失败",
                                   as_error_response=method in _ERROR_RESPONSE_METHODS)

    def _dispatch(self, method: str, params: Mapping[str, str]) -> dict:
        if method == OAUTH:
            return self._oauth(params)
        if method == CUSTOM_SEND:
            return self._custom_send(params)
        raise _Refusal("40002", "isv.invalid-method", "不存在的方法名")

    def _oauth(self, params: Mapping[str, str]) -> dict:
        if params.get("grant_type") != "authorization_code":
            raise _Refusal("40002", "isv.grant-type-invalid", "grant_type参数不正确")
        with self._lock:
            found = self._codes.pop(params.get("code", ""), None)
        if found is None:
            raise _Refusal("40002", "isv.code-invalid", "授权码code无效")
        user_id, as_open_id = found
        return {
            "access_token": "authusrB" + secrets.token_hex(16),
            "auth_start": beijing_timestamp(),
            "expires_in": 1296000,
            "re_expires_in": 2592000,
            "refresh_token": "authusrB" + secrets.token_hex(16),
            ("open_id" if as_open_id else "user_id"): user_id,
        }

    def _custom_send(self, params: Mapping[str, str]) -> dict:
        try:
            biz = json.loads(params.get("biz_content") or "")
        except ValueError:
            raise _Refusal("40002", "isv.invalid-biz-content", "biz_content格式错误",
                           as_error_response=False) from None
        text = biz.get("text") if isinstance(biz, dict) else None
        if not (isinstance(biz, dict) and biz.get("to_user_id") and biz.get("msg_type") == "text"
                and isinstance(text, dict) and text.get("content")):
            raise _Refusal("40004", "isv.invalid-parameter", "参数无效", as_error_response=False)
        with self._lock:
            self._sends.append(biz)
        return {"code": "10000", "msg": "Success"}

    def _render(self, key: str, obj: dict) -> str:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        sign = rsa2_sign(text, self._key)
        with self._lock:
            tamper = self._tamper > 0
            self._tamper -= 1 if tamper else 0
        if tamper:
            # Signed, then changed: what a man in the middle would send.
            text = text[:-1] + ',"tampered":true}'
        return "{" + json.dumps(key) + ":" + text + ',"sign":' + json.dumps(sign) + "}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address) -> None:
        # A client that timed out on a delayed answer has hung up: that is the point, not an error.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def _handler_for(fake: FakeAlipay):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            params = self._params()
            if params is None:
                self._send(400, "bad request")
                return
            fake.wait_delay()
            self._send(200, fake.answer(params))

        def _params(self) -> dict[str, str] | None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST_BYTES:
                return None
            body = self.rfile.read(length).decode("utf-8", "replace")
            pairs = parse_qsl(urlsplit(self.path).query, keep_blank_values=True)
            pairs += parse_qsl(body, keep_blank_values=True)
            keys = [k for k, _ in pairs]
            return dict(pairs) if len(keys) == len(set(keys)) else None

        def _send(self, status: int, text: str) -> None:
            data = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/html;charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
            pass

    return Handler


@contextlib.contextmanager
def running(app_public_key_pem: str, **kwargs) -> Iterator[FakeAlipay]:
    fake = FakeAlipay(app_public_key_pem, **kwargs).start()
    try:
        yield fake
    finally:
        fake.stop()


# --- notifications, the way Alipay sends them ----------------------------------------------------

def signed_notification(fields: Mapping[str, str], private_key_pem: str, variant: NotifyVariant) -> dict:
    """`fields` plus `sign_type` (RSA2 unless given) and `sign`, signed with the gateway's key
    over what `variant` signs, in the fields' own charset."""
    out = {k: v for k, v in fields.items() if k != "sign"}
    out.setdefault("sign_type", "RSA2")
    charset = out.get("charset") or variant.default_charset
    out["sign"] = rsa2_sign(sign_content(out, drop=variant.drop), load_private_key(private_key_pem),
                            charset=charset)
    return out


def form_body(fields: Mapping[str, str]) -> bytes:
    """The form as Alipay posts it: URL-encoded in the charset the fields declare (GBK if none)."""
    encoding = charset_encoding(fields.get("charset") or "GBK") or "gbk"
    return urlencode(dict(fields), encoding=encoding).encode("ascii")


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _biz(**elements: str) -> str:
    inner = "".join(f"<{k}>{v if k == 'Text' else _cdata(v)}</{k}>" for k, v in elements.items())
    return '<?xml version="1.0" encoding="gbk"?><XML>' + inner + "</XML>"


def _now_ms() -> str:
    return str(int(time.time() * 1000))


def check_biz_content(app_id: str, create_time_ms: str | None = None) -> str:
    return _biz(AppId=app_id, FromUserId="", CreateTime=create_time_ms or _now_ms(), MsgType="event",
                EventType="verifygw", ActionParam="", AgreementId="", AccountNo="")


def text_biz_content(app_id: str, from_user_id: str, text: str, *, msg_id: str | None = None,
                     create_time_ms: str | None = None) -> str:
    elements = {"Text": "<Content>" + _cdata(text) + "</Content>", "FromAlipayUserId": from_user_id,
                "AppId": app_id, "MsgType": "text", "CreateTime": create_time_ms or _now_ms()}
    if msg_id:
        elements["MsgId"] = msg_id
    return _biz(**elements)


def event_biz_content(app_id: str, from_user_id: str, event_type: str, *,
                      create_time_ms: str | None = None) -> str:
    return _biz(AppId=app_id, FromAlipayUserId=from_user_id, CreateTime=create_time_ms or _now_ms(),
                MsgType="event", EventType=event_type, ActionParam="", AgreementId="", AccountNo="")


# --- manual runs ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local stand-in for Alipay's open-platform gateway.")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--app-public-key", required=True, help="file with the app's public key (PEM)")
    parser.add_argument("--app-id", default=None, help="refuse calls for another app_id")
    parser.add_argument("--auth-code", action="append", default=[], metavar="CODE=USER_ID")
    args = parser.parse_args(argv)
    with open(args.app_public_key, encoding="utf-8") as f:
        fake = FakeAlipay(f.read(), app_id=args.app_id, host=args.host, port=args.port)
    for pair in args.auth_code:
        code, _, user = pair.partition("=")
        fake.add_auth_code(code, user)
    fake.start()
    print(f"fake Alipay gateway at {fake.url}", file=sys.stderr)
    print(fake.public_key_pem, end="", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
