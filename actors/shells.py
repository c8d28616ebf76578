"""Thin Ray actor shells around the shard services. Behaviour lives in the services.

Each shell is named, detached and restartable: Ray restarts it after a crash and it
reloads what it needs from its store on first use.
"""

from __future__ import annotations

from typing import Any

import ray

from actors.cart_service import CartService
from actors.domain.cart import CartLimits
from actors.inventory_service import InventoryService
from actors.periodic import Periodic
from actors.pricing_service import PricingService
from actors.protocol import Op, Reply
from feira.settings import Settings
from feira.stores import open_configured_stores


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


SHELLS: dict[str, Any] = {
    "cart": CartShard,
    "inventory": InventoryShard,
    "pricing": PricingShard,
}
