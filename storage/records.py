"""Plain records that cross the storage interfaces. No behaviour, no driver types."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# A catalog product is a JSON document with a flexible schema. Required keys:
# id, title, brand, category (path "a/b/c"), status, merchant_id, variants (list of
# {"sku": str, "options": dict, "images": list[str]}), attributes (dict),
# created_at, updated_at (ISO 8601 strings).
ProductDoc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class PriceRecord:
    sku: str
    amount: int  # minor units
    currency: str
    category: str  # category path of the SKU's product, for category promotions


@dataclass(frozen=True, slots=True)
class PromotionRecord:
    id: str
    name: str
    kind: str  # "percent" | "fixed"
    value: int  # basis points for percent, minor units for fixed
    currency: str | None  # required for fixed
    sku: str | None  # exactly one of sku / category is set
    category: str | None
    starts_at: float  # unix seconds
    ends_at: float


@dataclass(frozen=True, slots=True)
class StockRecord:
    sku: str
    on_hand: int
    reserved: int
    sold: int


@dataclass(frozen=True, slots=True)
class ReservationRecord:
    id: str
    sku: str
    quantity: int
    expires_at: float  # unix seconds


@dataclass(frozen=True, slots=True)
class StockChange:
    """One acknowledged stock operation, written to the journal with the resulting level."""

    op_id: str
    sku: str
    kind: str  # receive | adjust | reserve | release | commit | expire
    quantity: int
    reservation_id: str | None
    at: float


@dataclass(frozen=True, slots=True)
class StockWrite:
    """Everything one batch changed, persisted in one transaction (group commit)."""

    levels: tuple[StockRecord, ...]
    upsert_reservations: tuple[ReservationRecord, ...]
    delete_reservations: tuple[str, ...]
    journal: tuple[StockChange, ...]


# --- search ---------------------------------------------------------------------------


class SortOrder(StrEnum):
    RELEVANCE = "relevance"
    PRICE_ASC = "price_asc"
    PRICE_DESC = "price_desc"
    NEWEST = "newest"


@dataclass(frozen=True, slots=True)
class SearchDoc:
    """What the search index holds for one published product (built by
    ``storage.search.documents.search_doc``). Only published products are indexed."""

    id: str
    title: str
    description: str
    brand: str
    category: str  # path "a/b/c"; a filter on "a/b" matches it
    attributes: tuple[tuple[str, str], ...]  # (name, value), sorted; also option values
    price: int | None  # lowest variant price, minor units, in the index's currency
    created_at: str  # ISO 8601 UTC, "...Z"
    merchant_id: str
    skus: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A validated search. Empty ``text`` matches every product (browse with filters).

    Filters combine with AND; several values for one facet (brands, one attribute's
    values) combine with OR. Facet counts are over the query with every filter applied.
    """

    text: str = ""
    category: str | None = None
    brands: tuple[str, ...] = ()
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    min_price: int | None = None  # inclusive, minor units
    max_price: int | None = None  # inclusive
    sort: SortOrder = SortOrder.RELEVANCE
    cursor: str | None = None  # opaque, from a previous SearchResult with the same query
    limit: int = 20
    facets: bool = True


@dataclass(frozen=True, slots=True)
class FacetValue:
    value: str
    count: int


@dataclass(frozen=True, slots=True)
class SearchHit:
    id: str
    score: float
    title: str
    brand: str
    category: str
    price: int | None


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[SearchHit]
    total: int  # matches for the query, capped by the backend's exact-count limit
    # "brand", "category" (full paths) and "attr.<name>" -> values by count desc, then value
    facets: dict[str, list[FacetValue]]
    next_cursor: str | None  # None on the last page


# --- orders: outbox and idempotency (issue 5) ------------------------------------------
# Orders themselves cross the OrderStore as actors.domain.orders.Order.


@dataclass(frozen=True, slots=True)
class NewOutboxEvent:
    """An event to append to the outbox with an order change, in the same transaction.
    The store numbers it and stamps it with the order's id and ``updated_at``."""

    kind: str  # e.g. "order.created", "order.paid"
    payload: dict[str, Any]  # JSON object


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int  # monotonic: a later commit of the same order never has a smaller id
    order_id: str
    kind: str
    payload: dict[str, Any]
    created_at: float  # unix seconds
    attempts: int = 1  # how many times this consumer has claimed it, this claim included


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The first answer to a request with a client's idempotency key.

    ``request_hash`` tells a retry (same body) from a misuse (same key, other body).
    Expired records (``expires_at <= now``) are treated as absent; callers keep keys at
    least 24 h.
    """

    scope: str  # what the key is unique within, e.g. "checkout:<customer or cart>"
    key: str
    request_hash: str
    response: dict[str, Any]  # the JSON body answered
    status_code: int
    order_id: str | None
    created_at: float  # unix seconds
    expires_at: float
