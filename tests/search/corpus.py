"""Test documents and a brute-force reference for what search must return."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from storage.demo import generate
from storage.records import FacetValue, ProductDoc, SearchDoc, SearchQuery, SortOrder
from storage.search.documents import search_doc
from storage.search.keys import created_micros


def demo_products(n: int) -> list[tuple[ProductDoc, dict[str, int]]]:
    return [(item.product, {p.sku: p.amount for p in item.prices}) for item in generate(n, seed=7)]


def demo_docs(n: int) -> list[SearchDoc]:
    docs = [search_doc(product, prices) for product, prices in demo_products(n)]
    return [doc for doc in docs if doc is not None]


def hand(
    product_id: str,
    title: str,
    *,
    category: str = "home/furniture/benches",
    brand: str = "Handmade",
    description: str = "",
    price: int | None = 5_000,
    attributes: tuple[tuple[str, str], ...] = (),
    created_at: str = "2022-06-01T12:00:00Z",
) -> SearchDoc:
    return SearchDoc(
        id=product_id,
        title=title,
        description=description,
        brand=brand,
        category=category,
        attributes=tuple(sorted(attributes)),
        price=price,
        created_at=created_at,
        merchant_id="m-900",
        skus=(f"SKU-{product_id}",),
    )


# Hand-written products for the cases the demo catalog does not cover.
HAND_DOCS: tuple[SearchDoc, ...] = (
    # Matches "kettle" only through a typo (one edit): must rank below every real kettle.
    hand("h-settle", "Oak Settle", description="A settle bench for the hall."),
    # Shares "home/kitchen" as a string prefix but not as a path segment.
    hand("h-kitchenware", "Enamel Jug", category="home/kitchenware", price=1_500),
    # No price: last in both price orders, outside every price range.
    hand("h-noprice", "Mystery Box", category="toys/outdoor", price=None),
    # Same price and same creation time: only the id orders them.
    *(
        hand(
            f"h-tie-{n}",
            "Tie Stool",
            category="home/furniture/chairs",
            price=4_299,
            created_at="2030-01-01T00:00:00Z",
            attributes=(("color", "teal"), ("material", "oak")),
        )
        for n in (3, 1, 2)
    ),
)

# ---------------------------------------------------------------------------- reference


def in_category(doc: SearchDoc, category: str) -> bool:
    wanted = [p for p in category.split("/") if p]
    return doc.category.split("/")[: len(wanted)] == wanted


def passes_filters(doc: SearchDoc, query: SearchQuery) -> bool:
    if query.category is not None and not in_category(doc, query.category):
        return False
    if query.brands and doc.brand not in query.brands:
        return False
    held = set(doc.attributes)
    names: dict[str, set[str]] = {}
    for name, values in query.attributes:
        names.setdefault(name, set()).update(values)
    for name, wanted in names.items():
        if not any((name, value) in held for value in wanted):
            return False
    if query.min_price is not None or query.max_price is not None:
        if doc.price is None:
            return False
        if query.min_price is not None and doc.price < query.min_price:
            return False
        if query.max_price is not None and doc.price > query.max_price:
            return False
    return True


def sort_key(doc: SearchDoc, sort: SortOrder) -> tuple[object, ...]:
    if sort is SortOrder.PRICE_ASC:
        return (doc.price is None, doc.price or 0, doc.id)
    if sort is SortOrder.PRICE_DESC:
        return (doc.price is None, -(doc.price or 0), doc.id)
    if sort is SortOrder.NEWEST:
        return (-created_micros(doc.created_at), doc.id)
    return (doc.id,)


def browse(docs: Iterable[SearchDoc], query: SearchQuery) -> list[str]:
    """Ids a text-less query must return, in order."""
    matching = [doc for doc in docs if passes_filters(doc, query)]
    return [doc.id for doc in sorted(matching, key=lambda d: sort_key(d, query.sort))]


def facets(docs: Iterable[SearchDoc], limit: int = 100) -> dict[str, list[FacetValue]]:
    counts: dict[str, Counter[str]] = {"brand": Counter(), "category": Counter()}
    for doc in docs:
        if doc.brand:
            counts["brand"][doc.brand] += 1
        if doc.category:
            counts["category"][doc.category] += 1
        for name, value in doc.attributes:
            counts.setdefault(f"attr.{name}", Counter())[value] += 1
    return {
        name: sorted(
            (FacetValue(value, count) for value, count in counter.items()),
            key=lambda v: (-v.count, v.value),
        )[:limit]
        for name, counter in counts.items()
        if counter or name in ("brand", "category")
    }
