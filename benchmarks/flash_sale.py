"""Flash-sale rate: how many reservations per second one hot SKU takes, with every buyer
aiming at that one SKU (so one inventory shard serves them all, batch by batch, each batch
durable before any reply).

    .venv/bin/feira up --detach
    .venv/bin/python -m benchmarks.flash_sale --results-md benchmarks/RESULTS.md

Buyers call the inventory shard through the same ShardClient a BFF replica uses; C
buyers keep one reservation in flight each (closed loop) for the duration. Stock is set
high enough that nobody is refused; the synthetic SKU's reservations expire after 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import secrets
import shlex
import sys
import time
from pathlib import Path

from actors.kinds import ShardKind
from benchmarks.cart_add import machine_info, replace_section
from benchmarks.openloop import percentiles
from feira.ray_auth import use_local_auth
from feira.settings import Settings

SECTION_HEADING = "## Flash sale: reservations on one hot SKU (issue 5)"


async def run(args: argparse.Namespace, settings: Settings) -> str:
    from actors.client import ShardClient  # imports ray: after the auth settings

    client = ShardClient.connect(settings)
    sku = f"FLASH-BENCH-{secrets.token_hex(4)}"
    await client.call(ShardKind.INVENTORY, sku, "set_on_hand", f"{sku}:stock", sku, 10_000_000)
    latencies: list[float] = []
    stop = time.monotonic() + args.duration

    async def buyer(n: int) -> None:
        i = 0
        while time.monotonic() < stop:
            started = time.monotonic()
            rid = f"{sku}:{n}:{i}"
            await client.call(ShardKind.INVENTORY, sku, "reserve", rid, rid, sku, 1, 60.0)
            latencies.append(time.monotonic() - started)
            i += 1

    began = time.monotonic()
    await asyncio.gather(*(buyer(n) for n in range(args.concurrency)))
    took = time.monotonic() - began
    p50, p95, p99 = percentiles(latencies, (50, 95, 99))
    rate = len(latencies) / took
    machine = machine_info()
    command = ".venv/bin/python -m benchmarks.flash_sale " + shlex.join(sys.argv[1:])
    return "\n".join(
        [
            SECTION_HEADING,
            "",
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, {machine.get('nproc')} CPUs "
            f"({machine.get('cpu_model')}), {args.concurrency} buyers in a closed loop for "
            f"{args.duration:g} s on one SKU; store: "
            f"{'PostgreSQL' if settings.postgres_url else 'SQLite'}.",
            "",
            f"Command: `{command}`",
            "",
            f"**{rate:,.0f} reservations/s** on one SKU; latency P50 {p50 * 1000:.1f} ms, "
            f"P95 {p95 * 1000:.1f} ms, P99 {p99 * 1000:.1f} ms ({len(latencies):,} reservations).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flash_sale", description=__doc__)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--results-md", type=Path, default=None)
    args = p.parse_args(argv)
    settings = Settings()
    if settings.ray_address is None:
        use_local_auth(settings.data_dir)  # before the first import of ray
    from feira import cluster

    cluster.connect(cluster.address(settings), settings)
    section = asyncio.run(run(args, settings))
    print(section)
    if args.results_md is not None:
        doc = args.results_md.read_text() if args.results_md.exists() else "# Benchmark results\n"
        args.results_md.write_text(replace_section(doc, SECTION_HEADING, section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
