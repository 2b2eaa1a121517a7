"""The app process: wires the routers, loads the index once, serves Rasa's actions in-process."""
from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import asynccontextmanager

from fastapi import FastAPI

import store
from api import errors
from api.middleware import RequestContext
from api.routes import accounts, actions, admin, agents, chat, demo, faq, health, sessions
from assistant import runtime
from assistant.rasa_client import RasaClient
from core import logs
from core.artifacts import load_artifacts
from core.settings import Settings, get_settings

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
        app.state.executor = actions.make_executor()
        app.state.domain = actions.load_domain()
        task = asyncio.create_task(_load_in_background(settings)) if load_index else None
        # Migrations run once here, before the first request can need the database.
        await asyncio.to_thread(store.default_sessions)
        if settings.demo_accounts and settings.account_source == "builtin":
            from accounts import demo
            from assistant.diagnose import china_today

            loaded = await asyncio.to_thread(demo.load, china_today())
            logs.log_event(log, "demo_accounts_loaded", count=len(loaded))
        yield
        store.dispose_default()
        if task and not task.done():
            task.cancel()
        await app.state.rasa.close()

    app = FastAPI(title="八闽健康码 Assistant API", version="1.0", lifespan=lifespan)
    app.state.settings = settings
    errors.install(app)
    app.add_middleware(RequestContext)
    for router in (health.router, faq.router, chat.router, actions.router, admin.router,
                   accounts.router, sessions.router, agents.router, demo.router):
        app.include_router(router)
    return app


def main() -> None:
    import uvicorn

    logs.configure()
    settings = get_settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                access_log=False)


if __name__ == "__main__":
    main()
