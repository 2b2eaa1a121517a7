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
from api import errors
from api.middleware import BodyLimit, RequestContext
from api.actions_app import create_actions_app
from api.routes import (accounts, admin, agent, agent_stream, agents, channels, chat, demo, faq, health,
                        messages, pages, sessions, stats)
from assistant import runtime
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

    @asynccontextmanager
    async def lifespan(app: FastAPI):
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
        # The hotline webhook's outbox relay: only when HC_HOTLINE_WEBHOOK_URL is set.
        forwarding.use_settings(settings)
        app.state.forwarding_relay = await asyncio.to_thread(forwarding.start, settings)
        # WeChat / Alipay: platform clients, delivery senders, the inbox worker (each channel off
        # until its credentials are set).
        from channels import runtime as channel_runtime

        app.state.channels = channel_runtime.start(settings, lambda: app.state.rasa)
        if settings.demo_accounts and settings.account_source == "builtin":
            from accounts import demo
            from assistant.diagnose import china_today

            loaded = await asyncio.to_thread(demo.load, china_today())
            logs.log_event(log, "demo_accounts_loaded", count=len(loaded))
        yield
        await channel_runtime.stop(app.state.channels)
        delivery.release_broker(app.state.broker)
        await app.state.broker.close()
        await asyncio.to_thread(forwarding.stop, app.state.forwarding_relay)   # before the pool goes
        forwarding.use_settings(None)
        store.dispose_default()
        accounts_service.use_settings(None)
        if task and not task.done():
            task.cancel()
        await app.state.rasa.close()

    app = FastAPI(title="八闽健康码 Assistant API", version="1.0", lifespan=lifespan)
    app.state.settings = settings
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"], max_age=600)
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
        Server(uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                              log_config=None, access_log=False, timeout_graceful_shutdown=5)),
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


def main() -> None:
    logs.configure()
    asyncio.run(serve(get_settings()))


if __name__ == "__main__":
    main()
