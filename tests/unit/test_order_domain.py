"""The order domain: values, totals, JSON, and the status machine (every pair, and random walks)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.orders import (
    EDGES,
    TERMINAL,
    TRANSITIONS,
    UNPAID,
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    Shipment,
    ShipmentEvent,
    record_shipment_event,
    status_allowed,
    transition,
)
from api.problems import STATUS

T0 = 1_700_000_000.0
S = OrderStatus

# The table as the design states it, written out independently of EDGES.
EXPECTED = {
    S.PENDING_PAYMENT: {S.AUTHORIZED, S.PAYMENT_FAILED, S.EXPIRED, S.CANCELLED},
    S.AUTHORIZED: {S.PAID, S.PAYMENT_FAILED, S.EXPIRED, S.CANCELLED},
    S.PAID: {S.FULFILLING, S.REFUNDED},
    S.FULFILLING: {S.SHIPPED, S.REFUNDED},
    S.SHIPPED: {S.DELIVERED, S.REFUNDED},
    S.DELIVERED: {S.REFUNDED},
    S.CANCELLED: set(),
    S.PAYMENT_FAILED: set(),
    S.EXPIRED: set(),
    S.REFUNDED: set(),
}


def line(
    sku: str = "SKU-1", quantity: int = 2, unit: int = 800, base: int = 1000, **kw: Any
) -> OrderLine:
    fields: dict[str, Any] = {
        "sku": sku,
        "product_id": "p-1",
        "merchant_id": "m-1",
        "quantity": quantity,
        "unit_amount": unit,
        "base_amount": base,
        "promotion_id": "promo-1" if unit < base else None,
    }
    fields.update(kw)
    return OrderLine(**fields)


def new_order(status: OrderStatus = S.PENDING_PAYMENT, **changes: Any) -> Order:
    order = Order.create(
        "ord-1",
        "cust-1",
        "EUR",
        [line(), line("SKU-2", 1, 500, 500, merchant_id="m-2")],
        T0,
        expires_at=T0 + 900,
        reservation_ids=["r-1", "r-2"],
    )
    return replace(order, status=status, **changes)


def full_payment(order: Order) -> Payment:
    return Payment("sandbox", "pay-1", order.total)


SHIPMENT = Shipment("dhl", "TRACK-1")


def refused(code: ErrorCode, call: Any, *args: Any, **kwargs: Any) -> DomainError:
    with pytest.raises(DomainError) as info:
        call(*args, **kwargs)
    assert info.value.code is code, info.value
    return info.value


# --- the transition table -------------------------------------------------------------------


def test_table_is_the_designed_one() -> None:
    assert {s: set(t) for s, t in TRANSITIONS.items()} == EXPECTED
    assert set(TRANSITIONS) == set(OrderStatus)
    assert {S.CANCELLED, S.PAYMENT_FAILED, S.EXPIRED, S.REFUNDED} == TERMINAL
    assert {S.PENDING_PAYMENT, S.AUTHORIZED} == UNPAID


def test_every_edge_has_one_reason() -> None:
    pairs = [(a, b) for a, b, _ in EDGES]
    assert len(pairs) == len(set(pairs))
    assert all(reason.strip() for _, _, reason in EDGES)
    assert not any(a == b for a, b in pairs)


def test_every_status_is_reachable_and_every_order_can_finish() -> None:
    reached, frontier = {S.PENDING_PAYMENT}, [S.PENDING_PAYMENT]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == set(OrderStatus)
    # Nothing leads back to pending_payment, and the graph has no cycles: every walk ends.
    assert all(S.PENDING_PAYMENT not in t for t in TRANSITIONS.values())
    depth: dict[OrderStatus, int] = {}

    def longest(status: OrderStatus, seen: frozenset[OrderStatus]) -> int:
        assert status not in seen, f"cycle through {status}"
        if status not in depth:
            depth[status] = 1 + max(
                (longest(n, seen | {status}) for n in TRANSITIONS[status]), default=0
            )
        return depth[status]

    assert longest(S.PENDING_PAYMENT, frozenset()) == 7  # pending ... delivered, refunded


@pytest.mark.parametrize(
    ("source", "target"),
    list(itertools.product(OrderStatus, OrderStatus)),
    ids=lambda s: s.value,
)
def test_every_pair(source: OrderStatus, target: OrderStatus) -> None:
    order = new_order(source)
    extra: dict[str, Any] = {"payment": full_payment(order), "shipment": SHIPMENT}
    if target in EXPECTED[source]:
        moved = transition(order, target, T0 + 5, **extra)
        assert moved.status is target
        assert moved.version == order.version + 1
        assert moved.updated_at == T0 + 5
        assert status_allowed(source, target)
    else:
        error = refused(ErrorCode.ORDER_CONFLICT, transition, order, target, T0 + 5, **extra)
        assert error.details == {
            "order_id": "ord-1",
            "status": source.value,
            "target": target.value,
        }
        # Stores accept a same-status write (data only), nothing else off the table.
        assert status_allowed(source, target) is (source == target)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(OrderStatus)), max_size=30))
def test_random_walks_follow_the_table(targets: list[OrderStatus]) -> None:
    order = new_order()
    order = replace(order, payment=full_payment(order), shipment=SHIPMENT)
    path = [order.status]
    for step, target in enumerate(targets):
        before = order
        if target not in EXPECTED[before.status]:
            refused(ErrorCode.ORDER_CONFLICT, transition, order, target, T0 + step)
            continue
        order = transition(order, target, T0 + step)
        assert before.status not in TERMINAL
        assert order.version == before.version + 1
        assert order.updated_at >= before.updated_at
        path.append(order.status)
    for a, b in itertools.pairwise(path):
        assert b in TRANSITIONS[a]
    # Once terminal, always terminal: nothing follows a terminal status in the path.
    for i, status in enumerate(path):
        if status in TERMINAL:
            assert i == len(path) - 1


def test_authorized_and_paid_need_a_full_payment() -> None:
    order = new_order()
    refused(ErrorCode.ORDER_CONFLICT, transition, order, S.AUTHORIZED, T0)
    short = Payment("sandbox", "pay-1", order.total - 1)
    refused(ErrorCode.ORDER_CONFLICT, transition, order, S.AUTHORIZED, T0, payment=short)
    authorized = transition(order, S.AUTHORIZED, T0 + 1, payment=full_payment(order))
    assert authorized.payment == full_payment(order)
    paid = transition(authorized, S.PAID, T0 + 2)
    assert paid.payment == authorized.payment
    refused(ErrorCode.ORDER_CONFLICT, transition, authorized, S.PAID, T0, payment=None)


def test_shipped_needs_a_shipment_and_tracking_appends() -> None:
    fulfilling = new_order(S.FULFILLING)
    refused(ErrorCode.ORDER_CONFLICT, transition, fulfilling, S.SHIPPED, T0)
    refused(
        ErrorCode.ORDER_CONFLICT,
        record_shipment_event,
        fulfilling,
        ShipmentEvent("picked_up", T0),
        T0,
    )
    shipped = transition(fulfilling, S.SHIPPED, T0 + 1, shipment=SHIPMENT)
    tracked = record_shipment_event(shipped, ShipmentEvent("in_transit", T0 + 2, "hub"), T0 + 2)
    tracked = record_shipment_event(tracked, ShipmentEvent("delivered", T0 + 3), T0 + 3)
    assert tracked.status is S.SHIPPED
    assert tracked.version == shipped.version + 2
    assert tracked.shipment is not None
    assert [e.kind for e in tracked.shipment.events] == ["in_transit", "delivered"]
    assert transition(tracked, S.DELIVERED, T0 + 4).status is S.DELIVERED


def test_clock_never_moves_updated_at_back() -> None:
    order = new_order(updated_at=T0 + 100)
    assert transition(order, S.CANCELLED, T0).updated_at == T0 + 100
    refused(ErrorCode.INVALID_ARGUMENT, transition, order, S.CANCELLED, float("nan"))


def test_expiry_applies_to_unpaid_orders_only() -> None:
    order = new_order()
    assert not order.expired_at(T0 + 899)
    assert order.expired_at(T0 + 900)
    assert not new_order(S.PAID).expired_at(T0 + 10_000)
    assert not new_order(expires_at=None).expired_at(T0 + 10_000)


# --- values and totals ----------------------------------------------------------------------


def test_totals_come_from_the_lines() -> None:
    order = new_order()
    assert (order.subtotal, order.discount, order.total) == (2500, 400, 2100)
    assert order.merchant_ids == frozenset({"m-1", "m-2"})
    assert order.version == 1
    assert order.status is S.PENDING_PAYMENT
    with pytest.raises(TypeError):
        Order("o", "c", "EUR", (line(),), S.PAID, T0, T0, total=1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "changes",
    [
        {"quantity": 0},
        {"quantity": -1},
        {"quantity": True},
        {"quantity": 1.0},
        {"unit_amount": -1},
        {"base_amount": -5, "unit_amount": -5},
        {"unit_amount": 10.5},
        {"unit_amount": 1001},  # a promotion never raises the price
        {"base_amount": 2**62, "unit_amount": 2**62},  # quantity 2: past int64
        {"sku": "has space"},
        {"merchant_id": ""},
        {"product_id": 7},
    ],
)
def test_bad_lines_are_refused(changes: dict[str, Any]) -> None:
    refused(ErrorCode.INVALID_ARGUMENT, line, **changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"lines": ()},
        {"lines": (line(), line())},  # same sku twice
        {"id": "bad id!"},
        {"currency": "eur"},
        {"customer_ref": ""},
        {"version": 0},
        {"updated_at": T0 - 1},
        {"expires_at": float("inf")},
        {"reservation_ids": ("",)},
        {"status": "paid"},
    ],
)
def test_bad_orders_are_refused(changes: dict[str, Any]) -> None:
    refused(ErrorCode.INVALID_ARGUMENT, replace, new_order(), **changes)


def test_free_order_is_allowed() -> None:
    order = replace(new_order(), lines=(line(unit=0),))
    assert (order.subtotal, order.discount, order.total) == (2000, 2000, 0)


# --- JSON -----------------------------------------------------------------------------------

_text = st.text("abcXYZ019-_", min_size=1, max_size=12)
_lines = st.lists(
    st.tuples(
        st.integers(1, 99), st.integers(0, 10**9), st.integers(0, 10**9), _text, st.none() | _text
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(
    raw_lines=_lines,
    status=st.sampled_from(list(OrderStatus)),
    times=st.tuples(
        st.floats(0, 2e9, allow_nan=False), st.floats(0, 1e6, allow_nan=False)
    ),
    with_payment=st.booleans(),
    events=st.lists(st.sampled_from(["picked_up", "in_transit", "delivered", "failed"])),
)
def test_json_round_trip(
    raw_lines: list[tuple[int, int, int, str, str | None]],
    status: OrderStatus,
    times: tuple[float, float],
    with_payment: bool,
    events: list[str],
) -> None:
    lines = tuple(
        OrderLine(f"SKU-{i}", f"p-{i}", merchant, qty, min(a, b), max(a, b), promo)
        for i, (qty, a, b, merchant, promo) in enumerate(raw_lines)
    )
    created, later = times
    order = Order("ord_x-1", "cart-abc", "JPY", lines, status, created, created + later, 3)
    if with_payment:
        order = replace(order, payment=Payment("sandbox", "p", order.total))
    if events:
        shipment = Shipment("ups", "1Z", tuple(ShipmentEvent(k, created) for k in events))
        order = replace(order, shipment=shipment)
    doc = order.to_json()
    assert Order.from_json(doc) == order
    assert doc["total"] == sum(q * min(a, b) for q, a, b, _, _ in raw_lines)


def test_from_json_refuses_tampered_or_incomplete_documents() -> None:
    doc = new_order().to_json()
    for name in ("total", "subtotal", "discount"):
        refused(ErrorCode.INVALID_ARGUMENT, Order.from_json, {**doc, name: doc[name] + 1})
    for missing in ("id", "lines", "status", "version", "created_at"):
        refused(
            ErrorCode.INVALID_ARGUMENT,
            Order.from_json,
            {k: v for k, v in doc.items() if k != missing},
        )
    refused(ErrorCode.INVALID_ARGUMENT, Order.from_json, {**doc, "status": "lost"})
    refused(ErrorCode.INVALID_ARGUMENT, Order.from_json, [doc])
    bad_line = {**doc["lines"][0], "unit_amount": 1.5}
    refused(ErrorCode.INVALID_ARGUMENT, Order.from_json, {**doc, "lines": [bad_line]})
    refused(
        ErrorCode.INVALID_ARGUMENT,
        Order.from_json,
        {**doc, "shipment": {"carrier": "x", "tracking_number": "y", "events": [{"kind": "?"}]}},
    )


def test_error_codes_have_http_statuses() -> None:
    assert STATUS[ErrorCode.ORDER_NOT_FOUND] == 404
    assert STATUS[ErrorCode.ORDER_CONFLICT] == 409
    assert STATUS[ErrorCode.IDEMPOTENCY_MISMATCH] == 422
