"""An order's whole journey over HTTP against the Serve app: cart, checkout, the order
processor (actor) capturing and shipping, a carrier delivering, a signed webhook, and a
merchant refund — on PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest

from actors.payments.webhooks import sign
from feira.signing_secrets import payment_webhook_secret
from tests.tokens import deployed_bearer

PROCESSOR_BOUND_S = 30.0


async def cart_with_one(http: httpx.AsyncClient, sku: str) -> str:
    cart = (await http.post("/v1/carts")).json()["id"]
    reply = await http.post(f"/v1/carts/{cart}/items", json={"sku": sku, "quantity": 1})
    assert reply.status_code == 200, reply.text
    return str(cart)


async def order_reaches(http: httpx.AsyncClient, order_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + PROCESSOR_BOUND_S
    while True:
        order = (await http.get(f"/v1/orders/{order_id}")).json()
        if order["status"] == status:
            return dict(order)
        if time.monotonic() > deadline:
            pytest.fail(f"order {order_id} is {order['status']}, not {status}")
        await asyncio.sleep(0.1)


async def test_cart_to_delivered_order(feira_url: str, seeded: Any) -> None:
    async with httpx.AsyncClient(base_url=feira_url, timeout=30) as http:
        product = (await http.get("/v1/products/p-0000004")).json()
        sku = product["variants"][0]["sku"]
        before = (await http.get(f"/v1/stock/{sku}")).json()
        cart_id = await cart_with_one(http, sku)
        body = {"cart_id": cart_id, "payment_token": "tok_approve"}
        headers = {"Idempotency-Key": f"e2e-{cart_id}"}
        placed = await http.post("/v1/checkout", json=body, headers=headers)
        assert placed.status_code == 202, placed.text
        order_id = placed.json()["order_id"]
        assert placed.json()["status"] == "authorized"
        replay = await http.post("/v1/checkout", json=body, headers=headers)
        assert (replay.status_code, replay.json()["order_id"]) == (202, order_id)
        changed = await http.post(
            "/v1/checkout", json={**body, "payment_token": "tok_decline"}, headers=headers
        )
        assert changed.status_code == 422
        # The cart is frozen once checked out.
        frozen = await http.post(f"/v1/carts/{cart_id}/items", json={"sku": sku, "quantity": 1})
        assert frozen.status_code == 409

        order = await order_reaches(http, order_id, "fulfilling")  # captured, shipment made
        after = (await http.get(f"/v1/stock/{sku}")).json()
        assert after["sold"] == before["sold"] + 1
        carrier = order["shipment"]["carrier"]
        driver = {"Authorization": f"Bearer {deployed_bearer(seeded, carrier, 'logistics')}"}
        listed = (await http.get("/v1/logistics/shipments", headers=driver)).json()
        assert order_id in [s["order_id"] for s in listed["items"]]
        other = "ups" if carrier != "ups" else "dhl"
        stranger = {"Authorization": f"Bearer {deployed_bearer(seeded, other, 'logistics')}"}
        path = f"/v1/logistics/shipments/{order_id}/events"
        refused = await http.post(path, json={"kind": "picked_up"}, headers=stranger)
        assert refused.status_code == 404
        for kind in ("picked_up", "in_transit", "delivered"):
            reply = await http.post(path, json={"kind": kind}, headers=driver)
            assert reply.status_code == 200, reply.text
        delivered = await order_reaches(http, order_id, "delivered")
        assert [e["kind"] for e in delivered["shipment"]["events"]] == [
            "picked_up",
            "in_transit",
            "delivered",
        ]

        # A webhook must be signed; a duplicate is acknowledged and applied once.
        event = orjson.dumps(
            {
                "id": f"evt-{order_id}",
                "type": "payment.captured",
                "created": int(time.time()),
                "data": {"metadata": {"order_id": order_id}},
            }
        )
        unsigned = await http.post(
            "/v1/payments/webhooks/sandbox",
            content=event,
            headers={"content-type": "application/json"},
        )
        assert unsigned.status_code == 400
        # A body without a content type never reaches the route: the WAF answers 415.
        untyped = await http.post("/v1/payments/webhooks/sandbox", content=event)
        assert untyped.status_code == 415
        signature = sign(payment_webhook_secret(seeded), event, time.time())
        for _ in range(2):
            reply = await http.post(
                "/v1/payments/webhooks/sandbox",
                content=event,
                headers={"Feira-Signature": signature, "content-type": "application/json"},
            )
            assert reply.status_code == 200, reply.text


async def test_declined_payment_frees_stock_and_cart(feira_url: str) -> None:
    async with httpx.AsyncClient(base_url=feira_url, timeout=30) as http:
        sku = (await http.get("/v1/products/p-0000005")).json()["variants"][0]["sku"]
        before = (await http.get(f"/v1/stock/{sku}")).json()
        cart_id = await cart_with_one(http, sku)
        reply = await http.post(
            "/v1/checkout",
            json={"cart_id": cart_id, "payment_token": "tok_decline"},
            headers={"Idempotency-Key": f"e2e-decline-{cart_id}"},
        )
        assert reply.status_code == 402, reply.text
        assert reply.headers["content-type"] == "application/problem+json"
        order = (await http.get(f"/v1/orders/{reply.json()['order_id']}")).json()
        assert order["status"] == "payment_failed"
        assert (await http.get(f"/v1/stock/{sku}")).json()["reserved"] == before["reserved"]
        again = await http.post(f"/v1/carts/{cart_id}/items", json={"sku": sku, "quantity": 1})
        assert again.status_code == 200
