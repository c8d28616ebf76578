"""Request metrics middleware with a fake sink: route templates (never raw paths), one
label for unmatched paths, problem codes from error answers, failures and cancellations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from actors.commerce_metrics import HTTP_LATENCY_BOUNDARIES, InMemoryRecorder
from actors.shop import new_cart_id
from api.app import create_api
from api.request_metrics import (
    UNHANDLED_CODE,
    UNKNOWN_CODE,
    UNMATCHED,
    InMemoryRequestSink,
    RequestMetrics,
    problem_code,
    status_class,
)
from deployments.metrics import RayRequestMetrics
from tests.inprocess import build_inprocess


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, InMemoryRequestSink]]:
    run = await build_inprocess(tmp_path, 20)

    async def ready() -> dict[str, Any]:
        return {}

    sink = InMemoryRequestSink()
    app = create_api(run.shop, ready, request_metrics=sink)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://feira") as client:
        yield client, sink
    await run.stores.close()


async def test_the_route_label_is_the_template_never_the_path(
    api: tuple[httpx.AsyncClient, InMemoryRequestSink],
) -> None:
    client, sink = api
    cart = (await client.post("/v1/carts")).json()
    await client.get(f"/v1/carts/{cart['id']}")
    await client.get("/v1/carts/no-such-cart-abc")
    assert [(r.route, r.method, r.status) for r in sink.requests] == [
        ("/v1/carts", "POST", 201),
        ("/v1/carts/{cart_id}", "GET", 200),
        ("/v1/carts/{cart_id}", "GET", 404),
    ]
    labels = " ".join(f"{r.route} {r.method} {r.code}" for r in sink.requests)
    assert cart["id"] not in labels
    assert "no-such-cart-abc" not in labels
    assert all(r.seconds > 0 for r in sink.requests)


async def test_unmatched_paths_share_one_label(
    api: tuple[httpx.AsyncClient, InMemoryRequestSink],
) -> None:
    client, sink = api
    for path in ("/nope", "/v1/carts/a/b/c/d", "/wp-admin/x1", "/v1/carts/x/items/y/z"):
        assert (await client.get(path)).status_code == 404
    # A known path with the wrong method is unmatched too (405).
    assert (await client.put("/v1/carts")).status_code == 405
    assert {r.route for r in sink.requests} == {UNMATCHED}
    assert [r.code for r in sink.requests] == ["not_found"] * 4 + ["method_not_allowed"]


async def test_errors_are_counted_by_problem_code(
    api: tuple[httpx.AsyncClient, InMemoryRequestSink],
) -> None:
    client, sink = api
    cart = (await client.post("/v1/carts")).json()
    await client.post(f"/v1/carts/{cart['id']}/items", json={"sku": "SKU-NOPE", "quantity": 1})
    await client.get(f"/v1/carts/{new_cart_id()}")
    await client.get("/v1/search", params={"q": "' UNION SELECT password FROM users --"})
    assert sink.errors == {"sku_not_found": 1, "cart_not_found": 1, "request_blocked": 1}
    [blocked] = [r for r in sink.requests if r.code == "request_blocked"]
    # The WAF refused it, inside the metrics layer: counted with its route and status.
    assert (blocked.route, blocked.status) == ("/v1/search", 403)
    assert all(r.code is None for r in sink.requests if r.status < 400)


async def test_an_unknown_method_is_one_label(
    api: tuple[httpx.AsyncClient, InMemoryRequestSink],
) -> None:
    client, sink = api
    await client.request("PROPFIND", "/v1/products")
    await client.request("X-WHATEVER", "/v1/products")
    assert [r.method for r in sink.requests] == ["OTHER", "OTHER"]


async def _call(app: Any, method: str = "GET", path: str = "/v1/products") -> list[Any]:
    sent: list[Any] = []
    scope = {"type": "http", "method": method, "path": path, "headers": [], "root_path": ""}

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_an_app_failing_before_answering_counts_as_500_unhandled() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    sink = InMemoryRequestSink()
    with pytest.raises(RuntimeError):
        await _call(RequestMetrics(broken, sink))
    [seen] = sink.requests
    assert (seen.route, seen.status, seen.code) == ("/v1/products", 500, UNHANDLED_CODE)


async def test_a_cancelled_request_is_499_and_still_raises() -> None:
    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(10)

    sink = InMemoryRequestSink()
    task = asyncio.ensure_future(_call(RequestMetrics(slow, sink)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(r.status, r.code) for r in sink.requests] == [(499, "cancelled")]


def _answer(status: int, content_type: bytes, chunks: list[bytes]) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", content_type)]}
        )  # fmt: skip
        for i, chunk in enumerate(chunks):
            more = i < len(chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": more})

    return app


async def test_the_code_is_read_from_a_chunked_problem_and_only_for_errors() -> None:
    body = orjson.dumps({"type": "x", "status": 409, "code": "insufficient_stock"})
    sink = InMemoryRequestSink()
    chunks = [body[:10], body[10:]]
    sent = await _call(RequestMetrics(_answer(409, b"application/problem+json", chunks), sink))
    assert b"".join(m.get("body", b"") for m in sent) == body  # passed through untouched
    ok = orjson.dumps({"code": "looks_like_a_problem"})
    await _call(RequestMetrics(_answer(200, b"application/problem+json", [ok]), sink))
    plain = [b"Internal Server Error"]
    await _call(RequestMetrics(_answer(500, b"text/plain; charset=utf-8", plain), sink))
    assert [r.code for r in sink.requests] == ["insufficient_stock", None, UNKNOWN_CODE]


def test_odd_codes_are_not_labels() -> None:
    assert problem_code(b'{"code": "cart_not_found"}') == "cart_not_found"
    assert problem_code(b'{"code": "<script>alert(1)</script>"}') == UNKNOWN_CODE
    assert problem_code(b'{"code": 42}') == UNKNOWN_CODE
    assert problem_code(b"not json") == UNKNOWN_CODE
    assert problem_code(b'["code"]') == UNKNOWN_CODE
    assert [status_class(s) for s in (200, 302, 404, 503, 42)] == [
        "2xx", "3xx", "4xx", "5xx", "other",
    ]  # fmt: skip


def test_the_ray_sink_records_the_catalogued_metrics() -> None:
    rec = InMemoryRecorder()  # refuses names or labels that are not in the catalog
    sink = RayRequestMetrics(rec)
    sink.request_done("/v1/carts/{cart_id}", "GET", 200, None, 0.012)
    sink.request_done("/v1/carts/{cart_id}", "GET", 404, "cart_not_found", 0.003)
    labels = {"route": "/v1/carts/{cart_id}", "method": "GET"}
    assert rec.counter("feira_http_requests", **labels, status="200") == 1
    assert rec.counter("feira_http_requests", **labels, status="404") == 1
    assert rec.counter("feira_http_errors", code="cart_not_found") == 1
    assert [(k, v) for _, k, v in rec.observations] == [
        ((("method", "GET"), ("route", "/v1/carts/{cart_id}"), ("status_class", "2xx")), 0.012),
        ((("method", "GET"), ("route", "/v1/carts/{cart_id}"), ("status_class", "4xx")), 0.003),
    ]
    # The buckets resolve the 200 ms P95 target.
    assert 0.2 in HTTP_LATENCY_BOUNDARIES
    assert {0.1, 0.15, 0.25, 0.3} <= set(HTTP_LATENCY_BOUNDARIES)
