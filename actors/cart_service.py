"""The cart shard's behaviour: a CartBook behind batch dispatch. No Ray, no I/O."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from actors.domain.cart import CartBook, CartLimits
from actors.oplog import OpLog
from actors.protocol import Op, Reply
from actors.service import BatchDispatcher


class CartService:
    def __init__(
        self,
        limits: CartLimits,
        idle_ttl_s: float,
        op_log_size: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = CartBook()
        self.limits = limits
        self.idle_ttl_s = idle_ttl_s
        self._clock = clock
        self._dispatch = BatchDispatcher(
            reads={"get": self._get},
            mutations={
                "create": self._create,
                "add": self._add,
                "set_quantity": self._set_quantity,
                "remove": self._remove,
            },
            log=OpLog(op_log_size),
        )

    async def apply(self, ops: list[Op]) -> list[Reply]:
        replies, _ = self._dispatch.run(self._clock(), ops)
        return replies

    def expire_idle(self) -> list[str]:
        return self.book.expire_idle(self._clock(), self.idle_ttl_s)

    def _get(self, now: float, cart_id: str) -> dict[str, Any]:
        return self.book.get(cart_id).snapshot()

    def _create(self, now: float, op_id: str, cart_id: str, customer_id: str | None) -> Any:
        return self.book.create(cart_id, customer_id, now).snapshot()

    def _add(self, now: float, op_id: str, cart_id: str, sku: str, quantity: int) -> Any:
        cart = self.book.get(cart_id)
        cart.add(sku, quantity, self.limits, now)
        return cart.snapshot()

    def _set_quantity(self, now: float, op_id: str, cart_id: str, sku: str, quantity: int) -> Any:
        cart = self.book.get(cart_id)
        cart.set_quantity(sku, quantity, self.limits, now)
        return cart.snapshot()

    def _remove(self, now: float, op_id: str, cart_id: str, sku: str) -> Any:
        cart = self.book.get(cart_id)
        cart.remove(sku, now)
        return cart.snapshot()

    def stats(self) -> dict[str, int]:
        return {"carts": len(self.book)}
