"""Commerce metrics: what the shop and checkout report, without Ray.

:class:`Shop` and :class:`~actors.checkout.CheckoutService` report through a
:class:`CommerceMetrics`; a deployment passes ``deployments.metrics.RayCommerceMetrics``
(Ray's metrics API, exported by every node's Prometheus endpoint), unit tests an
:class:`InMemoryMetrics`, and anything else gets :class:`NullMetrics`.

What counts:

* **A session is a cart.** A guest's visit starts with ``POST /v1/carts`` and everything it
  buys goes through that cart, so :meth:`CommerceMetrics.cart_created` marks a session
  (carts merged at sign-in count as two sessions).
* **An order is placed** when its checkout ends with the order ``authorized``, or left
  ``pending_payment`` because the payment outcome is unknown. Declined and failed payments
  are :meth:`CommerceMetrics.payment_failed` instead, refusals before any order (empty
  cart, price changed, out of stock, unknown SKU) :meth:`CommerceMetrics.checkout_refused`.
  Each is reported once per checkout run: a replayed stored answer, or a retry that joins a
  run still in flight, reports nothing. Retryable failures (a shard or store unavailable)
  and malformed requests are not reported.
* **Checkout duration** is from the cart's creation (``created_at`` in the snapshot frozen
  by the checkout) to the order being placed.

The ratios are left to Prometheus, from the counters (Ray exports custom metrics with a
``ray_`` prefix; counters get ``_total``)::

    # conversion: sessions that placed an order / sessions
    sum(rate(ray_feira_orders_placed_total[5m])) / sum(rate(ray_feira_carts_created_total[5m]))
    # orders per minute
    60 * sum(rate(ray_feira_orders_placed_total[5m]))
    # payment failures per minute, by reason
    60 * sum by (reason) (rate(ray_feira_payment_failures_total[5m]))
    # checkout duration, P50
    histogram_quantile(0.5, sum by (le) (rate(ray_feira_checkout_duration_seconds_bucket[5m])))

Implementations must be cheap and must not raise: they are called on the request path.

This module is also the one list of every metric Feira exports (:data:`METRICS`: name,
type, labels, buckets), and the Ray-free code that samples the services' stats into them
(:class:`MetricsRecorder`, ``report_*``); ``docs/metrics.md`` describes each metric and
what an alert on it means.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol


class CommerceMetrics(Protocol):
    def cart_created(self) -> None:
        """A session started (a cart was created)."""

    def order_placed(
        self, seconds_since_cart_created: float, total_minor: int, currency: str
    ) -> None:
        """A checkout placed an order (authorized, or pending an unknown payment outcome)."""

    def payment_failed(self, reason: str) -> None:
        """A checkout's payment was declined or failed; ``reason`` is the error code."""

    def checkout_refused(self, code: str) -> None:
        """A checkout was refused before any order existed; ``code`` is the error code."""


class NullMetrics:
    """Reports nothing."""

    def cart_created(self) -> None:
        pass

    def order_placed(
        self, seconds_since_cart_created: float, total_minor: int, currency: str
    ) -> None:
        pass

    def payment_failed(self, reason: str) -> None:
        pass

    def checkout_refused(self, code: str) -> None:
        pass


NULL_METRICS = NullMetrics()


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    seconds_since_cart_created: float
    total_minor: int
    currency: str


@dataclass
class InMemoryMetrics:
    """Counts and observations kept in memory, for tests."""

    carts_created: int = 0
    orders: list[PlacedOrder] = field(default_factory=list)
    payment_failures: Counter[str] = field(default_factory=Counter)
    checkout_refusals: Counter[str] = field(default_factory=Counter)

    @property
    def orders_placed(self) -> int:
        return len(self.orders)

    @property
    def conversion(self) -> float:
        """Orders placed / sessions (carts created); 0 before the first cart."""
        return self.orders_placed / self.carts_created if self.carts_created else 0.0

    def cart_created(self) -> None:
        self.carts_created += 1

    def order_placed(
        self, seconds_since_cart_created: float, total_minor: int, currency: str
    ) -> None:
        self.orders.append(PlacedOrder(seconds_since_cart_created, total_minor, currency))

    def payment_failed(self, reason: str) -> None:
        self.payment_failures[reason] += 1

    def checkout_refused(self, code: str) -> None:
        self.checkout_refusals[code] += 1


