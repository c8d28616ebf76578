from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.inventory import Inventory, Reservation, StockLevel

T0 = 1_700_000_000.0
TTL = 600.0


def state(inv: Inventory) -> dict[str, Any]:
    """Everything observable through the public API, for before/after comparisons."""
    out: dict[str, Any] = {}
    for sku in sorted(inv.skus()):
        held = inv.reservations_for(sku)
        out[sku] = (inv.level(sku), sorted(held, key=lambda r: r.id))
        for res in held:
            assert inv.reservation(res.id) == res
    return out


def refused(code: ErrorCode, inv: Inventory, call: Callable[..., Any], *args: Any) -> DomainError:
    before = state(inv)
    with pytest.raises(DomainError) as info:
        call(*args)
    assert info.value.code is code, info.value
    assert state(inv) == before
    return info.value


def stocked(on_hand: int = 10, sku: str = "A") -> Inventory:
    inv = Inventory()
    inv.receive(sku, on_hand)
    return inv


# -- levels ----------------------------------------------------------------------------


def test_receive_creates_and_adds() -> None:
    inv = Inventory()
    assert not inv.knows("A")
    assert inv.receive("A", 5) == StockLevel("A", 5, 0, 0)
    assert inv.receive("A", 3) == StockLevel("A", 8, 0, 0)
    assert inv.knows("A")
    assert inv.level("A").available == 8
    assert len(inv) == inv.sku_count() == 1


@pytest.mark.parametrize("quantity", [0, -3, True, 2.0, "2", None])
def test_receive_refuses_invalid_quantity(quantity: Any) -> None:
    inv = stocked()
    refused(ErrorCode.QUANTITY_INVALID, inv, inv.receive, "A", quantity)
    refused(ErrorCode.QUANTITY_INVALID, inv, inv.receive, "NEW", quantity)
    assert not inv.knows("NEW")


def test_receive_refuses_bad_sku_and_overflow() -> None:
    inv = stocked()
    refused(ErrorCode.INVALID_ARGUMENT, inv, inv.receive, "a b", 1)
    refused(ErrorCode.INVALID_ARGUMENT, inv, inv.set_on_hand, "", 1)
    inv.set_on_hand("A", 2**63 - 1)
    refused(ErrorCode.QUANTITY_INVALID, inv, inv.receive, "A", 1)


def test_set_on_hand_absolute_and_creates() -> None:
    inv = stocked(10)
    inv.reserve("r1", "A", 3, T0, TTL)
    inv.commit("r1", T0)
    inv.reserve("r2", "A", 2, T0, TTL)
    assert inv.set_on_hand("A", 5) == StockLevel("A", 5, 2, 3)
    assert inv.level("A").available == 0
    assert inv.set_on_hand("B", 0) == StockLevel("B", 0, 0, 0)


def test_set_on_hand_error_paths() -> None:
    inv = stocked(10)
    inv.reserve("r1", "A", 3, T0, TTL)
    inv.commit("r1", T0)
    inv.reserve("r2", "A", 2, T0, TTL)
    err = refused(ErrorCode.STOCK_INVALID, inv, inv.set_on_hand, "A", 4)
    assert err.details == {"sku": "A", "on_hand": 4, "reserved": 2, "sold": 3}
    refused(ErrorCode.QUANTITY_INVALID, inv, inv.set_on_hand, "A", -1)
    refused(ErrorCode.QUANTITY_INVALID, inv, inv.set_on_hand, "A", 5.0)
    refused(ErrorCode.QUANTITY_INVALID, inv, inv.set_on_hand, "A", True)
    refused(ErrorCode.QUANTITY_INVALID, inv, inv.set_on_hand, "A", 2**63)


def test_unknown_sku_lookups() -> None:
    inv = stocked()
    refused(ErrorCode.SKU_NOT_FOUND, inv, inv.level, "B")
    refused(ErrorCode.SKU_NOT_FOUND, inv, inv.reservations_for, "B")
    refused(ErrorCode.SKU_NOT_FOUND, inv, inv.reserve, "r1", "B", 1, T0, TTL)
    assert inv.reservation("nope") is None


def test_levels_handed_out_are_immutable() -> None:
    inv = stocked()
    level = inv.level("A")
    with pytest.raises(AttributeError):
        level.on_hand = 99  # type: ignore[misc]
    assert inv.level("A").on_hand == 10


