from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from storage.errors import StoreIntegrityError
from storage.records import PriceRecord, PromotionRecord, StockRecord
from storage.sqlite.prices import SqlitePriceStore
from storage.sqlite.stock import SqliteStockStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlitePriceStore]:
    prices = SqlitePriceStore(str(tmp_path / "ledger.db"))
    yield prices
    await prices.close()


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


async def test_price_round_trip_and_upsert(store: SqlitePriceStore) -> None:
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


async def test_amounts_come_back_as_int(store: SqlitePriceStore) -> None:
    await store.put_prices([PriceRecord("SKU-1", 100_000_000_000, "JPY", "toys")])
    amount = (await store.get_prices(["SKU-1"]))["SKU-1"].amount
    assert type(amount) is int
    assert amount == 100_000_000_000


async def test_put_prices_streams_generators(store: SqlitePriceStore) -> None:
    written = await store.put_prices(PriceRecord(f"S-{i}", 500, "EUR", "c") for i in range(2300))
    assert written == 2300
    assert len(await store.get_prices([f"S-{i}" for i in range(2300)])) == 2300


@pytest.mark.parametrize(
    "bad",
    [
        PriceRecord("SKU-x", 12.5, "EUR", "c"),  # type: ignore[arg-type]
        PriceRecord("SKU-x", -1, "EUR", "c"),
        PriceRecord("SKU-x", 100, "EURO", "c"),
    ],
)
async def test_invalid_price_fails_whole_call(store: SqlitePriceStore, bad: PriceRecord) -> None:
    with pytest.raises(StoreIntegrityError):
        await store.put_prices([PriceRecord("SKU-ok", 100, "EUR", "c"), bad])
    assert await store.get_prices(["SKU-ok", "SKU-x"]) == {}


async def test_promotion_lifecycle(store: SqlitePriceStore) -> None:
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


@pytest.mark.parametrize(
    "bad",
    [
        promo(sku="SKU-1"),  # both sku and category
        promo(category=None),  # neither
        promo(kind="bogo"),
        promo(kind="fixed", currency=None),
        promo(value=-5),
    ],
)
async def test_invalid_promotion_is_refused(store: SqlitePriceStore, bad: PromotionRecord) -> None:
    with pytest.raises(StoreIntegrityError):
        await store.put_promotion(bad)
    assert await store.list_promotions() == []


async def test_prices_and_stock_share_the_ledger_file(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.db")
    prices, other_prices, stock = (
        SqlitePriceStore(path),
        SqlitePriceStore(path),
        SqliteStockStore(path),
    )
    try:
        await asyncio.gather(
            *(prices.put_prices([PriceRecord(f"A-{i}", 100 + i, "EUR", "c")]) for i in range(40)),
            *(other_prices.put_prices([PriceRecord(f"B-{i}", 100, "EUR", "c")]) for i in range(40)),
            *(stock.put_levels([StockRecord(f"A-{i}", 5, 0, 0)]) for i in range(40)),
        )
        assert len(await other_prices.get_prices([f"A-{i}" for i in range(40)])) == 40
        assert len(await prices.get_prices([f"B-{i}" for i in range(40)])) == 40
        assert len(await stock.load([f"A-{i}" for i in range(40)])) == 40
    finally:
        for s in (prices, other_prices, stock):
            await s.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT component, version FROM schema_version ORDER BY 1").fetchall()
    assert rows == [("prices", 1), ("stock", 1)]
