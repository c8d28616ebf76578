"""GraphQL search on the real embedded index (Tantivy) instead of the in-memory one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from actors.shop import Shop
from api.app import create_api
from storage.demo import generate
from storage.records import SearchQuery
from storage.search.documents import search_doc
from tests.unit.test_graphql import PRODUCTS, _ready, _runtime

tantivy_index = pytest.importorskip("storage.search.tantivy_index")

QUERY = """
query($q: String, $category: String, $after: String, $facets: Boolean!) {
  search(query: $q, category: $category, first: 5, after: $after, facets: $facets) {
    total
    nodes { id title category variants { sku price { unit { amount } } stock { inStock } } }
    facets { name values { value count } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


@pytest.fixture
async def tantivy_api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any, Shop]]:
    shop, stores, _ = await _runtime(tmp_path / "stores")
    index = tantivy_index.TantivySearchIndex(
        str(tmp_path / "index"), writer_heap_bytes=15_000_000, search_threads=1
    )
    items = list(generate(PRODUCTS, seed=7, currency="EUR"))
    prices = {p.sku: p.amount for item in items for p in item.prices}
    await index.ensure_index()
    await index.upsert([d for item in items if (d := search_doc(item.product, prices))])
    await index.refresh()
    shop.search_index = index
    app = create_api(shop, _ready)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://feira") as client:
            yield client, index, shop
    finally:
        await index.close()
        await stores.close()


async def _all_pages(client: httpx.AsyncClient, variables: dict[str, Any]) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    after = None
    while True:
        reply = await client.post(
            "/graphql",
            json={"query": QUERY, "variables": {**variables, "after": after, "facets": not pages}},
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert "errors" not in body, body
        page = body["data"]["search"]
        pages.append(page)
        if not page["pageInfo"]["hasNextPage"]:
            return pages
        after = page["pageInfo"]["endCursor"]


async def test_search_through_tantivy(tantivy_api: tuple[httpx.AsyncClient, Any, Shop]) -> None:
    client, index, _ = tantivy_api
    expected = await index.search(SearchQuery(category="home", limit=100, facets=False))
    pages = await _all_pages(client, {"category": "home"})
    ids = [node["id"] for page in pages for node in page["nodes"]]
    assert ids == [hit.id for hit in expected.hits]
    assert len(ids) == len(set(ids)) == pages[0]["total"] == expected.total
    for page in pages:
        for node in page["nodes"]:
            assert node["category"].startswith("home/")
            assert all(v["price"]["unit"]["amount"] > 0 for v in node["variants"])
    facets = {f["name"]: f["values"] for f in pages[0]["facets"]}
    assert sum(v["count"] for v in facets["brand"]) == expected.total

    text = await _all_pages(client, {"q": "kettle"})
    found = [node for page in text for node in page["nodes"]]
    assert found
    assert all("kettle" in node["title"].lower() for node in found)


async def test_a_cursor_from_nowhere_is_invalid_argument(
    tantivy_api: tuple[httpx.AsyncClient, Any, Shop],
) -> None:
    client, _, _ = tantivy_api
    reply = await client.post(
        "/graphql", json={"query": '{ search(query: "kettle", after: "bm9wZQ") { total } }'}
    )
    body = reply.json()
    assert body["data"] == {"search": None}
    assert body["errors"][0]["extensions"]["code"] == "invalid_argument"
