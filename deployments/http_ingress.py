"""Direct HTTP ingress: Feira's own actors serve HTTP with uvicorn, without Serve's
request path in between (``FEIRA_INGRESS=direct``).

Why: on 2 cores Serve's per-request path (its ASGI wrapper, request-id middleware, metrics,
route naming, HAProxy in front) cost about as much CPU as the whole cart add behind it. The
same app and BffRuntime in a plain uvicorn process held ~3x the cart adds at P95 < 200 ms
(benchmarks/RESULTS.md). What Serve gave and this keeps: restart on failure (the actors
are detached with ``max_restarts=-1``; a restarted one serves again on its own), several
processes (each binds the port with ``SO_REUSEPORT``, so the kernel spreads connections
over them), placement over nodes (``SPREAD``). What it gives up: Serve's request-based
autoscaling and rolling ``serve deploy`` of the HTTP app; the count is a setting
(``http_ingress_processes``) and ``feira up`` replaces them. gRPC stays on Serve.

The server runs on a thread of its own with its own uvloop loop, so it starts in the
actor's constructor: Ray calls that again after a restart, and nobody has to ask.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import uvicorn
import uvloop

from deployments.bff import BffRuntime

log = logging.getLogger("feira.http_ingress")

HTTP_INGRESS_NAME = "feira-http"


def http_ingress_name(index: int) -> str:
    return f"{HTTP_INGRESS_NAME}-{index}"


def reuse_port_socket(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """A listening socket other processes may bind too; the kernel balances between them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class HttpIngress:
    """One HTTP server process. Ray makes it an actor (``actors/client.py``)."""

    def __init__(self, settings: dict[str, Any], index: int) -> None:
        self.settings = settings
        self.index = index
        self.started_at: float | None = None
        self.error: str | None = None
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=self._run, name="http-ingress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            uvloop.run(self._serve())
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"
            log.exception("the HTTP ingress stopped")

    async def _serve(self) -> None:
        identity = {"component": "http-ingress", "replica": str(self.index)}
        runtime = BffRuntime(self.settings, identity)
        app = await runtime.build_app(echo_request_id=True)
        host, port = str(self.settings["http_host"]), int(self.settings["http_port"])
        sock = reuse_port_socket(host, port)
        config = uvicorn.Config(
            app,
            loop="none",  # this thread's uvloop loop
            http="httptools",
            access_log=False,
            log_level="warning",
            server_header=False,  # what runs here is nobody else's business
            # Keep-alive connections from load balancers outlive uvicorn's 5 s default.
            timeout_keep_alive=75,
            timeout_graceful_shutdown=30,
        )
        server = uvicorn.Server(config)
        self._server = server
        self.started_at = time.time()
        try:
            await server.serve(sockets=[sock])
        finally:
            await runtime.stop()

    def ready(self) -> dict[str, Any]:
        """Whether this process serves HTTP; raises if its server failed to start."""
        if self.error is not None:
            raise RuntimeError(self.error)
        return {
            "index": self.index,
            "pid": os.getpid(),
            "serving": self._server is not None and self._server.started,
            "started_at": self.started_at,
        }

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop taking connections and finish those in flight (a planned drain)."""
        server = self._server
        if server is None:
            return True
        server.should_exit = True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


def wait_serving(handles: list[Any], timeout_s: float) -> list[dict[str, Any]]:
    """Block until every ingress actor serves; RuntimeError with the reason otherwise."""
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        reports = ray.get([h.ready.remote() for h in handles], timeout=timeout_s)
        if all(r["serving"] for r in reports):
            return list(reports)
        if time.monotonic() > deadline:
            raise RuntimeError(f"HTTP ingress not serving after {timeout_s:.0f} s: {reports}")
        time.sleep(0.25)
