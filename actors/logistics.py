"""Logistics operators: the shipments assigned to a carrier, and the tracking events they
post. A plain service (no Ray, no HTTP).

Rules (the order's status decides which events a carrier may post):

=============  =====================================================================
status         allowed events
=============  =====================================================================
fulfilling     ``picked_up`` -> shipped; ``failed`` -> refunded (lost in the warehouse)
shipped        ``in_transit`` (tracking only); ``delivered`` -> delivered;
               ``failed`` -> refunded (the parcel was lost or could not be delivered)
=============  =====================================================================

Anything else is ``SHIPMENT_EVENT_INVALID`` (409), except a repeat: an event of the same
kind as one already recorded (a carrier's retry) answers the order unchanged. A repeated
``in_transit`` is recorded again only if its ``at`` differs (a retry carries the same
body). A ``failed`` parcel is refunded in full through the provider (key
``{order}:refund:1``, so it never refunds twice) and its stock is not returned.

A carrier sees and touches only its own shipments: another carrier's order answers
``SHIPMENT_NOT_FOUND``, exactly like a missing one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.orders import (
    Order,
    OrderStatus,
    ShipmentEvent,
    record_shipment_event,
    transition,
)
from actors.order_processor import OrderProcessor, order_event
from storage.errors import StoreConflict
from storage.interfaces import OrderStore

_S = OrderStatus
ACTIVE = frozenset({_S.FULFILLING, _S.SHIPPED})
# event kind -> {status it may be posted in: the status it moves the order to}
RULES: dict[str, dict[OrderStatus, OrderStatus]] = {
    "picked_up": {_S.FULFILLING: _S.SHIPPED},
    "in_transit": {_S.SHIPPED: _S.SHIPPED},
    "delivered": {_S.SHIPPED: _S.DELIVERED},
    "failed": {_S.FULFILLING: _S.REFUNDED, _S.SHIPPED: _S.REFUNDED},
}
MAX_LIST = 100
# Pages of the carrier's shipments one call reads at most, looking for active ones.
MAX_SCAN_PAGES = 5


class ShipmentIndex(Protocol):
    """A carrier's shipments, newest first (created_at, then id, descending), a page at a
    time: up to ``limit`` orders after ``cursor`` and the cursor of the next page (None at
    the end). ValueError for a cursor it did not issue or a bad limit."""

    async def page(
        self, carrier: str, cursor: str | None, limit: int
    ) -> tuple[list[Order], str | None]: ...


class StoreShipmentIndex:
    """A ShipmentIndex on the order store's listing by carrier (an order is listed once
    it has a shipment), so it is current in every process and reads only what it returns."""

    def __init__(self, orders: OrderStore) -> None:
        self._orders = orders

    async def page(
        self, carrier: str, cursor: str | None, limit: int
    ) -> tuple[list[Order], str | None]:
        return await self._orders.list_orders(carrier=carrier, cursor=cursor, limit=limit)


def shipment_view(order: Order) -> dict[str, object]:
    """What a carrier needs: the order id, status, tracking and what to carry."""
    assert order.shipment is not None
    return {
        "order_id": order.id,
        "status": order.status.value,
        "carrier": order.shipment.carrier,
        "tracking_number": order.shipment.tracking_number,
        "events": [e.to_json() for e in order.shipment.events],
        "lines": [{"sku": line.sku, "quantity": line.quantity} for line in order.lines],
        "updated_at": order.updated_at,
    }


class Logistics:
    def __init__(
        self,
        orders: OrderStore,
        processor: OrderProcessor,
        index: ShipmentIndex,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.orders = orders
        self.processor = processor
        self.index = index
        self.clock = clock

    async def own(self, carrier: str, order_id: str) -> Order:
        order = await self.orders.get_order(order_id)
        if order is None or order.shipment is None or order.shipment.carrier != carrier:
            raise DomainError(
                ErrorCode.SHIPMENT_NOT_FOUND,
                f"no shipment for order {order_id!r}",
                order_id=order_id,
            )
        return order

    async def shipments(
        self,
        carrier: str,
        *,
        active_only: bool = True,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Order], str | None]:
        """The carrier's shipments, newest first, after ``cursor``; by default only those
        still to deliver. Returns up to ``limit`` (at most ``MAX_LIST``) orders and the
        cursor to continue from (None at the end).

        Pages of ``limit`` orders are read until ``limit`` of them qualify, and at most
        ``MAX_SCAN_PAGES`` of them: when most of a carrier's shipments are done, a page
        may hold fewer than ``limit`` items (even none) with a cursor to go on from.
        ValueError for a bad cursor."""
        limit = max(1, min(limit, MAX_LIST))
        found: list[Order] = []
        for _ in range(MAX_SCAN_PAGES):
            page, after = await self.index.page(carrier, cursor, limit)
            for n, order in enumerate(page):
                if order.shipment is None or order.shipment.carrier != carrier:
                    continue
                if active_only and order.status not in ACTIVE:
                    continue
                found.append(order)
                if len(found) == limit:
                    if n + 1 < len(page):
                        # Stopped inside the page: the next one starts right after this
                        # order (a re-read of the page's first n + 1 rows gives its cursor).
                        _, after = await self.index.page(carrier, cursor, n + 1)
                    return found, after
            if after is None:
                return found, None
            cursor = after
        return found, cursor

    async def post_event(
        self,
        carrier: str,
        order_id: str,
        kind: str,
        *,
        at: float | None = None,
        note: str | None = None,
    ) -> Order:
        now = self.clock()
        event = ShipmentEvent(kind, now if at is None else at, note)  # validates kind
        for _ in range(3):
            order = await self.own(carrier, order_id)
            assert order.shipment is not None
            if self._repeat(order, event):
                return order
            target = RULES[kind].get(order.status)
            if target is None:
                raise DomainError(
                    ErrorCode.SHIPMENT_EVENT_INVALID,
                    f"{kind} is not allowed while the order is {order.status.value}",
                    order_id=order_id,
                    status=order.status.value,
                    kind=kind,
                )
            shipment = replace(order.shipment, events=(*order.shipment.events, event))
            if target is _S.REFUNDED:
                return await self.processor.refund(
                    order_id, now, shipment=shipment, reason="delivery failed"
                )
            try:
                if target is order.status:  # tracking only: same status, version + 1
                    moved = record_shipment_event(order, event, now)
                    return await self.orders.transition(order.id, order.version, moved)
                moved = transition(order, target, now, shipment=shipment)
                kind_out = f"order.{target.value}"
                return await self.orders.transition(
                    order.id, order.version, moved, [order_event(kind_out, moved)]
                )
            except StoreConflict:
                continue  # changed meanwhile: decide again on the stored order
        raise DomainError(ErrorCode.ORDER_CONFLICT, f"order {order_id} keeps changing; retry")

    @staticmethod
    def _repeat(order: Order, event: ShipmentEvent) -> bool:
        assert order.shipment is not None
        for seen in order.shipment.events:
            if seen.kind == event.kind and (event.kind != "in_transit" or seen.at == event.at):
                return True
        return False
