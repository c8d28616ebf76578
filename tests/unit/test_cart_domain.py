from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.domain.cart import Cart, CartBook, CartLimits
from actors.domain.errors import DomainError, ErrorCode

FAST = settings(max_examples=200, deadline=None)
T0 = 1_700_000_000.0
CART_ID = "cart_0123456789abcdef"
LIMITS = CartLimits()


def new_cart(**kw: Any) -> Cart:
    return Cart.new(kw.get("cart_id", CART_ID), kw.get("customer_id", "cust-1"), T0)


def refused(code: ErrorCode, cart: Cart, call: Any, *args: Any) -> DomainError:
    """Run ``call`` expecting ``code`` and assert the cart did not change at all."""
    before = cart.snapshot()
    with pytest.raises(DomainError) as info:
        call(*args)
    assert info.value.code is code, info.value
    assert cart.snapshot() == before
    return info.value


# -- Cart ------------------------------------------------------------------------------


def test_new_cart_is_empty() -> None:
    cart = new_cart()
    assert cart.lines == {}
    assert (cart.created_at, cart.updated_at, cart.version) == (T0, T0, 0)
    assert cart.item_count() == 0


def test_add_merges_lines_and_keeps_insertion_order() -> None:
    cart = new_cart()
    cart.add("B", 1, LIMITS, T0 + 1)
    cart.add("A", 2, LIMITS, T0 + 2)
    cart.add("B", 3, LIMITS, T0 + 3)
    assert list(cart.lines.items()) == [("B", 4), ("A", 2)]
    assert cart.version == 3
    assert cart.updated_at == T0 + 3
    assert cart.created_at == T0
    assert cart.item_count() == 6


def test_set_quantity_and_remove() -> None:
    cart = new_cart()
    cart.add("A", 1, LIMITS, T0 + 1)
    cart.add("B", 1, LIMITS, T0 + 1)
    cart.set_quantity("A", 7, LIMITS, T0 + 2)
    assert cart.lines == {"A": 7, "B": 1}
    assert list(cart.lines) == ["A", "B"]
    cart.remove("A", T0 + 3)
    assert cart.lines == {"B": 1}
    assert cart.version == 4


def test_updated_at_never_moves_backwards() -> None:
    cart = new_cart()
    cart.add("A", 1, LIMITS, T0 + 10)
    cart.add("A", 1, LIMITS, T0 + 5)
    assert cart.updated_at == T0 + 10
    assert cart.version == 2


@pytest.mark.parametrize("quantity", [0, -1, True, 1.0, "1", None])
def test_add_refuses_invalid_quantity(quantity: Any) -> None:
    cart = new_cart()
    cart.add("A", 1, LIMITS, T0)
    refused(ErrorCode.QUANTITY_INVALID, cart, cart.add, "A", quantity, LIMITS, T0 + 1)


def test_add_refuses_quantity_over_line_limit() -> None:
    cart = new_cart()
    limits = CartLimits(max_lines=5, max_quantity_per_line=10)
    refused(ErrorCode.QUANTITY_LIMIT, cart, cart.add, "A", 11, limits, T0)
    cart.add("A", 6, limits, T0)
    err = refused(ErrorCode.QUANTITY_LIMIT, cart, cart.add, "A", 5, limits, T0 + 1)
    assert err.details["requested"] == 11
    assert err.details["max_quantity"] == 10
    cart.add("A", 4, limits, T0 + 1)
    assert cart.lines == {"A": 10}


def test_add_refuses_new_line_past_line_limit() -> None:
    cart = new_cart()
    limits = CartLimits(max_lines=2, max_quantity_per_line=10)
    cart.add("A", 1, limits, T0)
    cart.add("B", 1, limits, T0)
    err = refused(ErrorCode.CART_LINE_LIMIT, cart, cart.add, "C", 1, limits, T0 + 1)
    assert err.details["max_lines"] == 2
    # Existing lines can still grow.
    cart.add("A", 1, limits, T0 + 1)
    assert cart.lines == {"A": 2, "B": 1}