# -- reservations ----------------------------------------------------------------------


def test_reserve_release_commit() -> None:
    inv = stocked(10)
    r1 = inv.reserve("r1", "A", 4, T0, TTL)
    assert r1 == Reservation("r1", "A", 4, T0 + TTL)
    assert inv.level("A") == StockLevel("A", 10, 4, 0)
    inv.reserve("r2", "A", 6, T0, TTL)
    assert inv.level("A").available == 0
    assert [r.id for r in inv.reservations_for("A")] == ["r1", "r2"]
    assert inv.release("r1") == r1
    assert inv.level("A") == StockLevel("A", 10, 6, 0)
    assert inv.commit("r2", T0 + 1).quantity == 6
    assert inv.level("A") == StockLevel("A", 10, 0, 6)
    assert inv.reservations_for("A") == []
    assert inv.reservation("r1") is None


def test_reserve_insufficient_stock_reports_available() -> None:
    inv = stocked(5)
    inv.reserve("r1", "A", 3, T0, TTL)
    err = refused(ErrorCode.INSUFFICIENT_STOCK, inv, inv.reserve, "r2", "A", 3, T0, TTL)
    assert err.details["available"] == 2
    assert err.details["requested"] == 3


def test_reserve_is_idempotent_per_id() -> None:
    inv = stocked(5)
    first = inv.reserve("r1", "A", 3, T0, TTL)
    before = state(inv)
    # Same request again, later and even when stock would no longer suffice.
    again = inv.reserve("r1", "A", 3, T0 + 100, TTL * 2)
    assert again is first
    assert state(inv) == before


def test_reserve_conflicting_reuse_of_id() -> None:
    inv = stocked(5)
    inv.receive("B", 5)
    inv.reserve("r1", "A", 3, T0, TTL)
    err = refused(ErrorCode.RESERVATION_CONFLICT, inv, inv.reserve, "r1", "A", 2, T0, TTL)
    assert err.details["quantity"] == 3
    refused(ErrorCode.RESERVATION_CONFLICT, inv, inv.reserve, "r1", "B", 3, T0, TTL)


@pytest.mark.parametrize(
    ("rid", "qty", "now", "ttl", "code"),
    [
        ("r9", 0, T0, TTL, ErrorCode.QUANTITY_INVALID),
        ("r9", -1, T0, TTL, ErrorCode.QUANTITY_INVALID),
        ("r9", 1.0, T0, TTL, ErrorCode.QUANTITY_INVALID),
        ("r9", 1, T0, 0.0, ErrorCode.INVALID_ARGUMENT),
        ("r9", 1, T0, -5.0, ErrorCode.INVALID_ARGUMENT),
        ("r9", 1, T0, float("inf"), ErrorCode.INVALID_ARGUMENT),
        ("r9", 1, float("nan"), TTL, ErrorCode.INVALID_ARGUMENT),
        ("", 1, T0, TTL, ErrorCode.INVALID_ARGUMENT),
        ("x" * 257, 1, T0, TTL, ErrorCode.INVALID_ARGUMENT),
        (None, 1, T0, TTL, ErrorCode.INVALID_ARGUMENT),
    ],
)
def test_reserve_argument_errors(
    rid: Any, qty: Any, now: float, ttl: float, code: ErrorCode
) -> None:
    inv = stocked(5)
    inv.reserve("r1", "A", 1, T0, TTL)
    refused(code, inv, inv.reserve, rid, "A", qty, now, ttl)


def test_release_and_commit_unknown() -> None:
    inv = stocked()
    inv.reserve("r1", "A", 1, T0, TTL)
    refused(ErrorCode.RESERVATION_NOT_FOUND, inv, inv.release, "r2")
    refused(ErrorCode.RESERVATION_NOT_FOUND, inv, inv.commit, "r2", T0)
    inv.release("r1")
    refused(ErrorCode.RESERVATION_NOT_FOUND, inv, inv.release, "r1")
    inv.reserve("r3", "A", 1, T0, TTL)
    inv.commit("r3", T0)
    refused(ErrorCode.RESERVATION_NOT_FOUND, inv, inv.commit, "r3", T0)
    refused(ErrorCode.INVALID_ARGUMENT, inv, inv.commit, "r3", float("nan"))


