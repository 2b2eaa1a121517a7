"""The channels' moving parts in one app process: platform clients, delivery senders, the inbox
worker. Started and stopped by the app's lifespan (api/main.py); off for a channel whose
credentials are not set (core.settings: wechat_enabled, alipay_enabled)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import delivery
from assistant.rasa_client import RasaClient
from channels import inbox
from channels.worker import Worker
from core.sealing import data_key
from core.settings import Settings


@dataclass
class Channels:
    worker: Worker | None = None
    wechat_api: Any = None
    alipay_gateway: Any = None
    senders: list[tuple[str, Callable]] = field(default_factory=list)

    def wake(self) -> None:
        if self.worker is not None:
            self.worker.wake()


def _token_cache(settings: Settings):
    from channels.wechat import api

    if settings.redis_url:
        import redis

        # Every instance shares one token (WeChat invalidates older ones when a new one is fetched).
        return api.RedisTokenCache(redis.Redis.from_url(settings.redis_url), f"hc:wechat:{settings.wechat_appid}")
    return api.MemoryTokenCache()


def start(settings: Settings, rasa: Callable[[], RasaClient], *, ready: Callable[[], bool] | None = None) -> Channels:
    """rasa: returns the app's current Rasa client (read at each turn, so a test can swap it).
    ready: whether turns can be answered yet (the index loaded); the worker leaves the inbox
    alone until then, so a push taken around a restart gets its answer, not the busy apology."""
    inbox.configure(None, data_key(settings))
    out, handlers = Channels(), {}
    if settings.wechat_enabled:
        from channels.wechat import api, service

        out.wechat_api = api.WeChatApi(settings.wechat_api_base, settings.wechat_appid, settings.wechat_appsecret or "",
                                       _token_cache(settings), timeout_s=settings.channel_timeout_s)
        handlers["wechat"] = service.WeChatHandler(rasa, out.wechat_api, settings)
        out.senders.append(("wechat", service.sender(out.wechat_api)))
    if settings.alipay_enabled:
        from channels.alipay import service as alipay_service
        from channels.alipay.gateway import AlipayGateway

        out.alipay_gateway = AlipayGateway(settings.alipay_gateway, settings.alipay_app_id, settings.alipay_private_key,
                                           settings.alipay_public_key, timeout_s=settings.channel_timeout_s)
        handlers["alipay"] = alipay_service.AlipayHandler(rasa, settings)
        out.senders.append(("alipay", alipay_service.sender(out.alipay_gateway)))
    for channel, fn in out.senders:
        delivery.register_sender(channel, fn)
    if handlers:
        out.worker = Worker(handlers, give_up_after_s=settings.channel_give_up_s, ready=ready)
        out.worker.start()
    return out


async def stop(channels: Channels | None) -> None:
    if channels is None:
        return
    if channels.worker is not None:
        await channels.worker.stop()
    for channel, fn in channels.senders:
        delivery.unregister_sender(channel, fn)
    for client in (channels.wechat_api, channels.alipay_gateway):
        close = getattr(client, "close", None)
        if close is not None:
            close()
