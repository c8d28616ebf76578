"""Run a locust profile headless and read back its percentiles.

    .venv/bin/python -m loadtest.run --profile peak --users 50 --duration 60 \\
        --host http://127.0.0.1:8000 --out var/locust

:func:`run_headless` starts locust as a subprocess (``loadtest/locustfile.py``, CSV and HTML
reports under ``out_dir``), waits for it, and returns what its stats CSV says per request
name and aggregated: request and failure counts, requests/s, P50/P95/P99 (locust's
percentiles are approximate: response times are bucketed, to 10 ms above 100 ms and to
100 ms above 1 s). Flash-sale sell-outs (``409 insufficient_stock``, expected) are
successes on their own row and are also counted in ``expected_sold_out``.

Locust is a closed-loop generator: each user waits for an answer before its next step, so
a slow server receives fewer requests rather than queueing them. Its latencies are what
the simulated people saw; for capacity at a fixed arrival rate use ``benchmarks/``
(``openloop.py``), which measures from the intended send time.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loadtest.names import FLASH_SOLD_OUT_NAME, PROFILES

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
ROOT = LOCUSTFILE.parents[1]
AGGREGATED = "Aggregated"
# Beyond the run time: startup, the stop, writing the reports.
GRACE_S = 60.0


def _number(text: str | None) -> float:
    """A CSV cell as a float; locust writes ``N/A`` where there is no value."""
    if text is None or text.strip() in ("", "N/A"):
        return math.nan
    return float(text)


def _count(text: str | None) -> int:
    value = _number(text)
    return 0 if math.isnan(value) else int(value)


def row_of(raw: Mapping[str, str]) -> dict[str, Any]:
    """One row of locust's ``*_stats.csv``, reduced to what a report needs."""
    count = _count(raw.get("Request Count"))
    failures = _count(raw.get("Failure Count"))
    return {
        "type": raw.get("Type", ""),
        "name": raw.get("Name", ""),
        "requests": count,
        "failures": failures,
        "failure_rate": failures / count if count else 0.0,
        "rps": _number(raw.get("Requests/s")),
        "failures_per_s": _number(raw.get("Failures/s")),
        "p50_ms": _number(raw.get("50%")),
        "p95_ms": _number(raw.get("95%")),
        "p99_ms": _number(raw.get("99%")),
        "max_ms": _number(raw.get("Max Response Time")),
        "avg_ms": _number(raw.get("Average Response Time")),
    }


