"""The one place where Feira is wired: settings in, a Serve application out.

``serve deploy deployments/serve_config.yaml`` and ``feira up`` both come through
:func:`build_app`. Nothing here connects to anything: shard actors and stores are opened
by the replicas when they start.

Replica counts: ``feira up`` runs ``bff_replicas`` fixed replicas. ``serve deploy`` with
``serve_config.yaml`` overrides that with an ``autoscaling_config`` per deployment (the
file says which bounds and why); Serve's config override takes precedence over the code's
``num_replicas``.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.deployment import Deployment

from deployments.bff import BffIngress
from feira.settings import Settings

APP_NAME = "feira"

# How a replica leaves. Serve stops routing to it, then checks every
# GRACEFUL_SHUTDOWN_WAIT_LOOP_S whether its requests in flight are done, and kills it
# after GRACEFUL_SHUTDOWN_TIMEOUT_S at the latest. The longest request is a checkout:
# reservations, an order transaction and a payment authorization, each under the
# shard-call deadline (5 s) or the payment timeout, so 30 s drains every ordinary one.
GRACEFUL_SHUTDOWN_WAIT_LOOP_S = 1.0
GRACEFUL_SHUTDOWN_TIMEOUT_S = 30.0
# Serve calls the replica's health check this often; a replica that does not answer
# within the timeout (a starved event loop on a busy node counts) is replaced.
HEALTH_CHECK_PERIOD_S = 5.0
HEALTH_CHECK_TIMEOUT_S = 10.0

REPLICA_OPTIONS: dict[str, Any] = {
    "ray_actor_options": {"num_cpus": 0},
    # Per-request access logs cost more CPU than a cart add on this hardware.
    "logging_config": {"enable_access_log": False, "log_level": "WARNING"},
    "health_check_period_s": HEALTH_CHECK_PERIOD_S,
    "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S,
    "graceful_shutdown_wait_loop_s": GRACEFUL_SHUTDOWN_WAIT_LOOP_S,
    "graceful_shutdown_timeout_s": GRACEFUL_SHUTDOWN_TIMEOUT_S,
}


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Serve's application builder; ``args`` override ``FEIRA_*`` settings by field name."""
    settings = Settings(**(args or {}))
    return bind(settings)


def bind(settings: Settings) -> Application:
    deployment: Deployment = serve.deployment(
        name="bff",
        num_replicas=settings.bff_replicas,
        max_ongoing_requests=settings.bff_max_ongoing_requests,
        **REPLICA_OPTIONS,
    )(BffIngress)
    app: Application = deployment.bind(settings.to_wire())
    return app
