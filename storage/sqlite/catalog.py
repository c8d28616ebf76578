"""Catalog adapter: products as JSON documents plus the few columns queries need.

The rules every catalog adapter keeps (validation, SKU ownership, the change sequence)
are in ``storage.catalog_docs``. Here, the change sequence is a counter row updated in the
same write transaction as the products, so numbers are handed out in commit order: a
reader of ``changes_since`` can never see a number before a smaller one commits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from storage.catalog_docs import (
    ProductRow,
    check_category,
    check_changes,
    check_merchant,
    page_after,
    prepare,
    sku_taken,
)
from storage.cursors import encode_cursor
from storage.errors import StoreIntegrityError
from storage.records import ProductDoc
from storage.sqlite.connection import (
    IN_CHUNK,
    WRITE_CHUNK,
    Migration,
    SqliteExecutor,
    chunked,
    immediate_transaction,
)

MIGRATIONS = (
    Migration(
        1,
        (
            """
            CREATE TABLE IF NOT EXISTS products (
                id TEXT PRIMARY KEY,
                category TEXT NOT NULL,
                status TEXT NOT NULL,
                merchant_id TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                doc TEXT NOT NULL
            )
            """,
            # Listing walks published ids in order and tests the category in the index,
            # so only matching rows are fetched with their (large) documents.
            """
            CREATE INDEX IF NOT EXISTS products_published
                ON products (id, category) WHERE status = 'published'
            """,
            """
            CREATE TABLE IF NOT EXISTS product_skus (
                sku TEXT PRIMARY KEY,
                product_id TEXT NOT NULL REFERENCES products (id) ON DELETE CASCADE
            )
            """,
            "CREATE INDEX IF NOT EXISTS product_skus_product ON product_skus (product_id)",
        ),
    ),
    Migration(
        2,
        (
            # The change feed: every write sets seq to the next number (see _put).
            "ALTER TABLE products ADD COLUMN seq INTEGER",
            # Rows written before the feed existed, numbered in first-insertion order.
            "UPDATE products SET seq = rowid",
            "CREATE UNIQUE INDEX IF NOT EXISTS products_seq ON products (seq)",
            # The last number handed out. Kept apart from max(seq) so a number is never
            # handed out twice, even after the product holding it is deleted.
            """
            CREATE TABLE IF NOT EXISTS change_counters (
                name TEXT PRIMARY KEY,
                value INTEGER NOT NULL
            )
            """,
            """
            INSERT INTO change_counters (name, value)
            SELECT 'products', coalesce(max(seq), 0) FROM products
            """,
            "CREATE INDEX IF NOT EXISTS products_merchant ON products (merchant_id, id)",
        ),
    ),
)

_UPSERT = """
    INSERT INTO products (id, category, status, merchant_id, updated_at, doc, seq)
    VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        category = excluded.category,
        status = excluded.status,
        merchant_id = excluded.merchant_id,
        updated_at = excluded.updated_at,
        doc = excluded.doc,
        seq = excluded.seq
"""
_CLAIM_SKU = """
    INSERT INTO product_skus (sku, product_id) VALUES (?, ?) ON CONFLICT (sku) DO NOTHING
