"""Cache-invalidation events over Redis pub/sub: the production :class:`ChangeBus`.

One channel, ``{prefix}{channel}`` (``feira:cache`` by default); each message is the
compact JSON of one :class:`~actors.invalidation.CacheEvent`,
``{"kind":"price","keys":["SKU-1"]}``.

Pub/sub is at most once. A message published while a subscriber's connection is down, or
being re-established, is never delivered to it, and Redis drops the connection of a
subscriber that falls behind (``client-output-buffer-limit pubsub``). Nothing tells the
subscriber what it missed, so every subscription, and every re-subscription after a
reconnect, starts with a :class:`~actors.invalidation.Reset` once Redis has confirmed it:
the follower then clears its caches, and anything changed while it was deaf is read afresh.
redis-py reconnects and re-subscribes by itself on a broken connection; the confirmation
Redis sends for that re-subscription is what turns into the Reset, so a silent reconnect
cannot hide a gap.

A half-open connection (the server or the network vanished without closing it) delivers
nothing and reports nothing; an idle subscription therefore sends PING every
``ping_interval_s`` and gives the connection up when not even a PONG came back for twice
that long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from redis.asyncio.client import PubSub

from storage.backoff import Backoff
from storage.cache_events import CacheEvent, Change, Reset
from storage.errors import StoreUnavailable
from storage.redis.client import RedisClient

log = logging.getLogger("feira.invalidation.redis")

_CHANNEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-.")
_BACKOFF = Backoff(0.05, 5.0)
# How often a subscription wakes to notice close() when Redis is quiet.
_WAKE_S = 1.0


class RedisChangeBus:
    """:class:`~actors.invalidation.ChangeBus` on Redis PUBLISH / SUBSCRIBE.

    ``close`` ends the subscriptions and closes the client, as the other Redis adapters'
    ``close`` does: give the bus a :class:`RedisClient` of its own (a subscription holds
    one connection of its pool for as long as it runs).
    """

    def __init__(
        self,
        client: RedisClient,
        channel: str = "cache",
        *,
        ping_interval_s: float = 5.0,
        backoff: Backoff = _BACKOFF,
    ) -> None:
        if not channel or not set(channel) <= _CHANNEL_CHARS:
            raise ValueError("channel must be non-empty [A-Za-z0-9:_.-]")
        if ping_interval_s <= 0:
            raise ValueError("ping_interval_s must be > 0")
        self._client = client
        self._channel = f"{client.prefix}{channel}"
        self._ping_interval_s = ping_interval_s
        self._backoff = backoff
        self._closed = False

    @property
    def channel(self) -> str:
        return self._channel

    async def publish(self, event: CacheEvent) -> None:
        """PUBLISH the event; StoreUnavailable when Redis cannot be reached. Returns
        without knowing who heard it: that is what pub/sub promises."""
        if self._closed:
            raise StoreUnavailable("redis change bus is closed")
        payload = orjson.dumps(event.to_json())
        with self._client.errors("publish cache event"):
            await self._client.redis().publish(self._channel, payload)

    async def subscribe(self) -> AsyncIterator[Change]:
        """Reset once subscribed, then the events; on a connection failure, back off,
        subscribe again and Reset again. Ends when the bus is closed. Errors other than
        StoreUnavailable (a refused password, say) end the subscription."""
        failures = 0
        while not self._closed:
            try:
                pubsub = self._client.redis().pubsub()
            except StoreUnavailable:
                return  # the client was closed: so was the bus
            try:
                async for change in self._listen(pubsub):
                    if isinstance(change, Reset) and failures:
                        log.info("redis change bus subscribed again after %d failures", failures)
                        failures = 0
                    yield change
                return
            except StoreUnavailable as error:
                if self._closed:
                    return
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "redis change bus lost (attempt %d): %s", failures, error)
            finally:
                await _close_pubsub(pubsub)
            await asyncio.sleep(self._backoff.delay(failures))

    async def _listen(self, pubsub: PubSub) -> AsyncIterator[Change]:
        loop = asyncio.get_running_loop()
        with self._client.errors("subscribe to cache events"):
            await pubsub.subscribe(self._channel)
        last_heard = last_ping = loop.time()
        while not self._closed:
            with self._client.errors("read cache events"):
                message: dict[str, Any] | None = await pubsub.get_message(
                    timeout=min(_WAKE_S, self._ping_interval_s)
                )
                now = loop.time()
                if message is None:
                    if now - last_heard > 2 * self._ping_interval_s:
                        raise StoreUnavailable(
                            f"{self._channel}: no answer to PING for "
                            f"{now - last_heard:.1f} s, reconnecting"
                        )
                    if now - last_ping >= self._ping_interval_s:
                        await pubsub.ping()
                        last_ping = now
                    continue
            last_heard = now
            kind = message.get("type")
            if self._closed:
                return
            if kind == "subscribe":
                # First subscription, or redis-py re-subscribed after a reconnect: whatever
                # was published in between is gone.
                yield Reset("subscribed")
            elif kind == "message":
                yield _decode(message.get("data"))
            # pong, unsubscribe: nothing to do.

    async def close(self) -> None:
        """End the subscriptions (within about a second) and close the client."""
        self._closed = True
        await self._client.close()


def _decode(data: Any) -> Change:
    try:
        return CacheEvent.from_json(orjson.loads(data))
    except (orjson.JSONDecodeError, ValueError, TypeError) as error:
        # Something that is not ours on the channel, or a newer format: we cannot tell
        # what it invalidated, so drop everything.
        log.warning("unreadable message on the cache channel (%s): resetting caches", error)
        return Reset("unreadable message")


async def _close_pubsub(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    except Exception:
        log.debug("closing a pubsub connection failed", exc_info=True)
