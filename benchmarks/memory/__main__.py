"""``python -m benchmarks.memory``: the command line; the package docstring says what it does."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import benchmarks.memory
from benchmarks.cart_add import machine_info, replace_section
from benchmarks.memory.figures import LINES_PER_CART, SECTION_HEADING, Report, markdown_section
from benchmarks.memory.in_process import traced_caches, traced_carts, traced_stock
from benchmarks.memory.on_ray import on_ray
from benchmarks.memory.workload import catalog_skus

# --- main -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.memory",
        description=benchmarks.memory.__doc__,
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