# --- every metric Feira exports, in one place -------------------------------------------
#
# The Ray side (``deployments.metrics`` and ``actors.shells``) makes its instruments from
# these specs, the Grafana dashboard (``ops/grafana/feira.json``) may use only the series
# they export (a unit test checks), and ``docs/metrics.md`` describes each one.

PROMETHEUS_PREFIX = "ray_"  # Ray's prefix on custom metrics

MetricKind = Literal["counter", "gauge", "histogram"]

# Seconds, for a P95 target of 200 ms: fine steps around the target, coarse beyond.
HTTP_LATENCY_BOUNDARIES: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Cart created -> order placed, in seconds: from a quick repeat buyer to a cart left open
# for an hour (longer ones land in +Inf).
CHECKOUT_DURATION_BOUNDARIES: tuple[float, ...] = (
    1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str  # as recorded; Ray exports it as ray_<name> (+ _total for a counter)
    kind: MetricKind
    description: str
    labels: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()
    recorded_by: str = ""

    @property
    def exported(self) -> str:
        """The metric's name on the Prometheus endpoint."""
        suffix = "_total" if self.kind == "counter" else ""
        return f"{PROMETHEUS_PREFIX}{self.name}{suffix}"

    @property
    def series(self) -> tuple[str, ...]:
        """Every sample name it exports (a histogram's buckets, sum and count)."""
        if self.kind == "histogram":
            return tuple(f"{self.exported}_{s}" for s in ("bucket", "sum", "count"))
        return (self.exported,)


_BFF = "BFF replica"
_BFF_SAMPLED = "BFF replica, sampled every few seconds"

METRICS: tuple[MetricSpec, ...] = (
    # HTTP, per request (api/request_metrics.py)
    MetricSpec(
        "feira_http_request_duration_seconds",
        "histogram",
        "Time to answer a request, by route template, method and status class",
        ("route", "method", "status_class"),
        HTTP_LATENCY_BOUNDARIES,
        _BFF,
    ),
    MetricSpec(
        "feira_http_requests",
        "counter",
        "Requests answered, by route template, method and status",
        ("route", "method", "status"),
        recorded_by=_BFF,
    ),
    MetricSpec(
        "feira_http_errors",
        "counter",
        "Error answers (status >= 400) by the problem's code",
        ("code",),
        recorded_by=_BFF,
    ),
    # The shard client in each replica (actors/router.py, actors/coalescer.py)
    MetricSpec(
        "feira_shard_queue_depth",
        "gauge",
        "Operations waiting in this replica for a call to a shard of the kind",
        ("kind",),
        recorded_by=_BFF_SAMPLED,
    ),
    MetricSpec(
        "feira_shard_queue_depth_peak",
        "gauge",
        "Most operations waiting at once for shards of the kind since the last sample",
        ("kind",),
        recorded_by=_BFF_SAMPLED,
    ),
    MetricSpec(
        "feira_shard_calls_inflight",
        "gauge",
        "Calls to shards of the kind that have not answered yet",
        ("kind",),
        recorded_by=_BFF_SAMPLED,
    ),
    MetricSpec(
        "feira_shard_calls",
        "counter",
        "Calls made to shards of the kind (one call carries a batch of operations)",
        ("kind",),
        recorded_by=_BFF_SAMPLED,
    ),
    MetricSpec(
        "feira_shard_ops",
        "counter",
        "Operations sent to shards of the kind; ops per call = rate(ops) / rate(calls)",
        ("kind",),
        recorded_by=_BFF_SAMPLED,
    ),
    MetricSpec(
        "feira_shard_call_failures",
        "counter",
        "Shard calls that failed as a whole (actor restarting or dead, transport error)",
        ("kind",),
        recorded_by=_BFF_SAMPLED,
    ),
    # Replica caches (actors/shop.py)
    MetricSpec(
        "feira_cache_hits",
        "counter",
        "Replica cache lookups answered from memory, by cache",
        ("cache",),
        recorded_by=_BFF_SAMPLED,
    ),
    MetricSpec(
        "feira_cache_misses",
        "counter",
        "Replica cache lookups that had to ask a shard or store, by cache",
        ("cache",),
        recorded_by=_BFF_SAMPLED,
    ),
    # Cart shards (actors/cart_service.py)
    MetricSpec(
        "feira_cart_checkpoint_lag_seconds",
        "gauge",
        "Age of the oldest cart change not yet written to the checkpoint store",
        ("shard",),
        recorded_by="CartShard actor, sampled",
    ),
    MetricSpec(
        "feira_cart_checkpoint_pending_carts",
        "gauge",
        "Carts changed in memory and not yet written to the checkpoint store",
        ("shard",),
        recorded_by="CartShard actor, sampled",
    ),
    MetricSpec(
        "feira_cart_checkpoint_failures",
        "counter",
        "Failed checkpoint writes (each is retried; the carts stay pending)",
        ("shard",),
        recorded_by="CartShard actor, sampled",
    ),
    MetricSpec(
        "feira_carts_in_memory",
        "gauge",
        "Carts held in the shard's memory",
        ("shard",),
        recorded_by="CartShard actor, sampled",
    ),
    # The order outbox (actors/order_processor.py)
    MetricSpec(
        "feira_outbox_backlog_events",
        "gauge",
        "Outbox events the processor holds and has not completed (in hand or failing)",
        recorded_by="OrderProcessorShell actor, sampled",
    ),
    MetricSpec(
        "feira_outbox_oldest_event_age_seconds",
        "gauge",
        "Age of the oldest outbox event the processor holds and has not completed",
        recorded_by="OrderProcessorShell actor, sampled",
    ),
    MetricSpec(
        "feira_outbox_poll_age_seconds",
        "gauge",
        "Time since the processor last read the outbox successfully",
        recorded_by="OrderProcessorShell actor, sampled",
    ),
    MetricSpec(
        "feira_outbox_events_completed",
        "counter",
        "Outbox events completed (handled, or given up after too many attempts)",
        recorded_by="OrderProcessorShell actor, sampled",
    ),
    MetricSpec(
        "feira_outbox_event_failures",
        "counter",
        "Outbox event handlings that failed (retried after the lease)",
        recorded_by="OrderProcessorShell actor, sampled",
    ),
    # Search (actors/index_sync.py)
    MetricSpec(
        "feira_search_index_lag_seconds",
        "gauge",
        "How long the oldest catalog change not yet searchable has waited",
        recorded_by="SearchIndexer actor",
    ),
    MetricSpec(
        "feira_search_index_pending_changes",
        "gauge",
        "Catalog changes not yet in the search index",
        recorded_by="SearchIndexer actor",
    ),
    # Business (CommerceMetrics above)
    MetricSpec(
        "feira_carts_created",
        "counter",
        "Carts created (a cart is a shopping session)",
        recorded_by=_BFF,
    ),
    MetricSpec(
        "feira_orders_placed",
        "counter",
        "Checkouts that placed an order (authorized or payment pending)",
        ("currency",),
        recorded_by=_BFF,
    ),
    MetricSpec(
        "feira_order_value_minor",
        "counter",
        "Total of the orders placed, in minor units of the currency",
        ("currency",),
        recorded_by=_BFF,
    ),
    MetricSpec(
        "feira_payment_failures",
        "counter",
        "Checkouts whose payment was declined or failed, by error code",
        ("reason",),
        recorded_by=_BFF,
    ),
    MetricSpec(
        "feira_checkout_refusals",
        "counter",
        "Checkouts refused before any order (empty cart, price changed, out of stock...)",
        ("code",),
        recorded_by=_BFF,
    ),
    MetricSpec(
        "feira_checkout_duration_seconds",
        "histogram",
        "Time from the cart's creation to its order being placed",
        boundaries=CHECKOUT_DURATION_BOUNDARIES,
        recorded_by=_BFF,
    ),
)

METRIC_SPECS: dict[str, MetricSpec] = {spec.name: spec for spec in METRICS}
# Every sample name on the Prometheus endpoint that comes from Feira.
EXPORTED_SERIES: frozenset[str] = frozenset(s for spec in METRICS for s in spec.series)


# --- recording runtime stats -----------------------------------------------------------
#
# Services expose plain cumulative stats (``CartService.stats``, ``OrderProcessor.stats``,
# ``ShardRouter.stats``, ``Shop.cache_stats``); a shell or replica samples them every few
# seconds with the ``report_*`` functions below into a :class:`MetricsRecorder` (Ray's
# metrics in ``actors.shells.RayRecorder``; :class:`InMemoryRecorder` in tests).

SAMPLE_INTERVAL_S = 2.0


class MetricsRecorder(Protocol):
    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set the gauge ``name``."""

    def inc(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Add ``value`` (> 0) to the counter ``name``."""

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Add ``value`` to the histogram ``name``."""


class Deltas:
    """Turns cumulative counts into counter increments: each call gives what was added
    since the last call for the same key (a count that went down started over)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, ...], float] = {}

    def take(self, key: tuple[str, ...], total: float) -> float:
        last = self._last.get(key, 0.0)
        self._last[key] = total
        return total - last if total >= last else total


