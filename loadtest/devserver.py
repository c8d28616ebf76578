"""The whole Feira HTTP app in one process, without Ray, for validating the locust suites.

    .venv/bin/python -m loadtest.devserver --port 8000

Builds what a BFF replica builds (``deployments/bff.py``), with the shards reached through
an in-process :class:`~actors.router.ShardRouter` instead of Ray: the real shard services,
``Shop``, checkout, the order processor (run every 0.5 s), identity with API keys and OAuth2
client credentials, rate limits (in process memory), the WAF, and a Tantivy search index
kept in step with the catalog. Stores are embedded SQLite under ``--data-dir`` (a fresh
temporary directory by default, deleted at exit), seeded with the demo catalog.

Once listening it prints ONE JSON line on stdout, for the caller to read::

    {"url": "http://127.0.0.1:PORT", "api_key": "fk_...", "merchant_key": "fk_...",
     "merchant_subject": "m-001", "flash_sku": "SKU-...", "flash_stock": 20, ...}

``api_key`` is an application key on the ``internal`` plan (what ``FEIRA_LOADTEST_API_KEY``
should hold); ``merchant_key`` a merchant key for ``FEIRA_LOADTEST_MERCHANT_KEY``. The hot
flash-sale SKU's stock is set to ``--flash-stock`` so that a short run sells it out.

This is a functional stand-in: one process, one event loop, no Ray. Latencies measured
against it say nothing about Feira's capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from actors.cart_service import CartService
from actors.checkout import CheckoutService, CheckoutSettings
from actors.domain.cart import CartLimits
from actors.domain.rate_limit import InProcessLimiter
from actors.identity.accounts import IdentityService, IdentitySettings
from actors.identity.passwords import PasswordParams
from actors.identity.tokens import KeyRing, Role, TokenService
from actors.index_sync import FilePosition, IndexSync
from actors.inventory_service import InventoryService
from actors.kinds import ShardKind
from actors.logistics import Logistics, StoreShipmentIndex
from actors.order_processor import OrderProcessor, SandboxAuthorizations, StoreSeenEvents
from actors.payments.sandbox import SandboxProvider, SqliteLedger
from actors.periodic import Periodic
from actors.pricing_service import PricingService
from actors.router import ShardRouter
from actors.shop import Shop, ShopLimits
from api.app import Edge, create_api
from api.rate_limiting import CachedKeyLookup, RateLimitSettings
from api.routes.orders_ops import OrdersOps
from storage.demo import seed_stores
from storage.factory import Stores, open_embedded_stores, open_search_index
from storage.records import StockRecord

CURRENCY = "EUR"
MERCHANT_SUBJECT = "m-001"
WEBHOOK_SECRET = b"whsec_loadtest_devserver_secret_32b"
ORDER_PROCESSOR_INTERVAL_S = 0.5
SEARCH_SYNC_INTERVAL_S = 0.25


@dataclass
class DevServer:
    app: ASGIApp
    stores: Stores
    info: dict[str, Any]
    loops: list[Periodic]


async def build(
    data_dir: Path,
    *,
    products: int,
    flash_stock: int,
    rate_limits: bool,
    cart_shards: int = 4,
    inventory_shards: int = 4,
    pricing_shards: int = 2,
) -> DevServer:
    """Seed the stores under ``data_dir`` and build the app (loops not started yet)."""
    stores = open_embedded_stores(str(data_dir))
    await seed_stores(
        stores.catalog, stores.prices, stores.stock, products, 7, CURRENCY, progress=False
    )
    # The hot SKU: the first variant of the first product a shopper sees in the catalog
    # listing, the same default the locust suite picks.
    listed, _ = await stores.catalog.list_products(category=None, cursor=None, limit=1)
    flash_sku: str = listed[0]["variants"][0]["sku"]
    await stores.stock.put_levels([StockRecord(flash_sku, flash_stock, 0, 0)])

    carts = [CartService(CartLimits(50, 99), 3600, 10_000) for _ in range(cart_shards)]
    stock = [InventoryService(stores.stock, 900, 10_000) for _ in range(inventory_shards)]
    prices = [PricingService(stores.prices, CURRENCY, 10_000) for _ in range(pricing_shards)]
    router = ShardRouter(
        {
            ShardKind.CART: [s.apply for s in carts],
            ShardKind.INVENTORY: [s.apply for s in stock],
            ShardKind.PRICING: [s.apply for s in prices],
        },
        max_batch=512,
        max_inflight=1,
        timeout_s=5,
    )
    search = open_search_index(str(data_dir))
    sync = IndexSync(stores.catalog, stores.prices, search, FilePosition(data_dir / "search.pos"))
    await sync.rebuild()
    await search.refresh()
    shop = Shop(router, stores.catalog, CURRENCY, ShopLimits(), search_index=search)

    ledger = SqliteLedger(data_dir / "payments-sandbox.db")
    provider = SandboxProvider(ledger)
    checkout = CheckoutService(
        stores.orders, router, provider, stores.catalog, CheckoutSettings(currency=CURRENCY)
    )
    processor = OrderProcessor(
        stores.orders,
        router,
        provider,
        journal=stores.stock,
        authorizations=SandboxAuthorizations(ledger),
    )
    ops = OrdersOps(
        orders=stores.orders,
        processor=processor,
        logistics=Logistics(stores.orders, processor, StoreShipmentIndex(stores.orders)),
        webhook_secrets={provider.name: WEBHOOK_SECRET},
        seen=StoreSeenEvents(stores.orders),
    )
    tokens = TokenService(KeyRing.generate("loadtest-1"), "feira", "feira-api")
    identity = IdentityService(
        stores.identity,
        tokens,
        # Cheap argon2: nothing here protects real passwords.
        settings=IdentitySettings(
            password_params=PasswordParams(time_cost=1, memory_cost_kib=8, parallelism=1)
        ),
    )
    edge = Edge(
        tokens=tokens,
        identity=identity,
        limiter=InProcessLimiter(),
        rate_limits=RateLimitSettings(enabled=rate_limits),
        key_lookup=CachedKeyLookup(identity.authenticate_api_key),
    )
    app = create_api(shop, _ready, edge=edge, orders_ops=ops, checkout=checkout)

    _, api_key = await identity.create_api_key(None, "loadtest", plan="internal", label="load")
    _, merchant_key = await identity.create_api_key(
        Role.MERCHANT, MERCHANT_SUBJECT, plan="internal", label="loadtest merchant"
    )

    async def work_outbox() -> None:
        while await processor.run_once():
            pass
        await processor.expire_due()

    async def follow_catalog() -> None:
        if await sync.catch_up():
            await search.refresh()

    loops = [
        Periodic("order-processor", ORDER_PROCESSOR_INTERVAL_S, work_outbox),
        Periodic("search-sync", SEARCH_SYNC_INTERVAL_S, follow_catalog),
    ]
    info = {
        "api_key": api_key,
        "merchant_key": merchant_key,
        "merchant_subject": MERCHANT_SUBJECT,
        "flash_sku": flash_sku,
        "flash_stock": flash_stock,
        "products": products,
        "rate_limits": rate_limits,
    }
    return DevServer(app, stores, info, loops)


async def _ready() -> dict[str, Any]:
    return {"devserver": True}


def env_for(info: Mapping[str, Any]) -> dict[str, str]:
    """The ``FEIRA_LOADTEST_*`` variables that point the locust suite at this server."""
    return {
        "FEIRA_LOADTEST_API_KEY": str(info["api_key"]),
        "FEIRA_LOADTEST_MERCHANT_KEY": str(info["merchant_key"]),
        "FEIRA_LOADTEST_FLASH_SKU": str(info["flash_sku"]),
    }


def write_env_file(path: Path, url: str, info: Mapping[str, Any]) -> None:
    """Shell exports: ``source`` it before running locust against this server."""
    exports = "".join(f"export {k}={v}\n" for k, v in env_for(info).items())
    path.write_text(f"export FEIRA_LOADTEST_HOST={url}\n{exports}")


async def serve(args: argparse.Namespace, data_dir: Path) -> None:
    dev = await build(
        data_dir,
        products=args.products,
        flash_stock=args.flash_stock,
        rate_limits=not args.no_rate_limits,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        dev.app, lifespan="off", access_log=False, log_level=args.log_level, loop="none"
    )
    server = uvicorn.Server(config)
    for loop in dev.loops:
        loop.ensure_started()
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving  # raises what stopped it
            return
        await asyncio.sleep(0.02)
    url = f"http://{args.host}:{port}"
    line = json.dumps({"url": url, **dev.info, "env": env_for(dev.info)})
    print(line, flush=True)
    if args.env_file:
        write_env_file(Path(args.env_file), url, dev.info)
    try:
        await serving
    finally:
        await dev.stores.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.devserver", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--products", type=int, default=300, help="demo catalog size")
    p.add_argument("--flash-stock", type=int, default=20, help="stock of the hot SKU")
    p.add_argument("--data-dir", default=None, help="default: a temporary directory")
    p.add_argument("--env-file", default=None, help="also write shell exports here")
    p.add_argument("--no-rate-limits", action="store_true", help="turn rate limits off")
    p.add_argument("--log-level", default="warning")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    made_dir = args.data_dir is None
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="feira-devserver-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            import uvloop

            uvloop.run(serve(args, data_dir))
    finally:
        if made_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
