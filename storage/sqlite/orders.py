"""Orders, outbox and idempotency keys on SQLite, in the ledger file (beside prices and stock).

Same tables and rules as the PostgreSQL adapter (migration 0002; schema versions 1 and 2
here together). Every write runs in one ``BEGIN IMMEDIATE`` transaction, which holds the
file's write lock from the start: writers in other processes wait for it, so reads inside
a write transaction are never stale and claims by concurrent consumers cannot overlap.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from actors.domain.orders import Order, OrderStatus
from storage.errors import DuplicateKey, StoreConflict
from storage.order_rows import (
    carrier_of,
    check_claim,
    check_new_order,
    check_transition,
    event_rows,
    idempotency_record,
    idempotency_row,
    listing_query,
    load_order,
    loads,
    next_cursor,
    order_doc,
)
from storage.records import IdempotencyRecord, NewOutboxEvent, OutboxEvent
from storage.sqlite.connection import (
    IN_CHUNK,
    Migration,
    SqliteExecutor,
    chunked,
    immediate_transaction,
)

_STATUSES = ", ".join(f"'{s.value}'" for s in OrderStatus)

MIGRATIONS = (
    Migration(
        1,
        (
            f"""
            CREATE TABLE IF NOT EXISTS orders (
                id TEXT PRIMARY KEY,
                customer_ref TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ({_STATUSES})),
                version INTEGER NOT NULL CHECK (typeof(version) = 'integer' AND version >= 1),
                expires_at REAL,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                doc TEXT NOT NULL
            )
            """,
            """
            CREATE INDEX IF NOT EXISTS orders_customer
                ON orders (customer_ref, created_at DESC, id DESC)
            """,
            """
            CREATE INDEX IF NOT EXISTS orders_expiring ON orders (expires_at, id)
                WHERE status IN ('pending_payment', 'authorized') AND expires_at IS NOT NULL
            """,
            """
            CREATE TABLE IF NOT EXISTS order_merchants (
                merchant_id TEXT NOT NULL,
                order_id TEXT NOT NULL REFERENCES orders (id),
                created_at REAL NOT NULL,
                PRIMARY KEY (merchant_id, order_id)
            )
            """,
            """
            CREATE INDEX IF NOT EXISTS order_merchants_listing
                ON order_merchants (merchant_id, created_at DESC, order_id DESC)
            """,
            """
            CREATE TABLE IF NOT EXISTS outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                order_id TEXT NOT NULL REFERENCES orders (id),
                kind TEXT NOT NULL CHECK (kind <> ''),
                payload TEXT NOT NULL,
                created_at REAL NOT NULL
            )
            """,
            "CREATE INDEX IF NOT EXISTS outbox_order ON outbox (order_id, id)",
            """
            CREATE TABLE IF NOT EXISTS outbox_claims (
                consumer TEXT NOT NULL,
                event_id INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
                lease_until REAL NOT NULL,
                done INTEGER NOT NULL DEFAULT 0,
                attempts INTEGER NOT NULL DEFAULT 1,
                PRIMARY KEY (consumer, event_id)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS outbox_effects (
                consumer TEXT NOT NULL,
                effect_key TEXT NOT NULL,
                recorded_at REAL NOT NULL,
                PRIMARY KEY (consumer, effect_key)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS idempotency_keys (
                scope TEXT NOT NULL,
                key TEXT NOT NULL,
                request_hash TEXT NOT NULL,
                response TEXT NOT NULL,
                status_code INTEGER NOT NULL CHECK (status_code BETWEEN 100 AND 599),
                order_id TEXT,
                created_at REAL NOT NULL,
                expires_at REAL NOT NULL,
                PRIMARY KEY (scope, key)
            )
            """,
            """
            CREATE INDEX IF NOT EXISTS idempotency_keys_expiry
                ON idempotency_keys (expires_at)
            """,
        ),
    ),
    # The shipment's carrier, for listing a carrier's shipments (NULL until the order has
    # one), filled in from the documents of orders written before it existed.
    Migration(
        2,
        (
            "ALTER TABLE orders ADD COLUMN carrier TEXT",
            "UPDATE orders SET carrier = json_extract(doc, '$.shipment.carrier')",
            """
            CREATE INDEX IF NOT EXISTS orders_carrier
                ON orders (carrier, created_at DESC, id DESC) WHERE carrier IS NOT NULL
            """,
        ),
    ),
)

_IDEM_COLUMNS = (
    "scope, key, request_hash, response, status_code, order_id, created_at, expires_at"
)


def _claim_key(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    """Inside a write transaction: take the key, or raise DuplicateKey with the live
    record that holds it (an expired one is replaced)."""
    found = conn.execute(
        f"SELECT {_IDEM_COLUMNS} FROM idempotency_keys WHERE scope = ? AND key = ?",
        (row[0], row[1]),
    ).fetchone()
    if found is not None:
        existing = idempotency_record(found)
        if existing.expires_at > row[6]:  # live at the new record's created_at
            raise DuplicateKey(existing)
    conn.execute(
        f"INSERT OR REPLACE INTO idempotency_keys ({_IDEM_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        row,
    )


def _insert_events(conn: sqlite3.Connection, order: Order, rows: list[tuple[str, str]]) -> None:
    conn.executemany(
        "INSERT INTO outbox (order_id, kind, payload, created_at) VALUES (?, ?, ?, ?)",
        [(order.id, kind, payload, order.updated_at) for kind, payload in rows],
    )


def _create(
    conn: sqlite3.Connection,
    order: Order,
    doc: str,
    rows: list[tuple[str, str]],
    key_row: tuple[Any, ...] | None,
) -> None:
    with immediate_transaction(conn):
        if key_row is not None:
            _claim_key(conn, key_row)
        if conn.execute("SELECT 1 FROM orders WHERE id = ?", (order.id,)).fetchone():
            raise StoreConflict(f"order {order.id} already exists")
        conn.execute(
            "INSERT INTO orders (id, customer_ref, status, version, expires_at, created_at,"
            " updated_at, doc, carrier) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                order.id,
                order.customer_ref,
                order.status.value,
                order.version,
                order.expires_at,
                order.created_at,
                order.updated_at,
                doc,
                carrier_of(order),
            ),
        )
        conn.executemany(
            "INSERT INTO order_merchants (merchant_id, order_id, created_at) VALUES (?, ?, ?)",
            [(m, order.id, order.created_at) for m in sorted(order.merchant_ids)],
        )
        _insert_events(conn, order, rows)


def _save_key(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    with immediate_transaction(conn):
        _claim_key(conn, row)


def _get_key(
    conn: sqlite3.Connection, scope: str, key: str, now: float
) -> IdempotencyRecord | None:
    found = conn.execute(
        f"SELECT {_IDEM_COLUMNS} FROM idempotency_keys"
        " WHERE scope = ? AND key = ? AND expires_at > ?",
        (scope, key, now),
    ).fetchone()
    return None if found is None else idempotency_record(found)


def _purge_keys(conn: sqlite3.Connection, now: float) -> int:
    with immediate_transaction(conn):
        return conn.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,)).rowcount


def _get_order(conn: sqlite3.Connection, order_id: str) -> str | None:
    found = conn.execute("SELECT doc FROM orders WHERE id = ?", (order_id,)).fetchone()
    return None if found is None else str(found[0])


def _list(conn: sqlite3.Connection, query: str, args: tuple[Any, ...]) -> list[str]:
    return [doc for (doc,) in conn.execute(query, args)]


def _transition(
    conn: sqlite3.Connection,
    order_id: str,
    expected_version: int,
    new_order: Order,
    doc: str,
    rows: list[tuple[str, str]],
) -> None:
    with immediate_transaction(conn):
        found = conn.execute(
            "SELECT status, version FROM orders WHERE id = ?", (order_id,)
        ).fetchone()
        check_transition(
            order_id, expected_version, new_order, None if found is None else tuple(found)
        )
        conn.execute(
            "UPDATE orders SET status = ?, version = ?, expires_at = ?, updated_at = ?, doc = ?,"
            " carrier = ? WHERE id = ?",
            (
                new_order.status.value,
                new_order.version,
                new_order.expires_at,
                new_order.updated_at,
                doc,
                carrier_of(new_order),
                order_id,
            ),
        )
        _insert_events(conn, new_order, rows)


def _expiring(conn: sqlite3.Connection, before: float, limit: int) -> list[str]:
    rows = conn.execute(
        "SELECT doc FROM orders WHERE status IN ('pending_payment', 'authorized')"
        " AND expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at, id LIMIT ?",
        (before, limit),
    )
    return [doc for (doc,) in rows]


def _claim(
    conn: sqlite3.Connection, consumer: str, limit: int, lease_until: float, now: float
) -> list[OutboxEvent]:
    with immediate_transaction(conn):
        rows = conn.execute(
            """
            SELECT o.id, o.order_id, o.kind, o.payload, o.created_at, c.attempts
            FROM outbox AS o
            LEFT JOIN outbox_claims AS c ON c.consumer = ? AND c.event_id = o.id
            WHERE c.event_id IS NULL OR (c.done = 0 AND c.lease_until <= ?)
            ORDER BY o.id
            LIMIT ?
            """,
            (consumer, now, limit),
        ).fetchall()
        conn.executemany(
            """
            INSERT INTO outbox_claims (consumer, event_id, lease_until) VALUES (?, ?, ?)
            ON CONFLICT (consumer, event_id) DO UPDATE
                SET lease_until = excluded.lease_until, attempts = attempts + 1
            """,
            [(consumer, row[0], lease_until) for row in rows],
        )
    return [
        OutboxEvent(
            event_id, order_id, kind, loads(payload), created_at, 1 if prior is None else prior + 1
        )
        for event_id, order_id, kind, payload, created_at, prior in rows
    ]


def _complete(conn: sqlite3.Connection, consumer: str, ids: list[int]) -> None:
    with immediate_transaction(conn):
        for chunk in chunked(ids, IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            conn.execute(
                f"""
                INSERT INTO outbox_claims (consumer, event_id, lease_until, done)
                SELECT ?, id, 0, 1 FROM outbox WHERE id IN ({marks}) ORDER BY id
                ON CONFLICT (consumer, event_id) DO UPDATE SET done = 1
                """,
                (consumer, *chunk),
            )


def _record_effect(conn: sqlite3.Connection, consumer: str, effect_key: str) -> bool:
    with immediate_transaction(conn):
        cursor = conn.execute(
            "INSERT INTO outbox_effects (consumer, effect_key, recorded_at) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (consumer, effect_key, time.time()),
        )
        return cursor.rowcount == 1


class SqliteOrderStore:
    """OrderStore on one SQLite file (normally the ledger, shared with prices and stock)."""

    def __init__(self, path: str) -> None:
        self._db = SqliteExecutor(path, component="orders", migrations=MIGRATIONS)

    async def create_order(
        self,
        order: Order,
        events: Sequence[NewOutboxEvent],
        idempotency: IdempotencyRecord | None = None,
    ) -> Order:
        check_new_order(order)
        doc, rows = order_doc(order), event_rows(events)
        key_row = None if idempotency is None else idempotency_row(idempotency)
        await self._db.run(_create, order, doc, rows, key_row)
        return order

    async def save_idempotency(self, record: IdempotencyRecord) -> None:
        await self._db.run(_save_key, idempotency_row(record))

    async def get_idempotency(
        self, scope: str, key: str, *, now: float | None = None
    ) -> IdempotencyRecord | None:
        at = time.time() if now is None else float(now)
        return await self._db.run(_get_key, scope, key, at)

    async def purge_idempotency(self, now: float) -> int:
        return await self._db.run(_purge_keys, float(now))

    async def get_order(self, order_id: str) -> Order | None:
        doc = await self._db.run(_get_order, order_id)
        return None if doc is None else load_order(doc)

    async def list_orders(
        self,
        *,
        customer_ref: str | None = None,
        merchant_id: str | None = None,
        carrier: str | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> tuple[list[Order], str | None]:
        query, args = listing_query(
            customer_ref, merchant_id, carrier, cursor, limit, lambda _: "?"
        )
        docs = await self._db.run(_list, query, tuple(args))
        page = [load_order(doc) for doc in docs[:limit]]
        return page, next_cursor(page, limit, len(docs))

    async def transition(
        self,
        order_id: str,
        expected_version: int,
        new_order: Order,
        events: Sequence[NewOutboxEvent] = (),
    ) -> Order:
        doc, rows = order_doc(new_order), event_rows(events)
        await self._db.run(_transition, order_id, expected_version, new_order, doc, rows)
        return new_order

    async def orders_expiring(self, before: float, limit: int) -> list[Order]:
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be an integer >= 1")
        docs = await self._db.run(_expiring, float(before), limit)
        return [load_order(doc) for doc in docs]

    async def claim_events(
        self, consumer: str, limit: int, lease_s: float, now: float
    ) -> list[OutboxEvent]:
        check_claim(consumer, limit, lease_s, now)
        return await self._db.run(
            _claim, consumer, limit, float(now) + float(lease_s), float(now)
        )

    async def complete_events(self, consumer: str, event_ids: Sequence[int]) -> None:
        ids = sorted({int(i) for i in event_ids})
        if ids:
            await self._db.run(_complete, consumer, ids)

    async def record_effect(self, consumer: str, effect_key: str) -> bool:
        return await self._db.run(_record_effect, consumer, effect_key)

    async def close(self) -> None:
        await self._db.close()
