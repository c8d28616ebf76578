"""The inventory shard's service over a real SQLite store: group commit and failure paths."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from actors.inventory_service import InventoryService
from actors.protocol import unwrap
from storage.errors import StoreUnavailable
from storage.records import ReservationRecord, StockRecord, StockWrite
from storage.sqlite.stock import SqliteStockStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class FlakyStore:
    """A real store whose next calls can be made to fail, as a lost connection would."""

    def __init__(self, inner: SqliteStockStore) -> None:
        self.inner = inner
        self.fail_writes = False
        self.fail_loads = False
        self.writes: list[StockWrite] = []

    async def load(
        self, skus: Sequence[str]
    ) -> dict[str, tuple[StockRecord, list[ReservationRecord]]]:
        if self.fail_loads:
            raise StoreUnavailable("down")
        return await self.inner.load(skus)

    async def applied_ops(self, op_ids: Sequence[str]) -> set[str]:
        return await self.inner.applied_ops(op_ids)

    async def write(self, change: StockWrite) -> None:
        if self.fail_writes:
            raise StoreUnavailable("down")
        self.writes.append(change)
        await self.inner.write(change)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FlakyStore]:
    inner = SqliteStockStore(str(tmp_path / "ledger.db"))
    await inner.put_levels([StockRecord("A", 10, 0, 0), StockRecord("B", 3, 0, 0)])
    yield FlakyStore(inner)
    await inner.close()


def service(store: FlakyStore, clock: Clock) -> InventoryService:
    return InventoryService(store, 60, 1000, clock=clock)  # type: ignore[arg-type]


async def test_one_batch_is_one_transaction(store: FlakyStore) -> None:
    svc = service(store, Clock())
    ops = [("reserve", (f"op{i}", f"r{i}", "A", 1)) for i in range(12)]
    replies = await svc.apply(ops)
    assert [ok for ok, _ in replies] == [True] * 10 + [False] * 2
    assert len(store.writes) == 1
    assert len(store.writes[0].journal) == 10
    stored, reservations = (await store.inner.load(["A"]))["A"]
    assert (stored.reserved, len(reservations)) == (10, 10)


async def test_failed_write_acknowledges_nothing_and_retry_applies(store: FlakyStore) -> None:
    svc = service(store, Clock())
    store.fail_writes = True
    replies = await svc.apply([("receive", ("op1", "A", 5)), ("stock", (["A"],))])
    assert replies[0][0] is False
    assert replies[0][1][0] == "store_unavailable"
    store.fail_writes = False
    # The same op id is applied now: the failed attempt was forgotten, not remembered.
    level = unwrap((await svc.apply([("receive", ("op1", "A", 5))]))[0])
    assert level["on_hand"] == 15
    stored, _ = (await store.inner.load(["A"]))["A"]
    assert stored.on_hand == 15


async def test_unreadable_store_refuses_instead_of_guessing(store: FlakyStore) -> None:
    svc = service(store, Clock())
    store.fail_loads = True
    replies = await svc.apply([("receive", ("op1", "A", 1))])
    assert replies[0][1][0] == "store_unavailable"
    assert store.writes == []
    store.fail_loads = False
    level = unwrap((await svc.apply([("receive", ("op2", "A", 1))]))[0])
    assert level["on_hand"] == 11  # 10 stored + 1, not a fresh 1


async def test_restart_reloads_and_expiry_survives(store: FlakyStore) -> None:
    clock = Clock()
    first = service(store, clock)
    unwrap((await first.apply([("reserve", ("op1", "r1", "B", 2, 5.0))]))[0])
    unwrap((await first.apply([("reserve", ("op2", "r2", "B", 1, 500.0))]))[0])
    # A new service instance is what a restarted actor is.
    clock.now += 10
    second = service(store, clock)
    level = unwrap((await second.apply([("stock", (["B"],))]))[0])["B"]
    assert level["reserved"] == 3
    assert await second.expire_due() == 1
    level = unwrap((await second.apply([("stock", (["B"],))]))[0])["B"]
    assert level == {"on_hand": 3, "reserved": 1, "sold": 0, "available": 2}
    stored, reservations = (await store.inner.load(["B"]))["B"]
    assert stored.reserved == 1
    assert [r.id for r in reservations] == ["r2"]
    journal = await store.inner.journal_for("B")
    assert [kind for _, kind, _ in journal] == ["reserve", "reserve", "expire"]


async def test_repeated_op_id_is_answered_not_reapplied(store: FlakyStore) -> None:
    svc = service(store, Clock())
    first = await svc.apply([("receive", ("op-x", "A", 2))])
    again = await svc.apply([("receive", ("op-x", "A", 2))])
    assert first == again
    assert len(store.writes) == 1


async def test_retry_reaching_a_restarted_shard_is_answered_from_the_journal(
    store: FlakyStore,
) -> None:
    first = service(store, Clock())
    unwrap((await first.apply([("receive", ("op-r", "A", 5))]))[0])
    unwrap((await first.apply([("reserve", ("op-s", "res-1", "A", 2))]))[0])
    # The reply was lost with the actor; the client sends the same operations again.
    second = service(store, Clock())
    level = unwrap((await second.apply([("receive", ("op-r", "A", 5))]))[0])
    assert level["on_hand"] == 15
    again = unwrap((await second.apply([("reserve", ("op-s", "res-1", "A", 2))]))[0])
    assert again["reservation_id"] == "res-1"
    stored, _ = (await store.inner.load(["A"]))["A"]
    assert (stored.on_hand, stored.reserved) == (15, 2)
    assert [k for _, k, _ in await store.inner.journal_for("A")] == ["receive", "reserve"]
