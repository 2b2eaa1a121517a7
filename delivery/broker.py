"""Pub/sub for "look again" notifications, behind a URL-chosen backend (STYLE.md 15).

    broker = broker_from_url("memory://" | "redis://host:6379/0")
    broker.publish(topic)                       # any thread; never raises; a hint, not the message
    async with broker.subscribe(topic, ...) as sub:
        topic = await sub.wait(timeout)         # a topic that changed, or None after `timeout`
                                                # raises SubscriptionDropped when it overflowed
    await broker.close()

Design.

* A notification carries no data, only its topic (`conversation:<id>`, `agents`). What changed
  is always read from the stored log (the conversation's messages, the ticket events) after the
  reader's own cursor, so nothing is lost when a notification is: Redis pub/sub drops whatever is
  published while a subscriber is away or reconnecting, a slow stream is dropped (below), an
  instance restarts. A stream that comes back re-reads after its Last-Event-ID; a connected
  stream also re-reads at every ping, which bounds what a lost notification can delay.
* Local fan-out is the same for both backends: each subscription has a bounded queue of
  wake-ups on the event loop it was opened in; `_dispatch` hands a topic to every local
  subscription of it with `loop.call_soon_threadsafe`, so publishing is safe from any thread
  (services run in worker threads) and never blocks on a subscriber. Wake-ups for a topic that
  is already waiting in the queue are coalesced; a queue that is full anyway (its consumer is
  stuck, typically writing to a client that does not read) marks the subscription dropped: its
  stream ends, the client reconnects with Last-Event-ID and re-fetches; nobody else waits.
* MemoryBroker (`memory://`): publish is the local dispatch. One process only.
* RedisBroker (`redis://`): publish is a PUBLISH on `hc:<topic>` through a synchronous client
  (thread-safe pool, short timeouts; a failure is logged and swallowed, the ping re-read covers
  it). Subscribing uses one asyncio pub/sub connection per broker, bound to the event loop that
  subscribed first: a channel is SUBSCRIBEd when its first local subscriber arrives (waiting for
  Redis' confirmation, so a publish after `subscribe()` returned is seen) and UNSUBSCRIBEd when
  the last one leaves; one reader task dispatches incoming messages locally. When the
  connection breaks the reader reconnects with back-off, re-subscribes every channel and wakes
  every local subscriber, since it may have missed something meanwhile.
* Which broker. The app creates one broker per app at start-up (`app.state.broker`, from
  settings.redis_url or memory://) and the stream routes subscribe through it; the same object is
  made the process's broker (`delivery.use_broker`), through which `delivery.publish` /
  `deliver` publish from services. In production that is one app per process, so both are the
  same; two apps in one process (tests) each subscribe through their own connection, and a
  Redis test publishes through one app's broker and reads the other's stream, which only Redis
  can carry between them. Without a configured broker `publish` is a no-op.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("hc.delivery")


def _warn(event: str, exc: BaseException) -> None:
    log.warning(event, extra={"fields": {"error": type(exc).__name__}})

DEFAULT_QUEUE_SIZE = 16
REDIS_PREFIX = "hc:"
SUBSCRIBE_CONFIRM_S = 3.0


class SubscriptionDropped(Exception):
    """The subscription's wake-up queue overflowed (or its broker closed): re-read and reconnect."""


