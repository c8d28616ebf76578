"""Thin Ray actor shells around the shard services. Behaviour lives in the services.

Each shell is named, detached and restartable: Ray restarts it after a crash and it
reloads what it needs from its store on first use.

Observability lives here too, not in the services: every shell logs JSON lines
(:func:`feira.logs.install_json_logs`, with the actor's name, id and node); a shard's
``apply`` takes the request ids of its batch (``request_ids``, sent by the shard client)
and binds them while the batch runs, so whatever the service logs carries them; and the
shells sample their services' stats into Ray's metrics (:class:`RayRecorder`, the names
in :data:`actors.commerce_metrics.METRICS`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import ray

from actors.cart_service import CartService
from actors.change_log import DEFAULT_CAPACITY, DEFAULT_MAX_EVENTS, Batch, ChangeLog
from actors.commerce_metrics import (
    METRIC_SPECS,
    SAMPLE_INTERVAL_S,
    Deltas,
    report_cart_shard,
    report_outbox,
)
from actors.domain.cart import CartLimits
from actors.index_sync import FilePosition, IndexSync
from actors.invalidation import CacheEvent
from actors.inventory_service import InventoryService
from actors.order_processor import OrderProcessor, SandboxAuthorizations
from actors.periodic import Periodic
from actors.pricing_service import PricingService
from actors.protocol import Op, Reply
from feira.logs import install_json_logs, request_scope
from feira.settings import Settings
from feira.stores import open_configured_search, open_configured_stores, search_position_path

log = logging.getLogger("feira.shards")


# --- metrics and logs --------------------------------------------------------------------


@functools.cache
def ray_metric(name: str) -> Any:
    """The Ray instrument for a metric of :data:`actors.commerce_metrics.METRICS`, made
    once per process on first use (a process that records nothing registers nothing)."""
    from ray.util.metrics import Counter, Gauge, Histogram

    spec = METRIC_SPECS[name]
    if spec.kind == "counter":
        return Counter(spec.name, spec.description, tag_keys=spec.labels)
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.description, tag_keys=spec.labels)
    return Histogram(
        spec.name, spec.description, boundaries=list(spec.boundaries), tag_keys=spec.labels
    )


class RayRecorder:
    """:class:`actors.commerce_metrics.MetricsRecorder` on ``ray.util.metrics``: exported on
    the node's Prometheus endpoint as ``ray_<name>``. Never raises: a failure is logged
    once per metric and the caller goes on."""

    def __init__(self) -> None:
        self._failed: set[str] = set()

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        try:
            ray_metric(name).set(value, tags=labels)
        except Exception:  # noqa: BLE001 - metrics never fail the caller
            self._failure(name)

    def inc(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        try:
            ray_metric(name).inc(value, tags=labels)
        except Exception:  # noqa: BLE001 - metrics never fail the caller
            self._failure(name)

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        try:
            ray_metric(name).observe(value, tags=labels)
        except Exception:  # noqa: BLE001 - metrics never fail the caller
            self._failure(name)

    def _failure(self, name: str) -> None:
        if name not in self._failed:
            self._failed.add(name)
            log.exception("metrics: %s not recorded (logged once)", name)


def actor_identity(component: str) -> dict[str, str]:
    """Who is logging, for every JSON line of this actor."""
    identity = {"component": component}
    try:
        ctx = ray.get_runtime_context()
        name = ctx.get_actor_name()
        if name:
            identity["actor"] = name
        actor_id = ctx.get_actor_id()
        if actor_id:
            identity["actor_id"] = actor_id
        identity["node_id"] = ctx.get_node_id()
    except Exception:  # noqa: BLE001 - identity is best effort, outside an actor too
        pass
    return identity


async def _apply_batch(
    kind: str,
    apply: Callable[[list[Op]], Awaitable[list[Reply]]],
    ops: list[Op],
    request_ids: Sequence[str],
) -> list[Reply]:
    with request_scope(request_ids):
        if log.isEnabledFor(logging.DEBUG):
            names = ",".join(sorted({name for name, _ in ops}))
            log.debug("%s batch: %d ops (%s)", kind, len(ops), names)
        return await apply(ops)


@ray.remote
class CartShard:
    def __init__(self, settings: dict[str, Any], index: int) -> None:
        s = Settings.from_wire(settings)
        install_json_logs(actor_identity("cart-shard"))
        self.index = index
        self.stores = open_configured_stores(s)
        self.service = CartService(
            CartLimits(s.cart_max_lines, s.cart_max_quantity),
            s.cart_idle_ttl_s,
            s.op_log_size,
            checkpoints=self.stores.carts,
            lag_s=s.cart_checkpoint_lag_ms / 1000,
        )
        self.sweeper = Periodic("expire-idle-carts", s.cart_sweep_interval_s, self._expire)
        self.recorder = RayRecorder()
        self.deltas = Deltas()
        self.reporter = Periodic("report-metrics", SAMPLE_INTERVAL_S, self._report)

    async def _expire(self) -> None:
        self.service.expire_idle()

    async def _report(self) -> None:
        report_cart_shard(self.recorder, self.deltas, self.index, self.service.stats())

    def _start(self) -> None:
        # Before any batch binds its request ids: these loops serve no one request.
        self.sweeper.ensure_started()
        self.reporter.ensure_started()

    async def apply(self, ops: list[Op], request_ids: Sequence[str] = ()) -> list[Reply]:
        self._start()
        return await _apply_batch("cart", self.service.apply, ops, request_ids)

    async def ready(self) -> dict[str, Any]:
        self._start()
        return {"kind": "cart", "index": self.index, **self.service.stats()}

    async def flush(self) -> dict[str, Any]:
        """Write every pending cart checkpoint now: before a planned stop of this node
        (``__ray_shutdown__`` is skipped by force-kills, so draining calls this)."""
        self._start()
        return {"flushed": await self.service.flush(), **self.service.stats()}


@ray.remote
class InventoryShard:
    def __init__(self, settings: dict[str, Any], index: int) -> None:
        s = Settings.from_wire(settings)
        install_json_logs(actor_identity("inventory-shard"))
        self.index = index
        self.stores = open_configured_stores(s)
        self.service = InventoryService(
            self.stores.stock,
            s.reservation_ttl_s,
            s.op_log_size,
            # Retries of operations sent before a crash arrive within the client's deadline.
            recall_window_s=3 * s.shard_call_timeout_ms / 1000,
        )
        # A sweep whose write fails keeps nothing and runs again: expiry is late, never lost.
        self.sweeper = Periodic(
            "expire-reservations", s.reservation_sweep_interval_ms / 1000, self.service.expire_due
        )

    async def apply(self, ops: list[Op], request_ids: Sequence[str] = ()) -> list[Reply]:
        self.sweeper.ensure_started()
        return await _apply_batch("inventory", self.service.apply, ops, request_ids)

    async def ready(self) -> dict[str, Any]:
        self.sweeper.ensure_started()
        return {"kind": "inventory", "index": self.index, **self.service.stats()}


@ray.remote
class PricingShard:
    def __init__(self, settings: dict[str, Any], index: int) -> None:
        s = Settings.from_wire(settings)
        install_json_logs(actor_identity("pricing-shard"))
        self.index = index
        self.stores = open_configured_stores(s)
        self.service = PricingService(self.stores.prices, s.currency, s.op_log_size)

    async def apply(self, ops: list[Op], request_ids: Sequence[str] = ()) -> list[Reply]:
        return await _apply_batch("pricing", self.service.apply, ops, request_ids)

    async def ready(self) -> dict[str, Any]:
        return {"kind": "pricing", "index": self.index, "skus": self.service.book.size()}


CHANGE_HUB_NAME = "feira-change-hub"


@ray.remote
class ChangeHub:
    """The embedded cache-invalidation bus: a :class:`ChangeLog` that replicas long-poll.

    One per namespace, named :data:`CHANGE_HUB_NAME`. A restart starts a new log with a new
    epoch, so every subscriber is told to reset: nothing is checkpointed on purpose.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        install_json_logs(actor_identity("change-hub"))
        self.log: ChangeLog[CacheEvent] = ChangeLog(capacity)

    async def publish(self, event: CacheEvent) -> int:
        # Every subscriber would be handed whatever is stored here.
        if not isinstance(event, CacheEvent):
            raise TypeError(f"expected a CacheEvent, got {type(event).__name__}")
        return self.log.append(event)

    async def wait_since(
        self,
        epoch: str | None,
        after_seq: int,
        timeout_s: float,
        max_events: int = DEFAULT_MAX_EVENTS,
    ) -> Batch[CacheEvent]:
        return await self.log.wait_since(epoch, after_seq, timeout_s, max_events)

    async def ready(self) -> dict[str, Any]:
        return {
            "kind": "change-hub",
            "epoch": self.log.epoch,
            "latest_seq": self.log.latest_seq,
            "capacity": self.log.capacity,
        }


