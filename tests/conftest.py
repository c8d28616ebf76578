"""Shared fixtures. Ray starts once per test session, and only if a test asks for it."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feira.ray_auth import use_local_auth

pytest_plugins = ["tests.servers"]

TEST_PRODUCTS = 300

# Ray reads its auth mode when first imported, and test modules import ray at collection:
# set it now, with a token of this session's own.
_RUN_DIR = Path(tempfile.mkdtemp(prefix="feira-test-"))
use_local_auth(_RUN_DIR)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_RUN_DIR, ignore_errors=True)


def direct_ingress_ports() -> dict[str, str]:
    """Replica port ranges of a cluster's own. Serve's defaults (30000+, 40000+) are the same
    for every cluster on the host, so a replica of one could take a port that another
    cluster's HAProxy still routes to."""
    http = random.randrange(20_000, 29_000, 100)
    grpc = random.randrange(10_000, 19_000, 100)
    return {
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http + 100),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc + 100),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feira-data")


@pytest.fixture(scope="session")
def settings(data_dir: Path, pg_database: str, redis_url: str, session_prefix: str) -> Any:
    """The Ray session runs on the production stores: real PostgreSQL and Redis."""
    from feira.settings import Settings

    return Settings(
        data_dir=data_dir,
        postgres_url=pg_database,
        redis_url=redis_url,
        redis_key_prefix=f"{session_prefix}ray:",
        namespace="feira-test",
        cart_shards=2,
        inventory_shards=2,
        pricing_shards=2,
        http_port=free_port(),
        grpc_port=free_port(),
        demo_products=TEST_PRODUCTS,
        # The session runs the Serve deployment (what `serve deploy` runs in a cluster,
        # with replicas the fault tests kill); the direct ingress `feira up` runs by
        # default has its own tests in tests/e2e/test_cli.py.
        ingress="auto",
        reservation_sweep_interval_ms=200,
        # Long cache TTLs and two replicas: a merchant's change must reach every replica
        # through invalidation, not by expiry.
        price_cache_ttl_ms=60_000,
        product_cache_ttl_ms=60_000,
        bff_replicas=2,
        search_sync_interval_ms=100,
        # A killed order processor's batch comes back quickly in the fault tests.
        order_outbox_lease_s=10.0,
        # Every test client is 127.0.0.1: the anonymous plan is the whole suite's budget.
        # Sign-in keeps the production "auth" plan, which an e2e test runs into.
        rate_plans={
            "anonymous": (5_000.0, 10_000),
            "standard": (50.0, 100),
            "partner": (200.0, 400),
            "internal": (5_000.0, 10_000),
            "auth": (1.0, 10),
        },
        # argon2's production memory cost (64 MiB) per sign-up on two shared cores.
        password_memory_kib=8_192,
        password_time_cost=1,
    )


@pytest.fixture(scope="session")
def seeded(settings: Any) -> Any:
    from actors.index_sync import FilePosition, IndexSync
    from feira.stores import open_configured_search, open_configured_stores, search_position_path
    from storage.demo import seed_stores

    async def run() -> None:
        stores = open_configured_stores(settings)
        index = open_configured_search(settings)
        try:
            await stores.migrate()
            await seed_stores(
                stores.catalog, stores.prices, stores.stock, TEST_PRODUCTS, 7, "EUR",
                progress=False,
            )
            # As `feira up` does: the index is complete before the indexer actor starts.
            sync = IndexSync(
                stores.catalog, stores.prices, index, FilePosition(search_position_path(settings))
            )
            await sync.catch_up()
        finally:
            await index.close()
            await stores.close()

    asyncio.run(run())
    return settings


@pytest.fixture(scope="session")
def ray_cluster(seeded: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import ray

    from feira.ingress import choose_ingress

    ingress = choose_ingress(seeded)
    # HAProxy refuses socket paths over 97 characters, so not under pytest's deep tmp dirs.
    haproxy_dir = Path(tempfile.mkdtemp(prefix="feira-hap-", dir="/tmp"))
    # Workers inherit the driver's environment; keep HAProxy's files and ports our own so a
    # developer's running `feira up` is not disturbed.
    os.environ.update(ingress.env())
    os.environ.update(
        {
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(haproxy_dir / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(haproxy_dir / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(haproxy_dir),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(haproxy_dir / "server-state"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            "RAY_USAGE_STATS_ENABLED": "0",
            **direct_ingress_ports(),
        }
    )
    # address="local": a cluster of our own even when a developer's `feira up` is running.
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        namespace=seeded.namespace,
        logging_level="ERROR",
        log_to_driver=False,
    )
    try:
        yield
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(haproxy_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def shard_client(ray_cluster: None, seeded: Any) -> Any:
    from actors.client import ShardClient

    return ShardClient.connect(seeded)


@pytest.fixture(scope="session")
def feira_url(ray_cluster: None, seeded: Any) -> str:
    from feira import cluster
    from feira.ingress import choose_ingress

    cluster.deploy(seeded, choose_ingress(seeded))
    url = f"http://127.0.0.1:{seeded.http_port}"
    cluster.wait_ready(url, timeout_s=180)
    return url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The card-number scan runs last, so it sees what every other test stored and logged."""
    items.sort(key=lambda item: "test_no_card_numbers" in item.nodeid)
