"""Search backends under test: Tantivy always, Elasticsearch when a server is given."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from storage.interfaces import SearchIndex
from storage.records import SearchDoc, SearchQuery, SearchResult
from storage.search.elastic import ElasticSearchIndex
from storage.search.tantivy_index import TantivySearchIndex
from tests.search.corpus import HAND_DOCS, demo_docs

ES_URL = os.environ.get("FEIRA_ELASTICSEARCH_URL", "")
DEMO_PRODUCTS = 600

BACKENDS = [
    pytest.param("tantivy", id="tantivy"),
    pytest.param(
        "elasticsearch",
        id="elasticsearch",
        marks=pytest.mark.skipif(
            not ES_URL, reason="FEIRA_ELASTICSEARCH_URL is not set: no Elasticsearch to test"
        ),
    ),
]


@asynccontextmanager
async def fresh_index(kind: str, directory: Path) -> AsyncIterator[SearchIndex]:
    index: TantivySearchIndex | ElasticSearchIndex
    if kind == "tantivy":
        index = TantivySearchIndex(str(directory), writer_heap_bytes=20_000_000, writer_threads=1)
    else:
        index = ElasticSearchIndex(ES_URL, f"feira-test-{uuid.uuid4().hex[:12]}", replicas=0)
    await index.ensure_index()
    try:
        yield index
    finally:
        if isinstance(index, ElasticSearchIndex):
            await index.drop()
        await index.close()


@dataclass(frozen=True)
class Loaded:
    index: SearchIndex
    docs: tuple[SearchDoc, ...]

    def by_id(self, product_id: str) -> SearchDoc:
        return next(doc for doc in self.docs if doc.id == product_id)


@pytest.fixture(scope="module", params=BACKENDS)
async def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Loaded]:
    """One index per backend holding the demo catalog plus the hand-written products;
    shared by the read-only tests of a module."""
    docs = (*demo_docs(DEMO_PRODUCTS), *HAND_DOCS)
    async with fresh_index(request.param, tmp_path_factory.mktemp("search")) as index:
        await index.upsert(docs)
        await index.refresh()
        yield Loaded(index, docs)


@pytest.fixture(params=BACKENDS)
async def empty(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SearchIndex]:
    """A fresh, empty index per test, for tests that write."""
    async with fresh_index(request.param, tmp_path / "index") as index:
        yield index


async def every_page(index: SearchIndex, query: SearchQuery) -> list[SearchResult]:
    pages = [await index.search(query)]
    while pages[-1].next_cursor is not None:
        pages.append(await index.search(replace(query, cursor=pages[-1].next_cursor)))
        assert len(pages) < 10_000, "cursor loop"
    return pages


async def every_id(index: SearchIndex, query: SearchQuery) -> list[str]:
    return [hit.id for page in await every_page(index, query) for hit in page.hits]
