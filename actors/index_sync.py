"""The search index follows the catalog: poll its change feed, index in batches.

No Ray here. One ``IndexSync`` runs per deployment (the ``SearchIndexer`` actor), so one
writer owns the index. The catalog's change sequence is the only coordination: a change
is indexed after it is committed to the catalog, and the position saved after the index
commits, so a crash re-indexes a batch (upserts are idempotent) and never skips one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from storage.interfaces import CatalogStore, PriceStore, SearchIndex
from storage.records import SearchDoc
from storage.search.documents import search_doc


class SyncPosition(Protocol):
    async def load(self) -> int: ...

    async def save(self, seq: int) -> None: ...


class FilePosition:
    """The last indexed sequence number in a small file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def load(self) -> int:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        # A damaged file costs a full catch-up, never a skipped change.
        return int(text) if text.isdigit() else 0

    async def save(self, seq: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text(str(seq))
        os.replace(scratch, self.path)


@dataclass(frozen=True, slots=True)
class SyncStats:
    indexed_seq: int
    catalog_seq: int
    lag_s: float  # how long the oldest change not yet searchable has waited; 0 when caught up
    upserts: int
    deletes: int

    @property
    def pending(self) -> int:
        return max(0, self.catalog_seq - self.indexed_seq)


class IndexSync:
    def __init__(
        self,
        catalog: CatalogStore,
        prices: PriceStore,
        index: SearchIndex,
        position: SyncPosition,
        *,
        batch: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= batch <= 10_000:
            raise ValueError(f"batch must be 1 to 10000, got {batch}")
        self.catalog = catalog
        self.prices = prices
        self.index = index
        self.position = position
        self.batch = batch
        self.clock = clock
        self._seq: int | None = None
        self._catalog_seq = 0
        self._behind_since: float | None = None
        self._upserts = 0
        self._deletes = 0

    async def start(self) -> None:
        await self.index.ensure_index()
        self._seq = await self.position.load()

    async def step(self) -> int:
        """Index at most one batch of changes; returns how many changes it covered."""
        if self._seq is None:
            await self.start()
        assert self._seq is not None
        self._catalog_seq = await self.catalog.last_seq()
        if self._catalog_seq <= self._seq:
            self._behind_since = None
            return 0
        if self._behind_since is None:
            self._behind_since = self.clock()
        changes = await self.catalog.changes_since(self._seq, self.batch)
        if not changes:
            return 0
        skus = [v["sku"] for _, doc in changes for v in doc.get("variants", [])]
        records = await self.prices.get_prices(skus) if skus else {}
        amounts = {sku: record.amount for sku, record in records.items()}
        upserts: list[SearchDoc] = []
        deletes: list[str] = []
        for _, doc in changes:
            indexed = search_doc(doc, amounts)
            if indexed is None:
                deletes.append(doc["id"])
            else:
                upserts.append(indexed)
        if upserts:
            await self.index.upsert(upserts)
        if deletes:
            await self.index.delete(deletes)
        await self.index.refresh()
        self._seq = changes[-1][0]
        await self.position.save(self._seq)
        self._upserts += len(upserts)
        self._deletes += len(deletes)
        if self._seq >= self._catalog_seq:
            self._behind_since = None
        return len(changes)

    async def catch_up(self, progress: Callable[[int], object] | None = None) -> int:
        done = 0
        while n := await self.step():
            done += n
            if progress is not None:
                progress(n)
        return done

    async def rebuild(self, progress: Callable[[int], object] | None = None) -> int:
        """Drop the index and index the whole catalog again."""
        await self.index.ensure_index()
        await self.index.clear()
        await self.position.save(0)
        self._seq = 0
        self._behind_since = None
        return await self.catch_up(progress)

    def stats(self) -> SyncStats:
        lag = 0.0 if self._behind_since is None else self.clock() - self._behind_since
        return SyncStats(
            indexed_seq=self._seq or 0,
            catalog_seq=self._catalog_seq,
            lag_s=lag,
            upserts=self._upserts,
            deletes=self._deletes,
        )