def test_commit_refuses_expired_but_release_works() -> None:
    inv = stocked(5)
    inv.reserve("r1", "A", 2, T0, 10.0)
    assert inv.reserve("r2", "A", 1, T0, 10.0).expires_at == T0 + 10
    inv.commit("r2", T0 + 10)  # exactly at expiry is still in time
    err = refused(ErrorCode.RESERVATION_NOT_FOUND, inv, inv.commit, "r1", T0 + 10.5)
    assert err.details["expired"] is True
    assert "expired" in err.message
    assert inv.release("r1").quantity == 2
    assert inv.level("A") == StockLevel("A", 5, 0, 1)


def test_expire_releases_due_reservations_in_order() -> None:
    inv = stocked(10)
    inv.reserve("late", "A", 1, T0, 30.0)
    inv.reserve("early", "A", 2, T0, 10.0)
    inv.reserve("mid", "A", 3, T0, 20.0)
    inv.reserve("gone", "A", 1, T0, 5.0)
    inv.release("gone")
    inv.reserve("done", "A", 1, T0, 5.0)
    inv.commit("done", T0)
    assert inv.expire(T0 + 4) == []
    assert [r.id for r in inv.expire(T0 + 20)] == ["early", "mid"]
    assert inv.level("A") == StockLevel("A", 10, 1, 1)
    assert [r.id for r in inv.expire(T0 + 1000)] == ["late"]
    assert inv.level("A") == StockLevel("A", 10, 0, 1)
    assert inv.expire(T0 + 10_000) == []


def test_expire_after_id_reuse_uses_the_new_expiry() -> None:
    inv = stocked(10)
    inv.reserve("r1", "A", 1, T0, 10.0)
    inv.release("r1")
    inv.reserve("r1", "A", 1, T0 + 5, 100.0)
    assert inv.expire(T0 + 50) == []
    assert [r.expires_at for r in inv.expire(T0 + 105)] == [T0 + 105]


def test_expiry_heap_stays_bounded() -> None:
    inv = stocked(10)
    for i in range(1000):
        inv.reserve(f"r{i}", "A", 1, T0, TTL)
        inv.release(f"r{i}")
    assert len(inv._expiry) <= 64


# -- load / forget ---------------------------------------------------------------------


def test_load_replaces_sku_state() -> None:
    inv = stocked(10)
    inv.reserve("old", "A", 2, T0, TTL)
    inv.receive("B", 1)
    held = [Reservation("x", "A", 3, T0 + 5), Reservation("y", "A", 1, T0 + 50)]
    inv.load(StockLevel("A", 20, 4, 7), held)
    assert inv.level("A") == StockLevel("A", 20, 4, 7)
    assert inv.reservation("old") is None
    assert [r.id for r in inv.reservations_for("A")] == ["x", "y"]
    assert inv.level("B").on_hand == 1
    # The stale heap entry for "old" must not release anything.
    assert [r.id for r in inv.expire(T0 + TTL)] == ["x", "y"]
    assert inv.level("A") == StockLevel("A", 20, 0, 7)


def test_load_allows_odd_legacy_sku() -> None:
    inv = Inventory()
    inv.load(StockLevel("legacy sku", 1), [])
    assert inv.level("legacy sku").on_hand == 1


@pytest.mark.parametrize(
    ("level", "held"),
    [
        (StockLevel("A", -1, 0, 0), []),
        (StockLevel("A", 5, 3, 3), [Reservation("x", "A", 3, T0)]),
        (StockLevel("A", 5, 0, -1), []),
        (StockLevel("A", 5, 2, 0), [Reservation("x", "A", 1, T0)]),
        (StockLevel("A", 5, 2, 0), [Reservation("x", "B", 2, T0)]),
        (StockLevel("A", 5, 2, 0), [Reservation("x", "A", 1, T0), Reservation("x", "A", 1, T0)]),
        (StockLevel("A", 5, 0, 0), [Reservation("x", "A", 0, T0)]),
        (StockLevel("A", 5, 1, 0), [Reservation("held-by-B", "A", 1, T0)]),
        (StockLevel("A", 5.0, 0, 0), []),  # type: ignore[arg-type]
    ],
)
def test_load_refuses_inconsistent_data(level: StockLevel, held: list[Reservation]) -> None:
    inv = stocked(10, sku="B")
    inv.reserve("held-by-B", "B", 1, T0, TTL)
    inv.receive("A", 3)
    refused(ErrorCode.STOCK_INVALID, inv, inv.load, level, held)


