"""A local stand-in for api.weixin.qq.com: the access token and customer-service messages, for
tests and for trying the WeChat channel on a laptop (point HC_WECHAT_API_BASE at it).

    with running("wx_appid", "secret") as wx:          # a free port on 127.0.0.1, daemon thread
        api = WeChatApi(wx.base_url, "wx_appid", "secret", MemoryTokenCache())
        ...
        wx.sends()                                      # the custom/send bodies that were accepted
        wx.calls("stable_token")                        # every call: path, query, body, time, errcode
        wx.fail_next(45015)                             # the next custom/send answers 45015
        wx.expire_tokens()                              # every token issued so far answers 42001
        wx.delay_s = 2.0                                # answer slowly (timeouts)

    python -m tools.fake_wechat --port 8090 --appid wx_appid --secret secret   (prints each call)

stable_token behaves like WeChat's: without force_refresh it hands back the current token with
what is left of its life; with it, a new token, and the older ones stop working. Recorded calls
never hold a token or the secret: the query's access_token becomes "<valid>", "<expired>" or
"<unknown>", the body's secret "<right>" or "<wrong>".
"""
from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlsplit

TOKEN_LIFE_S = 7200
TOKEN_PATH = "/cgi-bin/stable_token"
SEND_PATH = "/cgi-bin/message/custom/send"
TYPING_PATH = "/cgi-bin/message/custom/business/typing"
ERRMSG = {0: "ok", 40001: "invalid credential, access_token is invalid or not latest",
          40013: "invalid appid", 40125: "invalid appsecret", 41001: "access_token missing",
          42001: "access_token expired", 44002: "empty post data", 45015: "response out of time limit",
          45047: "out of response count limit", 47001: "data format error"}


@dataclass
class Call:
    path: str
    query: dict[str, str]
    body: Any
    at: float
    errcode: int = 0


@dataclass
class _Failure:
    errcode: int
    count: int
    path_suffix: str


@dataclass
class _Token:
    expires_at: float
    revoked: bool = False