@pytest.mark.parametrize("sku", ["", "a b", "x" * 65, "tab\t", "é", "new\nline", None, 5, "\x7f"])
def test_sku_must_be_printable_ascii(sku: Any) -> None:
    cart = new_cart()
    cart.add("A", 1, LIMITS, T0)
    refused(ErrorCode.INVALID_ARGUMENT, cart, cart.add, sku, 1, LIMITS, T0 + 1)
    refused(ErrorCode.INVALID_ARGUMENT, cart, cart.set_quantity, sku, 1, LIMITS, T0 + 1)
    refused(ErrorCode.INVALID_ARGUMENT, cart, cart.remove, sku, T0 + 1)


def test_sku_edge_lengths_and_symbols_accepted() -> None:
    cart = new_cart()
    cart.add("x" * 64, 1, LIMITS, T0)
    cart.add("!~/:#", 1, LIMITS, T0)
    assert len(cart.lines) == 2


def test_set_quantity_error_paths() -> None:
    cart = new_cart()
    limits = CartLimits(max_lines=5, max_quantity_per_line=10)
    cart.add("A", 3, limits, T0)
    refused(ErrorCode.CART_LINE_NOT_FOUND, cart, cart.set_quantity, "B", 1, limits, T0 + 1)
    refused(ErrorCode.QUANTITY_INVALID, cart, cart.set_quantity, "A", 0, limits, T0 + 1)
    refused(ErrorCode.QUANTITY_INVALID, cart, cart.set_quantity, "A", -2, limits, T0 + 1)
    refused(ErrorCode.QUANTITY_INVALID, cart, cart.set_quantity, "A", 2.0, limits, T0 + 1)
    refused(ErrorCode.QUANTITY_LIMIT, cart, cart.set_quantity, "A", 11, limits, T0 + 1)
    cart.set_quantity("A", 10, limits, T0 + 1)
    assert cart.lines == {"A": 10}


def test_remove_missing_line() -> None:
    cart = new_cart()
    cart.add("A", 1, LIMITS, T0)
    refused(ErrorCode.CART_LINE_NOT_FOUND, cart, cart.remove, "B", T0 + 1)


@pytest.mark.parametrize(
    "kwargs", [{"max_lines": 0}, {"max_quantity_per_line": 0}, {"max_lines": 1.5}]
)
def test_limits_validate(kwargs: dict[str, Any]) -> None:
    with pytest.raises(DomainError) as info:
        CartLimits(**kwargs)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_limits_defaults() -> None:
    assert (LIMITS.max_lines, LIMITS.max_quantity_per_line) == (50, 99)


# -- snapshots -------------------------------------------------------------------------


def test_snapshot_round_trips_through_json() -> None:
    cart = new_cart()
    cart.add("B", 2, LIMITS, T0 + 1)
    cart.add("A", 1, LIMITS, T0 + 2)
    snap = cart.snapshot()
    assert snap == {
        "id": CART_ID,
        "customer_id": "cust-1",
        "lines": [{"sku": "B", "quantity": 2}, {"sku": "A", "quantity": 1}],
        "created_at": T0,
        "updated_at": T0 + 2,
        "version": 2,
    }
    back = Cart.from_snapshot(json.loads(json.dumps(snap)))
    assert back == cart
    assert list(back.lines) == ["B", "A"]


def test_snapshot_is_a_copy() -> None:
    cart = new_cart()
    cart.add("A", 1, LIMITS, T0)
    snap = cart.snapshot()
    snap["lines"].append({"sku": "B", "quantity": 1})
    assert cart.lines == {"A": 1}


def test_from_snapshot_accepts_anonymous_and_int_times() -> None:
    snap = new_cart().snapshot() | {"customer_id": None, "created_at": 5, "updated_at": 6}
    cart = Cart.from_snapshot(snap)
    assert cart.customer_id is None
    assert type(cart.created_at) is float
    assert cart.updated_at == 6.0


