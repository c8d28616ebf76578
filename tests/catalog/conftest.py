"""Every CatalogStore backend behind one ``catalog`` fixture, so each contract case runs
on all of them:

- ``sqlite``: SqliteCatalogStore on a file in a temp dir;
- ``mongomock``: MongoCatalogStore on mongomock-motor (in memory, no server);
- ``mongo``: MongoCatalogStore on a real MongoDB, only when ``FEIRA_MONGO_URL`` is set
  (a throwaway database ``feira_test_<random>``, dropped afterwards).
"""

from __future__ import annotations

import inspect
import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import mongomock.collection
import pytest
from mongomock_motor import AsyncMongoMockClient
from motor.motor_asyncio import AsyncIOMotorClient

from storage.interfaces import CatalogStore
from storage.mongo import MongoCatalogStore
from storage.sqlite.catalog import SqliteCatalogStore

MONGO_URL_ENV = "FEIRA_MONGO_URL"
BACKENDS = ("sqlite", "mongomock", "mongo")
# Documents per internal write chunk (and keys per IN query) during these tests, so a few
# hundred documents cross chunk boundaries: mongomock checks unique indexes by scanning
# the collection, which makes thousands of documents slow.
CHUNK = 50

OpenCatalog = Callable[[], AbstractAsyncContextManager[CatalogStore]]


def _mongomock_accepts_sort() -> None:
    """pymongo 4.11 passes ``sort`` from ReplaceOne to the bulk builder; mongomock 4.3
    predates it. The adapter never sets it, so accept it when unset."""
    builder: Any = mongomock.collection.BulkOperationBuilder
    original = builder.add_replace
    if "sort" in inspect.signature(original).parameters:
        return

    def add_replace(
        self: Any,
        selector: Any,
        doc: Any,
        upsert: Any,
        collation: Any = None,
        hint: Any = None,
        sort: Any = None,
    ) -> Any:
        if sort is not None:
            raise NotImplementedError("mongomock cannot sort a bulk replace")
        return original(self, selector, doc, upsert, collation=collation, hint=hint)

    builder.add_replace = add_replace


_mongomock_accepts_sort()


@asynccontextmanager
async def _closing(store: CatalogStore) -> AsyncIterator[CatalogStore]:
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def _real_mongo(url: str) -> AsyncIterator[CatalogStore]:
    database = f"feira_test_{secrets.token_hex(6)}"
    try:
        async with _closing(MongoCatalogStore(url, database)) as store:
            yield store
    finally:
        admin: Any = AsyncIOMotorClient(url, serverSelectionTimeoutMS=5_000)
        try:
            await admin.drop_database(database)
        finally:
            admin.close()


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("storage.sqlite.catalog", "storage.mongo.catalog"):
        monkeypatch.setattr(f"{module}.WRITE_CHUNK", CHUNK)
        monkeypatch.setattr(f"{module}.IN_CHUNK", CHUNK)


@pytest.fixture(params=BACKENDS)
def open_catalog(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> OpenCatalog:
    """Opens a fresh, empty store of one backend each time it is called."""
    backend: str = request.param
    url = os.environ.get(MONGO_URL_ENV)
    if backend == "mongo" and not url:
        pytest.skip(f"set {MONGO_URL_ENV}=mongodb://HOST:PORT to run against a real MongoDB")

    def open_one() -> AbstractAsyncContextManager[CatalogStore]:
        if backend == "sqlite":
            path = tmp_path_factory.mktemp("catalog") / "catalog.db"
            return _closing(SqliteCatalogStore(str(path)))
        if backend == "mongomock":
            mock = MongoCatalogStore(
                "mongodb://mongomock", "feira_test", client_factory=lambda _: AsyncMongoMockClient()
            )
            return _closing(mock)
        assert url is not None
        return _real_mongo(url)

    return open_one


@pytest.fixture
async def catalog(open_catalog: OpenCatalog) -> AsyncIterator[CatalogStore]:
    async with open_catalog() as store:
        yield store
