"""The systems under test: start one, give the workloads what they need, stop it.

Each runs alone on the machine while it is measured, on the same PostgreSQL and Redis,
from a clean database and key prefix:

* Feira: ``feira up --detach`` (Ray, Serve, HAProxy; edge on: rate limits in Redis, WAF,
  access control), carts checkpointed to Redis, stock, prices and orders in PostgreSQL.
  Load carries an API key on a ``benchmark`` plan high enough never to refuse (every
  driver is 127.0.0.1, so the per-IP plan would otherwise be what is measured).
* the peer: ``python -m benchmarks.peer`` (uvicorn, one worker per core), carts in Redis,
  stock, prices and orders in PostgreSQL (``benchmarks/peer/README.md``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

from actors.identity.tokens import TokenService
from benchmarks.cart_add import SetupError
from benchmarks.openloop import Connection, Response

SETUP_CONCURRENCY = 16
SETUP_TIMEOUT_S = 30.0
BENCH_PLAN = "benchmark"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stores:
    postgres_url: str  # a server URL; each system gets a database of its own on it
    redis_url: str
    work_dir: Path  # data directories and catalog files

    def database_url(self, name: str) -> str:
        parts = urlsplit(self.postgres_url)
        return urlunsplit(parts._replace(path=f"/{name}"))


async def recreate_database(stores: Stores, name: str) -> str:
    """Drop and create database ``name``: every run starts from the seed, not from what
    the last run sold."""
    admin = await asyncpg.connect(stores.database_url("postgres"))
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return stores.database_url(name)


def clear_redis_prefix(redis_url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        return len(keys)
    finally:
        client.close()


@dataclass
class Http:
    """Setup calls (not timed) through the benchmark's own HTTP client."""

    host: str
    port: int
    headers: Mapping[str, str]

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        expect: Sequence[int] = (200,),
        headers: Mapping[str, str] | None = None,
        conn: Connection | None = None,
    ) -> Any:
        own = conn is None
        c = Connection(self.host, self.port) if conn is None else conn
        h = {**self.headers, **(headers or {})}
        payload = None
        if body is not None or method in ("POST", "PUT", "PATCH"):
            payload = json.dumps(body if body is not None else {}).encode()
            h["Content-Type"] = "application/json"
        try:
            reply: Response = await c.request(method, path, payload, h, timeout_s=SETUP_TIMEOUT_S)
        finally:
            if own:
                c.close()
        if reply.status not in expect:
            raise SetupError(f"{method} {path} -> {reply.status}: {reply.body[:300]!r}")
        return json.loads(reply.body) if reply.body else None

    async def each(self, items: Sequence[Any], work: Any) -> list[Any]:
        """``await work(conn, item)`` for every item, SETUP_CONCURRENCY at a time, in order."""
        results: list[Any] = [None] * len(items)
        queue = list(enumerate(items))

        async def worker() -> None:
            conn = Connection(self.host, self.port)
            try:
                while queue:
                    i, item = queue.pop()
                    results[i] = await work(conn, item)
            finally:
                conn.close()

        async with asyncio.TaskGroup() as group:
            for _ in range(min(SETUP_CONCURRENCY, len(items))):
                group.create_task(worker())
        return results

    async def new_carts(self, count: int) -> list[str]:
        async def one(conn: Connection, _: int) -> str:
            cart = await self.call("POST", "/v1/carts", expect=(201,), conn=conn)
            return str(cart["id"])

        return await self.each(list(range(count)), one)

    async def filled_carts(self, count: int, skus: Sequence[str]) -> list[str]:
        async def one(conn: Connection, i: int) -> str:
            cart = await self.call("POST", "/v1/carts", expect=(201,), conn=conn)
            item = {"sku": skus[i % len(skus)], "quantity": 1}
            await self.call("POST", f"/v1/carts/{cart['id']}/items", item, conn=conn)
            return str(cart["id"])

        return await self.each(list(range(count)), one)

    async def products(self, want: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(found) < want:
            path = "/v1/products?limit=100" + (
                f"&cursor={quote(cursor, safe='')}" if cursor else ""
            )
            page = await self.call("GET", path)
            found += page.get("items", [])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return found[:want]


async def wait_http(host: str, port: int, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        conn = Connection(host, port)
        try:
            if (await conn.request("GET", path, None, {}, timeout_s=5.0)).status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise SetupError(f"http://{host}:{port}{path} not ready after {timeout_s:g} s")
        await asyncio.sleep(0.5)


@dataclass
class System:
    """A started system: where to send load and how to set and read stock."""

    name: str
    host: str
    port: int
    headers: dict[str, str]  # on every request
    admin_headers: dict[str, str]  # added for stock holds
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def http(self) -> Http:
        return Http(self.host, self.port, self.headers)

    async def set_stock(
        self, product: Mapping[str, Any], skus: Sequence[str], on_hand: int
    ) -> None:
        raise NotImplementedError

    async def reserved(self, sku: str) -> dict[str, int]:
        """on_hand, reserved and sold of ``sku`` as the system's own store holds them."""
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError


@dataclass
class Feira(System):
    # Signs merchant tokens with the running Feira's keys (its data dir's key file).
    tokens: TokenService | None = None

    async def set_stock(
        self, product: Mapping[str, Any], skus: Sequence[str], on_hand: int
    ) -> None:
        assert self.tokens is not None, "start_feira sets the token service"
        token = self.tokens.issue_access(
            str(product["merchant_id"]), "merchant", ("catalog:read", "catalog:write"), 600
        )
        auth = {"Authorization": f"Bearer {token}"}
        http = self.http()

        async def one(conn: Connection, sku: str) -> None:
            path = f"/v1/merchant/inventory/{quote(sku, safe='')}"
            await http.call("PUT", path, {"on_hand": on_hand}, headers=auth, conn=conn)

        await http.each(list(skus), one)

    async def reserved(self, sku: str) -> dict[str, int]:
        level = await self.http().call("GET", f"/v1/stock/{quote(sku, safe='')}")
        return {k: int(level[k]) for k in ("on_hand", "reserved", "sold")}

    async def stop(self) -> None:
        run_feira(["down"], self.env, check=False)


def run_feira(args: list[str], env: Mapping[str, str], *, check: bool = True) -> str:
    done = subprocess.run(
        [str(ROOT / ".venv/bin/feira"), *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and done.returncode != 0:
        raise SetupError(f"feira {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def feira_env(
    stores: Stores, database_url: str, data_dir: Path, port: int, ingress: Mapping[str, str]
) -> dict[str, str]:
    plans = {
        "anonymous": (20.0, 40),
        "standard": (50.0, 100),
        "partner": (200.0, 400),
        "internal": (2000.0, 4000),
        "auth": (1.0, 10),
        BENCH_PLAN: (1_000_000.0, 1_000_000),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEIRA_")}
    env.update(
        FEIRA_DATA_DIR=str(data_dir),
        FEIRA_POSTGRES_URL=database_url,
        FEIRA_REDIS_URL=stores.redis_url,
        FEIRA_REDIS_KEY_PREFIX="feira-compare:",
        FEIRA_RATE_PLANS=json.dumps(plans),
        FEIRA_HTTP_PORT=str(port),
    )
    env.update(ingress)
    return env


async def start_feira(
    stores: Stores, port: int = 8000, ingress: Mapping[str, str] | None = None
) -> Feira:
    """``ingress``: FEIRA_INGRESS and friends, as ``feira up`` takes them."""
    from actors.identity.accounts import DEFAULT_SCOPES
    from actors.identity.tokens import Role
    from feira.settings import Settings
    from feira.signing_secrets import token_service

    data_dir = stores.work_dir / "feira"
    shutil.rmtree(data_dir, ignore_errors=True)
    database_url = await recreate_database(stores, "feira_compare")
    clear_redis_prefix(stores.redis_url, "feira-compare:")
    env = feira_env(stores, database_url, data_dir, port, ingress or {})
    run_feira(["down"], env, check=False)  # a cluster left by an interrupted run
    print("starting Feira (feira up --detach) ...", flush=True)
    run_feira(["up", "--detach", "--timeout", "300"], env)
    key = run_feira(
        ["api-key", "create", "--plan", BENCH_PLAN, "--label", "benchmarks.compare"], env
    ).strip()
    tokens = token_service(Settings(data_dir=data_dir))
    admin = tokens.issue_access("bench-ops", Role.ADMIN, DEFAULT_SCOPES[Role.ADMIN], ttl_s=3600)
    return Feira(
        "feira",
        "127.0.0.1",
        port,
        {"X-Api-Key": key},
        {"Authorization": f"Bearer {admin}"},
        env,
        tokens,
    )


class Peer(System):
    process: subprocess.Popen[bytes] | None = None

    async def set_stock(
        self, product: Mapping[str, Any], skus: Sequence[str], on_hand: int
    ) -> None:
        conn = await asyncpg.connect(self.env["FEIRA_PEER_POSTGRES_URL"])
        try:
            await conn.execute(
                'UPDATE "peer".stock SET on_hand = reserved + sold + $2 WHERE sku = ANY($1)',
                list(skus),
                on_hand,
            )
        finally:
            await conn.close()

    async def reserved(self, sku: str) -> dict[str, int]:
        conn = await asyncpg.connect(self.env["FEIRA_PEER_POSTGRES_URL"])
        try:
            row = await conn.fetchrow(
                'SELECT on_hand, reserved, sold FROM "peer".stock WHERE sku = $1', sku
            )
        finally:
            await conn.close()
        if row is None:
            raise SetupError(f"peer has no stock row for {sku}")
        return dict(row)

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn_peer(env: Mapping[str, str], port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "benchmarks.peer", "--port", str(port)]
    return subprocess.Popen(command, env=dict(env), cwd=ROOT)


async def start_peer(stores: Stores, products: int, port: int = 8100) -> Peer:
    from benchmarks.peer.seed import seed_peer

    catalog = stores.work_dir / "peer-catalog.db"
    database_url = await recreate_database(stores, "feira_compare_peer")
    clear_redis_prefix(stores.redis_url, "peer-compare:")
    print(f"seeding the peer ({products:,} products) ...", flush=True)
    stores.work_dir.mkdir(parents=True, exist_ok=True)
    await seed_peer(database_url, "peer", products, catalog_path=str(catalog))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEIRA_")}
    env.update(
        FEIRA_PEER_POSTGRES_URL=database_url,
        FEIRA_PEER_REDIS_URL=stores.redis_url,
        FEIRA_PEER_REDIS_PREFIX="peer-compare:",
        FEIRA_PEER_CATALOG=str(catalog),
    )
    process = spawn_peer(env, port)
    # The same header bytes as Feira's load carries, though the peer has no use for them.
    headers = {"X-Api-Key": "peer-has-no-api-keys-0000000000000000"}
    peer = Peer("peer", "127.0.0.1", port, headers, {}, env)
    peer.process = process
    try:
        await wait_http("127.0.0.1", port, "/readyz", 60)
    except SetupError:
        await peer.stop()
        raise
    return peer
