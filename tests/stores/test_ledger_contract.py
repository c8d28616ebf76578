"""The ledger contract: every test runs on SQLite and on PostgreSQL and must pass on both.

The ``ledger`` fixture gives each test clean prices and stock stores on one backend.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from storage.errors import StoreIntegrityError, StoreUnavailable
from storage.records import (
    PriceRecord,
    PromotionRecord,
    ReservationRecord,
    StockChange,
    StockRecord,
    StockWrite,
)
from tests.stores.conftest import Ledger


def promo(promotion_id: str = "promo-1", **changes: object) -> PromotionRecord:
    base = PromotionRecord(
        id=promotion_id,
        name="Spring sale",
        kind="percent",
        value=1500,
        currency=None,
        sku=None,
        category="home/kitchen",
        starts_at=1_700_000_000.0,
        ends_at=1_700_086_400.5,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


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


# --- prices and promotions ----------------------------------------------------------------


async def test_price_round_trip_and_upsert(ledger: Ledger) -> None:
    store = ledger.prices
    records = [PriceRecord(f"SKU-{i}", 199 + i, "EUR", "home/kitchen") for i in range(3)]
    assert await store.put_prices(records) == 3
    assert await store.get_prices(["SKU-0", "SKU-2", "missing", "SKU-0"]) == {
        "SKU-0": records[0],
        "SKU-2": records[2],
    }
    changed = PriceRecord("SKU-1", 4999, "USD", "garden")
    assert await store.put_prices([changed]) == 1
    assert (await store.get_prices(["SKU-1"]))["SKU-1"] == changed
    assert await store.get_prices([]) == {}
    assert await store.put_prices([]) == 0


async def test_same_sku_twice_in_one_call_keeps_the_last(ledger: Ledger) -> None:
    first, last = PriceRecord("S", 100, "EUR", "c"), PriceRecord("S", 250, "EUR", "d")
    assert await ledger.prices.put_prices([first, last]) == 2
    assert await ledger.prices.get_prices(["S"]) == {"S": last}


async def test_amounts_come_back_as_int(ledger: Ledger) -> None:
    big = 100_000_000_000  # beyond 32 bits: BIGINT, not INTEGER
    await ledger.prices.put_prices([PriceRecord("SKU-1", big, "JPY", "toys")])
    amount = (await ledger.prices.get_prices(["SKU-1"]))["SKU-1"].amount
    assert type(amount) is int
    assert amount == big


async def test_put_prices_streams_generators(ledger: Ledger) -> None:
    written = await ledger.prices.put_prices(
        PriceRecord(f"S-{i}", 500, "EUR", "c") for i in range(2300)
    )
    assert written == 2300
    assert len(await ledger.prices.get_prices([f"S-{i}" for i in range(2300)])) == 2300


@pytest.mark.parametrize(
    "bad",
    [
        PriceRecord("SKU-x", 12.5, "EUR", "c"),  # type: ignore[arg-type]
        PriceRecord("SKU-x", float("nan"), "EUR", "c"),  # type: ignore[arg-type]
        PriceRecord("SKU-x", -1, "EUR", "c"),
        PriceRecord("SKU-x", 100, "EURO", "c"),
    ],
    ids=["float", "nan", "negative", "currency"],
)
async def test_invalid_price_fails_whole_call(ledger: Ledger, bad: PriceRecord) -> None:
    with pytest.raises(StoreIntegrityError):
        await ledger.prices.put_prices([PriceRecord("SKU-ok", 100, "EUR", "c"), bad])
    assert await ledger.prices.get_prices(["SKU-ok", "SKU-x"]) == {}


async def test_integral_float_is_stored_as_int(ledger: Ledger) -> None:
    # SQLite's INTEGER affinity turns 12.0 into 12 before its typeof() CHECK, so the
    # contract is "no fractional money", and what is stored is always an int.
    await ledger.prices.put_prices([PriceRecord("S", 12.0, "EUR", "c")])  # type: ignore[arg-type]
    amount = (await ledger.prices.get_prices(["S"]))["S"].amount
    assert type(amount) is int
    assert amount == 12


async def test_float_amount_is_refused_in_a_later_chunk(ledger: Ledger) -> None:
    # The bad record comes after the first streamed chunk was sent: that must roll back.
    records = [PriceRecord(f"S-{i}", 1, "EUR", "c") for i in range(1500)]
    records.append(PriceRecord("S-bad", 9.99, "EUR", "c"))  # type: ignore[arg-type]
    with pytest.raises(StoreIntegrityError):
        await ledger.prices.put_prices(iter(records))
    assert await ledger.prices.get_prices(["S-0", "S-1499"]) == {}


async def test_promotion_lifecycle(ledger: Ledger) -> None:
    store = ledger.prices
    first = promo("promo-1")
    second = promo("promo-0", kind="fixed", value=500, currency="EUR", sku="SKU-1", category=None)
    await store.put_promotion(first)
    await store.put_promotion(second)
    assert await store.list_promotions() == [second, first]  # ordered by id

    renamed = replace(first, name="Summer sale", ends_at=1_800_000_000.25)
    await store.put_promotion(renamed)
    assert await store.list_promotions() == [second, renamed]

    assert await store.delete_promotion("promo-0") is True
    assert await store.delete_promotion("promo-0") is False
    assert await store.list_promotions() == [renamed]


async def test_promotions_are_listed_in_byte_order(ledger: Ledger) -> None:
    # A linguistic collation would put "a-2" / "a1" / "B" / "b" in another order.
    ids = ["b", "a1", "B", "a-2", "_z"]
    for promotion_id in ids:
        await ledger.prices.put_promotion(promo(promotion_id))
    listed = [p.id for p in await ledger.prices.list_promotions()]
    assert listed == sorted(ids, key=lambda s: s.encode())


@pytest.mark.parametrize(
    "bad",
    [
        promo(sku="SKU-1"),  # both sku and category
        promo(category=None),  # neither
        promo(kind="bogo"),
        promo(kind="fixed", currency=None),
        promo(value=-5),
        promo(value=12.5),
    ],
    ids=["sku-and-category", "neither", "kind", "fixed-without-currency", "negative", "float"],
)
async def test_invalid_promotion_is_refused(ledger: Ledger, bad: PromotionRecord) -> None:
    with pytest.raises(StoreIntegrityError):
        await ledger.prices.put_promotion(bad)
    assert await ledger.prices.list_promotions() == []


# --- stock levels ---------------------------------------------------------------------------


async def test_levels_round_trip(ledger: Ledger) -> None:
    store = ledger.stock
    levels = [StockRecord("A", 10, 0, 0), StockRecord("B", 0, 0, 0)]
    assert await store.put_levels(iter(levels)) == 2
    assert await store.load(["A", "B", "missing", "A"]) == {
        "A": (levels[0], []),
        "B": (levels[1], []),
    }
    assert await store.load([]) == {}
    await store.put_levels([StockRecord("A", 7, 1, 2)])  # an upsert
    assert (await store.load(["A"]))["A"][0] == StockRecord("A", 7, 1, 2)


async def test_put_levels_streams_many(ledger: Ledger) -> None:
    written = await ledger.stock.put_levels(StockRecord(f"S-{i}", i, 0, 0) for i in range(2100))
    assert written == 2100
    loaded = await ledger.stock.load([f"S-{i}" for i in range(2100)])
    assert len(loaded) == 2100
    assert loaded["S-2099"][0] == StockRecord("S-2099", 2099, 0, 0)


async def test_invalid_level_fails_whole_put_levels(ledger: Ledger) -> None:
    with pytest.raises(StoreIntegrityError):
        await ledger.stock.put_levels([StockRecord("A", 5, 0, 0), StockRecord("B", 1, 2, 0)])
    assert await ledger.stock.load(["A", "B"]) == {}


# --- stock writes ---------------------------------------------------------------------------


async def test_write_persists_levels_reservations_and_journal(ledger: Ledger) -> None:
    store = ledger.stock
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
    assert loaded["A"] == (StockRecord("A", 10, 4, 0), [other, hold])  # soonest expiry first
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


async def test_same_sku_twice_in_one_write_keeps_the_last(ledger: Ledger) -> None:
    await ledger.stock.put_levels([StockRecord("A", 10, 0, 0), StockRecord("B", 10, 0, 0)])
    await ledger.stock.write(
        write(
            levels=(StockRecord("B", 9, 0, 0), StockRecord("A", 8, 0, 0), StockRecord("B", 7, 0, 0))
        )
    )
    loaded = await ledger.stock.load(["A", "B"])
    assert loaded["A"][0] == StockRecord("A", 8, 0, 0)
    assert loaded["B"][0] == StockRecord("B", 7, 0, 0)


async def test_deletes_run_after_upserts(ledger: Ledger) -> None:
    await ledger.stock.put_levels([StockRecord("A", 10, 0, 0)])
    kept = ReservationRecord("r-2", "A", 1, 2.0)
    # r-1 is created and released in the same batch: it must end deleted.
    await ledger.stock.write(
        write(upserts=(ReservationRecord("r-1", "A", 3, 1.0), kept), deletes=("r-1", "r-none"))
    )
    assert (await ledger.stock.load(["A"]))["A"][1] == [kept]


@pytest.mark.parametrize(
    "bad_level",
    [
        StockRecord("B", 5, 4, 2),  # on_hand - reserved - sold < 0
        StockRecord("B", -1, 0, 0),
        StockRecord("B", 5, -1, 0),
        StockRecord("B", 5, 0, -1),
        StockRecord("B", 5.5, 0, 0),  # type: ignore[arg-type]
    ],
    ids=["oversold", "on_hand", "reserved", "sold", "float"],
)
async def test_constraint_violation_persists_nothing(
    ledger: Ledger, bad_level: StockRecord
) -> None:
    store = ledger.stock
    await store.put_levels([StockRecord("A", 10, 0, 0), StockRecord("B", 5, 0, 0)])
    # Valid parts first, the violation last: everything before it must roll back.
    bad = write(
        levels=(StockRecord("A", 10, 2, 0), bad_level),
        upserts=(ReservationRecord("r-1", "A", 2, 1.0),),
        journal=(change("op-1", "A", "reserve", 2, "r-1"),),
    )
    with pytest.raises(StoreIntegrityError):
        await store.write(bad)

    assert await store.load(["A", "B"]) == {
        "A": (StockRecord("A", 10, 0, 0), []),
        "B": (StockRecord("B", 5, 0, 0), []),
    }
    assert await store.journal_for("A") == []
    # The store is usable again after the rollback.
    await store.write(write(levels=(StockRecord("A", 10, 1, 0),)))
    assert (await store.load(["A"]))["A"][0] == StockRecord("A", 10, 1, 0)


@pytest.mark.parametrize(
    "bad",
    [
        write(upserts=(ReservationRecord("r-2", "A", 0, 1.0),)),
        write(upserts=(ReservationRecord("r-2", "A", 1.5, 1.0),)),  # type: ignore[arg-type]
        write(journal=(change("op-2", "A", "adjust", 2.5),)),  # type: ignore[arg-type]
        write(journal=(StockChange(None, "A", "adjust", 1, None, 1.0),)),  # type: ignore[arg-type]
    ],
    ids=["zero-quantity", "float-quantity", "float-journal", "null-op-id"],
)
async def test_bad_reservation_or_journal_row_persists_nothing(
    ledger: Ledger, bad: StockWrite
) -> None:
    store = ledger.stock
    await store.put_levels([StockRecord("A", 10, 0, 0)])
    combined = StockWrite(
        levels=(StockRecord("A", 10, 1, 0),),
        upsert_reservations=(ReservationRecord("r-1", "A", 1, 1.0), *bad.upsert_reservations),
        delete_reservations=(),
        journal=(change("op-1", "A", "reserve", 1, "r-1"), *bad.journal),
    )
    with pytest.raises(StoreIntegrityError):
        await store.write(combined)
    assert await store.load(["A"]) == {"A": (StockRecord("A", 10, 0, 0), [])}
    assert await store.journal_for("A") == []


async def test_reservation_for_unknown_sku_is_refused(ledger: Ledger) -> None:
    with pytest.raises(StoreIntegrityError):
        await ledger.stock.write(write(upserts=(ReservationRecord("r-1", "ghost", 1, 1.0),)))
    assert await ledger.stock.load(["ghost"]) == {}


async def test_reservation_and_its_level_in_one_write(ledger: Ledger) -> None:
    # Levels are written first, so a batch may reserve on a SKU it creates.
    hold = ReservationRecord("r-1", "N", 2, 5.0)
    await ledger.stock.write(write(levels=(StockRecord("N", 5, 2, 0),), upserts=(hold,)))
    assert await ledger.stock.load(["N"]) == {"N": (StockRecord("N", 5, 2, 0), [hold])}


async def test_replayed_op_is_journalled_once(ledger: Ledger) -> None:
    store = ledger.stock
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
    await store.write(write(journal=(change("op-1", "B", "receive", 2),)))

    assert await store.journal_for("A") == [
        ("op-1", "receive", 2),
        ("op-2", "adjust", -1),
        ("op-1", "adjust", 5),
    ]
    assert await store.journal_for("B") == [("op-1", "receive", 2)]
    assert (await store.load(["A"]))["A"][0] == StockRecord("A", 12, 0, 0)


async def test_applied_ops_tells_which_ids_are_journalled(ledger: Ledger) -> None:
    store = ledger.stock
    await store.put_levels([StockRecord("A", 10, 0, 0)])
    await store.write(write(journal=(change("op-1", "A", "receive", 2),)))
    assert await store.applied_ops([]) == set()
    assert await store.applied_ops(["op-1", "op-9"]) == {"op-1"}
    many = [f"x-{i}" for i in range(1200)] + ["op-1"]
    assert await store.applied_ops(many) == {"op-1"}


async def test_large_journal_batch_keeps_write_order(ledger: Ledger) -> None:
    await ledger.stock.put_levels([StockRecord("A", 1000, 0, 0)])
    ops = tuple(change(f"op-{n:03}", "A", "adjust", (-1) ** n * n) for n in range(400))
    shuffled = ops[200:] + ops[:200]
    # A duplicate inside the same batch counts once, at its first position.
    await ledger.stock.write(write(journal=(*shuffled, ops[250], ops[10])))
    assert await ledger.stock.journal_for("A") == [(c.op_id, c.kind, c.quantity) for c in shuffled]


async def test_concurrent_writers_all_land(ledger: Ledger) -> None:
    skus = [f"C-{i}" for i in range(20)]
    await ledger.stock.put_levels(StockRecord(sku, 100, 0, 0) for sku in skus)

    async def one(i: int, sku: str) -> None:
        await ledger.stock.write(
            write(
                levels=(StockRecord(sku, 100, i + 1, 0),),
                upserts=(ReservationRecord(f"r-{sku}", sku, i + 1, 10.0 + i),),
                journal=(change(f"op-{sku}", sku, "reserve", i + 1, f"r-{sku}"),),
            )
        )

    await asyncio.gather(*(one(i, sku) for i, sku in enumerate(skus)))
    loaded = await ledger.stock.load(skus)
    for i, sku in enumerate(skus):
        assert loaded[sku] == (
            StockRecord(sku, 100, i + 1, 0),
            [ReservationRecord(f"r-{sku}", sku, i + 1, 10.0 + i)],
        )
        assert await ledger.stock.journal_for(sku) == [(f"op-{sku}", "reserve", i + 1)]


async def test_closed_stores_are_unavailable(ledger: Ledger) -> None:
    await ledger.stock.put_levels([StockRecord("A", 1, 0, 0)])
    await ledger.stock.close()
    await ledger.prices.close()
    with pytest.raises(StoreUnavailable):
        await ledger.stock.load(["A"])
    with pytest.raises(StoreUnavailable):
        await ledger.prices.get_prices(["A"])
