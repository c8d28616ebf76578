"""What every CatalogStore adapter checks the same way, before it touches its store.

Documents (``prepare``) and call arguments (``page_after``, ``check_*``) are validated
here, so a bad document or argument fails with the same error whichever backend is
configured. The rules every adapter keeps:

- A stored product is a JSON object with non-empty string ``id``, ``category``,
  ``merchant_id`` and ``updated_at``, a ``status`` of draft|published|archived, and
  ``variants`` (optional) a list of objects each with a non-empty string ``sku``. It must
  be JSON-serialisable and is returned exactly as its JSON form (orjson's: datetimes come
  back as ISO strings). The top-level keys in ``RESERVED_KEYS`` belong to the stores
  (the MongoDB adapter keeps its own fields beside the document's) and are refused.
- ``put_products`` is all or nothing for a refused document: one bad document fails the
  whole call (StoreIntegrityError) and nothing of that call is written. (SQLite is all or
  nothing for any failure; MongoDB, without transactions, can be left part-written when
  the server fails part way: see storage/mongo/catalog.py.)
- The same id twice in one call: the later document wins.
- A SKU belongs to at most one product, judged on the state after the call: a call is
  refused whole if afterwards two products would list one SKU. So a document may not
  claim a SKU that a stored product keeps, nor one that another document of the call
  claims, nor list one SKU twice. To move a SKU, rewrite the product that gives it up
  without it in the same call (or an earlier one). A product rewritten without a variant
  stops resolving that variant's SKU at once.
- Every document written takes the next change sequence number: strictly increasing,
  never reused. ``changes_since`` returns each product once, at its newest number.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from storage.cursors import decode_cursor
from storage.errors import StoreIntegrityError
from storage.records import ProductDoc

STATUSES = ("draft", "published", "archived")
_STATUS_SET = frozenset(STATUSES)
# Top-level keys a store may keep beside a document's own (the MongoDB adapter does).
RESERVED_KEYS = frozenset({"_id", "_seq", "_category_path", "_skus"})
MAX_PAGE = 100
MAX_CHANGES = 10_000


class ProductRow(NamedTuple):
    """A validated document and the fields stores index it by."""

    id: str
    category: str
    status: str
    merchant_id: str
    updated_at: str
    json: str  # the document as stored
    skus: list[str]


def _text(doc: ProductDoc, key: str, product_id: object) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise StoreIntegrityError(
            f"product {product_id!r}: {key!r} must be a non-empty string, got {value!r}"
        )
    return value


def _fields(doc: ProductDoc, product_id: str) -> tuple[str, str, str, str]:
    """The slow path of ``prepare``: category, status, merchant_id and updated_at, or
    StoreIntegrityError naming the first one that is wrong."""
    status = _text(doc, "status", product_id)
    if status not in STATUSES:
        raise StoreIntegrityError(
            f"product {product_id!r}: status must be one of {', '.join(STATUSES)}, got {status!r}"
        )
    category = _text(doc, "category", product_id)
    return (
        category,
        status,
        _text(doc, "merchant_id", product_id),
        _text(doc, "updated_at", product_id),
    )


def _skus(doc: ProductDoc, product_id: str) -> list[str]:
    variants = doc.get("variants", [])
    if not isinstance(variants, list):
        raise StoreIntegrityError(f"product {product_id!r}: 'variants' must be a list")
    skus: list[str] = []
    for variant in variants:
        sku = variant.get("sku") if isinstance(variant, dict) else None
        if not isinstance(sku, str) or not sku:
            raise StoreIntegrityError(f"product {product_id!r}: every variant needs a 'sku'")
        skus.append(sku)
    if len(skus) > 1 and len(set(skus)) != len(skus):
        twice = next(sku for sku in skus if skus.count(sku) > 1)
        raise StoreIntegrityError(f"product {product_id!r}: lists SKU {twice!r} twice")
    return skus


def prepare(doc: ProductDoc) -> ProductRow:
    """Validate one document for storage; StoreIntegrityError says what is wrong.

    Bulk loads call this a million times, so the common case is tested inline.
    """
    if not isinstance(doc, dict):
        raise StoreIntegrityError(f"a product must be an object, got {type(doc).__name__}")
    get = doc.get
    product_id = get("id")
    if type(product_id) is not str or not product_id:
        product_id = _text(doc, "id", product_id)
    try:
        text = orjson.dumps(doc).decode()
    except orjson.JSONEncodeError as exc:
        raise StoreIntegrityError(f"product {product_id!r}: not JSON-serialisable") from exc
    # RESERVED_KEYS spelled out: four lookups cost less than a set operation over the keys.
    if "_id" in doc or "_seq" in doc or "_category_path" in doc or "_skus" in doc:
        key = min(RESERVED_KEYS.intersection(doc))
        raise StoreIntegrityError(
            f"product {product_id!r}: top-level key {key!r} is reserved for the store"
        )
    status = get("status")
    category = get("category")
    merchant_id = get("merchant_id")
    updated_at = get("updated_at")
    if (
        type(status) is str
        and status in _STATUS_SET
        and type(category) is str
        and category
        and type(merchant_id) is str
        and merchant_id
        and type(updated_at) is str
        and updated_at
    ):
        fields = (category, status, merchant_id, updated_at)
    else:
        fields = _fields(doc, product_id)
    return ProductRow(product_id, *fields, text, _skus(doc, product_id))


def sku_taken(sku: str, claimant: str, holder: str) -> StoreIntegrityError:
    return StoreIntegrityError(
        f"product {claimant!r}: SKU {sku!r} belongs to product {holder!r}; "
        "a SKU belongs to one product"
    )


# --- call arguments --------------------------------------------------------------------


def page_after(cursor: str | None, limit: int) -> str:
    """Check a page request; the id the page starts after ('' sorts before every id)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    return "" if cursor is None else decode_cursor(cursor)


def check_category(category: str | None) -> str | None:
    """A category filter without its outer slashes: 'home/kitchen/' is 'home/kitchen'."""
    if category is None:
        return None
    category = category.strip("/")
    if not category:
        raise ValueError("category must be a non-empty path such as 'home/kitchen'")
    return category


def check_merchant(merchant_id: str, status: str | None) -> None:
    if not isinstance(merchant_id, str) or not merchant_id:
        raise ValueError(f"merchant_id must be a non-empty string, got {merchant_id!r}")
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")


def check_changes(after_seq: int, limit: int) -> None:
    if after_seq < 0:
        raise ValueError(f"after_seq must be >= 0, got {after_seq}")
    if not 1 <= limit <= MAX_CHANGES:
        raise ValueError(f"limit must be between 1 and {MAX_CHANGES}, got {limit}")
