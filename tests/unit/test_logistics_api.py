"""Logistics, payment webhooks and merchant orders over HTTP, in-process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from actors.domain.orders import Order, OrderLine, OrderStatus, Shipment
from actors.logistics import MAX_SCAN_PAGES, Logistics, StoreShipmentIndex
from actors.order_processor import StoreSeenEvents, choose_carrier
from actors.payments.provider import PaymentState
from actors.payments.webhooks import SIGNATURE_HEADER, InMemorySeenEvents, SeenEvents, sign
from api.app import Edge, create_api
from api.routes.orders_ops import OrdersOps
from tests.tokens import TOKENS
from tests.tokens import bearer as role_bearer
from tests.unit.test_order_processor import (
    CARRIERS,
    SKUS,
    WEBHOOK_SECRET,
    Env,
    drain,
    get,
    make_env,
    place,
)


def bearer(subject: str, role: str = "merchant") -> dict[str, str]:
    return role_bearer(subject, "logistics" if role == "carrier" else role)


def carrier_of(order_id: str) -> dict[str, str]:
    return bearer(choose_carrier(order_id, CARRIERS), "carrier")


def other_carrier(order_id: str) -> dict[str, str]:
    mine = choose_carrier(order_id, CARRIERS)
    return bearer(next(c for c in CARRIERS if c != mine), "carrier")


@pytest.fixture(params=["memory", "store"], ids=["seen-in-memory", "seen-in-store"])
async def api(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[httpx.AsyncClient, Env]]:
    env = await make_env(tmp_path)
    processor = env.processor()
    orders = env.run.stores.orders
    seen: SeenEvents = (
        InMemorySeenEvents() if request.param == "memory" else StoreSeenEvents(orders)
    )
    ops = OrdersOps(
        orders=orders,
        processor=processor,
        logistics=Logistics(orders, processor, StoreShipmentIndex(orders)),
        webhook_secrets={"sandbox": WEBHOOK_SECRET},
        seen=seen,
    )

    async def ready() -> dict[str, Any]:
        return {}

    app = create_api(env.run.shop, ready, edge=Edge(tokens=TOKENS), orders_ops=ops)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://feira") as client:
        yield client, env
    await env.run.stores.close()


async def fulfilling(env: Env, order_id: str, merchant: str = "m-001") -> None:
    await place(env, order_id, [(SKUS[0], 1, merchant)])
    await drain(env.processor())
    assert (await get(env, order_id)).status is OrderStatus.FULFILLING


async def test_carrier_takes_a_shipment_to_delivered(
    api: tuple[httpx.AsyncClient, Env],
) -> None:
    client, env = api
    await fulfilling(env, "s-1")
    mine = carrier_of("s-1")
    listed = await client.get("/v1/logistics/shipments", headers=mine)
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["items"]
    assert item["order_id"] == "s-1"
    assert item["status"] == "fulfilling"
    assert item["lines"] == [{"sku": SKUS[0], "quantity": 1}]
    url = "/v1/logistics/shipments/s-1/events"
    early = await client.post(url, json={"kind": "delivered"}, headers=mine)
    assert early.status_code == 409
    assert early.json()["code"] == "shipment_event_invalid"
    picked = await client.post(url, json={"kind": "picked_up"}, headers=mine)
    assert picked.status_code == 200
    assert picked.json()["status"] == "shipped"
    again = await client.post(url, json={"kind": "picked_up"}, headers=mine)
    assert again.status_code == 200
    assert len(again.json()["events"]) == 1
    for at in (1.0, 2.0, 2.0):
        moving = await client.post(url, json={"kind": "in_transit", "at": at}, headers=mine)
        assert moving.status_code == 200
    delivered = await client.post(url, json={"kind": "delivered", "note": "door"}, headers=mine)
    assert delivered.status_code == 200
    order = await get(env, "s-1")
    assert order.status is OrderStatus.DELIVERED
    assert order.shipment is not None
    kinds = [e.kind for e in order.shipment.events]
    assert kinds == ["picked_up", "in_transit", "in_transit", "delivered"]
    # Delivered shipments leave the default list, and stay in the full one.
    assert (await client.get("/v1/logistics/shipments", headers=mine)).json()["items"] == []
    full = await client.get("/v1/logistics/shipments?include_done=true", headers=mine)
    assert [i["status"] for i in full.json()["items"]] == ["delivered"]


async def test_a_carrier_cannot_touch_another_carriers_shipment(
    api: tuple[httpx.AsyncClient, Env],
) -> None:
    client, env = api
    await fulfilling(env, "s-2")
    other = other_carrier("s-2")
    assert (await client.get("/v1/logistics/shipments", headers=other)).json()["items"] == []
    posted = await client.post(
        "/v1/logistics/shipments/s-2/events", json={"kind": "picked_up"}, headers=other
    )
    assert posted.status_code == 404
    assert posted.json()["code"] == "shipment_not_found"
    assert (await get(env, "s-2")).status is OrderStatus.FULFILLING
    # Roles do not mix: a merchant token is no carrier token, and the other way round.
    as_merchant = await client.get("/v1/logistics/shipments", headers=bearer("m-001"))
    assert as_merchant.status_code == 403
    as_carrier = await client.get("/v1/merchant/orders", headers=carrier_of("s-2"))
    assert as_carrier.status_code == 403
    anonymous = await client.get("/v1/logistics/shipments")
    assert anonymous.status_code == 401


async def test_a_carrier_pages_through_its_shipments(
    api: tuple[httpx.AsyncClient, Env],
) -> None:
    client, env = api
    carrier = CARRIERS[0]
    ids = [f"p-{n}" for n in range(40) if choose_carrier(f"p-{n}", CARRIERS) == carrier][:5]
    assert len(ids) == 5
    for n, order_id in enumerate(ids):
        await place(env, order_id, [(SKUS[n % 3], 1, "m-001")])
    others = [f"q-{n}" for n in range(40) if choose_carrier(f"q-{n}", CARRIERS) != carrier][:2]
    for order_id in others:
        await place(env, order_id, [(SKUS[2], 1, "m-001")])
    await drain(env.processor())
    mine = bearer(carrier, "carrier")
    for order_id in ids[1:3]:  # two of them delivered
        url = f"/v1/logistics/shipments/{order_id}/events"
        for kind in ("picked_up", "delivered"):
            posted = await client.post(url, json={"kind": kind}, headers=mine)
            assert posted.status_code == 200, posted.text
    stored = [await get(env, order_id) for order_id in ids]
    newest_first = [o.id for o in sorted(stored, key=lambda o: (o.created_at, o.id), reverse=True)]

    async def pages(query: str) -> list[list[str]]:
        out, cursor = [], None
        while True:
            url = f"/v1/logistics/shipments?limit=2{query}"
            listed = await client.get(
                url if cursor is None else f"{url}&cursor={cursor}", headers=mine
            )
            assert listed.status_code == 200, listed.text
            out.append([item["order_id"] for item in listed.json()["items"]])
            cursor = listed.json()["next_cursor"]
            if cursor is None:
                return out

    everything = await pages("&include_done=true")
    assert [len(page) for page in everything] == [2, 2, 1]
    assert [i for page in everything for i in page] == newest_first
    active = await pages("")
    assert [i for page in active for i in page] == [i for i in newest_first if i not in ids[1:3]]
    assert all(len(page) <= 2 for page in active)
    bad = await client.get("/v1/logistics/shipments?cursor=bm9waXBl", headers=mine)
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_argument"


class ListIndex:
    """A ShipmentIndex over a list (newest first); its cursor is an offset."""

    def __init__(self, orders: list[Order]) -> None:
        self.orders = orders
        self.reads: list[tuple[str | None, int]] = []

    async def page(
        self, carrier: str, cursor: str | None, limit: int
    ) -> tuple[list[Order], str | None]:
        self.reads.append((cursor, limit))
        start = int(cursor or 0)
        mine = [o for o in self.orders if o.shipment and o.shipment.carrier == carrier]
        page = mine[start : start + limit]
        return page, (str(start + limit) if start + limit < len(mine) else None)


def shipped(order_id: str, status: OrderStatus, carrier: str = "dhl") -> Order:
    lines = [OrderLine(SKUS[0], "p-1", "m-001", 1, 900, 1000)]
    order = Order.create(order_id, "cart-0000000000000000", "EUR", lines, 1.0)
    return replace(order, status=status, shipment=Shipment(carrier, "T"))


async def test_listing_stops_inside_a_page_and_bounds_its_scan() -> None:
    S = OrderStatus
    statuses = [S.FULFILLING, S.DELIVERED, S.SHIPPED, S.SHIPPED, S.DELIVERED, S.FULFILLING]
    index = ListIndex([shipped(f"o-{n}", s) for n, s in enumerate(statuses)])
    logistics = Logistics(None, None, index)  # type: ignore[arg-type]
    # Page of 2 actives: [o-0, o-1] gives one, [o-2, o-3] fills it at o-2, so the next
    # page starts right after o-2 (re-read of one row), not after o-3.
    found, cursor = await logistics.shipments("dhl", limit=2)
    assert [o.id for o in found] == ["o-0", "o-2"]
    assert index.reads == [(None, 2), ("2", 2), ("2", 1)]
    found, cursor = await logistics.shipments("dhl", limit=2, cursor=cursor)
    assert ([o.id for o in found], cursor) == (["o-3", "o-5"], None)
    # Done shipments only: at most MAX_SCAN_PAGES pages are read, then a cursor.
    index = ListIndex([shipped(f"d-{n}", S.DELIVERED) for n in range(40)])
    logistics = Logistics(None, None, index)  # type: ignore[arg-type]
    found, cursor = await logistics.shipments("dhl", limit=3)
    assert (found, cursor) == ([], str(3 * MAX_SCAN_PAGES))
    assert len(index.reads) == MAX_SCAN_PAGES
    found, _ = await logistics.shipments("dhl", limit=3, active_only=False, cursor=cursor)
    assert [o.id for o in found] == [f"d-{n}" for n in range(15, 18)]


async def test_a_failed_delivery_refunds_once(api: tuple[httpx.AsyncClient, Env]) -> None:
    client, env = api
    await fulfilling(env, "s-3")
    mine, url = carrier_of("s-3"), "/v1/logistics/shipments/s-3/events"
    await client.post(url, json={"kind": "picked_up"}, headers=mine)
    for _ in range(2):
        failed = await client.post(url, json={"kind": "failed", "note": "lost"}, headers=mine)
        assert failed.status_code == 200, failed.text
        assert failed.json()["status"] == "refunded"
    order = await get(env, "s-3")
    assert order.payment is not None
    payment = await env.provider.get(order.payment.payment_id)
    assert (payment.state, payment.refunded) == (PaymentState.REFUNDED, order.total)
    assert len(env.webhooks("payment.refunded")) == 1


async def test_webhooks_are_verified_and_taken_once(api: tuple[httpx.AsyncClient, Env]) -> None:
    client, env = api
    await fulfilling(env, "w-1")
    order = await get(env, "w-1")
    assert order.payment is not None
    # A refund made at the processor (its dashboard) reaches Feira as a webhook.
    await env.provider.refund(order.payment.payment_id, order.total, "dashboard-refund-1")
    [delivery] = env.webhooks("payment.refunded")
    url = "/v1/payments/webhooks/sandbox"
    forged = dict(delivery.headers)
    forged[SIGNATURE_HEADER] = sign(b"x" * 32, delivery.body, time.time())
    bad = await client.post(url, content=delivery.body, headers=forged)
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["code"] == "webhook_signature_invalid"
    assert (await get(env, "w-1")).status is OrderStatus.FULFILLING
    first = await client.post(url, content=delivery.body, headers=dict(delivery.headers))
    assert first.status_code == 200, first.text
    assert first.json() == {"received": True, "duplicate": False, "outcome": "refunded"}
    refunded = await get(env, "w-1")
    assert refunded.status is OrderStatus.REFUNDED
    second = await client.post(url, content=delivery.body, headers=dict(delivery.headers))
    assert second.status_code == 200
    assert second.json()["duplicate"] is True
    assert (await get(env, "w-1")).version == refunded.version
    # Still one refund at the processor: Feira's own refund key found it refunded.
    assert len(env.webhooks("payment.refunded")) == 1
    unknown = await client.post(
        "/v1/payments/webhooks/elsewhere", content=delivery.body, headers=dict(delivery.headers)
    )
    assert unknown.status_code == 404


async def test_merchants_see_and_refund_only_their_orders(
    api: tuple[httpx.AsyncClient, Env],
) -> None:
    client, env = api
    await fulfilling(env, "r-1", merchant="m-001")
    await place(env, "r-2", [(SKUS[1], 1, "m-001"), (SKUS[2], 1, "m-002")])
    await drain(env.processor())
    mine = await client.get("/v1/merchant/orders", headers=bearer("m-001"))
    assert mine.status_code == 200, mine.text
    assert sorted(o["id"] for o in mine.json()["items"]) == ["r-1", "r-2"]
    theirs = await client.get("/v1/merchant/orders", headers=bearer("m-002"))
    [shared] = theirs.json()["items"]
    assert shared["id"] == "r-2"
    assert not shared["whole_order"]
    assert [line["sku"] for line in shared["lines"]] == [SKUS[2]]
    # Another merchant's order is "not found"; a shared one cannot be refunded whole.
    stranger = await client.post("/v1/merchant/orders/r-1/refund", headers=bearer("m-002"))
    assert stranger.status_code == 404
    assert (await get(env, "r-1")).status is OrderStatus.FULFILLING
    mixed = await client.post("/v1/merchant/orders/r-2/refund", headers=bearer("m-001"))
    assert mixed.status_code == 409
    for _ in range(2):
        refund = await client.post("/v1/merchant/orders/r-1/refund", headers=bearer("m-001"))
        assert refund.status_code == 200, refund.text
        assert refund.json()["status"] == "refunded"
    assert (await get(env, "r-1")).status is OrderStatus.REFUNDED
    assert len(env.webhooks("payment.refunded")) == 1
