"""The locust suites run against the whole Feira HTTP app (in-process shards, SQLite, no
Ray) served by uvicorn in a subprocess (``loadtest/devserver.py``): every profile must
send requests, cover its journey's steps and see no failure other than the flash sale's
expected sell-outs; a wrong API key must show up as failures named by problem code.

Locust itself runs in subprocesses too: importing it here would monkey-patch the test
process with gevent. Think times are scaled down (--think-scale) so a few seconds cover
whole visits. The latencies printed are of a one-process dev server on a shared machine:
they say nothing about Feira's capacity.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest.names import FLASH_SOLD_OUT_NAME
from loadtest.run import read_stats, row_of, run_headless

pytestmark = [pytest.mark.loadtest, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parents[2]
FLASH_STOCK = 8
THINK_SCALE = 0.03
START_TIMEOUT_S = 90.0

# (profile, users, seconds, request names that must have been sent)
RUNS: list[tuple[str, int, int, set[str]]] = [
    (
        "peak",
        10,
        14,
        {
            "/bff/web/product/[id]",
            "/bff/mobile/product/[id]",
            "/v1/merchant/prices/[sku]",
            "[flash] /v1/carts/[id]/items",
        },
    ),
    (
        "shopper",
        5,
        9,
        {
            "/v1/products (home)",
            "/v1/products?category=[c]",
            "/v1/search",
            "/bff/web/product/[id]",
            "/v1/carts/[id]/items",
            "/v1/carts/[id]",
            "/v1/checkout",
            "/v1/orders/[id]",
        },
    ),
    ("mobile", 4, 8, {"/v1/search", "/bff/mobile/product/[id]", "/v1/carts/[id]/items"}),
    (
        "merchant",
        3,
        8,
        {
            "/oauth/token",
            "/v1/merchant/products",
            "/v1/merchant/prices/[sku]",
            "/v1/merchant/inventory/[sku]",
            "/v1/merchant/products/[id] (PATCH)",
        },
    ),
    ("flash", 4, 7, {"[flash] /v1/carts", FLASH_SOLD_OUT_NAME}),
]


@pytest.fixture(scope="module")
def devserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("devserver")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtest.devserver",
            "--products",
            "200",
            "--flash-stock",
            str(FLASH_STOCK),
            "--data-dir",
            str(data_dir),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # One JSON line once it listens (seeding and indexing come first).
        deadline = time.monotonic() + START_TIMEOUT_S
        line = ""
        while not line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline().strip()
        if not line:
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
            pytest.fail(f"the dev server did not start: {err[-2000:]}")
        yield json.loads(line)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def locust_env(info: dict[str, Any], **changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEIRA_LOADTEST_")}
    env.update(info["env"])
    env["FEIRA_LOADTEST_SEED"] = "7"
    env.update(changes)
    return env


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in result["requests"]}


def flash_checkouts(result: dict[str, Any]) -> int:
    row = by_name(result).get("[flash] /v1/checkout")
    return int(row["requests"]) if row else 0


def test_every_profile_runs_clean(
    devserver: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.mktemp("locust")
    results: dict[str, dict[str, Any]] = {}
    for profile, users, seconds, required in RUNS:
        result = run_headless(
            profile,
            users,
            seconds,
            devserver["url"],
            out,
            spawn_rate=users,
            think_scale=THINK_SCALE,
            env=locust_env(devserver),
        )
        results[profile] = result
        rows = by_name(result)
        assert result["aggregated"] is not None, profile
        assert result["aggregated"]["requests"] > 0, profile
        assert result["failures"] == [], (profile, result["failures"])
        assert all(row["failures"] == 0 for row in result["requests"]), profile
        assert result["exit_code"] == 0, (profile, Path(result["log"]).read_text()[-2000:])
        missing = {name for name in required if rows.get(name, {}).get("requests", 0) == 0}
        assert not missing, (profile, missing)
        assert all(row["p95_ms"] >= row["p50_ms"] for row in result["requests"]), profile
        assert Path(result["html"]).stat().st_size > 0, profile

    # The flash sale sold its stock exactly once: 202 answers across the runs add up to
    # the hot SKU's stock, and every later buyer got the expected 409.
    sold = sum(flash_checkouts(r) for r in results.values())
    assert sold == FLASH_STOCK
    assert results["flash"]["expected_sold_out"] > 0
    level = httpx.get(
        f"{devserver['url']}/v1/stock/{devserver['flash_sku']}",
        headers={"X-Api-Key": devserver["api_key"]},
    ).json()
    assert level["available"] == 0
    assert level["reserved"] + level["sold"] == FLASH_STOCK


def test_failures_are_named_by_problem_code(
    devserver: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An unknown API key: every request is refused, and the report groups the refusals
    under ``401 unauthenticated``."""
    result = run_headless(
        "mobile",
        2,
        3,
        devserver["url"],
        tmp_path_factory.mktemp("locust-bad-key"),
        spawn_rate=2,
        think_scale=THINK_SCALE,
        env=locust_env(devserver, FEIRA_LOADTEST_API_KEY="fk_aaaaaaaaaaaa_" + "b" * 43),
    )
    assert result["exit_code"] != 0
    assert result["failures"], "refused requests must count as failures"
    assert {f["error"] for f in result["failures"]} == {"CatchResponseError('401 unauthenticated')"}
    assert result["aggregated"]["failures"] == result["aggregated"]["requests"] > 0


def test_stats_rows_parse_locust_csv(tmp_path: Path) -> None:
    prefix = tmp_path / "x"
    Path(f"{prefix}_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
        "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
        "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
        "GET,/v1/search,10,1,4,5.5,1,30,100,2.5,0.25,4,5,6,7,8,20,25,30,30,30,30\n"
        "POST,/v1/checkout,0,0,0,0,0,0,0,0,0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A\n"
        ",Aggregated,10,1,4,5.5,1,30,100,2.5,0.25,4,5,6,7,8,20,25,30,30,30,30\n"
    )
    rows, aggregated = read_stats(prefix)
    assert [r["name"] for r in rows] == ["/v1/search", "/v1/checkout"]
    assert rows[0]["p95_ms"] == 20
    assert rows[0]["p99_ms"] == 30
    assert rows[0]["rps"] == 2.5
    assert rows[0]["failure_rate"] == pytest.approx(0.1)
    assert rows[1]["requests"] == 0
    assert math.isnan(rows[1]["p50_ms"])
    assert aggregated is not None
    assert aggregated["requests"] == 10
    assert row_of({"Request Count": "N/A"})["requests"] == 0


def test_feira_loadtest_subcommand_parses() -> None:
    import argparse

    from loadtest.cli import add_loadtest_parser, cmd_loadtest

    parser = argparse.ArgumentParser(prog="feira")
    add_loadtest_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["loadtest", "--profile", "flash", "--users", "3", "--duration", "5", "--host", "http://h"]
    )
    assert args.func is cmd_loadtest
    assert (args.profile, args.users, args.duration, args.host) == ("flash", 3, 5.0, "http://h")
    with pytest.raises(SystemExit):
        parser.parse_args(["loadtest", "--profile", "nope"])
