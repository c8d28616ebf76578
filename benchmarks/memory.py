"""Hot-state memory (issue 8): resident memory of the shard actors per 100,000 active carts
of three lines and per 1,000,000 SKUs of stock, and of a BFF replica's caches per 100,000
cached products; and which maps that grow with traffic are bounded, and by what.

    .venv/bin/python -m benchmarks.memory --carts 100000 --skus 1000000 --products 100000

Needs nothing running: it starts a local Ray cluster of its own (not on 6379), with one
shard of each kind and the embedded stores in a temporary directory, and stops it at the
end.

- **Shards.** The cart and the inventory shard are the real actors, loaded through the
  shard client a BFF replica uses: carts created and filled (``create``, then ``add``
  three SKUs) with ids made the way the API makes them, SKUs from the demo catalog and an
  operation id per mutation (the idempotency memory is hot state too); stock set with
  ``set_on_hand``, one operation per SKU, each batch written to the ledger first. The
  figure is the growth of the actor process's resident set (``VmRSS``, after a ``gc``
  in the actor) divided by what was loaded. One shard holds everything, so its op log
  (``op_log_size`` replies) is full and counted once.
- **Cross-check without Ray.** The same operations, pickled as on the wire, applied to
  the shard services in this process, and the domain alone (``CartBook``, ``Inventory``),
  measured with tracemalloc; also what the full op log costs.
- **Replica caches.** The BFF's caches (``actors/shop.py``) filled from a seeded catalog
  with the values a replica keeps (product documents as the catalog store decodes them;
  quotes and stock as shard replies unpickle), measured with tracemalloc.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import itertools
import json
import logging
import os
import pickle
import random
import shlex
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.cart_add import machine_info, replace_section

SECTION_HEADING = "## Memory: hot state per cart, per SKU of stock, per cached product (issue 8)"
KIB = 1024
CART_GOAL_BYTES = 2 * KIB
SKU_GOAL_BYTES = 300
LINES_PER_CART = 3
PER_PRODUCTS = 100_000
NAMESPACE = "feira-membench"
# Concurrent shoppers/merchant calls while loading: enough for full coalesced batches.
LOAD_CONCURRENCY = 2_048
# Operations per pickled batch in the in-process runs (the client's default max batch).
WIRE_BATCH = 512
SETTLE_S = 2.0

Op = tuple[str, tuple[Any, ...]]


# --- figures --------------------------------------------------------------------------------


def parse_status(text: str) -> dict[str, int]:
    """The memory lines of ``/proc/<pid>/status`` (``VmRSS: 1234 kB``), in bytes."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if name.startswith(("Vm", "Rss")) and len(parts) == 2 and parts[1] == "kB":
            out[name] = int(parts[0]) * KIB
    return out


def per_item(before: int, after: int, count: int) -> float:
    """Growth per item loaded; 0 when nothing was loaded."""
    return (after - before) / count if count > 0 else 0.0


def fmt_bytes(n: float) -> str:
    """``812 B``, ``1.46 KiB``, ``143.2 MiB``, ``1.07 GiB``."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    if round(n) < KIB:
        return f"{sign}{round(n):,} B"
    for unit, scale in (("KiB", KIB), ("MiB", KIB**2), ("GiB", KIB**3)):
        if n < scale * KIB or unit == "GiB":
            digits = 2 if n < 10 * scale else 1
            return f"{sign}{n / scale:,.{digits}f} {unit}"
    raise AssertionError("unreachable")


def verdict(value: float, goal: float) -> str:
    return "**met**" if value <= goal else "**missed**"


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at a shard actor's process, after a gc there."""

    pid: int
    rss: int
    rss_anon: int
    rss_trimmed: int  # after malloc_trim(0) too: what the allocator handed back
    items: int  # carts or SKUs the shard holds
    op_log: int  # operation replies it remembers

    @classmethod
    def of(cls, probe: dict[str, Any]) -> Sample:
        status = parse_status(probe["status"])
        trimmed = parse_status(probe["status_trimmed"])
        return cls(
            pid=probe["pid"],
            rss=status["VmRSS"],
            rss_anon=status.get("RssAnon", 0),
            rss_trimmed=trimmed["VmRSS"],
            items=probe["items"],
            op_log=probe["op_log"],
        )