def test_load_refuses_non_finite_expiry() -> None:
    inv = Inventory()
    with pytest.raises(DomainError) as info:
        inv.load(StockLevel("A", 5, 1), [Reservation("x", "A", 1, float("nan"))])
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert not inv.knows("A")


def test_forget_drops_sku_and_its_reservations() -> None:
    inv = stocked(10)
    inv.receive("B", 10)
    inv.reserve("ra", "A", 1, T0, 10.0)
    inv.reserve("rb", "B", 1, T0, 10.0)
    inv.forget("A")
    inv.forget("never-seen")
    assert not inv.knows("A")
    assert inv.reservation("ra") is None
    assert [r.id for r in inv.expire(T0 + 10)] == ["rb"]


def test_sku_memory_budget() -> None:
    """Goal: <= 300 B per SKU of stock held in memory."""
    n = 5000
    gc.collect()
    tracemalloc.start()
    try:
        inv = Inventory()
        start = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            inv.receive(f"SKU-{i:010d}-xx", 1000 + i)
        gc.collect()
        per_sku = (tracemalloc.get_traced_memory()[0] - start) / n
    finally:
        tracemalloc.stop()
    assert per_sku <= 300, per_sku


# -- state machine ---------------------------------------------------------------------

SKUS = st.sampled_from(["A", "B", "C"])
RIDS = st.sampled_from([f"r{i}" for i in range(6)])
# Time moves on every operation, mostly a little; expire() jumps further.
STEP = st.sampled_from([0.0, 0.5, 1.0, 3.0, 8.0])
JUMP = st.sampled_from([6.0, 25.0, 2.0, 0.0])