def read_stats(prefix: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(rows per request name, the aggregated row) from ``<prefix>_stats.csv``."""
    rows: list[dict[str, Any]] = []
    aggregated: dict[str, Any] | None = None
    with Path(f"{prefix}_stats.csv").open(newline="") as handle:
        for raw in csv.DictReader(handle):
            row = row_of(raw)
            if row["name"] == AGGREGATED and not row["type"]:
                aggregated = row
            else:
                rows.append(row)
    return rows, aggregated


def read_failures(prefix: Path) -> list[dict[str, Any]]:
    """``<prefix>_failures.csv``: one row per (method, name, error), errors like
    ``CatchResponseError('409 cart_frozen')``."""
    path = Path(f"{prefix}_failures.csv")
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [
            {
                "method": raw.get("Method", ""),
                "name": raw.get("Name", ""),
                "error": raw.get("Error", ""),
                "occurrences": _count(raw.get("Occurrences")),
            }
            for raw in csv.DictReader(handle)
        ]


def locust_command(
    profile: str,
    users: int,
    duration_s: float,
    host: str,
    prefix: Path,
    *,
    spawn_rate: float | None = None,
    think_scale: float | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
    if users < 1:
        raise ValueError("users must be >= 1")
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        f"{spawn_rate if spawn_rate is not None else max(1.0, users / 10):g}",
        "--run-time",
        f"{max(1, round(duration_s))}s",
        "--host",
        host,
        "--profile",
        profile,
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--only-summary",
    ]
    if think_scale is not None:
        command += ["--think-scale", f"{think_scale:g}"]
    return [*command, *extra_args]


def run_headless(
    profile: str,
    users: int,
    duration_s: float,
    host: str,
    out_dir: str | Path,
    *,
    spawn_rate: float | None = None,
    think_scale: float | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    quiet: bool = True,
    print_report: bool = True,
) -> dict[str, Any]:
    """Run ``profile`` with ``users`` users for ``duration_s`` against ``host``; reports go to
    ``out_dir/<profile>_*.csv`` and ``out_dir/<profile>.html``. Returns (and by default
    prints) the percentiles per request name and aggregated. Credentials come from ``env``
    (default: this process's environment): ``FEIRA_LOADTEST_API_KEY``, ...
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / profile
    for stale in out.glob(f"{profile}_*.csv"):
        stale.unlink()
    command = locust_command(
        profile,
        users,
        duration_s,
        host,
        prefix,
        spawn_rate=spawn_rate,
        think_scale=think_scale,
        extra_args=extra_args,
    )
    child_env = dict(os.environ if env is None else env)
    # The suite imports as the `loadtest` package from the repository root.
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), child_env.get("PYTHONPATH", "")) if p
    )
    log_path = out / f"{profile}.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        done = subprocess.run(
            command,
            env=child_env,
            cwd=ROOT,
            stdout=log if quiet else None,
            stderr=subprocess.STDOUT if quiet else None,
            timeout=duration_s + GRACE_S,
            check=False,
        )
    took = time.monotonic() - started
    if not Path(f"{prefix}_stats.csv").exists():
        tail = log_path.read_text(errors="replace")[-2000:] if quiet else ""
        raise RuntimeError(f"locust wrote no stats (exit {done.returncode}):\n{tail}")
    rows, aggregated = read_stats(prefix)
    sold_out = sum(r["requests"] for r in rows if r["name"] == FLASH_SOLD_OUT_NAME)
    result: dict[str, Any] = {
        "profile": profile,
        "host": host,
        "users": users,
        "duration_s": duration_s,
        "wall_s": round(took, 1),
        "exit_code": done.returncode,
        "requests": rows,
        "aggregated": aggregated,
        "failures": read_failures(prefix),
        "expected_sold_out": sold_out,
        "csv_prefix": str(prefix),
        "html": f"{prefix}.html",
        "log": str(log_path),
    }
    if print_report:
        print(format_report(result))
    return result


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def format_report(result: Mapping[str, Any]) -> str:
    header = (
        f"{'request':<48} {'reqs':>7} {'fails':>6} {'req/s':>7} "
        f"{'P50 ms':>7} {'P95 ms':>7} {'P99 ms':>7}"
    )
    lines = [
        f"locust profile {result['profile']}: {result['users']} users, "
        f"{result['duration_s']:g} s against {result['host']} (exit {result['exit_code']})",
        header,
        "-" * len(header),
    ]
    rows = list(result["requests"])
    if result.get("aggregated"):
        rows.append({**result["aggregated"], "type": "", "name": "Aggregated"})
    for row in rows:
        name = f"{row['type']} {row['name']}".strip()
        lines.append(
            f"{name[:48]:<48} {row['requests']:>7} {row['failures']:>6} "
            f"{row['rps']:>7.1f} {_ms(row['p50_ms']):>7} {_ms(row['p95_ms']):>7} "
            f"{_ms(row['p99_ms']):>7}"
        )
    if result.get("expected_sold_out"):
        lines.append(
            f"flash sale: {result['expected_sold_out']} checkouts answered 409 "
            "insufficient_stock (expected; counted as successes)"
        )
    for failure in result.get("failures", []):
        lines.append(
            f"FAILED {failure['occurrences']}x {failure['method']} {failure['name']}: "
            f"{failure['error']}"
        )
    lines.append(f"reports: {result['csv_prefix']}_*.csv, {result['html']}")
    return "\n".join(lines)


def finite(value: Any) -> Any:
    """NaN (no sample) as null, so the JSON is standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=PROFILES, default="peak")
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--duration", type=float, default=60.0, help="seconds")
    p.add_argument("--spawn-rate", type=float, default=None, help="users/s (default users/10)")
    p.add_argument(
        "--host",
        default=os.environ.get("FEIRA_LOADTEST_HOST", "http://127.0.0.1:8000"),
        help="Feira's base URL (default $FEIRA_LOADTEST_HOST or http://127.0.0.1:8000)",
    )
    p.add_argument("--out", default="var/locust", help="directory for the CSV/HTML reports")
    p.add_argument("--think-scale", type=float, default=None, help="1: human pace")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead")


def main(argv: list[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


def run_from_args(args: argparse.Namespace) -> int:
    """Run the profile ``add_arguments`` parsed; 0 when requests were sent and none failed."""
    result = run_headless(
        args.profile,
        args.users,
        args.duration,
        args.host,
        args.out,
        spawn_rate=args.spawn_rate,
        think_scale=args.think_scale,
        print_report=not args.json,
    )
    if args.json:
        print(json.dumps(finite(result), indent=2, default=str))
    return 0 if not result["failures"] and result["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