@dataclass(frozen=True, slots=True)
class ShardFigure:
    kind: str  # "cart" or "inventory"
    loaded: int
    seconds: float
    before: Sample
    after: Sample

    @property
    def per_item(self) -> float:
        return per_item(self.before.rss, self.after.rss, self.loaded)

    @property
    def per_item_anon(self) -> float:
        return per_item(self.before.rss_anon, self.after.rss_anon, self.loaded)

    @property
    def per_item_trimmed(self) -> float:
        return per_item(self.before.rss_trimmed, self.after.rss_trimmed, self.loaded)


@dataclass(frozen=True, slots=True)
class TracedFigure:
    """A tracemalloc measurement in this process."""

    what: str
    items: int
    traced_bytes: int
    op_log_entries: int = 0
    op_log_bytes: int = 0

    @property
    def per_item(self) -> float:
        return self.traced_bytes / self.items if self.items else 0.0

    @property
    def op_log_per_entry(self) -> float:
        return self.op_log_bytes / self.op_log_entries if self.op_log_entries else 0.0


@dataclass(frozen=True, slots=True)
class CacheFigure:
    name: str  # the cache's name in Shop.caches()
    setting: str  # what bounds it
    default_bound: int
    entries: int
    traced_bytes: int
    entries_per_product: float
    # The most entries it can ever hold whatever its bound (recommendations: one per
    # category), if its keys are not products or SKUs.
    natural_max: int | None = None

    @property
    def per_entry(self) -> float:
        return self.traced_bytes / self.entries if self.entries else 0.0

    @property
    def per_products(self) -> float:
        """Bytes for the entries that ``PER_PRODUCTS`` cached products bring."""
        return self.per_entry * self.entries_per_product * PER_PRODUCTS

    @property
    def at_default_bound(self) -> float:
        most = self.default_bound if self.natural_max is None else self.natural_max
        return self.per_entry * min(self.default_bound, most)


@dataclass(frozen=True, slots=True)
class Bound:
    """A map that grows with traffic, and what keeps it bounded."""

    what: str
    where: str
    bound: str
    setting: str | None  # the Settings field that bounds it, if one does
    default: int | None = None


# Every replica-side and shard-side map that grows with traffic (audited by hand; a unit
# test checks the settings named here exist with these defaults).
BOUNDS: tuple[Bound, ...] = (
    Bound("product documents", "actors/shop.py Shop.products", "LRU entries + TTL",
          "product_cache_size", 20_000),
    Bound("recommendations per category", "actors/shop.py Shop.related", "LRU entries + TTL",
          "product_cache_size", 20_000),
    Bound("price quotes", "actors/shop.py Shop.prices", "LRU entries + TTL",
          "price_cache_size", 100_000),
    Bound("page stock", "actors/shop.py Shop.page_stock", "LRU entries + TTL",
          "price_cache_size", 100_000),
    Bound("operation replies (idempotency)", "actors/oplog.py OpLog, per shard", "FIFO entries",
          "op_log_size", 100_000),
    Bound("recent op ids per cart", "actors/cart_service.py CartService._recent",
          "16 per cart (RECENT_OPS_PER_CART), dropped with the cart", "cart_idle_ttl_s",
          7 * 24 * 3600),
    Bound("carts", "actors/domain/cart.py CartBook", "idle expiry", "cart_idle_ttl_s",
          7 * 24 * 3600),
    Bound("reservations", "actors/domain/inventory.py Inventory", "expiry; at most the stock",
          "reservation_ttl_s", 900),
    Bound("shard client queues", "actors/coalescer.py Coalescer",
          "requests in flight on the replica", "bff_max_ongoing_requests", 2000),
    Bound("verified access tokens", "api/access.py VerifiedTokens",
          "VERIFIED_CACHE_SIZE = 10,000 (cleared when full)", None),
    Bound("API keys (known and unknown)", "api/rate_limiting.py CachedKeyLookup",
          "max_entries = 10,000 per table + TTL", None),
    Bound("rate-limit buckets (no Redis)", "actors/domain/rate_limit.py InProcessLimiter",
          "DEFAULT_MAX_KEYS = 100,000, expired first then LRU", None),
    Bound("client address buckets, trusted proxies", "api/rate_limiting.py",
          "lru_cache 8,192 and 4,096", None),
    Bound("WAF verdicts", "api/waf.py Engine._seen", "4,096 per target (cleared when full)",
          None),
    Bound("cache-invalidation events", "actors/change_log.py ChangeLog (change hub)",
          "ring of DEFAULT_CAPACITY = 10,000", None),
    Bound("outbox events held", "actors/order_processor.py OrderProcessor._held",
          "MAX_HELD = 10,000", None),
    Bound("checkouts in flight", "actors/checkout.py CheckoutService._flights",
          "removed when each ends: at most the requests in flight", None),
)  # fmt: skip


