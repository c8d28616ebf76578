"""Starting, deploying to, inspecting and stopping the local Ray cluster behind `feira`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import ray
from ray import serve

from actors.client import shard_counts
from actors.kinds import actor_name
from actors.shells import CHANGE_HUB_NAME, ORDER_PROCESSOR_NAME, SEARCH_INDEXER_NAME
from deployments.builder import APP_NAME, bind
from deployments.grpc_ingress import GRPC_APP_NAME, GRPC_ROUTE_PREFIX, bind_grpc, grpc_options
from feira.ingress import IngressChoice
from feira.ray_auth import use_local_auth
from feira.settings import Settings

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


RAY_TEMP_DIR = Path("/tmp/ray")


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
    ]
    if settings.ray_num_cpus:
        cmd.append(f"--num-cpus={settings.ray_num_cpus}")
    env = {
        **os.environ,
        **use_local_auth(settings.data_dir),
        **ingress.env(),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"ray start failed:\n{done.stdout}\n{done.stderr}")
    return str((RAY_TEMP_DIR / "session_latest").resolve())


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


def reachable(address: str, settings: Settings) -> bool:
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


def deploy(settings: Settings) -> None:
    serve.start(
        http_options={"host": settings.http_host, "port": settings.http_port},
        grpc_options=grpc_options(settings.grpc_port) if settings.grpc_port else None,
    )
    serve.run(bind(settings), name=APP_NAME, route_prefix="/", blocking=False)
    if settings.grpc_port:
        # HAProxy routes only apps with a route prefix, gRPC included: hence a placeholder.
        serve.run(
            bind_grpc(settings), name=GRPC_APP_NAME, route_prefix=GRPC_ROUTE_PREFIX,
            blocking=False,
        )


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


def remove_shards(settings: Settings) -> None:
    """Kill Feira's detached actors: the shards and the singletons."""
    for name in [*_shard_names(settings), *SINGLETONS]:
        try:
            handle = ray.get_actor(name, namespace=settings.namespace)
        except ValueError:
            continue
        ray.kill(handle, no_restart=True)


def delete_app() -> None:
    serve.delete(GRPC_APP_NAME)
    serve.delete(APP_NAME)


def shard_reports(settings: Settings, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    async def one(name: str) -> dict[str, Any]:
        try:
            handle = ray.get_actor(name, namespace=settings.namespace)
            report: dict[str, Any] = await asyncio.wait_for(handle.ready.remote(), timeout_s)
        except (ValueError, TimeoutError, ray.exceptions.RayError) as error:
            return {"name": name, "state": "unavailable", "error": str(error)[:120]}
        return {"name": name, "state": "ready", **report}

    async def gather() -> list[dict[str, Any]]:
        names = [*_shard_names(settings), *SINGLETONS]
        return list(await asyncio.gather(*(one(n) for n in names)))

    return asyncio.run(gather())


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
