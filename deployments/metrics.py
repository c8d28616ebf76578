"""Feira's metrics through Ray's metrics API (``ray.util.metrics``), in a replica.

Each Ray worker process exports what it records on its node's Prometheus endpoint (the
node's metrics export port), with Ray's ``ray_`` prefix. The names, labels and buckets
are in :data:`actors.commerce_metrics.METRICS` (all of them, with what an alert on each
means, in ``docs/metrics.md``); the instruments are made by
:func:`actors.shells.ray_metric`, once per process, on first use.

In a BFF replica:

* :class:`RayCommerceMetrics`: the business counters and the checkout histogram;
* :class:`RayRequestMetrics`: per request, from ``api.request_metrics.RequestMetrics``;
* :class:`ReplicaReporter`: every :data:`~actors.commerce_metrics.SAMPLE_INTERVAL_S`,
  the shard client's queues and batching and the replica caches' hits and misses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from actors.commerce_metrics import (
    CHECKOUT_DURATION_BOUNDARIES,
    Deltas,
    MetricsRecorder,
    report_caches,
    report_shard_client,
)
from actors.shells import RayRecorder
from api.request_metrics import status_class

if TYPE_CHECKING:
    from actors.commerce_metrics import CommerceMetrics
    from api.request_metrics import RequestSink

__all__ = [
    "CHECKOUT_DURATION_BOUNDARIES",
    "RayCommerceMetrics",
    "RayRequestMetrics",
    "ReplicaReporter",
]

log = logging.getLogger("feira.metrics")


class RayCommerceMetrics:
    """:class:`actors.commerce_metrics.CommerceMetrics` on ``ray.util.metrics``.

    Cheap to construct and to pickle; the instruments are made on the first record in each
    process. Recording never raises: a metrics failure is logged, the request goes on.
    """

    def __init__(self, recorder: MetricsRecorder | None = None) -> None:
        self._rec = recorder if recorder is not None else RayRecorder()

    def cart_created(self) -> None:
        self._rec.inc("feira_carts_created", 1)

    def order_placed(
        self, seconds_since_cart_created: float, total_minor: int, currency: str
    ) -> None:
        tags = {"currency": currency}
        self._rec.inc("feira_orders_placed", 1, tags)
        if total_minor > 0:
            self._rec.inc("feira_order_value_minor", total_minor, tags)
        self._rec.observe("feira_checkout_duration_seconds", max(0.0, seconds_since_cart_created))

    def payment_failed(self, reason: str) -> None:
        self._rec.inc("feira_payment_failures", 1, {"reason": reason})

    def checkout_refused(self, code: str) -> None:
        self._rec.inc("feira_checkout_refusals", 1, {"code": code})


class RayRequestMetrics:
    """:class:`api.request_metrics.RequestSink` on Ray's metrics: the latency histogram,
    requests by status and errors by problem code."""

    def __init__(self, recorder: MetricsRecorder | None = None) -> None:
        self._rec = recorder if recorder is not None else RayRecorder()

    def request_done(
        self, route: str, method: str, status: int, code: str | None, seconds: float
    ) -> None:
        self._rec.observe(
            "feira_http_request_duration_seconds",
            seconds,
            {"route": route, "method": method, "status_class": status_class(status)},
        )
        self._rec.inc(
            "feira_http_requests", 1, {"route": route, "method": method, "status": str(status)}
        )
        if code is not None:
            self._rec.inc("feira_http_errors", 1, {"code": code})


class ReplicaReporter:
    """Samples a replica's runtime stats into metrics; ``report`` runs periodically."""

    def __init__(
        self,
        shard_stats: Callable[[], Mapping[str, Mapping[str, float]]],
        cache_stats: Callable[[], Mapping[str, int]],
        recorder: MetricsRecorder | None = None,
    ) -> None:
        self._shard_stats = shard_stats
        self._cache_stats = cache_stats
        self._rec = recorder if recorder is not None else RayRecorder()
        self._deltas = Deltas()

    async def report(self) -> None:
        report_shard_client(self._rec, self._deltas, self._shard_stats())
        report_caches(self._rec, self._deltas, self._cache_stats())


if TYPE_CHECKING:
    _commerce: CommerceMetrics = RayCommerceMetrics()
    _requests: RequestSink = RayRequestMetrics()
