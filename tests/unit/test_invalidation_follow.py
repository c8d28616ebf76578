"""Cache events, the polling subscription, and the follower loop each replica runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from actors.change_log import Batch, ChangeLog
from actors.invalidation import (
    Backoff,
    CacheEvent,
    CacheKind,
    Change,
    ChangeBus,
    Follower,
    FollowStats,
    InProcessBus,
    Reset,
    follow,
    poll_changes,
    publishing,
)
from actors.shop import Shop
from storage.errors import StoreUnavailable

FAST = Backoff(0.001, 0.01)


class Recorder:
    """A CacheTarget that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def invalidate_products(self, product_ids: Sequence[str]) -> None:
        self.calls.append(("products", tuple(product_ids)))

    def invalidate_prices(self, skus: Sequence[str]) -> None:
        self.calls.append(("prices", tuple(skus)))

    def clear_caches(self) -> None:
        self.calls.append(("clear", ()))


async def until(predicate: Callable[[], bool], timeout_s: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- events ----------------------------------------------------------------------------


def test_event_normalises_and_round_trips() -> None:
    event = CacheEvent("price", ["SKU-1", "SKU-2"])  # type: ignore[arg-type]
    assert event.kind is CacheKind.PRICE
    assert event.keys == ("SKU-1", "SKU-2")
    assert event == CacheEvent.prices(["SKU-1", "SKU-2"])
    assert event.to_json() == {"kind": "price", "keys": ["SKU-1", "SKU-2"]}
    assert CacheEvent.from_json(event.to_json()) == event
    assert CacheEvent.products(iter(["p-1"])).kind is CacheKind.PRODUCT
    assert hash(event) == hash(CacheEvent.prices(("SKU-1", "SKU-2")))


@pytest.mark.parametrize(
    ("kind", "keys", "error"),
    [
        ("price", "SKU-1", TypeError),  # one string is not a list of keys
        ("price", (), ValueError),
        ("price", ("",), ValueError),
        ("price", (1,), ValueError),
        ("stock", ("SKU-1",), ValueError),
    ],
)
def test_event_rejects_bad_values(kind: Any, keys: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        CacheEvent(kind, keys)


@pytest.mark.parametrize(
    "data",
    [None, [], {"kind": "price"}, {"kind": "price", "keys": "SKU"}, {"kind": 3, "keys": ["a"]},
     {"kind": "nope", "keys": ["a"]}, {"kind": "price", "keys": []}],
)  # fmt: skip
def test_event_from_json_rejects_junk(data: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        CacheEvent.from_json(data)


def test_backoff_grows_is_capped_and_jittered() -> None:
    b = Backoff(0.1, 1.0)
    for attempt, base in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (500, 1.0)]:
        for _ in range(20):
            assert base / 2 <= b.delay(attempt) <= base
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(0, 1)
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(2, 1)


# --- the in-process bus and the polling subscription ----------------------------------


async def test_subscription_starts_with_reset_then_events_in_order() -> None:
    bus = InProcessBus()
    sub = bus.subscribe()
    assert isinstance(await anext(sub), Reset)
    await bus.publish(CacheEvent.prices(["a"]))
    await bus.publish(CacheEvent.products(["p"]))
    assert await anext(sub) == CacheEvent.prices(["a"])
    assert await anext(sub) == CacheEvent.products(["p"])
    await bus.close()
    with pytest.raises(StopAsyncIteration):
        await anext(sub)
    with pytest.raises(StoreUnavailable):
        await bus.publish(CacheEvent.prices(["a"]))


async def test_close_ends_a_waiting_subscription_at_once() -> None:
    bus = InProcessBus(poll_timeout_s=30)
    sub = bus.subscribe()
    assert isinstance(await anext(sub), Reset)
    waiting: asyncio.Future[Change] = asyncio.ensure_future(anext(sub))
    await asyncio.sleep(0.02)
    await bus.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 1)


async def test_every_subscriber_gets_every_event() -> None:
    bus = InProcessBus()
    subs = [bus.subscribe() for _ in range(3)]
    for sub in subs:
        assert isinstance(await anext(sub), Reset)
    events = [CacheEvent.prices([f"s{i}"]) for i in range(5)]
    for event in events:
        await bus.publish(event)
    for sub in subs:
        assert [await anext(sub) for _ in events] == events
    await bus.close()


class FlakyLog:
    """A fetch over a ChangeLog that fails on demand and can be 'restarted'."""

    def __init__(self) -> None:
        self.log: ChangeLog[CacheEvent] = ChangeLog(100)
        self.failures_left = 0
        self.calls = 0

    async def fetch(self, epoch: str | None, after: int, timeout_s: float) -> Batch[CacheEvent]:
        self.calls += 1
        if self.failures_left:
            self.failures_left -= 1
            raise StoreUnavailable("hub is restarting")
        return await self.log.wait_since(epoch, after, min(timeout_s, 0.05))


async def test_poll_retries_transient_errors_without_losing_or_resetting() -> None:
    hub = FlakyLog()
    sub = poll_changes(hub.fetch, backoff=FAST)
    assert isinstance(await anext(sub), Reset)
    hub.log.append(CacheEvent.prices(["a"]))
    hub.failures_left = 3
    hub.log.append(CacheEvent.prices(["b"]))
    # The failed calls asked from the same position: both events arrive, no Reset.
    assert await anext(sub) == CacheEvent.prices(["a"])
    assert await anext(sub) == CacheEvent.prices(["b"])
    assert hub.calls >= 4


async def test_poll_resets_when_the_log_restarted() -> None:
    hub = FlakyLog()
    sub = poll_changes(hub.fetch, backoff=FAST)
    assert await anext(sub) == Reset("subscribed")
    hub.log.append(CacheEvent.prices(["a"]))
    assert await anext(sub) == CacheEvent.prices(["a"])
    hub.failures_left = 2
    hub.log = ChangeLog(100)  # lost whatever it held
    hub.log.append(CacheEvent.prices(["b"]))
    assert await anext(sub) == Reset("change log restarted")
    hub.log.append(CacheEvent.prices(["c"]))
    assert await anext(sub) == CacheEvent.prices(["c"])


async def test_poll_lets_other_errors_through() -> None:
    async def broken(epoch: str | None, after: int, timeout_s: float) -> Batch[CacheEvent]:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):
        await anext(poll_changes(broken, backoff=FAST))