@pytest.mark.parametrize(
    "patch",
    [
        {"id": "short"},
        {"id": None},
        {"customer_id": ""},
        {"customer_id": 7},
        {"lines": "A"},
        {"lines": [{"sku": "A"}]},
        {"lines": ["A"]},
        {"lines": [{"sku": "A", "quantity": 0}]},
        {"lines": [{"sku": "a b", "quantity": 1}]},
        {"lines": [{"sku": "A", "quantity": 1}, {"sku": "A", "quantity": 2}]},
        {"created_at": "yesterday"},
        {"updated_at": float("nan")},
        {"version": -1},
        {"version": 1.0},
    ],
)
def test_from_snapshot_refuses_malformed(patch: dict[str, Any]) -> None:
    snap = new_cart().snapshot() | patch
    with pytest.raises(DomainError) as info:
        Cart.from_snapshot(snap)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_from_snapshot_refuses_missing_keys_and_non_mapping() -> None:
    snap = new_cart().snapshot()
    del snap["version"]
    with pytest.raises(DomainError) as info:
        Cart.from_snapshot(snap)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "version" in info.value.message
    with pytest.raises(DomainError) as info:
        Cart.from_snapshot([])  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


# -- CartBook --------------------------------------------------------------------------


def book_state(book: CartBook, ids: list[str]) -> dict[str, Any]:
    return {i: book.get(i).snapshot() for i in ids if i in book} | {"len": len(book)}


def test_book_create_get_len() -> None:
    book = CartBook()
    cart = book.create(CART_ID, None, T0)
    assert book.get(CART_ID) is cart
    assert len(book) == 1
    assert CART_ID in book
    assert cart.snapshot()["customer_id"] is None


@pytest.mark.parametrize(
    "cart_id", ["a" * 15, "a" * 65, "cart id with space", "cart.0123456789abcdef", "", None]
)
def test_book_create_refuses_bad_id(cart_id: Any) -> None:
    book = CartBook()
    book.create(CART_ID, None, T0)
    before = book_state(book, [CART_ID])
    with pytest.raises(DomainError) as info:
        book.create(cart_id, None, T0)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert book_state(book, [CART_ID]) == before


def test_book_create_accepts_id_edges() -> None:
    book = CartBook()
    book.create("a" * 16, None, T0)
    book.create("Z-_9" * 16, None, T0)
    assert len(book) == 2


def test_book_create_refuses_duplicate() -> None:
    book = CartBook()
    book.create(CART_ID, "c1", T0)
    book.get(CART_ID).add("A", 1, LIMITS, T0 + 1)
    before = book_state(book, [CART_ID])
    with pytest.raises(DomainError) as info:
        book.create(CART_ID, "c2", T0 + 2)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "already exists" in info.value.message
    assert book_state(book, [CART_ID]) == before


@pytest.mark.parametrize(("customer_id", "now"), [("", T0), ("x" * 129, T0), (None, float("inf"))])
def test_book_create_refuses_bad_customer_or_clock(customer_id: Any, now: float) -> None:
    book = CartBook()
    with pytest.raises(DomainError) as info:
        book.create(CART_ID, customer_id, now)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert len(book) == 0


def test_book_get_missing() -> None:
    book = CartBook()
    with pytest.raises(DomainError) as info:
        book.get(CART_ID)
    assert info.value.code is ErrorCode.CART_NOT_FOUND
    with pytest.raises(DomainError) as info:
        book.remove(CART_ID)
    assert info.value.code is ErrorCode.CART_NOT_FOUND


def test_book_put_replaces_and_remove() -> None:
    book = CartBook()
    book.create(CART_ID, None, T0)
    restored = Cart(CART_ID, "c9", {"A": 2}, T0 - 100, T0 - 50, 7)
    book.put(restored)
    assert book.get(CART_ID) is restored
    assert len(book) == 1
    assert book.remove(CART_ID) is restored
    assert len(book) == 0
    with pytest.raises(DomainError) as info:
        book.put(Cart("bad id", None, {}, T0, T0))
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert len(book) == 0


