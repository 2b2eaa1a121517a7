"""Handles the inbox (channels/inbox.py) in the app's event loop: each pushed message becomes one
turn of the conversation service, its answer goes out through delivery.dispatch.

    worker = Worker({"wechat": handler, ...}); task = worker.start(); worker.wake(); await worker.stop()

A handler is `async handle(item) -> outcome` (raise to be tried again later) and
`async give_up(item)` (the polite failure message) for an item that kept failing past
`give_up_after_s`: the platform heard `success` long ago, so the user must hear something.
`ready()`, when given, holds the worker back until the process can answer (its index loaded)."""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Callable, Protocol

from channels import inbox
from core.logs import log_event
from store.models import utcnow

log = logging.getLogger("hc.channels.worker")


class Handler(Protocol):
    async def handle(self, item: inbox.Item) -> str: ...

    async def give_up(self, item: inbox.Item) -> None: ...


class Worker:
    def __init__(self, handlers: dict[str, Handler], *, interval_s: float = 1.0, concurrency: int = 8,
                 give_up_after_s: float = 60.0, lease_s: float = 30.0, keep_done_s: float = 3 * 86400,
                 ready: Callable[[], bool] | None = None):
        self.handlers, self.ready = handlers, ready
        self.interval_s, self.concurrency = interval_s, concurrency
        self.give_up_after_s, self.lease_s, self.keep_done_s = give_up_after_s, lease_s, keep_done_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> asyncio.Task:
        self._task = asyncio.create_task(self._run(), name="channel-inbox")
        return self._task

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=15)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()

    async def run_once(self) -> int:
        """One claim-and-handle round; the number of items handled (tests call it directly)."""
        items = await asyncio.to_thread(inbox.claim, utcnow(), self.concurrency, self.lease_s)
        if items:
            await asyncio.gather(*(self._one(item) for item in items))
        return len(items)

    async def _one(self, item: inbox.Item) -> None:
        handler = self.handlers.get(item.channel)
        if handler is None:       # a channel switched off since: nothing can answer, let it go
            await asyncio.to_thread(inbox.finish, item, "no_handler")
            return
        try:
            outcome = await handler.handle(item)
        except Exception as exc:
            reason = type(exc).__name__
            age = (utcnow() - item.created_at).total_seconds()
            log_event(log, "channel_item_failed", channel=item.channel, item=item.id, attempt=item.attempts,
                      error=reason, age_s=round(age, 1))
            if age < self.give_up_after_s:
                await asyncio.to_thread(inbox.retry_later, item, utcnow(), reason)
                return
            try:
                await handler.give_up(item)
                outcome = "failed_politely"
            except Exception as again:
                if age < self.give_up_after_s * 10:      # the apology itself failed: keep trying
                    await asyncio.to_thread(inbox.retry_later, item, utcnow(), type(again).__name__)
                    return
                outcome = "abandoned"
        await asyncio.to_thread(inbox.finish, item, outcome)
        log_event(log, "channel_item_done", channel=item.channel, item=item.id, outcome=outcome,
                  attempts=item.attempts)

    async def _run(self) -> None:
        last_purge = utcnow()
        while not self._stopping:
            try:
                # Not ready (the index still loading): claim nothing, so nothing is answered with
                # the busy apology nor ages towards give_up while this process cannot answer.
                handled = await self.run_once() if self.ready is None or self.ready() else 0
                if utcnow() - last_purge > timedelta(hours=1):
                    last_purge = utcnow()
                    await asyncio.to_thread(inbox.purge, last_purge - timedelta(seconds=self.keep_done_s))
            except Exception:     # the store is down for a moment: try again, never die
                log.exception("channel inbox round failed")
                handled = 0
            if handled:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
            except asyncio.TimeoutError:
                pass
