"""The peer's PostgreSQL tables and statements, in a schema of its own.

Every statement is a constant string per schema, so asyncpg's per-connection statement
cache prepares each once and then only binds and executes it. Multi-row work goes in one
statement (``= ANY($1)``, ``unnest``, data-modifying CTEs): no statement per line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson

# Two workers start together: one creates the tables, the other waits on this lock.
SCHEMA_LOCK = 0x7065_6572  # "peer"


def schema_ddl(schema: str) -> list[str]:
    s = schema
    return [
        f'CREATE SCHEMA IF NOT EXISTS "{s}"',
        # Prices, and what a checkout line needs of the catalog (product and merchant):
        # one row per SKU, so a checkout reads everything about its SKUs in one query.
        f"""CREATE TABLE IF NOT EXISTS "{s}".prices (
            sku text PRIMARY KEY,
            product_id text NOT NULL,
            merchant_id text NOT NULL,
            amount bigint NOT NULL CHECK (amount >= 0),
            currency text NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS "{s}".stock (
            sku text PRIMARY KEY,
            on_hand integer NOT NULL,
            reserved integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
            sold integer NOT NULL DEFAULT 0 CHECK (sold >= 0),
            CHECK (on_hand - reserved - sold >= 0)
        )""",
        f"""CREATE TABLE IF NOT EXISTS "{s}".reservations (
            id text PRIMARY KEY,
            sku text NOT NULL,
            quantity integer NOT NULL CHECK (quantity > 0),
            order_id text,
            expires_at double precision NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS "{s}".orders (
            id text PRIMARY KEY,
            cart_id text NOT NULL,
            status text NOT NULL,
            body jsonb NOT NULL,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS "{s}".checkouts (
            idempotency_key text PRIMARY KEY,
            request_hash text NOT NULL,
            status integer,
            response jsonb,
            created_at double precision NOT NULL
        )""",
    ]


@dataclass(frozen=True)
class Sql:
    """Every statement the peer runs, for one schema."""

    prices: str
    page_stock: str
    checkout_claim: str
    checkout_existing: str
    checkout_store: str
    lock_lines: str
    place_order: str
    authorize: str
    decline: str
    get_order: str
    flash_reserve: str
    sku_exists: str

    @classmethod
    def for_schema(cls, schema: str) -> Sql:
        s = f'"{schema}"'
        return cls(
            prices=f"SELECT sku, amount, currency, product_id, merchant_id FROM {s}.prices "
            "WHERE sku = ANY($1::text[])",
            page_stock=f"SELECT sku, on_hand - reserved - sold AS available FROM {s}.stock "
            "WHERE sku = ANY($1::text[])",
            checkout_claim=f"INSERT INTO {s}.checkouts (idempotency_key, request_hash, created_at) "
            "VALUES ($1, $2, $3) ON CONFLICT (idempotency_key) DO NOTHING "
            "RETURNING idempotency_key",
            checkout_existing=f"SELECT request_hash, status, response FROM {s}.checkouts "
            "WHERE idempotency_key = $1",
            checkout_store=f"UPDATE {s}.checkouts SET status = $2, response = $3 "
            "WHERE idempotency_key = $1",
            # Row locks in SKU order, so two checkouts of the same SKUs never deadlock.
            lock_lines=f"SELECT st.sku, st.on_hand - st.reserved - st.sold AS available, "
            "p.amount, p.currency, p.product_id, p.merchant_id "
            f"FROM {s}.stock st JOIN {s}.prices p ON p.sku = st.sku "
            "WHERE st.sku = ANY($1::text[]) ORDER BY st.sku FOR UPDATE OF st",
            # Reserve every line, record the reservations and create the order: one
            # statement, inside the transaction that holds the row locks (PostgreSQL runs
            # every data-modifying CTE to completion, read or not).
            place_order=f"""WITH lines AS (
                    SELECT * FROM unnest($1::text[], $2::integer[]) AS l(sku, quantity)
                ), reserved AS (
                    UPDATE {s}.stock st SET reserved = st.reserved + lines.quantity
                    FROM lines WHERE st.sku = lines.sku RETURNING st.sku
                ), held AS (
                    INSERT INTO {s}.reservations (id, sku, quantity, order_id, expires_at)
                    SELECT $3 || ':' || lines.sku, lines.sku, lines.quantity, $3, $4
                    FROM lines RETURNING id
                )
                INSERT INTO {s}.orders (id, cart_id, status, body, created_at, updated_at)
                VALUES ($3, $5, 'pending_payment', $6, $7, $7)
                RETURNING id""",
            # The order's new state and the checkout's stored answer, atomically.
            authorize=f"""WITH o AS (
                    UPDATE {s}.orders SET status = $2, body = $3, updated_at = $4
                    WHERE id = $1
                )
                UPDATE {s}.checkouts SET status = $6, response = $7
                WHERE idempotency_key = $5""",
            # A declined payment: release the stock, fail the order, store the answer.
            decline=f"""WITH released AS (
                    DELETE FROM {s}.reservations WHERE order_id = $1
                    RETURNING sku, quantity
                ), stock AS (
                    UPDATE {s}.stock st SET reserved = st.reserved - r.quantity
                    FROM released r WHERE st.sku = r.sku
                ), o AS (
                    UPDATE {s}.orders SET status = 'payment_failed', body = $2, updated_at = $3
                    WHERE id = $1
                )
                UPDATE {s}.checkouts SET status = $5, response = $6
                WHERE idempotency_key = $4""",
            get_order=f"SELECT body FROM {s}.orders WHERE id = $1",
            # One SKU: the conditional UPDATE takes the same row lock as SELECT ... FOR
            # UPDATE, in one round trip instead of four.
            flash_reserve=f"""WITH taken AS (
                    UPDATE {s}.stock SET reserved = reserved + $2
                    WHERE sku = $1 AND on_hand - reserved - sold >= $2 RETURNING sku
                )
                INSERT INTO {s}.reservations (id, sku, quantity, order_id, expires_at)
                SELECT $3, sku, $2, NULL, $4 FROM taken RETURNING id""",
            sku_exists=f"SELECT 1 FROM {s}.stock WHERE sku = $1",
        )


def _jsonb_encode(value: Any) -> str:
    return orjson.dumps(value).decode()


async def init_connection(conn: Any) -> None:
    """jsonb in and out as Python objects, through orjson."""
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=orjson.loads, schema="pg_catalog"
    )


async def create_schema(conn: Any, schema: str) -> None:
    """The peer's tables, created once (workers race here; the advisory lock orders them)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        for statement in schema_ddl(schema):
            await conn.execute(statement)


async def open_pool(dsn: str, size: int, schema: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        await create_schema(conn, schema)
    finally:
        await conn.close()
    return await asyncpg.create_pool(
        dsn, min_size=size, max_size=size, init=init_connection, command_timeout=30
    )
