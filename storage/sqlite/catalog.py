"""Catalog adapter: products as JSON documents plus the few columns queries need."""

from __future__ import annotations

import base64
import binascii
import re
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

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

MAX_PAGE = 100

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
)

_CURSOR = re.compile(r"[A-Za-z0-9_-]+")


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> str:
    if not _CURSOR.fullmatch(cursor):
        raise ValueError(f"malformed cursor {cursor!r}: not a cursor returned by list_products")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        last_id = raw.decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(
            f"malformed cursor {cursor!r}: not a cursor returned by list_products"
        ) from exc
    if not last_id:
        raise ValueError(f"malformed cursor {cursor!r}: empty position")
    return last_id


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


def _text_field(doc: ProductDoc, key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise StoreIntegrityError(
            f"product {doc.get('id')!r}: {key!r} must be a non-empty string, got {value!r}"
        )
    return value


def _skus(doc: ProductDoc, product_id: str) -> list[str]:
    variants = doc.get("variants", [])
    if not isinstance(variants, list):
        raise StoreIntegrityError(f"product {product_id!r}: 'variants' must be a list")
    skus: list[str] = []
    for variant in variants:
        sku = variant.get("sku") if isinstance(variant, dict) else None
        if not isinstance(sku, str) or not sku:
            raise StoreIntegrityError(f"product {product_id!r}: every variant needs a 'sku'")
        skus.append(sku)
    return skus


def _row(doc: ProductDoc) -> tuple[str, str, str, str, str, str]:
    product_id = _text_field(doc, "id")
    try:
        text = orjson.dumps(doc).decode()
    except orjson.JSONEncodeError as exc:
        raise StoreIntegrityError(f"product {product_id!r}: not JSON-serialisable") from exc
    return (
        product_id,
        _text_field(doc, "category"),
        _text_field(doc, "status"),
        _text_field(doc, "merchant_id"),
        _text_field(doc, "updated_at"),
        text,
    )


def _put(conn: sqlite3.Connection, docs: Iterable[ProductDoc]) -> int:
    written = 0
    with immediate_transaction(conn):
        for chunk in chunked(docs, WRITE_CHUNK):
            rows = [_row(doc) for doc in chunk]
            sku_rows = [
                (sku, row[0])
                for doc, row in zip(chunk, rows, strict=True)
                for sku in _skus(doc, row[0])
            ]
            conn.executemany(
                """
                INSERT INTO products (id, category, status, merchant_id, updated_at, doc)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET
                    category = excluded.category,
                    status = excluded.status,
                    merchant_id = excluded.merchant_id,
                    updated_at = excluded.updated_at,
                    doc = excluded.doc
                """,
                rows,
            )
            # Variants can be dropped on update; their SKUs must stop resolving.
            conn.executemany(
                "DELETE FROM product_skus WHERE product_id = ?", [(row[0],) for row in rows]
            )
            conn.executemany(
                """
                INSERT INTO product_skus (sku, product_id) VALUES (?, ?)
                ON CONFLICT (sku) DO UPDATE SET product_id = excluded.product_id
                """,
                sku_rows,
            )
            written += len(rows)
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


def _list(
    conn: sqlite3.Connection, category: str | None, after: str, limit: int
) -> tuple[list[ProductDoc], str | None]:
    # One extra row says whether another page exists, so the last page has no cursor.
    fetch = limit + 1
    if category is None:
        rows = conn.execute(
            """
            SELECT id, doc FROM products
            WHERE status = 'published' AND id > ?
            ORDER BY id LIMIT ?
            """,
            (after, fetch),
        ).fetchall()
    else:
        rows = conn.execute(
            r"""
            SELECT id, doc FROM products
            WHERE status = 'published' AND id > ?
              AND (category = ? OR category LIKE ? || '/%' ESCAPE '\')
            ORDER BY id LIMIT ?
            """,
            (after, category, _like_escape(category), fetch),
        ).fetchall()
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1][0]) if len(rows) > limit else None
    return [_decode(product_id, doc) for product_id, doc in page], next_cursor


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
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        if category is not None:
            category = category.strip("/")
            if not category:
                raise ValueError("category must be a non-empty path such as 'home/kitchen'")
        # Ids are non-empty, so '' sorts before every one of them.
        after = "" if cursor is None else decode_cursor(cursor)
        return await self._db.run(_list, category, after, limit)

    async def put_products(self, docs: Iterable[ProductDoc]) -> int:
        # The iterable is consumed on the worker thread, inside the one transaction, so a
        # large generator is streamed in chunks instead of materialised.
        return await self._db.run(_put, docs)

    async def count_products(self) -> int:
        """All stored products, drafts included."""
        return await self._db.run(_count)

    async def close(self) -> None:
        await self._db.close()
