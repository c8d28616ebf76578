"""The conventional peer (benchmarks/peer) on real PostgreSQL and Redis, in-process.

Its tables live in a schema of their own in the session's throwaway database, its Redis
keys under the session prefix; both are removed at the end. The app runs through httpx's
ASGITransport with its lifespan, so every request goes through FastAPI, asyncpg and Redis
as under uvicorn.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from benchmarks.peer.app import Peer, create_app
from benchmarks.peer.seed import seed_peer
from benchmarks.peer.settings import PeerSettings
from storage.demo import generate

PRODUCTS = 40
BUYERS = 50
STOCK = 10


@dataclass
class Ctx:
    client: httpx.AsyncClient
    peer: Peer
    settings: PeerSettings
    skus: list[str]  # published, priced demo SKUs
    product_ids: list[str]

    async def set_stock(self, sku: str, on_hand: int) -> None:
        schema = self.settings.schema
        await self.peer.pool.execute(
            f'UPDATE "{schema}".stock SET on_hand = $2, reserved = 0, sold = 0 WHERE sku = $1',
            sku,
            on_hand,
        )
        # Product pages may show stock up to 0.5 s old; these tests read it fresh.
        self.peer.page_stock._data.clear()

    async def level(self, sku: str) -> dict[str, int]:
        row = await self.peer.pool.fetchrow(
            f'SELECT on_hand, reserved, sold FROM "{self.settings.schema}".stock WHERE sku = $1',
            sku,
        )
        return dict(row)

    async def price(self, sku: str) -> int:
        amount: int = await self.peer.pool.fetchval(
            f'SELECT amount FROM "{self.settings.schema}".prices WHERE sku = $1', sku
        )
        return amount

    async def cart_with(self, *lines: tuple[str, int]) -> str:
        made = await self.client.post("/v1/carts")
        assert made.status_code == 201, made.text
        cart_id: str = made.json()["id"]
        for sku, quantity in lines:
            added = await self.client.post(
                f"/v1/carts/{cart_id}/items", json={"sku": sku, "quantity": quantity}
            )
            assert added.status_code == 200, added.text
        return cart_id

    async def checkout(
        self, cart_id: str, key: str | None = None, token: str = "tok_approve"
    ) -> httpx.Response:
        return await self.client.post(
            "/v1/checkout",
            json={"cart_id": cart_id, "payment_token": token},
            headers={"Idempotency-Key": key or f"key-{secrets.token_hex(8)}"},
        )


@pytest.fixture(scope="module")
async def ctx(
    pg_database: str,
    redis_url: str,
    session_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Ctx]:
    schema = f"peer_{secrets.token_hex(4)}"
    catalog = Path(tmp_path_factory.mktemp("peer-catalog")) / "catalog.db"
    settings = PeerSettings(
        postgres_url=pg_database,
        redis_url=redis_url,
        catalog_path=str(catalog),
        schema=schema,
        redis_prefix=f"{session_prefix}peer:",
    )
    written = await seed_peer(pg_database, schema, PRODUCTS, catalog_path=str(catalog))
    assert written > PRODUCTS  # some products have several variants
    published = [i.product for i in generate(PRODUCTS) if i.product["status"] == "published"]
    skus = [v["sku"] for p in published for v in p["variants"]]
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://peer") as client:
                yield Ctx(client, app.state.peer, settings, skus, [p["id"] for p in published])
    finally:
        conn = await asyncpg.connect(pg_database)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
        # Redis keys: removed with the session prefix by tests/servers.py.


def problem_code(reply: httpx.Response) -> str:
    assert reply.headers["content-type"].startswith("application/problem+json"), reply.text
    code: str = reply.json()["code"]
    return code


async def test_ping_product_and_missing_product(ctx: Ctx) -> None:
    assert (await ctx.client.get("/ping")).json() == {"ok": True}
    assert (await ctx.client.get("/readyz")).json() == {"postgres": "ok", "redis": "ok"}
    listed = (await ctx.client.get("/v1/products?limit=5")).json()
    assert [p["id"] for p in listed["items"]] == ctx.product_ids[:5]
    assert listed["next_cursor"]
    product_id = ctx.product_ids[0]
    found = await ctx.client.get(f"/v1/products/{product_id}")
    assert found.status_code == 200
    assert found.json()["id"] == product_id
    missing = await ctx.client.get("/v1/products/p-missing")
    assert missing.status_code == 404
    assert problem_code(missing) == "product_not_found"


async def test_product_page_has_prices_stock_and_recommendations(ctx: Ctx) -> None:
    product_id = ctx.product_ids[1]
    doc = (await ctx.client.get(f"/v1/products/{product_id}")).json()
    sku = doc["variants"][0]["sku"]
    await ctx.set_stock(sku, 37)
    page = (await ctx.client.get(f"/bff/web/product/{product_id}")).json()
    assert set(page) == {"product", "prices", "stock", "recommendations"}
    assert page["product"]["id"] == product_id
    assert page["prices"][sku]["unit"] == {"amount": await ctx.price(sku), "currency": "EUR"}
    assert page["stock"][sku] == 37
    assert len(page["recommendations"]) <= 4
    assert all(r["id"] != product_id for r in page["recommendations"])
    assert all(r["category"] == doc["category"] for r in page["recommendations"])


async def test_cart_is_a_redis_hash_priced_from_postgres(ctx: Ctx) -> None:
    sku = ctx.skus[2]
    made = await ctx.client.post("/v1/carts")
    assert made.status_code == 201
    cart = made.json()
    assert cart["lines"] == []
    assert cart["total"] == {"amount": 0, "currency": "EUR"}
    cart_id = cart["id"]
    path = f"/v1/carts/{cart_id}/items"
    first = await ctx.client.post(path, json={"sku": sku, "quantity": 2})
    assert first.status_code == 200, first.text
    again = await ctx.client.post(path, json={"sku": sku, "quantity": 1})
    unit = await ctx.price(sku)
    line = again.json()["lines"][0]
    assert line["quantity"] == 3
    assert line["line_total"] == {"amount": 3 * unit, "currency": "EUR"}
    assert again.json()["version"] == 2
    assert again.json()["item_count"] == 3
    assert (await ctx.client.get(f"/v1/carts/{cart_id}")).json() == again.json()
    # One hash per cart, one field per line.
    stored = await ctx.peer.redis.hgetall(ctx.peer.cart_key(cart_id))
    assert stored[f"l:{sku}".encode()] == b"3"
    # A retried add with the same Idempotency-Key is applied once.
    for _ in range(2):
        retried = await ctx.client.post(
            path, json={"sku": sku, "quantity": 1}, headers={"Idempotency-Key": "add-once-1"}
        )
        assert retried.json()["lines"][0]["quantity"] == 4
    unknown = await ctx.client.post(path, json={"sku": "NOPE-1", "quantity": 1})
    assert (unknown.status_code, problem_code(unknown)) == (404, "sku_not_found")
    too_many = await ctx.client.post(path, json={"sku": sku, "quantity": 99})
    assert (too_many.status_code, problem_code(too_many)) == (422, "quantity_limit")
    nowhere = await ctx.client.post(
        "/v1/carts/AAAAAAAAAAAAAAAAAAAAAAAA/items", json={"sku": sku, "quantity": 1}
    )
    assert (nowhere.status_code, problem_code(nowhere)) == (404, "cart_not_found")
    bad = await ctx.client.post(path, json={"sku": sku, "quantity": 0})
    assert (bad.status_code, problem_code(bad)) == (422, "invalid_argument")


async def test_checkout_reserves_and_answers_once(ctx: Ctx) -> None:
    sku = ctx.skus[3]
    await ctx.set_stock(sku, 5)
    cart_id = await ctx.cart_with((sku, 2))
    placed = await ctx.checkout(cart_id, key="order-key-1")
    assert placed.status_code == 202, placed.text
    order = placed.json()
    assert order["status"] == "authorized"
    assert order["payment"]["status"] == "authorized"
    assert order["total"] == {"amount": 2 * await ctx.price(sku), "currency": "EUR"}
    assert order["lines"][0]["sku"] == sku
    assert order["lines"][0]["product_id"].startswith("p-")
    assert placed.headers["location"] == f"/v1/orders/{order['order_id']}"
    assert await ctx.level(sku) == {"on_hand": 5, "reserved": 2, "sold": 0}
    fetched = await ctx.client.get(f"/v1/orders/{order['order_id']}")
    assert fetched.json()["status"] == "authorized"
    # The same key and body: the same answer, stock reserved once.
    replay = await ctx.checkout(cart_id, key="order-key-1")
    assert replay.status_code == 202
    assert replay.json()["order_id"] == order["order_id"]
    assert replay.headers["idempotent-replayed"] == "true"
    assert (await ctx.level(sku))["reserved"] == 2
    other_body = await ctx.checkout(cart_id, key="order-key-1", token="tok_decline")
    assert (other_body.status_code, problem_code(other_body)) == (422, "idempotency_mismatch")
    no_key = await ctx.client.post(
        "/v1/checkout", json={"cart_id": cart_id, "payment_token": "tok_approve"}
    )
    assert (no_key.status_code, problem_code(no_key)) == (400, "idempotency_key_required")
    # The cart became the order: it takes no more lines and no second checkout.
    late = await ctx.client.post(f"/v1/carts/{cart_id}/items", json={"sku": sku, "quantity": 1})
    assert (late.status_code, problem_code(late)) == (409, "cart_frozen")
    second = await ctx.checkout(cart_id)
    assert (second.status_code, problem_code(second)) == (409, "cart_frozen")
    missing = await ctx.client.get("/v1/orders/o-missing")
    assert (missing.status_code, problem_code(missing)) == (404, "order_not_found")


async def test_declined_payment_releases_the_stock(ctx: Ctx) -> None:
    sku = ctx.skus[4]
    await ctx.set_stock(sku, 3)
    cart_id = await ctx.cart_with((sku, 3))
    declined = await ctx.checkout(cart_id, token="tok_decline")
    assert (declined.status_code, problem_code(declined)) == (402, "payment_declined")
    failed = (await ctx.client.get(f"/v1/orders/{declined.json()['order_id']}")).json()
    assert failed["status"] == "payment_failed"
    assert await ctx.level(sku) == {"on_hand": 3, "reserved": 0, "sold": 0}
    # The cart is usable again, and the stock is there for the next attempt.
    retry = await ctx.checkout(cart_id)
    assert retry.status_code == 202, retry.text
    assert (await ctx.level(sku))["reserved"] == 3


async def test_insufficient_stock_names_the_sku_and_unfreezes_the_cart(ctx: Ctx) -> None:
    sku = ctx.skus[5]
    await ctx.set_stock(sku, 1)
    cart_id = await ctx.cart_with((sku, 2))
    refused = await ctx.checkout(cart_id)
    assert (refused.status_code, problem_code(refused)) == (409, "insufficient_stock")
    assert refused.json()["sku"] == sku
    assert await ctx.level(sku) == {"on_hand": 1, "reserved": 0, "sold": 0}
    again = await ctx.client.post(f"/v1/carts/{cart_id}/items", json={"sku": sku, "quantity": 1})
    assert again.status_code == 200


async def test_fifty_buyers_ten_units_exactly_ten_orders(ctx: Ctx) -> None:
    sku = ctx.skus[6]
    await ctx.set_stock(sku, STOCK)
    carts = await asyncio.gather(*(ctx.cart_with((sku, 1)) for _ in range(BUYERS)))
    replies = await asyncio.gather(*(ctx.checkout(cart) for cart in carts))
    statuses = Counter(r.status_code for r in replies)
    assert statuses == {202: STOCK, 409: BUYERS - STOCK}, statuses
    assert {problem_code(r) for r in replies if r.status_code == 409} == {"insufficient_stock"}
    assert len({r.json()["order_id"] for r in replies if r.status_code == 202}) == STOCK
    assert await ctx.level(sku) == {"on_hand": STOCK, "reserved": STOCK, "sold": 0}
    orders = await ctx.peer.pool.fetchval(
        f'SELECT count(*) FROM "{ctx.settings.schema}".reservations WHERE sku = $1', sku
    )
    assert orders == STOCK


async def test_opposite_line_orders_do_not_deadlock(ctx: Ctx) -> None:
    """Rows are locked in SKU order, so carts listing two SKUs either way round all pass."""
    a, b = ctx.skus[7], ctx.skus[8]
    await ctx.set_stock(a, 40)
    await ctx.set_stock(b, 40)
    carts = await asyncio.gather(
        *(ctx.cart_with((a, 1), (b, 1)) for _ in range(15)),
        *(ctx.cart_with((b, 1), (a, 1)) for _ in range(15)),
    )
    replies = await asyncio.gather(*(ctx.checkout(cart) for cart in carts))
    assert Counter(r.status_code for r in replies) == {202: 30}
    assert (await ctx.level(a))["reserved"] == 30
    assert (await ctx.level(b))["reserved"] == 30


async def test_flash_reserve_never_oversells(ctx: Ctx) -> None:
    sku = ctx.skus[9]
    await ctx.set_stock(sku, STOCK)
    replies = await asyncio.gather(
        *(ctx.client.post(f"/v1/stock/{sku}/reservations") for _ in range(BUYERS))
    )
    assert Counter(r.status_code for r in replies) == {201: STOCK, 409: BUYERS - STOCK}
    assert await ctx.level(sku) == {"on_hand": STOCK, "reserved": STOCK, "sold": 0}
    won: list[dict[str, Any]] = [r.json() for r in replies if r.status_code == 201]
    assert all(w["sku"] == sku and w["quantity"] == 1 for w in won)
    unknown = await ctx.client.post("/v1/stock/NOPE-1/reservations")
    assert (unknown.status_code, problem_code(unknown)) == (404, "sku_not_found")
