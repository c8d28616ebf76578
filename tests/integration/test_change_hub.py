"""The embedded cache-invalidation bus on a real local Ray cluster: the ChangeHub actor,
subscribers in this process and in another actor's, and the hub killed under them."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import ray

from actors.client import RayChangeBus, ensure_change_hub
from actors.invalidation import Backoff, CacheEvent, Change, Reset, follow
from actors.shells import CHANGE_HUB_NAME
from feira.settings import Settings

pytestmark = pytest.mark.integration

FAST = Backoff(0.05, 0.5)


@ray.remote(num_cpus=0)
class Probe:
    """A replica stand-in in another process: follows the bus into a call log."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = Settings.from_wire(settings)
        self.calls: list[tuple[str, tuple[str, ...], float]] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        bus = RayChangeBus.connect(self.settings, backoff=FAST)
        self.task = asyncio.get_running_loop().create_task(follow(bus, self, backoff=FAST))

    def invalidate_products(self, product_ids: Sequence[str]) -> None:
        self.calls.append(("products", tuple(product_ids), time.monotonic()))

    def invalidate_prices(self, skus: Sequence[str]) -> None:
        self.calls.append(("prices", tuple(skus), time.monotonic()))

    def clear_caches(self) -> None:
        self.calls.append(("clear", (), time.monotonic()))

    async def seen(self) -> list[tuple[str, tuple[str, ...], float]]:
        return self.calls


async def next_change(sub: AsyncIterator[Change], timeout_s: float = 20.0) -> Change:
    return await asyncio.wait_for(anext(sub), timeout_s)


async def probe_until(
    probe: Any, predicate: Callable[[list[tuple[str, tuple[str, ...], float]]], bool]
) -> list[tuple[str, tuple[str, ...], float]]:
    deadline = time.monotonic() + 30
    while True:
        calls: list[tuple[str, tuple[str, ...], float]] = await probe.seen.remote()
        if predicate(calls):
            return calls
        assert time.monotonic() < deadline, calls
        await asyncio.sleep(0.02)


def names(calls: list[tuple[str, tuple[str, ...], float]]) -> list[tuple[str, tuple[str, ...]]]:
    return [(name, keys) for name, keys, _ in calls]


@pytest.fixture(scope="module")
async def probe(ray_cluster: None, seeded: Settings) -> AsyncIterator[Any]:
    p = Probe.remote(seeded.to_wire())  # type: ignore[attr-defined]
    await p.start.remote()
    await probe_until(p, lambda calls: ("clear", ()) in names(calls))
    yield p
    ray.kill(p)


def hub(settings: Settings) -> Any:
    return ray.get_actor(CHANGE_HUB_NAME, namespace=settings.namespace)


async def test_get_or_create_is_one_hub_under_a_race(ray_cluster: None, seeded: Settings) -> None:
    handles: list[Any] = []

    def get() -> None:
        handles.append(ensure_change_hub(seeded))

    threads = [threading.Thread(target=get) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = {h._actor_id for h in handles} | {hub(seeded)._actor_id}
    assert len(ids) == 1
    report = await handles[0].ready.remote()
    assert report["kind"] == "change-hub"
    # Subscribers are handed whatever the hub holds: it takes cache events only.
    with pytest.raises(TypeError, match="CacheEvent"):
        await handles[0].publish.remote({"kind": "price", "keys": ["x"]})


async def test_a_publish_reaches_subscribers_here_and_in_another_process(
    probe: Any, seeded: Settings
) -> None:
    bus = RayChangeBus.connect(seeded, backoff=FAST)
    sub = bus.subscribe()
    assert await next_change(sub) == Reset("subscribed")
    other_bus = RayChangeBus.connect(seeded)
    other = other_bus.subscribe()
    assert isinstance(await next_change(other), Reset)
    event = CacheEvent.products(["p-shared-1"])
    await bus.publish(event)
    assert await next_change(sub) == event
    assert await next_change(other) == event
    await probe_until(probe, lambda calls: ("products", ("p-shared-1",)) in names(calls))
    await bus.close()
    await other_bus.close()
    with pytest.raises(StopAsyncIteration):
        await next_change(sub, 2)
    with pytest.raises(StopAsyncIteration):
        await next_change(other, 2)


async def test_killed_hub_restarts_and_subscribers_reset_then_hear_later_events(
    probe: Any, seeded: Settings
) -> None:
    bus = RayChangeBus.connect(seeded, backoff=FAST)
    sub = bus.subscribe()
    assert isinstance(await next_change(sub), Reset)
    await bus.publish(CacheEvent.prices(["SKU-before-kill"]))
    assert await next_change(sub) == CacheEvent.prices(["SKU-before-kill"])
    await probe_until(probe, lambda calls: ("prices", ("SKU-before-kill",)) in names(calls))
    seen_before = len(await probe.seen.remote())
    epoch = (await hub(seeded).ready.remote())["epoch"]

    ray.kill(hub(seeded), no_restart=False)

    # The long poll in flight fails; the subscription retries until the restarted hub
    # answers with a new epoch, and says Reset.
    assert await next_change(sub, 60) == Reset("change hub restarted")
    assert (await hub(seeded).ready.remote())["epoch"] != epoch
    await probe_until(probe, lambda calls: ("clear", ()) in names(calls[seen_before:]))
    await bus.publish(CacheEvent.prices(["SKU-after-kill"]))
    assert await next_change(sub) == CacheEvent.prices(["SKU-after-kill"])
    calls = names(await probe_until(
        probe, lambda calls: ("prices", ("SKU-after-kill",)) in names(calls)
    ))[seen_before:]  # fmt: skip
    assert calls.index(("clear", ())) < calls.index(("prices", ("SKU-after-kill",)))
    await bus.close()


async def test_a_hub_killed_for_good_is_created_again(probe: Any, seeded: Settings) -> None:
    bus = RayChangeBus.connect(seeded, backoff=FAST)
    sub = bus.subscribe()
    assert isinstance(await next_change(sub), Reset)
    seen_before = len(await probe.seen.remote())
    old = hub(seeded)._actor_id
    ray.kill(hub(seeded), no_restart=True)
    assert await next_change(sub, 60) == Reset("change hub restarted")
    assert hub(seeded)._actor_id != old
    await probe_until(probe, lambda calls: ("clear", ()) in names(calls[seen_before:]))
    await bus.publish(CacheEvent.products(["p-after-recreate"]))
    assert await next_change(sub) == CacheEvent.products(["p-after-recreate"])
    await probe_until(probe, lambda calls: ("products", ("p-after-recreate",)) in names(calls))
    await bus.close()


async def test_delivery_latency_to_another_process(probe: Any, seeded: Settings) -> None:
    """Publish here → applied in the probe actor's process. Printed, not asserted."""
    bus = RayChangeBus.connect(seeded, backoff=FAST)
    latencies = []
    for i in range(50):
        key = f"SKU-lat-{i}"
        sent = time.monotonic()
        await bus.publish(CacheEvent.prices([key]))
        calls = await probe_until(probe, lambda calls, key=key: ("prices", (key,)) in names(calls))
        applied = next(t for name, keys, t in calls if keys == (key,))
        latencies.append((applied - sent) * 1000)
    q = statistics.quantiles(latencies, n=20)
    print(
        f"\nray change hub publish→applied in another actor, 50 events: "
        f"p50 {statistics.median(latencies):.1f} ms, p95 {q[18]:.1f} ms, "
        f"max {max(latencies):.1f} ms"
    )
    await bus.close()
