"""Price adapter: base prices per SKU and promotions, in the ledger file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from storage.records import PriceRecord, PromotionRecord
from storage.sqlite.connection import (
    IN_CHUNK,
    WRITE_CHUNK,
    Migration,
    SqliteExecutor,
    chunked,
    immediate_transaction,
)

# typeof() checks keep floats out: INTEGER affinity would silently keep 12.5 as REAL.
MIGRATIONS = (
    Migration(
        1,
        (
            """
            CREATE TABLE IF NOT EXISTS prices (
                sku TEXT PRIMARY KEY,
                amount INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount >= 0),
                currency TEXT NOT NULL CHECK (length(currency) = 3),
                category TEXT NOT NULL
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS promotions (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('percent', 'fixed')),
                value INTEGER NOT NULL CHECK (typeof(value) = 'integer' AND value >= 0),
                currency TEXT CHECK (currency IS NULL OR length(currency) = 3),
                sku TEXT,
                category TEXT,
                starts_at REAL NOT NULL,
                ends_at REAL NOT NULL,
                CHECK ((sku IS NULL) <> (category IS NULL)),
                CHECK (kind <> 'fixed' OR currency IS NOT NULL)
            )
            """,
        ),
    ),
)

_PROMOTION_COLUMNS = "id, name, kind, value, currency, sku, category, starts_at, ends_at"


def _get(conn: sqlite3.Connection, skus: list[str]) -> dict[str, PriceRecord]:
    found: dict[str, PriceRecord] = {}
    for chunk in chunked(skus, IN_CHUNK):
        marks = ",".join("?" * len(chunk))
        for sku, amount, currency, category in conn.execute(
            f"SELECT sku, amount, currency, category FROM prices WHERE sku IN ({marks})", chunk
        ):
            found[sku] = PriceRecord(sku, amount, currency, category)
    return found


def _put(conn: sqlite3.Connection, records: Iterable[PriceRecord]) -> int:
    written = 0
    with immediate_transaction(conn):
        for chunk in chunked(records, WRITE_CHUNK):
            conn.executemany(
                """
                INSERT INTO prices (sku, amount, currency, category) VALUES (?, ?, ?, ?)
                ON CONFLICT (sku) DO UPDATE SET
                    amount = excluded.amount,
                    currency = excluded.currency,
                    category = excluded.category
                """,
                [(r.sku, r.amount, r.currency, r.category) for r in chunk],
            )
            written += len(chunk)
    return written


def _list_promotions(conn: sqlite3.Connection) -> list[PromotionRecord]:
    rows = conn.execute(f"SELECT {_PROMOTION_COLUMNS} FROM promotions ORDER BY id")
    return [PromotionRecord(*row) for row in rows]


def _put_promotion(conn: sqlite3.Connection, p: PromotionRecord) -> None:
    with immediate_transaction(conn):
        conn.execute(
            f"""
            INSERT INTO promotions ({_PROMOTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET
                name = excluded.name, kind = excluded.kind, value = excluded.value,
                currency = excluded.currency, sku = excluded.sku, category = excluded.category,
                starts_at = excluded.starts_at, ends_at = excluded.ends_at
            """,
            (
                p.id,
                p.name,
                p.kind,
                p.value,
                p.currency,
                p.sku,
                p.category,
                float(p.starts_at),
                float(p.ends_at),
            ),
        )


def _delete_promotion(conn: sqlite3.Connection, promotion_id: str) -> bool:
    with immediate_transaction(conn):
        cursor = conn.execute("DELETE FROM promotions WHERE id = ?", (promotion_id,))
    return cursor.rowcount > 0


class SqlitePriceStore:
    """PriceStore on one SQLite file (normally the ledger, shared with stock)."""

    def __init__(self, path: str) -> None:
        self._db = SqliteExecutor(path, component="prices", migrations=MIGRATIONS)

    async def get_prices(self, skus: Sequence[str]) -> dict[str, PriceRecord]:
        unique = list(dict.fromkeys(skus))
        if not unique:
            return {}
        return await self._db.run(_get, unique)

    async def put_prices(self, records: Iterable[PriceRecord]) -> int:
        # Consumed on the worker thread inside one transaction: streamed, not materialised.
        return await self._db.run(_put, records)

    async def list_promotions(self) -> list[PromotionRecord]:
        return await self._db.run(_list_promotions)

    async def put_promotion(self, promotion: PromotionRecord) -> None:
        await self._db.run(_put_promotion, promotion)

    async def delete_promotion(self, promotion_id: str) -> bool:
        return await self._db.run(_delete_promotion, promotion_id)

    async def close(self) -> None:
        await self._db.close()