@dataclass(slots=True)
class Report:
    machine: dict[str, Any]
    command: str
    started: str
    config: dict[str, Any]
    shards: list[ShardFigure] = field(default_factory=list)
    traced: list[TracedFigure] = field(default_factory=list)
    caches: list[CacheFigure] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def figure(f: Any) -> dict[str, Any]:
            out = asdict(f)
            for name in ("per_item", "per_item_anon", "per_item_trimmed", "op_log_per_entry",
                         "per_entry", "per_products", "at_default_bound"):  # fmt: skip
                if hasattr(f, name):
                    out[name] = round(getattr(f, name), 1)
            return out

        return {
            "machine": self.machine,
            "command": self.command,
            "started": self.started,
            "config": self.config,
            "goals": {"cart_bytes": CART_GOAL_BYTES, "sku_bytes": SKU_GOAL_BYTES},
            "shards": [figure(f) for f in self.shards],
            "in_process": [figure(f) for f in self.traced],
            "caches": [figure(f) for f in self.caches],
            "bounds": [asdict(b) for b in BOUNDS],
        }


# --- markdown ---------------------------------------------------------------------------------

_GOALS = {"cart": CART_GOAL_BYTES, "inventory": SKU_GOAL_BYTES}
_SHARD_ROWS = {
    "cart": "cart shard: active carts, 3 lines each",
    "inventory": "inventory shard: SKUs with stock",
}


