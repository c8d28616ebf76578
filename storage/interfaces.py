"""One interface per store. Callers depend on these, never on an adapter."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from actors.domain.orders import Order
from storage.records import (
    IdempotencyRecord,
    NewOutboxEvent,
    OutboxEvent,
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


# --- orders, outbox and idempotency (issue 5) -------------------------------------------
# Imported here to keep this block self-contained while others edit the top of the file;
# the lead may hoist these into the import list above.


class OrderStore(Protocol):
    """Orders, their outbox and the checkout idempotency keys, in one transactional store.

    Every order change writes the order row and its outbox events in one transaction:
    an event exists if and only if its change was committed. Errors: ``DuplicateKey``
    (a live idempotency key), ``StoreConflict`` (stale version, order id taken, or a status
    change outside the domain's table), ``RecordNotFound``, ``StoreUnavailable`` (retry),
    ``StoreIntegrityError``.
    """

    async def create_order(
        self,
        order: Order,
        events: Sequence[NewOutboxEvent],
        idempotency: IdempotencyRecord | None = None,
    ) -> Order:
        """Insert a new order (version 1), its events and its idempotency record at once.

        A live record with the same (scope, key) raises ``DuplicateKey`` carrying it, and
        nothing is written. An expired one (``expires_at <= idempotency.created_at``) is
        replaced. An existing order id raises ``StoreConflict``.
        """
        ...

    async def save_idempotency(self, record: IdempotencyRecord) -> None:
        """Remember an answer that created no order (e.g. a 409 out of stock) under the
        same rules as ``create_order``: ``DuplicateKey`` if a live record exists."""
        ...

    async def get_idempotency(
        self, scope: str, key: str, *, now: float | None = None
    ) -> IdempotencyRecord | None:
        """The live record for (scope, key); expired ones are absent. ``now`` defaults to
        the wall clock."""
        ...

    async def purge_idempotency(self, now: float) -> int:
        """Delete records with ``expires_at <= now``; returns how many."""
        ...

    async def get_order(self, order_id: str) -> Order | None: ...

    async def list_orders(
        self,
        *,
        customer_ref: str | None = None,
        merchant_id: str | None = None,
        carrier: str | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> tuple[list[Order], str | None]:
        """Newest first (created_at, then id, descending). Exactly one of ``customer_ref``,
        ``merchant_id`` and ``carrier``; a merchant sees every order with at least one of
        its lines; a carrier every order whose shipment it carries (an order appears once
        it has a shipment). ValueError for a bad limit (1..MAX_PAGE) or a cursor this store
        did not issue."""
        ...

    async def transition(
        self,
        order_id: str,
        expected_version: int,
        new_order: Order,
        events: Sequence[NewOutboxEvent] = (),
    ) -> Order:
        """Replace the order if its stored version is ``expected_version``.

        ``new_order`` must have the same id and ``version == expected_version + 1``, and
        its status must equal the stored one or be an edge of ``TRANSITIONS`` from it.
        ``RecordNotFound`` for an unknown order; ``StoreConflict`` otherwise; in both
        cases nothing (order or event) is written.
        """
        ...

    async def orders_expiring(self, before: float, limit: int) -> list[Order]:
        """Unpaid orders (pending_payment, authorized) with ``expires_at <= before``,
        soonest first."""
        ...

    async def claim_events(
        self, consumer: str, limit: int, lease_s: float, now: float
    ) -> list[OutboxEvent]:
        """Up to ``limit`` events, in id order, that ``consumer`` has not completed and
        that no live claim of that consumer holds; each is leased until ``now + lease_s``.
        Concurrent claimers under one consumer name never get the same event while its
        lease is live; after it lapses (a crashed claimer) the event is claimed again.
        Each consumer name sees every event once completed, independently of others."""
        ...

    async def complete_events(self, consumer: str, event_ids: Sequence[int]) -> None:
        """Mark events done for ``consumer``; they are never claimed by it again.
        Unknown ids are ignored."""
        ...

    async def record_effect(self, consumer: str, effect_key: str) -> bool:
        """True the first time (consumer, effect_key) is recorded, False after: the
        de-duplication of effects whose event may be delivered again."""
        ...

    async def close(self) -> None: ...
