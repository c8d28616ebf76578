from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from itertools import islice
from pathlib import Path

import orjson
import pytest

from storage.demo import DemoItem, generate, seed_stores
from storage.factory import open_embedded_stores


def files_in(directory: Path) -> set[str]:
    return {entry.name for entry in directory.iterdir()}


def serialise(items: list[DemoItem]) -> bytes:
    return b"\n".join(
        orjson.dumps(item.product) + repr(item.prices).encode() + repr(item.stock).encode()
        for item in items
    )


def test_same_seed_is_byte_identical() -> None:
    assert serialise(list(generate(300, seed=11))) == serialise(list(generate(300, seed=11)))


def test_different_seed_differs() -> None:
    assert serialise(list(generate(50, seed=1))) != serialise(list(generate(50, seed=2)))


def test_shorter_run_is_a_prefix() -> None:
    assert serialise(list(generate(40))) == serialise(list(islice(generate(400), 40)))


def test_generation_is_lazy() -> None:
    # A huge count must not be materialised up front.
    first = next(generate(10**9))
    assert first.product["id"] == "p-0000000"


def test_documents_have_the_expected_shape() -> None:
    items = list(generate(2000, seed=3, currency="SEK", merchants=4))
    leaves = {item.product["category"] for item in items}
    assert 35 <= len(leaves) <= 45
    assert 6 <= len({leaf.split("/")[0] for leaf in leaves}) <= 10

    statuses = Counter(item.product["status"] for item in items)
    assert set(statuses) == {"published", "draft"}
    assert 0.02 < statuses["draft"] / len(items) < 0.09

    for index, item in enumerate(items):
        product = item.product
        assert product["id"] == f"p-{index:07d}"
        assert re.fullmatch(r"m-00[1-4]", product["merchant_id"])
        assert product["brand"] in product["title"]
        assert len(product["title"].split()) >= 3
        assert product["description"].endswith(".")
        assert "material" in product["attributes"]
        created = datetime.fromisoformat(product["created_at"])
        assert datetime.fromisoformat(product["updated_at"]) >= created
        variants = product["variants"]
        assert 1 <= len(variants) <= 3
        skus = [v["sku"] for v in variants]
        assert skus == [f"SKU-{index:07d}-{n}" for n in range(1, len(variants) + 1)]
        assert len({orjson.dumps(v["options"]) for v in variants}) == len(variants)
        for variant in variants:
            assert set(variant["options"]) == {"color", "size"}
            assert variant["images"] == [f"/img/{variant['sku']}.jpg"]
        assert [p.sku for p in item.prices] == skus
        assert [s.sku for s in item.stock] == skus
        for price in item.prices:
            assert type(price.amount) is int
            assert 199 <= price.amount <= 99_999
            assert price.currency == "SEK"
            assert price.category == product["category"]
        for level in item.stock:
            assert 0 <= level.on_hand <= 500
            assert level.reserved == level.sold == 0

    levels = [level for item in items for level in item.stock]
    out_of_stock = sum(1 for level in levels if level.on_hand == 0) / len(levels)
    assert 0.02 < out_of_stock < 0.09


def test_timestamps_do_not_depend_on_the_clock() -> None:
    first = next(generate(1))
    assert first.product["created_at"] == "2023-01-01T00:00:00Z"


@pytest.mark.parametrize(("count", "merchants"), [(-1, 5), (10, 0)])
def test_invalid_arguments(count: int, merchants: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        next(generate(count, merchants=merchants))


async def test_factory_opens_nothing_until_used(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    stores = open_embedded_stores(str(data_dir))
    assert files_in(data_dir) == set()
    await stores.close()
    assert files_in(data_dir) == set()


async def test_seed_stores_writes_everything(tmp_path: Path) -> None:
    stores = open_embedded_stores(str(tmp_path))
    try:
        written = await seed_stores(
            stores.catalog, stores.prices, stores.stock, 3000, seed=5, batch=700, progress=False
        )
        assert written == 3000
        assert await stores.catalog.count_products() == 3000

        expected = list(generate(3000, seed=5))
        sample = expected[::97]
        products = await stores.catalog.get_products([i.product["id"] for i in sample])
        assert products == {i.product["id"]: i.product for i in sample}

        skus = [level.sku for item in expected for level in item.stock]
        prices = await stores.prices.get_prices(skus)
        stock = await stores.stock.load(skus)
        assert len(prices) == len(stock) == len(skus)
        last = expected[-1]
        assert prices[last.prices[0].sku] == last.prices[0]
        assert stock[last.stock[0].sku] == (last.stock[0], [])

        page, cursor = await stores.catalog.list_products(category=None, cursor=None, limit=100)
        assert cursor is not None
        assert all(p["status"] == "published" for p in page)
        assert {"catalog.db", "ledger.db"} <= files_in(tmp_path)
    finally:
        await stores.close()


async def test_reseeding_is_an_upsert(tmp_path: Path) -> None:
    stores = open_embedded_stores(str(tmp_path))
    try:
        for _ in range(2):
            await seed_stores(stores.catalog, stores.prices, stores.stock, 120, progress=False)
        assert await stores.catalog.count_products() == 120
    finally:
        await stores.close()
