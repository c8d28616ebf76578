"""The cross-check without Ray: the shard services and the replica caches under tracemalloc."""

from __future__ import annotations

import asyncio
import gc
import pickle
import random
import time
import tracemalloc
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.memory.figures import CacheFigure, Op, TracedFigure
from benchmarks.memory.workload import cart_ops, demo_stock, fresh, progress_bar, wire_batches

# --- in process -------------------------------------------------------------------------------


def traced_now() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


class _Traced:
    """tracemalloc on for a block; ``grown()`` is what stayed allocated since it began."""

    def __enter__(self) -> _Traced:
        gc.collect()
        tracemalloc.start()
        self.base = traced_now()
        return self

    def grown(self) -> int:
        return traced_now() - self.base

    def __exit__(self, *exc: object) -> None:
        tracemalloc.stop()


class _NullStock:
    """A stock store that keeps nothing: the in-process inventory run measures the shard's
    memory, not a store's."""

    async def load(self, skus: Sequence[str]) -> dict[str, Any]:
        return {}

    async def write(self, change: Any) -> None:
        return None

    async def put_levels(self, records: Iterable[Any]) -> int:
        return 0

    async def applied_ops(self, op_ids: Sequence[str]) -> set[str]:
        return set()

    async def journal_for(self, sku: str) -> list[tuple[str, str, int]]:
        return []

    async def close(self) -> None:
        return None


def _service_figure(
    traced: _Traced, service: Any, ops: Iterator[Op], name: str, count: int, op_log_size: int
) -> TracedFigure:
    """Apply ``ops`` to a shard service in wire batches; the growth, and what its full op
    log held (measured by swapping in an empty log)."""
    from actors.oplog import OpLog

    async def load() -> None:
        for batch in wire_batches(ops):
            await service.apply(batch)

    asyncio.run(load())
    grown = traced.grown()
    entries = len(service._dispatch.log)
    service._dispatch.log = OpLog(op_log_size)  # what the full log held goes
    return TracedFigure(name, count, grown, entries, grown - traced.grown())


def traced_carts(carts: int, skus: Sequence[str], seed: int, op_log_size: int,
                 progress: bool) -> list[TracedFigure]:  # fmt: skip
    from actors.cart_service import CartService
    from actors.domain.cart import CartBook, CartLimits
    from feira.settings import Settings

    defaults = Settings.model_fields
    limits = CartLimits(defaults["cart_max_lines"].default, defaults["cart_max_quantity"].default)
    out: list[TracedFigure] = []

    rnd = random.Random(seed)
    with _Traced() as traced, progress_bar(carts, "carts", progress) as bar:
        book = CartBook()
        now = time.time()
        for _ in range(carts):
            (_, (_, cart_id, _)), *adds = next(wire_batches(cart_ops(rnd, skus)))
            book.create(cart_id, None, now)
            for _, (_, _, sku, quantity, _) in adds:
                book.get(cart_id).add(sku, quantity, limits, now)
            bar.update()
        out.append(TracedFigure("CartBook alone (domain: carts, lines, idle queue)", carts,
                                traced.grown()))  # fmt: skip
        del book

    rnd = random.Random(seed)
    with _Traced() as traced, progress_bar(carts, "carts", progress) as bar:
        service = CartService(limits, defaults["cart_idle_ttl_s"].default, op_log_size)

        def ops() -> Iterator[Op]:
            for _ in range(carts):
                yield from cart_ops(rnd, skus)
                bar.update()

        name = "CartService (+ op log, recent op ids per cart)"
        out.append(_service_figure(traced, service, ops(), name, carts, op_log_size))
    return out


def traced_stock(count: int, seed: int, op_log_size: int, progress: bool) -> list[TracedFigure]:
    from actors.domain.inventory import Inventory
    from actors.inventory_service import InventoryService
    from actors.shop import new_op_id
    from feira.settings import Settings

    out: list[TracedFigure] = []
    with _Traced() as traced, progress_bar(count, "SKUs", progress) as bar:
        inventory = Inventory()
        for sku, on_hand in demo_stock(count, seed):
            inventory.set_on_hand(fresh(sku), on_hand)
            bar.update()
        out.append(TracedFigure("Inventory alone (domain: stock levels)", count, traced.grown()))
        del inventory

    ttl = Settings.model_fields["reservation_ttl_s"].default
    with _Traced() as traced, progress_bar(count, "SKUs", progress) as bar:
        service = InventoryService(_NullStock(), ttl, op_log_size, recall_window_s=0)

        def ops() -> Iterator[Op]:
            for sku, on_hand in demo_stock(count, seed):
                yield ("set_on_hand", (new_op_id(), sku, on_hand))
                bar.update()

        name = "InventoryService (+ op log; a store that keeps nothing)"
        out.append(_service_figure(traced, service, ops(), name, count, op_log_size))
    return out


