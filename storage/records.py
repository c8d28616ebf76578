"""Plain records that cross the storage interfaces. No behaviour, no driver types."""

from __future__ import annotations

from dataclasses import dataclass
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
