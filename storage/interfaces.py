"""One interface per store. Callers depend on these, never on an adapter."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from storage.records import (
    PriceRecord,
    ProductDoc,
    PromotionRecord,
    ReservationRecord,
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

    async def put_products(self, docs: Iterable[ProductDoc]) -> int: ...

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
