"""Measure one started system: every journey's capacity, then the flash-sale oversell check."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.cart_add import coalescing_delta, fmt_row
from benchmarks.compare import workloads as w
from benchmarks.compare.ladder import Ladder
from benchmarks.compare.systems import System
from benchmarks.openloop import Connection, OpenLoopDriver, StepResult, Target

# Where each journey's ladder starts and how fast it climbs; the ladder finds the rest.
LADDERS: Mapping[str, Ladder] = {
    "ping": Ladder(start=500, factor=1.6),
    "browse": Ladder(start=200),
    "cart_add": Ladder(start=200),
    "flash": Ladder(start=200, factor=1.6),
    "checkout": Ladder(start=20),
    "peak": Ladder(start=100),
}
SHARD_KINDS = ("cart", "inventory", "pricing")
PLENTY = 1_000_000  # units on hand of every SKU the load uses: nobody is refused for stock
SCARCE_UNITS = 500  # the oversell check's stock, offered three times over


@dataclass
class Options:
    journeys: Sequence[str]
    duration_s: float = 8.0
    warmup_s: float = 2.0
    pause_s: float = 2.0
    connections: int = 128
    products: int = 500
    skus: int = 400
    target: Target = field(default_factory=Target)


async def catalog_of(system: System, options: Options) -> tuple[w.Catalog, str]:
    """Products to browse, SKUs for carts, the flash sale's hot SKU and the oversell check's
    scarce one, each stocked for the run through the system's own interface."""
    http = system.http()
    products = await http.products(options.products + 2)
    if len(products) < 10:
        raise ValueError(f"{system.name} lists only {len(products)} products; seed more")
    hot, scarce, rest = products[-1], products[-2], products[:-2]
    by_product: list[tuple[dict[str, Any], list[str]]] = []
    skus: list[str] = []
    for product in rest:
        own = [v["sku"] for v in product["variants"]][: max(0, options.skus - len(skus))]
        if own:
            by_product.append((product, own))
            skus += own
    for product, own in by_product:
        await system.set_stock(product, own, PLENTY)
    hot_sku = hot["variants"][0]["sku"]
    scarce_sku = scarce["variants"][0]["sku"]
    await system.set_stock(hot, [hot_sku], 10 * PLENTY)
    await system.set_stock(scarce, [scarce_sku], SCARCE_UNITS)
    return w.Catalog([p["id"] for p in rest], skus, hot_sku), scarce_sku


async def readyz(system: System, samples: int = 4) -> list[dict[str, Any]]:
    if system.name != "feira":
        return []
    conn = Connection(system.host, system.port)
    try:
        return [await system.http().call("GET", "/readyz", conn=conn) for _ in range(samples)]
    finally:
        conn.close()


async def sweep(system: System, workload: w.Workload, ladder: Ladder, o: Options) -> dict[str, Any]:
    driver = OpenLoopDriver(
        system.url,
        workload.make,
        connections=o.connections,
        expected_statuses=workload.expected,
    )
    history: list[tuple[float, bool]] = []
    steps: list[StepResult] = []
    while (rate := ladder.next_rate(history)) is not None:
        if workload.prepare is not None:
            await workload.prepare(rate, o.warmup_s + o.duration_s)
        before = await readyz(system)
        step = await driver.run_step(rate, o.duration_s, o.warmup_s, o.target)
        after = await readyz(system)
        if before and after:
            step.extra["coalescing"] = {
                kind: coalescing_delta(before, after, kind) for kind in SHARD_KINDS
            }
        print(f"  {system.name:>5} {workload.name:<8} {fmt_row(step)}", flush=True)
        history.append((rate, step.passed))
        steps.append(step)
        await asyncio.sleep(o.pause_s)
    return {"best_rate": Ladder.best(history), "steps": [s.to_json() for s in steps]}


async def oversell_check(system: System, sku: str, rate: float, o: Options) -> dict[str, Any]:
    """Offer three times the scarce SKU's units at ``rate``: exactly the units must be held,
    the rest refused with 409, and the store must agree."""
    path = f"/v1/stock/{sku}/reservations"
    headers = {**system.headers, **system.admin_headers, **w.JSON_HEADERS}
    driver = OpenLoopDriver(
        system.url,
        lambda seq: ("POST", path, b"{}", headers),
        connections=o.connections,
        expected_statuses=(409,),
    )
    offered = 3 * SCARCE_UNITS
    step = await driver.run_step(rate, offered / rate, 0.0, o.target)
    held = step.statuses.get("201", 0)
    stored = await system.reserved(sku)
    return {
        "units": SCARCE_UNITS,
        "offered": offered,
        "rate": rate,
        "held": held,
        "refused_409": step.statuses.get("409", 0),
        "other": {k: v for k, v in step.statuses.items() if k not in ("201", "409")},
        "stored": stored,
        "oversold": max(
            0, held - SCARCE_UNITS, stored["reserved"] + stored["sold"] - stored["on_hand"]
        ),
        "p95_s": step.p95_s,
    }


async def measure(system: System, o: Options) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    catalog, scarce_sku = await catalog_of(system, o)
    http = system.http()
    run_id = started.strftime("%H%M%S") + system.name
    adds = w.CartAdds(http, catalog, system.headers)
    checkouts = w.Checkouts(http, catalog, system.headers, run_id)
    admin = {**system.headers, **system.admin_headers}
    made = {
        "ping": lambda: w.ping(system.headers),
        "browse": lambda: w.browse(catalog, system.headers),
        "cart_add": lambda: w.cart_add(adds),
        "flash": lambda: w.flash(catalog, admin),
        "checkout": lambda: w.checkout(checkouts),
        "peak": lambda: w.peak(catalog, system.headers, adds, checkouts, http),
    }
    journeys: dict[str, Any] = {}
    for name in o.journeys:
        journeys[name] = await sweep(system, made[name](), LADDERS[name], o)
    report: dict[str, Any] = {"journeys": journeys, "started": started.isoformat()}
    if "flash" in o.journeys:
        best = journeys["flash"]["best_rate"] or LADDERS["flash"].start
        report["oversell"] = await oversell_check(system, scarce_sku, best, o)
        print(f"  {system.name:>5} oversell check: {report['oversell']}", flush=True)
    return report


def ops_per_call_at(steps: Sequence[Mapping[str, Any]], rate: float | None) -> dict[str, Any]:
    """Ops per shard call by kind at the step offered ``rate`` (Feira only)."""
    out: dict[str, Any] = defaultdict(lambda: None)
    for step in steps:
        if step["rate"] == rate:
            for kind, delta in step.get("extra", {}).get("coalescing", {}).items():
                out[kind] = delta.get("ops_per_call")
    return dict(out)
