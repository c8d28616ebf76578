"""Product-page latency when the replica caches are warm: ``GET /bff/web/product/{id}``
(product + prices + stock + recommendations in one call) at constant offered rates.

    .venv/bin/feira seed --products 1000000 && .venv/bin/feira up --detach --no-seed
    .venv/bin/python -m benchmarks.product_page --results-md benchmarks/RESULTS.md

The pages are requested once before timing, so documents, prices and recommendations come
from replica memory; stock is live (one inventory shard call per page, coalesced), as a
shopper must see it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shlex
import sys
from typing import Any
from urllib.parse import quote

from benchmarks.cart_add import (
    STEP_HEADER,
    SetupError,
    fmt_row,
    get_json,
    machine_info,
)
from benchmarks.openloop import (
    Connection,
    OpenLoopDriver,
    Request,
    Sweep,
    Target,
    require_loopback,
    step_rates,
)
from benchmarks.report import save, steps_table, sweep_arguments

SECTION_HEADING = "## Product page, warm caches (issue 4)"
DEFAULT_RATES = "100,200,300,400"


async def product_ids(conn: Connection, want: int, stride_pages: int) -> list[str]:
    """``want`` published product ids spread over the catalog: every ``stride_pages``-th
    listing page, so a large catalog is sampled, not just its first ids."""
    ids: list[str] = []
    cursor: str | None = None
    page_no = 0
    while len(ids) < want:
        path = "/v1/products?limit=100" + (f"&cursor={quote(cursor, safe='')}" if cursor else "")
        page = await get_json(conn, "GET", path, 200)
        if page_no % stride_pages == 0:
            ids += [p["id"] for p in page["items"]]
        page_no += 1
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return ids[:want]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    host, port = require_loopback(args.url)
    probe = Connection(host, port)
    try:
        ready = await get_json(probe, "GET", "/readyz", 200)
        ids = await product_ids(probe, args.pages, args.stride)
        if not ids:
            raise SetupError("the catalogue has no published products; seed it first")
        print(f"warming {len(ids):,} product pages ...", flush=True)
        for _ in range(args.warm_rounds):  # several rounds: HAProxy spreads over replicas
            for product_id in ids:
                await get_json(probe, "GET", f"/bff/web/product/{product_id}", 200)
    finally:
        probe.close()
    paths = [f"/bff/web/product/{quote(i, safe='')}".encode() for i in ids]

    def make_request(seq: int) -> Request:
        return "GET", paths[seq % len(paths)].decode(), None, {}

    driver = OpenLoopDriver(args.url, make_request, connections=args.connections)
    target = Target(p95_s=args.p95_ms / 1000, max_error_rate=0.001)

    async def after_step(step: Any) -> None:
        print(fmt_row(step), flush=True)

    print(STEP_HEADER, flush=True)
    sweep: Sweep = await step_rates(
        driver,
        sorted(set(args.rates)),
        duration_s=args.duration,
        warmup_s=args.warmup,
        target=target,
        after_step=after_step,
    )
    return {
        "benchmark": "product_page",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python -m benchmarks.product_page " + shlex.join(sys.argv[1:]),
        "machine": machine_info(),
        "products": ready.get("products"),
        "cache": ready.get("cache"),
        "pages": len(ids),
        "target_p95_ms": args.p95_ms,
        "sweep": sweep.to_json(),
    }


def markdown_section(report: dict[str, Any]) -> str:
    machine = report["machine"]
    rows = steps_table(report["sweep"]["steps"])
    return "\n".join(
        [
            SECTION_HEADING,
            "",
            f"{report['date']}, {machine.get('nproc')} CPUs ({machine.get('cpu_model')}), "
            f"catalog of {report['products']:,} products, {report['pages']:,} distinct pages "
            f"warmed before timing. Goal: P95 ≤ {report['target_p95_ms']:g} ms.",
            "",
            f"Command: `{report['command']}`",
            "",
            *rows,
            "",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    p = sweep_arguments(
        argparse.ArgumentParser(prog="python -m benchmarks.product_page", description=__doc__),
        rates=DEFAULT_RATES,
        p95_ms=10.0,
        out="benchmarks/out/product_page.json",
    )
    p.add_argument("--pages", type=int, default=2000, help="distinct product pages")
    p.add_argument("--stride", type=int, default=5, help="sample every n-th listing page")
    p.add_argument("--warm-rounds", type=int, default=3)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = asyncio.run(run(args))
    except (SetupError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    save(report, args.out, args.results_md, SECTION_HEADING, markdown_section(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