# --- follow ----------------------------------------------------------------------------


async def test_follow_applies_resets_and_events() -> None:
    bus = InProcessBus()
    target = Recorder()
    task = asyncio.create_task(follow(bus, target, backoff=FAST))
    await until(lambda: target.calls == [("clear", ())])
    await bus.publish(CacheEvent.products(["p-1", "p-2"]))
    await bus.publish(CacheEvent.prices(["SKU-1"]))
    await until(lambda: len(target.calls) == 3)
    assert target.calls[1:] == [("products", ("p-1", "p-2")), ("prices", ("SKU-1",))]
    await bus.close()
    await asyncio.wait_for(task, 1)  # a closed bus ends the follower normally


async def test_follow_drops_entries_from_a_real_shop() -> None:
    shop = Shop(shards=Any, catalog=Any, currency="EUR")  # type: ignore[arg-type]
    bus: ChangeBus = InProcessBus()
    stats = FollowStats()
    task = asyncio.create_task(follow(bus, shop, stats=stats))
    await until(lambda: stats.resets == 1)
    shop.products.put("p-1", {"id": "p-1"})
    shop.products.put("p-2", {"id": "p-2"})
    shop.related.put("home", [])
    shop.prices.put("SKU-1", {"sku": "SKU-1"})
    shop.prices.put("SKU-2", {"sku": "SKU-2"})
    await bus.publish(CacheEvent.products(["p-1"]))
    await bus.publish(CacheEvent.prices(["SKU-2"]))
    await until(lambda: stats.events == 2)
    assert shop.products.get("p-1") is None
    assert shop.products.get("p-2") is not None
    assert shop.related.get("home") is None
    assert shop.prices.get("SKU-2") is None
    assert shop.prices.get("SKU-1") is not None
    await stop(task)


