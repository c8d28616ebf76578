"""`feira up --detach`, `feira status` and `feira down` as a user runs them.

Runs a second local Ray cluster beside the test session's own one, which also shows that
`feira down` stops only the cluster it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from actors.kinds import ShardKind
from loadtest.run import run_headless
from tests.conftest import direct_ingress_ports, free_port

pytestmark = pytest.mark.e2e

FEIRA = str(Path(sys.executable).with_name("feira"))


def run(
    args: list[str], env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FEIRA, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def cli_env(data_dir: Path, haproxy_dir: str, http_port: int) -> dict[str, str]:
    """A second Feira beside the test session's: its own ports, namespace and files."""
    env = {
        **os.environ,
        "FEIRA_DATA_DIR": str(data_dir),
        "FEIRA_NAMESPACE": "feira-cli",
        "FEIRA_RAY_GCS_PORT": str(free_port()),
        "FEIRA_RAY_DASHBOARD_PORT": str(free_port()),
        "FEIRA_HTTP_PORT": str(http_port),
        "FEIRA_GRPC_PORT": str(free_port()),
        "FEIRA_DEMO_PRODUCTS": "40",
        "FEIRA_CART_SHARDS": "1",
        "FEIRA_INVENTORY_SHARDS": "1",
        "FEIRA_PRICING_SHARDS": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{haproxy_dir}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{haproxy_dir}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": haproxy_dir,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{haproxy_dir}/server-state",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        **direct_ingress_ports(),
    }
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        env.pop(name, None)
    return env


