"""Stock adapter on PostgreSQL: levels, open reservations and the journal (migration 0001)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from storage.postgres._base import WRITE_CHUNK, PgStore, chunked, require_int
from storage.postgres.pool import PgPool
from storage.records import ReservationRecord, StockRecord, StockWrite

_UPSERT_LEVEL = """
    INSERT INTO stock (sku, on_hand, reserved, sold) VALUES ($1, $2, $3, $4)
    ON CONFLICT (sku) DO UPDATE SET
        on_hand = EXCLUDED.on_hand, reserved = EXCLUDED.reserved, sold = EXCLUDED.sold
"""

_UPSERT_RESERVATION = """
    INSERT INTO reservations (id, sku, quantity, expires_at) VALUES ($1, $2, $3, $4)
    ON CONFLICT (id) DO UPDATE SET
        sku = EXCLUDED.sku, quantity = EXCLUDED.quantity, expires_at = EXCLUDED.expires_at
"""

# One statement for the whole journal, however many rows: the arrays travel as six
# parameters. ORDER BY the ordinality so seq (and journal_for) follows the batch order.
# A replayed op (actor restart, retried batch) must not be journalled twice: only the
# uniqueness conflict is ignored, CHECK/NOT NULL still fail the write.
_INSERT_JOURNAL = """
    INSERT INTO stock_journal (op_id, sku, kind, quantity, reservation_id, at)
    SELECT op_id, sku, kind, quantity, reservation_id, at
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::float8[])
        WITH ORDINALITY AS j (op_id, sku, kind, quantity, reservation_id, at, n)
    ORDER BY n
    ON CONFLICT (op_id, sku, kind) DO NOTHING
"""

# One statement, so levels and reservations come from one snapshot. Reservations come back
# soonest-expiring first; COLLATE "C" breaks ties in byte order, as SQLite does.
_LOAD = """
    SELECT s.sku, s.on_hand, s.reserved, s.sold, r.id, r.quantity, r.expires_at
    FROM stock AS s LEFT JOIN reservations AS r ON r.sku = s.sku
    WHERE s.sku = ANY($1::text[])
    ORDER BY r.expires_at, r.id COLLATE "C"
"""


def _level_row(r: StockRecord) -> tuple[str, int, int, int]:
    return (
        r.sku,
        require_int(r.on_hand, "on_hand"),
        require_int(r.reserved, "reserved"),
        require_int(r.sold, "sold"),
    )


class PgStockStore(PgStore):
    """StockStore on PostgreSQL. Expects ``apply_migrations`` to have run on the pool."""

    def __init__(self, pool: PgPool) -> None:
        super().__init__(pool, "stock")

    async def load(
        self, skus: Sequence[str]
    ) -> dict[str, tuple[StockRecord, list[ReservationRecord]]]:
        """Only SKUs with a stored level appear in the result."""
        unique = list(dict.fromkeys(skus))
        if not unique:
            return {}
        async with self._connection() as conn:
            rows = await conn.fetch(_LOAD, unique)
        found: dict[str, tuple[StockRecord, list[ReservationRecord]]] = {}
        for sku, on_hand, reserved, sold, rid, quantity, expires_at in rows:
            entry = found.get(sku)
            if entry is None:
                entry = found[sku] = (StockRecord(sku, on_hand, reserved, sold), [])
            if rid is not None:  # the LEFT JOIN's row for a SKU without reservations
                entry[1].append(ReservationRecord(rid, sku, quantity, expires_at))
        return found

    async def write(self, change: StockWrite) -> None:
        # Every value is checked before the transaction opens. Rows go in key order (a
        # stable sort, so a key listed twice still ends with its last record): concurrent
        # batches then lock the rows they share in the same order and cannot deadlock.
        levels = [_level_row(r) for r in sorted(change.levels, key=lambda r: r.sku)]
        reservations = [
            (r.id, r.sku, require_int(r.quantity, "reservation quantity"), float(r.expires_at))
            for r in sorted(change.upsert_reservations, key=lambda r: r.id)
        ]
        journal = change.journal
        journal_columns = (
            [c.op_id for c in journal],
            [c.sku for c in journal],
            [c.kind for c in journal],
            [require_int(c.quantity, "journal quantity") for c in journal],
            [c.reservation_id for c in journal],
            [float(c.at) for c in journal],
        )
        async with self._connection() as conn, conn.transaction():
            if levels:
                await conn.executemany(_UPSERT_LEVEL, levels)
            if reservations:
                await conn.executemany(_UPSERT_RESERVATION, reservations)
            # Deletes after upserts: a batch that both created and released a reservation
            # ends with it gone, whichever way the actor accumulated the two lists.
            if change.delete_reservations:
                await conn.execute(
                    "DELETE FROM reservations WHERE id = ANY($1::text[])",
                    list(change.delete_reservations),
                )
            if journal:
                await conn.execute(_INSERT_JOURNAL, *journal_columns)

    async def put_levels(self, records: Iterable[StockRecord]) -> int:
        written = 0
        # One transaction, streamed in chunks: all or nothing, like the SQLite adapter.
        async with self._connection() as conn, conn.transaction():
            for chunk in chunked(records, WRITE_CHUNK):
                await conn.executemany(_UPSERT_LEVEL, [_level_row(r) for r in chunk])
                written += len(chunk)
        return written

    async def applied_ops(self, op_ids: Sequence[str]) -> set[str]:
        if not op_ids:
            return set()
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT op_id FROM stock_journal WHERE op_id = ANY($1::text[])",
                list(op_ids),
            )
        return {op_id for (op_id,) in rows}

    async def journal_for(self, sku: str) -> list[tuple[str, str, int]]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT op_id, kind, quantity FROM stock_journal WHERE sku = $1 ORDER BY seq",
                sku,
            )
        return [(op_id, kind, quantity) for op_id, kind, quantity in rows]