@dataclass
class FakeWeChat:
    appid: str
    secret: str
    host: str = "127.0.0.1"
    port: int = 0
    delay_s: float = 0.0
    verbose: bool = False
    _calls: list[Call] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)
    _tokens: dict[str, _Token] = field(default_factory=dict)
    _current: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    # --- control ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, errcode: int, count: int = 1, path_suffix: str = "custom/send") -> None:
        with self._lock:
            self._failures.append(_Failure(errcode, count, path_suffix))

    def expire_tokens(self) -> None:
        with self._lock:
            for token in self._tokens.values():
                token.expires_at = min(token.expires_at, time.time() - 1)

    def calls(self, path_suffix: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if path_suffix is None or c.path.endswith(path_suffix)]

    def sends(self) -> list[dict]:
        """The custom/send bodies WeChat would have delivered (answered errcode 0)."""
        return [c.body for c in self.calls(SEND_PATH) if c.errcode == 0]

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
            self._failures.clear()

    # --- running ---------------------------------------------------------------------------------
    def start(self) -> "FakeWeChat":
        self._server = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        # A short poll so that stop() (each test's teardown) returns at once.
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="fake-wechat", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "FakeWeChat":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- answering -------------------------------------------------------------------------------
    def answer(self, path: str, query: dict[str, str], body: Any) -> tuple[int, dict]:
        """(HTTP status, JSON answer) for one call, recorded."""
        if self.delay_s:
            self._stopping.wait(self.delay_s)
        with self._lock:
            status, reply, recorded_query, recorded_body = self._answer_locked(path, query, body)
            errcode = reply.get("errcode", 0)
            self._calls.append(Call(path, recorded_query, recorded_body, time.time(), errcode))
        if self.verbose:
            shown = {**reply, "access_token": "<issued>"} if "access_token" in reply else reply
            print(json.dumps({"path": path, "query": recorded_query, "body": recorded_body, "answer": shown},
                             ensure_ascii=False), flush=True)
        return status, reply

    def _answer_locked(self, path: str, query: dict[str, str], body: Any) -> tuple[int, dict, dict, Any]:
        shown_query = dict(query)
        if "access_token" in query:
            shown_query["access_token"] = f"<{self._token_state(query['access_token'])}>"
        shown_body = _hide_secret(body, self.secret)
        if path not in (TOKEN_PATH, SEND_PATH, TYPING_PATH):
            return 404, _error(-1, "not found"), shown_query, shown_body
        injected = self._take_failure(path)
        if injected is not None:
            return 200, _error(injected), shown_query, shown_body
        if path == TOKEN_PATH:
            return 200, self._stable_token(body), shown_query, shown_body
        return 200, self._message(path, query, body), shown_query, shown_body

    def _take_failure(self, path: str) -> int | None:
        for failure in self._failures:
            if path.endswith(failure.path_suffix) and failure.count > 0:
                failure.count -= 1
                if failure.count == 0:
                    self._failures.remove(failure)
                return failure.errcode
        return None

    def _token_state(self, token: str) -> str:
        issued = self._tokens.get(token)
        if issued is None or issued.revoked:
            return "unknown"
        return "valid" if issued.expires_at > time.time() else "expired"

    def _stable_token(self, body: Any) -> dict:
        if not isinstance(body, dict) or body.get("grant_type") != "client_credential":
            return _error(47001)
        if body.get("appid") != self.appid:
            return _error(40013)
        if body.get("secret") != self.secret:
            return _error(40125)
        if body.get("force_refresh") is not True and self._token_state(self._current or "") == "valid":
            left = self._tokens[self._current].expires_at - time.time()
            return {"access_token": self._current, "expires_in": int(left)}
        return {"access_token": self._issue(), "expires_in": TOKEN_LIFE_S}

    def _issue(self) -> str:
        for token in self._tokens.values():
            token.revoked = True
        self._current = secrets.token_urlsafe(32)
        self._tokens[self._current] = _Token(time.time() + TOKEN_LIFE_S)
        return self._current

    def _message(self, path: str, query: dict[str, str], body: Any) -> dict:
        if "access_token" not in query:
            return _error(41001)
        state = self._token_state(query["access_token"])
        if state != "valid":
            return _error(42001 if state == "expired" else 40001)
        if not isinstance(body, dict) or not body.get("touser"):
            return _error(44002)
        if path == SEND_PATH and not _text_ok(body):
            return _error(47001)
        return _error(0)


def _text_ok(body: dict) -> bool:
    text = body.get("text")
    return body.get("msgtype") == "text" and isinstance(text, dict) and bool(text.get("content"))


def _error(errcode: int, errmsg: str | None = None) -> dict:
    return {"errcode": errcode, "errmsg": errmsg or ERRMSG.get(errcode, "error")}


def _hide_secret(body: Any, secret: str) -> Any:
    if isinstance(body, dict) and "secret" in body:
        return {**body, "secret": "<right>" if body["secret"] == secret else "<wrong>"}
    return body


def _handler_for(fake: FakeWeChat) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            status, reply = fake.answer(url.path, dict(parse_qsl(url.query)), body)
            self._send(status, reply)

        def do_GET(self) -> None:  # noqa: N802
            self._send(404, _error(-1, "use POST"))

        def _send(self, status: int, reply: dict) -> None:
            data = json.dumps(reply, ensure_ascii=False).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass            # the client gave up (a timeout test): nothing to tell it

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass                # the recorded calls (and --verbose's lines) say what happened

    return Handler


@contextmanager
def running(appid: str, secret: str, **options: Any) -> Iterator[FakeWeChat]:
    fake = FakeWeChat(appid, secret, **options).start()
    try:
        yield fake
    finally:
        fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--appid", required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args(argv)
    fake = FakeWeChat(args.appid, args.secret, host=args.host, port=args.port, verbose=True).start()
    print(f"fake WeChat API on {fake.base_url} (HC_WECHAT_API_BASE={fake.base_url})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
