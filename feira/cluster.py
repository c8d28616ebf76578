"""Starting, deploying to, inspecting and stopping the local Ray cluster behind `feira`."""

from __future__ import annotations

import asyncio
import logging
import os
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
from deployments.builder import APP_NAME, bind
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


def start_local_ray(settings: Settings, ingress: IngressChoice) -> None:
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


def stop_local_ray(settings: Settings) -> None:
    """Stop the local cluster `feira up` started (`ray stop` ends every Ray on this host)."""
    use_local_auth(settings.data_dir)
    subprocess.run([ray_cli(), "stop"], capture_output=True, check=False)


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


def deploy(settings: Settings) -> None:
    serve.start(http_options={"host": settings.http_host, "port": settings.http_port})
    serve.run(bind(settings), name=APP_NAME, route_prefix="/", blocking=False)


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


def _shard_names(settings: Settings) -> list[str]:
    return [
        actor_name(kind, i) for kind, count in shard_counts(settings).items() for i in range(count)
    ]


def remove_shards(settings: Settings) -> None:
    for name in _shard_names(settings):
        try:
            handle = ray.get_actor(name, namespace=settings.namespace)
        except ValueError:
            continue
        ray.kill(handle, no_restart=True)


def shutdown_serve() -> None:
    serve.shutdown()  # type: ignore[no-untyped-call]


def shard_reports(settings: Settings, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    async def one(name: str) -> dict[str, Any]:
        try:
            handle = ray.get_actor(name, namespace=settings.namespace)
            report: dict[str, Any] = await asyncio.wait_for(handle.ready.remote(), timeout_s)
        except (ValueError, TimeoutError, ray.exceptions.RayError) as error:
            return {"name": name, "state": "unavailable", "error": str(error)[:120]}
        return {"name": name, "state": "ready", **report}

    async def gather() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(one(n) for n in _shard_names(settings))))

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
