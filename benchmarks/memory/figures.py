"""Figures of the memory benchmark: samples, per-item arithmetic, the report and its markdown."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
