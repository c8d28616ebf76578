"""Orders: immutable values and the status machine. No Ray, no I/O, no clock.

An order is created in ``pending_payment`` from a priced cart and only ever changes through
``transition`` (a status change along an edge of ``TRANSITIONS``) or
``record_shipment_event`` (tracking, no status change). Every change returns a new
``Order`` with ``version + 1``; the store writes it only if the stored version is still
the one it was derived from (optimistic concurrency), so two processes can never both
move the same order.

Money is integer minor units. ``subtotal`` (list prices), ``discount`` (promotions) and
``total`` (what the customer pays) are computed from the lines, never passed in, so they
cannot disagree with them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.money import validate_currency
from actors.domain.validation import INT64_MAX, check_finite, check_sku, check_text


class OrderStatus(StrEnum):
    PENDING_PAYMENT = "pending_payment"
    AUTHORIZED = "authorized"
    PAID = "paid"
    FULFILLING = "fulfilling"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    PAYMENT_FAILED = "payment_failed"
    EXPIRED = "expired"
    REFUNDED = "refunded"


_S = OrderStatus

# Every allowed status change, with the reason it exists. Anything not listed is refused
# with ORDER_CONFLICT; a status with no outgoing edge is terminal.
EDGES: tuple[tuple[OrderStatus, OrderStatus, str], ...] = (
    (_S.PENDING_PAYMENT, _S.AUTHORIZED, "the provider authorized the full total"),
    (_S.PENDING_PAYMENT, _S.PAYMENT_FAILED, "authorization declined, failed or timed out"),
    (_S.PENDING_PAYMENT, _S.EXPIRED, "no authorization before the deadline; stock released"),
    (_S.PENDING_PAYMENT, _S.CANCELLED, "the shopper or merchant cancelled before paying"),
    (_S.AUTHORIZED, _S.PAID, "reserved stock committed and the payment captured"),
    (_S.AUTHORIZED, _S.PAYMENT_FAILED, "capture refused (e.g. the authorization lapsed)"),
    (_S.AUTHORIZED, _S.EXPIRED, "not captured before the deadline; voided, stock released"),
    (_S.AUTHORIZED, _S.CANCELLED, "cancelled before capture; authorization voided"),
    (_S.PAID, _S.FULFILLING, "the shipment was created; the merchant is packing"),
    (_S.PAID, _S.REFUNDED, "the merchant refunds before fulfilment (cannot supply)"),
    (_S.FULFILLING, _S.SHIPPED, "the carrier took the parcel; a tracking number exists"),
    (_S.FULFILLING, _S.REFUNDED, "fulfilment failed (damaged, lost in the warehouse)"),
    (_S.SHIPPED, _S.DELIVERED, "the carrier reported delivery"),
    (_S.SHIPPED, _S.REFUNDED, "the carrier reported the parcel failed or lost"),
    (_S.DELIVERED, _S.REFUNDED, "returned or disputed after delivery"),
)


def _table() -> dict[OrderStatus, frozenset[OrderStatus]]:
    targets: dict[OrderStatus, set[OrderStatus]] = {status: set() for status in OrderStatus}
    for source, target, _ in EDGES:
        targets[source].add(target)
    return {status: frozenset(found) for status, found in targets.items()}


TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = _table()
TERMINAL: frozenset[OrderStatus] = frozenset(s for s, out in TRANSITIONS.items() if not out)
# Orders still holding stock and waiting for money: these expire at ``expires_at``.
UNPAID: frozenset[OrderStatus] = frozenset({_S.PENDING_PAYMENT, _S.AUTHORIZED})

SHIPMENT_EVENT_KINDS = frozenset({"picked_up", "in_transit", "delivered", "failed"})

_ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_REF_MAX = 128
_NAME_MAX = 128


def check_order_id(order_id: object) -> str:
    if not isinstance(order_id, str) or _ORDER_ID.fullmatch(order_id) is None:
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT,
            "order id must be 1-64 characters from A-Z, a-z, 0-9, '_' and '-'",
            field="order_id",
        )
    return order_id


def _amount(value: object, name: str, *, minimum: int = 0) -> int:
    # bool is an int subclass and floats are never money.
    if type(value) is not int or not minimum <= value <= INT64_MAX:
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT,
            f"{name} must be an integer number of minor units >= {minimum}",
            field=name,
        )
    return value


def _invalid(message: str) -> DomainError:
    return DomainError(ErrorCode.INVALID_ARGUMENT, message)


def _obj(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise _invalid(f"{what} must be an object")
    return data


def _key(data: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in data:
        raise _invalid(f"{what} is missing {name}")
    return data[name]


@dataclass(frozen=True, slots=True)
class OrderLine:
    sku: str
    product_id: str
    merchant_id: str
    quantity: int
    unit_amount: int  # what the customer pays per unit, after the promotion
    base_amount: int  # list price per unit, before any promotion
    promotion_id: str | None = None

    def __post_init__(self) -> None:
        check_sku(self.sku)
        check_text(self.product_id, "product_id", _NAME_MAX)
        check_text(self.merchant_id, "merchant_id", _NAME_MAX)
        _amount(self.quantity, "quantity", minimum=1)
        _amount(self.base_amount, "base_amount")
        _amount(self.unit_amount, "unit_amount")
        if self.unit_amount > self.base_amount:
            raise _invalid(f"line {self.sku}: unit_amount exceeds base_amount")
        if self.promotion_id is not None:
            check_text(self.promotion_id, "promotion_id", _NAME_MAX)
        if self.base_amount * self.quantity > INT64_MAX:
            raise _invalid(f"line {self.sku}: amount too large")

    @property
    def total(self) -> int:
        return self.unit_amount * self.quantity

    @property
    def base_total(self) -> int:
        return self.base_amount * self.quantity

    def to_json(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "product_id": self.product_id,
            "merchant_id": self.merchant_id,
            "quantity": self.quantity,
            "unit_amount": self.unit_amount,
            "base_amount": self.base_amount,
            "promotion_id": self.promotion_id,
        }

    @classmethod
    def from_json(cls, data: object) -> OrderLine:
        raw = _obj(data, "order line")
        return cls(
            sku=_key(raw, "sku", "order line"),
            product_id=_key(raw, "product_id", "order line"),
            merchant_id=_key(raw, "merchant_id", "order line"),
            quantity=_key(raw, "quantity", "order line"),
            unit_amount=_key(raw, "unit_amount", "order line"),
            base_amount=_key(raw, "base_amount", "order line"),
            promotion_id=raw.get("promotion_id"),
        )


@dataclass(frozen=True, slots=True)
class Payment:
    provider: str
    payment_id: str  # the provider's reference; never card data
    amount: int

    def __post_init__(self) -> None:
        check_text(self.provider, "provider", _NAME_MAX)
        check_text(self.payment_id, "payment_id", 256)
        _amount(self.amount, "payment amount")

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "payment_id": self.payment_id, "amount": self.amount}

    @classmethod
    def from_json(cls, data: object) -> Payment:
        raw = _obj(data, "payment")
        return cls(
            _key(raw, "provider", "payment"),
            _key(raw, "payment_id", "payment"),
            _key(raw, "amount", "payment"),
        )


@dataclass(frozen=True, slots=True)
class ShipmentEvent:
    kind: str  # one of SHIPMENT_EVENT_KINDS
    at: float  # unix seconds
    note: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SHIPMENT_EVENT_KINDS:
            raise _invalid(
                f"shipment event kind must be one of {', '.join(sorted(SHIPMENT_EVENT_KINDS))}"
            )
        check_finite(self.at, "at")
        if self.note is not None:
            check_text(self.note, "note", 1000)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "at": self.at, "note": self.note}

    @classmethod
    def from_json(cls, data: object) -> ShipmentEvent:
        raw = _obj(data, "shipment event")
        return cls(
            _key(raw, "kind", "shipment event"), _key(raw, "at", "shipment event"), raw.get("note")
        )


@dataclass(frozen=True, slots=True)
class Shipment:
    carrier: str
    tracking_number: str
    events: tuple[ShipmentEvent, ...] = ()

    def __post_init__(self) -> None:
        check_text(self.carrier, "carrier", _NAME_MAX)
        check_text(self.tracking_number, "tracking_number", _NAME_MAX)
        if not isinstance(self.events, tuple) or not all(
            isinstance(e, ShipmentEvent) for e in self.events
        ):
            raise _invalid("shipment events must be a tuple of ShipmentEvent")

    def to_json(self) -> dict[str, Any]:
        return {
            "carrier": self.carrier,
            "tracking_number": self.tracking_number,
            "events": [e.to_json() for e in self.events],
        }

    @classmethod
    def from_json(cls, data: object) -> Shipment:
        raw = _obj(data, "shipment")
        events = raw.get("events", [])
        if not isinstance(events, list):
            raise _invalid("shipment events must be a list")
        return cls(
            _key(raw, "carrier", "shipment"),
            _key(raw, "tracking_number", "shipment"),
            tuple(ShipmentEvent.from_json(e) for e in events),
        )


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    customer_ref: str  # customer id, or the cart id for a guest
    currency: str
    lines: tuple[OrderLine, ...]
    status: OrderStatus
    created_at: float  # unix seconds
    updated_at: float
    version: int = 1  # 1 when created; +1 on every change
    expires_at: float | None = None  # while unpaid: when it expires and releases stock
    payment: Payment | None = None
    reservation_ids: tuple[str, ...] = ()
    shipment: Shipment | None = None
    # Computed from the lines in __post_init__; never passed in.
    subtotal: int = field(init=False)  # sum of list prices
    discount: int = field(init=False)  # subtotal - total, from promotions
    total: int = field(init=False)  # what the customer pays

    def __post_init__(self) -> None:
        check_order_id(self.id)
        check_text(self.customer_ref, "customer_ref", _REF_MAX)
        validate_currency(self.currency)
        if not isinstance(self.lines, tuple) or not self.lines:
            raise _invalid("an order needs at least one line (a tuple of OrderLine)")
        if not all(isinstance(line, OrderLine) for line in self.lines):
            raise _invalid("order lines must be OrderLine values")
        skus = [line.sku for line in self.lines]
        if len(set(skus)) != len(skus):
            raise _invalid("an order lists each sku once")
        if not isinstance(self.status, OrderStatus):
            raise _invalid(f"unknown order status {self.status!r}")
        check_finite(self.created_at, "created_at")
        check_finite(self.updated_at, "updated_at")
        if self.updated_at < self.created_at:
            raise _invalid("updated_at is before created_at")
        _amount(self.version, "version", minimum=1)
        if self.expires_at is not None:
            check_finite(self.expires_at, "expires_at")
        if self.payment is not None and not isinstance(self.payment, Payment):
            raise _invalid("payment must be a Payment")
        if self.shipment is not None and not isinstance(self.shipment, Shipment):
            raise _invalid("shipment must be a Shipment")
        if not isinstance(self.reservation_ids, tuple):
            raise _invalid("reservation_ids must be a tuple")
        for rid in self.reservation_ids:
            check_text(rid, "reservation_id", _NAME_MAX)
        subtotal = sum(line.base_total for line in self.lines)
        total = sum(line.total for line in self.lines)
        if subtotal > INT64_MAX:
            raise _invalid("order total too large")
        object.__setattr__(self, "subtotal", subtotal)
        object.__setattr__(self, "total", total)
        object.__setattr__(self, "discount", subtotal - total)

    @classmethod
    def create(
        cls,
        order_id: str,
        customer_ref: str,
        currency: str,
        lines: tuple[OrderLine, ...] | list[OrderLine],
        now: float,
        *,
        expires_at: float | None = None,
        reservation_ids: tuple[str, ...] | list[str] = (),
    ) -> Order:
        """A new order awaiting payment, version 1."""
        return cls(
            order_id,
            customer_ref,
            currency,
            tuple(lines),
            OrderStatus.PENDING_PAYMENT,
            now,
            now,
            1,
            expires_at,
            reservation_ids=tuple(reservation_ids),
        )

    @property
    def merchant_ids(self) -> frozenset[str]:
        return frozenset(line.merchant_id for line in self.lines)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def expired_at(self, now: float) -> bool:
        """Unpaid and past its deadline: the expiry sweep should move it to EXPIRED."""
        return self.status in UNPAID and self.expires_at is not None and self.expires_at <= now

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer_ref": self.customer_ref,
            "currency": self.currency,
            "lines": [line.to_json() for line in self.lines],
            "subtotal": self.subtotal,
            "discount": self.discount,
            "total": self.total,
            "status": self.status.value,
            "payment": None if self.payment is None else self.payment.to_json(),
            "reservation_ids": list(self.reservation_ids),
            "shipment": None if self.shipment is None else self.shipment.to_json(),
            "expires_at": self.expires_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, data: object) -> Order:
        """Rebuild from ``to_json`` output; malformed input is INVALID_ARGUMENT. Stored
        totals, when present, must match the lines (a mismatch means corruption)."""
        raw = _obj(data, "order")
        lines = _key(raw, "lines", "order")
        if not isinstance(lines, list):
            raise _invalid("order lines must be a list")
        status = _key(raw, "status", "order")
        if status not in OrderStatus.__members__.values():
            raise _invalid(f"unknown order status {status!r}")
        reservation_ids = raw.get("reservation_ids", [])
        if not isinstance(reservation_ids, list):
            raise _invalid("reservation_ids must be a list")
        payment, shipment = raw.get("payment"), raw.get("shipment")
        order = cls(
            id=_key(raw, "id", "order"),
            customer_ref=_key(raw, "customer_ref", "order"),
            currency=_key(raw, "currency", "order"),
            lines=tuple(OrderLine.from_json(line) for line in lines),
            status=OrderStatus(status),
            created_at=_key(raw, "created_at", "order"),
            updated_at=_key(raw, "updated_at", "order"),
            version=_key(raw, "version", "order"),
            expires_at=raw.get("expires_at"),
            payment=None if payment is None else Payment.from_json(payment),
            reservation_ids=tuple(reservation_ids),
            shipment=None if shipment is None else Shipment.from_json(shipment),
        )
        for name in ("subtotal", "discount", "total"):
            if name in raw and raw[name] != getattr(order, name):
                raise _invalid(f"order {order.id}: stored {name} does not match its lines")
        return order


_UNSET: Any = object()


def transition(
    order: Order,
    target: OrderStatus,
    now: float,
    *,
    payment: Payment | None = _UNSET,
    shipment: Shipment | None = _UNSET,
) -> Order:
    """``order`` moved to ``target``: a new value with ``version + 1``.

    Refused with ORDER_CONFLICT unless ``target`` is in ``TRANSITIONS[order.status]``
    (staying in the same status is not a transition). ``payment`` / ``shipment`` set those
    fields in the same step. Authorized and paid orders carry a payment for the full
    total; a shipped order carries a shipment.
    """
    target = OrderStatus(target)
    if target not in TRANSITIONS[order.status]:
        raise DomainError(
            ErrorCode.ORDER_CONFLICT,
            f"order {order.id} cannot go from {order.status.value} to {target.value}",
            order_id=order.id,
            status=order.status.value,
            target=target.value,
        )
    changes: dict[str, Any] = {
        "status": target,
        "updated_at": max(check_finite(now, "now"), order.updated_at),
        "version": order.version + 1,
    }
    if payment is not _UNSET:
        changes["payment"] = payment
    if shipment is not _UNSET:
        changes["shipment"] = shipment
    moved = replace(order, **changes)
    if target in (_S.AUTHORIZED, _S.PAID):
        if moved.payment is None:
            raise DomainError(
                ErrorCode.ORDER_CONFLICT,
                f"order {order.id} needs a payment to become {target.value}",
                order_id=order.id,
            )
        if moved.payment.amount != moved.total:
            raise DomainError(
                ErrorCode.ORDER_CONFLICT,
                f"order {order.id}: payment amount {moved.payment.amount} is not the "
                f"order total {moved.total}",
                order_id=order.id,
            )
    if target is _S.SHIPPED and moved.shipment is None:
        raise DomainError(
            ErrorCode.ORDER_CONFLICT,
            f"order {order.id} needs a shipment to become shipped",
            order_id=order.id,
        )
    return moved


def record_shipment_event(order: Order, event: ShipmentEvent, now: float) -> Order:
    """A tracking event appended to the order's shipment (no status change), version + 1.
    The caller moves the status (e.g. shipped -> delivered) with ``transition``."""
    if order.shipment is None:
        raise DomainError(
            ErrorCode.ORDER_CONFLICT, f"order {order.id} has no shipment", order_id=order.id
        )
    shipment = replace(order.shipment, events=(*order.shipment.events, event))
    return replace(
        order,
        shipment=shipment,
        updated_at=max(check_finite(now, "now"), order.updated_at),
        version=order.version + 1,
    )


def status_allowed(current: OrderStatus, new: OrderStatus) -> bool:
    """Whether a stored order may be overwritten by one in ``new``: an edge of the table,
    or the same status (a change that only adds data, e.g. a tracking event). Stores use
    this as a last line of defence."""
    return new == current or new in TRANSITIONS[current]
