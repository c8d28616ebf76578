"""The lean forms of shard hot state (issue 8, memory) behave like the plain ones: packed op
log replies come back equal, SKUs are shared, recent op ids stay capped and in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from actors.cart_service import RECENT_OPS_PER_CART, CartService
from actors.domain.cart import Cart, CartBook, CartLimits, pack_snapshot, unpack_snapshot
from actors.inventory_service import InventoryService
from actors.oplog import OpLog
from actors.protocol import Reply, ok, unwrap
from storage.records import ReservationRecord, StockRecord, StockWrite

CART = "c" * 24
LIMITS = CartLimits(10, 10)


def fresh(text: str) -> str:
    """An equal string that is another object, as one unpickled from a request is."""
    return text.encode().decode()


def cart_with_lines(frozen: bool = False) -> Cart:
    cart = Cart.new(CART, "cus_1", 10.0)
    cart.add("SKU-1", 2, LIMITS, 11.0)
    cart.add("SKU-2", 1, LIMITS, 12.5)
    if frozen:
        cart.freeze("order-1", 13.0)
    return cart


@pytest.mark.parametrize(
    "snap",
    [
        Cart.new(CART, None, 1.0).snapshot(),
        cart_with_lines().snapshot(),
        cart_with_lines(frozen=True).snapshot(),
    ],
)
def test_a_packed_snapshot_unpacks_to_an_equal_dict_in_the_same_key_order(
    snap: dict[str, Any],
) -> None:
    packed = pack_snapshot(snap)
    assert packed is not None
    again = unpack_snapshot(packed)
    assert again == snap
    assert list(again) == list(snap)
    assert [list(line) for line in again["lines"]] == [list(line) for line in snap["lines"]]
    assert again is not snap
    assert unpack_snapshot(packed) is not again  # a new dict each time


def test_anything_not_shaped_like_a_snapshot_is_not_packed() -> None:
    snap = cart_with_lines().snapshot()
    assert pack_snapshot(None) is None
    assert pack_snapshot([snap]) is None
    assert pack_snapshot({**snap, "extra": 1}) is None
    assert pack_snapshot({**snap, "frozen_by": None}) is None  # would unpack without the key
    assert pack_snapshot({k: snap[k] for k in reversed(list(snap))}) is None
    assert pack_snapshot({**snap, "lines": tuple(snap["lines"])}) is None
    assert pack_snapshot({**snap, "lines": [{"sku": "A", "quantity": 1, "x": 0}]}) is None
    assert pack_snapshot({**snap, "lines": [{"quantity": 1, "sku": "A"}]}) is None


def test_carts_share_one_string_per_sku() -> None:
    book = CartBook()
    first = book.create("a" * 24, None, 1.0)
    second = book.create("b" * 24, None, 1.0)
    first.add(fresh("SKU-0000001-1"), 1, LIMITS, 2.0)
    second.add(fresh("SKU-0000001-1"), 1, LIMITS, 2.0)
    second.merge([(fresh("SKU-0000002-1"), 1)], LIMITS, 3.0)
    first.merge([(fresh("SKU-0000002-1"), 1)], LIMITS, 3.0)
    restored = Cart.from_snapshot(
        {**second.snapshot(), "lines": [{"sku": fresh("SKU-0000001-1"), "quantity": 1}]}
    )
    a, a2 = list(first.lines)
    b, b2 = list(second.lines)
    assert a is b
    assert a2 is b2
    assert next(iter(restored.lines)) is a


class Checkpoints:
    """An in-memory checkpoint store: what was saved last, per cart."""

    def __init__(self) -> None:
        self.saved: dict[str, dict[str, Any]] = {}

    async def save_many(self, snapshots: Sequence[dict[str, Any]], ttl_s: int) -> None:
        for snap in snapshots:
            self.saved[snap["id"]] = snap

    async def load(self, cart_id: str) -> dict[str, Any] | None:
        return self.saved.get(cart_id)

    async def delete(self, cart_id: str) -> None:
        self.saved.pop(cart_id, None)

    async def close(self) -> None:
        return None


def carts(checkpoints: Checkpoints | None = None, op_log_size: int = 1000) -> CartService:
    limits = CartLimits(50, 99)
    return CartService(limits, 3600, op_log_size, checkpoints=checkpoints, lag_s=0)  # type: ignore[arg-type]


async def test_a_repeated_cart_operation_gets_an_equal_reply_of_its_own() -> None:
    svc = carts()
    await svc.apply([("create", ("op-c", CART, None))])
    first = unwrap((await svc.apply([("add", ("op-a", CART, "SKU-1", 2))]))[0])
    await svc.apply([("add", ("op-b", CART, "SKU-1", 1))])
    expected = {**first, "lines": [dict(line) for line in first["lines"]]}
    first["lines"].append({"sku": "changed by the caller", "quantity": 1})  # the caller's copy
    again = unwrap((await svc.apply([("add", ("op-a", CART, "SKU-1", 2))]))[0])
    assert again == expected
    assert again["lines"] == [{"sku": "SKU-1", "quantity": 2}]


async def test_repeated_merges_freezes_and_refusals_are_answered_as_first() -> None:
    svc = carts()
    await svc.apply([("create", ("op-c", CART, None))])
    merge = ("merge", ("op-m", CART, [("A", 60), ("B", 1), ("A", 50)]))
    freeze = ("freeze", ("op-f", CART, "order-1"))
    refused_add = ("add", ("op-x", CART, "C", 1))  # the cart is frozen by then
    first = await svc.apply([merge, freeze, refused_add])
    assert first[0][1]["skipped"] == ["A"]
    assert first[1][1]["frozen_by"] == "order-1"
    assert first[2][0] is False
    again = await svc.apply([merge, freeze, refused_add])
    assert again == first


async def test_recent_op_ids_are_capped_oldest_first_and_go_with_the_checkpoint() -> None:
    store = Checkpoints()
    svc = carts(store)
    ops = [f"op-{i}" for i in range(RECENT_OPS_PER_CART + 4)]
    await svc.apply([("create", (ops[0], CART, None))])
    for op_id in ops[1:]:
        await svc.apply([("add", (op_id, CART, "SKU-1", 1))])
    await svc.apply([("add", (ops[-1], CART, "SKU-1", 1))])  # a repeat: not kept twice
    assert store.saved[CART]["op_ids"] == ops[-RECENT_OPS_PER_CART:]
    # A restarted shard answers the newest ones from the checkpoint...
    restarted = carts(store)
    replay = unwrap((await restarted.apply([("add", (ops[-1], CART, "SKU-1", 1))]))[0])
    assert replay["lines"] == [{"sku": "SKU-1", "quantity": len(ops) - 1}]
    # ...and applies one it no longer remembers.
    applied = unwrap((await restarted.apply([("add", (ops[1], CART, "SKU-1", 1))]))[0])
    assert applied["lines"] == [{"sku": "SKU-1", "quantity": len(ops)}]


async def test_a_checkpoint_with_more_op_ids_than_kept_loads_the_newest() -> None:
    store = Checkpoints()
    snap = Cart.new(CART, None, 1.0).snapshot()
    many = [f"op-{i}" for i in range(RECENT_OPS_PER_CART * 2)]
    store.saved[CART] = {**snap, "op_ids": [*many, 7]}
    svc = carts(store)
    await svc.apply([("add", ("op-new", CART, "SKU-1", 1))])
    assert store.saved[CART]["op_ids"] == [*many[-RECENT_OPS_PER_CART + 1 :], "op-new"]


class NullStock:
    async def load(
        self, skus: Sequence[str]
    ) -> dict[str, tuple[StockRecord, list[ReservationRecord]]]:
        return {}

    async def applied_ops(self, op_ids: Sequence[str]) -> set[str]:
        return set()

    async def write(self, change: StockWrite) -> None:
        return None


async def test_repeated_stock_operations_get_equal_replies() -> None:
    svc = InventoryService(NullStock(), 60, 1000, clock=lambda: 100.0, recall_window_s=0)  # type: ignore[arg-type]
    ops = [
        ("set_on_hand", ("op-1", "SKU-1", 1000)),
        ("reserve", ("op-2", "r-1", "SKU-1", 3)),
        ("receive", ("op-3", "SKU-1", 5)),
        ("commit", ("op-4", "r-1", "SKU-1")),
        ("reserve", ("op-5", "r-2", "SKU-1", 10_000)),  # refused: not enough
    ]
    first = await svc.apply(ops)
    assert first[0] == ok({"on_hand": 1000, "reserved": 0, "sold": 0, "available": 1000})
    assert first[4][0] is False
    again = await svc.apply(ops)
    assert again == first
    for a, b in zip(again, first, strict=True):
        if a[0]:
            assert list(a[1]) == list(b[1])
    level = unwrap((await svc.apply([("stock", (["SKU-1"],))]))[0])
    assert level["SKU-1"] == {"on_hand": 1005, "reserved": 0, "sold": 3, "available": 1002}


def test_an_op_log_packs_what_it_keeps_and_still_keeps_only_the_newest() -> None:
    packed: list[object] = []

    def pack(reply: Reply) -> object:
        packed.append(reply)
        return ("packed", reply[1])

    def unpack(stored: object) -> Reply:
        assert isinstance(stored, tuple)
        return ok(stored[1])

    log = OpLog(2, pack, unpack)
    for i in range(3):
        log.record(f"op-{i}", ok(i))
    assert len(log) == 2
    assert "op-0" not in log
    assert "op-1" in log
    assert log.get("op-0") is None
    assert log.get("op-2") == ok(2)
    assert len(packed) == 3
    with pytest.raises(ValueError, match="together"):
        OpLog(2, pack, None)