async def test_a_follower_that_fell_behind_clears_everything() -> None:
    bus = InProcessBus(capacity=2)
    target = Recorder()
    task = asyncio.create_task(follow(bus, target, backoff=FAST))
    await until(lambda: len(target.calls) == 1)
    # Five events before the follower runs again: three of them leave the ring.
    for i in range(5):
        await bus.publish(CacheEvent.prices([f"s{i}"]))
    await until(lambda: len(target.calls) == 2)
    await asyncio.sleep(0.02)
    assert target.calls == [("clear", ()), ("clear", ())]
    await bus.publish(CacheEvent.prices(["later"]))
    await until(lambda: target.calls[-1] == ("prices", ("later",)))
    await stop(task)


class ScriptedBus:
    """Each subscription plays the next script; an exception in a script is raised."""

    def __init__(self, scripts: list[list[Change | Exception]], then_wait: bool = True) -> None:
        self.scripts = scripts
        self.subscriptions = 0
        self.closed_subscriptions = 0
        self.then_wait = then_wait

    async def publish(self, event: CacheEvent) -> None:
        raise NotImplementedError

    async def subscribe(self) -> AsyncIterator[Change]:
        script = self.scripts[min(self.subscriptions, len(self.scripts) - 1)]
        self.subscriptions += 1
        try:
            for item in script:
                await asyncio.sleep(0)
                if isinstance(item, Exception):
                    raise item
                yield item
            if self.then_wait:
                await asyncio.Event().wait()
        finally:
            self.closed_subscriptions += 1

    async def close(self) -> None:
        pass


async def test_follow_survives_bus_errors_and_clears_after_reconnect() -> None:
    a, b = CacheEvent.prices(["a"]), CacheEvent.prices(["b"])
    bus = ScriptedBus([[Reset(), a, ConnectionError("gone")], [Reset(), b]])
    target = Recorder()
    stats = FollowStats()
    task = asyncio.create_task(follow(bus, target, backoff=FAST, stats=stats))
    await until(lambda: ("prices", ("b",)) in target.calls)
    assert target.calls == [
        ("clear", ()),  # first Reset
        ("prices", ("a",)),
        ("clear", ()),  # the failure: events may have been lost before it was noticed
        ("clear", ()),  # the new subscription's Reset
        ("prices", ("b",)),
    ]
    assert (stats.failures, stats.events, stats.subscribed) == (1, 2, True)
    assert "gone" in stats.last_error
    await stop(task)
    assert bus.closed_subscriptions == bus.subscriptions == 2


async def test_follow_clears_even_if_the_bus_forgets_to_reset() -> None:
    a, b = CacheEvent.prices(["a"]), CacheEvent.prices(["b"])
    bus = ScriptedBus([[a, OSError("reset by peer")], [b]])
    target = Recorder()
    task = asyncio.create_task(follow(bus, target, backoff=FAST))
    await until(lambda: ("prices", ("b",)) in target.calls)
    assert target.calls == [
        ("clear", ()),  # no Reset on the first subscription either: cleared for it
        ("prices", ("a",)),
        ("clear", ()),
        ("clear", ()),
        ("prices", ("b",)),
    ]
    await stop(task)