def markdown_section(report: Report) -> str:
    m = report.machine
    cfg = report.config
    lines = [
        SECTION_HEADING,
        "",
        f"{report.started}, {m.get('nproc')} CPUs ({m.get('cpu_model')}), "
        f"{m.get('memory_gib')} GiB, Python {m.get('python')}, Ray {m.get('ray')}. One shard "
        "of each kind on a local Ray cluster, embedded stores (SQLite), default settings "
        f"otherwise (op_log_size {cfg['op_log_size']:,}).",
        "",
        f"Command: `{report.command}`",
        "",
    ]
    if report.shards:
        lines += [
            "Resident memory of the shard actor's process (VmRSS after a gc in the actor), "
            "before and after loading through the shard client:",
            "",
            "| hot state | loaded | RSS before | RSS after | per item | per item, "
            "anonymous RSS | per item after malloc_trim | goal | |",
            "|:---|---:|---:|---:|---:|---:|---:|---:|:---|",
        ]
        for f in report.shards:
            goal = _GOALS[f.kind]
            lines.append(
                f"| {_SHARD_ROWS[f.kind]} | {f.loaded:,} | {fmt_bytes(f.before.rss)} "
                f"| {fmt_bytes(f.after.rss)} | **{fmt_bytes(f.per_item)}** "
                f"| {fmt_bytes(f.per_item_anon)} | {fmt_bytes(f.per_item_trimmed)} "
                f"| ≤ {fmt_bytes(goal)} | {verdict(f.per_item, goal)} |"
            )
        lines += [""]
        for f in report.shards:
            lines.append(
                f"- {f.kind}: {f.loaded:,} loaded in {f.seconds:.0f} s "
                f"({f.loaded / f.seconds:,.0f}/s); the shard then held {f.after.items:,} "
                f"and remembered {f.after.op_log:,} operation replies."
            )
        lines += [""]
    if report.traced:
        lines += [
            "Cross-check in one process, without Ray (tracemalloc; operations pickled in "
            f"batches of {WIRE_BATCH} as on the wire):",
            "",
            "| what | items | traced | per item | op log (entries, per entry) |",
            "|:---|---:|---:|---:|---:|",
        ]
        for t in report.traced:
            log = (
                f"{t.op_log_entries:,} x {fmt_bytes(t.op_log_per_entry)} = "
                f"{fmt_bytes(t.op_log_bytes)}"
                if t.op_log_entries
                else "-"
            )
            lines.append(
                f"| {t.what} | {t.items:,} | {fmt_bytes(t.traced_bytes)} "
                f"| {fmt_bytes(t.per_item)} | {log} |"
            )
        lines += [""]
    if report.caches:
        total = sum(c.per_products for c in report.caches if c.entries_per_product)
        lines += [
            f"BFF replica caches, filled from a catalog of {cfg['products']:,} demo products "
            "(tracemalloc; entries of each cache are what the replica would keep):",
            "",
            "| cache | bound | default | entries filled | per entry "
            f"| per {PER_PRODUCTS:,} products | at the default bound |",
            "|:---|:---|---:|---:|---:|---:|---:|",
        ]
        for c in report.caches:
            per_products = fmt_bytes(c.per_products) if c.entries_per_product else "-"
            lines.append(
                f"| {c.name} | `{c.setting}` | {c.default_bound:,} | {c.entries:,} "
                f"| {fmt_bytes(c.per_entry)} | {per_products} | {fmt_bytes(c.at_default_bound)} |"
            )
        lines += [
            "",
            f"Together: {fmt_bytes(total)} per {PER_PRODUCTS:,} cached products (a product "
            "has 1-3 SKUs; quotes and page stock are per SKU). The recommendations cache holds "
            "one short list per category, so it does not grow with the catalog: its last "
            "column is for every category.",
            "",
        ]
    lines += [
        "Maps that grow with traffic, and what bounds them:",
        "",
        "| what | where | bound | setting (default) |",
        "|:---|:---|:---|:---|",
    ]
    for b in BOUNDS:
        setting = f"`{b.setting}` ({b.default:,})" if b.setting else "none"
        lines.append(f"| {b.what} | `{b.where}` | {b.bound} | {setting} |")
    lines.append("")
    return "\n".join(lines)


# --- the workload -----------------------------------------------------------------------------


def fresh(text: str) -> str:
    """An equal string that is a new object, as a value parsed from a request would be
    (the pickler would otherwise send one object shared by every op of a batch)."""
    return text.encode().decode()


def catalog_skus(products: int, seed: int) -> list[str]:
    """The SKUs of the published products among the first ``products`` demo products."""
    from storage.demo import generate

    return [
        variant["sku"]
        for item in generate(products, seed=seed)
        if item.product["status"] == "published"
        for variant in item.product["variants"]
    ]


def demo_stock(count: int, seed: int) -> Iterator[tuple[str, int]]:
    """``count`` (sku, on_hand) of the demo catalog, in order."""
    from storage.demo import generate

    levels = (level for item in generate(count, seed=seed) for level in item.stock)
    for level in itertools.islice(levels, count):
        yield level.sku, level.on_hand


def cart_plan(rnd: random.Random, skus: Sequence[str]) -> list[tuple[str, int]]:
    """Three distinct SKUs and a quantity of 1-3 each, for one cart."""
    return [(sku, rnd.randint(1, 3)) for sku in rnd.sample(skus, LINES_PER_CART)]


def cart_ops(rnd: random.Random, skus: Sequence[str]) -> list[Op]:
    """The operations one guest shopper's cart gets from the BFF: create, then three adds."""
    from actors.shop import new_cart_id, new_op_id

    cart_id = new_cart_id()
    ops: list[Op] = [("create", (new_op_id(), cart_id, None))]
    for sku, quantity in cart_plan(rnd, skus):
        ops.append(("add", (new_op_id(), fresh(cart_id), fresh(sku), quantity, None)))
    return ops


