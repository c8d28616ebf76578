"""Runtime stats of the services and their sampling into the catalogued metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from actors.cart_service import CartService
from actors.commerce_metrics import (
    METRICS,
    Deltas,
    InMemoryRecorder,
    report_caches,
    report_cart_shard,
    report_outbox,
    report_shard_client,
)
from actors.domain.cart import CartLimits
from actors.kinds import ShardKind
from actors.order_processor import OrderProcessor
from actors.protocol import Op, Reply, ok
from actors.router import ShardRouter
from actors.shop import new_cart_id
from deployments.metrics import RayCommerceMetrics, ReplicaReporter
from storage.errors import StoreUnavailable
from storage.records import OutboxEvent


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Checkpoints:
    def __init__(self) -> None:
        self.fail = False
        self.saved: list[str] = []

    async def save_many(self, snapshots: Sequence[Any], ttl_s: int) -> None:
        if self.fail:
            raise StoreUnavailable("down")
        self.saved += [s["id"] for s in snapshots]

    async def load(self, cart_id: str) -> Any:
        return None

    async def delete(self, cart_id: str) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_checkpoint_lag_is_the_age_of_the_oldest_unsaved_change() -> None:
    clock, store = Clock(), Checkpoints()
    # A long lag: the test flushes by hand.
    service = CartService(CartLimits(5, 10), 3600, 100, clock, store, lag_s=3600)
    a, b = new_cart_id(), new_cart_id()
    assert service.stats()["checkpoint_lag_s"] == 0.0
    await service.apply([("create", ("op-a", a, None))])
    clock.now += 2
    await service.apply([("create", ("op-b", b, None))])
    clock.now += 3
    stats = service.stats()
    assert (stats["dirty"], stats["checkpoint_lag_s"]) == (2, 5.0)  # a's change, not b's

    store.fail = True
    with pytest.raises(StoreUnavailable):
        await service.flush()
    clock.now += 1
    stats = service.stats()
    assert (stats["dirty"], stats["checkpoint_lag_s"], stats["checkpoint_failures"]) == (2, 6, 1)

    store.fail = False
    assert await service.flush() == 2
    assert service.stats()["dirty"] == 0
    assert service.stats()["checkpoint_lag_s"] == 0.0
    await service.apply([("add", ("op-c", a, "SKU-1", 1, None))])
    clock.now += 0.5
    assert service.stats()["checkpoint_lag_s"] == 0.5  # counted from the new change
    if service._flusher is not None:
        service._flusher.cancel()


class Outbox:
    """Enough of an OrderStore for the outbox loop: claims ignore leases."""

    def __init__(self, events: list[OutboxEvent]) -> None:
        self.events = events
        self.done: set[int] = set()

    async def claim_events(
        self, consumer: str, limit: int, lease_s: float, now: float
    ) -> list[OutboxEvent]:
        return [e for e in self.events if e.id not in self.done][:limit]

    async def complete_events(self, consumer: str, event_ids: Sequence[int]) -> None:
        self.done |= set(event_ids)

    async def get_order(self, order_id: str) -> Any:
        if order_id == "o-broken":
            raise StoreUnavailable("cannot read it")
        return None

    async def record_effect(self, consumer: str, effect_key: str) -> bool:
        return True


async def test_outbox_stats_show_held_events_and_their_age() -> None:
    clock = Clock(5_000.0)
    events = [
        OutboxEvent(1, "o-broken", "order.authorized", {}, created_at=4_900.0),
        OutboxEvent(2, "o-fine", "order.authorized", {}, created_at=4_990.0),
    ]
    store = Outbox(events)
    processor = OrderProcessor(store, None, None, clock=clock)  # type: ignore[arg-type]
    clock.now += 7
    assert processor.stats()["outbox_poll_age_s"] == 7  # never polled: since start
    assert await processor.run_once() == 1
    stats = processor.stats()
    assert stats["outbox_backlog"] == 1  # the failing one, waiting for its lease
    assert stats["outbox_oldest_age_s"] == 107.0
    assert (stats["events_completed"], stats["event_failures"]) == (1, 1)
    assert stats["outbox_poll_age_s"] == 0
    clock.now += 30
    assert processor.stats()["outbox_poll_age_s"] == 30
    assert processor.stats()["outbox_oldest_age_s"] == 137.0


async def _echo(ops: list[Op]) -> list[Reply]:
    await asyncio.sleep(0.01)
    return [ok(None) for _ in ops]


async def test_router_stats_count_queue_peaks_and_calls_in_flight() -> None:
    router = ShardRouter({ShardKind.CART: [_echo]}, max_batch=100, max_inflight=1, timeout_s=5)
    first = asyncio.ensure_future(router.call(ShardKind.CART, "k", "get"))
    await asyncio.sleep(0)  # the first call leaves alone
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(router.call(ShardKind.CART, "k", "get")) for _ in range(5)]
    await asyncio.sleep(0)
    now = router.stats()["cart"]
    assert (now["pending"], now["inflight"], now["pending_peak"]) == (5, 1, 5)
    await asyncio.gather(first, *rest)
    done = router.stats(reset_peaks=True)["cart"]
    assert (done["calls"], done["ops"], done["pending"], done["inflight"]) == (2, 6, 0, 0)
    assert done["pending_peak"] == 5  # reported, then reset
    assert router.stats()["cart"]["pending_peak"] == 0


def test_deltas_feed_counters_and_survive_a_restart() -> None:
    d = Deltas()
    assert [d.take(("x",), v) for v in (3, 3, 10, 4)] == [3, 0, 7, 4]


def test_reports_use_catalogued_names_and_labels() -> None:
    rec, deltas = InMemoryRecorder(), Deltas()
    shards = {"cart": {"calls": 4, "ops": 10, "pending": 2, "pending_peak": 7, "inflight": 1,
                       "failures": 0}}  # fmt: skip
    report_shard_client(rec, deltas, shards)
    shards["cart"] |= {"calls": 5, "ops": 19}
    report_shard_client(rec, deltas, shards)
    assert rec.counter("feira_shard_ops", kind="cart") == 19
    assert rec.counter("feira_shard_calls", kind="cart") == 5
    assert rec.counter("feira_shard_call_failures", kind="cart") == 0  # nothing added: no inc
    assert rec.gauge("feira_shard_queue_depth_peak", kind="cart") == 7

    report_caches(rec, deltas, {"page_stock_hits": 8, "page_stock_misses": 2, "price_hits": 1})
    assert rec.counter("feira_cache_hits", cache="page_stock") == 8
    assert rec.counter("feira_cache_misses", cache="page_stock") == 2

    report_cart_shard(rec, deltas, 3, {"carts": 9, "dirty": 2, "checkpoint_lag_s": 0.4,
                                       "checkpoint_failures": 1})  # fmt: skip
    assert rec.gauge("feira_cart_checkpoint_lag_seconds", shard="3") == 0.4
    assert rec.gauge("feira_cart_checkpoint_pending_carts", shard="3") == 2
    assert rec.counter("feira_cart_checkpoint_failures", shard="3") == 1

    report_outbox(rec, deltas, {"outbox_backlog": 2, "outbox_oldest_age_s": 12.5,
                                "outbox_poll_age_s": 0.3, "events_completed": 40,
                                "event_failures": 2})  # fmt: skip
    assert rec.gauge("feira_outbox_oldest_event_age_seconds") == 12.5
    assert rec.counter("feira_outbox_events_completed") == 40


async def test_the_replica_reporter_samples_client_and_caches() -> None:
    rec = InMemoryRecorder()
    stats = {"pricing": {"calls": 2, "ops": 2, "pending": 0, "pending_peak": 1, "inflight": 0,
                         "failures": 1}}  # fmt: skip
    reporter = ReplicaReporter(lambda: stats, lambda: {"product_hits": 5}, rec)
    await reporter.report()
    assert rec.counter("feira_shard_call_failures", kind="pricing") == 1
    assert rec.counter("feira_cache_hits", cache="product") == 5


def test_commerce_metrics_record_through_the_catalog() -> None:
    rec = InMemoryRecorder()
    m = RayCommerceMetrics(rec)
    m.cart_created()
    m.order_placed(30.0, 1999, "EUR")
    m.order_placed(-1.0, 0, "EUR")  # clock skew: 0 s; a free order adds no value
    m.payment_failed("payment_declined")
    m.checkout_refused("cart_empty")
    assert rec.counter("feira_orders_placed", currency="EUR") == 2
    assert rec.counter("feira_order_value_minor", currency="EUR") == 1999
    assert [v for _, _, v in rec.observations] == [30.0, 0.0]


def test_the_recorder_refuses_what_the_catalog_does_not_export() -> None:
    rec = InMemoryRecorder()
    with pytest.raises(KeyError):
        rec.set("feira_not_a_metric", 1)
    with pytest.raises(ValueError, match="labels"):
        rec.inc("feira_http_errors", 1, {"code": "x", "path": "/v1/carts/abc"})
    with pytest.raises(TypeError):
        rec.set("feira_http_errors", 1, {"code": "x"})


def test_the_catalog_is_consistent() -> None:
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    for m in METRICS:
        assert m.name.startswith("feira_")
        assert not m.name.endswith("_total"), "Ray adds _total to counters"
        assert (m.kind == "histogram") == bool(m.boundaries)
        assert list(m.boundaries) == sorted(set(m.boundaries))
        # Only low-cardinality labels: never a raw path, id or user.
        assert not set(m.labels) & {"path", "id", "cart_id", "sku", "user", "request_id"}
        if "seconds" in m.name:
            assert m.name.endswith("_seconds"), m.name
