"""The search index follows the catalog: real SQLite catalog and prices, real Tantivy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actors.index_sync import FilePosition, IndexSync
from storage.demo import seed_stores
from storage.factory import Stores, open_embedded_stores
from storage.records import PriceRecord, SearchQuery, SortOrder
from storage.search.documents import search_doc
from storage.search.tantivy_index import TantivySearchIndex


@dataclass
class Env:
    stores: Stores
    index: TantivySearchIndex
    position: FilePosition
    now: list[float]

    def sync(self, batch: int = 7) -> IndexSync:
        return IndexSync(
            self.stores.catalog,
            self.stores.prices,
            self.index,
            self.position,
            batch=batch,
            clock=lambda: self.now[0],
        )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    stores = open_embedded_stores(str(tmp_path / "data"))
    await seed_stores(stores.catalog, stores.prices, stores.stock, 40, 7, "EUR", progress=False)
    index = TantivySearchIndex(str(tmp_path / "index"))
    yield Env(stores, index, FilePosition(tmp_path / "position"), [100.0])
    await index.close()
    await stores.close()


async def published(env: Env) -> set[str]:
    seen: set[str] = set()
    after = 0
    while changes := await env.stores.catalog.changes_since(after, 1000):
        for seq, doc in changes:
            if doc["status"] == "published":
                seen.add(doc["id"])
            after = seq
    return seen


async def indexed(env: Env) -> set[str]:
    ids: set[str] = set()
    cursor = None
    while True:
        page = await env.index.search(
            SearchQuery(sort=SortOrder.NEWEST, cursor=cursor, limit=100, facets=False)
        )
        ids.update(hit.id for hit in page.hits)
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


async def test_catch_up_indexes_every_published_product_in_batches(env: Env) -> None:
    sync = env.sync(batch=7)
    assert await sync.catch_up() == 40
    assert await indexed(env) == await published(env)
    stats = sync.stats()
    assert (stats.indexed_seq, stats.pending, stats.lag_s) == (stats.catalog_seq, 0, 0.0)
    assert await sync.step() == 0


async def test_changes_reach_the_index_and_unpublished_leave_it(env: Env) -> None:
    sync = env.sync()
    await sync.catch_up()
    doc = await env.stores.catalog.get_product("p-0000003")
    assert doc is not None
    sku = doc["variants"][0]["sku"]
    await env.stores.prices.put_prices([PriceRecord(sku, 1, "EUR", doc["category"])])
    renamed = {**doc, "title": "Zanzibar Quokka Lantern", "status": "published"}
    await env.stores.catalog.put_products([renamed])
    assert await sync.step() == 1
    found = await env.index.search(SearchQuery(text="quokka", facets=False))
    assert [(h.id, h.price) for h in found.hits] == [("p-0000003", 1)]
    await env.stores.catalog.put_products([{**renamed, "status": "archived"}])
    await sync.catch_up()
    assert (await env.index.search(SearchQuery(text="quokka", facets=False))).hits == []


async def test_position_survives_a_restart_and_a_lost_save_only_repeats_work(env: Env) -> None:
    first = env.sync()
    await first.catch_up()
    assert await env.position.load() == first.stats().indexed_seq
    again = env.sync()
    assert await again.catch_up() == 0  # resumed, nothing redone
    await env.position.save(10)  # as if the process died before saving later batches
    redo = env.sync()
    assert await redo.catch_up() == 30
    assert await indexed(env) == await published(env)  # upserts are idempotent
    assert await env.index.count() == len(await published(env))


async def test_lag_is_the_age_of_the_oldest_unindexed_change(env: Env) -> None:
    sync = env.sync(batch=10)
    assert await sync.step() == 10
    env.now[0] += 2.5
    assert sync.stats().lag_s == 2.5
    assert sync.stats().pending == 30
    await sync.catch_up()
    assert sync.stats().lag_s == 0.0


async def test_rebuild_drops_what_the_catalog_no_longer_has(env: Env) -> None:
    sync = env.sync()
    await sync.catch_up()
    stray = await env.stores.catalog.get_product("p-0000001")
    assert stray is not None
    orphan = search_doc({**stray, "id": "p-orphan"}, {})
    assert orphan is not None
    await env.index.upsert([orphan])
    await env.index.refresh()
    assert "p-orphan" in await indexed(env)
    assert await sync.rebuild() == 40
    assert await indexed(env) == await published(env)


async def test_a_damaged_position_file_means_a_full_catch_up(env: Env) -> None:
    env.position.path.write_text("garbage")
    assert await env.position.load() == 0


def test_batch_bounds() -> None:
    for bad in (0, 10_001):
        with pytest.raises(ValueError, match="batch"):
            IndexSync(None, None, None, None, batch=bad)  # type: ignore[arg-type]
