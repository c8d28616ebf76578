"""The whole runtime in one process for tests: real services and SQLite stores, no Ray.

The shards are reached through a ShardRouter whose transport calls the services directly,
so routing, coalescing, dispatch, pricing and error mapping are the production code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from actors.cart_service import CartService
from actors.domain.cart import CartLimits
from actors.inventory_service import InventoryService
from actors.kinds import ShardKind
from actors.pricing_service import PricingService
from actors.router import ShardRouter
from actors.shop import Shop, ShopLimits
from storage.demo import seed_stores
from storage.factory import Stores, open_embedded_stores
from storage.interfaces import SearchIndex

NO_PRICE_CACHE = ShopLimits(price_cache_ttl_s=0)


@dataclass
class InProcess:
    shop: Shop
    router: ShardRouter
    stores: Stores
    prices: list[PricingService]
    stock: list[InventoryService]


async def build_inprocess(
    data_dir: Path,
    products: int = 60,
    limits: ShopLimits = NO_PRICE_CACHE,
    search_index: SearchIndex | None = None,
) -> InProcess:
    stores = open_embedded_stores(str(data_dir))
    await seed_stores(
        stores.catalog, stores.prices, stores.stock, products, 7, "EUR", progress=False
    )
    carts = [CartService(CartLimits(5, 10), 3600, 1000) for _ in range(2)]
    stock = [InventoryService(stores.stock, 900, 1000) for _ in range(2)]
    prices = [PricingService(stores.prices, "EUR", 1000) for _ in range(2)]
    router = ShardRouter(
        {
            ShardKind.CART: [s.apply for s in carts],
            ShardKind.INVENTORY: [s.apply for s in stock],
            ShardKind.PRICING: [s.apply for s in prices],
        },
        max_batch=64,
        max_inflight=2,
        timeout_s=5,
    )
    shop = Shop(router, stores.catalog, "EUR", limits, search_index=search_index)
    return InProcess(shop, router, stores, prices, stock)
