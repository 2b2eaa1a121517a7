"""The app process: wires the routers, loads the index once, serves Rasa's actions in-process.

Two listeners in one process and one event loop: the user-facing API (HC_HOST:HC_PORT) and
Rasa's action webhook (api.actions_app, 127.0.0.1:HC_ACTIONS_PORT only)."""
from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import asynccontextmanager, contextmanager

from fastapi import FastAPI

import delivery
import store
from accounts import service as accounts_service
from api import errors, openapi
from api.middleware import BodyLimit, RequestContext, SecurityHeaders
from api.ratelimit import RateLimit, RateLimiter
from api.actions_app import create_actions_app
from api.routes import (accounts, admin, agent, agent_stream, agents, channels, chat, demo, faq, health,
                        messages, pages, sessions, stats)
from assistant import kb_sync, runtime
from assistant.rasa_client import RasaClient
from core import logs
from core.artifacts import load_artifacts
from core.settings import Settings, get_settings
from tickets import forwarding

log = logging.getLogger("hc.api")


def load_retriever(settings: Settings):
    from retrieval.index import load_retriever as load
    from retrieval.kb import load_kb
    from retrieval.retriever import Params, Retriever

    if settings.retrieval_mode == "bm25":  # the benchmark's baseline: no encoder at all
        retriever = Retriever(load_kb(settings.kb_path), None, params=Params(bm25_only=True))
        retriever.warm_up()
        return retriever
    art = load_artifacts(settings)
    if not (art.index_dir and art.model_dir):
        raise RuntimeError("no index/model: run `make setup` (or set HC_INDEX_DIR and HC_MODEL_DIR)")
    return load(art.index_dir, settings.kb_path, art.model_dir)


async def _load_in_background(settings: Settings) -> None:
    try:
        runtime.install(await asyncio.to_thread(load_retriever, settings))
        logs.log_event(log, "index_loaded", kb_version=runtime.retriever().kb.version)
    except Exception:
        log.exception("loading the retrieval index failed")
        raise


def create_app(settings: Settings | None = None, *, load_index: bool = True) -> FastAPI:
    settings = settings or get_settings()
    if not settings.internal_token:
        settings.internal_token = secrets.token_urlsafe(24)

    # Turns wait for the index: one answered before it loads would be the busy apology, as a 200
    # (the FAQ action raises NotReady inside Rasa), and a channel push would count as answered.
    # Without an index to load (tests on stand-ins) a turn is ready at once.
    turns_ready = runtime.ready if load_index else (lambda: True)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.turns_ready = turns_ready
        app.state.rasa = RasaClient(settings.rasa_url, settings.internal_token, settings.chat_timeout_s)
        app.state.actions_health = f"http://127.0.0.1:{settings.actions_port}/healthz"
        task = asyncio.create_task(_load_in_background(settings)) if load_index else None
        # Migrations run once here, before the first request can need the database; the
        # services use this app's settings from now on, not whatever the environment says.
        await asyncio.to_thread(store.default_sessions, settings)
        accounts_service.use_settings(settings)
        # Pub/sub for the message streams (delivery/broker.py): this app's streams subscribe
        # through app.state.broker; services publish through the process's (the same one).
        app.state.broker = delivery.broker_from_url(settings.redis_url or "memory://")
        delivery.use_broker(app.state.broker)
        # A KB reload made on another instance reaches this one too (assistant/kb_sync.py).
        app.state.kb_sync = kb_sync.start(app.state.broker, settings)
        # The hotline webhook's outbox relay: only when HC_HOTLINE_WEBHOOK_URL is set.
        forwarding.use_settings(settings)
        app.state.forwarding_relay = await asyncio.to_thread(forwarding.start, settings)
        # WeChat / Alipay: platform clients, delivery senders, the inbox worker (each channel off
        # until its credentials are set).
        from channels import runtime as channel_runtime

        app.state.channels = channel_runtime.start(settings, lambda: app.state.rasa, ready=turns_ready)
        if settings.demo_accounts and settings.account_source == "builtin":
            from accounts import demo
            from assistant.diagnose import china_today

            loaded = await asyncio.to_thread(demo.load, china_today())
            logs.log_event(log, "demo_accounts_loaded", count=len(loaded))
        if task is not None:
            # uvicorn opens the port only once the lifespan has started: behind a load balancer
            # an instance that is still loading refuses the connection, so the balancer sends the
            # request to another one (nginx retries a refused POST, never a 503), and a turn can
            # never meet the busy apology. A load that fails ends the process (the supervisor
            # says so) instead of serving 503s forever.
            await task
        yield
        await channel_runtime.stop(app.state.channels)
        await kb_sync.stop(app.state.kb_sync)
        delivery.release_broker(app.state.broker)
        await app.state.broker.close()
        await asyncio.to_thread(forwarding.stop, app.state.forwarding_relay)   # before the pool goes
        forwarding.use_settings(None)
        store.dispose_default()
        accounts_service.use_settings(None)
        if task and not task.done():
            task.cancel()
        await app.state.rasa.close()
        await app.state.ratelimiter.close()

    app = FastAPI(title="八闽健康码 Assistant API", version="1.0", lifespan=lifespan)
    app.state.settings = settings
    # Per address / per channel in RateLimit below; per conversation in POST /api/v1/chat.
    app.state.ratelimiter = RateLimiter(settings)
    errors.install(app)
    openapi.install(app)
    # Outermost last: RequestContext (request id, access log) → SecurityHeaders → CORS (so a
    # 429 or 413 reaches a cross-origin page readable) → RateLimit (before any body is read)
    # → BodyLimit → the routes.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimit, limiter=app.state.ratelimiter)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
                           expose_headers=["Retry-After", "X-Request-ID"], max_age=600)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestContext)
    for router in (health.router, faq.router, chat.router, messages.router, admin.router,
                   accounts.router, sessions.router, agents.router, demo.router,
                   agent.router, agent_stream.router, stats.router, pages.router,
                   *channels.routers):
        app.include_router(router)
    return app


