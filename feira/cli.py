"""`feira`: run Feira on this machine, inspect it, stop it, seed its catalog."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path
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
                stores.catalog,
                stores.prices,
                stores.stock,
                products,
                settings.demo_seed,
                settings.currency,
                progress=True,
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
    print(
        f"rebuilt the search index from {count:,} catalog changes "
        f"in {time.monotonic() - started:.1f} s"
    )
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
    print(
        f"applied {len(applied)} migrations: {', '.join(applied)}"
        if applied
        else "the PostgreSQL schema is up to date"
    )
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
    cluster.deploy(settings, ingress)
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
    address = cluster.address(settings)
    if settings.redis_url and cluster.reachable(address, settings):
        # Carts reach Redis write-behind: write what is pending before anything stops.
        print(f"flushed {cluster.flush_carts(settings)} pending cart checkpoints")
    if session_dir:
        # Our own local cluster: stopping its processes ends everything in it.
        stopped = cluster.stop_local_ray(session_dir)
        print(f"stopped the local Ray cluster ({stopped} processes)")
    else:
        # A shared cluster: remove only Feira, leave other Serve apps and actors alone.
        if not cluster.reachable(address, settings):
            print(f"no running cluster at {address}")
        else:
            cluster.delete_app(settings)
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
    from deployments.builder import APP_NAME
    from feira import cluster

    address = cluster.address(settings)
    if not cluster.reachable(address, settings):
        print(f"Feira is not running (no Ray cluster at {address})", file=sys.stderr)
        return 1
    apps = cluster.serve_status()
    http = cluster.http_ingress_reports(settings)
    shards = cluster.shard_reports(settings)
    nodes = cluster.by_node(shards, cluster.nodes())
    report = {
        "address": address,
        "applications": apps,
        "http_ingress": http,
        "nodes": nodes,
        "shards": shards,
    }
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(_status_text(report))
    healthy = (
        all(s["state"] == "ready" for s in shards)
        and all(a["status"] == "RUNNING" for a in apps.values())
        and all(h.get("serving") for h in http)
    )
    serving_http = bool(http) or APP_NAME in apps
    return 0 if healthy and serving_http else 1


# Report fields shown in their own columns, or not at all.
_SHOWN = {"name", "state", "kind", "index", "node_id", "node_ip", "actor_state", "restarts"}
_SHOWN |= {"backlog", "lag_s"}


def _status_text(report: dict[str, Any]) -> str:
    """Deployments, then every node with the shards and singletons on it: state, restarts,
    backlog (carts not yet checkpointed, catalog changes not yet indexed) and lag."""
    lines = [f"Ray cluster {report['address']}"]
    for h in report.get("http_ingress", []):
        state = "serving" if h.get("serving") else f"NOT SERVING {h.get('error', '')}".strip()
        lines.append(f"http ingress {h['name']}: {state} (pid {h.get('pid', '-')})")
    for name, app in report["applications"].items():
        lines.append(f"application {name}: {app['status']}")
        for dn, d in app["deployments"].items():
            lines.append(f"  deployment {dn}: {d['status']} replicas {d['replicas']}")
    shards = {s["name"]: s for s in report["shards"]}
    for node in report["nodes"]:
        if node["node_id"] is None:
            lines.append("on no node (being placed or restarted)")
        else:
            role = "head" if node.get("head") else "worker"
            state = "alive" if node.get("alive") else "DEAD"
            lines.append(
                f"node {node.get('node_ip')} ({node['node_id'][:12]}) {role} {state}, "
                f"{node.get('cpus', 0):g} CPUs, shard capacity {node.get('shard_capacity', 0):g}"
            )
        for name in node["actors"]:
            s = shards[name]
            backlog = s.get("backlog", "-")
            lag = f"{s['lag_s']:.3f}s" if "lag_s" in s else "-"
            extra = {k: v for k, v in s.items() if k not in _SHOWN}
            lines.append(
                f"  {name:<24} {s['state']:<11} restarts {s.get('restarts', 0):<3} "
                f"backlog {backlog!s:<5} lag {lag:<8} {extra}"
            )
    return "\n".join(lines)


def cmd_cluster_config(args: argparse.Namespace) -> int:
    """Render cluster.yaml for `ray up` and write the secrets directory it mounts."""
    import os

    import yaml  # type: ignore[import-untyped]

    from feira import cluster
    from feira.signing_secrets import jwt_keys_path, signing_keys

    settings = _settings()
    signing_keys(settings)  # made now if there are none yet
    env = dict(os.environ)
    try:
        config = cluster.render_cluster_config(env, args.secrets_dir, args.template)
        advice = cluster.write_secrets(env, jwt_keys_path(settings).read_bytes(), args.secrets_dir)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    text = yaml.safe_dump(config, sort_keys=False)
    if args.out:
        args.out.write_text(text)
    else:
        print(text, end="")
    for line in advice:
        print(f"warning: {line}", file=sys.stderr)
    print(
        f"secrets in {args.secrets_dir} (feira.env, jwt-keys.pem, ray-auth-token): every "
        "node gets a copy. Next: ray up <this config>",
        file=sys.stderr,
    )
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """An access token straight from the signing keys: the operator holds them, so this
    needs no running Feira (tests, scripts, a first admin call)."""
    from actors.identity.accounts import CUSTOMER_SCOPES, DEFAULT_SCOPES
    from actors.identity.tokens import MAX_ACCESS_TTL_S, Role
    from feira.signing_secrets import token_service

    settings = _settings()
    role = Role(args.role)
    if not 1 <= args.ttl <= MAX_ACCESS_TTL_S:
        raise SystemExit(f"--ttl must be within 1..{MAX_ACCESS_TTL_S} seconds")
    defaults = CUSTOMER_SCOPES if role is Role.CUSTOMER else DEFAULT_SCOPES[role]
    scopes = args.scope or list(defaults)
    try:
        token = token_service(settings).issue_access(args.subject, role, scopes, ttl_s=args.ttl)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    print(token)
    print(
        f"valid {args.ttl} s for {role.value} {args.subject}; send it as "
        "'Authorization: Bearer <token>'",
        file=sys.stderr,
    )
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from feira.signing_secrets import jwt_keys_path, rotate_signing_keys, signing_keys

    settings = _settings()
    if args.action == "rotate":
        ring = rotate_signing_keys(settings, retire_others=args.retire_others)
        print(
            f"signing with {ring.active_kid}; verifying {', '.join(ring.kids)} "
            f"({jwt_keys_path(settings)}). Redeploy (serve deploy / feira up) so every "
            "replica loads the new ring.",
            file=sys.stderr,
        )
    print(orjson.dumps(signing_keys(settings).jwks(), option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    """API keys straight in the identity store: how the first admin key is made, and how
    an operator manages keys with Feira down."""
    from actors.domain.errors import DomainError
    from deployments.edge import identity_service
    from feira.stores import open_configured_stores

    settings = _settings()

    async def run() -> int:
        stores = open_configured_stores(settings)
        try:
            await stores.migrate()
            identity = identity_service(settings, stores.identity)
            if args.action == "create":
                if args.plan not in settings.rate_plans:
                    raise SystemExit(f"unknown plan {args.plan!r}: {sorted(settings.rate_plans)}")
                key, plaintext = await identity.create_api_key(
                    role=args.role,
                    subject=args.subject,
                    scopes=args.scope,
                    plan=args.plan,
                    label=args.label,
                    created_by="cli",
                )
                print(plaintext)
                print(
                    f"key {key.key_id}: role {args.role or 'public'}, subject {key.subject}, "
                    f"plan {key.plan}, scopes {' '.join(key.scopes) or '-'}. Shown once; "
                    "send it as X-Api-Key, or as client credentials to POST /oauth/token",
                    file=sys.stderr,
                )
            elif args.action == "list":
                for key in await identity.list_api_keys(subject=args.subject, role=args.role):
                    state = "revoked" if key.revoked else "active"
                    role = key.role.value if key.role else "public"
                    print(
                        f"{key.key_id}  {state:<7}  {role:<9}  {key.subject or '-':<12}  "
                        f"{key.plan:<9}  {key.label}"
                    )
            else:
                if not args.key_id:
                    raise SystemExit("revoke needs --key-id")
                await identity.revoke_api_key(args.key_id)
                print(f"revoked {args.key_id}", file=sys.stderr)
        except DomainError as error:
            raise SystemExit(f"{error.code.value}: {error.message}") from error
        finally:
            await stores.close()
        return 0

    return asyncio.run(run())


def _cluster_template() -> Path:
    return Path(__file__).resolve().parents[1] / "cluster.yaml"


def _loadtest_cli() -> Any:
    # loadtest/ lives beside the installed packages, in the repository, not in the wheel.
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    import loadtest.cli

    return loadtest.cli


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
    cluster_config = sub.add_parser(
        "cluster-config",
        help="render cluster.yaml for `ray up` from FEIRA_* variables; write its secrets dir",
    )
    cluster_config.add_argument(
        "--secrets-dir", type=Path, required=True, help="written 0700; mounted on every node"
    )
    cluster_config.add_argument("--out", type=Path, help="write here instead of stdout")
    cluster_config.add_argument("--template", type=Path, default=_cluster_template())
    cluster_config.set_defaults(func=cmd_cluster_config)
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
        "token", help="issue an access token from the signing keys (printed on stdout)"
    )
    token.add_argument(
        "--role", required=True, choices=["customer", "merchant", "logistics", "admin"]
    )
    token.add_argument(
        "--subject", required=True, help="merchant id (m-001), carrier (dhl), customer or admin id"
    )
    token.add_argument("--ttl", type=int, default=3600, help="seconds, at most 3600")
    token.add_argument(
        "--scope", action="append", help="a scope (repeat); default: the role's scopes"
    )
    token.set_defaults(func=cmd_token)
    keys = sub.add_parser("keys", help="the token signing keys: show the JWKS, or rotate")
    keys.add_argument("action", choices=["show", "rotate"])
    keys.add_argument(
        "--retire-others",
        action="store_true",
        help="with rotate: drop every older key (only once their tokens have expired)",
    )
    keys.set_defaults(func=cmd_keys)
    api_key = sub.add_parser("api-key", help="create, list or revoke API keys")
    api_key.add_argument("action", choices=["create", "list", "revoke"])
    api_key.add_argument(
        "--role", choices=["merchant", "logistics", "admin"], help="none: a public app key"
    )
    api_key.add_argument("--subject", help="merchant id, carrier or admin name")
    api_key.add_argument("--plan", default="standard", help="a rate plan (FEIRA_RATE_PLANS)")
    api_key.add_argument("--label", default="", help="what the key is for")
    api_key.add_argument("--scope", action="append", help="a scope (repeat); default: the role's")
    api_key.add_argument("--key-id", help="with revoke: the key to revoke")
    api_key.set_defaults(func=cmd_api_key)
    _loadtest_cli().add_loadtest_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
