"""SqliteCatalogStore, plus the shared SqliteExecutor it is built on."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storage.errors import StoreIntegrityError, StoreUnavailable
from storage.records import ProductDoc
from storage.sqlite.catalog import SqliteCatalogStore, encode_cursor
from storage.sqlite.connection import Migration, SqliteExecutor


def doc(
    product_id: str,
    category: str = "home/kitchen",
    status: str = "published",
    skus: tuple[str, ...] | None = None,
    title: str = "Kettle",
) -> ProductDoc:
    skus = (f"{product_id}-1",) if skus is None else skus
    return {
        "id": product_id,
        "title": title,
        "brand": "Acme",
        "category": category,
        "status": status,
        "merchant_id": "m-001",
        "attributes": {"color": "red"},
        "variants": [{"sku": s, "options": {"size": "M"}, "images": []} for s in skus],
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-02T00:00:00Z",
    }


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteCatalogStore]:
    catalog = SqliteCatalogStore(str(tmp_path / "catalog.db"))
    yield catalog
    await catalog.close()


async def all_pages(
    store: SqliteCatalogStore, category: str | None, limit: int
) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = await store.list_products(category=category, cursor=cursor, limit=limit)
        pages += 1
        ids.extend(p["id"] for p in page)
        if cursor is None:
            return ids, pages


async def test_construction_opens_nothing(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    catalog = SqliteCatalogStore(str(path))
    assert not path.exists()
    await catalog.close()
    assert not path.exists()


async def test_round_trip(store: SqliteCatalogStore) -> None:
    first = doc("p-1", skus=("A-1", "A-2"))
    second = doc("p-2", status="draft")
    assert await store.put_products([first, second]) == 2

    assert await store.get_product("p-1") == first
    assert await store.get_product("missing") is None
    assert await store.get_products(["p-2", "missing", "p-1", "p-2"]) == {
        "p-1": first,
        "p-2": second,
    }
    assert await store.get_products([]) == {}
    assert await store.product_for_sku("A-2") == first
    assert await store.product_for_sku("nope") is None
    assert await store.count_products() == 2


async def test_upsert_replaces_document_and_skus(store: SqliteCatalogStore) -> None:
    await store.put_products([doc("p-1", skus=("A-1", "A-2")), doc("p-2", skus=("B-1",))])
    # p-1 drops A-2; B-1 moves from p-2 to p-1.
    updated = doc("p-1", skus=("A-1", "B-1"), title="Renamed")
    assert await store.put_products([updated]) == 1

    assert await store.get_product("p-1") == updated
    assert await store.product_for_sku("A-2") is None
    found = await store.product_for_sku("B-1")
    assert found is not None
    assert found["id"] == "p-1"
    assert await store.count_products() == 2


async def test_put_streams_any_iterable_across_chunks(store: SqliteCatalogStore) -> None:
    generated: Iterator[ProductDoc] = (doc(f"p-{i:05d}") for i in range(2500))
    assert await store.put_products(generated) == 2500
    assert await store.count_products() == 2500


async def test_invalid_document_fails_whole_call(store: SqliteCatalogStore) -> None:
    broken = doc("p-bad")
    del broken["category"]
    # The bad doc sits in the second internal chunk: the first chunk must roll back too.
    docs = [doc(f"p-{i:05d}") for i in range(1200)] + [broken]
    with pytest.raises(StoreIntegrityError, match="category"):
        await store.put_products(docs)
    assert await store.count_products() == 0


async def test_unserialisable_document_is_refused(store: SqliteCatalogStore) -> None:
    bad = doc("p-1")
    bad["attributes"] = {"when": object()}
    with pytest.raises(StoreIntegrityError, match="JSON"):
        await store.put_products([bad])


async def test_pagination_covers_every_published_item_once(store: SqliteCatalogStore) -> None:
    docs = [doc(f"p-{i:04d}", status="draft" if i % 10 == 3 else "published") for i in range(253)]
    # Insert out of order: listing order must come from the ids, not insertion.
    await store.put_products(reversed(docs))
    expected = sorted(d["id"] for d in docs if d["status"] == "published")

    ids, pages = await all_pages(store, None, 7)
    assert ids == expected
    assert pages == -(-len(expected) // 7)


async def test_exact_multiple_of_limit_has_no_empty_last_page(store: SqliteCatalogStore) -> None:
    await store.put_products(doc(f"p-{i}") for i in range(10))
    page, cursor = await store.list_products(category=None, cursor=None, limit=5)
    assert cursor is not None
    page, cursor = await store.list_products(category=None, cursor=cursor, limit=5)
    assert len(page) == 5
    assert cursor is None


async def test_empty_catalog_lists_nothing(store: SqliteCatalogStore) -> None:
    assert await store.list_products(category=None, cursor=None, limit=10) == ([], None)


async def test_category_matches_by_path_segment(store: SqliteCatalogStore) -> None:
    categories = {
        "p-1": "home",
        "p-2": "home/kitchen",
        "p-3": "home/kitchen/kettles",
        "p-4": "homeware",
        "p-5": "homeware/mugs",
        "p-6": "garden/home",
        "p-7": "home/kitchenware",
    }
    await store.put_products(doc(pid, category=c) for pid, c in categories.items())

    assert (await all_pages(store, "home", 2))[0] == ["p-1", "p-2", "p-3", "p-7"]
    assert (await all_pages(store, "home/kitchen", 2))[0] == ["p-2", "p-3"]
    assert (await all_pages(store, "/home/kitchen/", 2))[0] == ["p-2", "p-3"]
    assert (await all_pages(store, "homeware", 2))[0] == ["p-4", "p-5"]
    assert (await all_pages(store, "hom", 2))[0] == []


async def test_category_wildcards_are_literal(store: SqliteCatalogStore) -> None:
    categories = {
        "p-1": "a_b",
        "p-2": "a_b/c",
        "p-3": "axb",
        "p-4": "axb/c",
        "p-5": "a%b/x",
        "p-6": "aXYZb/x",
        "p-7": "a\\b/x",
        "p-8": "a\\\\b/x",
    }
    await store.put_products(doc(pid, category=c) for pid, c in categories.items())

    assert (await all_pages(store, "a_b", 10))[0] == ["p-1", "p-2"]
    assert (await all_pages(store, "a%b", 10))[0] == ["p-5"]
    assert (await all_pages(store, "a\\b", 10))[0] == ["p-7"]


async def test_drafts_are_hidden_from_category_listing(store: SqliteCatalogStore) -> None:
    await store.put_products([doc("p-1", "home"), doc("p-2", "home", status="draft")])
    assert (await all_pages(store, "home", 10))[0] == ["p-1"]


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor!",
        "cC0x=",  # padding is never emitted
        "a",  # impossible base64 length
        base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),  # not UTF-8
        "+/+/",  # standard alphabet, not url-safe
    ],
)
async def test_malformed_cursor_is_rejected(store: SqliteCatalogStore, cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await store.list_products(category=None, cursor=cursor, limit=10)


async def test_cursor_is_url_safe_and_resumes_after_id(store: SqliteCatalogStore) -> None:
    await store.put_products(doc(f"p-{i}") for i in range(5))
    page, _ = await store.list_products(category=None, cursor=encode_cursor("p-2"), limit=10)
    assert [p["id"] for p in page] == ["p-3", "p-4"]


@pytest.mark.parametrize("limit", [0, -1, 101])
async def test_limit_bounds(store: SqliteCatalogStore, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.list_products(category=None, cursor=None, limit=limit)


async def test_two_instances_share_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "catalog.db")
    first, second = SqliteCatalogStore(path), SqliteCatalogStore(path)
    try:
        # Both connect to a fresh file at once: the schema must be created exactly once.
        await asyncio.gather(
            first.put_products(doc(f"a-{i}") for i in range(300)),
            second.put_products(doc(f"b-{i}") for i in range(300)),
        )
        assert await first.count_products() == 600
        assert await second.get_product("a-5") is not None
    finally:
        await first.close()
        await second.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT component, version FROM schema_version").fetchall()
    assert rows == [("catalog", 1)]


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
