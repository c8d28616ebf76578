"""The request id: kept when sane, replaced otherwise, the same one in every layer (the
WAF's refusals and audit line included) and echoed exactly once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from api.app import create_api
from api.request_context import SAFE_REQUEST_ID, RequestContext, accept_request_id
from api.waf import _SAFE_REQUEST_ID as WAF_RULE
from feira.logs import current_request_id
from tests.inprocess import build_inprocess


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    run = await build_inprocess(tmp_path, 10)

    async def ready() -> dict[str, Any]:
        return {}

    app = create_api(run.shop, ready)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://feira") as c:
        yield c
    await run.stores.close()


def _ids(response: httpx.Response) -> list[str]:
    return response.headers.get_list("x-request-id")


async def test_a_sane_client_id_is_echoed_once(client: httpx.AsyncClient) -> None:
    ok = await client.get("/v1/products", headers={"X-Request-Id": "checkout-7:a.b_c"})
    assert _ids(ok) == ["checkout-7:a.b_c"]
    missing = await client.get("/v1/nothing-here", headers={"X-Request-Id": "r-404"})
    assert missing.status_code == 404
    assert _ids(missing) == ["r-404"]


@pytest.mark.parametrize(
    "sent", [None, b"", b"x" * 129, b"a b", b"<script>", "ünï".encode(), b"a,b", b"a/b"]
)
async def test_an_odd_or_missing_id_is_replaced(
    client: httpx.AsyncClient, sent: bytes | None
) -> None:
    headers = {} if sent is None else {"X-Request-Id": sent}
    reply = await client.get("/v1/products", headers=headers)
    [request_id] = _ids(reply)
    assert sent is None or request_id.encode() != sent
    assert len(request_id) == 32
    assert int(request_id, 16) >= 0  # hex


async def test_two_ids_sent_are_replaced_by_one(client: httpx.AsyncClient) -> None:
    reply = await client.get(
        "/v1/products", headers=[("X-Request-Id", "one"), ("X-Request-Id", "two")]
    )
    [request_id] = _ids(reply)
    assert request_id not in {"one", "two"}


async def test_a_waf_block_carries_the_same_id_in_header_body_and_audit_line(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="feira.waf.audit"):
        blocked = await client.get("/v1/search", params={"q": "<script>alert(1)</script>"})
    assert blocked.status_code == 403
    [request_id] = _ids(blocked)  # the WAF's own header was not doubled
    assert blocked.json()["request_id"] == request_id
    [line] = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "feira.waf.audit"]
    assert line["request_id"] == request_id
    # The generated id reached the WAF through the request's headers: no second id.
    assert SAFE_REQUEST_ID.fullmatch(request_id)


async def test_the_id_is_bound_while_the_app_runs() -> None:
    seen: list[str | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(current_request_id())
        headers = dict(scope["headers"])
        seen.append(headers[b"x-request-id"].decode())
        seen.append(scope["state"]["request_id"])
        await send({"type": "http.response.start", "status": 204,
                    "headers": [(b"x-request-id", b"stale")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request"}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"x-request-id", b"r1")]}
    await RequestContext(app)(scope, receive, send)
    assert seen == ["r1", "r1", "r1"]
    assert sent[0]["headers"] == [(b"x-request-id", b"r1")]
    assert current_request_id() is None  # unbound after the request


def test_the_rule_is_the_wafs() -> None:
    samples = ["a", "A-1.b_c:d", "x" * 128, "x" * 129, "", "a b", "é", "a/b", "a\n", "1;2"]
    assert [accept_request_id(s) is not None for s in samples] == [
        bool(WAF_RULE.fullmatch(s)) for s in samples
    ]
    assert SAFE_REQUEST_ID.pattern == WAF_RULE.pattern


async def test_behind_serve_the_echo_is_left_to_serve() -> None:
    """Serve's RequestIdMiddleware wraps the replica's app: it sets the request header
    and appends X-Request-ID to every answer itself. Without echo, no copy from inside
    (the WAF's) gets through to double it."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"x-request-id", b"serve-id-1"), (b"a", b"b")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request"}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [
        (b"x-request-id", b"serve-id-1")]}  # fmt: skip
    await RequestContext(app, echo=False)(scope, receive, send)
    assert sent[0]["headers"] == [(b"a", b"b")]
