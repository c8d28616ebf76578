"""What only the MongoDB catalog has: lazy setup, its stored layout, and the change-counter
blocks that keep followers of the change feed from skipping a write. On mongomock; the
contract itself is in test_catalog_contract.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import mongomock.collection
import pytest
from mongomock_motor import AsyncMongoMockClient
from pymongo.errors import AutoReconnect

from storage.errors import StoreIntegrityError, StoreUnavailable
from storage.mongo import MongoCatalogStore
from storage.mongo.catalog import COUNTER_ID, INDEXES, PENDING_LEASE_S, category_path
from tests.catalog.products import doc


@pytest.fixture
def client() -> Any:
    return AsyncMongoMockClient()


@pytest.fixture
async def store(client: Any) -> AsyncIterator[MongoCatalogStore]:
    catalog = MongoCatalogStore("mongodb://mock", "shop", client_factory=lambda _: client)
    yield catalog
    await catalog.close()


async def counter(client: Any) -> Any:
    return await client["shop"]["counters"].find_one({"_id": COUNTER_ID})


async def ids_in_feed(store: MongoCatalogStore) -> list[tuple[int, str]]:
    return [(seq, d["id"]) for seq, d in await store.changes_since(0, 100)]


def test_category_path_lists_every_segment_prefix() -> None:
    assert category_path("home") == ["home"]
    assert category_path("home/kitchen/kettles") == ["home", "home/kitchen", "home/kitchen/kettles"]


async def test_nothing_connects_until_first_use(client: Any) -> None:
    made: list[str] = []

    def factory(url: str) -> Any:
        made.append(url)
        return client

    unused = MongoCatalogStore("mongodb://db:27017", client_factory=factory)
    await unused.close()
    assert made == []

    catalog = MongoCatalogStore("mongodb://db:27017", client_factory=factory)
    try:
        assert made == []
        await asyncio.gather(*(catalog.count_products() for _ in range(5)))
        assert made == ["mongodb://db:27017"]
    finally:
        await catalog.close()
    assert "feira" in await client.list_database_names()


async def test_indexes_are_built_once(
    store: MongoCatalogStore, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    original: Any = mongomock.collection.Collection.create_index

    def counting(self: Any, keys: Any, **options: Any) -> Any:
        calls.append(keys)
        return original(self, keys, **options)

    monkeypatch.setattr(mongomock.collection.Collection, "create_index", counting)
    await asyncio.gather(*(store.get_product(f"p-{i}") for i in range(10)))
    await store.put_products([doc("p-1")])
    assert len(calls) == len(INDEXES)
    names = set(await client["shop"]["products"].index_information())
    assert names >= {options["name"] for _, options in INDEXES}


async def test_store_fields_sit_beside_the_document(store: MongoCatalogStore, client: Any) -> None:
    kettle = doc("p-1", category="home/kitchen/kettles", skus=("K-1", "K-2"))
    await store.put_products([kettle, doc("p-2", skus=())])
    raw = await client["shop"]["products"].find_one({"_id": "p-1"})
    assert raw == {
        **kettle,
        "_id": "p-1",
        "_seq": 1,
        "_category_path": ["home", "home/kitchen", "home/kitchen/kettles"],
        "_skus": ["K-1", "K-2"],
    }
    bare = await client["shop"]["products"].find_one({"_id": "p-2"})
    assert bare is not None
    assert "_skus" not in bare  # no empty key in the unique SKU index
    assert await counter(client) == {"_id": COUNTER_ID, "seq": 2, "pending": []}


async def test_a_block_still_being_written_holds_the_feed_back(
    store: MongoCatalogStore, client: Any
) -> None:
    await store.put_products([doc("p-1"), doc("p-2")])
    # Another process reserved 3..5 and has not finished writing them.
    counters = client["shop"]["counters"]
    block = {"token": "other", "first": 3, "until": time.time() + PENDING_LEASE_S}
    await counters.update_one(
        {"_id": COUNTER_ID}, {"$inc": {"seq": 3}, "$push": {"pending": block}}
    )
    await store.put_products([doc("p-3")])  # takes 6

    assert await ids_in_feed(store) == [(1, "p-1"), (2, "p-2")]
    assert await store.last_seq() == 2

    await counters.update_one({"_id": COUNTER_ID}, {"$pull": {"pending": {"token": "other"}}})
    assert await ids_in_feed(store) == [(1, "p-1"), (2, "p-2"), (6, "p-3")]
    assert await store.last_seq() == 6


async def test_an_abandoned_block_stops_holding_the_feed_back_when_its_lease_ends(
    store: MongoCatalogStore, client: Any
) -> None:
    await store.put_products([doc("p-1")])
    counters = client["shop"]["counters"]
    expired = {"token": "crashed", "first": 2, "until": time.time() - 1}
    await counters.update_one(
        {"_id": COUNTER_ID}, {"$inc": {"seq": 1}, "$push": {"pending": expired}}
    )
    await store.put_products([doc("p-2")])

    assert await ids_in_feed(store) == [(1, "p-1"), (3, "p-2")]
    assert (await counter(client))["pending"] == []  # the next writer cleared it


async def test_reservation_retries_when_another_process_took_the_numbers(
    store: MongoCatalogStore, client: Any
) -> None:
    await store.put_products([doc("p-1")])
    counters = client["shop"]["counters"]

    class Interfering:
        """Another process reserves 10 numbers between this store's read and its update."""

        def __init__(self) -> None:
            self.interfered = False

        async def find_one(self, *args: Any, **kwargs: Any) -> Any:
            found = await counters.find_one(*args, **kwargs)
            if not self.interfered:
                self.interfered = True
                await counters.update_one({"_id": COUNTER_ID}, {"$inc": {"seq": 10}})
            return found

        def __getattr__(self, name: str) -> Any:
            return getattr(counters, name)

    store._counters = Interfering()
    await store.put_products([doc("p-2")])
    assert await ids_in_feed(store) == [(1, "p-1"), (12, "p-2")]


