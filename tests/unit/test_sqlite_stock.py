from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.errors import StoreIntegrityError, StoreUnavailable
from storage.records import ReservationRecord, StockChange, StockRecord, StockWrite
from storage.sqlite.stock import SqliteStockStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStockStore]:
    stock = SqliteStockStore(str(tmp_path / "ledger.db"))
    yield stock
    await stock.close()


def change(
    op_id: str, sku: str, kind: str, quantity: int, reservation_id: str | None = None
) -> StockChange:
    return StockChange(op_id, sku, kind, quantity, reservation_id, 1_700_000_000.0)


def write(
    levels: tuple[StockRecord, ...] = (),
    upserts: tuple[ReservationRecord, ...] = (),
    deletes: tuple[str, ...] = (),
    journal: tuple[StockChange, ...] = (),
) -> StockWrite:
    return StockWrite(levels, upserts, deletes, journal)


async def test_levels_round_trip(store: SqliteStockStore) -> None:
    levels = [StockRecord("A", 10, 0, 0), StockRecord("B", 0, 0, 0)]
    assert await store.put_levels(iter(levels)) == 2
    assert await store.load(["A", "B", "missing", "A"]) == {
        "A": (levels[0], []),
        "B": (levels[1], []),
    }
    assert await store.load([]) == {}
    # put_levels is an upsert.
    await store.put_levels([StockRecord("A", 7, 1, 2)])
    assert (await store.load(["A"]))["A"][0] == StockRecord("A", 7, 1, 2)


async def test_put_levels_streams_many(store: SqliteStockStore) -> None:
    written = await store.put_levels(StockRecord(f"S-{i}", i, 0, 0) for i in range(2100))
    assert written == 2100
    assert len(await store.load([f"S-{i}" for i in range(2100)])) == 2100


async def test_write_persists_levels_reservations_and_journal(store: SqliteStockStore) -> None:
    await store.put_levels([StockRecord("A", 10, 0, 0), StockRecord("B", 5, 0, 0)])
    hold = ReservationRecord("r-1", "A", 3, 1_700_000_900.5)
    other = ReservationRecord("r-2", "A", 1, 1_700_000_600.0)
    await store.write(
        write(
            levels=(StockRecord("A", 10, 4, 0),),
            upserts=(hold, other),
            journal=(
                change("op-1", "A", "reserve", 3, "r-1"),
                change("op-2", "A", "reserve", 1, "r-2"),
            ),
        )
    )
    loaded = await store.load(["A", "B"])
    # Reservations come back soonest-expiring first.
    assert loaded["A"] == (StockRecord("A", 10, 4, 0), [other, hold])
    assert loaded["B"] == (StockRecord("B", 5, 0, 0), [])

    await store.write(
        write(
            levels=(StockRecord("A", 10, 1, 3),),
            deletes=("r-1",),
            journal=(change("op-3", "A", "commit", 3, "r-1"),),
        )
    )
    assert (await store.load(["A"]))["A"] == (StockRecord("A", 10, 1, 3), [other])
    assert await store.journal_for("A") == [
        ("op-1", "reserve", 3),
        ("op-2", "reserve", 1),
        ("op-3", "commit", 3),
    ]
    assert await store.journal_for("B") == []


async def test_reservation_in_upsert_and_delete_ends_deleted(store: SqliteStockStore) -> None:
    await store.put_levels([StockRecord("A", 10, 0, 0)])
    hold = ReservationRecord("r-1", "A", 3, 1.0)
    await store.write(write(upserts=(hold,), deletes=("r-1",)))
    assert (await store.load(["A"]))["A"][1] == []


@pytest.mark.parametrize(
    "bad_level",
    [
        StockRecord("B", 5, 4, 2),  # on_hand - reserved - sold < 0
        StockRecord("B", -1, 0, 0),
        StockRecord("B", 5, -1, 0),
        StockRecord("B", 5, 0, -1),
    ],
)
async def test_constraint_violation_persists_nothing(
    store: SqliteStockStore, bad_level: StockRecord
) -> None:
    await store.put_levels([StockRecord("A", 10, 0, 0), StockRecord("B", 5, 0, 0)])
    # Valid parts first, the violation last: everything before it must roll back.
    bad = write(
        levels=(StockRecord("A", 10, 2, 0), bad_level),
        upserts=(ReservationRecord("r-1", "A", 2, 1.0),),
        journal=(change("op-1", "A", "reserve", 2, "r-1"),),
    )
    with pytest.raises(StoreIntegrityError) as info:
        await store.write(bad)
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)

    assert await store.load(["A", "B"]) == {
        "A": (StockRecord("A", 10, 0, 0), []),
        "B": (StockRecord("B", 5, 0, 0), []),
    }
    assert await store.journal_for("A") == []
    # The connection is usable again after the rollback.
    await store.write(write(levels=(StockRecord("A", 10, 1, 0),)))
    assert (await store.load(["A"]))["A"][0] == StockRecord("A", 10, 1, 0)