def wire_batches(ops: Iterable[Op], size: int = WIRE_BATCH) -> Iterator[list[Op]]:
    """``ops`` in batches, each through pickle as a shard call's arguments are."""
    it = iter(ops)
    while batch := list(itertools.islice(it, size)):
        yield pickle.loads(pickle.dumps(batch, protocol=5))


def _bar(total: int, what: str, enabled: bool) -> tqdm[Any]:
    return tqdm(total=total, unit=f" {what}", unit_scale=True, disable=not enabled, mininterval=1)


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


def traced_carts(carts: int, skus: Sequence[str], seed: int, op_log_size: int,
                 progress: bool) -> list[TracedFigure]:  # fmt: skip
    from actors.cart_service import CartService
    from actors.domain.cart import CartBook, CartLimits
    from actors.oplog import OpLog
    from feira.settings import Settings

    defaults = Settings.model_fields
    limits = CartLimits(defaults["cart_max_lines"].default, defaults["cart_max_quantity"].default)
    out: list[TracedFigure] = []

    rnd = random.Random(seed)
    with _Traced() as traced, _bar(carts, "carts", progress) as bar:
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
    with _Traced() as traced, _bar(carts, "carts", progress) as bar:
        service = CartService(limits, defaults["cart_idle_ttl_s"].default, op_log_size)

        def ops() -> Iterator[Op]:
            for _ in range(carts):
                yield from cart_ops(rnd, skus)
                bar.update()

        async def load() -> None:
            for batch in wire_batches(ops()):
                await service.apply(batch)

        asyncio.run(load())
        grown = traced.grown()
        entries = len(service._dispatch.log)
        service._dispatch.log = OpLog(op_log_size)  # what the full log held goes
        log_bytes = grown - traced.grown()
        out.append(TracedFigure("CartService (+ op log, recent op ids per cart)", carts, grown,
                                entries, log_bytes))  # fmt: skip
    return out


def traced_stock(count: int, seed: int, op_log_size: int, progress: bool) -> list[TracedFigure]:
    from actors.domain.inventory import Inventory
    from actors.inventory_service import InventoryService
    from actors.oplog import OpLog
    from actors.shop import new_op_id
    from feira.settings import Settings

    out: list[TracedFigure] = []
    with _Traced() as traced, _bar(count, "SKUs", progress) as bar:
        inventory = Inventory()
        for sku, on_hand in demo_stock(count, seed):
            inventory.set_on_hand(fresh(sku), on_hand)
            bar.update()
        out.append(TracedFigure("Inventory alone (domain: stock levels)", count, traced.grown()))
        del inventory

    ttl = Settings.model_fields["reservation_ttl_s"].default
    with _Traced() as traced, _bar(count, "SKUs", progress) as bar:
        service = InventoryService(_NullStock(), ttl, op_log_size, recall_window_s=0)

        def ops() -> Iterator[Op]:
            for sku, on_hand in demo_stock(count, seed):
                yield ("set_on_hand", (new_op_id(), sku, on_hand))
                bar.update()

        async def load() -> None:
            for batch in wire_batches(ops()):
                await service.apply(batch)

        asyncio.run(load())
        grown = traced.grown()
        entries = len(service._dispatch.log)
        service._dispatch.log = OpLog(op_log_size)
        log_bytes = grown - traced.grown()
        out.append(TracedFigure("InventoryService (+ op log; a store that keeps nothing)",
                                count, grown, entries, log_bytes))  # fmt: skip
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


# --- on Ray -----------------------------------------------------------------------------------


def _probe_function() -> Callable[[Any], dict[str, Any]]:
    """What runs in the shard actor (``__ray_call__``): gc, then its own memory figures.
    Made here so that cloudpickle sends it by value (workers cannot import benchmarks/)."""

    def probe(shard: Any) -> dict[str, Any]:
        import contextlib
        import ctypes
        import gc
        import os

        gc.collect()
        pid = os.getpid()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open(f"/proc/{pid}/status") as f:
            status_trimmed = f.read()
        service = shard.service
        stats = service.stats()
        dispatch = getattr(service, "_dispatch", None)
        return {
            "pid": pid,
            "status": status,
            "status_trimmed": status_trimmed,
            "items": int(stats.get("carts", stats.get("skus", 0))),
            "op_log": len(dispatch.log) if dispatch is not None else -1,
        }

    return probe


