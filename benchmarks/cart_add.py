"""Cart-add capacity: the highest constant rate of ``POST /v1/carts/{id}/items`` that a
running Feira serves with P95 < 200 ms and errors < 0.1 %.

    .venv/bin/feira up --detach
    .venv/bin/python -m benchmarks.cart_add --results-md benchmarks/RESULTS.md

Carts are created before timing starts. Each add picks the next cart round-robin and one of
that cart's few SKUs, with enough carts that no line passes the 99-unit limit and no cart
the 50-line limit, so every request is one the server should accept.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from benchmarks.openloop import (
    Connection,
    OpenLoopDriver,
    Request,
    StepResult,
    Sweep,
    Target,
    require_loopback,
    schedule_count,
    step_rates,
)

SECTION_HEADING = "## Cart adds over HTTP (issue 2)"
DEFAULT_RATES = "200,400,600,800,1000,1200,1500"
MAX_QUANTITY_PER_LINE = 99
MAX_LINES_PER_CART = 50
_JSON = {"Content-Type": "application/json"}
_SETUP_TIMEOUT_S = 30.0
_MAX_PRODUCT_PAGES = 100
_SETUP_CONCURRENCY = 32


# --------------------------------------------------------------------------- the workload


def carts_needed(n_requests: int, skus_per_cart: int, max_quantity: int = 99) -> int:
    """Fewest carts such that ``n_requests`` round-robin adds keep every line <= max_quantity.

    With n carts of k SKUs, line (cart, sku) gets one unit every n*k requests.
    """
    if skus_per_cart < 1 or max_quantity < 1:
        raise ValueError("skus_per_cart and max_quantity must be >= 1")
    return max(1, math.ceil(n_requests / (skus_per_cart * max_quantity)))


@dataclass(frozen=True)
class CartPlan:
    """Which cart and SKU request number ``seq`` adds to."""

    cart_ids: tuple[str, ...]
    cart_skus: tuple[tuple[str, ...], ...]

    @classmethod
    def build(cls, cart_ids: Sequence[str], skus: Sequence[str], skus_per_cart: int) -> CartPlan:
        if not cart_ids or not skus:
            raise ValueError("need at least one cart and one SKU")
        k = min(skus_per_cart, len(skus), MAX_LINES_PER_CART)
        # Consecutive carts take consecutive slices of the SKU list, so every SKU (and so
        # every inventory/pricing shard) sees traffic; within a cart the k SKUs are distinct.
        per_cart = tuple(
            tuple(skus[(c * k + j) % len(skus)] for j in range(k)) for c in range(len(cart_ids))
        )
        return cls(tuple(cart_ids), per_cart)

    def line_of(self, seq: int) -> tuple[int, str]:
        n = len(self.cart_ids)
        cart = seq % n
        skus = self.cart_skus[cart]
        return cart, skus[(seq // n) % len(skus)]

    def factory(self) -> RequestFactory:
        return RequestFactory(self)


class RequestFactory:
    """``make_request`` for the driver; paths and bodies are built once, not per request."""

    def __init__(self, plan: CartPlan) -> None:
        self.plan = plan
        self.paths = [f"/v1/carts/{quote(c, safe='')}/items" for c in plan.cart_ids]
        skus = {s for group in plan.cart_skus for s in group}
        self.bodies = {s: json.dumps({"sku": s, "quantity": 1}).encode() for s in skus}

    def __call__(self, seq: int) -> Request:
        cart, sku = self.plan.line_of(seq)
        return "POST", self.paths[cart], self.bodies[sku], _JSON


# --------------------------------------------------------------------------- /readyz counters


def _pairs(samples: Sequence[dict[str, Any]], kind: str) -> list[tuple[int, int]]:
    """Distinct (calls, ops) of ``kind`` across /readyz samples. Between steps the server is
    idle, so samples from one replica agree and each distinct pair is one replica."""
    seen: dict[tuple[int, int], None] = {}
    for sample in samples:
        stats = sample.get("coalescing", {}).get(kind)
        if isinstance(stats, dict) and "calls" in stats and "ops" in stats:
            seen[(int(stats["calls"]), int(stats["ops"]))] = None
    return list(seen)


def coalescing_delta(
    before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], kind: str
) -> dict[str, Any]:
    """Calls, ops and ops per call of one coalescer kind over a step, from /readyz samples.

    The counters are per BFF replica and a sample does not say which replica answered. With
    one replica the delta is exact. With several, each after-pair is matched to the closest
    before-pair it could have grown from; if that is ambiguous the ratio is left out.
    """
    b, a = _pairs(before, kind), _pairs(after, kind)
    replicas = max(len(b), len(a))
    out: dict[str, Any] = {
        "calls": None,
        "ops": None,
        "ops_per_call": None,
        "replicas_seen": replicas,
    }
    if not b or not a:
        out["note"] = "no counters in /readyz"
        return out
    used: set[tuple[int, int]] = set()
    calls = ops = 0
    for pair in sorted(a):
        candidates = [p for p in b if p[0] <= pair[0] and p[1] <= pair[1]]
        if not candidates:
            out["note"] = "a replica's counters went down (restarted?)"
            return out
        prev = max(candidates)
        if prev in used:
            out["note"] = f"{replicas} replicas answered; cannot tell their counters apart"
            return out
        used.add(prev)
        calls += pair[0] - prev[0]
        ops += pair[1] - prev[1]
    out["calls"], out["ops"] = calls, ops
    out["ops_per_call"] = round(ops / calls, 2) if calls else None
    if replicas == 1:
        out["note"] = "one BFF replica answered"
    elif len(a) < len(b):
        out["note"] = f"{replicas} replicas; not all answered after the step; partial"
    else:
        out["note"] = f"{replicas} replicas; summed, matched by counter order"
    return out


# --------------------------------------------------------------------------- RESULTS.md


def replace_section(doc: str, heading: str, section: str) -> str:
    """``doc`` with the section titled ``heading`` replaced by ``section`` (appended if absent).

    A section runs to the next heading of the same or a higher level outside code fences,
    so the other sections are left byte for byte.
    """
    level = len(heading) - len(heading.lstrip("#"))
    lines = doc.splitlines(keepends=True)
    start: int | None = None
    end = len(lines)
    fenced = False
    for n, line in enumerate(lines):
        text = line.rstrip("\r\n")
        if text.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        hashes = len(text) - len(text.lstrip("#"))
        is_heading = 0 < hashes <= 6 and text[hashes : hashes + 1] == " "
        if start is None:
            if text.strip() == heading.strip():
                start = n
        elif is_heading and hashes <= level:
            end = n
            break
    body = section if section.endswith("\n") else section + "\n"
    if start is None:
        if not doc.strip():
            return body
        sep = "" if doc.endswith("\n\n") else ("\n" if doc.endswith("\n") else "\n\n")
        return doc + sep + body
    after = "".join(lines[end:])
    if after and not body.endswith("\n\n"):
        body += "\n"
    return "".join(lines[:start]) + body + after


def machine_info() -> dict[str, Any]:
    def read(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in read("/proc/cpuinfo").splitlines()
            if ln.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kib = next(
        (
            int(ln.split()[1])
            for ln in read("/proc/meminfo").splitlines()
            if ln.startswith("MemTotal:")
        ),
        0,
    )
    try:
        ray_version = importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        ray_version = "not installed"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "ray": ray_version,
    }


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def _opc(step: StepResult) -> str:
    value = step.extra.get("coalescing", {}).get("cart", {}).get("ops_per_call")
    return "-" if value is None else f"{value:.2f}"


def markdown_section(report: dict[str, Any]) -> str:
    sweep = report["sweep"]
    m = report["machine"]
    cfg = report["config"]
    best = sweep["best_rate"]
    rows = [
        "| offered req/s | achieved req/s | P50 ms | P95 ms | P99 ms | errors % "
        "| ops per cart-shard call | result |",
        "|---:|---:|---:|---:|---:|---:|---:|:---|",
    ]
    notes: set[str] = set()
    for s in sweep["steps"]:
        cart = s["extra"].get("coalescing", {}).get("cart", {})
        opc = cart.get("ops_per_call")
        if cart.get("note"):
            notes.add(cart["note"])
        rows.append(
            f"| {s['rate']:g} | {s['achieved_rps']:.0f} | {_ms(s['p50_s'])} | {_ms(s['p95_s'])} "
            f"| {_ms(s['p99_s'])} | {s['error_rate'] * 100:.2f} | "
            f"{'-' if opc is None else f'{opc:.2f}'} | {'pass' if s['passed'] else 'FAIL'} |"
        )
    shards = ", ".join(f"{k}={v}" for k, v in sorted(report.get("shards", {}).items())) or "?"
    verdict = (
        f"**Highest passing rate: {best:g} cart adds/s**"
        if best is not None
        else "**No offered rate passed.**"
    )
    target = sweep["target"]
    lines = [
        SECTION_HEADING,
        "",
        "Open-loop, constant arrival rate: request *i* is due at t0 + i/rate and its latency "
        "runs from that intended time, so queueing in the driver counts. "
        f"`POST /v1/carts/{{id}}/items`, quantity 1, {cfg['carts']:,} carts x "
        f"{cfg['skus_per_cart']} SKUs (from {cfg['skus']} catalogue SKUs), "
        f"{cfg['connections']} keep-alive connections, {cfg['warmup_s']:g} s warm-up + "
        f"{cfg['duration_s']:g} s measured per step. Target: P95 < "
        f"{target['p95_s'] * 1000:g} ms and errors < {target['max_error_rate'] * 100:g} %; "
        "the sweep stops after the first failing step.",
        "",
        *rows,
        "",
        verdict,
        "",
        "Ops per cart-shard call comes from the deltas of the `coalescing.cart` counters in "
        "`/readyz` before and after each step; those counters are per BFF replica"
        + (f" ({'; '.join(sorted(notes))})." if notes else "."),
        "",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']:g} GiB RAM; "
        f"driver and server on the same machine.",
        f"- Python {m['python']}, Ray {m['ray']}; shards from `/readyz`: {shards}.",
        f"- Date: {report['date']}.",
        "",
        "Reproduce from the repository root, with Feira running (`.venv/bin/feira up --detach`):",
        "",
        "```",
        report["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- talking to Feira


class SetupError(RuntimeError):
    pass


async def get_json(conn: Connection, method: str, path: str, expect: int) -> Any:
    headers = _JSON if method == "POST" else {}
    body = b"" if method == "POST" else None
    response = await conn.request(method, path, body, headers, timeout_s=_SETUP_TIMEOUT_S)
    if response.status != expect:
        raise SetupError(
            f"{method} {path} -> {response.status}, expected {expect}: {response.body[:300]!r}"
        )
    return json.loads(response.body)


async def fetch_skus(conn: Connection, want: int) -> list[str]:
    skus: dict[str, None] = {}
    cursor: str | None = None
    for _ in range(_MAX_PRODUCT_PAGES):
        path = "/v1/products?limit=100" + (f"&cursor={quote(cursor, safe='')}" if cursor else "")
        page = await get_json(conn, "GET", path, 200)
        for product in page.get("items", []):
            for variant in product.get("variants", []):
                if isinstance(variant.get("sku"), str):
                    skus[variant["sku"]] = None
        cursor = page.get("next_cursor")
        if len(skus) >= want or not cursor:
            break
    return list(skus)[:want]


async def create_carts(host: str, port: int, count: int) -> list[str]:
    ids: list[str] = []
    remaining = count

    async def creator() -> None:
        nonlocal remaining
        conn = Connection(host, port)
        try:
            while remaining > 0:
                remaining -= 1
                cart = await get_json(conn, "POST", "/v1/carts", 201)
                ids.append(str(cart["id"]))
        finally:
            conn.close()

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(_SETUP_CONCURRENCY, count)):
                group.create_task(creator())
    except* (SetupError, OSError) as failures:
        raise failures.exceptions[0] from None  # one reason is enough to stop setup
    return ids


async def sample_readyz(conn: Connection, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        sample = await get_json(conn, "GET", "/readyz", 200)
        if isinstance(sample, dict):
            out.append(sample)
    return out


# --------------------------------------------------------------------------- main


def fmt_row(step: StepResult) -> str:
    return (
        f"{step.rate:>8g} {step.achieved_rps:>9.0f} {_ms(step.p50_s):>8} {_ms(step.p95_s):>8} "
        f"{_ms(step.p99_s):>8} {_ms(step.max_s):>9} {step.error_rate * 100:>8.2f} "
        f"{_opc(step):>9} {_ms(step.send_lag_p99_s):>8}  {'pass' if step.passed else 'FAIL'}"
    )


STEP_HEADER = (
    f"{'offered':>8} {'achieved':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>9} "
    f"{'errors%':>8} {'ops/call':>9} {'lag99ms':>8}  result"
)


def parse_rates(text: str) -> list[float]:
    rates = [float(r) for r in text.split(",") if r.strip()]
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("rates must be positive numbers, comma-separated")
    return rates


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cart_add",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="Feira base URL (loopback)")
    p.add_argument(
        "--rates",
        type=parse_rates,
        default=parse_rates(DEFAULT_RATES),
        help=f"offered rates, req/s (default {DEFAULT_RATES})",
    )
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per step")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per step")
    p.add_argument("--pause", type=float, default=2.0, help="idle seconds between steps")
    p.add_argument("--connections", type=int, default=128)
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="per-request deadline from its intended send time, s",
    )
    p.add_argument("--carts", type=int, default=2000, help="carts to create (more if needed)")
    p.add_argument("--skus", type=int, default=200, help="catalogue SKUs to spread adds over")
    p.add_argument("--skus-per-cart", type=int, default=10, help="distinct SKUs per cart")
    p.add_argument(
        "--readyz-samples", type=int, default=8, help="/readyz samples before and after each step"
    )
    p.add_argument("--p95-ms", type=float, default=200.0, help="target P95")
    p.add_argument("--max-error-pct", type=float, default=0.1, help="target error rate, %%")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/cart_add.json"))
    p.add_argument(
        "--results-md",
        type=Path,
        default=None,
        help="replace the cart-add section of this markdown file",
    )
    p.add_argument(
        "--no-uvloop",
        action="store_true",
        help="use the stdlib event loop (costs the driver more CPU)",
    )
    return p


async def run(args: argparse.Namespace) -> dict[str, Any]:
    host, port = require_loopback(args.url)
    rates = sorted(set(args.rates))
    target = Target(p95_s=args.p95_ms / 1000, max_error_rate=args.max_error_pct / 100)
    probe = Connection(host, port)
    try:
        ready = await sample_readyz(probe, 1)
        shards = ready[0].get("shards", {}) if ready else {}
        skus = await fetch_skus(probe, args.skus)
    finally:
        probe.close()
    if not skus:
        raise SetupError("the catalogue has no SKUs; seed it (`feira seed`) first")
    k = min(args.skus_per_cart, len(skus), MAX_LINES_PER_CART)
    planned = sum(schedule_count(r, args.warmup + args.duration) for r in rates)
    n_carts = max(args.carts, carts_needed(planned, k, MAX_QUANTITY_PER_LINE))
    print(
        f"setup: {len(skus)} SKUs, creating {n_carts:,} carts (up to {planned:,} adds planned) ...",
        flush=True,
    )
    cart_ids = await create_carts(host, port, n_carts)
    plan = CartPlan.build(cart_ids, skus, k)
    driver = OpenLoopDriver(
        args.url, plan.factory(), connections=args.connections, request_timeout_s=args.timeout
    )
    readyz = Connection(host, port)
    before: list[dict[str, Any]] = []

    async def before_step(rate: float) -> None:
        nonlocal before
        before = await sample_readyz(readyz, args.readyz_samples)

    async def after_step(step: StepResult) -> None:
        after = await sample_readyz(readyz, args.readyz_samples)
        kinds = sorted({k for s in before + after for k in s.get("coalescing", {})})
        step.extra["coalescing"] = {kind: coalescing_delta(before, after, kind) for kind in kinds}
        print(fmt_row(step), flush=True)

    print(STEP_HEADER, flush=True)
    try:
        sweep: Sweep = await step_rates(
            driver,
            rates,
            duration_s=args.duration,
            warmup_s=args.warmup,
            pause_s=args.pause,
            target=target,
            before_step=before_step,
            after_step=after_step,
        )
    finally:
        readyz.close()
    best = sweep.best_rate
    print(f"highest passing rate: {best:g} req/s" if best is not None else "no rate passed")
    return {
        "benchmark": "cart_add",
        "url": args.url,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python -m benchmarks.cart_add " + shlex.join(sys.argv[1:]),
        "machine": machine_info(),
        "shards": shards,
        "config": {
            "rates": rates,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "timeout_s": args.timeout,
            "carts": n_carts,
            "skus": len(skus),
            "skus_per_cart": k,
            "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        },
        "sweep": sweep.to_json(),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        require_loopback(args.url)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            print("uvloop not installed; using the stdlib loop", file=sys.stderr)
        else:
            loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            report = runner.run(run(args))
    except (SetupError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_finite(report), indent=2, allow_nan=False))
    print(f"wrote {args.out}")
    if args.results_md is not None:
        doc = args.results_md.read_text() if args.results_md.exists() else "# Benchmark results\n"
        args.results_md.write_text(replace_section(doc, SECTION_HEADING, markdown_section(report)))
        print(f"updated {args.results_md}")
    return 0


def _finite(value: Any) -> Any:
    """NaN (the percentiles of an empty step) as null, since JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
