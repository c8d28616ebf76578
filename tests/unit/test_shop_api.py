"""The whole HTTP surface in-process: real services and SQLite stores, no Ray, no network.

The shards are reached through a ShardRouter whose transport calls the services directly,
so routing, coalescing, dispatch, pricing and error mapping are the production code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from actors.cart_service import CartService
from actors.domain.cart import CartLimits
from actors.inventory_service import InventoryService
from actors.kinds import ShardKind
from actors.pricing_service import PricingService
from actors.router import ShardRouter
from actors.shop import Shop, ShopLimits
from api.app import create_api
from storage.demo import seed_stores
from storage.factory import open_embedded_stores


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    stores = open_embedded_stores(str(tmp_path))
    await seed_stores(stores.catalog, stores.prices, stores.stock, 60, 7, "EUR", progress=False)
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
    shop = Shop(router, stores.catalog, "EUR", ShopLimits(price_cache_ttl_s=0))

    async def ready() -> dict[str, Any]:
        return {"coalescing": router.stats()}

    app = create_api(shop, ready)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://feira") as client:
        yield client, {"router": router, "prices": prices, "stores": stores}
    await stores.close()


async def skus_of(client: httpx.AsyncClient, n: int) -> list[str]:
    page = (await client.get("/v1/products", params={"limit": n})).json()
    return [p["variants"][0]["sku"] for p in page["items"]]


async def test_cart_is_priced_with_promotions(api: tuple[httpx.AsyncClient, Any]) -> None:
    client, parts = api
    a, b = await skus_of(client, 2)
    router: ShardRouter = parts["router"]
    await router.broadcast(
        ShardKind.PRICING,
        "upsert_promotion",
        "op-promo-1",
        {"id": "promo-a", "kind": "percent", "value": 2500, "sku": a,
         "starts_at": 0, "ends_at": 4_000_000_000},
    )
    cart = (await client.post("/v1/carts")).json()
    await client.post(f"/v1/carts/{cart['id']}/items", json={"sku": a, "quantity": 2})
    reply = await client.post(f"/v1/carts/{cart['id']}/items", json={"sku": b, "quantity": 1})
    assert reply.status_code == 200
    body = reply.json()
    line_a = body["lines"][0]
    base_a = line_a["base"]["amount"]
    assert line_a["promotion_id"] == "promo-a"
    assert line_a["unit"]["amount"] == base_a - (base_a * 2500 + 5000) // 10000
    assert body["total"]["amount"] == sum(line["line_total"]["amount"] for line in body["lines"])
    assert body["subtotal"]["amount"] - body["discount_total"]["amount"] == body["total"]["amount"]
    assert body["item_count"] == 3


async def test_limits_and_unknowns_are_problems(api: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = api
    skus = await skus_of(client, 6)
    cart = (await client.post("/v1/carts")).json()
    url = f"/v1/carts/{cart['id']}/items"
    for sku in skus[:5]:
        assert (await client.post(url, json={"sku": sku})).status_code == 200
    over = await client.post(url, json={"sku": skus[5]})
    assert over.status_code == 422
    assert over.json()["code"] == "cart_line_limit"
    too_many = await client.post(url, json={"sku": skus[0], "quantity": 10})
    assert too_many.json()["code"] == "quantity_limit"
    unknown = await client.post(url, json={"sku": "NOPE-1"})
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    view = (await client.get(f"/v1/carts/{cart['id']}")).json()
    assert [(line["sku"], line["quantity"]) for line in view["lines"]] == [(s, 1) for s in skus[:5]]


async def test_stock_lookup(api: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = api
    (a,) = await skus_of(client, 1)
    one = (await client.get(f"/v1/stock/{a}")).json()
    assert one["available"] == one["on_hand"] - one["reserved"] - one["sold"]
    assert one["in_stock"] is (one["available"] > 0)
    too_many = await client.get("/v1/stock", params=[("sku", f"S{i}") for i in range(101)])
    assert too_many.status_code == 422
