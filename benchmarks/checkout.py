"""Checkout capacity: the highest constant rate of ``POST /v1/checkout`` a running Feira
serves with P95 < 200 ms, each request a new order (own cart, own Idempotency-Key).

    .venv/bin/feira up --detach
    .venv/bin/python -m benchmarks.checkout --results-md benchmarks/RESULTS.md

Carts (one unit of one SKU each, spread over many SKUs so no SKU runs out) are filled
before timing. A checkout freezes the cart, prices it, reserves stock, writes the order
and its outbox event, and authorizes with the sandbox processor; the order processor then
captures and ships in the background, on the same 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shlex
import sys
from typing import Any

from benchmarks.cart_add import (
    STEP_HEADER,
    SetupError,
    create_carts,
    fetch_skus,
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
    schedule_count,
    step_rates,
)
from benchmarks.report import save, steps_table, sweep_arguments

SECTION_HEADING = "## Checkout over HTTP (issue 5)"
DEFAULT_RATES = "25,50,75,100,150"
_JSON = {"Content-Type": "application/json"}


async def fill_carts(host: str, port: int, carts: list[str], skus: list[str]) -> None:
    """One unit of SKU ``i % len(skus)`` in cart ``i``, 16 requests at a time."""
    queue = list(enumerate(carts))

    async def worker() -> None:
        conn = Connection(host, port)
        try:
            while queue:
                i, cart = queue.pop()
                body = json.dumps({"sku": skus[i % len(skus)], "quantity": 1}).encode()
                reply = await conn.request("POST", f"/v1/carts/{cart}/items", body, _JSON)
                if reply.status != 200:
                    raise SetupError(f"filling cart {cart}: {reply.status} {reply.body[:200]!r}")
        finally:
            conn.close()

    async with asyncio.TaskGroup() as group:
        for _ in range(16):
            group.create_task(worker())


async def stocked(conn: Connection, skus: list[str], need: int) -> list[str]:
    """The SKUs with at least ``need`` units available: a refusal for want of stock would
    count as an error of the server."""
    keep: list[str] = []
    for start in range(0, len(skus), 100):
        query = "&".join(f"sku={sku}" for sku in skus[start : start + 100])
        for level in await get_json(conn, "GET", f"/v1/stock?{query}", 200):
            if level["available"] >= need:
                keep.append(level["sku"])
    return keep


async def run(args: argparse.Namespace) -> dict[str, Any]:
    host, port = require_loopback(args.url)
    rates = sorted(set(args.rates))
    planned = sum(schedule_count(r, args.warmup + args.duration) for r in rates)
    probe = Connection(host, port)
    try:
        candidates = await fetch_skus(probe, args.skus)
        # Each SKU takes about planned / SKUs orders; ask for twice that, at least 10.
        skus = await stocked(probe, candidates, max(10, 2 * planned // max(1, len(candidates))))
        ready = await get_json(probe, "GET", "/readyz", 200)
    finally:
        probe.close()
    if not skus:
        raise SetupError("no SKU has enough stock for this run; seed more products")
    print(f"setup: {planned:,} carts over {len(skus)} SKUs ...", flush=True)
    carts = await create_carts(host, port, planned)
    await fill_carts(host, port, carts, skus)
    bodies = [
        json.dumps({"cart_id": c, "payment_token": "tok_approve"}).encode() for c in carts
    ]
    run_id = dt.datetime.now(dt.UTC).strftime("%H%M%S")

    def make_request(seq: int) -> Request:
        headers = {**_JSON, "Idempotency-Key": f"bench-{run_id}-{seq}"}
        return "POST", "/v1/checkout", bodies[seq % len(bodies)], headers

    driver = OpenLoopDriver(
        args.url, make_request, connections=args.connections, expected_statuses=(202,)
    )
    target = Target(p95_s=args.p95_ms / 1000, max_error_rate=0.001)

    async def after_step(step: Any) -> None:
        print(fmt_row(step), flush=True)

    print(STEP_HEADER, flush=True)
    sweep: Sweep = await step_rates(
        driver, rates, duration_s=args.duration, warmup_s=args.warmup, target=target,
        after_step=after_step,
    )
    best = sweep.best_rate
    print(f"highest passing rate: {best:g} checkouts/s" if best else "no rate passed")
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python -m benchmarks.checkout " + shlex.join(sys.argv[1:]),
        "machine": machine_info(),
        "shards": ready.get("shards"),
        "skus": len(skus),
        "target_p95_ms": args.p95_ms,
        "sweep": sweep.to_json(),
    }


def markdown_section(report: dict[str, Any]) -> str:
    machine = report["machine"]
    rows = steps_table(report["sweep"]["steps"])
    best = report["sweep"]["best_rate"]
    return "\n".join(
        [
            SECTION_HEADING,
            "",
            f"{report['date']}, {machine.get('nproc')} CPUs ({machine.get('cpu_model')}), "
            f"shards {report['shards']}, {report['skus']} SKUs. Each request is a new order "
            f"(own cart and key); goal P95 < {report['target_p95_ms']:g} ms.",
            "",
            f"Command: `{report['command']}`",
            "",
            *rows,
            "",
            f"**Highest passing rate: {best:g} checkouts/s.**" if best else "No rate passed.",
            "",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    p = sweep_arguments(
        argparse.ArgumentParser(prog="python -m benchmarks.checkout", description=__doc__),
        rates=DEFAULT_RATES,
        p95_ms=200.0,
        out="benchmarks/out/checkout.json",
    )
    p.add_argument("--skus", type=int, default=400)
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
