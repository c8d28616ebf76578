"""/graphql in-process: real services and SQLite stores behind a real Shop, no Ray.

Search runs on a small in-memory SearchIndex defined here (substring match, filters,
facets, offset cursors), so these tests check the GraphQL layer, not search quality.
Every Shop and catalog entry point the GraphQL layer uses is wrapped to count calls.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
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
from actors.shop import MAX_SKUS_PER_LOOKUP, Shop, ShopLimits
from api.app import create_api
from api.graphql import QueryLimits, build_schema
from api.graphql.loaders import RequestContext
from storage.demo import generate, seed_stores
from storage.factory import Stores, open_embedded_stores
from storage.records import (
    FacetValue,
    ProductDoc,
    SearchDoc,
    SearchHit,
    SearchQuery,
    SearchResult,
    SortOrder,
)
from storage.search.documents import search_doc

PRODUCTS = 120  # more than 100 SKUs on one page of 100 products: loaders must split

# --- an in-memory search index ----------------------------------------------------------


def _in_category(doc: SearchDoc, category: str) -> bool:
    return doc.category == category or doc.category.startswith(category + "/")


class MemorySearchIndex:
    """The SearchIndex protocol over a dict; cursors are "o<offset>"."""

    def __init__(self) -> None:
        self.docs: dict[str, SearchDoc] = {}

    async def ensure_index(self) -> None:
        return None

    async def upsert(self, docs: Sequence[SearchDoc]) -> int:
        for doc in docs:
            self.docs[doc.id] = doc
        return len(docs)

    async def delete(self, product_ids: Sequence[str]) -> int:
        return sum(self.docs.pop(pid, None) is not None for pid in product_ids)

    async def refresh(self) -> None:
        return None

    async def count(self) -> int:
        return len(self.docs)

    async def clear(self) -> None:
        self.docs.clear()

    async def close(self) -> None:
        return None

    @staticmethod
    def _matches(doc: SearchDoc, q: SearchQuery) -> bool:
        text = f"{doc.title} {doc.description} {doc.brand}".lower()
        if any(word not in text for word in q.text.lower().split()):
            return False
        if q.category is not None and not _in_category(doc, q.category):
            return False
        if q.brands and doc.brand not in q.brands:
            return False
        attrs = set(doc.attributes)
        for name, values in q.attributes:
            if not any((name, v) in attrs for v in values):
                return False
        if q.min_price is not None and (doc.price is None or doc.price < q.min_price):
            return False
        return q.max_price is None or (doc.price is not None and doc.price <= q.max_price)

    async def search(self, query: SearchQuery) -> SearchResult:
        low, high = query.min_price, query.max_price
        if low is not None and high is not None and low > high:
            raise ValueError("min_price is above max_price")
        offset = 0
        if query.cursor is not None:
            if not query.cursor.startswith("o") or not query.cursor[1:].isdigit():
                raise ValueError(f"malformed cursor {query.cursor!r}")
            offset = int(query.cursor[1:])
        found = sorted(
            (d for d in self.docs.values() if self._matches(d, query)), key=lambda d: d.id
        )
        if query.sort is SortOrder.PRICE_ASC:
            found.sort(key=lambda d: (d.price is None, d.price or 0))
        elif query.sort is SortOrder.PRICE_DESC:
            found.sort(key=lambda d: -(d.price or 0))
        elif query.sort is SortOrder.NEWEST:
            found.sort(key=lambda d: d.created_at, reverse=True)
        page = found[offset : offset + query.limit]
        end = offset + len(page)
        facets: dict[str, list[FacetValue]] = {}
        if query.facets:
            counts: dict[str, Counter[str]] = defaultdict(Counter)
            for d in found:
                counts["brand"][d.brand] += 1
                counts["category"][d.category] += 1
                for name, value in d.attributes:
                    counts[f"attr.{name}"][value] += 1
            facets = {
                name: [FacetValue(v, n) for v, n in sorted(c.items(), key=lambda i: (-i[1], i[0]))]
                for name, c in counts.items()
            }
        return SearchResult(
            hits=[SearchHit(d.id, 1.0, d.title, d.brand, d.category, d.price) for d in page],
            total=len(found),
            facets=facets,
            next_cursor=f"o{end}" if end < len(found) else None,
        )


# --- the runtime, with every entry point counted ----------------------------------------


@dataclass
class Calls:
    counts: Counter[str] = field(default_factory=Counter)
    sizes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def wrap(self, owner: Any, name: str, key: str | None = None) -> None:
        original: Callable[..., Awaitable[Any]] = getattr(owner, name)
        counter = key or name

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[counter] += 1
            if args and isinstance(args[0], list | tuple):
                self.sizes[counter].append(len(args[0]))
            return await original(*args, **kwargs)

        setattr(owner, name, counted)

    def total(self) -> int:
        return sum(self.counts.values())

    def reset(self) -> None:
        self.counts.clear()
        self.sizes.clear()


@dataclass
class Env:
    client: httpx.AsyncClient
    shop: Shop
    stores: Stores
    calls: Calls
    index: MemorySearchIndex
    docs: dict[str, ProductDoc]  # every product, drafts included
    published: list[str]  # ids in order
    prices: dict[str, int]  # sku -> base price


async def _runtime(tmp_path: Path, search: bool = True) -> tuple[Shop, Stores, MemorySearchIndex]:
    stores = open_embedded_stores(str(tmp_path))
    await seed_stores(
        stores.catalog, stores.prices, stores.stock, PRODUCTS, 7, "EUR", progress=False
    )
    stock = [InventoryService(stores.stock, 900, 1000) for _ in range(2)]
    prices = [PricingService(stores.prices, "EUR", 1000) for _ in range(2)]
    carts = [CartService(CartLimits(5, 10), 3600, 1000) for _ in range(2)]
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
    index = MemorySearchIndex()
    shop = Shop(
        router,
        stores.catalog,
        "EUR",
        ShopLimits(price_cache_ttl_s=0),
        search_index=index if search else None,
    )
    return shop, stores, index


def _count(shop: Shop, stores: Stores) -> Calls:
    calls = Calls()
    for name in ("quotes", "stock", "search", "list_products", "product", "product_page"):
        calls.wrap(shop, name)
    for name in ("get_product", "get_products", "list_products", "product_for_sku"):
        calls.wrap(stores.catalog, name, f"catalog.{name}")
    return calls


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-only"])
async def env(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    shop, stores, index = await _runtime(tmp_path)
    items = list(generate(PRODUCTS, seed=7, currency="EUR"))
    prices = {p.sku: p.amount for item in items for p in item.prices}
    docs = {item.product["id"]: item.product for item in items}
    await index.upsert([d for item in items if (d := search_doc(item.product, prices)) is not None])
    published = sorted(pid for pid, doc in docs.items() if doc["status"] == "published")
    calls = _count(shop, stores)
    app = create_api(shop, _ready, fast_path=request.param, graphiql=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://feira") as client:
        yield Env(client, shop, stores, calls, index, docs, published, prices)
    await stores.close()


async def _ready() -> dict[str, Any]:
    return {}


async def gql(
    env: Env, query: str, variables: dict[str, Any] | None = None, status: int = 200
) -> dict[str, Any]:
    reply = await env.client.post("/graphql", json={"query": query, "variables": variables})
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = reply.json()
    return body


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


PRODUCT_FIELDS = """
  id title description brand category createdAt updatedAt
  attributes { name value }
  variants {
    sku images options { name value }
    price { base { amount currency } unit { amount currency } promotionId }
    stock { available inStock }
  }
