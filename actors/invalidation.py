"""Cache invalidation across BFF replicas: the events, the bus contract, and the loop each
replica runs to apply them to its caches.

A merchant change (product or price) is written to its store first, then published as a
:class:`CacheEvent` on a :class:`ChangeBus`. Every replica runs :func:`follow`, which drops
the named entries from its :class:`~actors.shop.Shop` caches. Buses: Redis pub/sub in
production (``storage.redis.changes.RedisChangeBus``), a Ray actor holding a
:class:`~actors.change_log.ChangeLog` when embedded (``actors.client.RayChangeBus``), and
:class:`InProcessBus` within one event loop.

The bound. With the bus healthy an event reaches every replica in milliseconds. A bus may
lose events (Redis pub/sub is at most once; a restarted hub forgets its log); it must then
say :class:`Reset` to the subscriber once it is listening again, and the follower clears
every cache. While a bus is down nothing arrives, and an entry stays stale at most until it
expires: ``product_cache_ttl_ms`` / ``price_cache_ttl_ms`` is the worst case.

No Ray here.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from actors.change_log import Batch, ChangeLog

# Re-exported: the records live in storage/ so the Redis bus need not import actors/.
from storage.backoff import Backoff as Backoff
from storage.cache_events import CacheEvent as CacheEvent
from storage.cache_events import CacheKind as CacheKind
from storage.cache_events import Change as Change
from storage.cache_events import Reset as Reset
from storage.errors import StoreUnavailable

log = logging.getLogger("feira.invalidation")

R = TypeVar("R")

DEFAULT_POLL_TIMEOUT_S = 10.0
POLL_BACKOFF = Backoff()
FOLLOW_BACKOFF = Backoff(0.1, 10.0)




class ChangeBus(Protocol):
    """Publish cache events to every replica; subscribe to them.

    - ``publish`` returns once the bus has taken the event; it raises
      :class:`~storage.errors.StoreUnavailable` when it cannot (the caller logs it: the
      caches' TTL still bounds how stale a replica gets).
    - ``subscribe`` yields events in publication order. Its first item, once the
      subscription is live, is a :class:`Reset`, and it yields another whenever events may
      have been lost (reconnect, the subscriber fell behind, the hub restarted). Transient
      outages are retried inside the subscription with backoff; any exception that escapes
      it ends the subscription. The iterator finishes only when the bus is closed.
    - ``close`` ends every subscription; ``publish`` fails afterwards.
    """

    async def publish(self, event: CacheEvent) -> None: ...

    def subscribe(self) -> AsyncIterator[Change]: ...

    async def close(self) -> None: ...


class CacheTarget(Protocol):
    """What :func:`follow` needs of a replica: :class:`~actors.shop.Shop` is one."""

    def invalidate_products(self, product_ids: Sequence[str]) -> None: ...

    def invalidate_prices(self, skus: Sequence[str]) -> None: ...

    def clear_caches(self) -> None: ...


def apply_change(target: CacheTarget, change: Change) -> None:
    if isinstance(change, Reset):
        target.clear_caches()
    elif change.kind is CacheKind.PRODUCT:
        target.invalidate_products(change.keys)
    else:
        target.invalidate_prices(change.keys)


def publishing(bus: ChangeBus) -> Callable[[str, Sequence[str]], Awaitable[None]]:
    """A change hook ``(kind, keys)`` (``actors.merchant.ChangeHook``) that publishes on
    ``bus``. Call it after the change is committed to its store. A bus that cannot take the
    event is logged, not raised: the change is committed, and every replica sees it within
    its cache TTL anyway."""

    async def publish(kind: str, keys: Sequence[str]) -> None:
        if not keys:
            return
        event = CacheEvent(CacheKind(kind), tuple(keys))
        try:
            await bus.publish(event)
        except StoreUnavailable as error:
            log.warning(
                "cache invalidation of %d %s key(s) not published (%s); other replicas "
                "catch up when their entries expire",
                len(event.keys),
                event.kind.value,
                error,
            )

    return publish


# --- a subscription that long-polls a ChangeLog --------------------------------------

Fetch = Callable[[str | None, int, float], Awaitable[Batch[CacheEvent]]]
"""``fetch(epoch, after_seq, timeout_s)``: :meth:`ChangeLog.wait_since`, locally or remotely."""


async def poll_changes(
    fetch: Fetch,
    *,
    poll_timeout_s: float = DEFAULT_POLL_TIMEOUT_S,
    transient: tuple[type[BaseException], ...] = (StoreUnavailable,),
    backoff: Backoff = POLL_BACKOFF,
    closing: asyncio.Event | None = None,
    source: str = "change log",
) -> AsyncIterator[Change]:
    """Follow a :class:`ChangeLog` through ``fetch``: yields its events in order, and a
    :class:`Reset` first and whenever the log says events were lost (new epoch: the log
    restarted; or the subscriber fell out of the ring). Errors of the ``transient`` types
    are retried with backoff from the same position, so a call that merely failed loses
    nothing; a log that restarted meanwhile answers with a new epoch, hence a Reset.
    Ends when ``closing`` is set."""
    epoch: str | None = None
    after = 0
    failures = 0
    while closing is None or not closing.is_set():
        try:
            batch = await _unless_closed(fetch(epoch, after, poll_timeout_s), closing)
        except transient as error:
            failures += 1
            _log_failure(source, failures, error)
            await _unless_closed(asyncio.sleep(backoff.delay(failures)), closing)
            continue
        if batch is None:
            return
        if failures:
            log.info("%s answers again after %d failed polls", source, failures)
            failures = 0
        if batch.reset:
            if epoch is None:
                reason = "subscribed"
            elif batch.epoch != epoch:
                reason = f"{source} restarted"
            else:
                reason = "fell behind"
            yield Reset(reason)
        else:
            for event in batch.events:
                yield event
        epoch, after = batch.epoch, batch.latest_seq


def _log_failure(source: str, failures: int, error: BaseException) -> None:
    # The first failure of a run says what happened; the rest are counted, not repeated.
    level = logging.WARNING if failures == 1 else logging.DEBUG
    log.log(level, "%s unreachable (attempt %d), retrying: %r", source, failures, error)


async def _unless_closed(aw: Awaitable[R], closing: asyncio.Event | None) -> R | None:
    """``await aw``, or None as soon as ``closing`` is set (``aw`` is then cancelled)."""
    if closing is None:
        return await aw
    if closing.is_set():
        if inspect.iscoroutine(aw):
            aw.close()
        return None
    work = asyncio.ensure_future(aw)
    stop = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not work.done():
            work.cancel()
    if not work.done() or work.cancelled():
        return None
    return work.result()


class InProcessBus:
    """A :class:`ChangeBus` inside one event loop: a :class:`ChangeLog` and long polls on
    it, the same subscription code as the Ray hub's. For tests and single-process use."""

    def __init__(
        self, capacity: int = 1_024, *, poll_timeout_s: float = DEFAULT_POLL_TIMEOUT_S
    ) -> None:
        self.log: ChangeLog[CacheEvent] = ChangeLog(capacity)
        self._poll_timeout_s = poll_timeout_s
        self._closing = asyncio.Event()

    async def publish(self, event: CacheEvent) -> None:
        if self._closing.is_set():
            raise StoreUnavailable("in-process change bus is closed")
        self.log.append(event)

    def subscribe(self) -> AsyncIterator[Change]:
        return poll_changes(
            self._fetch,
            poll_timeout_s=self._poll_timeout_s,
            closing=self._closing,
            source="in-process change bus",
        )

    async def _fetch(self, epoch: str | None, after: int, timeout_s: float) -> Batch[CacheEvent]:
        return await self.log.wait_since(epoch, after, timeout_s)

    async def close(self) -> None:
        self._closing.set()


# --- the follower ------------------------------------------------------------------------


@dataclass(slots=True)
class FollowStats:
    """Counters of one follower, for a readiness report."""

    events: int = 0
    resets: int = 0
    failures: int = 0
    # time.time() of the last applied change; 0 before the first.
    last_change_at: float = 0.0
    subscribed: bool = False
    last_error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "resets": self.resets,
            "failures": self.failures,
            "last_change_at": self.last_change_at,
            "subscribed": self.subscribed,
            "last_error": self.last_error,
        }