class Subscription:
    """One subscriber's wake-ups, consumed on the event loop it was opened in."""

    def __init__(self, topics: tuple[str, ...], loop: asyncio.AbstractEventLoop, maxsize: int):
        self.topics = topics
        self.loop = loop
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=max(1, maxsize))
        self._pending: set[str] = set()
        self.dropped = asyncio.Event()
        self.reason: str | None = None

    # Runs on self.loop only (via call_soon_threadsafe).
    def _offer(self, topic: str) -> None:
        if self.dropped.is_set() or topic in self._pending:
            return
        try:
            self._queue.put_nowait(topic)
        except asyncio.QueueFull:
            self._drop("overflow")
            return
        self._pending.add(topic)

    def _drop(self, reason: str) -> None:
        if not self.dropped.is_set():
            self.reason = reason
            self.dropped.set()

    async def wait(self, timeout: float | None = None) -> str | None:
        """The next topic that changed, or None when `timeout` passed without one; drains every
        other pending wake-up too (one re-read covers them). Raises SubscriptionDropped."""
        if self.dropped.is_set():
            raise SubscriptionDropped(self.reason)
        if self._queue.empty():
            getter = asyncio.ensure_future(self._queue.get())
            dropped = asyncio.ensure_future(self.dropped.wait())
            try:
                done, _ = await asyncio.wait({getter, dropped}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                dropped.cancel()
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                self._queue.put_nowait(getter.result())        # put back, drained below
            elif self.dropped.is_set():
                raise SubscriptionDropped(self.reason)
            else:
                return None
        first = None
        while not self._queue.empty():
            topic = self._queue.get_nowait()
            self._pending.discard(topic)
            first = first or topic
        return first


class Broker:
    """Local fan-out shared by the backends; subclasses decide what publish() does."""

    url = "memory://"

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE):
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}
        self._closed = False

    # -- publishing --------------------------------------------------------------------------
    def publish(self, topic: str) -> None:
        raise NotImplementedError

    def _dispatch(self, topic: str) -> None:
        with self._lock:
            subs = list(self._subs.get(topic, ()))
        for sub in subs:
            _call_soon(sub.loop, sub._offer, topic)

    def _dispatch_all(self) -> None:
        with self._lock:
            pairs = [(topic, sub) for topic, subs in self._subs.items() for sub in subs]
        for topic, sub in pairs:
            _call_soon(sub.loop, sub._offer, topic)

    # -- subscribing -------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def subscribe(self, *topics: str, queue_size: int | None = None) -> AsyncIterator[Subscription]:
        if self._closed:
            raise RuntimeError("broker is closed")
        sub = Subscription(tuple(dict.fromkeys(topics)), asyncio.get_running_loop(),
                           queue_size or self.queue_size)
        first: list[str] = []
        with self._lock:
            for topic in sub.topics:
                bucket = self._subs.setdefault(topic, set())
                if not bucket:
                    first.append(topic)
                bucket.add(sub)
        try:
            if first:
                await self._remote_subscribe(first)
            yield sub
        finally:
            last: list[str] = []
            with self._lock:
                for topic in sub.topics:
                    bucket = self._subs.get(topic)
                    if bucket is not None:
                        bucket.discard(sub)
                        if not bucket:
                            del self._subs[topic]
                            last.append(topic)
            if last and not self._closed:
                with contextlib.suppress(Exception):
                    await self._remote_unsubscribe(last)

    async def _remote_subscribe(self, topics: list[str]) -> None:
        pass

    async def _remote_unsubscribe(self, topics: list[str]) -> None:
        pass

    def subscriber_count(self, topic: str) -> int:
        with self._lock:
            return len(self._subs.get(topic, ()))

    async def close(self) -> None:
        """Drop every subscription (their streams end) and release connections."""
        self._closed = True
        with self._lock:
            subs = {sub for bucket in self._subs.values() for sub in bucket}
        for sub in subs:
            _call_soon(sub.loop, sub._drop, "closed")


def _call_soon(loop: asyncio.AbstractEventLoop, fn, *args) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass  # that loop is closed: its subscriber is gone


class MemoryBroker(Broker):
    """In one process: publish is the local fan-out."""

    def publish(self, topic: str) -> None:
        if not self._closed:
            self._dispatch(topic)


