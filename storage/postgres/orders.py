"""Orders, outbox and idempotency keys on PostgreSQL (migration 0002).

Every write is one transaction: the order row, its merchant index rows, its outbox events
and (at creation) its idempotency key commit together or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

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
from storage.postgres._base import PgStore
from storage.postgres.pool import PgConnection, PgPool
from storage.records import IdempotencyRecord, NewOutboxEvent, OutboxEvent

_IDEM_COLUMNS = (
    "scope, key, request_hash, response, status_code, order_id, created_at, expires_at"
)

# Inserts the key, or takes over an expired one (expires_at <= the new record's
# created_at). ON CONFLICT ... WHERE sees the latest committed row, even one committed
# after this statement's snapshot, so two racing requests cannot both win a key.
_CLAIM_KEY = f"""
    INSERT INTO idempotency_keys ({_IDEM_COLUMNS})
    VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8)
    ON CONFLICT (scope, key) DO UPDATE SET
        request_hash = EXCLUDED.request_hash, response = EXCLUDED.response,
        status_code = EXCLUDED.status_code, order_id = EXCLUDED.order_id,
        created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
    WHERE idempotency_keys.expires_at <= EXCLUDED.created_at
    RETURNING 1
"""

_INSERT_ORDER = """
    INSERT INTO orders (id, customer_ref, status, version, expires_at, created_at,
                        updated_at, doc, carrier)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)
    ON CONFLICT (id) DO NOTHING
    RETURNING 1
"""

_INSERT_EVENTS = """
    INSERT INTO outbox (order_id, kind, payload, created_at)
    SELECT $1, kind, payload::jsonb, $4
    FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS e (kind, payload, n)
    ORDER BY n
"""

# Candidates are locked with SKIP LOCKED so concurrent claimers mostly take disjoint
# events without waiting; the upsert's WHERE is what guarantees it: a claim row that is
# done or still leased (as committed by anyone, even after this statement began) is not
# taken, and its id is not returned.
_CLAIM = """
    WITH candidates AS (
        SELECT o.id FROM outbox AS o
        LEFT JOIN outbox_claims AS c ON c.consumer = $1 AND c.event_id = o.id
        WHERE c.event_id IS NULL OR (NOT c.done AND c.lease_until <= $2)
        ORDER BY o.id
        LIMIT $3
        FOR UPDATE OF o SKIP LOCKED
    ), claimed AS (
        INSERT INTO outbox_claims AS c (consumer, event_id, lease_until)
        SELECT $1, id, $4 FROM candidates
        ON CONFLICT (consumer, event_id) DO UPDATE
            SET lease_until = EXCLUDED.lease_until, attempts = c.attempts + 1
            WHERE NOT c.done AND c.lease_until <= $2
        RETURNING c.event_id, c.attempts
    )
    SELECT o.id, o.order_id, o.kind, o.payload, o.created_at, claimed.attempts
    FROM claimed JOIN outbox AS o ON o.id = claimed.event_id
    ORDER BY o.id
"""

_COMPLETE = """
    INSERT INTO outbox_claims AS c (consumer, event_id, lease_until, done)
    SELECT $1, o.id, 0, true FROM outbox AS o WHERE o.id = ANY($2::bigint[])
    ORDER BY o.id
    ON CONFLICT (consumer, event_id) DO UPDATE SET done = true
