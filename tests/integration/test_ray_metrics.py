"""Feira's metrics reach each node's Prometheus export (the metrics export port of
``ray.nodes()``): RayCommerceMetrics inside a Ray worker, and every runtime metric after
some HTTP traffic through the deployed app. And a request id reaches a shard actor's
JSON log lines through a real Ray call."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from actors.commerce_metrics import METRICS
from actors.kinds import ShardKind
from actors.shop import new_cart_id
from deployments.metrics import RayCommerceMetrics
from feira.logs import REQUEST_ID

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


def _export_urls() -> list[str]:
    return [
        f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
        for n in ray.nodes()
        if n["Alive"]
    ]


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
        return text


def _feira_samples(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ray_feira_")]


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


# Recorded by every part of a running Feira once it has served a little traffic. The
# gauges and counters sampled every 2 s and the shells' reporters need the cluster to
# have been up a few seconds; the loop below waits for them.
RUNTIME_WANTED = [
    "ray_feira_http_request_duration_seconds_bucket{",
    'route="/v1/carts/{cart_id}/items"',
    'route="unmatched"',
    'code="request_blocked"',
    'code="not_found"',
    "ray_feira_http_requests_total{",
    "ray_feira_shard_queue_depth{",
    "ray_feira_shard_queue_depth_peak{",
    "ray_feira_shard_calls_inflight{",
    "ray_feira_shard_calls_total{",
    "ray_feira_shard_ops_total{",
    'cache="product"',
    'cache="price"',
    "ray_feira_cache_hits_total{",
    "ray_feira_cache_misses_total{",
    "ray_feira_cart_checkpoint_lag_seconds{",
    "ray_feira_cart_checkpoint_pending_carts{",
    "ray_feira_carts_in_memory{",
    "ray_feira_outbox_backlog_events{",
    "ray_feira_outbox_oldest_event_age_seconds{",
    "ray_feira_outbox_poll_age_seconds{",
    "ray_feira_search_index_lag_seconds{",
    "ray_feira_carts_created_total{",
]


def test_runtime_metrics_reach_prometheus_after_traffic(feira_url: str) -> None:
    request_id = f"metrics-probe-{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=feira_url, timeout=30) as client:
        sku = client.get("/v1/products", params={"limit": 1}).json()["items"][0]
        product_id, sku = sku["id"], sku["variants"][0]["sku"]
        created = client.post("/v1/carts", headers={"X-Request-Id": request_id})
        assert created.status_code == 201
        # One X-Request-Id (Serve's own echo; Feira's layer adds none behind Serve).
        assert created.headers.get_list("x-request-id") == [request_id]
        cart_id = created.json()["id"]
        for _ in range(3):
            added = client.post(f"/v1/carts/{cart_id}/items", json={"sku": sku, "quantity": 1})
            assert added.status_code == 200
            assert client.get(f"/bff/web/product/{product_id}").status_code == 200
        assert client.get(f"/nothing/{cart_id}").status_code == 404
        blocked = client.get("/v1/search", params={"q": "<script>alert(1)</script>"})
        assert blocked.status_code == 403
        # A generated id, the same in the header and the WAF's problem body.
        assert blocked.headers["x-request-id"] == blocked.json()["request_id"]

    text, missing = "", RUNTIME_WANTED
    deadline = time.monotonic() + 90  # samples every 2 s, exported every few seconds
    while time.monotonic() < deadline:
        text = "\n".join(_scrape(url) for url in _export_urls())
        missing = [name for name in RUNTIME_WANTED if name not in text]
        if not missing:
            break
        time.sleep(2)
    assert not missing, f"not exported: {missing}"
    samples = _feira_samples(text)
    # Only names from the catalog, and never a raw path or id as a label value.
    exported = {s for m in METRICS for s in m.series}
    assert {line.split("{", 1)[0].split(" ", 1)[0] for line in samples} <= exported
    assert not [line for line in samples if cart_id in line or product_id in line]
    # One series per BFF replica (the session runs two): the adds are their sum.
    adds = [
        line
        for line in samples
        if line.startswith("ray_feira_http_requests_total{")
        and 'route="/v1/carts/{cart_id}/items"' in line
        and 'status="200"' in line
    ]
    assert adds, "no cart-add series"
    assert sum(float(line.rsplit(" ", 1)[1]) for line in adds) >= 3


def _logs_dir() -> Path:
    node = ray._private.worker._global_node  # the driver's node: this one-node cluster's
    return Path(node.get_logs_dir_path())


async def test_a_request_id_reaches_a_shard_actors_json_log(shard_client: Any, seeded: Any) -> None:
    from feira.stores import open_configured_stores

    # A malformed checkpoint: the cart shard logs an error when it loads it.
    cart_id = new_cart_id()
    stores = open_configured_stores(seeded)
    try:
        await stores.carts.save_many([{"id": cart_id, "version": 1, "garbage": True}], 600)
    finally:
        await stores.close()
    request_id = f"rid-probe-{uuid.uuid4().hex}"
    token = REQUEST_ID.set(request_id)
    try:
        with pytest.raises(Exception, match="cart"):
            await shard_client.call(ShardKind.CART, cart_id, "get", cart_id, None)
    finally:
        REQUEST_ID.reset(token)

    found: dict[str, Any] | None = None
    deadline = time.monotonic() + 30
    while found is None and time.monotonic() < deadline:
        for path in _logs_dir().glob("worker-*.err"):
            for line in path.read_text(errors="replace").splitlines():
                if request_id in line and "{" in line:
                    found = json.loads(line[line.index("{") :])
                    break
            if found is not None:
                break
        else:
            await asyncio.sleep(1)
    assert found is not None, f"no log line with {request_id} under {_logs_dir()}"
    assert found["logger"] == "feira.carts"
    assert found["level"] == "ERROR"
    assert "malformed" in found["message"]
    assert found["request_ids"] == [request_id]
    assert found["request_id"] == request_id
    assert found["component"] == "cart-shard"
    assert found["actor"].startswith("feira-cart-")


@ray.remote(num_cpus=0)
class LegacyShard:
    """A shard of a version before request ids: ``apply`` takes the operations only."""

    def __init__(self) -> None:
        self.calls = 0

    async def apply(self, ops: list[Any]) -> list[Any]:
        self.calls += 1
        return [(True, len(ops)) for _ in ops]

    async def count(self) -> int:
        return self.calls


async def test_a_shard_of_an_older_version_still_answers(ray_cluster: None) -> None:
    from actors.client import _sender
    from feira.logs import request_scope

    legacy: Any = LegacyShard.remote()  # type: ignore[attr-defined]
    send = _sender(legacy)
    with request_scope(["rid-legacy"]):
        assert await send([("get", ())]) == [(True, 1)]
        assert await send([("get", ()), ("get", ())]) == [(True, 2), (True, 2)]
    # Refused once with the ids (before running), then never sent them again.
    assert await legacy.count.remote() == 2
    ray.kill(legacy)
