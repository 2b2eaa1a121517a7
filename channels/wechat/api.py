"""WeChat's customer-service API: the access token, text messages, the typing indicator, and how
a reply with buttons becomes text (WeChat's customer-service messages have no buttons).

    api = WeChatApi(base_url, appid, secret, cache, timeout_s=5.0)      synchronous: run it in a thread
    api.access_token(force_refresh=False) -> str
    api.send_text(openid, content) -> None        raises WindowClosed, TooManyMessages, WeChatUnavailable,
    api.typing(openid) -> None                           WeChatApiError
    api.close()
    MemoryTokenCache() / RedisTokenCache(redis_client, key_prefix)     the TokenCache protocol
    split_text(text, limit_bytes=2000) -> list[str]
    render_choices(text, buttons, lang) -> str     numbered choices under the text
    choice_payload(reply_text, buttons) -> str | None

The token comes from stable_token and is cached until `expires_in` minus a margin: one fetch per
token's life per deployment (Redis when configured), never one per message. A call answered
40001/42001/40014 (token invalid or expired) refreshes it once, by force, and is tried once more.
Whoever refreshes holds the cache's lock, and whoever waited reuses what it stored, so a burst
of failing calls costs one forced refresh (each forced one invalidates the token every other
instance is using). Neither the token nor the secret ever goes into a log or an exception.
"""
from __future__ import annotations

import json
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import httpx

CachedToken = tuple[str, float]          # (token, the wall-clock time to stop using it)
TOKEN_ERRORS = frozenset({40001, 42001, 40014})
WINDOW_CLOSED, TOO_MANY = 45015, 45047
EXPIRY_MARGIN_S = 300.0


# --- errors ----------------------------------------------------------------------------------------

class WeChatApiError(Exception):
    """A call WeChat refused (errcode) or could not be made (-1). `reason` is short, for
    delivery.Undeliverable and logs; neither carries the token, the secret or the text sent."""

    def __init__(self, errcode: int, errmsg: str = ""):
        super().__init__(f"WeChat errcode {errcode}: {errmsg}" if errmsg else f"WeChat errcode {errcode}")
        self.errcode = errcode
        self.errmsg = errmsg

    @property
    def reason(self) -> str:
        return f"{self.errcode} wechat error"


class WindowClosed(WeChatApiError):
    """45015: the user's last message is more than 48 h old; only they can reopen the window."""

    @property
    def reason(self) -> str:
        return f"{WINDOW_CLOSED} window over"


class TooManyMessages(WeChatApiError):
    """45047: the quota of messages since the user's last one is used up."""

    @property
    def reason(self) -> str:
        return f"{TOO_MANY} too many messages"


class WeChatUnavailable(WeChatApiError):
    """Network error, timeout or an answer that is not WeChat's: worth trying again later."""

    def __init__(self, errmsg: str):
        super().__init__(-1, errmsg)

    @property
    def reason(self) -> str:
        return "wechat unavailable"


def _error_for(errcode: int, errmsg: str) -> WeChatApiError:
    kind = {WINDOW_CLOSED: WindowClosed, TOO_MANY: TooManyMessages}.get(errcode, WeChatApiError)
    return kind(errcode, errmsg)


# --- token caches ----------------------------------------------------------------------------------

Usable = Callable[[CachedToken | None], bool]
Fetch = Callable[[], CachedToken]


class TokenCache(Protocol):
    def get(self) -> CachedToken | None: ...

    def set(self, token: str, expires_at: float) -> None: ...

    def refresh(self, usable: Usable, fetch: Fetch) -> CachedToken:
        """The cached token if usable(it), else fetch() and store its result, with at most one
        caller fetching at a time (across processes for a shared cache); the others wait and
        then reuse what it stored."""
        ...


