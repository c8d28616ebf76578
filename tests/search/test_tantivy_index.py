"""What only the Tantivy backend has: its files, its writer lock, its tie handling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import tantivy

from storage.errors import StoreIntegrityError, StoreUnavailable
from storage.records import SearchQuery, SortOrder
from storage.search import tantivy_index
from storage.search.tantivy_index import TantivySearchIndex, fuzzy_distance, typo_score
from tests.search.conftest import every_id, every_page
from tests.search.corpus import browse, demo_docs, hand

SMALL_HEAP = 20_000_000


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[TantivySearchIndex]:
    opened = TantivySearchIndex(str(tmp_path / "index"), writer_heap_bytes=SMALL_HEAP)
    yield opened
    await opened.close()


def test_nothing_is_opened_before_first_use(tmp_path: Path) -> None:
    TantivySearchIndex(str(tmp_path / "index"))
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize(
    ("term", "distance"), [("tv", 0), ("oak", 0), ("lamp", 1), ("kettles", 1), ("keyboard", 2)]
)
def test_fuzzy_distance_grows_with_the_term(term: str, distance: int) -> None:
    assert fuzzy_distance(term) == distance


def test_typo_score_needs_every_term_to_allow_a_typo() -> None:
    assert typo_score([]) is None
    assert typo_score(["oak", "settl"]) is None
    one = typo_score(["settl"])
    two = typo_score(["settl", "kettl"])
    assert one is not None
    assert two is not None
    assert one == pytest.approx(0.1)
    assert two == pytest.approx(0.2)


async def test_long_ids_sharing_a_prefix_sort_and_page_exactly(
    index: TantivySearchIndex,
) -> None:
    # Same first 16 bytes, same price, same time, same text: only the full id orders them.
    docs = [
        hand(f"product-00000000-{suffix}", "Twin Lamp", price=900, created_at="2024-01-01T00:00Z")
        for suffix in ("b", "a", "aa", "c", "ab")
    ]
    docs += [hand(f"product-00000001-{n}", "Twin Lamp", price=900) for n in range(3)]
    await index.upsert(docs)
    await index.refresh()
    for sort in SortOrder:
        for limit in (1, 2, 3):
            query = SearchQuery(sort=sort, limit=limit, facets=False)
            assert await every_id(index, query) == browse(docs, query)
            # Equal scores too: relevance falls back to the id.
            expected = sorted(d.id for d in docs) if sort is SortOrder.RELEVANCE else None
            text_ids = await every_id(index, replace(query, text="twin lamp"))
            assert text_ids == (expected or browse(docs, query))


async def test_a_narrow_tie_window_gives_the_same_pages(
    index: TantivySearchIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    await index.upsert(demo_docs(400))
    await index.refresh()
    query = SearchQuery(text="steel", limit=6, facets=False)
    wide = [[h.id for h in page.hits] for page in await every_page(index, query)]
    monkeypatch.setattr(tantivy_index, "_TIE_WINDOW", 1)
    monkeypatch.setattr(tantivy_index, "_TIE_GROWTH", 2)
    narrow = [[h.id for h in page.hits] for page in await every_page(index, query)]
    assert narrow == wide
    assert len(wide) > 3


async def test_refused_documents_write_nothing(index: TantivySearchIndex) -> None:
    with pytest.raises(StoreIntegrityError, match="price"):
        await index.upsert([hand("ok", "Fine"), hand("bad", "Negative", price=-1)])
    with pytest.raises(StoreIntegrityError, match="without an id"):
        await index.upsert([hand("", "Nameless")])
    await index.refresh()
    assert await index.count() == 0


async def test_writes_are_invisible_until_refresh(index: TantivySearchIndex) -> None:
    await index.upsert([hand("w-1", "Alpha Widget")])
    assert await index.count() == 0
    assert (await index.search(SearchQuery(text="alpha"))).total == 0
    await index.refresh()
    assert await index.count() == 1


async def test_close_commits_pending_writes(tmp_path: Path) -> None:
    first = TantivySearchIndex(str(tmp_path / "index"), writer_heap_bytes=SMALL_HEAP)
    await first.upsert([hand("w-1", "Alpha Widget")])
    await first.close()
    await first.close()  # twice is fine
    with pytest.raises(StoreUnavailable, match="closed"):
        await first.count()
    again = TantivySearchIndex(str(tmp_path / "index"))
    assert await again.count() == 1
    await again.close()


async def test_a_reader_sees_another_writers_commits(tmp_path: Path) -> None:
    writer = TantivySearchIndex(str(tmp_path / "index"), writer_heap_bytes=SMALL_HEAP)
    reader = TantivySearchIndex(str(tmp_path / "index"))
    try:
        await writer.ensure_index()
        assert await reader.count() == 0
        await writer.upsert([hand("w-1", "Alpha Widget")])
        assert await reader.count() == 0  # not committed yet
        await writer.refresh()
        await reader.refresh()
        assert await reader.count() == 1
    finally:
        await writer.close()
        await reader.close()


async def test_a_second_writer_is_store_unavailable(tmp_path: Path) -> None:
    first = TantivySearchIndex(str(tmp_path / "index"), writer_heap_bytes=SMALL_HEAP)
    second = TantivySearchIndex(str(tmp_path / "index"), writer_heap_bytes=SMALL_HEAP)
    try:
        await first.upsert([hand("w-1", "Alpha Widget")])
        with pytest.raises(StoreUnavailable, match="locked"):
            await second.upsert([hand("w-2", "Beta Widget")])
    finally:
        await first.close()
        await second.close()


async def test_an_index_with_another_schema_is_refused(tmp_path: Path) -> None:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("something_else", stored=True)
    tantivy.Index(builder.build(), path=str(tmp_path))
    index = TantivySearchIndex(str(tmp_path))
    with pytest.raises(StoreIntegrityError, match="schema"):
        await index.ensure_index()
    await index.close()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="heap"):
        TantivySearchIndex("x", writer_heap_bytes=1_000)
    with pytest.raises(ValueError, match="search_threads"):
        TantivySearchIndex("x", search_threads=0)


async def test_a_reader_picks_up_commits_without_refreshing(tmp_path: Path) -> None:
    writer = TantivySearchIndex(str(tmp_path / "index"), writer_heap_bytes=SMALL_HEAP)
    reader = TantivySearchIndex(str(tmp_path / "index"))
    try:
        await writer.ensure_index()
        assert await reader.count() == 0
        await writer.upsert([hand("w-1", "Alpha Widget")])
        await writer.refresh()
        for _ in range(100):  # Tantivy polls the meta file about every 500 ms
            if await reader.count() == 1:
                break
            await asyncio.sleep(0.05)
        assert await reader.count() == 1
    finally:
        await writer.close()
        await reader.close()