async def test_a_refused_bulk_write_releases_its_block(
    store: MongoCatalogStore, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.put_products([doc("p-1", skus=("Z-1",))])

    async def no_check(*args: Any) -> dict[str, list[str]]:
        return {}  # as if a concurrent writer took the SKU after the check

    monkeypatch.setattr(store, "_check_skus", no_check)
    with pytest.raises(StoreIntegrityError) as info:
        await store.put_products([doc("p-2", skus=("Z-1",))])
    assert "duplicate key" in str(info.value).lower()
    assert (await counter(client))["pending"] == []
    assert await ids_in_feed(store) == [(1, "p-1")]


async def test_a_write_with_an_unknown_outcome_keeps_its_block(
    store: MongoCatalogStore, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.put_products([doc("p-1")])

    async def lost(*args: Any, **kwargs: Any) -> None:
        raise AutoReconnect("connection reset")

    products = client["shop"]["products"]
    monkeypatch.setattr(type(products), "bulk_write", lost)
    with pytest.raises(StoreUnavailable, match="connection reset"):
        await store.put_products([doc("p-2")])
    monkeypatch.undo()

    # The write may still land: followers wait for the lease rather than skip it.
    [block] = (await counter(client))["pending"]
    assert block["first"] == 2
    await store.put_products([doc("p-3")])
    assert await ids_in_feed(store) == [(1, "p-1")]
    assert await store.last_seq() == 1


async def test_an_integer_bson_cannot_hold_is_refused(store: MongoCatalogStore) -> None:
    huge = doc("p-1")
    huge["attributes"] = {"count": 2**64 - 1}  # valid JSON, beyond int64
    with pytest.raises(StoreIntegrityError, match="8-byte"):
        await store.put_products([huge])
    assert await store.count_products() == 0
    assert await store.last_seq() == 0


async def test_two_stores_on_one_database_share_the_sequence(
    client: Any,
) -> None:
    first = MongoCatalogStore("mongodb://mock", "shop", client_factory=lambda _: client)
    second = MongoCatalogStore("mongodb://mock", "shop", client_factory=lambda _: client)
    try:
        await asyncio.gather(
            *(first.put_products([doc(f"a-{i}")]) for i in range(10)),
            *(second.put_products([doc(f"b-{i}")]) for i in range(10)),
        )
        assert [seq for seq, _ in await first.changes_since(0, 100)] == list(range(1, 21))
        assert await second.last_seq() == 20
    finally:
        await first.close()
        await second.close()