async def test_follow_survives_a_failing_target() -> None:
    class Broken(Recorder):
        fail = True

        def invalidate_prices(self, skus: Sequence[str]) -> None:
            if self.fail:
                self.fail = False
                raise KeyError("bug in a cache")
            super().invalidate_prices(skus)

    bus = InProcessBus()
    target = Broken()
    task = asyncio.create_task(follow(bus, target, backoff=FAST))
    await until(lambda: len(target.calls) == 1)
    await bus.publish(CacheEvent.prices(["a"]))
    await until(lambda: target.calls.count(("clear", ())) >= 3)  # error, then new Reset
    await bus.publish(CacheEvent.prices(["b"]))
    await until(lambda: target.calls[-1] == ("prices", ("b",)))
    await stop(task)


async def test_follow_backoff_is_capped_while_the_bus_keeps_failing() -> None:
    bus = ScriptedBus([[RuntimeError("down")]])
    target = Recorder()
    task = asyncio.create_task(follow(bus, target, backoff=Backoff(0.001, 0.005)))
    await asyncio.sleep(0.3)
    # Uncapped doubling from 1 ms would allow about 8 attempts in 0.3 s.
    assert bus.subscriptions >= 30
    await stop(task)


async def test_cancelling_follow_closes_the_subscription() -> None:
    bus = ScriptedBus([[Reset()]])
    task = asyncio.create_task(follow(bus, Recorder()))
    await until(lambda: bus.subscriptions == 1)
    await asyncio.sleep(0.01)
    await stop(task)
    assert bus.closed_subscriptions == 1


async def test_follower_starts_once_and_stops_cleanly() -> None:
    bus = InProcessBus()
    target = Recorder()
    follower = Follower(bus, target, backoff=FAST)
    follower.start()
    follower.start()
    await until(lambda: follower.stats.resets == 1)
    await bus.publish(CacheEvent.products(["p"]))
    await until(lambda: follower.stats.events == 1)
    assert follower.stats.to_json()["subscribed"] is True
    await follower.stop()
    await follower.stop()
    with pytest.raises(StoreUnavailable):
        await bus.publish(CacheEvent.products(["p"]))
    assert target.calls == [("clear", ()), ("products", ("p",))]


async def test_many_followers_one_bus() -> None:
    bus = InProcessBus()
    targets = [Recorder() for _ in range(5)]
    tasks = [asyncio.create_task(follow(bus, t)) for t in targets]
    await until(lambda: all(t.calls for t in targets))
    keys = [f"s{i}" for i in range(20)]
    for i in range(0, len(keys), 3):
        await bus.publish(CacheEvent.prices(keys[i : i + 3]))
    await until(lambda: all(sum(len(k) for _, k in t.calls) == len(keys) for t in targets))
    for t in targets:
        assert [k for name, ks in t.calls if name == "prices" for k in ks] == keys
    await bus.close()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)


async def test_publishing_hook_publishes_and_never_raises_for_an_unavailable_bus(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = InProcessBus()
    sub = bus.subscribe()
    assert isinstance(await anext(sub), Reset)
    hook = publishing(bus)
    await hook("product", ["p-1"])
    await hook("price", [])  # nothing changed: nothing sent
    await hook("price", ("SKU-1", "SKU-2"))
    assert await anext(sub) == CacheEvent.products(["p-1"])
    assert await anext(sub) == CacheEvent.prices(["SKU-1", "SKU-2"])
    await bus.close()
    await hook("price", ["SKU-3"])  # logged, not raised: the change itself is committed
    assert "not published" in caplog.text
    with pytest.raises(ValueError, match="stock"):
        await hook("stock", ["SKU-1"])  # a programming error is not swallowed


async def test_follower_reports_a_stopped_loop_for_the_health_check() -> None:
    from actors.invalidation import Follower

    follower = Follower(None, None)  # type: ignore[arg-type]
    assert not follower.stopped  # never started: nothing to report
    # The loop retries every bus error for good; a finished task means it died.
    follower._task = asyncio.get_running_loop().create_task(asyncio.sleep(0))
    assert not follower.stopped
    await asyncio.sleep(0.01)
    assert follower.stopped
