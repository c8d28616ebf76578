"""The one place where Feira is wired: settings in, a Serve application out.

``serve deploy deployments/serve_config.yaml`` and ``feira up`` both come through
:func:`build_app`. Nothing here connects to anything: shard actors and stores are opened
by the replicas when they start.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.deployment import Deployment

from deployments.bff import BffIngress
from feira.settings import Settings

APP_NAME = "feira"


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Serve's application builder; ``args`` override ``FEIRA_*`` settings by field name."""
    settings = Settings(**(args or {}))
    return bind(settings)


def bind(settings: Settings) -> Application:
    deployment: Deployment = serve.deployment(
        name="bff",
        num_replicas=settings.bff_replicas,
        max_ongoing_requests=settings.bff_max_ongoing_requests,
        ray_actor_options={"num_cpus": 0},
        # Per-request access logs cost more CPU than a cart add on this hardware.
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
        health_check_period_s=5,
    )(BffIngress)
    app: Application = deployment.bind(settings.to_wire())
    return app
