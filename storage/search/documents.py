"""From a catalog product and its prices to the one record both search backends index."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from storage.errors import StoreIntegrityError
from storage.records import ProductDoc, SearchDoc

# Names are joined to values as "name=value" for filtering and facets (see
# ``attribute_term``), so a name holding "=" could not be told apart from its value.
ATTRIBUTE_SEPARATOR = "="


def attribute_term(name: str, value: str) -> str:
    """One attribute as the single keyword both backends filter and count on."""
    return f"{name}{ATTRIBUTE_SEPARATOR}{value}"


def split_attribute_term(term: str) -> tuple[str, str]:
    name, _, value = term.partition(ATTRIBUTE_SEPARATOR)
    return name, value


# Sort keys hold prices below 2**62 (``storage.search.keys``); no shop gets near it.
MAX_PRICE = 2**62 - 1


def check_search_doc(doc: SearchDoc) -> None:
    """Refuse, before anything is written, a record no backend should index."""
    if not doc.id:
        raise StoreIntegrityError("search document without an id")
    if doc.price is not None and not 0 <= doc.price <= MAX_PRICE:
        raise StoreIntegrityError(f"{doc.id}: price {doc.price} out of range")


def _pairs(source: Any) -> Iterable[tuple[str, str]]:
    # Catalog documents have a flexible schema: skip what is not a flat str -> scalar map
    # rather than fail the whole product; a nested value has no single facet value.
    if not isinstance(source, Mapping):
        return
    for name, value in source.items():
        if not isinstance(name, str) or not name or ATTRIBUTE_SEPARATOR in name:
            continue
        if isinstance(value, bool) or value is None or isinstance(value, Mapping | list):
            continue
        text = str(value).strip()
        if text:
            yield name, text


def search_doc(product: ProductDoc, prices: Mapping[str, int]) -> SearchDoc | None:
    """The search record of ``product``, or None when it must not be searchable.

    ``prices`` maps SKU to amount (minor units, one currency); the product's price is the
    lowest among its variants that have one, None when none has. Attributes are the
    product's attributes plus every variant option, as sorted unique (name, value) pairs.
    The catalog's required keys (see ``ProductDoc``) must be present.
    """
    if product.get("status") != "published":
        return None
    variants = [v for v in product.get("variants") or () if isinstance(v, Mapping)]
    skus = tuple(str(v["sku"]) for v in variants if v.get("sku"))
    priced = [prices[sku] for sku in skus if sku in prices]
    attributes = set(_pairs(product.get("attributes")))
    for variant in variants:
        attributes.update(_pairs(variant.get("options")))
    return SearchDoc(
        id=str(product["id"]),
        title=str(product["title"]),
        description=str(product.get("description") or ""),
        brand=str(product["brand"]),
        category=str(product["category"]),
        attributes=tuple(sorted(attributes)),
        price=min(priced) if priced else None,
        created_at=str(product["created_at"]),
        merchant_id=str(product["merchant_id"]),
        skus=skus,
    )
