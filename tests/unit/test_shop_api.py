"""The whole HTTP surface in-process (``tests.inprocess``): real services and SQLite
stores, no Ray, no network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from actors.identity.tokens import Role
from actors.kinds import ShardKind
from actors.router import ShardRouter
from api.app import Edge, create_api
from tests.inprocess import build_inprocess
from tests.tokens import TOKENS, bearer

ADMIN = bearer("ops-1", Role.ADMIN)


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-only"])
async def api(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    run = await build_inprocess(tmp_path, 60)

    async def ready() -> dict[str, Any]:
        return {"coalescing": run.router.stats()}

    app = create_api(run.shop, ready, fast_path=request.param, edge=Edge(tokens=TOKENS))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://feira") as client:
        yield client, {"router": run.router, "prices": run.prices, "stores": run.stores}
    await run.stores.close()


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
        {
            "id": "promo-a",
            "kind": "percent",
            "value": 2500,
            "sku": a,
            "starts_at": 0,
            "ends_at": 4_000_000_000,
        },
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


BAD_ADDS = [
    ({"sku": "NO-SUCH-SKU", "quantity": 1}, 404, "sku_not_found"),
    ({"sku": "{sku}", "quantity": 0}, 422, "invalid_argument"),
    ({"sku": "{sku}", "quantity": "2"}, 422, "invalid_argument"),
    ({"sku": "{sku}", "quantity": 2.5}, 422, "invalid_argument"),
    ({"sku": "{sku}", "quantity": True}, 422, "invalid_argument"),
    ({"sku": "{sku}", "quantity": 10**30}, 422, "invalid_argument"),
    ({"sku": "{sku}", "quantity": 11}, 422, "quantity_limit"),
    ({"sku": "bad sku", "quantity": 1}, 422, "invalid_argument"),
    ({"sku": "{sku}", "extra": 1}, 422, "invalid_argument"),
    ([], 422, "invalid_argument"),
    (None, 422, "invalid_argument"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_ADDS)
async def test_bad_adds_are_the_same_problem_on_both_paths(
    api: tuple[httpx.AsyncClient, Any], body: Any, status: int, code: str
) -> None:
    client, _ = api
    (sku,) = await skus_of(client, 1)
    cart = (await client.post("/v1/carts")).json()
    if isinstance(body, dict):
        body = {k: (v.format(sku=sku) if isinstance(v, str) else v) for k, v in body.items()}
    reply = await client.post(f"/v1/carts/{cart['id']}/items", json=body)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["code"] == code
    assert (await client.get(f"/v1/carts/{cart['id']}")).json()["lines"] == []


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/carts/short", 422, "invalid_argument"),
        ("GET", "/v1/carts/" + "A" * 24, 404, "cart_not_found"),
        ("POST", "/v1/carts/" + "A" * 24 + "/items", 404, "cart_not_found"),
        ("GET", "/v1/stock/NOPE", 404, "sku_not_found"),
        ("GET", "/v1/prices/NOPE", 404, "sku_not_found"),
        ("GET", "/v1/products/p-9999999", 404, "product_not_found"),
        ("GET", "/v1/products/bad%20id", 422, "invalid_argument"),
        ("GET", "/bff/web/product/p-9999999", 404, "product_not_found"),
        ("GET", "/bff/mobile/product/p-9999999", 404, "product_not_found"),
        ("GET", "/v1/nowhere", 404, "not_found"),
    ],
)
async def test_unknowns_are_the_same_problem_on_both_paths(
    api: tuple[httpx.AsyncClient, Any], method: str, path: str, status: int, code: str
) -> None:
    client, _ = api
    (sku,) = await skus_of(client, 1)
    reply = await client.request(
        method, path, json={"sku": sku, "quantity": 1} if method == "POST" else None
    )
    assert reply.status_code == status, reply.text
    assert reply.json()["code"] == code


async def test_idempotency_key_on_both_paths(api: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = api
    (sku,) = await skus_of(client, 1)
    cart = (await client.post("/v1/carts")).json()
    url = f"/v1/carts/{cart['id']}/items"
    for _ in range(3):
        reply = await client.post(url, json={"sku": sku}, headers={"Idempotency-Key": "k-12345678"})
        assert reply.status_code == 200
    assert reply.json()["lines"][0]["quantity"] == 1
    short = await client.post(url, json={"sku": sku}, headers={"Idempotency-Key": "short"})
    assert short.status_code == 422


async def test_screens_match_on_both_paths(api: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = api
    page = (await client.get("/v1/products", params={"limit": 1})).json()
    pid = page["items"][0]["id"]
    web = (await client.get(f"/bff/web/product/{pid}")).json()
    mobile = (await client.get(f"/bff/mobile/product/{pid}")).json()
    assert web["product"]["id"] == mobile["id"] == pid
    assert {v["s"] for v in mobile["v"]} == set(web["prices"])
    assert (await client.get(f"/v1/products/{pid}")).json() == web["product"]


async def test_oversized_body_is_refused(api: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = api
    cart = (await client.post("/v1/carts")).json()
    body = b'{"sku": "' + b"A" * 70_000 + b'"}'
    reply = await client.post(
        f"/v1/carts/{cart['id']}/items", content=body, headers={"content-type": "application/json"}
    )
    assert 400 <= reply.status_code < 500
    assert reply.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"/v1/carts/{cart['id']}")).json()["lines"] == []


async def test_warm_product_page_does_not_touch_the_catalog(
    api: tuple[httpx.AsyncClient, Any],
) -> None:
    client, parts = api
    catalog = parts["stores"].catalog
    pid = (await client.get("/v1/products", params={"limit": 1})).json()["items"][0]["id"]
    await client.get(f"/bff/web/product/{pid}")
    calls: list[str] = []
    for name in ("get_product", "list_products"):
        real = getattr(catalog, name)

        async def counted(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            calls.append(_name)
            return await _real(*args, **kw)

        setattr(catalog, name, counted)
    reply = await client.get(f"/bff/web/product/{pid}")
    assert reply.status_code == 200
    assert calls == []


async def test_card_numbers_are_refused_before_any_route(
    api: tuple[httpx.AsyncClient, Any],
) -> None:
    client, _ = api
    cart = (await client.post("/v1/carts")).json()
    sku = (await skus_of(client, 1))[0]
    reply = await client.post(
        f"/v1/carts/{cart['id']}/items",
        json={"sku": sku, "quantity": 1, "note": "card 4111 1111 1111 1111"},
    )
    assert reply.status_code == 422
    assert reply.json()["code"] == "card_data_forbidden"
    assert "4111" not in reply.text
    assert (await client.get(f"/v1/carts/{cart['id']}")).json()["lines"] == []
    search = await client.get("/v1/search", params={"q": "5555555555554444"})
    assert search.status_code == 422


async def test_every_answer_carries_security_headers(
    api: tuple[httpx.AsyncClient, Any],
) -> None:
    client, _ = api
    cart = (await client.post("/v1/carts")).json()
    answers = [
        await client.get(f"/v1/carts/{cart['id']}"),  # fast path when enabled
        await client.get("/v1/products", params={"limit": 1}),  # FastAPI
        await client.get("/v1/products/nope"),  # a problem+json refusal
        await client.post(f"/v1/carts/{cart['id']}/items", json={"note": "4111111111111111"}),
    ]
    for reply in answers:
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["x-frame-options"] == "DENY"
        assert reply.headers["referrer-policy"] == "no-referrer"
        assert reply.headers["content-security-policy"].startswith("default-src 'none'")
    docs = await client.get("/docs")
    assert docs.headers["x-frame-options"] == "DENY"
    assert "content-security-policy" not in docs.headers  # Swagger UI loads from a CDN


async def test_ping_answers_without_touching_a_shard(api: tuple[httpx.AsyncClient, Any]) -> None:
    client, parts = api
    before = parts["router"].stats()
    reply = await client.get("/ping")
    assert (reply.status_code, reply.json()) == (200, {"ok": True})
    assert parts["router"].stats() == before


async def test_stock_holds_reserve_retry_and_release(api: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = api
    (sku,) = await skus_of(client, 1)
    start = (await client.get(f"/v1/stock/{sku}")).json()["available"]
    url = f"/v1/stock/{sku}/reservations"
    held = await client.post(
        url, json={"quantity": 2, "reservation_id": "flash-0001"}, headers=ADMIN
    )
    assert held.status_code == 201
    body = held.json()
    assert (body["reservation_id"], body["sku"], body["quantity"]) == ("flash-0001", sku, 2)
    assert body["available"] == start - 2
    # a retry of the same hold is the same hold, not a second one
    again = await client.post(
        url, json={"quantity": 2, "reservation_id": "flash-0001"}, headers=ADMIN
    )
    assert again.status_code == 201
    assert again.json()["reservation_id"] == "flash-0001"
    assert (await client.get(f"/v1/stock/{sku}")).json()["available"] == start - 2
    clash = await client.post(
        url, json={"quantity": 3, "reservation_id": "flash-0001"}, headers=ADMIN
    )
    assert (clash.status_code, clash.json()["code"]) == (409, "reservation_conflict")
    unnamed = (await client.post(url, json={}, headers=ADMIN)).json()
    assert unnamed["quantity"] == 1
    assert unnamed["reservation_id"].startswith("hold_")
    released = await client.delete(f"{url}/flash-0001", headers=ADMIN)
    assert (released.status_code, released.json()["available"]) == (200, start - 1)
    # DELETE is idempotent: a retry is answered from the shard's journal, stock unchanged
    retried = await client.delete(f"{url}/flash-0001", headers=ADMIN)
    assert (retried.status_code, retried.json()["available"]) == (200, start - 1)
    gone = await client.delete(f"{url}/never-held-1", headers=ADMIN)
    assert (gone.status_code, gone.json()["code"]) == (404, "reservation_not_found")
    assert (await client.get(f"/v1/stock/{sku}")).json()["available"] == start - 1


BAD_HOLDS = [
    ({"quantity": 0}, 422, "invalid_argument"),
    ({"quantity": "1"}, 422, "invalid_argument"),
    ({"ttl_s": 0.5}, 422, "invalid_argument"),
    ({"ttl_s": 10**9}, 422, "invalid_argument"),
    ({"reservation_id": "short"}, 422, "invalid_argument"),
    ({"reservation_id": "has spaces in it"}, 422, "invalid_argument"),
    ({"other": 1}, 422, "invalid_argument"),
    ({"quantity": 10**6}, 409, "insufficient_stock"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_HOLDS)
async def test_bad_holds_are_problems_and_change_nothing(
    api: tuple[httpx.AsyncClient, Any], body: dict[str, Any], status: int, code: str
) -> None:
    client, _ = api
    (sku,) = await skus_of(client, 1)
    before = (await client.get(f"/v1/stock/{sku}")).json()
    reply = await client.post(f"/v1/stock/{sku}/reservations", json=body, headers=ADMIN)
    assert (reply.status_code, reply.json()["code"]) == (status, code)
    assert reply.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"/v1/stock/{sku}")).json() == before


async def test_concurrent_holds_never_oversell(api: tuple[httpx.AsyncClient, Any]) -> None:
    client, parts = api
    (sku,) = await skus_of(client, 1)
    router: ShardRouter = parts["router"]
    await router.call(ShardKind.INVENTORY, sku, "set_on_hand", "op-flash-stock", sku, 10)
    url = f"/v1/stock/{sku}/reservations"
    replies = await asyncio.gather(*(client.post(url, json={}, headers=ADMIN) for _ in range(50)))
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [201] * 10 + [409] * 40
    assert {r.json()["code"] for r in replies if r.status_code == 409} == {"insufficient_stock"}
    assert (await client.get(f"/v1/stock/{sku}")).json()["available"] == 0
