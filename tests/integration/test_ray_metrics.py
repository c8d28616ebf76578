"""RayCommerceMetrics inside a Ray worker: records without error, and the metrics reach the
node's Prometheus export (the metrics export port of ``ray.nodes()``)."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest
import ray

from deployments.metrics import RayCommerceMetrics

pytestmark = pytest.mark.integration

# Tag values of this test's own, so other tests' records cannot make it pass.
PROBE_REASON = "metrics_probe_reason"
PROBE_CODE = "metrics_probe_code"


@ray.remote(num_cpus=0)
class Recorder:
    """A replica stand-in: records through RayCommerceMetrics in a worker process."""

    def __init__(self) -> None:
        self.metrics = RayCommerceMetrics()

    def record(self) -> bool:
        self.metrics.cart_created()
        self.metrics.cart_created()
        self.metrics.order_placed(42.0, 1999, "EUR")
        self.metrics.payment_failed(PROBE_REASON)
        self.metrics.checkout_refused(PROBE_CODE)
        return True


def _export_url() -> str:
    node = next(n for n in ray.nodes() if n["Alive"])
    return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
        return text


def test_ray_commerce_metrics_record_in_a_worker_and_reach_prometheus(
    ray_cluster: None,
) -> None:
    recorder: Any = Recorder.remote()  # type: ignore[attr-defined]
    assert ray.get(recorder.record.remote(), timeout=60) is True
    # A driver-side instance is picklable (replicas may be handed one) and records too.
    assert ray.get(ray.put(RayCommerceMetrics())) is not None

    url = _export_url()
    # As exported: Ray's "ray_" prefix, "_total" on counters (the names the PromQL in
    # actors/commerce_metrics.py uses).
    wanted = [
        "ray_feira_carts_created_total",
        "ray_feira_orders_placed_total",
        "ray_feira_order_value_minor_total",
        "ray_feira_payment_failures_total",
        "ray_feira_checkout_refusals_total",
        "ray_feira_checkout_duration_seconds_bucket",
        f'reason="{PROBE_REASON}"',
        f'code="{PROBE_CODE}"',
    ]
    text = ""
    deadline = time.monotonic() + 60  # workers report every few seconds
    while time.monotonic() < deadline:
        text = _scrape(url)
        if all(name in text for name in wanted):
            break
        time.sleep(1)
    missing = [name for name in wanted if name not in text]
    assert not missing, f"not exported on {url}: {missing}"
    samples = [line for line in text.splitlines() if line.startswith("ray_feira_")]
    [failure] = [line for line in samples if f'reason="{PROBE_REASON}"' in line]
    assert failure.startswith("ray_feira_payment_failures_total{")
    assert float(failure.rsplit(" ", 1)[1]) == 1.0
    assert any(
        line.startswith("ray_feira_checkout_duration_seconds_bucket{") and 'le="60.0"' in line
        for line in samples
    )
    ray.kill(recorder)