"""

class PgOrderStore(PgStore):
    """OrderStore on PostgreSQL. Expects ``apply_migrations`` to have run on the pool."""

    def __init__(self, pool: PgPool) -> None:
        super().__init__(pool, "orders")

    # --- orders ----------------------------------------------------------------------

    async def create_order(
        self,
        order: Order,
        events: Sequence[NewOutboxEvent],
        idempotency: IdempotencyRecord | None = None,
    ) -> Order:
        check_new_order(order)
        doc = order_doc(order)
        rows = event_rows(events)
        key_row = None if idempotency is None else idempotency_row(idempotency)
        async with self._connection() as conn, conn.transaction():
            if key_row is not None:
                await self._claim_key(conn, key_row)
            inserted = await conn.fetchval(
                _INSERT_ORDER,
                order.id,
                order.customer_ref,
                order.status.value,
                order.version,
                order.expires_at,
                order.created_at,
                order.updated_at,
                doc,
                carrier_of(order),
            )
            if inserted is None:
                # Raising rolls the key back too.
                raise StoreConflict(f"order {order.id} already exists")
            await conn.executemany(
                "INSERT INTO order_merchants (merchant_id, order_id, created_at)"
                " VALUES ($1, $2, $3)",
                [(m, order.id, order.created_at) for m in sorted(order.merchant_ids)],
            )
            await self._insert_events(conn, order, rows)
        return order

    async def save_idempotency(self, record: IdempotencyRecord) -> None:
        row = idempotency_row(record)
        async with self._connection() as conn, conn.transaction():
            await self._claim_key(conn, row)

    async def _claim_key(self, conn: PgConnection, row: tuple[object, ...]) -> None:
        if await conn.fetchval(_CLAIM_KEY, *row) is not None:
            return
        found = await conn.fetch(
            f"SELECT {_IDEM_COLUMNS} FROM idempotency_keys WHERE scope = $1 AND key = $2",
            row[0],
            row[1],
        )
        # The conflicting row is committed and live (the upsert waited for it), and an
        # expired row would have been taken over, so it is there.
        raise DuplicateKey(idempotency_record(found[0]))

    async def _insert_events(
        self, conn: PgConnection, order: Order, rows: list[tuple[str, str]]
    ) -> None:
        if rows:
            await conn.execute(
                _INSERT_EVENTS,
                order.id,
                [kind for kind, _ in rows],
                [payload for _, payload in rows],
                order.updated_at,
            )

    async def get_idempotency(
        self, scope: str, key: str, *, now: float | None = None
    ) -> IdempotencyRecord | None:
        at = time.time() if now is None else now
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_IDEM_COLUMNS} FROM idempotency_keys"
                " WHERE scope = $1 AND key = $2 AND expires_at > $3",
                scope,
                key,
                float(at),
            )
        return idempotency_record(rows[0]) if rows else None

    async def purge_idempotency(self, now: float) -> int:
        async with self._connection() as conn:
            status = await conn.execute(
                "DELETE FROM idempotency_keys WHERE expires_at <= $1", float(now)
            )
        return int(status.split()[-1])

    async def get_order(self, order_id: str) -> Order | None:
        async with self._connection() as conn:
            doc = await conn.fetchval("SELECT doc FROM orders WHERE id = $1", order_id)
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
            customer_ref, merchant_id, carrier, cursor, limit, lambda n: f"${n}"
        )
        async with self._connection() as conn:
            rows = await conn.fetch(query, *args)
        page = [load_order(doc) for (doc,) in rows[:limit]]
        return page, next_cursor(page, limit, len(rows))

    async def transition(
        self,
        order_id: str,
        expected_version: int,
        new_order: Order,
        events: Sequence[NewOutboxEvent] = (),
    ) -> Order:
        doc = order_doc(new_order)
        rows = event_rows(events)
        async with self._connection() as conn, conn.transaction():
            # The row lock serialises writers of one order: the version read here is the
            # one the update replaces.
            found = await conn.fetch(
                "SELECT status, version FROM orders WHERE id = $1 FOR UPDATE", order_id
            )
            stored = (found[0][0], found[0][1]) if found else None
            check_transition(order_id, expected_version, new_order, stored)
            await conn.execute(
                "UPDATE orders SET status = $2, version = $3, expires_at = $4,"
                " updated_at = $5, doc = $6::jsonb, carrier = $7 WHERE id = $1",
                order_id,
                new_order.status.value,
                new_order.version,
                new_order.expires_at,
                new_order.updated_at,
                doc,
                carrier_of(new_order),
            )
            await self._insert_events(conn, new_order, rows)
        return new_order

    async def orders_expiring(self, before: float, limit: int) -> list[Order]:
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be an integer >= 1")
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT doc FROM orders"
                " WHERE status = ANY($1::text[]) AND expires_at IS NOT NULL"
                " AND expires_at <= $2 ORDER BY expires_at, id LIMIT $3",
                [OrderStatus.PENDING_PAYMENT.value, OrderStatus.AUTHORIZED.value],
                float(before),
                limit,
            )
        return [load_order(doc) for (doc,) in rows]

    # --- outbox ----------------------------------------------------------------------

    async def claim_events(
        self, consumer: str, limit: int, lease_s: float, now: float
    ) -> list[OutboxEvent]:
        check_claim(consumer, limit, lease_s, now)
        async with self._connection() as conn, conn.transaction():
            rows = await conn.fetch(
                _CLAIM, consumer, float(now), limit, float(now) + float(lease_s)
            )
        return [
            OutboxEvent(event_id, order_id, kind, loads(payload), created_at, attempts)
            for event_id, order_id, kind, payload, created_at, attempts in rows
        ]

    async def complete_events(self, consumer: str, event_ids: Sequence[int]) -> None:
        ids = sorted({int(i) for i in event_ids})
        if not ids:
            return
        async with self._connection() as conn, conn.transaction():
            await conn.execute(_COMPLETE, consumer, ids)

    async def record_effect(self, consumer: str, effect_key: str) -> bool:
        async with self._connection() as conn:
            inserted = await conn.fetchval(
                "INSERT INTO outbox_effects (consumer, effect_key) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                consumer,
                effect_key,
            )
        return inserted is not None
