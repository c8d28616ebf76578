"""The internal gRPC services over a real grpc.aio server and client, runtime in-process.

The servicer object is the one the Serve deployment subclasses (``FeiraGrpc``); here it is
registered on a plain grpc.aio server with the generated ``add_*_to_server`` functions, so
the protos, the generated code, the request/response mapping, the status codes and the
``authorization`` metadata's trip to the servicer are the production ones. Calls carry an
admin token unless a test is about another caller (the whole auth matrix, with a fake
context, is in ``test_grpc_auth.py``). Also: the generated package is exactly what
``scripts/gen_protos.py`` produces.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from actors.domain.errors import ErrorCode
from actors.domain.orders import Order, OrderLine, Shipment
from actors.identity.tokens import KeyRing, Role, TokenService
from deployments.grpc_ingress import (
    ERROR_CODE_KEY,
    GRPC_SERVICER_FUNCTIONS,
    GRPC_STATUS,
    CallAccess,
    FeiraGrpc,
    OrderServicer,
)
from feira_grpc import (
    inventory_pb2,
    inventory_pb2_grpc,
    orders_pb2,
    orders_pb2_grpc,
)
from storage.errors import StoreUnavailable
from storage.records import NewOutboxEvent
from tests.inprocess import InProcess, build_inprocess
from tests.tokens import AUDIENCE, ISSUER, RING, TOKENS, bearer

REPO = Path(__file__).resolve().parents[2]
SKU_A = "SKU-0000001-1"
SKU_B = "SKU-0000002-1"
CUSTOMER = "cus_" + "a" * 22
OTHER_CUSTOMER = "cus_" + "b" * 22
Metadata = tuple[tuple[str, str], ...]


def auth(subject: str, role: Role, scopes: tuple[str, ...] | None = None) -> Metadata:
    """Call metadata with a token of the test session's signing ring."""
    return (("authorization", bearer(subject, role, scopes)["Authorization"]),)


ADMIN = auth("ops-1", Role.ADMIN)


# --- generated code ------------------------------------------------------------------------


def _gen_protos() -> Any:
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_reproducible(tmp_path: Path) -> None:
    gen = _gen_protos()
    fresh = {p.name: p.read_bytes() for p in gen.generate(tmp_path / "feira_grpc")}
    committed = {
        p.name: p.read_bytes()
        for p in (REPO / "feira_grpc").iterdir()
        if p.is_file() and p.suffix in (".py", ".pyi")
    }
    assert set(fresh) == set(committed)
    for name, data in fresh.items():
        assert committed[name] == data, f"feira_grpc/{name} is stale: run scripts/gen_protos.py"
    # And twice in a row gives the same bytes.
    again = {p.name: p.read_bytes() for p in gen.generate(tmp_path / "again")}
    assert again == fresh


def test_messages_pickle_under_their_own_module() -> None:
    # Serve's Python gRPC proxy pickles each request to the replica: a message class must
    # name the module it really lives in (not `feira.v1.*`, the proto path's default).
    for module in (inventory_pb2, orders_pb2):
        for name in module.DESCRIPTOR.message_types_by_name:
            cls = getattr(module, name)
            assert cls.__module__ == module.__name__
    request = inventory_pb2.ReserveRequest(sku=SKU_A, quantity=2, idempotency_key="k")
    assert pickle.loads(pickle.dumps(request)) == request


def test_servicer_functions_import() -> None:
    for path in GRPC_SERVICER_FUNCTIONS:
        module, name = path.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), name))


def test_every_error_code_has_a_grpc_status() -> None:
    assert set(GRPC_STATUS) == set(ErrorCode)
    assert grpc.StatusCode.OK not in GRPC_STATUS.values()


# --- a real server -------------------------------------------------------------------------


@dataclass
class Rig:
    run: InProcess
    inventory: inventory_pb2_grpc.InventoryServiceStub
    orders: orders_pb2_grpc.OrderServiceStub
    admin: Metadata = ADMIN