async def _workers(n: int, work: Callable[[], Awaitable[bool]]) -> None:
    """``n`` coroutines calling ``work`` until it says there is no more."""

    async def loop() -> None:
        while await work():
            pass

    await asyncio.gather(*(loop() for _ in range(n)))


async def ray_carts(client: Any, handle: Any, carts: int, skus: Sequence[str], seed: int,
                    progress: bool) -> ShardFigure:  # fmt: skip
    from actors.kinds import ShardKind
    from actors.shop import new_cart_id, new_op_id

    probe = _probe_function()
    rnd = random.Random(seed)
    remaining = iter(range(carts))

    async def shopper() -> bool:
        if next(remaining, None) is None:
            return False
        cart_id = new_cart_id()
        await client.call(ShardKind.CART, cart_id, "create", new_op_id(), cart_id, None)
        for sku, quantity in cart_plan(rnd, skus):
            cid = fresh(cart_id)
            await client.call(ShardKind.CART, cid, "add", new_op_id(), cid, fresh(sku),
                              quantity, None)  # fmt: skip
        bar.update()
        return True

    # Warm up (code paths, buffers, the first batches), then measure from there.
    with _bar(1_000, "carts (warm-up)", progress) as bar:
        remaining = iter(range(min(1_000, carts)))
        await _workers(min(LOAD_CONCURRENCY, carts), shopper)
    await asyncio.sleep(SETTLE_S)
    before = Sample.of(await handle.__ray_call__.remote(probe))
    remaining = iter(range(carts))
    began = time.monotonic()
    with _bar(carts, "carts", progress) as bar:
        await _workers(LOAD_CONCURRENCY, shopper)
    took = time.monotonic() - began
    await asyncio.sleep(SETTLE_S)
    after = Sample.of(await handle.__ray_call__.remote(probe))
    return ShardFigure("cart", carts, took, before, after)


async def ray_stock(client: Any, handle: Any, count: int, seed: int,
                    progress: bool) -> ShardFigure:  # fmt: skip
    from actors.kinds import ShardKind
    from actors.shop import new_op_id

    probe = _probe_function()
    # Warm up on SKUs of their own, outside the demo catalog's numbering.
    levels: Iterator[tuple[str, int]] = iter((f"WARM-{i:06d}", 5) for i in range(1_000))

    async def merchant() -> bool:
        item = next(levels, None)
        if item is None:
            return False
        sku, on_hand = item
        sku = fresh(sku)
        await client.call(ShardKind.INVENTORY, sku, "set_on_hand", new_op_id(), sku, on_hand)
        bar.update()
        return True

    with _bar(1_000, "SKUs (warm-up)", progress) as bar:
        await _workers(LOAD_CONCURRENCY, merchant)
    await asyncio.sleep(SETTLE_S)
    before = Sample.of(await handle.__ray_call__.remote(probe))
    levels = demo_stock(count, seed)
    began = time.monotonic()
    with _bar(count, "SKUs", progress) as bar:
        await _workers(LOAD_CONCURRENCY, merchant)
    took = time.monotonic() - began
    await asyncio.sleep(SETTLE_S)
    after = Sample.of(await handle.__ray_call__.remote(probe))
    return ShardFigure("inventory", count, took, before, after)