def _inc(rec: MetricsRecorder, deltas: Deltas, name: str, total: float, **labels: str) -> None:
    added = deltas.take((name, *labels.values()), total)
    if added > 0:
        rec.inc(name, added, labels)


def report_shard_client(
    rec: MetricsRecorder, deltas: Deltas, stats: Mapping[str, Mapping[str, float]]
) -> None:
    """From ``ShardRouter.stats(reset_peaks=True)``, per shard kind."""
    for kind, s in stats.items():
        labels = {"kind": kind}
        rec.set("feira_shard_queue_depth", s.get("pending", 0), labels)
        rec.set("feira_shard_queue_depth_peak", s.get("pending_peak", 0), labels)
        rec.set("feira_shard_calls_inflight", s.get("inflight", 0), labels)
        _inc(rec, deltas, "feira_shard_calls", s.get("calls", 0), kind=kind)
        _inc(rec, deltas, "feira_shard_ops", s.get("ops", 0), kind=kind)
        _inc(rec, deltas, "feira_shard_call_failures", s.get("failures", 0), kind=kind)


def report_caches(rec: MetricsRecorder, deltas: Deltas, stats: Mapping[str, int]) -> None:
    """From ``Shop.cache_stats()`` (``<cache>_hits``, ``<cache>_misses``)."""
    for key, total in stats.items():
        cache, _, what = key.rpartition("_")
        if what == "hits":
            _inc(rec, deltas, "feira_cache_hits", total, cache=cache)
        elif what == "misses":
            _inc(rec, deltas, "feira_cache_misses", total, cache=cache)


