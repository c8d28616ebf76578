"""What only the PostgreSQL adapters have: the pool, migrations and driver error mapping."""

from __future__ import annotations

import asyncio
import time

import asyncpg  # type: ignore[import-untyped]
import pytest

from storage.errors import StorageError, StoreIntegrityError, StoreUnavailable
from storage.postgres import (
    PgPool,
    PgPriceStore,
    PgStockStore,
    apply_migrations,
    load_migrations,
    map_pg_errors,
)
from storage.postgres.migrate import Migration
from storage.records import PriceRecord, ReservationRecord, StockRecord, StockWrite
from tests.stores.conftest import free_port

LEDGER_TABLES = {
    "feira_schema_migrations",
    "prices",
    "promotions",
    "stock",
    "reservations",
    "stock_journal",
    "orders",
    "order_merchants",
    "outbox",
    "outbox_claims",
    "outbox_effects",
    "idempotency_keys",
    "accounts",
    "api_keys",
    "refresh_families",
    "refresh_tokens",
}
SHIPPED = ["0001_ledger", "0002_orders", "0003_identity"]
SHIPPED_APPLIED = [(1, "0001_ledger"), (2, "0002_orders"), (3, "0003_identity")]


async def tables_in(pool: PgPool) -> set[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    return {row[0] for row in rows}


async def applied(pool: PgPool) -> list[tuple[int, str]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT version, name FROM feira_schema_migrations ORDER BY version"
        )
    return [(row[0], row[1]) for row in rows]


# --- pool -----------------------------------------------------------------------------------


def test_pool_and_stores_do_not_connect_at_construction() -> None:
    # Synchronous on purpose: no event loop exists, and nothing may need one yet.
    unreachable = PgPool(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    PgPriceStore(unreachable)
    PgStockStore(unreachable)
    assert unreachable.connected is False


async def test_pool_connects_on_first_use(pg_pool: PgPool, pg_schema: str) -> None:
    pool = PgPool(pg_schema)  # a second pool on the schema pg_pool has migrated
    stock = PgStockStore(pool)
    try:
        assert pool.connected is False
        assert await stock.load(["A"]) == {}
        assert pool.connected is True
    finally:
        await pool.close()
    assert pool.connected is False
    with pytest.raises(StoreUnavailable, match="closed"):
        await stock.load(["A"])


async def test_closed_port_is_unavailable_quickly() -> None:
    pool = PgPool(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        await PgStockStore(pool).load(["A"])
    assert time.monotonic() - started < 3
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(StoreUnavailable):
        await apply_migrations(pool)  # still retries the connect, still maps the error
    await pool.close()


async def test_command_timeout_is_unavailable(pg_schema: str) -> None:
    pool = PgPool(pg_schema, command_timeout_s=0.2)
    try:
        with pytest.raises(StoreUnavailable) as info:
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_sleep(5)")
        assert isinstance(info.value.__cause__, TimeoutError)
        # The pool recovers: the next call gets a working connection.
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_serialization_failure_is_unavailable(pg_pool: PgPool) -> None:
    stock = PgStockStore(pg_pool)
    await stock.put_levels([StockRecord("A", 10, 0, 0)])

    async def update_after_a_concurrent_commit() -> None:
        async with pg_pool.acquire() as first, first.transaction(isolation="repeatable_read"):
            await first.fetch("SELECT on_hand FROM stock WHERE sku = 'A'")  # takes the snapshot
            await stock.put_levels([StockRecord("A", 11, 0, 0)])  # commits on another connection
            await first.execute("UPDATE stock SET on_hand = 12 WHERE sku = 'A'")

    with pytest.raises(StoreUnavailable) as info:
        await update_after_a_concurrent_commit()
    assert isinstance(info.value.__cause__, asyncpg.SerializationError)
    assert (await stock.load(["A"]))["A"][0] == StockRecord("A", 11, 0, 0)


@pytest.mark.parametrize(
    ("statement", "cause"),
    [
        ("INSERT INTO stock VALUES ('X', 1, 2, 0)", asyncpg.CheckViolationError),
        ("INSERT INTO stock VALUES ('A', 1, 0, 0)", asyncpg.UniqueViolationError),
        (
            "INSERT INTO reservations VALUES ('r', 'ghost', 1, 1.0)",
            asyncpg.ForeignKeyViolationError,
        ),
        ("INSERT INTO prices VALUES ('X', 1, NULL, 'c')", asyncpg.NotNullViolationError),
        ("INSERT INTO stock VALUES ('X', 99999999999999999999, 0, 0)", asyncpg.DataError),
    ],
    ids=["check", "unique", "foreign-key", "not-null", "out-of-range"],
)
async def test_refused_data_is_an_integrity_error(
    pg_pool: PgPool, statement: str, cause: type[Exception]
) -> None:
    await PgStockStore(pg_pool).put_levels([StockRecord("A", 1, 0, 0)])
    with pytest.raises(StoreIntegrityError) as info:
        async with pg_pool.acquire() as conn:
            await conn.execute(statement)
    assert isinstance(info.value.__cause__, cause)


async def test_store_constraint_violation_keeps_the_driver_cause(pg_pool: PgPool) -> None:
    stock = PgStockStore(pg_pool)
    await stock.put_levels([StockRecord("A", 1, 0, 0)])
    with pytest.raises(StoreIntegrityError) as info:
        await stock.write(StockWrite((StockRecord("A", 1, 2, 0),), (), (), ()))
    assert isinstance(info.value.__cause__, asyncpg.CheckViolationError)
    with pytest.raises(StoreIntegrityError) as info:
        await stock.write(StockWrite((), (ReservationRecord("r", "B", 1, 1.0),), (), ()))
    assert isinstance(info.value.__cause__, asyncpg.ForeignKeyViolationError)


async def test_value_beyond_64_bits_is_an_integrity_error(pg_pool: PgPool) -> None:
    with pytest.raises(StoreIntegrityError):
        await PgPriceStore(pg_pool).put_prices([PriceRecord("S", 2**63, "EUR", "c")])


async def test_missing_schema_is_a_storage_error(pg_schema: str) -> None:
    pool = PgPool(pg_schema)  # migrations deliberately not applied
    try:
        with pytest.raises(StorageError) as info:
            await PgPriceStore(pool).get_prices(["A"])
        assert type(info.value) is StorageError
        assert isinstance(info.value.__cause__, asyncpg.UndefinedTableError)
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (asyncpg.ConnectionDoesNotExistError("gone"), StoreUnavailable),
        (asyncpg.CannotConnectNowError("starting up"), StoreUnavailable),
        (asyncpg.TooManyConnectionsError("too many"), StoreUnavailable),
        (asyncpg.SerializationError("serialize"), StoreUnavailable),
        (asyncpg.DeadlockDetectedError("deadlock"), StoreUnavailable),
        (asyncpg.AdminShutdownError("shutdown"), StoreUnavailable),
        (asyncpg.QueryCanceledError("statement timeout"), StoreUnavailable),
        (ConnectionRefusedError(111, "refused"), StoreUnavailable),
        (OSError("network unreachable"), StoreUnavailable),
        (TimeoutError(), StoreUnavailable),
        (asyncpg.CheckViolationError("check"), StoreIntegrityError),
        (asyncpg.UniqueViolationError("unique"), StoreIntegrityError),
        (asyncpg.ForeignKeyViolationError("fk"), StoreIntegrityError),
        (asyncpg.NotNullViolationError("not null"), StoreIntegrityError),
        (asyncpg.DataError("invalid input for query argument"), StoreIntegrityError),
        (asyncpg.NumericValueOutOfRangeError("out of range"), StoreIntegrityError),
        (asyncpg.UndefinedTableError("no such table"), StorageError),
        (asyncpg.PostgresSyntaxError("syntax"), StorageError),
        (asyncpg.InvalidPasswordError("auth"), StorageError),
        (asyncpg.InterfaceError("another operation is in progress"), StorageError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else "",
)
def test_map_pg_errors(raised: BaseException, expected: type[StorageError]) -> None:
    with pytest.raises(StorageError) as info, map_pg_errors():
        raise raised
    assert type(info.value) is expected
    assert info.value.__cause__ is raised


def test_map_pg_errors_leaves_other_errors_alone() -> None:
    with pytest.raises(ValueError, match="not a driver error"), map_pg_errors():
        raise ValueError("not a driver error")


# --- migrations -----------------------------------------------------------------------------


def test_packaged_migrations_are_found() -> None:
    migrations = load_migrations()
    assert [m.name for m in migrations] == SHIPPED
    assert migrations[0].version == 1
    assert "CREATE TABLE stock_journal" in migrations[0].sql


async def test_migrations_apply_once(pg_schema: str) -> None:
    pool = PgPool(pg_schema)
    try:
        assert await apply_migrations(pool) == SHIPPED
        assert await apply_migrations(pool) == []
        assert await tables_in(pool) == LEDGER_TABLES
        assert await applied(pool) == SHIPPED_APPLIED
    finally:
        await pool.close()


async def test_concurrent_starters_apply_each_migration_once(pg_schema: str) -> None:
    # Separate pools: separate processes starting at once, as far as the server can tell.
    pools = [PgPool(pg_schema, min_size=1, max_size=1) for _ in range(4)]
    try:
        results = await asyncio.gather(*(apply_migrations(pool) for pool in pools))
        assert sorted(results) == [[], [], [], SHIPPED]
        assert await applied(pools[0]) == SHIPPED_APPLIED
    finally:
        for pool in pools:
            await pool.close()


async def test_later_migrations_apply_in_version_order(pg_schema: str) -> None:
    base = load_migrations()[:1]
    later = [
        Migration(3, "0003_more", "ALTER TABLE audit ADD COLUMN note TEXT"),
        Migration(2, "0002_audit", "CREATE TABLE audit (id BIGINT PRIMARY KEY)"),
    ]
    pool = PgPool(pg_schema)
    try:
        assert await apply_migrations(pool, base) == ["0001_ledger"]
        assert await apply_migrations(pool, base + later) == ["0002_audit", "0003_more"]
        assert await apply_migrations(pool, base + later) == []
        assert [v for v, _ in await applied(pool)] == [1, 2, 3]
    finally:
        await pool.close()


async def test_failed_migration_leaves_nothing_behind(pg_schema: str) -> None:
    broken = Migration(2, "0002_broken", "CREATE TABLE half (x INT); SELECT * FROM nowhere;")
    pool = PgPool(pg_schema)
    try:
        with pytest.raises(StorageError):
            await apply_migrations(pool, [*load_migrations()[:1], broken])
        # 0001 committed in its own transaction; 0002 rolled back entirely.
        assert "half" not in await tables_in(pool)
        assert await applied(pool) == [(1, "0001_ledger")]
    finally:
        await pool.close()
