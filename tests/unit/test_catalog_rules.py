"""Catalog rules: validation of merchant input and the product lifecycle."""

from __future__ import annotations

from typing import Any

import pytest

from actors.domain.catalog import (
    TRANSITIONS,
    ProductStatus,
    edited,
    new_product,
    product_fields,
    transition,
)
from actors.domain.errors import DomainError, ErrorCode

NOW = "2026-11-29T10:00:00.000000Z"
LATER = "2026-11-29T11:00:00.000000Z"


def raw(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "title": "Enamel Kettle",
        "brand": "Kestrel",
        "category": "home/kitchen/kettles",
        "attributes": {"material": "steel"},
        "variants": [{"sku": "K-1", "options": {"color": "red"}, "images": ["/a.jpg"]}],
    }
    return base | changes


def test_new_product_is_a_draft_owned_by_the_caller() -> None:
    doc = new_product(raw(), "m-001", NOW)
    assert doc["status"] == "draft"
    assert doc["merchant_id"] == "m-001"
    assert doc["id"].startswith("p-")
    assert doc["created_at"] == doc["updated_at"] == NOW
    assert doc["description"] == ""


def test_a_document_cannot_claim_another_merchant_or_timestamps() -> None:
    for field in ("merchant_id", "created_at", "seq"):
        with pytest.raises(DomainError) as caught:
            new_product(raw(**{field: "x"}), "m-001", NOW)
        assert caught.value.code == ErrorCode.PRODUCT_INVALID
        assert field in caught.value.message


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"brand": None}, "brand"),
        ({"category": "Home/Kitchen"}, "category"),
        ({"category": "home//kitchen"}, "category"),
        ({"variants": []}, "variants"),
        ({"variants": [{"sku": "a b"}]}, "variants[0]"),
        ({"variants": [{"sku": "A"}, {"sku": "A"}]}, "variants[1]"),
        ({"variants": [{"sku": "A", "images": "x.jpg"}]}, "variants[0]"),
        ({"attributes": {"Bad Name": "x"}}, "attributes"),
        ({"attributes": {"material": 3}}, "attributes"),
        ({"id": "has space"}, "id"),
        ({"status": "archived"}, "status"),
    ],
)
def test_bad_input_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(DomainError) as caught:
        new_product(raw(**changes), "m-001", NOW)
    assert caught.value.code == ErrorCode.PRODUCT_INVALID
    assert caught.value.details["field"] == field


def test_not_an_object() -> None:
    with pytest.raises(DomainError):
        product_fields(["a list"])


def test_edit_replaces_only_given_fields_and_keeps_identity() -> None:
    doc = new_product(raw(id="p-1"), "m-001", NOW)
    after = edited(doc, {"title": "Copper Kettle"}, LATER)
    assert after["title"] == "Copper Kettle"
    assert after["brand"] == "Kestrel"
    assert (after["id"], after["merchant_id"], after["created_at"]) == ("p-1", "m-001", NOW)
    assert after["updated_at"] == LATER
    assert doc["title"] == "Enamel Kettle"  # the input is not mutated


@pytest.mark.parametrize("changes", [{}, {"status": "published"}, {"merchant_id": "m-002"}])
def test_edit_refuses_empty_or_fixed_fields(changes: dict[str, Any]) -> None:
    doc = new_product(raw(), "m-001", NOW)
    with pytest.raises(DomainError) as caught:
        edited(doc, changes, LATER)
    assert caught.value.code == ErrorCode.PRODUCT_INVALID


def test_every_transition_follows_the_table() -> None:
    for start in ProductStatus:
        for target in ProductStatus:
            doc = {**new_product(raw(), "m-001", NOW), "status": start.value}
            if start == target:
                assert transition(doc, target, LATER) is doc
            elif target in TRANSITIONS[start]:
                assert transition(doc, target, LATER)["status"] == target.value
            else:
                with pytest.raises(DomainError) as caught:
                    transition(doc, target, LATER)
                assert caught.value.code == ErrorCode.PRODUCT_CONFLICT
    assert ProductStatus.DRAFT not in {t for ts in TRANSITIONS.values() for t in ts}
