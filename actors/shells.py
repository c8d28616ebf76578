"""Thin Ray actor shells around the shard services. Behaviour lives in the services.

Each shell is named, detached and restartable: Ray restarts it after a crash and it
reloads what it needs from its store on first use.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from actors.cart_service import CartService
from actors.domain.cart import CartLimits
from actors.inventory_service import InventoryService
from actors.pricing_service import PricingService
from actors.protocol import Op, Reply
from feira.settings import Settings
from storage.factory import open_embedded_stores


@ray.remote
class CartShard:
    def __init__(self, settings: dict[str, Any], index: int) -> None:
        s = Settings.from_wire(settings)
        self.index = index
        self.service = CartService(
            CartLimits(s.cart_max_lines, s.cart_max_quantity), s.cart_idle_ttl_s, s.op_log_size
        )

    async def apply(self, ops: list[Op]) -> list[Reply]:
        return await self.service.apply(ops)

    async def ready(self) -> dict[str, Any]:
        return {"kind": "cart", "index": self.index, **self.service.stats()}


@ray.remote
class InventoryShard:
    def __init__(self, settings: dict[str, Any], index: int) -> None:
        s = Settings.from_wire(settings)
        self.index = index
        self.stores = open_embedded_stores(str(s.data_dir))
        self.service = InventoryService(self.stores.stock, s.reservation_ttl_s, s.op_log_size)
        self._sweep_interval_s = s.reservation_sweep_interval_ms / 1000
        self._sweeper: asyncio.Task[None] | None = None

    def _start_sweeper(self) -> None:
        # An async actor's loop is not running in __init__; start on the first call.
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            # A sweep whose write fails keeps nothing and is retried on the next tick:
            # expiry is never lost, only late.
            await self.service.expire_due()

    async def apply(self, ops: list[Op]) -> list[Reply]:
        self._start_sweeper()
        return await self.service.apply(ops)

    async def ready(self) -> dict[str, Any]:
        self._start_sweeper()
        return {"kind": "inventory", "index": self.index, **self.service.stats()}


@ray.remote
class PricingShard:
    def __init__(self, settings: dict[str, Any], index: int) -> None:
        s = Settings.from_wire(settings)
        self.index = index
        self.stores = open_embedded_stores(str(s.data_dir))
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
