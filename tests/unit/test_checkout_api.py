"""POST /v1/checkout and GET /v1/orders/{id} over HTTP, in-process (no Ray)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp

from actors.domain.orders import OrderStatus
from api.app import create_api
from tests.unit.test_checkout import (
    Env,
    authorizations,
    body,
    cart_with,
    level,
    make_env,
    orders_of,
    set_stock,
)

Client = httpx.AsyncClient


def fastapi_of(app: ASGIApp) -> FastAPI:
    """The FastAPI app inside the card guard and the fast path."""
    while not isinstance(app, FastAPI):
        app = app.app  # type: ignore[attr-defined]
    return app


async def ready() -> dict[str, Any]:
    return {}


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-only"])
async def api(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Client, Env]]:
    env = await make_env(tmp_path)
    app = create_api(env.run.shop, ready, fast_path=request.param)
    fastapi_of(app).state.checkout = env.service
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://feira") as client:
        yield client, env
    await env.run.stores.close()


def key(name: str) -> dict[str, str]:
    return {"Idempotency-Key": f"idem-{name}"}


async def test_checkout_then_read_the_order(api: tuple[Client, Env]) -> None:
    client, env = api
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)
    cart_id = await cart_with(env.run, (sku, 2))
    reply = await client.post("/v1/checkout", json=body(cart_id), headers=key("happy"))
    assert reply.status_code == 202, reply.text
    assert reply.headers["content-type"] == "application/json"
    placed = reply.json()
    order_id = placed["order_id"]
    assert reply.headers["location"] == f"/v1/orders/{order_id}"
    assert placed["status"] == "authorized"
    assert "idempotent-replayed" not in reply.headers

    got = await client.get(f"/v1/orders/{order_id}")
    assert got.status_code == 200
    assert got.headers["cache-control"] == "no-store"
    order = got.json()
    assert order["id"] == order_id
    assert order["status"] == "authorized"
    assert order["lines"][0]["sku"] == sku
    assert order["lines"][0]["quantity"] == 2
    assert order["payment"]["status"] == "authorized"
    assert order["payment"]["amount"] == order["total"]
    assert order["shipment"] is None
    assert "tok_approve" not in got.text
    assert cart_id not in got.text

    # The cart is frozen: edits through the cart API (fast path or not) say so.
    add = await client.post(f"/v1/carts/{cart_id}/items", json={"sku": sku, "quantity": 1})
    assert add.status_code == 409
    assert add.headers["content-type"] == "application/problem+json"
    assert add.json()["code"] == "cart_frozen"
    remove = await client.delete(f"/v1/carts/{cart_id}/items/{sku}")
    assert remove.status_code == 409
    assert remove.json()["code"] == "cart_frozen"


async def test_idempotency_over_http(api: tuple[Client, Env]) -> None:
    client, env = api
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)
    cart_id = await cart_with(env.run, (sku, 1))
    missing = await client.post("/v1/checkout", json=body(cart_id))
    assert missing.status_code == 400
    assert missing.json()["code"] == "idempotency_key_required"
    first = await client.post("/v1/checkout", json=body(cart_id), headers=key("replay"))
    again = await client.post("/v1/checkout", json=body(cart_id), headers=key("replay"))
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    other = await client.post(
        "/v1/checkout", json=body(cart_id, token="tok_decline"), headers=key("replay")
    )
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_mismatch"
    assert len(await orders_of(env.run, cart_id)) == 1
    assert len(authorizations(env.ledger)) == 1


async def test_refusals_are_problem_json(api: tuple[Client, Env]) -> None:
    client, env = api
    sku = env.skus[0]
    await set_stock(env.run, sku, 1)
    cart_id = await cart_with(env.run, (sku, 2))
    oos = await client.post("/v1/checkout", json=body(cart_id), headers=key("oos"))
    assert oos.status_code == 409
    assert oos.headers["content-type"] == "application/problem+json"
    assert oos.json()["code"] == "insufficient_stock"
    assert oos.json()["sku"] == sku

    empty = await cart_with(env.run)
    reply = await client.post("/v1/checkout", json=body(empty), headers=key("empty"))
    assert (reply.status_code, reply.json()["code"]) == (422, "cart_empty")

    await set_stock(env.run, sku, 5)
    declined = await client.post(
        "/v1/checkout", json=body(cart_id, token="tok_decline"), headers=key("decline")
    )
    assert declined.status_code == 402
    assert declined.json()["code"] == "payment_declined"
    order = await client.get(f"/v1/orders/{declined.json()['order_id']}")
    assert order.json()["status"] == "payment_failed"
    assert order.json()["payment"]["status"] == "failed"

    unknown = await client.post(
        "/v1/checkout", json=body(cart_id, token="tok_whatever"), headers=key("badtok")
    )
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "payment_token_invalid"
    assert "order_id" in unknown.json()

    schema = await client.post("/v1/checkout", json={"cart_id": cart_id}, headers=key("schema"))
    assert schema.status_code == 422
    assert schema.json()["code"] == "invalid_argument"

    for path in ("/v1/orders/o-nope", "/v1/orders/not%20an%20id"):
        missing = await client.get(path)
        assert missing.status_code == 404, path
        assert missing.json()["code"] == "order_not_found"


async def test_a_card_number_never_reaches_checkout(api: tuple[Client, Env]) -> None:
    client, env = api
    cart_id = await cart_with(env.run, (env.skus[0], 1))
    reply = await client.post(
        "/v1/checkout", json=body(cart_id, token="4242424242424242"), headers=key("pan")
    )
    assert reply.status_code == 422
    assert reply.json()["code"] == "card_data_forbidden"
    assert "4242424242424242" not in reply.text
    assert await orders_of(env.run, cart_id) == []


async def test_without_a_checkout_service_the_routes_are_disabled(tmp_path: Path) -> None:
    env = await make_env(tmp_path)
    try:
        app = create_api(env.run.shop, ready)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://feira") as client:
            cart_id = await cart_with(env.run, (env.skus[0], 1))
            reply = await client.post("/v1/checkout", json=body(cart_id), headers=key("off"))
            assert (reply.status_code, reply.json()["code"]) == (404, "feature_disabled")
            assert (await client.get("/v1/orders/o-x")).status_code == 404
    finally:
        await env.run.stores.close()


async def test_flash_sale_sells_exactly_the_stock(tmp_path: Path) -> None:
    """200 buyers, one unit each, of a SKU with 20 on hand, all at once over HTTP."""
    env = await make_env(tmp_path)
    try:
        app = create_api(env.run.shop, ready)
        fastapi_of(app).state.checkout = env.service
        sku = env.skus[0]
        await set_stock(env.run, sku, 20)
        carts = await asyncio.gather(*(cart_with(env.run, (sku, 1)) for _ in range(200)))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://feira", timeout=60
        ) as client:
            replies = await asyncio.gather(
                *(
                    client.post("/v1/checkout", json=body(c), headers=key(f"flash-{i}"))
                    for i, c in enumerate(carts)
                )
            )
        won = [r for r in replies if r.status_code == 202]
        lost = [r for r in replies if r.status_code != 202]
        assert len(won) == 20
        assert all(r.json()["status"] == "authorized" for r in won)
        assert len(lost) == 180
        assert all(
            r.status_code == 409
            and r.headers["content-type"] == "application/problem+json"
            and r.json()["code"] == "insufficient_stock"
            and r.json()["sku"] == sku
            for r in lost
        )
        stock = await level(env.run, sku)
        assert stock["on_hand"] - stock["reserved"] - stock["sold"] >= 0
        assert stock["reserved"] == 20
        assert stock["available"] == 0
        assert len(authorizations(env.ledger)) == 20
        placed = [o for c in carts for o in await orders_of(env.run, c)]
        assert len(placed) == 20
        assert all(o.status is OrderStatus.AUTHORIZED for o in placed)
    finally:
        await env.run.stores.close()
