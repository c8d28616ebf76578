"""Stock adapter: levels, open reservations and the operation journal, in the ledger file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from storage.records import ReservationRecord, StockRecord, StockWrite
from storage.sqlite.connection import (
    IN_CHUNK,
    WRITE_CHUNK,
    Migration,
    SqliteExecutor,
    chunked,
    immediate_transaction,
    read_snapshot,
)

MIGRATIONS = (
    Migration(
        1,
        (
            # The CHECKs are the last line of defence against an oversell bug in the actor:
            # a write that would break them fails as a whole instead of persisting.
            """
            CREATE TABLE IF NOT EXISTS stock (
                sku TEXT PRIMARY KEY,
                on_hand INTEGER NOT NULL CHECK (typeof(on_hand) = 'integer' AND on_hand >= 0),
                reserved INTEGER NOT NULL CHECK (typeof(reserved) = 'integer' AND reserved >= 0),
                sold INTEGER NOT NULL CHECK (typeof(sold) = 'integer' AND sold >= 0),
                CHECK (on_hand - reserved - sold >= 0)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS reservations (
                id TEXT PRIMARY KEY,
                sku TEXT NOT NULL REFERENCES stock (sku),
                quantity INTEGER NOT NULL CHECK (typeof(quantity) = 'integer' AND quantity > 0),
                expires_at REAL NOT NULL
            )
            """,
            "CREATE INDEX IF NOT EXISTS reservations_sku ON reservations (sku)",
            """
            CREATE TABLE IF NOT EXISTS stock_journal (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                op_id TEXT NOT NULL,
                sku TEXT NOT NULL,
                kind TEXT NOT NULL,
                quantity INTEGER NOT NULL CHECK (typeof(quantity) = 'integer'),
                reservation_id TEXT,
                at REAL NOT NULL,
                UNIQUE (op_id, sku, kind)
            )
            """,
            "CREATE INDEX IF NOT EXISTS stock_journal_sku ON stock_journal (sku, seq)",
        ),
    ),
)

_UPSERT_LEVEL = """
    INSERT INTO stock (sku, on_hand, reserved, sold) VALUES (?, ?, ?, ?)
    ON CONFLICT (sku) DO UPDATE SET
        on_hand = excluded.on_hand, reserved = excluded.reserved, sold = excluded.sold
"""


def _load(
    conn: sqlite3.Connection, skus: list[str]
) -> dict[str, tuple[StockRecord, list[ReservationRecord]]]:
    found: dict[str, tuple[StockRecord, list[ReservationRecord]]] = {}
    # One read transaction so levels and reservations come from the same snapshot.
    with read_snapshot(conn):
        for chunk in chunked(skus, IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            for sku, on_hand, reserved, sold in conn.execute(
                f"SELECT sku, on_hand, reserved, sold FROM stock WHERE sku IN ({marks})", chunk
            ):
                found[sku] = (StockRecord(sku, on_hand, reserved, sold), [])
            for rid, sku, quantity, expires_at in conn.execute(
                f"""
                SELECT id, sku, quantity, expires_at FROM reservations
                WHERE sku IN ({marks}) ORDER BY expires_at, id
                """,
                chunk,
            ):
                # The foreign key guarantees the level row exists.
                found[sku][1].append(ReservationRecord(rid, sku, quantity, expires_at))
    return found


def _write(conn: sqlite3.Connection, change: StockWrite) -> None:
    with immediate_transaction(conn):
        if change.levels:
            conn.executemany(
                _UPSERT_LEVEL, [(r.sku, r.on_hand, r.reserved, r.sold) for r in change.levels]
            )
        if change.upsert_reservations:
            conn.executemany(
                """
                INSERT INTO reservations (id, sku, quantity, expires_at) VALUES (?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET
                    sku = excluded.sku,
                    quantity = excluded.quantity,
                    expires_at = excluded.expires_at
                """,
                [
                    (r.id, r.sku, r.quantity, float(r.expires_at))
                    for r in change.upsert_reservations
                ],
            )
        # Deletes after upserts: a batch that both created and released a reservation
        # ends with it gone, whichever way the actor accumulated the two lists.
        if change.delete_reservations:
            conn.executemany(
                "DELETE FROM reservations WHERE id = ?",
                [(rid,) for rid in change.delete_reservations],
            )
        if change.journal:
            # A replayed op (actor restart, retried batch) must not be journalled twice.
            # Only the uniqueness conflict is ignored; CHECK/NOT NULL still fail the write.
            conn.executemany(
                """
                INSERT INTO stock_journal (op_id, sku, kind, quantity, reservation_id, at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (op_id, sku, kind) DO NOTHING
                """,
                [
                    (c.op_id, c.sku, c.kind, c.quantity, c.reservation_id, float(c.at))
                    for c in change.journal
                ],
            )


def _put_levels(conn: sqlite3.Connection, records: Iterable[StockRecord]) -> int:
    written = 0
    with immediate_transaction(conn):
        for chunk in chunked(records, WRITE_CHUNK):
            conn.executemany(_UPSERT_LEVEL, [(r.sku, r.on_hand, r.reserved, r.sold) for r in chunk])
            written += len(chunk)
    return written


def _applied_ops(conn: sqlite3.Connection, op_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in chunked(op_ids, IN_CHUNK):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT DISTINCT op_id FROM stock_journal WHERE op_id IN ({marks})", chunk
        )
        found.update(op_id for (op_id,) in rows)
    return found


def _journal_for(conn: sqlite3.Connection, sku: str) -> list[tuple[str, str, int]]:
    rows = conn.execute(
        "SELECT op_id, kind, quantity FROM stock_journal WHERE sku = ? ORDER BY seq", (sku,)
    )
    return [(op_id, kind, quantity) for op_id, kind, quantity in rows]


class SqliteStockStore:
    """StockStore on one SQLite file (normally the ledger, shared with prices)."""

    def __init__(self, path: str) -> None:
        self._db = SqliteExecutor(path, component="stock", migrations=MIGRATIONS)

    async def load(
        self, skus: Sequence[str]
    ) -> dict[str, tuple[StockRecord, list[ReservationRecord]]]:
        """Only SKUs with a stored level appear in the result."""
        unique = list(dict.fromkeys(skus))
        if not unique:
            return {}
        return await self._db.run(_load, unique)

    async def write(self, change: StockWrite) -> None:
        await self._db.run(_write, change)

    async def put_levels(self, records: Iterable[StockRecord]) -> int:
        # Consumed on the worker thread inside one transaction: streamed, not materialised.
        return await self._db.run(_put_levels, records)

    async def applied_ops(self, op_ids: Sequence[str]) -> set[str]:
        return await self._db.run(_applied_ops, list(op_ids)) if op_ids else set()

    async def journal_for(self, sku: str) -> list[tuple[str, str, int]]:
        return await self._db.run(_journal_for, sku)

    async def close(self) -> None:
        await self._db.close()