"""


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _decode(product_id: str, doc: str) -> ProductDoc:
    try:
        value: Any = orjson.loads(doc)
    except orjson.JSONDecodeError as exc:
        raise StoreIntegrityError(f"product {product_id!r}: stored document is corrupt") from exc
    if not isinstance(value, dict):
        raise StoreIntegrityError(f"product {product_id!r}: stored document is not an object")
    return value


def _last_per_id(rows: list[ProductRow]) -> list[ProductRow]:
    """Only the last document of each id: the one that wins."""
    last = {row.id: index for index, row in enumerate(rows)}
    if len(last) == len(rows):
        return rows
    return [row for index, row in enumerate(rows) if last[row.id] == index]


def _holders(conn: sqlite3.Connection, skus: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in chunked(skus, IN_CHUNK):
        marks = ",".join("?" * len(chunk))
        found.update(
            conn.execute(f"SELECT sku, product_id FROM product_skus WHERE sku IN ({marks})", chunk)
        )
    return found


def _claim_skus(
    conn: sqlite3.Connection, rows: list[ProductRow], waiting: dict[str, list[str]]
) -> None:
    """Point the rows' SKUs at them. A SKU another product holds is not taken: the claim
    waits in ``waiting`` (claimant -> SKUs) until the end of the call, because the holder
    may still be rewritten without it later in the same call."""
    if waiting:
        for row in rows:
            # Rewritten: what an earlier version of this product claimed no longer counts.
            waiting.pop(row.id, None)
    # Variants can be dropped on update; their SKUs must stop resolving.
    for ids in chunked([row.id for row in rows], IN_CHUNK):
        marks = ",".join("?" * len(ids))
        conn.execute(f"DELETE FROM product_skus WHERE product_id IN ({marks})", ids)
    claims = [(sku, row.id) for row in rows for sku in row.skus]
    before = conn.total_changes
    conn.executemany(_CLAIM_SKU, claims)
    if conn.total_changes - before == len(claims):
        return  # every SKU was free: the only case when seeding
    holders = _holders(conn, [sku for sku, _ in claims])
    for sku, product_id in claims:
        if holders.get(sku) != product_id:
            waiting.setdefault(product_id, []).append(sku)


def _settle_claims(conn: sqlite3.Connection, waiting: dict[str, list[str]]) -> None:
    for product_id, skus in waiting.items():
        for sku in skus:
            if conn.execute(_CLAIM_SKU, (sku, product_id)).rowcount == 0:
                holder = conn.execute(
                    "SELECT product_id FROM product_skus WHERE sku = ?", (sku,)
                ).fetchone()[0]
                raise sku_taken(sku, product_id, holder)


def _put(conn: sqlite3.Connection, docs: Iterable[ProductDoc]) -> int:
    # product_skus rows written here always point at a product upserted just before, in
    # the same transaction: checking the foreign key for each would only cost time (the
    # pragma is a no-op inside a transaction, so it is switched around it).
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        return _put_all(conn, docs)
    finally:
        conn.execute("PRAGMA foreign_keys = ON")


def _put_all(conn: sqlite3.Connection, docs: Iterable[ProductDoc]) -> int:
    written = 0
    with immediate_transaction(conn):
        # Read and advanced under the write lock: numbers follow commit order.
        seq = _last_seq(conn)
        waiting: dict[str, list[str]] = {}
        for chunk in chunked(docs, WRITE_CHUNK):
            rows = [prepare(doc) for doc in chunk]
            written += len(rows)
            rows = _last_per_id(rows)
            conn.executemany(
                _UPSERT,
                [
                    (pid, category, status, merchant_id, updated_at, text, number)
                    for number, (pid, category, status, merchant_id, updated_at, text, _) in (
                        enumerate(rows, seq + 1)
                    )
                ],
            )
            seq += len(rows)
            _claim_skus(conn, rows, waiting)
        _settle_claims(conn, waiting)
        if written:
            conn.execute("UPDATE change_counters SET value = ? WHERE name = 'products'", (seq,))
    return written


def _get_many(conn: sqlite3.Connection, ids: list[str]) -> dict[str, ProductDoc]:
    found: dict[str, ProductDoc] = {}
    for chunk in chunked(ids, IN_CHUNK):
        marks = ",".join("?" * len(chunk))
        for product_id, doc in conn.execute(
            f"SELECT id, doc FROM products WHERE id IN ({marks})", chunk
        ):
            found[product_id] = _decode(product_id, doc)
    return found


def _for_sku(conn: sqlite3.Connection, sku: str) -> ProductDoc | None:
    row = conn.execute(
        """
        SELECT p.id, p.doc FROM product_skus s JOIN products p ON p.id = s.product_id
        WHERE s.sku = ?
        """,
        (sku,),
    ).fetchone()
    return None if row is None else _decode(row[0], row[1])


def _page(
    conn: sqlite3.Connection, query: str, args: tuple[object, ...], limit: int
) -> tuple[list[ProductDoc], str | None]:
    # One extra row says whether another page exists, so the last page has no cursor.
    rows = conn.execute(query, (*args, limit + 1)).fetchall()
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1][0]) if len(rows) > limit else None
    return [_decode(product_id, doc) for product_id, doc in page], next_cursor


def _list(
    conn: sqlite3.Connection, category: str | None, after: str, limit: int
) -> tuple[list[ProductDoc], str | None]:
    if category is None:
        query = """
            SELECT id, doc FROM products
            WHERE status = 'published' AND id > ?
            ORDER BY id LIMIT ?
        """
        return _page(conn, query, (after,), limit)
    query = r"""
        SELECT id, doc FROM products
        WHERE status = 'published' AND id > ?
          AND (category = ? OR category LIKE ? || '/%' ESCAPE '\')
        ORDER BY id LIMIT ?
    """
    return _page(conn, query, (after, category, _like_escape(category)), limit)


def _list_merchant(
    conn: sqlite3.Connection, merchant_id: str, status: str | None, after: str, limit: int
) -> tuple[list[ProductDoc], str | None]:
    # Walks products_merchant in id order; a status filter is tested on each row.
    if status is None:
        query = """
            SELECT id, doc FROM products WHERE merchant_id = ? AND id > ?
            ORDER BY id LIMIT ?
        """
        return _page(conn, query, (merchant_id, after), limit)
    query = """
        SELECT id, doc FROM products WHERE merchant_id = ? AND id > ? AND status = ?
        ORDER BY id LIMIT ?
    """
    return _page(conn, query, (merchant_id, after, status), limit)


def _changes(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[tuple[int, ProductDoc]]:
    rows = conn.execute(
        "SELECT seq, id, doc FROM products WHERE seq > ? ORDER BY seq LIMIT ?",
        (after_seq, limit),
    ).fetchall()
    return [(seq, _decode(product_id, doc)) for seq, product_id, doc in rows]


def _last_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM change_counters WHERE name = 'products'").fetchone()
    return 0 if row is None else int(row[0])


def _count(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM products").fetchone()
    return int(row[0])


class SqliteCatalogStore:
    """CatalogStore on one SQLite file. Get-by-id returns drafts too (the caller decides
    visibility); only ``list_products`` filters to published."""

    def __init__(self, path: str) -> None:
        self._db = SqliteExecutor(path, component="catalog", migrations=MIGRATIONS)

    async def get_product(self, product_id: str) -> ProductDoc | None:
        found = await self._db.run(_get_many, [product_id])
        return found.get(product_id)

    async def get_products(self, product_ids: Sequence[str]) -> dict[str, ProductDoc]:
        unique = list(dict.fromkeys(product_ids))
        if not unique:
            return {}
        return await self._db.run(_get_many, unique)

    async def product_for_sku(self, sku: str) -> ProductDoc | None:
        return await self._db.run(_for_sku, sku)

    async def list_products(
        self, *, category: str | None, cursor: str | None, limit: int
    ) -> tuple[list[ProductDoc], str | None]:
        after = page_after(cursor, limit)
        return await self._db.run(_list, check_category(category), after, limit)

    async def list_merchant_products(
        self, merchant_id: str, *, status: str | None, cursor: str | None, limit: int
    ) -> tuple[list[ProductDoc], str | None]:
        check_merchant(merchant_id, status)
        after = page_after(cursor, limit)
        return await self._db.run(_list_merchant, merchant_id, status, after, limit)

    async def put_products(self, docs: Iterable[ProductDoc]) -> int:
        # The iterable is consumed on the worker thread, inside the one transaction, so a
        # large generator is streamed in chunks instead of materialised.
        return await self._db.run(_put, docs)

    async def changes_since(self, after_seq: int, limit: int) -> list[tuple[int, ProductDoc]]:
        check_changes(after_seq, limit)
        return await self._db.run(_changes, after_seq, limit)

    async def last_seq(self) -> int:
        return await self._db.run(_last_seq)

    async def count_products(self) -> int:
        """All stored products, drafts included."""
        return await self._db.run(_count)

    async def close(self) -> None:
        await self._db.close()