async def test_up_status_down(tmp_path: Path, shard_client: Any) -> None:
    """With the Serve deployment as ingress (``FEIRA_INGRESS=auto``)."""
    haproxy_dir = tempfile.mkdtemp(prefix="feira-cli-", dir="/tmp")
    http_port = free_port()
    env = {**cli_env(tmp_path / "data", haproxy_dir, http_port), "FEIRA_INGRESS": "auto"}
    up = await asyncio.to_thread(run, ["up", "--detach"], env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "Feira is up: 40 products" in up.stdout
        assert f"http://127.0.0.1:{http_port}/docs" in up.stdout
        assert "Ingress" in up.stdout
        async with httpx.AsyncClient(timeout=30) as client:
            cart = await client.post(f"http://127.0.0.1:{http_port}/v1/carts")
            # `up` indexed the demo catalog before the API came up.
            found = await client.get(f"http://127.0.0.1:{http_port}/v1/search?limit=1")
        assert cart.status_code == 201
        assert found.json()["total"] == 37  # the demo's first 40 products hold 3 drafts

        status = await asyncio.to_thread(run, ["status", "--json"], env, 120)
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["applications"]["feira"]["status"] == "RUNNING"
        assert [s["state"] for s in report["shards"]] == ["ready"] * 6
        assert {s["name"] for s in report["shards"]} >= {
            "feira-change-hub",
            "feira-search-indexer",
            "feira-order-processor",
        }
        # Where each actor runs: one node here (the head), which holds all six.
        assert len(report["nodes"]) == 1
        node = report["nodes"][0]
        assert node["node_ip"]
        assert node["alive"] is True
        assert node["head"] is True
        assert sorted(node["actors"]) == sorted(s["name"] for s in report["shards"])
        for s in report["shards"]:
            assert s["node_id"] == node["node_id"]
            assert s["node_ip"] == node["node_ip"]
            assert s["actor_state"] == "ALIVE"
            assert s["restarts"] == 0
        # Backlog: carts not yet checkpointed, catalog changes not yet indexed.
        by_name = {s["name"]: s for s in report["shards"]}
        assert by_name["feira-cart-0"]["backlog"] == by_name["feira-cart-0"]["dirty"] >= 0
        assert by_name["feira-search-indexer"]["backlog"] >= 0
        assert by_name["feira-search-indexer"]["lag_s"] >= 0

        text = await asyncio.to_thread(run, ["status"], env, 120)
        assert text.returncode == 0, text.stdout + text.stderr
        lines = text.stdout.splitlines()
        node_line = next(
            i for i, line in enumerate(lines) if line.startswith(f"node {node['node_ip']} ")
        )
        assert "head alive" in lines[node_line]
        listed = [line.split()[0] for line in lines[node_line + 1 :]]
        assert sorted(listed) == sorted(by_name)
        cart_line = lines[node_line + 1 + listed.index("feira-cart-0")]
        assert "ready" in cart_line
        assert "backlog" in cart_line
    finally:
        down = await asyncio.to_thread(run, ["down"], env, 120)
        shutil.rmtree(haproxy_dir, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "Feira is down" in down.stdout
    async with httpx.AsyncClient(timeout=2) as client:
        with pytest.raises(httpx.TransportError):
            await client.get(f"http://127.0.0.1:{http_port}/healthz")
    # The test session's own cluster is untouched.
    quotes = await shard_client.fanout(ShardKind.PRICING, ["SKU-0000001-1"], "quote")
    assert "SKU-0000001-1" in quotes


async def test_state_survives_down_and_up_on_postgres_and_redis(
    tmp_path: Path, pg_database: str, redis_url: str, session_prefix: str
) -> None:
    haproxy_dir = tempfile.mkdtemp(prefix="feira-cli-", dir="/tmp")
    http_port = free_port()
    api = f"http://127.0.0.1:{http_port}"
    env = {
        **cli_env(tmp_path / "data", haproxy_dir, http_port),
        "FEIRA_POSTGRES_URL": pg_database,
        "FEIRA_REDIS_URL": redis_url,
        "FEIRA_REDIS_KEY_PREFIX": f"{session_prefix}cli:",
        # A minute of write-behind: the cart survives only because `feira down` flushes.
        "FEIRA_CART_CHECKPOINT_LAG_MS": "60000",
    }
    try:
        up = await asyncio.to_thread(run, ["up", "--detach"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        async with httpx.AsyncClient(base_url=api, timeout=30) as client:
            sku = (await client.get("/v1/products", params={"limit": 1})).json()["items"][0][
                "variants"
            ][0]["sku"]
            cart = (await client.post("/v1/carts")).json()["id"]
            added = await client.post(f"/v1/carts/{cart}/items", json={"sku": sku, "quantity": 3})
            assert added.status_code == 200
            before = {
                "cart": (await client.get(f"/v1/carts/{cart}")).json(),
                "stock": (await client.get(f"/v1/stock/{sku}")).json(),
                "price": (await client.get(f"/v1/prices/{sku}")).json(),
            }
        down = await asyncio.to_thread(run, ["down"], env, 120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "flushed 1 pending cart checkpoints" in down.stdout, down.stdout
        up = await asyncio.to_thread(run, ["up", "--detach"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        async with httpx.AsyncClient(base_url=api, timeout=30) as client:
            after = {
                "cart": (await client.get(f"/v1/carts/{cart}")).json(),
                "stock": (await client.get(f"/v1/stock/{sku}")).json(),
                "price": (await client.get(f"/v1/prices/{sku}")).json(),
            }
        assert after == before
        assert after["cart"]["lines"][0]["quantity"] == 3
    finally:
        await asyncio.to_thread(run, ["down"], env, 120)
        shutil.rmtree(haproxy_dir, ignore_errors=True)


def test_down_and_status_answer_at_once_when_nothing_runs(tmp_path: Path) -> None:
    """With no cluster on the GCS port, ``ray.init`` would retry for minutes; the CLI
    must see the closed port and say so."""
    with tempfile.TemporaryDirectory() as haproxy_dir:
        env = cli_env(tmp_path / "data", haproxy_dir, free_port())
        down = run(["down"], env, timeout=60)
        assert down.returncode == 0, down.stderr
        assert "no running cluster" in down.stdout
        status = run(["status"], env, timeout=60)
        assert status.returncode == 1
        assert "not running" in status.stderr


async def test_direct_ingress_serves_restarts_and_stops(tmp_path: Path) -> None:
    """``FEIRA_INGRESS=direct``: two uvicorn processes share the port (SO_REUSEPORT) and
    answer the same API as the Serve app; one killed comes back on its own; ``down``
    closes the port."""
    haproxy_dir = tempfile.mkdtemp(prefix="feira-cli-", dir="/tmp")
    http_port = free_port()
    env = {
        **cli_env(tmp_path / "data", haproxy_dir, http_port),
        "FEIRA_INGRESS": "direct",
        "FEIRA_HTTP_INGRESS_PROCESSES": "2",
        "FEIRA_SERVE_HTTP_PORT": str(free_port()),
        "FEIRA_GRPC_PORT": "0",
    }
    base = f"http://127.0.0.1:{http_port}"
    up = await asyncio.to_thread(run, ["up", "--detach"], env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "direct ingress (2 uvicorn processes" in up.stdout
        async with httpx.AsyncClient(timeout=30) as client:
            cart = (await client.post(f"{base}/v1/carts")).json()
            products = (await client.get(f"{base}/v1/products?limit=1")).json()
            sku = products["items"][0]["variants"][0]["sku"]
            added = await client.post(
                f"{base}/v1/carts/{cart['id']}/items",
                json={"sku": sku, "quantity": 2},
                headers={"X-Request-Id": "direct-ingress-test-1"},
            )
            bad = await client.post(f"{base}/v1/carts/{cart['id']}/items", json={"sku": 1})
        assert added.status_code == 200
        assert added.json()["item_count"] == 2
        assert added.headers["x-request-id"] == "direct-ingress-test-1"
        assert added.headers["x-content-type-options"] == "nosniff"
        assert "server" not in added.headers
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"

        status = await asyncio.to_thread(run, ["status", "--json"], env, 120)
        assert status.returncode == 0, status.stdout + status.stderr
        ingress = json.loads(status.stdout)["http_ingress"]
        assert [h["serving"] for h in ingress] == [True, True]
        pids = {h["pid"] for h in ingress}
        assert len(pids) == 2

        # The locust suites against this `feira up`: no failure but the flash sale's
        # expected sell-outs (counted as successes on a row of their own).
        keys = {
            "FEIRA_LOADTEST_API_KEY": ["--plan", "internal", "--label", "locust"],
            "FEIRA_LOADTEST_MERCHANT_KEY": [
                "--role",
                "merchant",
                "--subject",
                "m-001",
                "--plan",
                "internal",
            ],
        }
        locust_env = {k: v for k, v in os.environ.items() if not k.startswith("FEIRA_")}
        for name, flags in keys.items():
            made = await asyncio.to_thread(run, ["api-key", "create", *flags], env, 60)
            assert made.returncode == 0, made.stderr
            locust_env[name] = made.stdout.strip()
        for profile, users, seconds in (("peak", 8, 10), ("flash", 6, 6)):
            result = await asyncio.to_thread(
                run_headless,
                profile,
                users,
                seconds,
                base,
                tmp_path / "locust",
                spawn_rate=users,
                think_scale=0.05,
                env=locust_env,
                print_report=False,
            )
            assert result["aggregated"]["requests"] > 0, profile
            assert result["failures"] == [], (profile, result["failures"])
            assert result["exit_code"] == 0, profile

        victim = ingress[0]["pid"]
        os.kill(victim, 9)
        restarted: list[dict[str, Any]] = []
        for _ in range(120):
            await asyncio.sleep(0.5)
            again = await asyncio.to_thread(run, ["status", "--json"], env, 120)
            restarted = json.loads(again.stdout)["http_ingress"] if again.stdout else []
            serving = len(restarted) == 2 and all(h.get("serving") for h in restarted)
            if serving and victim not in {h.get("pid") for h in restarted}:
                break
        assert victim not in {h.get("pid") for h in restarted}
        assert all(h.get("serving") for h in restarted)
        async with httpx.AsyncClient(timeout=30) as client:
            view = await client.get(f"{base}/v1/carts/{cart['id']}")
        assert view.json()["item_count"] == 2
    finally:
        down = await asyncio.to_thread(run, ["down"], env, 120)
        shutil.rmtree(haproxy_dir, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    async with httpx.AsyncClient(timeout=2) as client:
        with pytest.raises(httpx.TransportError):
            await client.get(f"{base}/healthz")
