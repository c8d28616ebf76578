"""A shopper's session over HTTP against the deployed Serve app."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def http(feira_url: str) -> Any:
    with httpx.Client(base_url=feira_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def skus(http: httpx.Client) -> list[str]:
    page = http.get("/v1/products", params={"limit": 20}).json()
    return [p["variants"][0]["sku"] for p in page["items"]]


def assert_problem(reply: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = reply.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["detail"]
    return body


def test_health_ready_and_docs(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["shards"] == {"cart": 2, "inventory": 2, "pricing": 2}
    assert http.get("/docs").status_code == 200
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/v1/carts", "/v1/carts/{cart_id}/items", "/v1/stock/{sku}"} <= set(paths)


def test_curl_session(http: httpx.Client, skus: list[str]) -> None:
    created = http.post("/v1/carts")
    assert created.status_code == 201
    cart = created.json()
    assert created.headers["location"] == f"/v1/carts/{cart['id']}"
    assert len(cart["id"]) >= 22
    assert cart["lines"] == []
    a, b = skus[0], skus[1]
    http.post(f"/v1/carts/{cart['id']}/items", json={"sku": a, "quantity": 2}).raise_for_status()
    reply = http.post(f"/v1/carts/{cart['id']}/items", json={"sku": b, "quantity": 1})
    reply.raise_for_status()
    viewed = http.get(f"/v1/carts/{cart['id']}").json()
    assert [(line["sku"], line["quantity"]) for line in viewed["lines"]] == [(a, 2), (b, 1)]
    prices = {s: http.get(f"/v1/prices/{s}").json() for s in (a, b)}
    expected = sum(prices[s]["unit"]["amount"] * q for s, q in ((a, 2), (b, 1)))
    assert viewed["total"] == {"amount": expected, "currency": "EUR"}
    assert all(isinstance(line["line_total"]["amount"], int) for line in viewed["lines"])
    stock = http.get(f"/v1/stock/{a}").json()
    assert stock["available"] == stock["on_hand"] - stock["reserved"] - stock["sold"]
    many = http.get("/v1/stock", params=[("sku", a), ("sku", b)]).json()
    assert [s["sku"] for s in many] == [a, b]
    changed = http.patch(f"/v1/carts/{cart['id']}/items/{a}", json={"quantity": 5}).json()
    assert changed["lines"][0]["quantity"] == 5
    removed = http.delete(f"/v1/carts/{cart['id']}/items/{b}").json()
    assert [line["sku"] for line in removed["lines"]] == [a]


def test_idempotency_key_applies_once(http: httpx.Client, skus: list[str]) -> None:
    cart = http.post("/v1/carts").json()
    for _ in range(3):
        reply = http.post(
            f"/v1/carts/{cart['id']}/items",
            json={"sku": skus[2], "quantity": 1},
            headers={"Idempotency-Key": "same-key-123"},
        )
        assert reply.status_code == 200
    assert http.get(f"/v1/carts/{cart['id']}").json()["lines"][0]["quantity"] == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"sku": "NO-SUCH-SKU", "quantity": 1}, 404, "sku_not_found"),
        ({"sku": "{sku}", "quantity": 0}, 422, "invalid_argument"),
        ({"sku": "{sku}", "quantity": -3}, 422, "invalid_argument"),
        ({"sku": "{sku}", "quantity": "2"}, 422, "invalid_argument"),
        ({"sku": "{sku}", "quantity": 2.5}, 422, "invalid_argument"),
        ({"sku": "{sku}", "quantity": 10**12}, 422, "invalid_argument"),
        ({"sku": "{sku}", "quantity": 100}, 422, "quantity_limit"),
        ({"sku": "", "quantity": 1}, 422, "invalid_argument"),
        ({"sku": "{sku}", "quantity": 1, "price": 1}, 422, "invalid_argument"),
        ({"quantity": 1}, 422, "invalid_argument"),
    ],
)
def test_bad_cart_input_is_a_problem_and_changes_nothing(
    http: httpx.Client, skus: list[str], body: dict[str, Any], status: int, code: str
) -> None:
    cart = http.post("/v1/carts").json()
    http.post(f"/v1/carts/{cart['id']}/items", json={"sku": skus[3], "quantity": 1})
    before = http.get(f"/v1/carts/{cart['id']}").json()
    payload = {k: (v.format(sku=skus[4]) if isinstance(v, str) else v) for k, v in body.items()}
    reply = http.post(f"/v1/carts/{cart['id']}/items", json=payload)
    assert_problem(reply, status, code)
    after = http.get(f"/v1/carts/{cart['id']}").json()
    assert after == before


def test_not_json_body_is_a_problem(http: httpx.Client) -> None:
    cart = http.post("/v1/carts").json()
    reply = http.post(
        f"/v1/carts/{cart['id']}/items",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert_problem(reply, 422, "invalid_argument")


def test_unknown_and_malformed_carts(http: httpx.Client, skus: list[str]) -> None:
    assert_problem(http.get("/v1/carts/" + "A" * 24), 404, "cart_not_found")
    assert_problem(http.get("/v1/carts/short"), 422, "invalid_argument")
    reply = http.post("/v1/carts/" + "B" * 24 + "/items", json={"sku": skus[0], "quantity": 1})
    assert_problem(reply, 404, "cart_not_found")
    cart = http.post("/v1/carts").json()
    reply = http.delete(f"/v1/carts/{cart['id']}/items/{skus[0]}")
    assert_problem(reply, 404, "cart_line_not_found")


def test_cart_line_limit(http: httpx.Client) -> None:
    cart = http.post("/v1/carts").json()
    page = http.get("/v1/products", params={"limit": 100}).json()
    many = [v["sku"] for p in page["items"] for v in p["variants"]][:51]
    for sku in many[:50]:
        http.post(f"/v1/carts/{cart['id']}/items", json={"sku": sku}).raise_for_status()
    reply = http.post(f"/v1/carts/{cart['id']}/items", json={"sku": many[50]})
    assert_problem(reply, 422, "cart_line_limit")
    assert len(http.get(f"/v1/carts/{cart['id']}").json()["lines"]) == 50


def test_products_pages_and_screens(http: httpx.Client) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        params: dict[str, Any] = {"limit": 50}
        if cursor:
            params["cursor"] = cursor
        page = http.get("/v1/products", params=params).json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) > 200
    pid = seen[0]
    assert http.get(f"/v1/products/{pid}").json()["id"] == pid
    web = http.get(f"/bff/web/product/{pid}").json()
    assert web["product"]["id"] == pid
    assert set(web["prices"]) == set(web["stock"]) == {
        v["sku"] for v in web["product"]["variants"]
    }
    mobile = http.get(f"/bff/mobile/product/{pid}")
    assert mobile.json()["id"] == pid
    assert len(mobile.content) < len(http.get(f"/bff/web/product/{pid}").content)
    assert_problem(http.get("/v1/products/p-9999999"), 404, "product_not_found")
    assert_problem(http.get("/bff/web/product/p-9999999"), 404, "product_not_found")
    assert_problem(http.get("/v1/products", params={"cursor": "!!bad"}), 400, "invalid_argument")
    assert_problem(http.get("/v1/products", params={"limit": 0}), 422, "invalid_argument")
    assert_problem(http.get("/v1/stock/NOPE"), 404, "sku_not_found")
    assert_problem(http.get("/v1/prices/NOPE"), 404, "sku_not_found")
    assert_problem(http.get("/v1/nowhere"), 404, "not_found")