async def serve(settings: Settings) -> None:
    """Both listeners until a signal, or until either stops (a port taken): then both stop."""
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self):
            # Each uvicorn server would take over SIGINT/SIGTERM for itself, and the second
            # would hide them from the first: the process handles them for both, below.
            yield

    if not settings.internal_token:
        raise RuntimeError("HC_INTERNAL_TOKEN must be set: it is the action webhook's secret")
    servers = [
        # SSE streams stay open: shutdown gives them 5 s, not forever.
        # proxy_headers off: uvicorn would take X-Forwarded-For from any loopback peer; the client
        # address is api.ratelimit.client_address's to decide (HC_TRUSTED_PROXIES).
        Server(uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                              log_config=None, access_log=False, timeout_graceful_shutdown=5,
                              proxy_headers=False)),
        Server(uvicorn.Config(create_actions_app(settings), host="127.0.0.1",
                              port=settings.actions_port, log_config=None, access_log=False)),
    ]

    def stop_all() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_all)
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    stop_all()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


SECRET_SETTINGS = ("admin_token", "internal_token", "data_key", "wechat_token", "wechat_aes_key",
                   "wechat_appsecret", "alipay_private_key", "hotline_webhook_secret", "account_upstream_token")


def secret_values(settings: Settings) -> list[str]:
    """The configured secrets as they could appear in a log line: whole, line by line (a PEM
    key), and the passwords inside HC_DATABASE_URL / HC_REDIS_URL."""
    from urllib.parse import urlsplit

    out: list[str] = []
    for name in SECRET_SETTINGS:
        value = getattr(settings, name, None)
        if value:
            out += [value, *(line.strip() for line in str(value).splitlines() if len(line.strip()) >= 16)]
    for url in (settings.database_url, settings.redis_url):
        try:
            password = urlsplit(url).password if url else None
        except ValueError:
            password = None
        if password:
            out.append(password)
    return sorted({v for v in out if len(v) >= 6}, key=len, reverse=True)


class RedactingFormatter(logging.Formatter):
    """Wraps the JSON formatter: a configured secret (and its JSON-escaped form) never leaves in a
    log line, whatever an exception or a third-party library put into the record."""

    def __init__(self, inner: logging.Formatter, secrets_: list[str]):
        super().__init__()
        self.inner = inner
        import json

        self.pairs = [(v, "[redacted]") for v in secrets_] + \
                     [(json.dumps(v)[1:-1], "[redacted]") for v in secrets_ if json.dumps(v)[1:-1] != v]

    def format(self, record: logging.LogRecord) -> str:
        line = self.inner.format(record)
        for secret, mask in self.pairs:
            if secret in line:
                line = line.replace(secret, mask)
        return line


def redact_logs(settings: Settings) -> None:
    secrets_ = secret_values(settings)
    for handler in logging.getLogger().handlers:
        if secrets_ and not isinstance(handler.formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(handler.formatter or logging.Formatter(), secrets_))


def main() -> None:
    logs.configure()
    settings = get_settings()
    redact_logs(settings)
    # uvloop: the event loop's own work (sockets, call_soon_threadsafe from the worker threads)
    # was a visible share of a chat turn's CPU on the stdlib loop.
    try:
        import uvloop
    except ImportError:       # pragma: no cover - it is in requirements/app.txt
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
