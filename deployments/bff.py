"""The BFF ingress deployment: a thin Serve shell around the FastAPI app and the Shop."""

from __future__ import annotations

from typing import Any

from ray import serve
from starlette.types import ASGIApp

from actors.client import ShardClient
from actors.shop import Shop, ShopLimits
from api.app import create_api
from feira.settings import Settings
from feira.stores import open_configured_stores
from storage.factory import Stores


@serve.ingress()
class BffIngress:
    def __init__(self, settings: dict[str, Any]) -> None:
        s = Settings.from_wire(settings)
        self.stores: Stores = open_configured_stores(s)
        self.client = ShardClient.connect(s)
        self.shop = Shop(
            self.client,
            self.stores.catalog,
            s.currency,
            ShopLimits(
                price_cache_size=s.price_cache_size,
                price_cache_ttl_s=s.price_cache_ttl_ms / 1000,
                product_cache_size=s.product_cache_size,
                product_cache_ttl_s=s.product_cache_ttl_ms / 1000,
            ),
        )

    async def __serve_build_asgi_app__(self) -> ASGIApp:
        # Before the app exists no request can reach a store. Idempotent and serialised by
        # an advisory lock, so every replica may run it and `serve deploy` without
        # `feira migrate` still gets its schema.
        await self.stores.migrate()
        return create_api(self.shop, self.ready)

    async def ready(self) -> dict[str, Any]:
        shards = await self.client.ready()
        products = await self.stores.catalog.count_products()
        return {
            "shards": {kind: len(reports) for kind, reports in shards.items()},
            "products": products,
            "coalescing": self.client.stats(),
            "cache": self.shop.cache_stats(),
        }
