"""Catalog, search, GraphQL and the merchant API over HTTP against the Serve app, on the
session's cluster (2 BFF replicas, 60 s replica caches, PostgreSQL and Redis)."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.tokens import deployed_bearer

# A merchant change must be visible on every replica within this bound (README states it).
INVALIDATION_BOUND_S = 2.0
# And in search within this one: one sync interval plus one batch, with slack for 2 cores.
SEARCH_LAG_BOUND_S = 10.0


def replica_urls() -> list[str]:
    """Each BFF replica's own HTTP port, from the HAProxy config that routes to them."""
    config = os.environ.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC")
    # Serve writes one config per node, in a directory named for the node.
    files = list(Path(config).parent.glob(f"*/{Path(config).name}")) if config else []
    if not files:
        pytest.skip("no HAProxy ingress here: replicas cannot be addressed one by one")
    text = "".join(f.read_text() for f in files)
    ports = {int(p) for p in re.findall(r"^\s*server\s+\S+\s+127\.0\.0\.1:(\d+)", text, re.M)}
    # Replicas listen in the cluster's direct-ingress range; other servers are Serve's own.
    low = int(os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"])
    high = int(os.environ["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"])
    return [f"http://127.0.0.1:{port}" for port in sorted(ports) if low <= port <= high]


def merchant_headers(settings: Any, merchant_id: str) -> dict[str, str]:
    token = deployed_bearer(settings, merchant_id)
    return {"Authorization": f"Bearer {token}"}


async def until(check: Any, bound_s: float) -> float:
    """Seconds until ``check()`` is true; fails after ``bound_s``."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > bound_s:
            pytest.fail(f"not true within {bound_s} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_search_with_a_typo_facets_and_pages(feira_url: str) -> None:
    async with httpx.AsyncClient(base_url=feira_url, timeout=10) as http:
        product = (await http.get("/v1/products/p-0000000")).json()
        noun = product["title"].split()[-1].lower()  # e.g. "headphones"
        typo = noun[:2] + noun[3:]  # one letter dropped
        reply = await http.get("/v1/search", params={"q": f"{typo} {product['brand']}"})
        assert reply.status_code == 200, reply.text
        found = reply.json()
        assert product["id"] in [hit["id"] for hit in found["items"]]

        browse = (await http.get("/v1/search", params={"category": "home", "limit": 7})).json()
        brand = browse["facets"]["brand"][0]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {
                "category": "home",
                "brand": brand["value"],
                "limit": 7,
                "sort": "price_asc",
            }
            if cursor:
                params["cursor"] = cursor
            page = (await http.get("/v1/search", params=params)).json()
            assert all(hit["brand"] == brand["value"] for hit in page["items"])
            assert all(hit["category"].startswith("home/") for hit in page["items"])
            seen += [hit["id"] for hit in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == brand["count"] == page["total"]

        bad = await http.get("/v1/search", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 400
        assert bad.headers["content-type"] == "application/problem+json"
        inverted = await http.get("/v1/search", params={"min_price": 500, "max_price": 100})
        assert inverted.status_code == 400


async def test_graphql_search_with_nested_prices_and_stock(feira_url: str) -> None:
    query = """
    query($q: String!) {
      search(query: $q, first: 3) {
        total
        nodes { id title variants { sku price { unit { amount currency } } stock { available } } }
        facets { name values { value count } }
        pageInfo { hasNextPage endCursor }
      }
    }"""
    async with httpx.AsyncClient(base_url=feira_url, timeout=10) as http:
        product = (await http.get("/v1/products/p-0000000")).json()
        reply = await http.post(
            "/graphql", json={"query": query, "variables": {"q": product["brand"]}}
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert "errors" not in body, body
        result = body["data"]["search"]
        assert result["total"] >= 1
        node = result["nodes"][0]
        assert node["variants"][0]["price"]["unit"]["currency"] == "EUR"
        assert {f["name"] for f in result["facets"]} >= {"brand", "category"}
        too_big = await http.post("/graphql", json={"query": "{ search(first: 101) { total } }"})
        assert too_big.status_code in {200, 400}
        assert too_big.json()["errors"]


async def test_merchant_changes_reach_every_replica_and_search(feira_url: str, seeded: Any) -> None:
    async with httpx.AsyncClient(timeout=10) as probe:
        # The gRPC app's replica listens in the same range; only BFF replicas answer /healthz.
        replicas = [
            url for url in replica_urls() if (await probe.get(f"{url}/healthz")).status_code == 200
        ]
    assert len(replicas) == 2
    headers = merchant_headers(seeded, "m-001")
    async with httpx.AsyncClient(timeout=10) as http:
        mine = (
            await http.get(
                f"{feira_url}/v1/merchant/products",
                params={"status": "published", "limit": 1},
                headers=headers,
            )
        ).json()["items"][0]
        sku = mine["variants"][0]["sku"]
        page_path = f"/bff/web/product/{mine['id']}"
        # Warm every replica's caches with the current price and document.
        before = [(await http.get(replica + page_path)).json() for replica in replicas]
        old = before[0]["prices"][sku]["base"]["amount"]
        new = old + 123
        reply = await http.put(
            f"{feira_url}/v1/merchant/prices/{sku}",
            json={"amount": new, "currency": "EUR"},
            headers=headers,
        )
        assert reply.status_code == 200, reply.text

        async def every_replica_shows_it() -> bool:
            pages = [(await http.get(replica + page_path)).json() for replica in replicas]
            return all(p["prices"][sku]["base"]["amount"] == new for p in pages)

        took = await until(every_replica_shows_it, INVALIDATION_BOUND_S)
        print(f"\nprice change visible on {len(replicas)} replicas after {took * 1000:.0f} ms")

        word = f"zyzzogeton{int(time.time())}"
        created = await http.post(
            f"{feira_url}/v1/merchant/products",
            json={
                "title": f"Vintage {word} Lamp",
                "brand": "Kestrel",
                "category": "home/lighting/lamps",
                "status": "published",
                "variants": [{"sku": f"LAMP-{word}", "options": {"color": "amber"}}],
            },
            headers=headers,
        )
        assert created.status_code == 201, created.text
        product_id = created.json()["id"]

        async def searchable() -> bool:
            hits = (await http.get(f"{feira_url}/v1/search", params={"q": word})).json()
            return [h["id"] for h in hits["items"]] == [product_id]

        took = await until(searchable, SEARCH_LAG_BOUND_S)
        print(f"new product searchable after {took * 1000:.0f} ms")
        # Archived: it leaves search and every replica.
        await http.post(f"{feira_url}/v1/merchant/products/{product_id}/archive", headers=headers)

        async def gone() -> bool:
            hits = (await http.get(f"{feira_url}/v1/search", params={"q": word})).json()
            pages = [
                (await http.get(f"{replica}/v1/products/{product_id}")).status_code
                for replica in replicas
            ]
            return hits["items"] == [] and pages == [404] * len(replicas)

        await until(gone, SEARCH_LAG_BOUND_S)


async def test_merchant_api_needs_a_token_and_owns_nothing_else(
    feira_url: str, seeded: Any
) -> None:
    async with httpx.AsyncClient(base_url=feira_url, timeout=10) as http:
        assert (await http.get("/v1/merchant/products")).status_code == 401
        other = (
            await http.get(
                "/v1/merchant/products",
                params={"limit": 1},
                headers=merchant_headers(seeded, "m-002"),
            )
        ).json()["items"][0]
        reply = await http.patch(
            f"/v1/merchant/products/{other['id']}",
            json={"title": "Hijacked"},
            headers=merchant_headers(seeded, "m-001"),
        )
        assert reply.status_code == 404
        assert (await http.get(f"/v1/products/{other['id']}")).json()["title"] != "Hijacked"
