from __future__ import annotations

from typing import Any

import pytest

from storage.demo import generate
from storage.records import SearchDoc
from storage.search.documents import attribute_term, search_doc, split_attribute_term


def product(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "p-1",
        "title": "Sturdy Acme Kettle",
        "description": "A kettle.",
        "brand": "Acme",
        "category": "home/kitchen/kettles",
        "status": "published",
        "merchant_id": "m-001",
        "attributes": {"material": "glass", "wattage": "2200 W"},
        "variants": [
            {"sku": "S-1", "options": {"color": "red", "size": "1.7 l"}, "images": []},
            {"sku": "S-2", "options": {"color": "black", "size": "1.7 l"}, "images": []},
            {"sku": "S-3", "options": {"color": "red", "size": "1.0 l"}, "images": []},
        ],
        "created_at": "2024-01-02T03:04:05Z",
        "updated_at": "2024-02-02T03:04:05Z",
    }
    doc.update(changes)
    return doc


def test_a_published_product_becomes_a_search_doc() -> None:
    assert search_doc(product(), {"S-1": 2_999, "S-2": 2_499, "S-3": 3_499}) == SearchDoc(
        id="p-1",
        title="Sturdy Acme Kettle",
        description="A kettle.",
        brand="Acme",
        category="home/kitchen/kettles",
        attributes=(
            ("color", "black"),
            ("color", "red"),
            ("material", "glass"),
            ("size", "1.0 l"),
            ("size", "1.7 l"),
            ("wattage", "2200 W"),
        ),
        price=2_499,
        created_at="2024-01-02T03:04:05Z",
        merchant_id="m-001",
        skus=("S-1", "S-2", "S-3"),
    )


@pytest.mark.parametrize("status", ["draft", "archived", "", None])
def test_unpublished_products_are_not_searchable(status: str | None) -> None:
    assert search_doc(product(status=status), {"S-1": 100}) is None


def test_the_price_is_the_lowest_among_priced_variants() -> None:
    doc = search_doc(product(), {"S-3": 900, "S-1": 1_200, "OTHER": 1})
    assert doc is not None
    assert doc.price == 900


def test_no_priced_variant_means_no_price() -> None:
    doc = search_doc(product(), {"OTHER": 1})
    assert doc is not None
    assert doc.price is None


def test_a_product_without_variants() -> None:
    doc = search_doc(product(variants=[]), {})
    assert doc is not None
    assert (doc.skus, doc.price) == ((), None)
    assert doc.attributes == (("material", "glass"), ("wattage", "2200 W"))


def test_option_values_duplicating_attributes_appear_once() -> None:
    doc = search_doc(
        product(attributes={"color": "red"}, variants=[{"sku": "S", "options": {"color": "red"}}]),
        {},
    )
    assert doc is not None
    assert doc.attributes == (("color", "red"),)


def test_values_that_cannot_be_facets_are_skipped() -> None:
    doc = search_doc(
        product(
            attributes={
                "": "nameless",
                "a=b": "ambiguous",
                "nested": {"x": 1},
                "listed": [1, 2],
                "nothing": None,
                "blank": "  ",
                "flag": True,
                "count": 3,
            },
            variants=[{"sku": "S", "options": "not a mapping"}, "not a variant"],
        ),
        {"S": 5},
    )
    assert doc is not None
    assert doc.attributes == (("count", "3"),)
    assert (doc.skus, doc.price) == (("S",), 5)


def test_attribute_terms_round_trip() -> None:
    term = attribute_term("size", "1=2 l")
    assert term == "size=1=2 l"
    assert split_attribute_term(term) == ("size", "1=2 l")


def test_demo_catalog_drafts_are_dropped_and_the_rest_kept() -> None:
    items = list(generate(300))
    docs = [search_doc(i.product, {p.sku: p.amount for p in i.prices}) for i in items]
    published = [i for i in items if i.product["status"] == "published"]
    assert [d.id for d in docs if d is not None] == [i.product["id"] for i in published]
    for item, doc in zip(items, docs, strict=True):
        if doc is not None:
            assert doc.price == min(p.amount for p in item.prices)
            assert doc.attributes == tuple(sorted(set(doc.attributes)))