class InventoryMachine(RuleBasedStateMachine):
    """Random operations with a moving clock, checked against a plain model.

    Each rule predicts the outcome (result or error code) from the model before calling
    the inventory; refusals must leave every observable bit of state unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self.inv = Inventory()
        self.now = T0
        self.on_hand: dict[str, int] = {}
        self.sold: dict[str, int] = {}
        self.live: dict[str, Reservation] = {}
        # Unit bookkeeping per SKU: everything reserved must be held, sold, or given back.
        self.reserved_in: dict[str, int] = {}
        self.released: dict[str, int] = {}
        self.expired: dict[str, int] = {}

    def outcome(self, expected: ErrorCode | None, call: Callable[[], Any]) -> Any:
        before = state(self.inv)
        try:
            result = call()
        except DomainError as err:
            refusal: DomainError | None = err
            result = None
        else:
            refusal = None
        assert (refusal.code if refusal else None) is expected, (refusal, result, expected)
        if refusal is not None:
            assert state(self.inv) == before
        return result

    def held(self, sku: str) -> int:
        return sum(r.quantity for r in self.live.values() if r.sku == sku)

    def available(self, sku: str) -> int:
        return self.on_hand[sku] - self.held(sku) - self.sold.get(sku, 0)

    def some_live(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(sorted(self.live)))

    @staticmethod
    def bump(book: dict[str, int], sku: str, qty: int) -> None:
        book[sku] = book.get(sku, 0) + qty

    @initialize(qty=st.sampled_from([12, 3]))
    def stock_up(self, qty: int) -> None:
        for sku in ("A", "B"):
            self.inv.receive(sku, qty)
            self.on_hand[sku] = qty

    @rule(sku=SKUS, qty=st.sampled_from([1, 2, 3, 6, -1]))
    def receive(self, sku: str, qty: int) -> None:
        expected = ErrorCode.QUANTITY_INVALID if qty < 1 else None
        if self.outcome(expected, lambda: self.inv.receive(sku, qty)) is not None:
            self.bump(self.on_hand, sku, qty)

    @rule(sku=SKUS, offset=st.sampled_from([0, 1, 5, -1]))
    def set_on_hand(self, sku: str, offset: int) -> None:
        # Relative to reserved + sold, so the STOCK_INVALID boundary is actually hit.
        committed = self.held(sku) + self.sold.get(sku, 0)
        on_hand = committed + offset
        expected = None
        if on_hand < 0:
            expected = ErrorCode.QUANTITY_INVALID
        elif offset < 0:
            expected = ErrorCode.STOCK_INVALID
        if self.outcome(expected, lambda: self.inv.set_on_hand(sku, on_hand)) is not None:
            self.on_hand[sku] = on_hand

    @rule(
        rid=RIDS,
        sku=SKUS,
        qty=st.sampled_from([1, 2, 3, 4]),
        ttl=st.sampled_from([20.0, 5.0, 1.0]),
        dt=STEP,
    )
    def reserve(self, rid: str, sku: str, qty: int, ttl: float, dt: float) -> None:
        self.now += dt
        existing = self.live.get(rid)
        expected = None
        if qty < 1:
            expected = ErrorCode.QUANTITY_INVALID
        elif existing is not None:
            same = (existing.sku, existing.quantity) == (sku, qty)
            expected = None if same else ErrorCode.RESERVATION_CONFLICT
        elif sku not in self.on_hand:
            expected = ErrorCode.SKU_NOT_FOUND
        elif self.available(sku) < qty:
            expected = ErrorCode.INSUFFICIENT_STOCK
        res = self.outcome(expected, lambda: self.inv.reserve(rid, sku, qty, self.now, ttl))
        if res is None:
            return
        if existing is not None:
            assert res is existing
            return
        assert res == Reservation(rid, sku, qty, self.now + ttl)
        self.live[rid] = res
        self.bump(self.reserved_in, sku, qty)

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data(), dt=STEP)
    def release(self, data: st.DataObject, dt: float) -> None:
        self.now += dt
        rid = self.some_live(data)
        res = self.outcome(None, lambda: self.inv.release(rid))
        assert res == self.live.pop(rid)
        self.bump(self.released, res.sku, res.quantity)

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data(), dt=STEP)
    def commit(self, data: st.DataObject, dt: float) -> None:
        self.now += dt
        rid = self.some_live(data)
        in_time = self.now <= self.live[rid].expires_at
        expected = None if in_time else ErrorCode.RESERVATION_NOT_FOUND
        res = self.outcome(expected, lambda: self.inv.commit(rid, self.now))
        if res is not None:
            assert res == self.live.pop(rid)
            self.bump(self.sold, res.sku, res.quantity)

    @rule(dt=JUMP)
    def expire(self, dt: float) -> None:
        self.now += dt
        due = sorted(
            (r for r in self.live.values() if r.expires_at <= self.now),
            key=lambda r: (r.expires_at, r.id),
        )
        assert self.inv.expire(self.now) == due
        for res in due:
            del self.live[res.id]
            self.bump(self.expired, res.sku, res.quantity)

    @precondition(lambda self: bool(self.on_hand))
    @rule(data=st.data())
    def reload(self, data: st.DataObject) -> None:
        # What a shard does after a failed write or a restart: re-hydrate from storage.
        sku = data.draw(st.sampled_from(sorted(self.on_hand)))
        level, held = self.inv.level(sku), self.inv.reservations_for(sku)
        self.inv.forget(sku)
        assert not self.inv.knows(sku)
        self.inv.load(level, held)

    @invariant()
    def matches_model(self) -> None:
        assert sorted(self.inv.skus()) == sorted(self.on_hand)
        for sku in self.on_hand:
            held = sorted(self.inv.reservations_for(sku), key=lambda r: r.id)
            expect = sorted((r for r in self.live.values() if r.sku == sku), key=lambda r: r.id)
            assert held == expect
            level = self.inv.level(sku)
            assert level == StockLevel(
                sku, self.on_hand[sku], self.held(sku), self.sold.get(sku, 0)
            )
        for rid, res in self.live.items():
            assert self.inv.reservation(rid) == res

    @invariant()
    def stock_invariant(self) -> None:
        for sku in self.inv.skus():
            level = self.inv.level(sku)
            assert all(type(n) is int for n in (level.on_hand, level.reserved, level.sold))
            assert min(level.on_hand, level.reserved, level.sold) >= 0
            assert level.available >= 0
            assert level.reserved == sum(r.quantity for r in self.inv.reservations_for(sku))

    @invariant()
    def no_unit_created_or_lost(self) -> None:
        for sku in self.inv.skus():
            level = self.inv.level(sku)
            given_back = self.released.get(sku, 0) + self.expired.get(sku, 0)
            assert self.reserved_in.get(sku, 0) == level.reserved + level.sold + given_back


InventoryMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=16, deadline=None
)
TestInventoryMachine = InventoryMachine.TestCase
