"""One interface per store. Callers depend on these, never on an adapter."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from storage.records import (
    PriceRecord,
    ProductDoc,
    PromotionRecord,
    ReservationRecord,
    SearchDoc,
    SearchQuery,
    SearchResult,
    StockRecord,
    StockWrite,
)


class CatalogStore(Protocol):
    async def get_product(self, product_id: str) -> ProductDoc | None: ...

    async def get_products(self, product_ids: Sequence[str]) -> dict[str, ProductDoc]: ...

    async def product_for_sku(self, sku: str) -> ProductDoc | None: ...

    async def list_products(
        self, *, category: str | None, cursor: str | None, limit: int
    ) -> tuple[list[ProductDoc], str | None]:
        """Published products ordered by id; ``category`` matches a path prefix by segment."""
        ...

    async def list_merchant_products(
        self, merchant_id: str, *, status: str | None, cursor: str | None, limit: int
    ) -> tuple[list[ProductDoc], str | None]:
        """One merchant's products in any status (or only ``status``), ordered by id."""
        ...

    async def put_products(self, docs: Iterable[ProductDoc]) -> int:
        """Insert or replace whole documents. Each write takes the next change sequence
        number, so ``changes_since`` sees it."""
        ...

    async def changes_since(self, after_seq: int, limit: int) -> list[tuple[int, ProductDoc]]:
        """Products written after ``after_seq``, in sequence order, every status included:
        the feed the search index follows. A product written twice appears once, at its
        latest sequence number."""
        ...

    async def last_seq(self) -> int:
        """The newest change sequence number, 0 when nothing was ever written."""
        ...

    async def count_products(self) -> int: ...

    async def close(self) -> None: ...


class PriceStore(Protocol):
    async def get_prices(self, skus: Sequence[str]) -> dict[str, PriceRecord]: ...

    async def put_prices(self, records: Iterable[PriceRecord]) -> int: ...

    async def list_promotions(self) -> list[PromotionRecord]: ...

    async def put_promotion(self, promotion: PromotionRecord) -> None: ...

    async def delete_promotion(self, promotion_id: str) -> bool: ...

    async def close(self) -> None: ...


class StockStore(Protocol):
    async def load(
        self, skus: Sequence[str]
    ) -> dict[str, tuple[StockRecord, list[ReservationRecord]]]: ...

    async def write(self, change: StockWrite) -> None:
        """Persist one batch atomically; raises StoreUnavailable and persists nothing on failure."""
        ...

    async def put_levels(self, records: Iterable[StockRecord]) -> int: ...

    async def applied_ops(self, op_ids: Sequence[str]) -> set[str]:
        """Which of ``op_ids`` the journal holds: a retry of one must not apply again."""
        ...

    async def journal_for(self, sku: str) -> list[tuple[str, str, int]]:
        """(op_id, kind, quantity) for a SKU in write order; for audits and tests."""
        ...

    async def close(self) -> None: ...


class SearchIndex(Protocol):
    """Full-text product search. Writes become visible after ``refresh``."""

    async def ensure_index(self) -> None:
        """Create the index (mapping, analysers) if it does not exist."""
        ...

    async def upsert(self, docs: Sequence[SearchDoc]) -> int: ...

    async def delete(self, product_ids: Sequence[str]) -> int: ...

    async def refresh(self) -> None: ...

    async def search(self, query: SearchQuery) -> SearchResult:
        """Raises ValueError for a cursor this index did not issue for this query."""
        ...

    async def count(self) -> int: ...

    async def clear(self) -> None:
        """Drop every document (a rebuild starts here)."""
        ...

    async def close(self) -> None: ...
