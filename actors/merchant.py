"""What a merchant may do to its own catalog, prices and stock.

Every method takes the caller's merchant id and refuses anything owned by another
merchant with the same answer as "does not exist", so ids of other merchants' products
cannot be probed. Changes are announced through ``on_change`` so replica caches can drop
what they hold; a price change also rewrites its product, which moves the product up the
catalog's change feed and so re-indexes its search price.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from actors.domain.catalog import ProductStatus, edited, new_product, transition
from actors.domain.errors import DomainError, ErrorCode
from actors.kinds import ShardKind
from actors.shop import ShardCaller, Shop, new_op_id
from storage.interfaces import CatalogStore
from storage.records import ProductDoc

# (kind, keys): kind is "product" (product ids) or "price" (SKUs).
ChangeHook = Callable[[str, Sequence[str]], Awaitable[None]]

IMPORT_BATCH = 500
MAX_IMPORT_LINE_BYTES = 256 * 1024
MAX_IMPORT_ERRORS = 1_000  # reported in full; beyond this only counted
MAX_ON_HAND = 10_000_000
MAX_AMOUNT = 100_000_000_00


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _ignore(kind: str, keys: Sequence[str]) -> None:
    return None


def invalidating(shop: Shop, then: ChangeHook = _ignore) -> ChangeHook:
    """Drop the changed entries from this replica's caches at once, then tell the others
    (``then`` publishes to the change bus)."""

    async def hook(kind: str, keys: Sequence[str]) -> None:
        if kind == "product":
            shop.invalidate_products(keys)
        elif kind == "price":
            shop.invalidate_prices(keys)
        await then(kind, keys)

    return hook


@dataclass
class ImportReport:
    accepted: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, line: int, error: DomainError) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_IMPORT_ERRORS:
            self.errors.append(
                {"line": line, "code": error.code.value, "detail": error.message, **error.details}
            )

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "errors": self.errors,
            "errors_truncated": self.rejected > len(self.errors),
        }


class MerchantCatalog:
    def __init__(
        self,
        catalog: CatalogStore,
        shards: ShardCaller,
        currency: str,
        on_change: ChangeHook = _ignore,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.catalog = catalog
        self.shards = shards
        self.currency = currency
        self.on_change = on_change
        self.clock = clock

    # --- reads ------------------------------------------------------------------------

    async def own(self, merchant_id: str, product_id: str) -> ProductDoc:
        doc = await self.catalog.get_product(product_id)
        if doc is None or doc.get("merchant_id") != merchant_id:
            raise DomainError(
                ErrorCode.PRODUCT_NOT_FOUND, f"no product {product_id!r}", product_id=product_id
            )
        return doc

    async def products(
        self, merchant_id: str, status: ProductStatus | None, cursor: str | None, limit: int
    ) -> tuple[list[ProductDoc], str | None]:
        try:
            return await self.catalog.list_merchant_products(
                merchant_id,
                status=None if status is None else status.value,
                cursor=cursor,
                limit=limit,
            )
        except ValueError as error:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, str(error)) from error

    # --- products ---------------------------------------------------------------------

    async def create(self, merchant_id: str, raw: Any) -> ProductDoc:
        doc = new_product(raw, merchant_id, self.clock())
        if await self.catalog.get_product(doc["id"]) is not None:
            raise DomainError(
                ErrorCode.PRODUCT_CONFLICT, f"product {doc['id']!r} already exists", field="id"
            )
        await self._check_skus(doc)
        await self._save([doc])
        return doc

    async def update(self, merchant_id: str, product_id: str, changes: Any) -> ProductDoc:
        doc = edited(await self.own(merchant_id, product_id), changes, self.clock())
        await self._check_skus(doc)
        await self._save([doc])
        return doc

    async def set_status(
        self, merchant_id: str, product_id: str, target: ProductStatus
    ) -> ProductDoc:
        current = await self.own(merchant_id, product_id)
        doc = transition(current, target, self.clock())
        if doc is not current:
            await self._save([doc])
        return doc

    async def import_ndjson(self, merchant_id: str, chunks: AsyncIterable[bytes]) -> ImportReport:
        """One product per line, created or (for an id the merchant owns) replaced.

        Streamed: lines are validated as they arrive and written in batches, so an import
        of any size holds one batch in memory. A bad line is reported with its number and
        skipped; the good lines around it are kept.
        """
        report = ImportReport()
        # Product id -> (line numbers, newest document): a later line for the same id
        # replaces an earlier one still waiting in the batch.
        batch: dict[str, tuple[list[int], ProductDoc]] = {}
        number = 0
        async for line in _lines(chunks):
            number += 1
            if not line.strip():
                continue
            try:
                doc = await self._import_line(merchant_id, line, batch)
            except DomainError as error:
                report.reject(number, error)
                continue
            # Assignment keeps the id's first position, so earlier lines claim SKUs first.
            numbers = batch.get(doc["id"], ([], doc))[0]
            batch[doc["id"]] = ([*numbers, number], doc)
            if len(batch) >= IMPORT_BATCH:
                await self._import_batch(batch, report)
                batch = {}
        if batch:
            await self._import_batch(batch, report)
        return report

    async def _import_line(
        self, merchant_id: str, line: bytes, pending: dict[str, tuple[list[int], ProductDoc]]
    ) -> ProductDoc:
        if len(line) > MAX_IMPORT_LINE_BYTES:
            raise DomainError(
                ErrorCode.PRODUCT_INVALID, f"line longer than {MAX_IMPORT_LINE_BYTES} bytes"
            )
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise DomainError(ErrorCode.PRODUCT_INVALID, f"not JSON: {error}") from error
        now = self.clock()
        existing = None
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            waiting = pending.get(raw["id"])
            existing = waiting[1] if waiting else await self.catalog.get_product(raw["id"])
        if existing is None:
            return new_product(raw, merchant_id, now)
        if existing.get("merchant_id") != merchant_id:
            raise DomainError(
                ErrorCode.PRODUCT_CONFLICT, f"product id {raw['id']!r} is taken", field="id"
            )
        status = raw.get("status")
        doc = edited(existing, {k: v for k, v in raw.items() if k not in ("id", "status")}, now)
        if status is not None:
            try:
                target = ProductStatus(status)
            except ValueError as error:
                raise DomainError(
                    ErrorCode.PRODUCT_INVALID, f"unknown status {status!r}", field="status"
                ) from error
            doc = transition(doc, target, now)
        return doc

    async def _import_batch(
        self, batch: dict[str, tuple[list[int], ProductDoc]], report: ImportReport
    ) -> None:
        keep: list[ProductDoc] = []
        accepted = 0
        claimed: dict[str, str] = {}  # SKU -> product id, within this batch
        for numbers, doc in batch.values():
            try:
                await self._check_skus(doc)
                for variant in doc["variants"]:
                    other = claimed.get(variant["sku"])
                    if other is not None and other != doc["id"]:
                        raise _sku_taken(variant["sku"])
                    claimed[variant["sku"]] = doc["id"]
            except DomainError as error:
                report.reject(numbers[-1], error)
                continue
            keep.append(doc)
            accepted += len(numbers)
        if keep:
            await self._save(keep)
            report.accepted += accepted

    async def _check_skus(self, doc: ProductDoc) -> None:
        # A SKU is one sellable thing: a merchant may not claim another product's SKU,
        # whoever owns that product, or stock and prices would be shared by accident.
        for variant in doc["variants"]:
            holder = await self.catalog.product_for_sku(variant["sku"])
            if holder is not None and holder["id"] != doc["id"]:
                raise _sku_taken(variant["sku"])

    async def _save(self, docs: list[ProductDoc]) -> None:
        await self.catalog.put_products(docs)
        await self.on_change("product", [doc["id"] for doc in docs])

    # --- prices and stock -------------------------------------------------------------

    async def _own_sku(self, merchant_id: str, sku: str) -> ProductDoc:
        doc = await self.catalog.product_for_sku(sku)
        if doc is None or doc.get("merchant_id") != merchant_id:
            raise DomainError(ErrorCode.SKU_NOT_FOUND, f"unknown SKU {sku!r}", sku=sku)
        return doc

    async def set_price(
        self, merchant_id: str, sku: str, amount: int, currency: str, op_id: str | None = None
    ) -> dict[str, Any]:
        doc = await self._own_sku(merchant_id, sku)
        if currency != self.currency:
            raise DomainError(
                ErrorCode.CURRENCY_MISMATCH,
                f"prices are in {self.currency}, not {currency}",
                currency=currency,
            )
        if not 0 <= amount <= MAX_AMOUNT:
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT, f"amount must be 0 to {MAX_AMOUNT} minor units"
            )
        quote = await self.shards.call(
            ShardKind.PRICING, sku, "set_price", op_id or new_op_id(), sku, amount, doc["category"]
        )
        await self.on_change("price", [sku])
        # Rewriting the product re-indexes it, so search sees the new price.
        await self._save([{**doc, "updated_at": self.clock()}])
        return dict(quote)

    async def set_stock(
        self, merchant_id: str, sku: str, on_hand: int, op_id: str | None = None
    ) -> dict[str, Any]:
        await self._own_sku(merchant_id, sku)
        if not 0 <= on_hand <= MAX_ON_HAND:
            raise DomainError(ErrorCode.STOCK_INVALID, f"on_hand must be 0 to {MAX_ON_HAND}")
        level = await self.shards.call(
            ShardKind.INVENTORY, sku, "set_on_hand", op_id or new_op_id(), sku, on_hand
        )
        return dict(level)


def _sku_taken(sku: str) -> DomainError:
    return DomainError(
        ErrorCode.PRODUCT_CONFLICT, f"SKU {sku!r} belongs to another product", sku=sku
    )


async def _lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Split a byte stream into lines, holding at most one partial line.

    A line longer than the limit is yielded once, cut at the limit (so it is refused with
    its own line number), and the rest of it is skipped up to its newline.
    """
    pending = b""
    skipping = False
    async for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if skipping:
                skipping = False
                continue
            yield line
        if not skipping and len(pending) > MAX_IMPORT_LINE_BYTES:
            yield pending[: MAX_IMPORT_LINE_BYTES + 1]
            skipping = True
        if skipping:
            pending = b""
    if pending and not skipping:
        yield pending
