"""Where a benchmark's figures go: its JSON report, and its section of RESULTS.md."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.cart_add import parse_rates, replace_section


def save(
    report: dict[str, Any], out: Path, results_md: Path | None, heading: str, section: str
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    if results_md is not None:
        doc = results_md.read_text() if results_md.exists() else "# Benchmark results\n"
        results_md.write_text(replace_section(doc, heading, section))
        print(f"updated {results_md}")


def steps_table(steps: Iterable[dict[str, Any]]) -> list[str]:
    """A rate sweep's steps as markdown table lines."""
    rows = [
        "| offered/s | achieved | P50 ms | P95 ms | P99 ms | errors % | result |",
        "|---:|---:|---:|---:|---:|---:|:---|",
    ]
    for s in steps:
        rows.append(
            f"| {s['rate']:g} | {s['achieved_rps']:.0f} | {s['p50_s'] * 1000:.1f} "
            f"| {s['p95_s'] * 1000:.1f} | {s['p99_s'] * 1000:.1f} "
            f"| {s['error_rate'] * 100:.2f} | {'pass' if s['passed'] else 'FAIL'} |"
        )
    return rows


def sweep_arguments(
    parser: argparse.ArgumentParser, *, rates: str, p95_ms: float, out: str
) -> argparse.ArgumentParser:
    """The options every open-loop rate sweep over HTTP takes."""
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rates", type=parse_rates, default=parse_rates(rates))
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--p95-ms", type=float, default=p95_ms)
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--results-md", type=Path, default=None)
    return parser
