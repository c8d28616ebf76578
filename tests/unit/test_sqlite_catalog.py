"""What only the SQLite catalog has: its file, schema migrations and query plans, plus the
shared SqliteExecutor it is built on. The CatalogStore contract itself is tested for every
backend in tests/catalog/."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from orjson import dumps

from storage.errors import StoreIntegrityError, StoreUnavailable
from storage.records import ProductDoc
from storage.sqlite.catalog import MIGRATIONS, SqliteCatalogStore
from storage.sqlite.connection import Migration, SqliteExecutor
from tests.catalog.products import doc


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteCatalogStore]:
    catalog = SqliteCatalogStore(str(tmp_path / "catalog.db"))
    yield catalog
    await catalog.close()


async def test_construction_opens_nothing(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    catalog = SqliteCatalogStore(str(path))
    assert not path.exists()
    await catalog.close()
    assert not path.exists()


def _plan(conn: sqlite3.Connection, query: str, args: tuple[object, ...]) -> str:
    return " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query, args))


async def test_queries_use_their_indexes(store: SqliteCatalogStore, tmp_path: Path) -> None:
    await store.put_products(doc(f"p-{i}", merchant=f"m-{i % 3}") for i in range(50))
    with sqlite3.connect(tmp_path / "catalog.db") as conn:
        merchant = "SELECT id, doc FROM products WHERE merchant_id = ? AND id > ?"
        assert "USING INDEX products_merchant" in _plan(
            conn, merchant + " ORDER BY id LIMIT ?", ("m-1", "", 11)
        )
        assert "USING INDEX products_merchant" in _plan(
            conn, merchant + " AND status = ? ORDER BY id LIMIT ?", ("m-1", "", "draft", 11)
        )
        changes = "SELECT seq, id, doc FROM products WHERE seq > ? ORDER BY seq LIMIT ?"
        assert "USING INDEX products_seq" in _plan(conn, changes, (0, 10))


async def test_migration_numbers_existing_products(tmp_path: Path) -> None:
    path = str(tmp_path / "catalog.db")
    old = SqliteExecutor(path, component="catalog", migrations=MIGRATIONS[:1])
    try:
        # A file from before the change feed: schema version 1 only.
        await old.run(_insert_v1, [doc("p-b"), doc("p-a", status="draft"), doc("p-c")])
    finally:
        await old.close()

    catalog = SqliteCatalogStore(path)
    try:
        assert [(seq, d["id"]) for seq, d in await catalog.changes_since(0, 10)] == [
            (1, "p-b"),
            (2, "p-a"),
            (3, "p-c"),
        ]
        assert await catalog.last_seq() == 3
        await catalog.put_products([doc("p-d")])
        assert [(seq, d["id"]) for seq, d in await catalog.changes_since(3, 10)] == [(4, "p-d")]
        page, _ = await catalog.list_merchant_products(
            "m-001", status="draft", cursor=None, limit=10
        )
        assert [d["id"] for d in page] == ["p-a"]
    finally:
        await catalog.close()


def _insert_v1(conn: sqlite3.Connection, docs: list[ProductDoc]) -> None:
    for d in docs:
        conn.execute(
            "INSERT INTO products (id, category, status, merchant_id, updated_at, doc)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                d["id"],
                d["category"],
                d["status"],
                d["merchant_id"],
                d["updated_at"],
                dumps(d).decode(),
            ),
        )


async def test_a_number_is_never_handed_out_twice(
    store: SqliteCatalogStore, tmp_path: Path
) -> None:
    await store.put_products([doc("p-1"), doc("p-2"), doc("p-3")])
    # No adapter call deletes yet; a later one (or an operator) may.
    with sqlite3.connect(tmp_path / "catalog.db") as conn:
        conn.execute("DELETE FROM products WHERE id = 'p-3'")
    await store.put_products([doc("p-4")])
    assert [(seq, d["id"]) for seq, d in await store.changes_since(0, 10)] == [
        (1, "p-1"),
        (2, "p-2"),
        (4, "p-4"),
    ]
    assert await store.last_seq() == 4


async def test_two_instances_share_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "catalog.db")
    first, second = SqliteCatalogStore(path), SqliteCatalogStore(path)
    try:
        # Both connect to a fresh file at once: the schema must be created exactly once.
        await asyncio.gather(
            first.put_products(doc(f"a-{i}") for i in range(300)),
            second.put_products(doc(f"b-{i}") for i in range(300)),
            *(first.put_products([doc(f"c-{i}")]) for i in range(20)),
            *(second.put_products([doc(f"d-{i}")]) for i in range(20)),
        )
        assert await first.count_products() == 640
        assert await second.get_product("a-5") is not None
        # Two writers, one sequence: every write numbered once, none skipped.
        changes = await second.changes_since(0, 1000)
        assert [seq for seq, _ in changes] == list(range(1, 641))
        assert await first.last_seq() == 640
    finally:
        await first.close()
        await second.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT component, version FROM schema_version").fetchall()
    assert rows == [("catalog", 1), ("catalog", 2)]


async def test_simultaneous_first_open_does_not_lock(tmp_path: Path) -> None:
    # Switching a fresh file to WAL skips SQLite's busy handler; this raced before the retry.
    for attempt in range(10):
        path = str(tmp_path / f"fresh-{attempt}.db")
        stores = [SqliteCatalogStore(path) for _ in range(3)]
        try:
            counts = await asyncio.gather(*(s.count_products() for s in stores))
        finally:
            for s in stores:
                await s.close()
        assert counts == [0, 0, 0]


# --- SqliteExecutor --------------------------------------------------------------------


def _raise(_: sqlite3.Connection, exc: Exception) -> None:
    raise exc


@pytest.fixture
async def executor(tmp_path: Path) -> AsyncIterator[SqliteExecutor]:
    ex = SqliteExecutor(str(tmp_path / "x.db"), component="test", migrations=())
    yield ex
    await ex.close()


@pytest.mark.parametrize(
    ("driver_error", "expected"),
    [
        (sqlite3.OperationalError("database is locked"), StoreUnavailable),
        (sqlite3.OperationalError("disk I/O error"), StoreUnavailable),
        (sqlite3.IntegrityError("CHECK constraint failed"), StoreIntegrityError),
        (sqlite3.DatabaseError("database disk image is malformed"), StoreIntegrityError),
    ],
)
async def test_driver_errors_are_translated(
    executor: SqliteExecutor, driver_error: Exception, expected: type[Exception]
) -> None:
    with pytest.raises(expected) as info:
        await executor.run(_raise, driver_error)
    assert info.value.__cause__ is driver_error


async def test_other_errors_pass_through(executor: SqliteExecutor) -> None:
    with pytest.raises(KeyError):
        await executor.run(_raise, KeyError("x"))


def _pragmas(conn: sqlite3.Connection) -> tuple[str, int, int, int]:
    return (
        conn.execute("PRAGMA journal_mode").fetchone()[0],
        conn.execute("PRAGMA synchronous").fetchone()[0],
        conn.execute("PRAGMA busy_timeout").fetchone()[0],
        conn.execute("PRAGMA foreign_keys").fetchone()[0],
    )


async def test_connection_pragmas(executor: SqliteExecutor) -> None:
    assert await executor.run(_pragmas) == ("wal", 1, 10000, 1)


def _thread_name(_: sqlite3.Connection) -> str:
    import threading

    return threading.current_thread().name


async def test_runs_on_one_dedicated_thread(executor: SqliteExecutor) -> None:
    names = await asyncio.gather(*(executor.run(_thread_name) for _ in range(5)))
    assert len(set(names)) == 1
    assert names[0].startswith("sqlite-test")


async def test_unopenable_file_is_unavailable(tmp_path: Path) -> None:
    ex = SqliteExecutor(str(tmp_path / "no" / "such" / "dir.db"), component="t", migrations=())
    try:
        with pytest.raises(StoreUnavailable) as info:
            await ex.run(_pragmas)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    finally:
        await ex.close()


async def test_closed_executor_refuses_work(executor: SqliteExecutor) -> None:
    await executor.run(_pragmas)
    await executor.close()
    await executor.close()  # idempotent
    with pytest.raises(StoreUnavailable, match="closed"):
        await executor.run(_pragmas)


def _tables(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    return conn.execute("SELECT component, version FROM schema_version ORDER BY 2").fetchall()


async def test_migrations_apply_once_and_extend(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    v1 = Migration(1, ("CREATE TABLE t (a INTEGER)",))  # no IF NOT EXISTS: must run once
    v2 = Migration(2, ("ALTER TABLE t ADD COLUMN b TEXT",))
    for migrations in ((v1,), (v1,), (v1, v2), (v1, v2)):
        ex = SqliteExecutor(path, component="m", migrations=migrations)
        try:
            applied = await ex.run(_tables)
        finally:
            await ex.close()
    assert applied == [("m", 1), ("m", 2)]


async def test_migrations_must_be_ordered(tmp_path: Path) -> None:
    ex = SqliteExecutor(
        str(tmp_path / "m.db"),
        component="m",
        migrations=(Migration(2, ()), Migration(1, ())),
    )
    try:
        with pytest.raises(ValueError, match="ascending"):
            await ex.run(_tables)
    finally:
        await ex.close()