def test_expire_idle_drops_only_idle_carts() -> None:
    book = CartBook()
    ids = [f"cart_{i:016d}" for i in range(4)]
    for i, cart_id in enumerate(ids):
        book.create(cart_id, None, T0 + i)
    # Touching a cart keeps it alive even though its first queue entry is old.
    book.get(ids[0]).add("A", 1, LIMITS, T0 + 50)
    assert book.expire_idle(T0 + 60, 59.0) == [ids[1]]  # idle for exactly the ttl
    assert sorted(book.expire_idle(T0 + 200, 100.0)) == sorted([ids[0], ids[2], ids[3]])
    assert len(book) == 0
    assert book.expire_idle(T0 + 10_000, 1.0) == []


def test_expire_idle_after_put_with_older_cart_and_remove() -> None:
    book = CartBook()
    book.create(CART_ID, None, T0 + 100)
    other = "cart_fedcba9876543210"
    book.create(other, None, T0 + 100)
    # A checkpointed copy older than the live cart must expire on its own timestamp.
    book.put(Cart(CART_ID, None, {}, T0, T0, 3))
    book.remove(other)
    assert book.expire_idle(T0 + 50, 10.0) == [CART_ID]
    assert len(book) == 0


def test_expire_idle_after_recreate_same_id() -> None:
    book = CartBook()
    book.create(CART_ID, None, T0)
    assert book.expire_idle(T0 + 10, 5.0) == [CART_ID]
    book.create(CART_ID, None, T0 + 20)
    assert book.expire_idle(T0 + 22, 5.0) == []
    assert book.expire_idle(T0 + 25, 5.0) == [CART_ID]


@pytest.mark.parametrize(("now", "ttl"), [(T0, 0.0), (T0, -1.0), (float("nan"), 1.0)])
def test_expire_idle_refuses_bad_arguments(now: float, ttl: float) -> None:
    book = CartBook()
    book.create(CART_ID, None, T0 - 1000)
    with pytest.raises(DomainError) as info:
        book.expire_idle(now, ttl)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert len(book) == 1


def test_idle_queue_stays_bounded() -> None:
    book = CartBook()
    for i in range(500):
        book.put(Cart(CART_ID, None, {}, T0 + i, T0 + i))
    assert len(book._idle) <= 2 * len(book) + 64


def test_cart_memory_budget() -> None:
    """Goal: <= 2 KiB per cart with 3 lines, book bookkeeping included."""
    n = 2000
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        book = CartBook()
        for i in range(n):
            cart = book.create(f"cart-{i:016d}-abcdef", f"customer-{i:010d}", T0 + i)
            for j in range(3):
                cart.add(f"SKU-{i:08d}-{j:02d}", 1 + j, LIMITS, T0 + i + 1.5)
        gc.collect()
        per_cart = (tracemalloc.get_traced_memory()[0] - start) / n
    finally:
        tracemalloc.stop()
    assert per_cart <= 2048, per_cart


# -- properties ------------------------------------------------------------------------

SMALL = CartLimits(max_lines=3, max_quantity_per_line=5)
SKUS = st.sampled_from(["A", "B", "C", "D", "E", "bad sku"])
QTY = st.integers(-1, 7)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), SKUS, QTY),
        st.tuples(st.just("set"), SKUS, QTY),
        st.tuples(st.just("remove"), SKUS, st.just(0)),
    ),
    max_size=40,
)


@FAST
@given(OPS)
def test_random_ops_respect_limits_and_refusals_change_nothing(
    ops: list[tuple[str, str, int]],
) -> None:
    cart = new_cart()
    model: dict[str, int] = {}
    now = T0
    for name, sku, qty in ops:
        now += 1
        before = cart.snapshot()
        try:
            if name == "add":
                cart.add(sku, qty, SMALL, now)
                model[sku] = model.get(sku, 0) + qty
            elif name == "set":
                cart.set_quantity(sku, qty, SMALL, now)
                model[sku] = qty
            else:
                cart.remove(sku, now)
                del model[sku]
        except DomainError:
            assert cart.snapshot() == before
        else:
            assert cart.version == before["version"] + 1
            assert cart.updated_at == now
        assert cart.lines == model
        assert len(cart.lines) <= SMALL.max_lines
        assert all(1 <= q <= SMALL.max_quantity_per_line for q in cart.lines.values())
        assert Cart.from_snapshot(cart.snapshot()) == cart
