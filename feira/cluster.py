"""Starting, deploying to, inspecting and stopping the local Ray cluster behind `feira`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson
import ray
import yaml  # type: ignore[import-untyped]
from ray import serve
from ray.exceptions import RayError

from actors.client import SHARD_RESOURCE, shard_counts
from actors.kinds import ShardKind, actor_name
from actors.shells import CHANGE_HUB_NAME, ORDER_PROCESSOR_NAME, SEARCH_INDEXER_NAME
from deployments.builder import APP_NAME, bind
from deployments.grpc_ingress import GRPC_APP_NAME, GRPC_ROUTE_PREFIX, bind_grpc, grpc_options
from deployments.http_ingress import (
    HTTP_INGRESS_NAME,
    HttpIngress,
    http_ingress_name,
    wait_serving,
)
from feira.ingress import IngressChoice
from feira.ray_auth import use_local_auth
from feira.settings import Settings

log = logging.getLogger("feira.cluster")

RUN_FILE = "run.json"


def ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def run_file(settings: Settings) -> Path:
    return settings.data_dir / RUN_FILE


def local_address(settings: Settings) -> str:
    return f"127.0.0.1:{settings.ray_gcs_port}"


def address(settings: Settings) -> str:
    """The cluster Feira runs on: the configured one, else the local one `up` starts."""
    return settings.ray_address or local_address(settings)


def ray_temp_dir(settings: Settings) -> Path:
    """A temp root of this cluster's own, named by its GCS port: read just after `ray
    start`, the shared /tmp/ray/session_latest could name another cluster started at the
    same moment, and `feira down` would then stop that one. Short, because Ray's socket
    paths under it must fit in 107 bytes."""
    return Path(f"/tmp/ray-feira-{settings.ray_gcs_port}")


def start_local_ray(settings: Settings, ingress: IngressChoice) -> str:
    """Start a head node; returns its session directory, which names its processes."""
    cmd = [
        ray_cli(),
        "start",
        "--head",
        f"--port={settings.ray_gcs_port}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={settings.ray_dashboard_port}",
        "--disable-usage-stats",
        f"--temp-dir={ray_temp_dir(settings)}",
    ]
    if settings.ray_num_cpus:
        cmd.append(f"--num-cpus={settings.ray_num_cpus}")
    env = {
        **os.environ,
        **use_local_auth(settings.data_dir),
        **ingress.env(),
        "RAY_USAGE_STATS_ENABLED": "0",
        # Ray starts workers at nice 15, below its own daemons. On a machine that serves
        # nothing but Feira the workers are the service: under load, nice 15 hands the
        # CPU to whatever else runs (a load generator, a backup) first.
        "RAY_worker_niceness": "0",
    }
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"ray start failed:\n{done.stdout}\n{done.stderr}")
    return str((ray_temp_dir(settings) / "session_latest").resolve())


def stop_local_ray(session_dir: str) -> int:
    """Stop the processes of one local cluster, found by its session directory.

    `ray stop` would end every Ray cluster on the host, a developer's test session's
    included; every process of a cluster names its session directory on its command line,
    or descends from one that does. They are frozen first, tree by tree, so that none can
    start another (Serve's HAProxy manager respawns HAProxy) while the rest die; then
    killed. Nothing unacknowledged is lost that the design does not allow: stock and price
    changes are durable before their reply, carts within ``cart_checkpoint_lag_ms``.
    Returns how many processes were stopped.
    """
    frozen: set[int] = set()
    for _ in range(5):
        found = set(_session_pids(session_dir)) - frozen
        if not found:
            break
        for pid in found:
            _signal(pid, signal.SIGSTOP)
        frozen |= found
    for pid in frozen:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in frozen):
        time.sleep(0.1)
    return len(frozen)


def _session_pids(session_dir: str) -> list[int]:
    """The cluster's processes and all their descendants (HAProxy's binary, for one,
    does not name the session on its command line)."""
    marker = session_dir.encode()
    roots: set[int] = set()
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes()
            # Field 4 of /proc/<pid>/stat is the parent; the name in field 2 may hold spaces.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
        children.setdefault(ppid, []).append(pid)
        if marker in cmdline:
            roots.add(pid)
    found: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.append(pid)
            stack.extend(children.get(pid, ()))
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def gcs_listening(address: str, timeout_s: float = 2.0) -> bool:
    """False when ``address`` is a plain host:port nobody listens on. ``ray.init`` would
    keep retrying such an address for minutes (``feira down`` with nothing running hung
    on it); a ray:// or "auto" address is left for Ray to judge."""
    host, sep, port = address.rpartition(":")
    if not sep or "/" in address or not port.isdigit():
        return True
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def reachable(address: str, settings: Settings) -> bool:
    if not gcs_listening(address):
        return False
    try:
        connect(address, settings)
    except ConnectionError:
        return False
    return True


def connect(address: str, settings: Settings) -> None:
    if not ray.is_initialized():
        ray.init(
            address=address,
            namespace=settings.namespace,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )


def disconnect() -> None:
    ray.shutdown()


def deploy(settings: Settings, ingress: IngressChoice) -> None:
    """HTTP through the direct ingress actors or the Serve deployment, gRPC through Serve.
    A redeploy replaces the ingress actors, so they get the new settings."""
    remove_http_ingress(settings)
    if ingress.direct:
        if APP_NAME in serve_apps():
            serve.delete(APP_NAME)
        start_http_ingress(settings)
        if not settings.grpc_port:
            return
    serve.start(
        http_options={
            "host": settings.http_host,
            "port": settings.serve_http_port if ingress.direct else settings.http_port,
        },
        grpc_options=grpc_options(settings.grpc_port) if settings.grpc_port else None,
    )
    if not ingress.direct:
        serve.run(bind(settings), name=APP_NAME, route_prefix="/", blocking=False)
    if settings.grpc_port:
        # HAProxy routes only apps with a route prefix, gRPC included: hence a placeholder.
        serve.run(
            bind_grpc(settings),
            name=GRPC_APP_NAME,
            route_prefix=GRPC_ROUTE_PREFIX,
            blocking=False,
        )


def serve_apps() -> set[str]:
    """The Serve applications running; none (and no error) when Serve is not running."""
    return set(serve.status().applications)


def start_http_ingress(settings: Settings, timeout_s: float = 180.0) -> list[Any]:
    """Start ``http_ingress_processes`` direct ingress actors and wait until each serves."""
    shell = ray.remote(HttpIngress)
    wire = settings.to_wire()
    handles = [
        shell.options(
            name=http_ingress_name(i),
            namespace=settings.namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=0,
            num_cpus=0,
            max_concurrency=4,
            scheduling_strategy="SPREAD",
        ).remote(wire, i)
        for i in range(settings.http_ingress_processes)
    ]
    try:
        wait_serving(handles, timeout_s)
    except (RuntimeError, RayError) as error:
        raise SystemExit(f"the direct HTTP ingress did not start: {error}") from error
    return handles


def http_ingress_names(settings: Settings) -> list[str]:
    found = ray.util.list_named_actors(all_namespaces=True)
    return sorted(
        a["name"]
        for a in found
        if a["namespace"] == settings.namespace and a["name"].startswith(HTTP_INGRESS_NAME)
    )


def http_ingress_reports(settings: Settings, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """Each direct ingress process's report (none when Serve serves HTTP)."""
    out: list[dict[str, Any]] = []
    for name in http_ingress_names(settings):
        try:
            handle = ray.get_actor(name, namespace=settings.namespace)
            report = dict(ray.get(handle.ready.remote(), timeout=timeout_s))
        except (RayError, RuntimeError, ValueError) as error:
            report = {"serving": False, "error": str(error).splitlines()[0][:200]}
        out.append({"name": name, **report})
    return out


def remove_http_ingress(settings: Settings) -> int:
    """Drain and kill this namespace's direct ingress actors; how many there were."""
    names = http_ingress_names(settings)
    handles = [ray.get_actor(n, namespace=settings.namespace) for n in names]
    with contextlib.suppress(RayError):
        ray.get([h.stop.remote(10.0) for h in handles], timeout=15)
    for handle in handles:
        ray.kill(handle, no_restart=True)
    return len(handles)


def wait_ready(url: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(f"{url}/readyz", timeout=5)
        except httpx.HTTPError as error:
            last = str(error)
        else:
            if reply.status_code == 200:
                ready: dict[str, Any] = reply.json()
                return ready
            last = f"{reply.status_code} {reply.text[:200]}"
        time.sleep(0.5)
    raise SystemExit(f"Feira did not become ready in {timeout_s:.0f} s: {last}")


# One of each per namespace, next to the shards.
SINGLETONS = (CHANGE_HUB_NAME, SEARCH_INDEXER_NAME, ORDER_PROCESSOR_NAME)


def _shard_names(settings: Settings) -> list[str]:
    return [
        actor_name(kind, i) for kind, count in shard_counts(settings).items() for i in range(count)
    ]


def flush_carts(settings: Settings, timeout_s: float = 15.0) -> int:
    """Write every cart shard's pending checkpoints now (a planned stop must not lose the
    last ``cart_checkpoint_lag_ms`` of acknowledged cart changes). Returns how many carts
    were written; shards that are gone or do not answer in time are skipped."""
    names = [actor_name(ShardKind.CART, i) for i in range(settings.cart_shards)]
    calls = [handle.flush.remote() for handle in _handles(settings, names).values()]
    if not calls:
        return 0
    done, _ = ray.wait(calls, num_returns=len(calls), timeout=timeout_s)
    flushed = 0
    for ref in done:
        try:
            flushed += int(ray.get(ref)["flushed"])
        except RayError as error:
            log.warning("a cart shard did not flush: %s", error)
    return flushed


def remove_shards(settings: Settings) -> None:
    """Kill Feira's detached actors: the shards and the singletons."""
    for name in [*_shard_names(settings), *SINGLETONS]:
        try:
            handle = ray.get_actor(name, namespace=settings.namespace)
        except ValueError:
            continue
        ray.kill(handle, no_restart=True)


def delete_app(settings: Settings) -> None:
    remove_http_ingress(settings)
    for app in serve_apps() & {GRPC_APP_NAME, APP_NAME}:
        serve.delete(app)


def _handles(settings: Settings, names: list[str]) -> dict[str, Any]:
    handles: dict[str, Any] = {}
    for name in names:
        try:
            handles[name] = ray.get_actor(name, namespace=settings.namespace)
        except ValueError:
            continue  # not created (yet), or killed for good
    return handles


def actor_locations(handles: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Where each actor runs now, from the GCS actor table: node id and IP, the actor's
    state (ALIVE, RESTARTING, ...) and how often it was restarted.

    ``ray._private.state`` is Ray's developer API over the GCS tables; unlike
    ``ray.util.state`` it needs no dashboard. An actor being restarted may still name
    the node it died on, or none.
    """
    from ray._private import state

    out: dict[str, dict[str, Any]] = {}
    for name, handle in handles.items():
        info: dict[str, Any] = state.actors(actor_id=handle._actor_id.hex()) or {}
        address = info.get("Address") or {}
        node_id = address.get("NodeID") or ""
        out[name] = {
            "node_id": node_id if node_id.strip("f0") else None,
            "node_ip": address.get("IPAddress") or None,
            "actor_state": info.get("State", "UNKNOWN"),
            "restarts": int(info.get("NumRestarts", 0)),
        }
    return out


def nodes() -> list[dict[str, Any]]:
    """The cluster's nodes, alive or dead: id, IP, whether it is the head, its CPUs and
    how many shards it may hold (the ``feira_shard`` resource, 0 if it holds none)."""
    out = []
    for n in ray.nodes():  # type: ignore[no-untyped-call]
        resources = n.get("Resources") or {}
        out.append(
            {
                "node_id": n["NodeID"],
                "node_ip": n.get("NodeManagerAddress"),
                "alive": bool(n.get("Alive")),
                "head": "node:__internal_head__" in resources,
                "cpus": resources.get("CPU", 0),
                "shard_capacity": resources.get(SHARD_RESOURCE, 0),
            }
        )
    return out


# What a report may carry about work not yet durable or done, shown by `feira status` as
# "backlog" and "lag_s". Cart shards count the carts changed in memory but not yet in Redis
# ("dirty"; bounded by cart_checkpoint_lag_ms), the search indexer the catalog changes
# not yet searchable ("pending", "lag_s"), the order processor the outbox events in hand
# ("outbox_backlog", "outbox_oldest_age_s").
BACKLOG_FIELDS = ("dirty", "pending", "outbox_backlog")
LAG_FIELDS = ("checkpoint_lag_s", "lag_s", "outbox_oldest_age_s")


def shard_reports(settings: Settings, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """Every shard's and singleton's ``ready()`` report, with where it runs.

    Each entry: ``name``, ``state`` (``ready`` or ``unavailable``), ``node_id``,
    ``node_ip``, ``actor_state``, ``restarts``, then the actor's own report (``kind``,
    ``index``, counts, ``dirty`` carts not yet checkpointed, ...) and, where the report
    has them, ``backlog`` and ``lag_s``.
    """
    names = [*_shard_names(settings), *_singletons(settings)]
    handles = _handles(settings, names)
    locations = actor_locations(handles)

    async def one(name: str) -> dict[str, Any]:
        where = locations.get(name, {"node_id": None, "node_ip": None})
        handle = handles.get(name)
        if handle is None:
            return {"name": name, "state": "unavailable", **where, "error": "no such actor"}
        try:
            report: dict[str, Any] = await asyncio.wait_for(handle.ready.remote(), timeout_s)
        except (TimeoutError, ray.exceptions.RayError) as error:
            return {"name": name, "state": "unavailable", **where, "error": str(error)[:120]}
        return {"name": name, "state": "ready", **where, **report, **_backlog(report)}

    async def gather() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(one(n) for n in names)))

    return asyncio.run(gather())


def _singletons(settings: Settings) -> list[str]:
    """The singleton actors this configuration runs: the change hub is the cache
    invalidation bus of embedded mode only (with Redis, replicas use Redis pub/sub)."""
    return [n for n in SINGLETONS if not (n == CHANGE_HUB_NAME and settings.redis_url)]


def _backlog(report: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in BACKLOG_FIELDS:
        if isinstance(report.get(field), int):
            out["backlog"] = report[field]
    for field in LAG_FIELDS:
        if isinstance(report.get(field), int | float):
            out["lag_s"] = report[field]
    return out


def by_node(
    shards: list[dict[str, Any]], cluster_nodes: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The live nodes (and any node an actor still names), each with the names of the
    actors on it, head first; actors on no known node under ``node_id`` None."""
    table: dict[str | None, dict[str, Any]] = {
        n["node_id"]: {**n, "actors": []} for n in cluster_nodes if n["alive"]
    }
    for s in shards:
        node_id = s.get("node_id")
        if node_id not in table:
            known = next((n for n in cluster_nodes if n["node_id"] == node_id), None)
            table[node_id] = {**(known or {"node_id": node_id, "node_ip": None}), "actors": []}
        table[node_id]["actors"].append(s["name"])
    return sorted(
        table.values(),
        key=lambda n: (not n.get("head"), n["node_id"] is None, n.get("node_ip") or ""),
    )


def serve_status() -> dict[str, Any]:
    """Applications, deployments and replica states, as plain data."""
    status = serve.status()
    return {
        name: {
            "status": _text(app.status),
            "deployments": {
                dn: {
                    "status": _text(d.status),
                    "replicas": {_text(k): v for k, v in dict(d.replica_states).items()},
                }
                for dn, d in app.deployments.items()
            },
        }
        for name, app in status.applications.items()
    }


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


def write_run_file(settings: Settings, data: dict[str, Any]) -> None:
    run_file(settings).write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))


def read_run_file(settings: Settings) -> dict[str, Any] | None:
    path = run_file(settings)
    if not path.exists():
        return None
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


# --- the cluster launcher config (`feira cluster-config`) ------------------------------

CLUSTER_TEMPLATE = Path(__file__).resolve().parents[1] / "cluster.yaml"
SECRETS_ENV = "feira.env"
SECRETS_KEYS = "jwt-keys.pem"
SECRETS_RAY_TOKEN = "ray-auth-token"
# Where cluster.yaml puts the secrets directory on every node.
NODE_SECRETS = "$HOME/feira-secrets"
# Settings a cluster cannot run without: embedded stores and a per-node webhook secret
# would differ from node to node.
REQUIRED_SETTINGS = ("FEIRA_POSTGRES_URL", "FEIRA_REDIS_URL", "FEIRA_PAYMENT_WEBHOOK_SECRET")
# Embedded catalog and search live in one node's data dir: fine for one worker only.
ADVISED_SETTINGS = ("FEIRA_MONGO_URL", "FEIRA_ELASTICSEARCH_URL")
# Variables that describe the operator's machine or the launch, not a node's Feira.
LOCAL_ONLY = frozenset(
    {
        "FEIRA_HEAD_IP",
        "FEIRA_WORKER_IPS",
        "FEIRA_SSH_USER",
        "FEIRA_SECRETS_DIR",
        "FEIRA_SOURCE_DIR",
        "FEIRA_DATA_DIR",
        "FEIRA_JWT_KEYS_FILE",
        "FEIRA_RAY_ADDRESS",
    }
)
_PLACEHOLDER = re.compile(r"\$\{(FEIRA_[A-Z0-9_]+)\}")


def render_cluster_config(
    env: Mapping[str, str], secrets_dir: Path, template: Path = CLUSTER_TEMPLATE
) -> dict[str, Any]:
    """cluster.yaml with its ``${FEIRA_*}`` placeholders filled from ``env``
    (``FEIRA_WORKER_IPS`` is a comma-separated list; ``FEIRA_SSH_USER`` defaults to
    ``feira``, ``FEIRA_SOURCE_DIR`` to this checkout). Raises ValueError naming what is
    missing."""
    values = {
        "FEIRA_SSH_USER": "feira",
        "FEIRA_SOURCE_DIR": str(template.resolve().parent),
        **env,
        "FEIRA_SECRETS_DIR": str(secrets_dir.resolve()),
    }
    config: dict[str, Any] = yaml.safe_load(template.read_text())
    missing: set[str] = set()

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            for name in _PLACEHOLDER.findall(value):
                if not values.get(name):
                    missing.add(name)
            return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), value)
        if isinstance(value, list):
            if value == ["${FEIRA_WORKER_IPS}"]:
                ips = [ip.strip() for ip in values.get("FEIRA_WORKER_IPS", "").split(",")]
                if not any(ips):
                    missing.add("FEIRA_WORKER_IPS")
                return [ip for ip in ips if ip]
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {fill(k): fill(v) for k, v in value.items()}
        return value

    rendered: dict[str, Any] = fill(config)
    if missing:
        raise ValueError(f"set {', '.join(sorted(missing))} to render {template.name}")
    return rendered


def node_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment every node's `ray start` reads: the operator's FEIRA_* settings
    (store URLs, secrets, tuning), with paths to the node's copy of the secrets."""
    missing = [name for name in REQUIRED_SETTINGS if not env.get(name)]
    if missing:
        raise ValueError(
            f"a cluster needs {', '.join(missing)}: embedded stores and secrets live in "
            "one node's data dir, and the nodes would not agree"
        )
    out = {k: v for k, v in sorted(env.items()) if k.startswith("FEIRA_") and k not in LOCAL_ONLY}
    out["FEIRA_JWT_KEYS_FILE"] = f"{NODE_SECRETS}/{SECRETS_KEYS}"
    out["RAY_AUTH_MODE"] = "token"
    out["RAY_AUTH_TOKEN_PATH"] = f"{NODE_SECRETS}/{SECRETS_RAY_TOKEN}"
    return out


def _env_line(name: str, value: str) -> str:
    if value.startswith(NODE_SECRETS):  # expanded on the node
        return f'{name}="{value}"'
    return f"{name}='" + value.replace("'", "'\\''") + "'"


def write_secrets(env: Mapping[str, str], keys_pem: bytes, secrets_dir: Path) -> list[str]:
    """Write the secrets directory cluster.yaml mounts on every node (0700, files 0600):
    feira.env, jwt-keys.pem and Ray's auth token (kept when it exists, so a re-render
    does not lock the running nodes out). Returns the advisories for what is missing."""
    settings_env = node_env(env)
    secrets_dir.mkdir(parents=True, exist_ok=True)
    secrets_dir.chmod(0o700)

    def write(name: str, data: bytes) -> None:
        path = secrets_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        path.chmod(0o600)

    lines = [_env_line(k, v) for k, v in settings_env.items()]
    write(SECRETS_ENV, ("\n".join(lines) + "\n").encode())
    write(SECRETS_KEYS, keys_pem)
    token = secrets_dir / SECRETS_RAY_TOKEN
    if not token.exists():
        write(SECRETS_RAY_TOKEN, secrets.token_hex(32).encode())
    return [
        f"{name} is not set: the catalog or search index would live in each node's data "
        "dir, which is only right with a single worker"
        for name in ADVISED_SETTINGS
        if not env.get(name)
    ]