SEARCH_INDEXER_NAME = "feira-search-indexer"


@ray.remote
class SearchIndexer:
    """The one writer of the search index: follows the catalog's change feed.

    One per namespace, named :data:`SEARCH_INDEXER_NAME`. Its loop starts on the first
    call (replicas ping it), polls every ``search_sync_interval_ms`` and indexes until
    caught up. The position is saved after each committed batch, so a restart re-indexes
    at most one batch.
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        s = Settings.from_wire(settings)
        install_json_logs(actor_identity("search-indexer"))
        self.stores = open_configured_stores(s)
        self.index = open_configured_search(s)
        self.sync = IndexSync(
            self.stores.catalog,
            self.stores.prices,
            self.index,
            FilePosition(search_position_path(s)),
            batch=s.search_sync_batch,
        )
        self.loop = Periodic("search-index-sync", s.search_sync_interval_ms / 1000, self._tick)
        self.recorder = RayRecorder()
        self.rebuilding = False
        # The loop's catch-up and a rebuild must not interleave on the one IndexSync.
        self.busy = asyncio.Lock()

    async def _tick(self) -> None:
        async with self.busy:
            await self.sync.catch_up()
        self._report()

    def _report(self) -> None:
        stats = self.sync.stats()
        self.recorder.set("feira_search_index_lag_seconds", stats.lag_s)
        self.recorder.set("feira_search_index_pending_changes", stats.pending)

    async def rebuild(self) -> int:
        """Drop the index and index the whole catalog again; returns products indexed."""
        self.loop.ensure_started()
        async with self.busy:
            self.rebuilding = True
            try:
                return await self.sync.rebuild()
            finally:
                self.rebuilding = False
                self._report()

    async def ready(self) -> dict[str, Any]:
        self.loop.ensure_started()
        stats = self.sync.stats()
        return {
            "kind": "search-indexer",
            "indexed_seq": stats.indexed_seq,
            "catalog_seq": stats.catalog_seq,
            "pending": stats.pending,
            "lag_s": round(stats.lag_s, 3),
            "rebuilding": self.rebuilding,
        }


ORDER_PROCESSOR_NAME = "feira-order-processor"
PURGE_INTERVAL_S = 600.0


@ray.remote
class OrderProcessorShell:
    """Works the order outbox: after authorization, commit stock, capture, ship; expires
    unpaid orders. One per namespace; every step is idempotent, so a restart mid-batch
    re-does nothing twice (see ``OrderProcessor``). The loop starts on the first call
    (replicas ping it)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from actors.client import ShardClient  # the seam imports this module
        from feira.payments import open_sandbox

        s = Settings.from_wire(settings)
        install_json_logs(actor_identity("order-processor"))
        self.stores = open_configured_stores(s)
        provider, ledger = open_sandbox(s)
        self.processor = OrderProcessor(
            self.stores.orders,
            ShardClient.connect(s),
            provider,
            journal=self.stores.stock,
            carriers=s.carriers,
            authorizations=SandboxAuthorizations(ledger),
            lease_s=s.order_outbox_lease_s,
        )
        self.loop = Periodic("order-processor", s.order_processor_interval_ms / 1000, self._tick)
        # Idempotency keys outlive their 24 h on purpose; a sweep now and then drops them.
        self.purge = Periodic("purge-idempotency-keys", PURGE_INTERVAL_S, self._purge)
        self.recorder = RayRecorder()
        self.deltas = Deltas()
        self.reporter = Periodic("report-metrics", SAMPLE_INTERVAL_S, self._report)
        self.handled = 0
        self.expired = 0
        self.purged = 0

    async def _tick(self) -> None:
        while n := await self.processor.run_once():
            self.handled += n
        self.expired += await self.processor.expire_due()

    async def _purge(self) -> None:
        self.purged += await self.stores.orders.purge_idempotency(time.time())

    async def _report(self) -> None:
        report_outbox(self.recorder, self.deltas, self.processor.stats())

    async def ready(self) -> dict[str, Any]:
        self.loop.ensure_started()
        self.purge.ensure_started()
        self.reporter.ensure_started()
        return {
            "kind": "order-processor",
            "handled": self.handled,
            "expired": self.expired,
            "idempotency_keys_purged": self.purged,
            **self.processor.stats(),
        }


SHELLS: dict[str, Any] = {
    "cart": CartShard,
    "inventory": InventoryShard,
    "pricing": PricingShard,
}