class RedisBroker(Broker):
    """Across instances: PUBLISH through a sync client, one async SUBSCRIBE connection per broker."""

    def __init__(self, url: str, *, queue_size: int = DEFAULT_QUEUE_SIZE, timeout_s: float = 0.5):
        super().__init__(queue_size=queue_size)
        import redis

        self.url = url
        self.timeout_s = timeout_s
        # Publishing sits in a service's worker thread: a Redis that is down costs it at most this.
        self._sync = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        # Names the subscribing connection in CLIENT LIST (operators; the reconnect test).
        self.client_name = f"hc-broker-{os.getpid()}-{secrets.token_hex(4)}"
        self._async: Any = None
        self._pubsub: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: asyncio.Task | None = None
        self._channels: set[str] = set()             # what the pub/sub connection should hold
        self._confirm: dict[str, list[asyncio.Future]] = {}
        self._alock: asyncio.Lock | None = None
        self._busy: asyncio.Event | None = None       # set while there are channels to read

    # -- publishing --------------------------------------------------------------------------
    def publish(self, topic: str) -> None:
        if self._closed:
            return
        try:
            self._sync.publish(REDIS_PREFIX + topic, b"1")
        except Exception as exc:      # a hint lost: the stored log and the ping re-read cover it
            _warn("publish_failed", exc)

    # -- subscribing -------------------------------------------------------------------------
    async def _on_loop(self, coro_fn, *args):
        """Run a pub/sub command on the loop the connection belongs to."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        if loop is self._loop:
            return await coro_fn(*args)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro_fn(*args), self._loop))

    def _lock_for_loop(self) -> asyncio.Lock:
        if self._alock is None:
            self._alock = asyncio.Lock()
            self._busy = asyncio.Event()
        return self._alock

    async def _ensure_connection(self) -> None:
        if self._pubsub is None:
            import redis.asyncio as aredis

            self._async = aredis.Redis.from_url(self.url, socket_connect_timeout=self.timeout_s,
                                                client_name=self.client_name)
            self._pubsub = self._async.pubsub()

    async def _subscribe_here(self, topics: list[str]) -> None:
        async with self._lock_for_loop():
            await self._ensure_connection()
            channels = [REDIS_PREFIX + t for t in topics]
            loop = asyncio.get_running_loop()
            waits = []
            for ch in channels:
                fut = loop.create_future()
                self._confirm.setdefault(ch, []).append(fut)
                waits.append(fut)
            self._channels.update(channels)
            self._busy.set()
            try:
                await self._pubsub.subscribe(*channels)
            except Exception as exc:
                # The reader reconnects and re-subscribes; the ping re-read covers the gap.
                _warn("subscribe_failed", exc)
            if self._reader is None or self._reader.done():
                self._reader = loop.create_task(self._read())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), SUBSCRIBE_CONFIRM_S)

    async def _unsubscribe_here(self, topics: list[str]) -> None:
        async with self._lock_for_loop():
            channels = [REDIS_PREFIX + t for t in topics]
            # A subscriber may have come back for the topic meanwhile.
            channels = [ch for ch in channels if self.subscriber_count(ch[len(REDIS_PREFIX):]) == 0]
            self._channels.difference_update(channels)
            if channels and self._pubsub is not None:
                await self._pubsub.unsubscribe(*channels)

    async def _remote_subscribe(self, topics: list[str]) -> None:
        await self._on_loop(self._subscribe_here, topics)

    async def _remote_unsubscribe(self, topics: list[str]) -> None:
        await self._on_loop(self._unsubscribe_here, topics)

    def _confirmed(self, channel: str) -> None:
        for fut in self._confirm.pop(channel, []):
            if not fut.done():
                fut.set_result(None)

    async def _read(self) -> None:
        backoff = 0.1
        while not self._closed:
            try:
                if not self._channels:
                    self._busy.clear()
                    await self._busy.wait()
                    continue
                message = await self._pubsub.get_message(timeout=1.0)
                backoff = 0.1
                if message is None:
                    continue
                channel = message.get("channel")
                if isinstance(channel, bytes):
                    channel = channel.decode("utf-8", "replace")
                if not isinstance(channel, str):
                    continue
                if message.get("type") == "subscribe":
                    self._confirmed(channel)
                elif message.get("type") == "message" and channel.startswith(REDIS_PREFIX):
                    self._dispatch(channel[len(REDIS_PREFIX):])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    return
                _warn("pubsub_reconnect", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                await self._reconnect()

    async def _reconnect(self) -> None:
        async with self._lock_for_loop():
            old, self._pubsub = self._pubsub, None
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.aclose()
            try:
                await self._ensure_connection()
                if self._channels:
                    await self._pubsub.subscribe(*sorted(self._channels))
            except Exception:
                return          # the reader tries again after its back-off
        # Whatever was published while the connection was down is lost: everyone re-reads.
        self._dispatch_all()

    async def close(self) -> None:
        await super().close()
        reader, self._reader = self._reader, None
        if reader is not None:
            if self._loop is asyncio.get_running_loop():
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
            elif self._loop is not None:
                _call_soon(self._loop, reader.cancel)
        pubsub, client = self._pubsub, self._async
        self._pubsub = self._async = None
        if self._loop is None or self._loop is asyncio.get_running_loop():
            for closer in (getattr(pubsub, "aclose", None), getattr(client, "aclose", None)):
                if closer is not None:
                    with contextlib.suppress(Exception):
                        await closer()
        with contextlib.suppress(Exception):
            self._sync.close()


def broker_from_url(url: str | None, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> Broker:
    """memory:// (or empty) → MemoryBroker; redis:// or rediss:// → RedisBroker."""
    scheme = urlsplit(url or "memory://").scheme.lower()
    if scheme in ("", "memory"):
        return MemoryBroker(queue_size=queue_size)
    if scheme in ("redis", "rediss", "unix"):
        return RedisBroker(url, queue_size=queue_size)
    raise ValueError(f"unsupported broker URL scheme: {scheme!r}")


# --- the process's broker -------------------------------------------------------------------------
_current_lock = threading.Lock()
_current: Broker | None = None


def use_broker(broker: Broker | None) -> None:
    """Make `broker` the process's (what delivery.publish goes through); None: publish is a no-op."""
    global _current
    with _current_lock:
        _current = broker


def release_broker(broker: Broker) -> None:
    """At an app's shutdown: stop using `broker` if it is still the process's one."""
    global _current
    with _current_lock:
        if _current is broker:
            _current = None


def current_broker() -> Broker | None:
    return _current


def publish(topic: str) -> None:
    """Tell whoever listens on `topic` to look again. Any thread; never raises; no-op unconfigured."""
    broker = _current
    if broker is not None:
        try:
            broker.publish(topic)
        except Exception as exc:
            _warn("publish_failed", exc)
