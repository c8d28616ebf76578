"""Per-request DataLoaders: every product, price and stock lookup of one GraphQL request
is collected while the resolvers of one level run, then asked for in as few Shop calls as
the lookup limits allow (at most ``MAX_SKUS_PER_LOOKUP`` keys per call).

A fresh set of loaders is made for each request, so their memo never outlives it; what
may be reused across requests is decided by the Shop's own replica caches (products and
prices), which the loaders go through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from actors.shop import MAX_SKUS_PER_LOOKUP
from storage.records import ProductDoc

if TYPE_CHECKING:
    from actors.shop import Shop



class Loaders:
    """The batching loaders of one request."""

    def __init__(self, shop: Shop) -> None:
        self._shop = shop
        self.products: DataLoader[str, ProductDoc | None] = DataLoader(
            self._load_products, max_batch_size=MAX_SKUS_PER_LOOKUP
        )
        # Raw quote dicts (see Shop.quotes); None for a SKU without a price.
        self.quotes: DataLoader[str, dict[str, Any] | None] = DataLoader(
            self._load_quotes, max_batch_size=MAX_SKUS_PER_LOOKUP
        )
        # Stock levels {"available", "on_hand", ...}; None for a SKU the inventory lacks.
        self.stock: DataLoader[str, dict[str, int] | None] = DataLoader(
            self._load_stock, max_batch_size=MAX_SKUS_PER_LOOKUP
        )

    def prime_products(self, docs: Sequence[ProductDoc]) -> None:
        """Products already read (a listing page) need no second read in this request."""
        self.products.prime_many({doc["id"]: doc for doc in docs})

    async def _load_products(self, product_ids: list[str]) -> list[ProductDoc | None]:
        found = await self._shop.published_products(product_ids)
        return [found.get(product_id) for product_id in product_ids]

    async def _load_quotes(self, skus: list[str]) -> list[dict[str, Any] | None]:
        quotes = await self._shop.quotes(skus)
        return [quotes.get(sku) for sku in skus]

    async def _load_stock(self, skus: list[str]) -> list[dict[str, int] | None]:
        levels = await self._shop.stock(skus)
        return [levels.get(sku) for sku in skus]


class RequestContext(BaseContext):
    """What every resolver of one request sees as ``info.context``."""

    def __init__(self, shop: Shop) -> None:
        super().__init__()
        self.shop = shop
        self.loaders = Loaders(shop)
