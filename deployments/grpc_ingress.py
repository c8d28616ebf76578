"""Internal gRPC: ``feira.v1.InventoryService`` and ``feira.v1.OrderService`` on Ray Serve.

A second Serve application, ``feira-grpc``, whose ingress deployment implements both
services (protos in ``protos/feira/v1``, generated code in ``feira_grpc``). Serve routes a
gRPC call to the method named like the RPC (``/feira.v1.InventoryService/GetStock`` calls
``GetStock``), so RPC names are unique across the two services.

Reaching it: Serve's gRPC port (``grpc_options(settings)``, given to ``serve.start``). With
HAProxy direct ingress, HAProxy's gRPC frontend routes by the ``application`` metadata to
the replicas' own gRPC servers; with two applications a client must send
``("application", GRPC_APP_NAME)``. Without HAProxy, Serve's Python gRPC proxy does the
same routing.

Errors: a ``DomainError`` becomes a gRPC status (``GRPC_STATUS``), with the stable Feira
code in the ``feira-error-code`` trailing metadata and the message as details. These
services have no authentication of their own: the gRPC port is for the internal network.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from ray import serve
from ray.serve import Application
from ray.serve.config import gRPCOptions
from ray.serve.deployment import Deployment
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from actors.client import ShardClient
from actors.domain.errors import DomainError, ErrorCode
from actors.domain.orders import Order
from actors.kinds import ShardKind
from actors.router import ShardRouter
from feira.settings import Settings
from feira.stores import open_configured_stores
from feira_grpc import inventory_pb2, orders_pb2
from storage.errors import RecordNotFound, StoreUnavailable
from storage.factory import Stores
from storage.interfaces import OrderStore

GRPC_APP_NAME = "feira-grpc"
# gRPC ignores it, but Serve gives HAProxy no targets at all (HTTP or gRPC) for an
# application without a route prefix (ServeController.get_target_groups).
GRPC_ROUTE_PREFIX = "/_grpc"
GRPC_SERVICER_FUNCTIONS = [
    "feira_grpc.inventory_pb2_grpc.add_InventoryServiceServicer_to_server",
    "feira_grpc.orders_pb2_grpc.add_OrderServiceServicer_to_server",
]
ERROR_CODE_KEY = "feira-error-code"
# Op ids live in the shards' journal next to checkout's (`<order>:reserve:<sku>`); a
# prefix keeps a caller's key from ever meaning one of those.
OP_ID_PREFIX = "grpc:"
MAX_SKUS = 500

_C = grpc.StatusCode
GRPC_STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: _C.INVALID_ARGUMENT,
    ErrorCode.CART_NOT_FOUND: _C.NOT_FOUND,
    ErrorCode.CART_LINE_NOT_FOUND: _C.NOT_FOUND,
    ErrorCode.CART_LINE_LIMIT: _C.FAILED_PRECONDITION,
    ErrorCode.QUANTITY_INVALID: _C.INVALID_ARGUMENT,
    ErrorCode.QUANTITY_LIMIT: _C.INVALID_ARGUMENT,
    ErrorCode.SKU_NOT_FOUND: _C.NOT_FOUND,
    ErrorCode.PRODUCT_NOT_FOUND: _C.NOT_FOUND,
    ErrorCode.PRICE_NOT_FOUND: _C.NOT_FOUND,
    ErrorCode.CURRENCY_MISMATCH: _C.INVALID_ARGUMENT,
    ErrorCode.PROMOTION_INVALID: _C.INVALID_ARGUMENT,
    ErrorCode.INSUFFICIENT_STOCK: _C.FAILED_PRECONDITION,
    ErrorCode.STOCK_INVALID: _C.FAILED_PRECONDITION,
    ErrorCode.RESERVATION_NOT_FOUND: _C.NOT_FOUND,
    ErrorCode.RESERVATION_CONFLICT: _C.ALREADY_EXISTS,
    ErrorCode.SHARD_UNAVAILABLE: _C.UNAVAILABLE,
    ErrorCode.SHARD_TIMEOUT: _C.DEADLINE_EXCEEDED,
    ErrorCode.STORE_UNAVAILABLE: _C.UNAVAILABLE,
    ErrorCode.SEARCH_UNAVAILABLE: _C.UNAVAILABLE,
    ErrorCode.FORBIDDEN: _C.PERMISSION_DENIED,
    ErrorCode.UNAUTHENTICATED: _C.UNAUTHENTICATED,
    ErrorCode.PRODUCT_INVALID: _C.INVALID_ARGUMENT,
    ErrorCode.PRODUCT_CONFLICT: _C.ABORTED,
    ErrorCode.ORDER_NOT_FOUND: _C.NOT_FOUND,
    ErrorCode.ORDER_CONFLICT: _C.ABORTED,
    ErrorCode.IDEMPOTENCY_MISMATCH: _C.INVALID_ARGUMENT,
    ErrorCode.PAYMENT_DECLINED: _C.FAILED_PRECONDITION,
    ErrorCode.PAYMENT_FAILED: _C.UNAVAILABLE,
    ErrorCode.PAYMENT_TIMEOUT: _C.DEADLINE_EXCEEDED,
    ErrorCode.PAYMENT_TOKEN_INVALID: _C.INVALID_ARGUMENT,
    ErrorCode.PAYMENT_AMOUNT_INVALID: _C.INVALID_ARGUMENT,
    ErrorCode.PAYMENT_NOT_FOUND: _C.NOT_FOUND,
    ErrorCode.PAYMENT_STATE_CONFLICT: _C.FAILED_PRECONDITION,
    ErrorCode.CARD_DATA_FORBIDDEN: _C.INVALID_ARGUMENT,
    ErrorCode.WEBHOOK_SIGNATURE_INVALID: _C.UNAUTHENTICATED,
    ErrorCode.WEBHOOK_PAYLOAD_INVALID: _C.INVALID_ARGUMENT,
    ErrorCode.SHIPMENT_NOT_FOUND: _C.NOT_FOUND,
    ErrorCode.SHIPMENT_EVENT_INVALID: _C.FAILED_PRECONDITION,
    ErrorCode.FEATURE_DISABLED: _C.UNIMPLEMENTED,
    ErrorCode.CART_FROZEN: _C.FAILED_PRECONDITION,
    ErrorCode.CART_EMPTY: _C.FAILED_PRECONDITION,
    ErrorCode.PRICE_CHANGED: _C.FAILED_PRECONDITION,
    ErrorCode.IDEMPOTENCY_KEY_REQUIRED: _C.INVALID_ARGUMENT,
    ErrorCode.CHECKOUT_IN_PROGRESS: _C.ABORTED,
    ErrorCode.PAYMENT_PROVIDER_ERROR: _C.UNAVAILABLE,
}


class StatusContext(Protocol):
    """What the servicers use of a context: grpc.aio's and Serve's both have it."""

    def set_code(self, code: grpc.StatusCode) -> None: ...

    def set_details(self, details: str) -> None: ...

    def set_trailing_metadata(self, trailing_metadata: Any) -> None: ...


R = TypeVar("R")


async def answer(
    context: StatusContext, work: Callable[[], Awaitable[R]], empty: Callable[[], R]
) -> R:
    """``work()``'s reply, or ``empty()`` with the error's status set on ``context``.

    Setting the status rather than raising is what both runtimes honour: grpc.aio sends
    it, and Serve carries a status set on its ``grpc_context`` to the client.
    """
    try:
        return await work()
    except DomainError as error:
        _refuse(context, GRPC_STATUS.get(error.code, _C.UNKNOWN), error.code, error.message)
    except RecordNotFound as error:
        _refuse(context, _C.NOT_FOUND, ErrorCode.ORDER_NOT_FOUND, str(error))
    except StoreUnavailable as error:
        _refuse(context, _C.UNAVAILABLE, ErrorCode.STORE_UNAVAILABLE, str(error) or "retry")
    return empty()


def _refuse(context: StatusContext, status: grpc.StatusCode, code: str, message: str) -> None:
    context.set_code(status)
    context.set_details(message)
    context.set_trailing_metadata([(ERROR_CODE_KEY, str(code))])


def _invalid(message: str) -> DomainError:
    return DomainError(ErrorCode.INVALID_ARGUMENT, message)


def _op_id(key: str) -> str:
    if not key:
        raise DomainError(
            ErrorCode.IDEMPOTENCY_KEY_REQUIRED, "idempotency_key is required for a mutation"
        )
    return OP_ID_PREFIX + key


# --- inventory ---------------------------------------------------------------------------


class InventoryServicer:
    """``feira.v1.InventoryService`` over the inventory shards."""

    def __init__(self, shards: ShardRouter) -> None:
        self.shards = shards

    async def GetStock(
        self, request: Any, grpc_context: StatusContext
    ) -> inventory_pb2.GetStockResponse:
        async def work() -> inventory_pb2.GetStockResponse:
            skus = list(dict.fromkeys(request.skus))
            if not skus:
                raise _invalid("skus must name at least one sku")
            if len(skus) > MAX_SKUS:
                raise _invalid(f"at most {MAX_SKUS} skus per call")
            if not all(skus):
                raise _invalid("a sku must not be empty")
            levels: dict[str, dict[str, int]] = await self.shards.fanout(
                ShardKind.INVENTORY, skus, "stock"
            )
            return inventory_pb2.GetStockResponse(
                levels=[inventory_pb2.StockLevel(sku=s, **levels[s]) for s in skus if s in levels],
                unknown_skus=[s for s in skus if s not in levels],
            )

        return await answer(grpc_context, work, inventory_pb2.GetStockResponse)

    async def Reserve(
        self, request: Any, grpc_context: StatusContext
    ) -> inventory_pb2.ReserveResponse:
        async def work() -> inventory_pb2.ReserveResponse:
            op_id = _op_id(request.idempotency_key)
            if not request.sku:
                raise _invalid("sku is required")
            if request.ttl_s < 0:
                raise _invalid("ttl_s must not be negative")
            reply: dict[str, Any] = await self.shards.call(
                ShardKind.INVENTORY,
                request.sku,
                "reserve",
                op_id,
                request.reservation_id,
                request.sku,
                int(request.quantity),
                float(request.ttl_s) or None,
            )
            return inventory_pb2.ReserveResponse(reservation=_reservation(reply))

        return await answer(grpc_context, work, inventory_pb2.ReserveResponse)

    async def Release(
        self, request: Any, grpc_context: StatusContext
    ) -> inventory_pb2.ReleaseResponse:
        async def work() -> inventory_pb2.ReleaseResponse:
            op_id = _op_id(request.idempotency_key)
            if not request.sku or not request.reservation_id:
                raise _invalid("sku and reservation_id are required")
            reply: dict[str, Any] = await self.shards.call(
                ShardKind.INVENTORY,
                request.sku,
                "release",
                op_id,
                request.reservation_id,
                request.sku,
            )
            return inventory_pb2.ReleaseResponse(reservation=_reservation(reply))

        return await answer(grpc_context, work, inventory_pb2.ReleaseResponse)


def _reservation(reply: dict[str, Any]) -> inventory_pb2.Reservation:
    return inventory_pb2.Reservation(
        reservation_id=reply["reservation_id"],
        sku=reply["sku"],
        quantity=reply["quantity"],
        expires_at=reply["expires_at"],
        available=reply["available"],
    )


# --- orders ------------------------------------------------------------------------------


class OrderServicer:
    """``feira.v1.OrderService``: reads from the order store."""

    def __init__(self, orders: OrderStore) -> None:
        self.orders = orders

    async def GetOrder(
        self, request: Any, grpc_context: StatusContext
    ) -> orders_pb2.GetOrderResponse:
        async def work() -> orders_pb2.GetOrderResponse:
            if not request.order_id:
                raise _invalid("order_id is required")
            order = await self.orders.get_order(request.order_id)
            if order is None:
                raise DomainError(
                    ErrorCode.ORDER_NOT_FOUND, f"order {request.order_id!r} not found"
                )
            return orders_pb2.GetOrderResponse(order=order_message(order))

        return await answer(grpc_context, work, orders_pb2.GetOrderResponse)

    async def ListOrders(
        self, request: Any, grpc_context: StatusContext
    ) -> orders_pb2.ListOrdersResponse:
        async def work() -> orders_pb2.ListOrdersResponse:
            owner = request.WhichOneof("owner")
            value = getattr(request, owner) if owner else ""
            if not value:
                raise _invalid("set exactly one of customer_ref and merchant_id")
            query: dict[str, Any] = {owner: value, "cursor": request.cursor or None}
            if request.limit:
                query["limit"] = int(request.limit)
            try:
                orders, cursor = await self.orders.list_orders(**query)
            except ValueError as error:  # a bad limit, or a cursor this store did not issue
                raise _invalid(str(error)) from error
            return orders_pb2.ListOrdersResponse(
                orders=[order_message(o) for o in orders], next_cursor=cursor or ""
            )

        return await answer(grpc_context, work, orders_pb2.ListOrdersResponse)


def order_message(order: Order) -> orders_pb2.Order:
    message = orders_pb2.Order(
        id=order.id,
        customer_ref=order.customer_ref,
        currency=order.currency,
        status=str(order.status),
        lines=[
            orders_pb2.OrderLine(
                sku=line.sku,
                product_id=line.product_id,
                merchant_id=line.merchant_id,
                quantity=line.quantity,
                unit_amount=line.unit_amount,
                base_amount=line.base_amount,
                promotion_id=line.promotion_id or "",
            )
            for line in order.lines
        ],
        subtotal=order.subtotal,
        discount=order.discount,
        total=order.total,
        created_at=order.created_at,
        updated_at=order.updated_at,
        version=order.version,
        reservation_ids=list(order.reservation_ids),
    )
    if order.expires_at is not None:
        message.expires_at = order.expires_at
    if order.payment is not None:
        message.payment.CopyFrom(
            orders_pb2.Payment(
                provider=order.payment.provider,
                payment_id=order.payment.payment_id,
                amount=order.payment.amount,
            )
        )
    if order.shipment is not None:
        message.shipment.CopyFrom(
            orders_pb2.Shipment(
                carrier=order.shipment.carrier,
                tracking_number=order.shipment.tracking_number,
                events=[
                    orders_pb2.ShipmentEvent(kind=e.kind, at=e.at, note=e.note or "")
                    for e in order.shipment.events
                ],
            )
        )
    return message


# --- the Serve deployment ----------------------------------------------------------------


class FeiraGrpc(InventoryServicer, OrderServicer):
    """Both services on one object: what Serve's ingress (and a grpc.aio server) calls."""

    def __init__(self, shards: ShardRouter, orders: OrderStore) -> None:
        InventoryServicer.__init__(self, shards)
        OrderServicer.__init__(self, orders)