def on_ray(args: argparse.Namespace, data_dir: Path, skus: Sequence[str]) -> list[ShardFigure]:
    """Start a local cluster of our own, load the shards, measure them, stop it."""
    from feira.ray_auth import use_local_auth
    from feira.settings import Settings

    os.environ.pop("RAY_ADDRESS", None)  # a cluster of our own, never someone's
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    use_local_auth(data_dir)  # before the first import of ray
    import ray

    from actors.client import ShardClient, ensure_shards
    from actors.kinds import ShardKind

    settings = Settings(
        data_dir=data_dir,
        namespace=NAMESPACE,
        cart_shards=1,
        inventory_shards=1,
        pricing_shards=1,
        postgres_url=None,
        redis_url=None,
        mongo_url=None,
        elasticsearch_url=None,
        # Loading queues thousands of operations at once; a deadline is not what is measured.
        shard_call_timeout_ms=120_000,
    )
    # A temp dir of its own: then /tmp/ray/session_latest is never this cluster, so a tool
    # that finds "its" cluster through that link cannot take this one for it.
    ray_dir = Path(tempfile.mkdtemp(prefix="fmr-", dir="/tmp"))
    ray.init(
        address="local",
        num_cpus=args.ray_cpus,
        include_dashboard=False,
        namespace=NAMESPACE,
        logging_level=logging.ERROR,
        log_to_driver=False,
        _temp_dir=str(ray_dir),
    )
    try:
        gcs = ray.get_runtime_context().gcs_address
        if gcs.endswith(":6379"):
            raise SystemExit(f"Ray's GCS took Redis's port ({gcs}); not measuring")
        handles = ensure_shards(settings)
        client = ShardClient(settings, handles)

        async def run() -> list[ShardFigure]:
            out: list[ShardFigure] = []
            if args.carts:
                out.append(await ray_carts(client, handles[ShardKind.CART][0], args.carts, skus,
                                           args.seed, args.progress))  # fmt: skip
            if args.skus:
                out.append(await ray_stock(client, handles[ShardKind.INVENTORY][0], args.skus,
                                           args.seed, args.progress))  # fmt: skip
            return out

        return asyncio.run(run())
    finally:
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)


# --- main -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--carts", type=int, default=100_000, help="carts to load (0: skip)")
    p.add_argument("--skus", type=int, default=1_000_000, help="SKUs of stock (0: skip)")
    p.add_argument("--products", type=int, default=100_000,
                   help="demo products for the caches, whose SKUs carts pick from (0: skip "
                        "the caches; carts then pick from 20,000 products)")  # fmt: skip
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-ray", action="store_true", help="only the in-process figures")
    p.add_argument("--no-in-process", action="store_true", help="skip the tracemalloc runs")
    p.add_argument("--ray-cpus", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--results-md", type=Path, default=None,
                   help="replace (or add) this benchmark's section in a markdown file")  # fmt: skip
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("carts", "skus", "products"):
        if getattr(args, name) < 0:
            raise SystemExit(f"--{name} must be >= 0")
    from feira.settings import Settings

    op_log_size = Settings.model_fields["op_log_size"].default
    report = Report(
        machine=machine_info(),
        command=".venv/bin/python -m benchmarks.memory " + shlex.join(sys.argv[1:]),
        started=f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}",
        config={
            "carts": args.carts,
            "skus": args.skus,
            "products": args.products,
            "seed": args.seed,
            "op_log_size": op_log_size,
            "lines_per_cart": LINES_PER_CART,
        },
    )
    workdir = Path(tempfile.mkdtemp(prefix="feira-mem-"))
    try:
        skus = catalog_skus(args.products or 20_000, args.seed) if args.carts else []
        report.config["cart_catalog_skus"] = len(skus)
        if args.products:
            print(f"replica caches: {args.products:,} demo products", file=sys.stderr)
            report.caches = asyncio.run(
                traced_caches(args.products, args.seed, workdir / "catalog", args.progress)
            )
        if not args.no_in_process:
            if args.carts:
                print(f"in process: {args.carts:,} carts", file=sys.stderr)
                report.traced += traced_carts(args.carts, skus, args.seed, op_log_size,
                                              args.progress)  # fmt: skip
            if args.skus:
                print(f"in process: {args.skus:,} SKUs", file=sys.stderr)
                report.traced += traced_stock(args.skus, args.seed, op_log_size, args.progress)
        if not args.no_ray and (args.carts or args.skus):
            print("on Ray: one cart shard and one inventory shard", file=sys.stderr)
            report.shards = on_ray(args, workdir / "ray", skus)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    section = markdown_section(report)
    print(section)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if args.results_md is not None:
        doc = args.results_md.read_text() if args.results_md.exists() else "# Benchmark results\n"
        args.results_md.write_text(replace_section(doc, SECTION_HEADING, section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