async def test_reservation_for_unknown_sku_is_refused(store: SqliteStockStore) -> None:
    with pytest.raises(StoreIntegrityError):
        await store.write(write(upserts=(ReservationRecord("r-1", "ghost", 1, 1.0),)))
    assert await store.load(["ghost"]) == {}


async def test_replayed_op_is_journalled_once(store: SqliteStockStore) -> None:
    await store.put_levels([StockRecord("A", 10, 0, 0)])
    batch = write(
        levels=(StockRecord("A", 12, 0, 0),),
        journal=(change("op-1", "A", "receive", 2), change("op-2", "A", "adjust", -1)),
    )
    await store.write(batch)
    await store.write(batch)  # replay after an actor restart
    # Same op, different kind or SKU: distinct journal rows.
    await store.write(write(journal=(change("op-1", "A", "adjust", 5),)))
    await store.write(write(journal=(change("op-2", "A", "adjust", -1),)))

    assert await store.journal_for("A") == [
        ("op-1", "receive", 2),
        ("op-2", "adjust", -1),
        ("op-1", "adjust", 5),
    ]
    assert (await store.load(["A"]))["A"][0] == StockRecord("A", 12, 0, 0)


async def test_two_connections_write_one_file_concurrently(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.db")
    first, second = SqliteStockStore(path), SqliteStockStore(path)
    skus = [f"S-{i}" for i in range(10)]
    try:
        await first.put_levels(StockRecord(sku, 1000, 0, 0) for sku in skus)

        async def worker(store: SqliteStockStore, name: str) -> None:
            for n in range(60):
                sku = skus[n % len(skus)]
                await store.write(
                    write(
                        levels=(StockRecord(sku, 1000, 0, n),),
                        journal=(change(f"{name}-{n}", sku, "commit", 1),),
                    )
                )

        # Interleaved writers on two connections; the busy timeout serialises them.
        await asyncio.gather(worker(first, "a"), worker(second, "b"), worker(first, "c"))
        journal = [row for sku in skus for row in await second.journal_for(sku)]
        assert len(journal) == 180
        assert len({op_id for op_id, _, _ in journal}) == 180
    finally:
        await first.close()
        await second.close()


async def test_closed_store_is_unavailable(tmp_path: Path) -> None:
    stock = SqliteStockStore(str(tmp_path / "ledger.db"))
    await stock.put_levels([StockRecord("A", 1, 0, 0)])
    await stock.close()
    with pytest.raises(StoreUnavailable):
        await stock.load(["A"])


REPO_ROOT = Path(__file__).resolve().parents[2]

_OTHER_PROCESS = """
import asyncio, sys
from storage.records import StockChange, StockRecord, StockWrite
from storage.sqlite.stock import SqliteStockStore

async def main() -> None:
    store = SqliteStockStore(sys.argv[1])
    for n in range(150):
        level = (StockRecord("P", 1000, 0, n),)
        journal = (StockChange(f"proc-{n}", "P", "commit", 1, None, 0.0),)
        await store.write(StockWrite(level, (), (), journal))
        if n == 0:
            print("ready", flush=True)  # the parent starts writing now, so writes overlap
    await store.close()

asyncio.run(main())
"""


async def test_two_processes_write_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.db")
    stock = SqliteStockStore(path)
    await stock.put_levels([StockRecord("P", 1000, 0, 0), StockRecord("Q", 1000, 0, 0)])
    other = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _OTHER_PROCESS,
        path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert other.stdout is not None
        if await asyncio.wait_for(other.stdout.readline(), timeout=30) != b"ready\n":
            _, stderr = await other.communicate()
            pytest.fail(f"writer process failed to start: {stderr.decode()}")
        for n in range(150):
            await stock.write(
                write(
                    levels=(StockRecord("Q", 1000, 0, n),),
                    journal=(change(f"main-{n}", "Q", "commit", 1),),
                )
            )
        _, stderr = await asyncio.wait_for(other.communicate(), timeout=30)
        assert other.returncode == 0, stderr.decode()
        assert len(await stock.journal_for("P")) == 150
        assert len(await stock.journal_for("Q")) == 150
    finally:
        if other.returncode is None:
            other.kill()
            await other.wait()
        await stock.close()
