"""`feira`: run Feira on this machine, inspect it, stop it, seed its catalog."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from typing import Any

import orjson
from pydantic import ValidationError

from feira.ray_auth import use_local_auth
from feira.settings import Settings


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise SystemExit(f"invalid FEIRA_* settings:\n{error}") from error


def _seed(settings: Settings, products: int, *, only_if_empty: bool) -> int:
    from feira.stores import open_configured_stores
    from storage.demo import seed_stores

    async def run() -> int:
        stores = open_configured_stores(settings)
        try:
            await stores.migrate()
            if only_if_empty and await stores.catalog.count_products() > 0:
                return 0
            return await seed_stores(
                stores.catalog, stores.prices, stores.stock, products, settings.demo_seed,
                settings.currency, progress=True,
            )
        finally:
            await stores.close()

    return asyncio.run(run())


def _index(settings: Settings, *, rebuild: bool) -> int:
    """Bring the search index up to the catalog in this process, with a progress bar.
    Only while no indexer runs: a Tantivy directory has one writer at a time."""
    from tqdm import tqdm

    from actors.index_sync import FilePosition, IndexSync
    from feira.stores import open_configured_search, open_configured_stores, search_position_path

    async def run() -> int:
        stores = open_configured_stores(settings)
        index = open_configured_search(settings)
        sync = IndexSync(
            stores.catalog,
            stores.prices,
            index,
            FilePosition(search_position_path(settings)),
            batch=settings.search_sync_batch,
        )
        try:
            await sync.start()
            behind = await stores.catalog.last_seq() - (0 if rebuild else sync.stats().indexed_seq)
            with tqdm(total=max(behind, 0), unit="changes", desc="search index") as bar:
                if rebuild:
                    return await sync.rebuild(bar.update)
                return await sync.catch_up(bar.update)
        finally:
            await index.close()
            await stores.close()

    return asyncio.run(run())


def _cluster_running(settings: Settings) -> bool:
    if settings.ray_address is None:
        use_local_auth(settings.data_dir)  # before the first import of ray
    from feira import cluster

    run = cluster.read_run_file(settings)
    return run is not None and cluster.reachable(cluster.address(settings), settings)


def cmd_seed(args: argparse.Namespace) -> int:
    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    written = _seed(settings, args.products, only_if_empty=False)
    took = time.monotonic() - started
    print(f"seeded {written:,} products into {settings.data_dir} in {took:.1f} s")
    if _cluster_running(settings):
        print("Feira is running: its search indexer picks the new products up by itself")
        return 0
    started = time.monotonic()
    indexed = _index(settings, rebuild=False)
    print(f"indexed {indexed:,} catalog changes for search in {time.monotonic() - started:.1f} s")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    settings = _settings()
    started = time.monotonic()
    if _cluster_running(settings):
        from actors.client import SearchIndexerClient
        from feira import cluster

        cluster.connect(cluster.address(settings), settings)
        print("asking the running search indexer to rebuild the index ...")
        count = asyncio.run(SearchIndexerClient.connect(settings).rebuild())
    else:
        count = _index(settings, rebuild=True)
    print(f"rebuilt the search index from {count:,} catalog changes "
          f"in {time.monotonic() - started:.1f} s")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from feira.stores import open_configured_stores

    settings = _settings()
    if settings.postgres_url is None:
        print("no FEIRA_POSTGRES_URL: the embedded SQLite stores migrate themselves")
        return 0

    async def run() -> list[str]:
        stores = open_configured_stores(settings)
        try:
            return await stores.migrate()
        finally:
            await stores.close()

    applied = asyncio.run(run())
    print(f"applied {len(applied)} migrations: {', '.join(applied)}" if applied else
          "the PostgreSQL schema is up to date")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings.ray_address is None:
        use_local_auth(settings.data_dir)  # before the first import of ray
    from feira import cluster
    from feira.ingress import choose_ingress

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not args.no_seed:
        written = _seed(settings, settings.demo_products, only_if_empty=True)
        if written:
            print(f"seeded the demo catalog: {written:,} products")
    if not _cluster_running(settings):
        # Before the indexer starts: the index is then complete when the API comes up.
        _index(settings, rebuild=False)
    ingress = choose_ingress(settings)
    started_ray = settings.ray_address is None
    address = cluster.address(settings)
    session_dir = None
    if started_ray:
        previous = cluster.read_run_file(settings)
        if previous and cluster.reachable(address, settings):
            print(f"a local Ray cluster is already running at {address}; redeploying")
            session_dir = previous.get("session_dir")
        else:
            print(f"starting a local Ray cluster (GCS on {address}); ingress: {ingress.reason}")
            session_dir = cluster.start_local_ray(settings, ingress)
    url = f"http://{settings.http_host}:{settings.http_port}"
    # Written before anything else can fail, so `feira down` can always clean up.
    cluster.write_run_file(
        settings,
        {"address": address, "started_ray": started_ray, "session_dir": session_dir, "url": url},
    )
    cluster.connect(address, settings)
    print("deploying Feira ...")
    cluster.deploy(settings)
    report = cluster.wait_ready(url, args.timeout)
    print(
        f"Feira is up: {report.get('products', 0):,} products, shards {report.get('shards')}\n"
        f"  API        {url}/v1/products\n"
        f"  API docs   {url}/docs\n"
        f"  Dashboard  http://127.0.0.1:{settings.ray_dashboard_port}\n"
        f"  Ingress    {ingress.reason}"
    )
    if args.detach:
        print("running in the background; stop it with `feira down`")
        return 0
    print("press Ctrl-C to stop")
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop:
        time.sleep(0.2)
    print("\nstopping ...")
    return _down(settings)


def _down(settings: Settings) -> int:
    if settings.ray_address is None:
        use_local_auth(settings.data_dir)  # before the first import of ray
    from feira import cluster

    run = cluster.read_run_file(settings)
    session_dir = (run or {}).get("session_dir")
    if session_dir:
        # Our own local cluster: stopping its processes ends everything in it.
        stopped = cluster.stop_local_ray(session_dir)
        print(f"stopped the local Ray cluster ({stopped} processes)")
    else:
        # A shared cluster: remove only Feira, leave other Serve apps and actors alone.
        address = cluster.address(settings)
        if not cluster.reachable(address, settings):
            print(f"no running cluster at {address}")
        else:
            cluster.delete_app()
            cluster.remove_shards(settings)
            cluster.disconnect()
    cluster.run_file(settings).unlink(missing_ok=True)
    print("Feira is down")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    return _down(_settings())


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings.ray_address is None:
        use_local_auth(settings.data_dir)  # before the first import of ray
    from feira import cluster

    address = cluster.address(settings)
    if not cluster.reachable(address, settings):
        print(f"Feira is not running (no Ray cluster at {address})", file=sys.stderr)
        return 1
    apps = cluster.serve_status()
    shards = cluster.shard_reports(settings)
    report = {"address": address, "applications": apps, "shards": shards}
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"Ray cluster {address}")
        for name, app in apps.items():
            print(f"application {name}: {app['status']}")
            for dn, d in app["deployments"].items():
                print(f"  deployment {dn}: {d['status']} replicas {d['replicas']}")
        for s in shards:
            extra = {k: v for k, v in s.items() if k not in {"name", "state", "kind", "index"}}
            print(f"  shard {s['name']:<22} {s['state']:<12} {extra}")
    healthy = all(s["state"] == "ready" for s in shards) and all(
        a["status"] == "RUNNING" for a in apps.values()
    )
    return 0 if healthy and apps else 1


def cmd_merchant_token(args: argparse.Namespace) -> int:
    from api.merchant_auth import MerchantTokens
    from feira.signing_secrets import merchant_token_secret

    settings = _settings()
    if args.days < 1:
        raise SystemExit("--days must be at least 1")
    tokens = MerchantTokens(merchant_token_secret(settings))
    role = getattr(args, "role", "merchant")
    try:
        token = tokens.issue(args.merchant_id, ttl_s=args.days * 24 * 3600, role=role)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    print(token)
    print(
        f"valid {args.days} days for {role} {args.merchant_id}; send it as "
        "'Authorization: Bearer <token>'",
        file=sys.stderr,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feira", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Ray, deploy Feira, seed the demo catalog when empty")
    up.add_argument("--detach", action="store_true", help="return once /readyz is green")
    up.add_argument("--no-seed", action="store_true", help="do not seed the demo catalog")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for /readyz")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop what `feira up` started")
    down.set_defaults(func=cmd_down)
    status = sub.add_parser("status", help="health of deployments and shards")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    migrate = sub.add_parser("migrate", help="apply pending PostgreSQL migrations")
    migrate.set_defaults(func=cmd_migrate)
    seed = sub.add_parser("seed", help="load generated products into the embedded stores")
    seed.add_argument(
        "--products", type=int, default=Settings.model_fields["demo_products"].default
    )
    seed.set_defaults(func=cmd_seed)
    reindex = sub.add_parser(
        "reindex", help="rebuild the search index from the catalog (with a progress bar)"
    )
    reindex.set_defaults(func=cmd_reindex)
    token = sub.add_parser(
        "merchant-token", help="issue a token for the merchant API (printed on stdout)"
    )
    token.add_argument("merchant_id", help="e.g. m-001 (the demo catalog has m-001 to m-005)")
    token.add_argument("--days", type=int, default=30, help="how long it stays valid")
    token.set_defaults(func=cmd_merchant_token, role="merchant")
    carrier = sub.add_parser(
        "carrier-token", help="issue a token for a logistics operator (printed on stdout)"
    )
    carrier.add_argument("merchant_id", metavar="carrier", help="e.g. dhl (see FEIRA_CARRIERS)")
    carrier.add_argument("--days", type=int, default=30, help="how long it stays valid")
    carrier.set_defaults(func=cmd_merchant_token, role="carrier")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
