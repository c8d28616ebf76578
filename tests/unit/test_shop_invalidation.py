"""Replica caches and invalidation: a read racing an invalidation cannot bring back the
stale value."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from actors.kinds import ShardKind
from actors.shop import ShopLimits
from tests.inprocess import build_inprocess

CACHED = ShopLimits(price_cache_ttl_s=60, product_cache_ttl_s=60)


class GatedCatalog:
    """The real catalog, with reads held until the test opens the gate."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def get_product(self, product_id: str) -> Any:
        found = await self.inner.get_product(product_id)
        self.entered.set()
        await self.gate.wait()
        return found

    async def get_products(self, product_ids: Any) -> Any:
        found = await self.inner.get_products(product_ids)
        self.entered.set()
        await self.gate.wait()
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_read_racing_an_invalidation_is_not_cached(tmp_path: Path) -> None:
    run = await build_inprocess(tmp_path, 5, CACHED)
    shop = run.shop
    gated = GatedCatalog(shop.catalog)
    shop.catalog = gated  # type: ignore[assignment]
    for read in (shop.product, lambda pid: shop.published_products([pid])):
        gated.gate.clear()
        gated.entered.clear()
        pending = asyncio.create_task(read("p-0000001"))
        await gated.entered.wait()
        shop.invalidate_products(["p-0000001"])  # the merchant's change lands mid-read
        gated.gate.set()
        await pending
        assert shop.products.get("p-0000001") is None
    # Without a racing invalidation the read is cached as usual.
    await shop.product("p-0000001")
    assert shop.products.get("p-0000001") is not None
    await run.stores.close()


async def test_invalidations_drop_exactly_what_changed(tmp_path: Path) -> None:
    run = await build_inprocess(tmp_path, 5, CACHED)
    shop = run.shop
    page = await shop.product_page("p-0000001")
    sku = page["product"]["variants"][0]["sku"]
    await shop.product("p-0000002")
    assert shop.prices.get(sku) is not None
    shop.invalidate_prices([sku])
    assert shop.prices.get(sku) is None
    assert shop.products.get("p-0000001") is not None
    shop.invalidate_products(["p-0000001"])
    assert shop.products.get("p-0000001") is None
    assert shop.products.get("p-0000002") is not None
    assert len(shop.related) == 0
    shop.clear_caches()
    assert shop.products.get("p-0000002") is None
    await run.stores.close()


async def test_product_page_stock_is_cached_briefly(tmp_path: Path) -> None:
    run = await build_inprocess(
        tmp_path, 5, ShopLimits(price_cache_ttl_s=60, product_cache_ttl_s=60, page_stock_ttl_s=60)
    )
    shop = run.shop
    first = await shop.product_page("p-0000001")
    sku = first["product"]["variants"][0]["sku"]
    await shop.shards.call(ShardKind.INVENTORY, sku, "set_on_hand", "op-page-1", sku, 3)
    # The page may show the older figure for the TTL; a cart-side read is live.
    assert (await shop.product_page("p-0000001"))["stock"][sku] == first["stock"][sku]
    assert (await shop.stock([sku]))[sku]["available"] == 3
    shop.page_stock.clear()
    assert (await shop.product_page("p-0000001"))["stock"][sku] == 3
    await run.stores.close()