async def traced_caches(products: int, seed: int, workdir: Path,
                        progress: bool) -> list[CacheFigure]:  # fmt: skip
    """Fill each replica cache from a seeded catalog and measure what it keeps."""
    from actors.cache import TTLCache
    from actors.domain.pricing import PriceBook, PriceEntry
    from actors.pricing_service import quote_json
    from feira.settings import Settings
    from storage.demo import seed_stores
    from storage.factory import open_stores

    defaults = {name: f.default for name, f in Settings.model_fields.items()}
    stores = open_stores(str(workdir))
    try:
        await seed_stores(stores.catalog, stores.prices, stores.stock, products, seed=seed,
                          currency=defaults["currency"], progress=progress)  # fmt: skip
        ids = [f"p-{i:07d}" for i in range(products)]
        chunks = [ids[i : i + 500] for i in range(0, len(ids), 500)]
        # What a quote and a stock reply look like after a shard call: pickled replies.
        quotes: list[bytes] = []
        levels: list[bytes] = []
        categories: set[str] = set()
        skus_total = 0
        for chunk in chunks:
            docs = await stores.catalog.get_products(chunk)
            skus = [
                v["sku"]
                for d in docs.values()
                if d.get("status") == "published"
                for v in d.get("variants", [])
            ]
            categories.update(d.get("category") or "" for d in docs.values())
            skus_total += len(skus)
            book = PriceBook(defaults["currency"])
            for r in (await stores.prices.get_prices(skus)).values():
                book.set_price(PriceEntry(r.sku, r.amount, r.currency, r.category))
            now = time.time()
            quotes.append(pickle.dumps({s: quote_json(book.quote(s, now)) for s in skus}))
            stock = await stores.stock.load(skus)
            levels.append(
                pickle.dumps(
                    {
                        s: {  # as actors/inventory_service.py answers "stock"
                            "on_hand": lv.on_hand,
                            "reserved": lv.reserved,
                            "sold": lv.sold,
                            "available": lv.on_hand - lv.reserved - lv.sold,
                        }
                        for s, (lv, _) in stock.items()
                    }
                )
            )
        published = 0
        figures: list[CacheFigure] = []

        # Product documents, as the catalog store decodes them (only published are kept).
        with _Traced() as traced:
            products_cache: TTLCache[Any] = TTLCache(products, 3600.0)
            for chunk in tqdm(chunks, unit=" chunks", disable=not progress, mininterval=1):
                for pid, doc in (await stores.catalog.get_products(chunk)).items():
                    if doc.get("status") == "published":
                        products_cache.put(pid, doc)
            published = len(products_cache)
            figures.append(CacheFigure("product", "product_cache_size",
                                       defaults["product_cache_size"], published,
                                       traced.grown(), 1.0))  # fmt: skip
            del products_cache
        per_product = skus_total / published if published else 0.0

        for name, blobs in (("price", quotes), ("page_stock", levels)):
            with _Traced() as traced:
                cache: TTLCache[Any] = TTLCache(skus_total, 3600.0)
                for blob in blobs:
                    for key, value in pickle.loads(blob).items():
                        cache.put(key, value)
                figures.append(CacheFigure(name, "price_cache_size",
                                           defaults["price_cache_size"], len(cache),
                                           traced.grown(), per_product))  # fmt: skip
                del cache

        with _Traced() as traced:
            related: TTLCache[Any] = TTLCache(products, 3600.0)
            for category in sorted(categories):
                page, _ = await stores.catalog.list_products(
                    category=category or None, cursor=None, limit=5
                )
                related.put(category, page)
            figures.append(CacheFigure("recommendations", "product_cache_size",
                                       defaults["product_cache_size"], len(related),
                                       traced.grown(), 0.0, len(related)))  # fmt: skip
            del related
        return figures
    finally:
        await stores.close()
