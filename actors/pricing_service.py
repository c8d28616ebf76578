"""The pricing shard's behaviour: the price book in memory, loaded lazily per SKU.

Promotions are few and apply across SKUs, so every pricing shard holds all of them; a
promotion change is broadcast to each shard. Prices are read from the store on first use
and written to it before a change is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.pricing import PriceBook, PriceEntry, Promotion, PromotionKind, Quote
from actors.oplog import OpLog
from actors.protocol import Op, Reply, refused
from actors.service import BatchDispatcher
from storage.errors import StorageError
from storage.interfaces import PriceStore
from storage.records import PriceRecord, PromotionRecord

log = logging.getLogger("feira.pricing")



class PricingService:
    def __init__(
        self,
        store: PriceStore,
        currency: str,
        op_log_size: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.book = PriceBook(currency)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._promotions_loaded = False
        # Writes a batch must make before it may answer; filled by the mutation handlers.
        self._pending: list[Callable[[], Any]] = []
        self._dispatch = BatchDispatcher(
            reads={"quote": self._quote},
            mutations={
                "set_price": self._set_price,
                "upsert_promotion": self._upsert_promotion,
                "remove_promotion": self._remove_promotion,
            },
            log=OpLog(op_log_size),
        )

    async def apply(self, ops: list[Op]) -> list[Reply]:
        async with self._lock:
            try:
                await self._load(ops)
            except StorageError:
                return [_unavailable() for _ in ops]
            self._pending = []
            replies, fresh = self._dispatch.run(self._clock(), ops)
            try:
                for write in self._pending:
                    await write()
            except StorageError:
                # The in-memory change is not durable: forget it and refuse as retryable.
                self.book = PriceBook(self.book.currency)
                self._promotions_loaded = False
                return self._dispatch.undo(ops, replies, fresh, _unavailable())
            return replies

    async def _load(self, ops: list[Op]) -> None:
        if not self._promotions_loaded:
            promotions = []
            for stored in await self.store.list_promotions():
                try:
                    promotions.append(_promotion(stored))
                except (DomainError, ValueError):
                    # One bad row must not take pricing down; it simply does not apply.
                    log.error("skipping invalid stored promotion %s", stored.id)
            self.book.set_promotions(promotions)
            self._promotions_loaded = True
        wanted: set[str] = set()
        for name, args in ops:
            if name == "quote" and args and isinstance(args[0], list):
                wanted.update(s for s in args[0] if isinstance(s, str))
        missing = [s for s in wanted if not self.book.has(s)]
        if missing:
            for record in (await self.store.get_prices(missing)).values():
                try:
                    self.book.set_price(
                        PriceEntry(record.sku, record.amount, record.currency, record.category)
                    )
                except DomainError:
                    # Another currency or a corrupt row: the SKU stays unpriced (not for sale).
                    log.error("skipping unusable stored price of %s", record.sku)

    # --- operations -------------------------------------------------------------------

    def _quote(self, now: float, skus: list[str]) -> dict[str, dict[str, Any]]:
        return {s: quote_json(self.book.quote(s, now)) for s in skus if self.book.has(s)}

    def _set_price(
        self, now: float, op_id: str, sku: str, amount: int, category: str
    ) -> dict[str, Any]:
        entry = PriceEntry(sku, amount, self.book.currency, category)
        self.book.set_price(entry)
        record = PriceRecord(sku, amount, self.book.currency, category)
        self._pending.append(lambda: self.store.put_prices([record]))
        return quote_json(self.book.quote(sku, now))

    def _upsert_promotion(self, now: float, op_id: str, data: dict[str, Any]) -> dict[str, Any]:
        try:
            promotion = Promotion(
                id=str(data["id"]),
                name=str(data.get("name", data["id"])),
                kind=PromotionKind(data["kind"]),
                value=data["value"],
                currency=data.get("currency"),
                sku=data.get("sku"),
                category=data.get("category"),
                starts_at=float(data["starts_at"]),
                ends_at=float(data["ends_at"]),
            )
        except (KeyError, ValueError) as error:
            raise DomainError(ErrorCode.PROMOTION_INVALID, f"bad promotion: {error}") from error
        self.book.upsert_promotion(promotion)
        record = _promotion_record(promotion)
        self._pending.append(lambda: self.store.put_promotion(record))
        return {"id": promotion.id}

    def _remove_promotion(self, now: float, op_id: str, promotion_id: str) -> dict[str, Any]:
        self.book.remove_promotion(promotion_id)
        self._pending.append(lambda: self.store.delete_promotion(promotion_id))
        return {"id": promotion_id}


def quote_json(q: Quote) -> dict[str, Any]:
    return {
        "sku": q.sku,
        "currency": q.unit.currency,
        "base": q.base.amount,
        "unit": q.unit.amount,
        "promotion_id": q.promotion_id,
        "category": q.category,
    }


def _unavailable() -> Reply:
    return refused(DomainError(ErrorCode.STORE_UNAVAILABLE, "price store unavailable; retry"))


def _promotion(r: PromotionRecord) -> Promotion:
    return Promotion(
        id=r.id, name=r.name, kind=PromotionKind(r.kind), value=r.value, currency=r.currency,
        sku=r.sku, category=r.category, starts_at=r.starts_at, ends_at=r.ends_at,
    )


def _promotion_record(p: Promotion) -> PromotionRecord:
    return PromotionRecord(
        id=p.id, name=p.name, kind=p.kind.value, value=p.value, currency=p.currency,
        sku=p.sku, category=p.category, starts_at=p.starts_at, ends_at=p.ends_at,
    )