def report_cart_shard(
    rec: MetricsRecorder, deltas: Deltas, shard: int, stats: Mapping[str, float]
) -> None:
    """From ``CartService.stats()``."""
    labels = {"shard": str(shard)}
    rec.set("feira_cart_checkpoint_lag_seconds", stats.get("checkpoint_lag_s", 0.0), labels)
    rec.set("feira_cart_checkpoint_pending_carts", stats.get("dirty", 0), labels)
    rec.set("feira_carts_in_memory", stats.get("carts", 0), labels)
    _inc(
        rec,
        deltas,
        "feira_cart_checkpoint_failures",
        stats.get("checkpoint_failures", 0),
        shard=str(shard),
    )


def report_outbox(rec: MetricsRecorder, deltas: Deltas, stats: Mapping[str, float]) -> None:
    """From ``OrderProcessor.stats()``."""
    rec.set("feira_outbox_backlog_events", stats.get("outbox_backlog", 0))
    rec.set("feira_outbox_oldest_event_age_seconds", stats.get("outbox_oldest_age_s", 0.0))
    rec.set("feira_outbox_poll_age_seconds", stats.get("outbox_poll_age_s", 0.0))
    _inc(rec, deltas, "feira_outbox_events_completed", stats.get("events_completed", 0))
    _inc(rec, deltas, "feira_outbox_event_failures", stats.get("event_failures", 0))


@dataclass
class InMemoryRecorder:
    """What was recorded, for tests; refuses names and labels that are not in
    :data:`METRICS`, as a real exporter would (silently) mis-export them."""

    gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    observations: list[tuple[str, tuple[tuple[str, str], ...], float]] = field(default_factory=list)

    def _key(
        self, name: str, kind: MetricKind, labels: Mapping[str, str] | None
    ) -> tuple[str, tuple[tuple[str, str], ...]]:
        spec = METRIC_SPECS[name]
        if spec.kind != kind:
            raise TypeError(f"{name} is a {spec.kind}, not a {kind}")
        given = dict(labels or {})
        if set(given) != set(spec.labels):
            raise ValueError(f"{name} takes labels {spec.labels}, got {sorted(given)}")
        return name, tuple(sorted(given.items()))

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        self.gauges[self._key(name, "gauge", labels)] = value

    def inc(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        if value <= 0:
            raise ValueError("a counter only goes up")
        key = self._key(name, "counter", labels)
        self.counters[key] = self.counters.get(key, 0.0) + value

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        name_, key = self._key(name, "histogram", labels)
        self.observations.append((name_, key, value))

    def gauge(self, name: str, **labels: str) -> float | None:
        return self.gauges.get((name, tuple(sorted(labels.items()))))

    def counter(self, name: str, **labels: str) -> float:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0.0)