async def follow(
    bus: ChangeBus,
    target: CacheTarget,
    *,
    backoff: Backoff = FOLLOW_BACKOFF,
    stats: FollowStats | None = None,
) -> None:
    """Apply the bus's changes to ``target`` until the bus is closed (returns) or the task
    running this is cancelled (raises CancelledError, after closing the subscription).

    Never dies of an error: one escaping the subscription, or raised by ``target``, is
    logged; caches are cleared (events may have been lost before the failure was seen) and
    the subscription is made again after a capped backoff. After such a gap the first
    change of the new subscription must be a Reset; if the bus does not send one, the
    caches are cleared anyway.
    """
    stats = stats if stats is not None else FollowStats()
    failures = 0
    gap = True
    while True:
        subscription = bus.subscribe()
        try:
            async for change in subscription:
                if gap and not isinstance(change, Reset):
                    target.clear_caches()
                    stats.resets += 1
                gap = False
                apply_change(target, change)
                if isinstance(change, Reset):
                    stats.resets += 1
                else:
                    stats.events += 1
                    # Only a real event proves the subscription works; a bus that
                    # says Reset and fails again keeps backing off.
                    failures = 0
                stats.subscribed = True
                stats.last_change_at = time.time()
            stats.subscribed = False
            return
        except Exception as error:
            failures += 1
            stats.failures += 1
            stats.subscribed = False
            stats.last_error = repr(error)[:200]
            log.warning(
                "cache invalidation: subscription failed (%d in a row); caches cleared, "
                "subscribing again",
                failures,
                exc_info=failures == 1,
            )
        finally:
            await _close_quietly(subscription)
        gap = True
        try:
            target.clear_caches()
        except Exception:
            log.exception("cache invalidation: clearing caches failed")
        await asyncio.sleep(backoff.delay(failures))


async def _close_quietly(subscription: AsyncIterator[Change]) -> None:
    aclose = getattr(subscription, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        log.debug("closing a subscription failed", exc_info=True)


class Follower:
    """:func:`follow` as a background task of the replica's event loop.

    ``start()`` needs a running loop and is idempotent; ``await stop()`` cancels the task,
    waits for it, and closes the bus.
    """

    def __init__(
        self, bus: ChangeBus, target: CacheTarget, *, backoff: Backoff = FOLLOW_BACKOFF
    ) -> None:
        self.bus = bus
        self.target = target
        self.stats = FollowStats()
        self._backoff = backoff
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                follow(self.bus, self.target, backoff=self._backoff, stats=self.stats),
                name="cache-invalidation",
            )

    @property
    def stopped(self) -> bool:
        """True when the follow loop started and has ended (it should run for good)."""
        return self._task is not None and self._task.done()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.bus.close()
