"""Thin Ray actor shells around the shard services. Behaviour lives in the services.

Each shell is named, detached and restartable: Ray restarts it after a crash and it
reloads what it needs from its store on first use.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray

from actors.cart_service import CartService
from actors.change_log import DEFAULT_CAPACITY, DEFAULT_MAX_EVENTS, Batch, ChangeLog
from actors.domain.cart import CartLimits
from actors.index_sync import FilePosition, IndexSync
from actors.invalidation import CacheEvent
from actors.inventory_service import InventoryService
from actors.order_processor import OrderProcessor, SandboxAuthorizations
from actors.periodic import Periodic
from actors.pricing_service import PricingService
from actors.protocol import Op, Reply
from feira.settings import Settings
from feira.stores import open_configured_search, open_configured_stores, search_position_path


@ray.remote
class CartShard:
    def __init__(self, settings: dict[str, Any], index: int) -> None:
        s = Settings.from_wire(settings)
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

    async def _expire(self) -> None:
        self.service.expire_idle()

    async def apply(self, ops: list[Op]) -> list[Reply]:
        self.sweeper.ensure_started()
        return await self.service.apply(ops)

    async def ready(self) -> dict[str, Any]:
        self.sweeper.ensure_started()
        return {"kind": "cart", "index": self.index, **self.service.stats()}


@ray.remote
class InventoryShard:
    def __init__(self, settings: dict[str, Any], index: int) -> None:
        s = Settings.from_wire(settings)
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

    async def apply(self, ops: list[Op]) -> list[Reply]:
        self.sweeper.ensure_started()
        return await self.service.apply(ops)

    async def ready(self) -> dict[str, Any]:
        self.sweeper.ensure_started()
        return {"kind": "inventory", "index": self.index, **self.service.stats()}


@ray.remote
class PricingShard:
    def __init__(self, settings: dict[str, Any], index: int) -> None:
        s = Settings.from_wire(settings)
        self.index = index
        self.stores = open_configured_stores(s)
        self.service = PricingService(self.stores.prices, s.currency, s.op_log_size)

    async def apply(self, ops: list[Op]) -> list[Reply]:
        return await self.service.apply(ops)

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
        from ray.util.metrics import Gauge

        s = Settings.from_wire(settings)
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
        self.lag = Gauge(
            "feira_search_index_lag_seconds",
            "How long the oldest catalog change not yet searchable has waited",
        )
        self.pending = Gauge(
            "feira_search_index_pending_changes", "Catalog changes not yet in the search index"
        )
        self.rebuilding = False
        # The loop's catch-up and a rebuild must not interleave on the one IndexSync.
        self.busy = asyncio.Lock()

    async def _tick(self) -> None:
        async with self.busy:
            await self.sync.catch_up()
        self._report()

    def _report(self) -> None:
        stats = self.sync.stats()
        self.lag.set(stats.lag_s)
        self.pending.set(stats.pending)

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
        self.handled = 0
        self.expired = 0
        self.purged = 0

    async def _tick(self) -> None:
        while n := await self.processor.run_once():
            self.handled += n
        self.expired += await self.processor.expire_due()

    async def _purge(self) -> None:
        self.purged += await self.stores.orders.purge_idempotency(time.time())

    async def ready(self) -> dict[str, Any]:
        self.loop.ensure_started()
        self.purge.ensure_started()
        return {
            "kind": "order-processor",
            "handled": self.handled,
            "expired": self.expired,
            "idempotency_keys_purged": self.purged,
        }


SHELLS: dict[str, Any] = {
    "cart": CartShard,
    "inventory": InventoryShard,
    "pricing": PricingShard,
}
