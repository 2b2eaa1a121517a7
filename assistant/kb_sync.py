"""Every instance follows a KB reload made on any one of them.

    task = start(broker, settings)         # in the app's lifespan; await stop(task) at shutdown
    announce()                             # after a reload here: the others look at the KB too

A reload (POST /api/v1/admin/kb/reload) reaches one instance behind the load balancer; it
publishes KB_TOPIC, and each instance, woken, compares the version of the KB on disk with the
one it serves and reloads when they differ (kb_reload.reload: it finds the index the first one
built when they share a var folder, else builds its own). The notification carries nothing
(delivery.broker): what to serve is read from the KB file itself, so an instance woken twice,
or the one that made the reload, finds nothing to do.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable

import delivery
from assistant import kb_reload, runtime
from core.logs import log_event
from core.settings import Settings
from delivery.broker import Broker, SubscriptionDropped

log = logging.getLogger("hc.kb")

KB_TOPIC = "kb"


def announce() -> None:
    delivery.publish(KB_TOPIC)


def catch_up(settings: Settings, reload: Callable[[Settings], object] = kb_reload.reload) -> bool:
    """Reload when the KB on disk is not the one served; whether a reload ran."""
    from retrieval.kb import KBError, load_kb

    if not runtime.ready():
        return False          # still starting: the start-up load reads the KB as it is now
    try:
        on_disk = load_kb(settings.kb_path).version
    except (KBError, OSError) as exc:
        log_event(log, "kb_sync_skipped", reason=type(exc).__name__)
        return False
    if on_disk == runtime.retriever().kb.version:
        return False
    try:
        reload(settings)
    except (kb_reload.ReloadBusy, kb_reload.ReloadFailed, KBError, OSError) as exc:
        log_event(log, "kb_sync_failed", error=type(exc).__name__, detail=str(exc)[:200])
        return False
    return True


async def follow(broker: Broker, settings: Settings,
                 reload: Callable[[Settings], object] = kb_reload.reload) -> None:
    while True:
        try:
            async with broker.subscribe(KB_TOPIC) as sub:
                while True:
                    if await sub.wait(None) is not None:
                        await asyncio.to_thread(catch_up, settings, reload)
        except SubscriptionDropped:
            continue                                  # subscribe again; a missed wake is re-read
        except asyncio.CancelledError:
            raise
        except Exception:     # Redis away for a moment: never let the follower die
            log.exception("kb sync subscription failed")
            await asyncio.sleep(2)


def start(broker: Broker, settings: Settings) -> asyncio.Task:
    return asyncio.create_task(follow(broker, settings), name="kb-sync")


async def stop(task: asyncio.Task | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
