"""The merchant API in-process: ownership, lifecycle, bulk import, prices and stock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from actors.identity.tokens import TokenService
from actors.shop import ShopLimits
from api.app import Edge, create_api
from tests.inprocess import InProcess, build_inprocess
from tests.tokens import RING, TOKENS, bearer


def auth(merchant_id: str) -> dict[str, str]:
    return bearer(merchant_id)


A = auth("m-001")
B = auth("m-002")


def product(sku: str, **changes: Any) -> dict[str, Any]:
    return {
        "title": "Enamel Kettle",
        "brand": "Kestrel",
        "category": "home/kitchen/kettles",
        "variants": [{"sku": sku, "options": {"color": "red"}}],
    } | changes


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-only"])
async def env(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[httpx.AsyncClient, InProcess]]:
    # Long cache TTLs: a shopper read after a merchant change proves invalidation.
    run = await build_inprocess(
        tmp_path, 30, ShopLimits(price_cache_ttl_s=60, product_cache_ttl_s=60)
    )

    async def ready() -> dict[str, Any]:
        return {}

    app = create_api(run.shop, ready, fast_path=request.param, edge=Edge(tokens=TOKENS))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://feira") as client:
        yield client, run
    await run.stores.close()


async def test_requests_without_a_valid_token_are_refused(
    env: tuple[httpx.AsyncClient, InProcess],
) -> None:
    client, _ = env
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
        reply = await client.get("/v1/merchant/products", headers=headers)
        assert reply.status_code == 401
        assert reply.headers["content-type"] == "application/problem+json"
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert reply.json()["code"] == "unauthenticated"
    stale = TokenService(RING, "feira", "feira-api", clock=lambda: 1_000_000.0)
    expired = stale.issue_access("m-001", "merchant", ["catalog:write"], ttl_s=1)
    reply = await client.get(
        "/v1/merchant/products", headers={"Authorization": f"Bearer {expired}"}
    )
    assert reply.status_code == 401
    assert "expired" in reply.json()["detail"]


async def test_draft_publish_archive_lifecycle(env: tuple[httpx.AsyncClient, InProcess]) -> None:
    client, _ = env
    created = await client.post("/v1/merchant/products", json=product("NEW-1"), headers=A)
    assert created.status_code == 201, created.text
    doc = created.json()
    assert doc["status"] == "draft"
    assert created.headers["location"] == f"/v1/merchant/products/{doc['id']}"
    # Drafts are invisible to shoppers.
    assert (await client.get(f"/v1/products/{doc['id']}")).status_code == 404
    published = await client.post(f"/v1/merchant/products/{doc['id']}/publish", headers=A)
    assert published.json()["status"] == "published"
    assert (await client.get(f"/v1/products/{doc['id']}")).status_code == 200
    again = await client.post(f"/v1/merchant/products/{doc['id']}/publish", headers=A)
    assert again.status_code == 200  # a repeated transition is a no-op, safe to retry
    archived = await client.post(f"/v1/merchant/products/{doc['id']}/archive", headers=A)
    assert archived.json()["status"] == "archived"
    # The shopper's cached copy was dropped: archived is gone at once.
    assert (await client.get(f"/v1/products/{doc['id']}")).status_code == 404
    mine = (await client.get("/v1/merchant/products?status=archived", headers=A)).json()
    assert [p["id"] for p in mine["items"]] == [doc["id"]]


async def test_a_merchant_cannot_reach_another_merchants_products(
    env: tuple[httpx.AsyncClient, InProcess],
) -> None:
    client, _ = env
    doc = (await client.post("/v1/merchant/products", json=product("OWN-1"), headers=A)).json()
    path = f"/v1/merchant/products/{doc['id']}"
    assert (await client.get(path, headers=B)).status_code == 404
    assert (await client.patch(path, json={"title": "Mine now"}, headers=B)).status_code == 404
    assert (await client.post(f"{path}/publish", headers=B)).status_code == 404
    price = {"amount": 1, "currency": "EUR"}
    assert (await client.put("/v1/merchant/prices/OWN-1", json=price, headers=B)).status_code == 404
    stock = {"on_hand": 1}
    assert (
        await client.put("/v1/merchant/inventory/OWN-1", json=stock, headers=B)
    ).status_code == 404
    # Nothing changed, and B's listing never shows A's products.
    assert (await client.get(path, headers=A)).json() == doc
    listed = (await client.get("/v1/merchant/products?limit=100", headers=B)).json()["items"]
    assert listed
    assert all(p["merchant_id"] == "m-002" for p in listed)
    # Claiming A's SKU, or A's product id, is a conflict.
    stolen = await client.post("/v1/merchant/products", json=product("OWN-1"), headers=B)
    assert stolen.status_code == 409
    taken = await client.post("/v1/merchant/products", json=product("B-1", id=doc["id"]), headers=B)
    assert taken.status_code == 409


async def test_invalid_edits_are_422_and_change_nothing(
    env: tuple[httpx.AsyncClient, InProcess],
) -> None:
    client, _ = env
    doc = (await client.post("/v1/merchant/products", json=product("EDIT-1"), headers=A)).json()
    path = f"/v1/merchant/products/{doc['id']}"
    for changes in ({"title": ""}, {"status": "published"}, {"variants": []}, {}):
        reply = await client.patch(path, json=changes, headers=A)
        assert reply.status_code == 422, (changes, reply.text)
        assert reply.json()["code"] == "product_invalid"
    assert (await client.get(path, headers=A)).json() == doc
    ok = await client.patch(path, json={"title": "Copper Kettle"}, headers=A)
    assert ok.json()["title"] == "Copper Kettle"
    bad_json = await client.post(
        "/v1/merchant/products",
        content=b"{not json",
        headers={**A, "content-type": "application/json"},
    )
    assert bad_json.status_code == 422


async def test_ndjson_import_keeps_good_lines_and_reports_bad_ones(
    env: tuple[httpx.AsyncClient, InProcess],
) -> None:
    client, run = env
    others = (await client.get("/v1/merchant/products?limit=1", headers=B)).json()["items"]
    lines = [
        orjson.dumps(product("IMP-1", id="imp-1", status="published")),
        b"{broken",
        orjson.dumps(product("IMP-2", id="imp-2")),
        b"",
        orjson.dumps(product("IMP-3", title="")),
        orjson.dumps(product("IMP-4", id=others[0]["id"])),  # another merchant's id
        orjson.dumps(product("IMP-1", id="imp-5")),  # a SKU claimed earlier in the import
        orjson.dumps(product("IMP-1", id="imp-1", title="Renamed")),  # replaces line 1
    ]

    async def body() -> AsyncIterator[bytes]:
        data = b"\n".join(lines) + b"\n"
        for start in range(0, len(data), 7):  # chunks that split lines mid-way
            yield data[start : start + 7]

    reply = await client.post(
        "/v1/merchant/products/import",
        content=body(),
        headers={**A, "content-type": "application/x-ndjson"},
    )
    assert reply.status_code == 200, reply.text
    report = reply.json()
    assert report["accepted"] == 3
    assert [(e["line"], e["code"]) for e in report["errors"]] == [
        (2, "product_invalid"),
        (5, "product_invalid"),
        (6, "product_conflict"),
        (7, "product_conflict"),
    ]
    assert report["rejected"] == 4
    one = await run.stores.catalog.get_product("imp-1")
    assert one is not None
    assert one["title"] == "Renamed"
    assert one["status"] == "published"
    assert await run.stores.catalog.get_product("imp-5") is None
    wrong_type = await client.post(
        "/v1/merchant/products/import", content=b"{}", headers={**A, "content-type": "text/csv"}
    )
    # The WAF allows JSON, NDJSON and form bodies only.
    assert wrong_type.status_code == 415


async def test_price_change_shows_on_the_product_page_at_once(
    env: tuple[httpx.AsyncClient, InProcess],
) -> None:
    client, _ = env
    mine = (await client.get("/v1/merchant/products?status=published", headers=A)).json()
    doc = mine["items"][0]
    sku = doc["variants"][0]["sku"]
    before = (await client.get(f"/bff/web/product/{doc['id']}")).json()  # now cached
    new_amount = before["prices"][sku]["base"]["amount"] + 100
    reply = await client.put(
        f"/v1/merchant/prices/{sku}", json={"amount": new_amount, "currency": "EUR"}, headers=A
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["base"] == {"amount": new_amount, "currency": "EUR"}
    page = (await client.get(f"/bff/web/product/{doc['id']}")).json()
    assert page["prices"][sku]["base"]["amount"] == new_amount
    assert (await client.get(f"/v1/prices/{sku}")).json()["base"]["amount"] == new_amount
    wrong = await client.put(
        f"/v1/merchant/prices/{sku}", json={"amount": 5, "currency": "USD"}, headers=A
    )
    assert wrong.status_code == 422
    assert wrong.json()["code"] == "currency_mismatch"
    negative = await client.put(
        f"/v1/merchant/prices/{sku}", json={"amount": -5, "currency": "EUR"}, headers=A
    )
    assert negative.status_code == 422
    assert (await client.get(f"/v1/prices/{sku}")).json()["base"]["amount"] == new_amount


async def test_stock_is_set_by_its_owner(env: tuple[httpx.AsyncClient, InProcess]) -> None:
    client, _ = env
    mine = (await client.get("/v1/merchant/products?status=published", headers=A)).json()
    sku = mine["items"][0]["variants"][0]["sku"]
    reply = await client.put(f"/v1/merchant/inventory/{sku}", json={"on_hand": 7}, headers=A)
    assert reply.status_code == 200, reply.text
    assert reply.json()["on_hand"] == 7
    assert (await client.get(f"/v1/stock/{sku}")).json()["on_hand"] == 7
    bad = await client.put(f"/v1/merchant/inventory/{sku}", json={"on_hand": -1}, headers=A)
    assert bad.status_code == 422