class MemoryTokenCache:
    """One process's token; the lock makes its threads share one refresh."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: CachedToken | None = None

    def get(self) -> CachedToken | None:
        return self._value

    def set(self, token: str, expires_at: float) -> None:
        self._value = (token, expires_at)

    def refresh(self, usable: Usable, fetch: Fetch) -> CachedToken:
        with self._lock:
            current = self.get()
            if usable(current):
                return current
            fresh = fetch()
            self.set(*fresh)
            return fresh


# Deletes the lock only if it still holds our value: one whose lease ran out may be another's now.
_RELEASE_LUA = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class RedisTokenCache:
    """The deployment's token in Redis (`<key_prefix>:access_token`, expiring with it), refreshed
    under a `SET NX PX` lease: a refresher that dies frees it when the lease runs out."""

    def __init__(self, redis_client: Any, key_prefix: str, *, lock_ttl_s: float = 30.0,
                 poll_s: float = 0.05, wait_s: float | None = None):
        self._redis = redis_client
        self._key = f"{key_prefix}:access_token"
        self._lock_key = f"{self._key}:lock"
        self._lock_ttl_ms = int(lock_ttl_s * 1000)
        self._poll_s = poll_s
        # Long enough to outlive a refresher that died holding the lease.
        self._wait_s = lock_ttl_s + 5.0 if wait_s is None else wait_s

    def get(self) -> CachedToken | None:
        with _redis_errors():
            raw = self._redis.get(self._key)
        return _decode_cached(raw)

    def set(self, token: str, expires_at: float) -> None:
        ttl_ms = int((expires_at - time.time()) * 1000)
        with _redis_errors():
            if ttl_ms <= 0:
                self._redis.delete(self._key)
            else:
                self._redis.set(self._key, json.dumps({"token": token, "expires_at": expires_at}), px=ttl_ms)

    def refresh(self, usable: Usable, fetch: Fetch) -> CachedToken:
        deadline = time.monotonic() + self._wait_s
        while True:
            current = self.get()
            if usable(current):
                return current
            owner = secrets.token_hex(16)
            if self._acquire(owner):
                try:
                    return self._fetch_as_owner(usable, fetch)
                finally:
                    self._release(owner)
            if time.monotonic() >= deadline:
                raise WeChatUnavailable("token refresh by another instance timed out")
            time.sleep(self._poll_s)

    def _fetch_as_owner(self, usable: Usable, fetch: Fetch) -> CachedToken:
        # The previous owner may have stored a token between our get() and our lease.
        current = self.get()
        if usable(current):
            return current
        fresh = fetch()
        self.set(*fresh)
        return fresh

    def _acquire(self, owner: str) -> bool:
        with _redis_errors():
            return bool(self._redis.set(self._lock_key, owner, nx=True, px=self._lock_ttl_ms))

    def _release(self, owner: str) -> None:
        with _redis_errors():
            self._redis.eval(_RELEASE_LUA, 1, self._lock_key, owner)


@contextmanager
def _redis_errors() -> Iterator[None]:
    import redis

    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise WeChatUnavailable(f"token cache unavailable ({type(exc).__name__})") from None


def _decode_cached(raw: bytes | str | None) -> CachedToken | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return str(data["token"]), float(data["expires_at"])
    except (ValueError, TypeError, KeyError):
        return None          # unreadable: as if empty, so it gets replaced


# --- the client ------------------------------------------------------------------------------------

def _fresh(cached: CachedToken | None) -> bool:
    return cached is not None and bool(cached[0]) and cached[1] > time.time()


class WeChatApi:
    def __init__(self, base_url: str, appid: str, secret: str, cache: TokenCache, timeout_s: float = 5.0,
                 client: httpx.Client | None = None):
        self._base = base_url.rstrip("/")
        self._appid = appid
        self._secret = secret
        self._cache = cache
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=httpx.Timeout(timeout_s))
        # Per request too, so a client passed in (tests, a shared pool) keeps our short timeouts.
        self._timeout = httpx.Timeout(timeout_s)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # token
    def access_token(self, force_refresh: bool = False) -> str:
        current = self._cache.get()
        if not force_refresh and _fresh(current):
            return current[0]
        return self._refresh(stale=current[0] if force_refresh and current else None, force=force_refresh)

    def _refresh(self, stale: str | None, force: bool) -> str:
        def usable(cached: CachedToken | None) -> bool:
            # A forced refresh replaces `stale` only: a newer token someone else stored will do.
            return _fresh(cached) and not (force and cached[0] == stale)

        token, _ = self._cache.refresh(usable, lambda: self._fetch_token(force))
        return token

    def _fetch_token(self, force: bool) -> CachedToken:
        body: dict[str, Any] = {"grant_type": "client_credential", "appid": self._appid,
                                "secret": self._secret}
        if force:
            body["force_refresh"] = True
        answer = self._post("/cgi-bin/stable_token", body, token=None)
        _raise_for(answer, self._secrets())
        token, expires_in = answer.get("access_token"), answer.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, int) or expires_in <= 0:
            raise WeChatUnavailable("stable_token answered without a token")
        # Half the life when WeChat hands out one about to expire, so it is not refetched at once.
        return token, time.time() + expires_in - min(EXPIRY_MARGIN_S, expires_in / 2)

    # messages
    def send_text(self, openid: str, content: str) -> None:
        self._call("/cgi-bin/message/custom/send",
                   {"touser": openid, "msgtype": "text", "text": {"content": content}})

    def typing(self, openid: str) -> None:
        self._call("/cgi-bin/message/custom/business/typing", {"touser": openid, "command": "Typing"})

    def _call(self, path: str, body: dict[str, Any]) -> None:
        tokens = [self.access_token()]
        answer = self._post(path, body, tokens[-1])
        if _errcode(answer) in TOKEN_ERRORS:
            tokens.append(self._refresh(stale=tokens[-1], force=True))
            answer = self._post(path, body, tokens[-1])
        # A second token error falls through here as WeChatApiError: no refresh loop.
        _raise_for(answer, self._secrets(*tokens))

    def _post(self, path: str, body: dict[str, Any], token: str | None) -> dict[str, Any]:
        params = {"access_token": token} if token is not None else None
        try:
            response = self._client.post(f"{self._base}{path}", params=params, json=body,
                                         timeout=self._timeout)
        except httpx.HTTPError as exc:
            # `from None`: httpx's exception names the URL, and the URL carries the token.
            raise WeChatUnavailable(f"{path}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise WeChatUnavailable(f"{path}: HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise WeChatUnavailable(f"{path}: not a JSON object")
        return answer

    def _secrets(self, *tokens: str) -> tuple[str, ...]:
        return tuple(s for s in (self._secret, *tokens) if s)


def _errcode(answer: dict[str, Any]) -> int:
    try:
        return int(answer.get("errcode") or 0)
    except (TypeError, ValueError):
        return -1


def _raise_for(answer: dict[str, Any], hidden: tuple[str, ...]) -> None:
    errcode = _errcode(answer)
    if errcode:
        raise _error_for(errcode, _scrub(str(answer.get("errmsg") or ""), hidden))


def _scrub(errmsg: str, hidden: tuple[str, ...]) -> str:
    for value in hidden:
        errmsg = errmsg.replace(value, "***")
    return errmsg[:200]


# --- long text ---------------------------------------------------------------------------------------

# Where a text may be cut, coarsest first; each pattern matches the end of a unit.
_CUTS = (
    re.compile(r"\n[ \t\r\f\v]*\n\s*"),                       # paragraph
    re.compile(r"\n\s*"),                                     # line
    # sentence, with its closing quote; a Latin stop only before a space or the end, not in
    # "3.5" or "www.gov.cn"
    re.compile(r"(?:[。！？]|[.!?](?![0-9A-Za-z]))+[”’\"')）」』]*\s*"),
    re.compile(r"\s+"),                                       # word (Latin text has spaces)
)
_ZWJ = "\u200d"


def split_text(text: str, limit_bytes: int = 2000) -> list[str]:
    """Pieces of at most limit_bytes of UTF-8 each, cut at the coarsest boundary that fits;
    whitespace at a cut is dropped and no piece is empty ([] for a blank text)."""
    if limit_bytes < 4:
        raise ValueError("limit_bytes must hold any one character (4 bytes)")
    pieces = (piece.strip() for piece in _split(text or "", limit_bytes, 0))
    return [piece for piece in pieces if piece]


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _split(text: str, limit: int, level: int) -> list[str]:
    if _size(text) <= limit:
        return [text]
    if level == len(_CUTS):
        return _pack(_clusters(text), limit)
    parts: list[str] = []
    for unit in _cut_after(_CUTS[level], text):
        parts.extend(_split(unit, limit, level + 1))
    return _pack(parts, limit)


def _cut_after(pattern: re.Pattern[str], text: str) -> list[str]:
    units, start = [], 0
    for match in pattern.finditer(text):
        if match.end() > start:
            units.append(text[start:match.end()])
            start = match.end()
    if start < len(text):
        units.append(text[start:])
    return units


def _pack(units: Iterable[str], limit: int) -> list[str]:
    """Consecutive units joined while they fit in limit bytes."""
    out: list[str] = []
    current, size = "", 0
    for unit in units:
        unit_size = _size(unit)
        if unit_size > limit and len(unit) > 1:
            # A grapheme cluster longer than a tiny limit: its code points, each at most 4 bytes.
            if current:
                out.append(current)
            current, size = "", 0
            out.extend(_pack(list(unit), limit))
            continue
        if current and size + unit_size > limit:
            out.append(current)
            current, size = "", 0
        current, size = current + unit, size + unit_size
    if current:
        out.append(current)
    return out


def _clusters(text: str) -> Iterator[str]:
    """Characters as a reader sees them: an emoji with its modifiers, a letter with its accents."""
    cluster = ""
    for char in text:
        if cluster and _joins(cluster[-1], char):
            cluster += char
            continue
        if cluster:
            yield cluster
        cluster = char
    if cluster:
        yield cluster


def _joins(previous: str, char: str) -> bool:
    code = ord(char)
    return (char == _ZWJ or previous == _ZWJ or unicodedata.combining(char) != 0
            or 0xFE00 <= code <= 0xFE0F            # variation selectors
            or 0x1F3FB <= code <= 0x1F3FF          # skin tones
            or 0xE0020 <= code <= 0xE007F)         # tag sequences (flags of regions)


# --- buttons as numbered choices -----------------------------------------------------------------

_CHOICE_HEADERS = {"zh": "回复数字选择:", "zh-hant": "回覆數字選擇:", "en": "Reply with a number:"}
_CHOICE = re.compile(r"^(?:回复|回覆|reply)?\s*([0-9]{1,2})\s*[.。、)]?$", re.IGNORECASE)


def _lang_key(lang: str | None) -> str:
    tag = (lang or "").strip().lower().replace("_", "-")
    if tag.startswith("en"):
        return "en"
    if tag.startswith("zh-hant") or tag in ("zh-tw", "zh-hk", "zh-mo"):
        return "zh-hant"
    return "zh"


def render_choices(text: str, buttons: list[dict], lang: str) -> str:
    if not buttons:
        return text
    lines = [f"{number}. {_one_line(button.get('title') or button.get('payload') or '')}"
             for number, button in enumerate(buttons, 1)]
    block = "\n".join([_CHOICE_HEADERS[_lang_key(lang)], *lines])
    return f"{text}\n\n{block}" if text else block


def _one_line(title: str) -> str:
    return " ".join(str(title).split())


def choice_payload(reply_text: str, buttons: list[dict]) -> str | None:
    if not buttons or not reply_text:
        return None
    # NFKC: the full-width digits and dot of a Chinese keyboard ("１", "２．") read as ASCII.
    match = _CHOICE.match(unicodedata.normalize("NFKC", reply_text).strip())
    if not match:
        return None
    number = int(match.group(1))
    if not 1 <= number <= len(buttons):
        return None
    return buttons[number - 1].get("payload") or None