"""

# --- products ---------------------------------------------------------------------------


async def test_product_with_variants_prices_and_stock(env: Env) -> None:
    pid = env.published[3]
    body = await gql(
        env,
        f"query($id: ID!) {{ product(id: $id) {{ {PRODUCT_FIELDS} }} }}",
        {"id": pid},
    )
    assert "errors" not in body
    product = body["data"]["product"]
    doc = env.docs[pid]
    assert product["id"] == pid
    assert product["title"] == doc["title"]
    assert product["brand"] == doc["brand"]
    assert product["category"] == doc["category"]
    assert product["createdAt"].startswith(doc["created_at"][:19])
    assert {(a["name"], a["value"]) for a in product["attributes"]} == set(
        doc["attributes"].items()
    )
    assert [v["sku"] for v in product["variants"]] == [v["sku"] for v in doc["variants"]]
    for variant, source in zip(product["variants"], doc["variants"], strict=True):
        assert {(o["name"], o["value"]) for o in variant["options"]} == set(
            source["options"].items()
        )
        assert variant["images"] == source["images"]
        rest_price = (await env.client.get(f"/v1/prices/{variant['sku']}")).json()
        assert variant["price"]["base"] == rest_price["base"]
        assert variant["price"]["unit"] == rest_price["unit"]
        assert variant["price"]["base"]["currency"] == "EUR"
        rest_stock = (await env.client.get(f"/v1/stock/{variant['sku']}")).json()
        assert variant["stock"] == {
            "available": rest_stock["available"],
            "inStock": rest_stock["in_stock"],
        }


async def test_missing_and_unpublished_products_are_null(env: Env) -> None:
    drafts = [pid for pid, doc in env.docs.items() if doc["status"] != "published"]
    assert drafts, "the demo catalog should hold a draft"
    body = await gql(
        env,
        'query($d: ID!, $p: ID!) { a: product(id: "p-nope") { id } '
        "b: product(id: $d) { id } c: product(id: $p) { id } }",
        {"d": drafts[0], "p": env.published[0]},
    )
    assert "errors" not in body
    assert body["data"] == {"a": None, "b": None, "c": {"id": env.published[0]}}
    # Three ids, one catalog read.
    assert env.calls.counts["catalog.get_products"] == 1


async def test_products_pagination_visits_every_published_product_once(env: Env) -> None:
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        body = await gql(
            env,
            "query($after: String) { products(first: 7, after: $after) "
            "{ nodes { id } pageInfo { hasNextPage endCursor } } }",
            {"after": after},
        )
        page = body["data"]["products"]
        seen += [node["id"] for node in page["nodes"]]
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            assert page["pageInfo"]["endCursor"] is None
            break
        after = page["pageInfo"]["endCursor"]
        assert after
    assert seen == env.published
    assert pages == math.ceil(len(env.published) / 7)


async def test_products_in_a_category(env: Env) -> None:
    body = await gql(env, '{ products(category: "garden", first: 100) { nodes { category } } }')
    nodes = body["data"]["products"]["nodes"]
    assert nodes
    assert all(n["category"].startswith("garden/") for n in nodes)
    expected = [p for p in env.published if env.docs[p]["category"].startswith("garden/")]
    assert len(nodes) == len(expected)


# --- search -----------------------------------------------------------------------------

SEARCH = """
query($q: String, $category: String, $brands: [String!], $attributes: [AttributeFilter!],
      $min: Int, $max: Int, $sort: SearchSort, $first: Int!, $after: String,
      $facets: Boolean!) {
  search(query: $q, category: $category, brands: $brands, attributes: $attributes,
         minPrice: $min, maxPrice: $max, sort: $sort, first: $first, after: $after,
         facets: $facets) {
    total
    nodes { id brand category }
    facets { name values { value count } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


async def test_search_pages_and_facets(env: Env) -> None:
    expected = await env.index.search(SearchQuery(category="home", limit=1000))
    expected_ids = [hit.id for hit in expected.hits]
    assert len(expected_ids) > 10
    seen: list[str] = []
    after: str | None = None
    first_page: dict[str, Any] | None = None
    while True:
        body = await gql(
            env,
            SEARCH,
            {"category": "home", "first": 4, "after": after, "facets": after is None},
        )
        assert "errors" not in body, body
        result = body["data"]["search"]
        first_page = first_page or result
        assert result["total"] == len(expected_ids)
        if after is not None:
            assert result["facets"] == []  # facets: false on later pages
        seen += [n["id"] for n in result["nodes"]]
        assert all(n["category"].startswith("home/") for n in result["nodes"])
        if not result["pageInfo"]["hasNextPage"]:
            break
        after = result["pageInfo"]["endCursor"]
    assert seen == expected_ids
    facets = {f["name"]: f["values"] for f in first_page["facets"]}
    assert sum(v["count"] for v in facets["brand"]) == len(expected_ids)
    assert sum(v["count"] for v in facets["category"]) == len(expected_ids)
    assert any(name.startswith("attr.") for name in facets)


async def test_search_filters_reach_the_index(env: Env) -> None:
    seen: list[SearchQuery] = []
    search = env.index.search

    async def spy(query: SearchQuery) -> SearchResult:
        seen.append(query)
        return await search(query)

    env.index.search = spy  # type: ignore[method-assign]
    brand = env.docs[env.published[0]]["brand"]
    body = await gql(
        env,
        SEARCH,
        {
            "q": " kettle ",
            "brands": [brand],
            "attributes": [{"name": "material", "values": ["glass", "steel"]}],
            "min": 100,
            "max": 50_000,
            "sort": "PRICE_DESC",
            "first": 3,
            "facets": False,
        },
    )
    assert "errors" not in body, body
    assert seen == [
        SearchQuery(
            text="kettle",
            brands=(brand,),
            attributes=(("material", ("glass", "steel")),),
            min_price=100,
            max_price=50_000,
            sort=SortOrder.PRICE_DESC,
            limit=3,
            facets=False,
        )
    ]


async def test_search_errors_are_domain_codes(env: Env) -> None:
    bad_cursor = await gql(env, '{ search(after: "nope") { total } }')
    assert bad_cursor["data"] == {"search": None}
    assert codes(bad_cursor) == ["invalid_argument"]
    assert bad_cursor["errors"][0]["path"] == ["search"]
    inverted = await gql(env, "{ search(minPrice: 500, maxPrice: 100) { total } }")
    assert codes(inverted) == ["invalid_argument"]
    assert "minPrice" in inverted["errors"][0]["message"]
    env.shop.search_index = None
    unavailable = await gql(env, "{ search { total } }")
    assert codes(unavailable) == ["search_unavailable"]


# --- batching: no N+1 -------------------------------------------------------------------


async def test_a_search_page_with_prices_and_stock_is_four_calls(env: Env) -> None:
    body = await gql(
        env,
        """{ search(first: 20, facets: false) {
              nodes { id variants { sku price { unit { amount } } stock { available } } }
           } }""",
    )
    assert "errors" not in body, body
    nodes = body["data"]["search"]["nodes"]
    assert len(nodes) == 20
    skus = [v["sku"] for n in nodes for v in n["variants"]]
    assert len(skus) > 20
    assert all(v["price"] and v["stock"] for n in nodes for v in n["variants"])
    assert dict(env.calls.counts) == {
        "search": 1,
        "catalog.get_products": 1,
        "quotes": 1,
        "stock": 1,
    }
    assert env.calls.sizes["catalog.get_products"] == [20]
    assert env.calls.sizes["quotes"] == [len(skus)]
    assert env.calls.sizes["stock"] == [len(skus)]
    # The products are now in the replica's cache: the same page again reads no catalog.
    env.calls.reset()
    await gql(env, "{ search(first: 20, facets: false) { nodes { id title } } }")
    assert dict(env.calls.counts) == {"search": 1}


async def test_a_big_page_splits_lookups_at_100_skus(env: Env) -> None:
    body = await gql(
        env,
        """{ products(first: 100) { nodes { variants { sku
              price { unit { amount } } stock { inStock } } } } }""",
    )
    assert "errors" not in body, body
    skus = {v["sku"] for n in body["data"]["products"]["nodes"] for v in n["variants"]}
    assert len(skus) > MAX_SKUS_PER_LOOKUP
    batches = math.ceil(len(skus) / MAX_SKUS_PER_LOOKUP)
    assert env.calls.counts["list_products"] == 1
    assert env.calls.counts["catalog.list_products"] == 1
    assert env.calls.counts["catalog.get_products"] == 0  # the listing primed the loader
    for name in ("quotes", "stock"):
        assert env.calls.counts[name] == batches
        assert sum(env.calls.sizes[name]) == len(skus)
        assert max(env.calls.sizes[name]) <= MAX_SKUS_PER_LOOKUP


async def test_products_asked_for_separately_still_batch(env: Env) -> None:
    # Aliased root fields resolve side by side: one catalog read for the products, then
    # one quotes call for every variant of all of them; a SKU asked for twice is sent once.
    a, b, c = env.published[:3]
    variant = "variants {{ sku price {{ {0} {{ amount }} }} }}"
    body = await gql(
        env,
        f"""{{ a: product(id: "{a}") {{ {variant.format("unit")} }}
             again: product(id: "{a}") {{ {variant.format("base")} }}
             b: product(id: "{b}") {{ {variant.format("unit")} }}
             c: product(id: "{c}") {{ {variant.format("unit")} }} }}""",
    )
    assert "errors" not in body, body
    skus = {v["sku"] for pid in (a, b, c) for v in env.docs[pid]["variants"]}
    assert dict(env.calls.counts) == {"catalog.get_products": 1, "quotes": 1}
    assert env.calls.sizes["catalog.get_products"] == [3]
    assert env.calls.sizes["quotes"] == [len(skus)]


# --- limits -----------------------------------------------------------------------------


async def test_a_costly_query_is_refused_before_any_call(env: Env) -> None:
    body = await gql(env, f"{{ search(first: 100) {{ nodes {{ {PRODUCT_FIELDS} }} }} }}", None, 400)
    assert body["data"] is None
    assert codes(body) == ["QUERY_TOO_COSTLY"]
    message = body["errors"][0]["message"]
    assert "cost" in message
    assert "limit is 5000" in message
    assert env.calls.total() == 0
    # The same fields on a page of 20 are fine.
    ok = await gql(env, f"{{ search(first: 20) {{ nodes {{ {PRODUCT_FIELDS} }} }} }}")
    assert "errors" not in ok


async def test_page_size_must_be_1_to_100(env: Env) -> None:
    for first in (0, 101, -5):
        body = await gql(
            env, "query($n: Int!) { products(first: $n) { nodes { id } } }", {"n": first}, 400
        )
        assert codes(body) == ["invalid_argument"]
        assert f"got {first}" in body["errors"][0]["message"]
        assert "between 1 and 100" in body["errors"][0]["message"]
    body = await gql(env, "{ search(first: 1000) { total } }", None, 400)
    assert codes(body) == ["invalid_argument"]
    assert env.calls.total() == 0


async def test_too_many_aliases_and_tokens(env: Env) -> None:
    aliased = " ".join(f'a{i}: product(id: "p-{i}") {{ id }}' for i in range(31))
    body = await gql(env, f"{{ {aliased} }}", None, 400)
    assert codes(body) == ["TOO_MANY_ALIASES"]
    assert "31 aliases" in body["errors"][0]["message"]
    huge = "{ " + " ".join(["x"] * 2_500) + " }"
    body = await gql(env, huge, None, 400)
    assert codes(body) == ["QUERY_TOO_LARGE"]
    assert "2000 tokens" in body["errors"][0]["message"]
    long = "{ __typename }" + " " * 25_000
    body = await gql(env, long, None, 400)
    assert codes(body) == ["QUERY_TOO_LARGE"]
    assert env.calls.total() == 0


async def test_fragments_cannot_make_the_analysis_exponential(env: Env) -> None:
    levels = 30
    fragments = [f"fragment F{levels} on Product {{ variants {{ sku }} }}"]
    fragments += [f"fragment F{i} on Product {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)]
    query = '{ product(id: "p-0000001") { ...F0 } } ' + " ".join(fragments)
    started = time.perf_counter()
    body = await gql(env, query, None, 400)
    assert time.perf_counter() - started < 5
    assert codes(body) == ["QUERY_TOO_COSTLY"]
    assert env.calls.total() == 0


async def test_depth_limit() -> None:
    deep = '{ product(id: "p-1") { variants { price { unit { amount } } } } }'  # depth 5
    calls = Calls()
    for limit, refused in ((4, True), (5, False)):
        schema = build_schema(QueryLimits(max_depth=limit))
        shop = _NoShop(calls)
        result = await schema.execute(deep, context_value=RequestContext(shop))  # type: ignore[arg-type]
        if refused:
            assert result.data is None
            assert result.errors is not None
            assert [e.extensions for e in result.errors] == [{"code": "QUERY_TOO_DEEP"}]
            assert result.errors[0].message == "query depth is 5; the limit is 4"
            assert calls.total() == 0
        else:
            assert result.errors is None
            assert result.data == {"product": None}


async def test_introspection_is_not_limited_by_depth(env: Env) -> None:
    # GraphiQL's introspection nests ofType far deeper than any data query may go.
    of_type = "name"
    for _ in range(12):
        of_type = f"kind name ofType {{ {of_type} }}"
    body = await gql(env, f"{{ __schema {{ types {{ fields {{ type {{ {of_type} }} }} }} }} }}")
    assert "errors" not in body


class _NoShop:
    """A Shop stand-in that answers nothing and counts every attempt."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def published_products(self, ids: Sequence[str]) -> dict[str, ProductDoc]:
        self.calls.counts["get_products"] += 1
        return {}


# --- errors and transport ---------------------------------------------------------------


async def test_domain_errors_carry_their_code(env: Env) -> None:
    body = await gql(env, '{ products(after: "!!") { nodes { id } } }')
    assert body["data"] == {"products": None}
    assert codes(body) == ["invalid_argument"]
    assert body["errors"][0]["path"] == ["products"]
    assert "cursor" in body["errors"][0]["message"]
    body = await gql(env, '{ products(category: "Not A Path") { nodes { id } } }')
    assert codes(body) == ["invalid_argument"]


async def test_unexpected_errors_are_masked_and_logged(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(skus: Sequence[str], **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("secret database password in a message")

    env.shop.quotes = broken  # type: ignore[method-assign]
    pid = next(p for p in env.published if len(env.docs[p]["variants"]) > 1)
    reply = await env.client.post(
        "/graphql",
        json={
            "query": f'{{ product(id: "{pid}") {{ title variants {{ sku price {{ '
            "unit { amount } } stock { available } } } }"
        },
    )
    assert reply.status_code == 200
    assert "secret" not in reply.text
    assert "Traceback" not in reply.text
    body = reply.json()
    product = body["data"]["product"]
    assert product["title"] == env.docs[pid]["title"]
    assert all(v["price"] is None and v["stock"] is not None for v in product["variants"])
    assert set(codes(body)) == {"INTERNAL_ERROR"}
    assert {e["message"] for e in body["errors"]} == {"internal error"}
    assert len(body["errors"]) == len(product["variants"])
    # One failed lookup failed every variant's price: logged once, with its traceback.
    logged = [r for r in caplog.records if r.exc_info and "secret" in str(r.exc_info[1])]
    assert len(logged) == 1


async def test_an_error_outside_the_resolvers_is_masked_too(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> list[Any]:
        raise RuntimeError("secret detail of a failing extension")

    monkeypatch.setattr("api.graphql.limits.check_operation", broken)
    reply = await env.client.post("/graphql", json={"query": "{ __typename }"})
    assert "secret" not in reply.text
    assert reply.status_code == 500
    assert reply.json()["errors"] == [
        {"message": "internal error", "extensions": {"code": "INTERNAL_ERROR"}}
    ]
    assert any("secret" in str(r.exc_info) for r in caplog.records if r.exc_info)


async def test_malformed_requests_are_400_with_errors(env: Env) -> None:
    body = await gql(env, "{ product(id: ", None, 400)
    assert codes(body) == ["GRAPHQL_PARSE_FAILED"]
    assert body["errors"][0]["message"].startswith("Syntax Error")
    body = await gql(env, '{ product(id: "x") { nope } }', None, 400)
    assert codes(body) == ["GRAPHQL_VALIDATION_FAILED"]
    body = await gql(
        env, "query($n: Int!) { products(first: $n) { nodes { id } } }", {"n": "many"}, 400
    )
    assert codes(body) == ["GRAPHQL_VALIDATION_FAILED"]
    not_json = await env.client.post(
        "/graphql", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400
    assert not_json.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    no_query = await env.client.post("/graphql", json={})
    assert no_query.status_code == 400
    mutation = await gql(env, "mutation { nope }", None, 400)
    assert mutation["errors"]
    assert env.calls.total() == 0


async def test_queries_by_get(env: Env) -> None:
    pid = env.published[1]
    reply = await env.client.get(
        "/graphql", params={"query": f'{{ product(id: "{pid}") {{ id }} }}'}
    )
    assert reply.status_code == 200
    assert reply.json() == {"data": {"product": {"id": pid}}}


async def test_graphiql_is_off_by_default(env: Env) -> None:
    html = await env.client.get("/graphql", headers={"accept": "text/html"})
    assert html.status_code == 404
    assert html.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    bare = await env.client.get("/graphql", headers={"accept": "application/json"})
    assert bare.status_code == 400
    assert bare.json()["errors"]


async def test_graphiql_when_enabled(tmp_path: Path) -> None:
    shop, stores, _ = await _runtime(tmp_path)
    try:
        app = create_api(shop, _ready, graphiql=True)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://feira") as client:
            page = await client.get("/graphql", headers={"accept": "text/html"})
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert "graphiql" in page.text.lower()
            # The API itself is unchanged.
            reply = await client.post("/graphql", json={"query": "{ __typename }"})
            assert reply.json() == {"data": {"__typename": "Query"}}
    finally:
        await stores.close()