async def serve(servicer: Any, inventory: bool = True) -> tuple[grpc.aio.Server, grpc.aio.Channel]:
    server = grpc.aio.server()
    if inventory:
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server(servicer, server)
    orders_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    run = await build_inprocess(tmp_path, 10)
    await run.stores.migrate()
    server, channel = await serve(FeiraGrpc(run.router, run.stores.orders, TOKENS))
    try:
        yield Rig(
            run,
            inventory_pb2_grpc.InventoryServiceStub(channel),
            orders_pb2_grpc.OrderServiceStub(channel),
        )
    finally:
        await channel.close()
        await server.stop(None)
        await run.stores.close()


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def feira_code(error: grpc.aio.AioRpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get(ERROR_CODE_KEY)


async def test_get_stock(rig: Rig) -> None:
    reply = await rig.inventory.GetStock(
        inventory_pb2.GetStockRequest(skus=[SKU_B, SKU_A, "SKU-NOPE", SKU_B]), metadata=rig.admin
    )
    assert [level.sku for level in reply.levels] == [SKU_B, SKU_A]
    assert list(reply.unknown_skus) == ["SKU-NOPE"]
    level = reply.levels[1]
    assert level.on_hand > 0
    assert level.available == level.on_hand - level.reserved - level.sold


async def test_get_stock_needs_skus(rig: Rig) -> None:
    error = await refused(
        rig.inventory.GetStock(inventory_pb2.GetStockRequest(), metadata=rig.admin)
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert feira_code(error) == "invalid_argument"


async def test_reserve_is_idempotent_and_release_gives_back(rig: Rig) -> None:
    before = (
        await rig.inventory.GetStock(
            inventory_pb2.GetStockRequest(skus=[SKU_A]), metadata=rig.admin
        )
    ).levels[0]
    request = inventory_pb2.ReserveRequest(
        sku=SKU_A, quantity=2, reservation_id="r-1", idempotency_key="k-1"
    )
    first = await rig.inventory.Reserve(request, metadata=rig.admin)
    again = await rig.inventory.Reserve(request, metadata=rig.admin)
    assert first == again
    assert first.reservation.reservation_id == "r-1"
    assert first.reservation.quantity == 2
    assert first.reservation.available == before.available - 2
    assert first.reservation.expires_at > time.time()
    held = (
        await rig.inventory.GetStock(
            inventory_pb2.GetStockRequest(skus=[SKU_A]), metadata=rig.admin
        )
    ).levels[0]
    assert held.reserved == before.reserved + 2

    released = await rig.inventory.Release(
        inventory_pb2.ReleaseRequest(reservation_id="r-1", sku=SKU_A, idempotency_key="k-2"),
        metadata=rig.admin,
    )
    assert released.reservation.available == before.available
    # A retry of the release answers the first reply instead of failing.
    retried = await rig.inventory.Release(
        inventory_pb2.ReleaseRequest(reservation_id="r-1", sku=SKU_A, idempotency_key="k-2"),
        metadata=rig.admin,
    )
    assert retried == released


async def test_reserve_refusals(rig: Rig) -> None:
    too_many = await refused(
        rig.inventory.Reserve(
            inventory_pb2.ReserveRequest(
                sku=SKU_A, quantity=10**9, reservation_id="r-big", idempotency_key="k-big"
            ),
            metadata=rig.admin,
        )
    )
    assert too_many.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert feira_code(too_many) == "insufficient_stock"

    no_key = await refused(
        rig.inventory.Reserve(
            inventory_pb2.ReserveRequest(sku=SKU_A, quantity=1, reservation_id="r-2"),
            metadata=rig.admin,
        )
    )
    assert no_key.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert feira_code(no_key) == "idempotency_key_required"

    zero = await refused(
        rig.inventory.Reserve(
            inventory_pb2.ReserveRequest(
                sku=SKU_A, quantity=0, reservation_id="r-3", idempotency_key="k-3"
            ),
            metadata=rig.admin,
        )
    )
    assert zero.code() is grpc.StatusCode.INVALID_ARGUMENT

    unknown = await refused(
        rig.inventory.Release(
            inventory_pb2.ReleaseRequest(reservation_id="r-none", sku=SKU_A, idempotency_key="k-4"),
            metadata=rig.admin,
        )
    )
    assert unknown.code() is grpc.StatusCode.NOT_FOUND
    assert feira_code(unknown) == "reservation_not_found"


def _order(order_id: str, customer: str, merchant: str, at: float) -> Order:
    return Order.create(
        order_id,
        customer,
        "EUR",
        [
            OrderLine(SKU_A, "p-1", merchant, 2, 900, 1000, "promo-1"),
            OrderLine(SKU_B, "p-2", "m-other", 1, 500, 500),
        ],
        at,
        expires_at=at + 900,
        reservation_ids=[f"{order_id}:{SKU_A}", f"{order_id}:{SKU_B}"],
    )


async def _place(rig: Rig, *orders: Order) -> None:
    for order in orders:
        event = NewOutboxEvent("order.placed", {"order_id": order.id})
        await rig.run.stores.orders.create_order(order, [event])


async def test_get_order(rig: Rig) -> None:
    now = time.time()
    await _place(rig, _order("ord-1", "cust-1", "m-1", now))
    reply = await rig.orders.GetOrder(
        orders_pb2.GetOrderRequest(order_id="ord-1"), metadata=rig.admin
    )
    order = reply.order
    assert (order.id, order.customer_ref, order.currency) == ("ord-1", "cust-1", "EUR")
    assert order.status == "pending_payment"
    assert order.version == 1
    assert [(x.sku, x.quantity, x.unit_amount, x.promotion_id) for x in order.lines] == [
        (SKU_A, 2, 900, "promo-1"),
        (SKU_B, 1, 500, ""),
    ]
    assert (order.subtotal, order.discount, order.total) == (2500, 200, 2300)
    assert order.HasField("expires_at")
    assert order.expires_at == pytest.approx(now + 900)
    assert not order.HasField("payment")
    assert not order.HasField("shipment")
    assert list(order.reservation_ids) == [f"ord-1:{SKU_A}", f"ord-1:{SKU_B}"]


async def test_get_order_refusals(rig: Rig) -> None:
    missing = await refused(
        rig.orders.GetOrder(orders_pb2.GetOrderRequest(order_id="ord-x"), metadata=rig.admin)
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    assert feira_code(missing) == "order_not_found"
    empty = await refused(rig.orders.GetOrder(orders_pb2.GetOrderRequest(), metadata=rig.admin))
    assert empty.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_list_orders_pages_by_customer_and_merchant(rig: Rig) -> None:
    t0 = time.time()
    await _place(
        rig,
        _order("ord-1", "cust-1", "m-1", t0),
        _order("ord-2", "cust-1", "m-2", t0 + 1),
        _order("ord-3", "cust-2", "m-1", t0 + 2),
    )
    first = await rig.orders.ListOrders(
        orders_pb2.ListOrdersRequest(customer_ref="cust-1", limit=1), metadata=rig.admin
    )
    assert [o.id for o in first.orders] == ["ord-2"]
    assert first.next_cursor
    rest = await rig.orders.ListOrders(
        orders_pb2.ListOrdersRequest(customer_ref="cust-1", limit=1, cursor=first.next_cursor),
        metadata=rig.admin,
    )
    assert [o.id for o in rest.orders] == ["ord-1"]

    merchant = await rig.orders.ListOrders(
        orders_pb2.ListOrdersRequest(merchant_id="m-1"), metadata=rig.admin
    )
    assert [o.id for o in merchant.orders] == ["ord-3", "ord-1"]
    assert merchant.next_cursor == ""


async def test_list_orders_refusals(rig: Rig) -> None:
    no_owner = await refused(
        rig.orders.ListOrders(orders_pb2.ListOrdersRequest(), metadata=rig.admin)
    )
    assert no_owner.code() is grpc.StatusCode.INVALID_ARGUMENT
    bad_cursor = await refused(
        rig.orders.ListOrders(
            orders_pb2.ListOrdersRequest(customer_ref="c", cursor="nope"), metadata=rig.admin
        )
    )
    assert bad_cursor.code() is grpc.StatusCode.INVALID_ARGUMENT
    bad_limit = await refused(
        rig.orders.ListOrders(
            orders_pb2.ListOrdersRequest(customer_ref="c", limit=100_000), metadata=rig.admin
        )
    )
    assert bad_limit.code() is grpc.StatusCode.INVALID_ARGUMENT


# --- authentication and authorization over the wire -----------------------------------------


async def test_a_call_without_a_token_is_unauthenticated(rig: Rig) -> None:
    for call in (
        rig.inventory.GetStock(inventory_pb2.GetStockRequest(skus=[SKU_A])),
        rig.inventory.Reserve(
            inventory_pb2.ReserveRequest(
                sku=SKU_A, quantity=1, reservation_id="r-anon", idempotency_key="k-anon"
            )
        ),
        rig.orders.GetOrder(orders_pb2.GetOrderRequest(order_id="ord-1")),
        rig.orders.ListOrders(orders_pb2.ListOrdersRequest(customer_ref="cust-1")),
    ):
        error = await refused(call)
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert feira_code(error) == "unauthenticated"
    # Nothing was reserved by the refused Reserve.
    level = (
        await rig.inventory.GetStock(
            inventory_pb2.GetStockRequest(skus=[SKU_A]), metadata=rig.admin
        )
    ).levels[0]
    assert level.reserved == 0


async def test_a_bad_token_or_scheme_is_unauthenticated(rig: Rig) -> None:
    # Same issuer, audience and kid, another key: what a forged token looks like.
    forger = TokenService(KeyRing.generate(RING.active_kid), ISSUER, AUDIENCE)
    foreign = bearer("ops-1", Role.ADMIN, tokens=forger)["Authorization"]
    for metadata in (
        (("authorization", foreign),),
        (("authorization", "Basic b3BzOnNlY3JldA=="),),
        (("authorization", "Bearer"),),
    ):
        error = await refused(
            rig.inventory.GetStock(inventory_pb2.GetStockRequest(skus=[SKU_A]), metadata=metadata)
        )
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED, metadata
        assert feira_code(error) == "unauthenticated"


async def test_a_customer_may_not_reserve(rig: Rig) -> None:
    error = await refused(
        rig.inventory.Reserve(
            inventory_pb2.ReserveRequest(
                sku=SKU_A, quantity=1, reservation_id="r-c", idempotency_key="k-c"
            ),
            metadata=auth(CUSTOMER, Role.CUSTOMER),
        )
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert feira_code(error) == "forbidden"
    # Any valid token reads stock.
    stock = await rig.inventory.GetStock(
        inventory_pb2.GetStockRequest(skus=[SKU_A]), metadata=auth(CUSTOMER, Role.CUSTOMER)
    )
    assert [level.sku for level in stock.levels] == [SKU_A]
    assert stock.levels[0].reserved == 0


async def test_each_caller_reads_only_its_own_orders(rig: Rig) -> None:
    t0 = time.time()
    shipped = replace(
        _order("ord-3", OTHER_CUSTOMER, "m-2", t0 + 2),
        shipment=Shipment("carrier-1", "TRACK-3"),
    )
    await _place(
        rig,
        _order("ord-1", CUSTOMER, "m-1", t0),
        _order("ord-2", "cart-guest-2", "m-1", t0 + 1),  # a guest's
        shipped,
    )
    customer = auth(CUSTOMER, Role.CUSTOMER)
    mine = await rig.orders.GetOrder(
        orders_pb2.GetOrderRequest(order_id="ord-1"), metadata=customer
    )
    assert mine.order.customer_ref == CUSTOMER
    for other in ("ord-2", "ord-3", "ord-none"):
        error = await refused(
            rig.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=other), metadata=customer)
        )
        assert error.code() is grpc.StatusCode.NOT_FOUND, other
        assert feira_code(error) == "order_not_found"
        assert error.details() == f"order {other!r} not found"
    listed = await rig.orders.ListOrders(orders_pb2.ListOrdersRequest(), metadata=customer)
    assert [o.id for o in listed.orders] == ["ord-1"]
    someone_else = await refused(
        rig.orders.ListOrders(
            orders_pb2.ListOrdersRequest(customer_ref=OTHER_CUSTOMER), metadata=customer
        )
    )
    assert someone_else.code() is grpc.StatusCode.PERMISSION_DENIED
    assert feira_code(someone_else) == "forbidden"

    merchant = auth("m-1", Role.MERCHANT)
    by_merchant = await rig.orders.ListOrders(orders_pb2.ListOrdersRequest(), metadata=merchant)
    assert [o.id for o in by_merchant.orders] == ["ord-2", "ord-1"]
    hidden = await refused(
        rig.orders.GetOrder(orders_pb2.GetOrderRequest(order_id="ord-3"), metadata=merchant)
    )
    assert hidden.code() is grpc.StatusCode.NOT_FOUND

    carrier = auth("carrier-1", Role.LOGISTICS)
    carried = await rig.orders.ListOrders(orders_pb2.ListOrdersRequest(), metadata=carrier)
    assert [o.id for o in carried.orders] == ["ord-3"]
    got = await rig.orders.GetOrder(orders_pb2.GetOrderRequest(order_id="ord-3"), metadata=carrier)
    assert got.order.shipment.tracking_number == "TRACK-3"
    not_carried = await refused(
        rig.orders.GetOrder(orders_pb2.GetOrderRequest(order_id="ord-1"), metadata=carrier)
    )
    assert not_carried.code() is grpc.StatusCode.NOT_FOUND


class DownOrders:
    async def get_order(self, order_id: str) -> Order | None:
        raise StoreUnavailable("orders database is down")


async def test_store_outage_is_unavailable() -> None:
    access = CallAccess(TOKENS)
    server, channel = await serve(OrderServicer(DownOrders(), access), inventory=False)  # type: ignore[arg-type]
    try:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        error = await refused(
            stub.GetOrder(orders_pb2.GetOrderRequest(order_id="ord-1"), metadata=ADMIN)
        )
    finally:
        await channel.close()
        await server.stop(None)
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert feira_code(error) == "store_unavailable"
