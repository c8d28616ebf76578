"""Feira against a conventional peer and a bare ``GET /ping``, in one command.

    make compare
    # the same as: .venv/bin/python -m benchmarks.compare --results-md benchmarks/RESULTS.md

Starts the peer (``benchmarks/peer``), measures it, stops it; then starts Feira (``feira
up --detach``), measures it, stops it: one system at a time on the same machine, the same
PostgreSQL and Redis, each from a fresh database and key prefix, each seeded with the same
2,000 demo products. For every journey (ping, browse, cart add, flash-sale holds,
checkout, the peak mix) an open-loop driver steps the offered rate up until P95 reaches
200 ms or errors 0.1 %, then bisects; after the flash sale, a scarce SKU is offered three
times its stock to show nothing is oversold. Writes the JSON report, a latency-versus-rate
PNG and, with ``--results-md``, its section of RESULTS.md. Takes about 25-35 minutes on
2 cores.

PostgreSQL and Redis come from ``FEIRA_BENCH_POSTGRES_URL`` / ``FEIRA_BENCH_REDIS_URL``
(default: the local servers); the databases ``feira_compare`` and ``feira_compare_peer``
are dropped and re-created.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from benchmarks.cart_add import SetupError, machine_info
from benchmarks.compare import report as rep
from benchmarks.compare.run import Options, measure
from benchmarks.compare.systems import Stores, System, start_feira, start_peer
from benchmarks.compare.workloads import JOURNEYS
from benchmarks.report import save


def _journeys(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(JOURNEYS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"journeys are some of {', '.join(JOURNEYS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--systems", default="peer,feira", help="which to run, in this order")
    p.add_argument("--journeys", type=_journeys, default=list(JOURNEYS))
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per step")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per step")
    p.add_argument("--connections", type=int, default=128)
    p.add_argument("--work-dir", type=Path, default=Path("var-compare"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/compare.json"))
    p.add_argument("--plot", type=Path, default=Path("benchmarks/compare.png"))
    p.add_argument("--results-md", type=Path, default=None)
    p.add_argument("--feira-port", type=int, default=8000)
    p.add_argument("--peer-port", type=int, default=8100)
    p.add_argument(
        "--feira-ingress",
        default=None,
        help="FEIRA_INGRESS for Feira (default: what feira up chooses)",
    )
    p.add_argument("--feira-http-processes", type=int, default=None)
    p.add_argument(
        "--feira-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another FEIRA_* setting for Feira (repeat), e.g. FEIRA_CART_SHARDS=2",
    )
    return p


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stores = Stores(
        os.environ.get("FEIRA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        os.environ.get("FEIRA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        args.work_dir.resolve(),
    )
    options = Options(
        journeys=args.journeys,
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
    )
    results: dict[str, Any] = {}
    for name in [s.strip() for s in args.systems.split(",") if s.strip()]:
        system: System
        if name == "peer":
            system = await start_peer(stores, 2000, args.peer_port)
        elif name == "feira":
            ingress = {}
            if args.feira_ingress:
                ingress["FEIRA_INGRESS"] = args.feira_ingress
            if args.feira_http_processes:
                ingress["FEIRA_HTTP_INGRESS_PROCESSES"] = str(args.feira_http_processes)
            for item in args.feira_setting:
                setting, sep, value = item.partition("=")
                if not sep or not setting.startswith("FEIRA_"):
                    raise SetupError(f"--feira-setting {item!r}: FEIRA_NAME=VALUE")
                ingress[setting] = value
            system = await start_feira(stores, args.feira_port, ingress)
        else:
            raise SetupError(f"unknown system {name!r}: peer or feira")
        print(f"measuring {name} at {system.url}", flush=True)
        try:
            results[name] = await measure(system, options)
        finally:
            await system.stop()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python -m benchmarks.compare " + shlex.join(sys.argv[1:]),
        "machine": machine_info(),
        "options": {
            "journeys": options.journeys,
            "duration_s": options.duration_s,
            "warmup_s": options.warmup_s,
            "connections": options.connections,
        },
        "systems": results,
        "feira_ingress": args.feira_ingress or "default",
        "feira_settings": args.feira_setting,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = asyncio.run(run(args))
    except (SetupError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rep.plot(report, args.plot)
    section = rep.markdown(report, args.plot.name if args.results_md else None)
    print(section)
    save(report, args.out, args.results_md, rep.SECTION_HEADING, section)
    print(f"plot {args.plot}; JSON {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
