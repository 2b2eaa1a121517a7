"""Every URL, path, threshold and secret the app reads, in one place (HC_* environment)."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
# The header that carries the shared internal secret (app → Rasa channel, Rasa → action webhook).
INTERNAL_TOKEN_HEADER = "X-HC-Internal-Token"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hc-assistant"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HC_", extra="ignore")

    port: int = 8000
    host: str = "127.0.0.1"
    admin_token: str | None = None
    database_url: str | None = None
    redis_url: str | None = None

    # Heavy artefacts (venvs, converted model, index, Rasa model) are built by tools/setup.py
    # into the cache and their current locations are written to var/artifacts.json.
    cache_dir: Path = default_cache_dir()
    var_dir: Path = REPO_ROOT / "var"
    kb_path: Path = REPO_ROOT / "kb" / "faq_zh.md"
    model_dir: Path | None = None
    index_dir: Path | None = None

    # One Rasa server, or several separated by commas: each conversation is pinned to one of
    # them by its id (assistant/rasa_client.py), so its turns never run in two places at once.
    rasa_url: str = "http://127.0.0.1:5005"
    rasa_port: int = 5005
    # How many Rasa servers `make run` starts (rasa_port, then free ports), all on one model.
    rasa_servers: int = Field(1, ge=1, le=8)
    # Rasa's action webhook: its own listener on loopback, never the user-facing port.
    actions_port: int = 5055
    # Shared secret between the app, the Rasa channel and the action webhook: both internal
    # routes refuse requests without it even though they only listen on loopback.
    internal_token: str | None = None
    # Seals account documents at rest (core/sealing.py): base64 of 32 bytes, the same for every
    # instance; unset, a key generated once under var/secrets/ is used.
    data_key: str | None = None

    # "hybrid" (BM25 + dense) or "bm25" (no encoder: the benchmark's baseline).
    retrieval_mode: str = "hybrid"

    chat_timeout_s: float = 10.0
    # While fewer turns than this are waiting on Rasa in the process, a new turn's FAQ search
    # starts at once, beside Rasa's NLU, not when the FAQ action asks (assistant/chat.py): spare
    # CPU answers a question sooner. Past it (load) no search is started for a turn that may not
    # need one. 0: never.
    look_ahead_turns: int = Field(2, ge=0, le=64)
    max_text_chars: int = 2000
    # Every request body, before any route reads it (413 above). 2,000 characters of chat text
    # are at most ~12 KB of JSON; an account document is a few KB.
    max_body_bytes: int = 256 * 1024

    # --- rate limits (api/ratelimit.py; the `limits` library, moving windows) ---
    # Each is a `limits` expression, several joined by ";" ("120/minute;20/second"). Counted in
    # Redis (HC_REDIS_URL) so every instance shares them, else in the process's memory; a Redis
    # outage lets requests through (logged once) rather than taking the API down.
    rate_limit_enabled: bool = True
    # Per client address, on every /api route: a person chatting sends a few requests a turn.
    rate_limit: str = "120/minute"
    # Per conversation (the signed-in user's namespaced sender) on POST /api/v1/chat.
    rate_limit_conversation: str = "30/minute"
    # Per source address on the platforms' push routes (/channels/wechat, /channels/alipay):
    # WeChat retries a push three times and many users' pushes come from its few servers.
    rate_limit_channel: str = "600/minute"
    # Addresses (or networks, "10.0.0.0/8") of the reverse proxies whose X-Forwarded-For is
    # believed; from any other peer the header is ignored and the peer is the client.
    trusted_proxies: list[str] = ["127.0.0.1", "::1"]
    # Prefix of the limiter's keys in Redis (several deployments, or tests, on one Redis).
    rate_limit_key_prefix: str = "hc-rl"

    # Account state: the built-in store (the app's database), or the upstream platform's API
    # (GET {url}/accounts/{user_id}, bearer token). Sessions, agents and the audit stay built-in.
    account_source: Literal["builtin", "http"] = "builtin"
    account_upstream_url: str | None = None
    account_upstream_token: str | None = None
    account_upstream_timeout_s: float = 5.0
    session_ttl_s: int = 24 * 3600
    # The fictitious demo-* accounts are loaded into the built-in store at start-up (HC_DEMO_ACCOUNTS=0
    # skips them); signing in as one without the admin token (/api/v1/demo/sessions) needs HC_DEMO=1.
    demo_accounts: bool = True
    demo: bool = False
    # Origins (e.g. "https://www.fujian.gov.cn") that may frame the widget's page, besides this one.
    widget_frame_origins: list[str] = []
    # Origins whose pages may call the API from a browser (a site embedding the widget with
    # data-api pointing here); none by default: same origin only.
    cors_origins: list[str] = []

    # --- the hotline hand-off (tickets/, delivery/) ---
    # When people answer (Beijing time, "HH:MM-HH:MM"; every day): outside them the bot says when
    # a new ticket will be handled.
    hotline_hours: str = "08:30-17:30"
    # First-response target for a ticket (the agent panel counts down to it).
    ticket_sla_s: int = 15 * 60
    # Expected wait when the queue has no history yet (nobody claimed anything recently).
    ticket_default_wait_s: int = 10 * 60
    # Forward every ticket and its updates to the hotline's own system: off unless a URL is set.
    hotline_webhook_url: str | None = None
    hotline_webhook_secret: str | None = None
    hotline_webhook_timeout_s: float = 5.0
    # SSE: a ping this often keeps proxies from closing an idle stream.
    sse_ping_s: float = 15.0

    # --- the channels that push (channels/); each is off until its credentials are set ---
    # WeChat (mini-program customer-service messages, official-account messages).
    wechat_token: str | None = None
    wechat_aes_key: str | None = None          # the 43-character EncodingAESKey (safe/compatible mode)
    wechat_appid: str | None = None
    wechat_appsecret: str | None = None
    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_max_age_s: int = 300                # refuse pushes whose timestamp is older (0: no check)
    # Alipay (mini-program sign-in, 生活号 message gateway).
    alipay_app_id: str | None = None
    alipay_private_key: str | None = None      # the app's RSA private key (PEM): signs gateway calls
    alipay_public_key: str | None = None       # Alipay's public key (PEM): verifies what Alipay sends
    alipay_gateway: str = "https://openapi.alipay.com/gateway.do"
    channel_timeout_s: float = 5.0             # each call to a platform's API
    # A pushed message the bot could not answer (down, slow) for this long gets an apology.
    channel_give_up_s: float = 60.0

    @property
    def wechat_enabled(self) -> bool:
        return bool(self.wechat_token and self.wechat_appid)

    @property
    def alipay_enabled(self) -> bool:
        return bool(self.alipay_app_id and self.alipay_private_key and self.alipay_public_key)

    def sqlite_url(self) -> str:
        return f"sqlite:///{self.var_dir / 'hc.db'}"

    @property
    def db_url(self) -> str:
        return self.database_url or self.sqlite_url()


@lru_cache
def get_settings() -> Settings:
    return Settings()