class GrpcIngress(FeiraGrpc):
    """The ``feira-grpc`` application's ingress; replicas open the stores and shards."""

    def __init__(self, settings: dict[str, Any]) -> None:
        s = Settings.from_wire(settings)
        self.stores: Stores = open_configured_stores(s)
        super().__init__(ShardClient.connect(s), self.stores.orders)

    async def __call__(self, request: Request) -> Response:
        # HTTP reaches this app only at its placeholder route prefix.
        return PlainTextResponse("gRPC only: feira.v1.InventoryService, OrderService", 404)

    async def __del__(self) -> None:
        await self.stores.close()


def grpc_options(port: int) -> gRPCOptions:
    """Serve's gRPC options: for ``serve.start(grpc_options=...)``, once per cluster."""
    return gRPCOptions(port=port, grpc_servicer_functions=list(GRPC_SERVICER_FUNCTIONS))


def bind_grpc(settings: Settings) -> Application:
    deployment: Deployment = serve.deployment(
        name="grpc",
        num_replicas=1,
        ray_actor_options={"num_cpus": 0},
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
        health_check_period_s=5,
    )(GrpcIngress)
    app: Application = deployment.bind(settings.to_wire())
    return app


def build_grpc_app(args: dict[str, Any] | None = None) -> Application:
    """Serve's application builder (``import_path: deployments.grpc_ingress:build_grpc_app``)."""
    return bind_grpc(Settings(**(args or {})))
