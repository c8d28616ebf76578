"""Price adapter on PostgreSQL: base prices per SKU and promotions (migration 0001)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from storage.postgres._base import WRITE_CHUNK, PgStore, chunked, require_int
from storage.postgres.pool import PgPool
from storage.records import PriceRecord, PromotionRecord

_UPSERT_PRICE = """
    INSERT INTO prices (sku, amount, currency, category) VALUES ($1, $2, $3, $4)
    ON CONFLICT (sku) DO UPDATE SET
        amount = EXCLUDED.amount,
        currency = EXCLUDED.currency,
        category = EXCLUDED.category
"""

_PROMOTION_COLUMNS = "id, name, kind, value, currency, sku, category, starts_at, ends_at"

_UPSERT_PROMOTION = f"""
    INSERT INTO promotions ({_PROMOTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (id) DO UPDATE SET
        name = EXCLUDED.name, kind = EXCLUDED.kind, value = EXCLUDED.value,
        currency = EXCLUDED.currency, sku = EXCLUDED.sku, category = EXCLUDED.category,
        starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at
"""


class PgPriceStore(PgStore):
    """PriceStore on PostgreSQL. Expects ``apply_migrations`` to have run on the pool."""

    def __init__(self, pool: PgPool) -> None:
        super().__init__(pool, "prices")

    async def get_prices(self, skus: Sequence[str]) -> dict[str, PriceRecord]:
        unique = list(dict.fromkeys(skus))
        if not unique:
            return {}
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT sku, amount, currency, category FROM prices WHERE sku = ANY($1::text[])",
                unique,
            )
        return {row[0]: PriceRecord(*row) for row in rows}

    async def put_prices(self, records: Iterable[PriceRecord]) -> int:
        written = 0
        # One transaction for the whole call, streamed in chunks: all or nothing, like
        # the SQLite adapter. executemany applies rows in order, so a SKU given twice
        # ends with its last record.
        async with self._connection() as conn, conn.transaction():
            for chunk in chunked(records, WRITE_CHUNK):
                await conn.executemany(
                    _UPSERT_PRICE,
                    [
                        (r.sku, require_int(r.amount, "price amount"), r.currency, r.category)
                        for r in chunk
                    ],
                )
                written += len(chunk)
        return written

    async def list_promotions(self) -> list[PromotionRecord]:
        async with self._connection() as conn:
            # COLLATE "C": byte order whatever the database locale, as SQLite sorts.
            rows = await conn.fetch(
                f'SELECT {_PROMOTION_COLUMNS} FROM promotions ORDER BY id COLLATE "C"'
            )
        return [PromotionRecord(*row) for row in rows]

    async def put_promotion(self, promotion: PromotionRecord) -> None:
        p = promotion
        args = (
            p.id,
            p.name,
            p.kind,
            require_int(p.value, "promotion value"),
            p.currency,
            p.sku,
            p.category,
            float(p.starts_at),
            float(p.ends_at),
        )
        async with self._connection() as conn:
            await conn.execute(_UPSERT_PROMOTION, *args)

    async def delete_promotion(self, promotion_id: str) -> bool:
        async with self._connection() as conn:
            deleted = await conn.fetchval(
                "DELETE FROM promotions WHERE id = $1 RETURNING id", promotion_id
            )
        return deleted is not None
