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
code in the ``feira-error-code`` trailing metadata and the message as details.

Authentication: every call sends ``authorization: Bearer <access token>`` metadata, the
same EdDSA access tokens as the HTTP API (``actors/identity/tokens.py``), verified with the
keys of the data dir (``feira.signing_secrets.token_service``) and cached per replica until
they expire (``api.access.VerifiedTokens``). No metadata, another scheme, more than one
``authorization`` entry, or a token that does not verify: ``UNAUTHENTICATED`` with
``feira-error-code: unauthenticated``. Authentication and authorization run before the
request is even validated, so a refused caller learns nothing about it.

Authorization: one table, :data:`METHODS` (RPC name -> the roles allowed and, per role, the
scope the token must carry). A role not listed, or a token without the scope:
``PERMISSION_DENIED`` with ``feira-error-code: forbidden``. An RPC without a row is refused.

=========== ============================================================================
RPC         who (scope)
=========== ============================================================================
GetStock    any valid token: customer, merchant, logistics, admin (no scope; stock is
            public over HTTP too)
Reserve     admin ("admin"): internal services call with the client-credentials token
            of an admin API key; shoppers reserve through checkout, never directly
Release     the same as Reserve
GetOrder    customer ("orders:read"): its own orders only, i.e. ``customer_ref`` is its
            customer id (never a guest's order, which HTTP shows to its id's holder);
            merchant ("orders:read"): orders with one of its lines (``merchant_ids``);
            logistics ("shipments:read"): orders its shipment carrier is;
            admin ("admin"): every order
ListOrders  the same roles and scopes. Admin names exactly one owner (``customer_ref``
            or ``merchant_id``). Any other caller lists only its own: leave the owner
            unset (or set the field for its role to its own subject) and the filter is
            the caller's subject - a customer by ``customer_ref``, a merchant by
            ``merchant_id``, logistics by shipment carrier (the proto has no field for
            it, so logistics leaves the owner unset). Naming another owner, or the
            other kind of owner, is ``PERMISSION_DENIED``: asked-for data is refused,
            not silently replaced.
=========== ============================================================================

Object level: an order the caller may not read is ``NOT_FOUND`` with the same message as a
missing one, so order ids cannot be probed; a listed page is filtered by the same rule.
What a caller sees of an order it may read (:func:`view_for`): customers and admins the
whole order; a merchant only its own lines and their totals, without the customer or the
payment (as ``GET /v1/merchant/orders``); a carrier only the status and the shipment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Protocol, TypeVar

import grpc
from ray import serve
from ray.serve import Application
from ray.serve.config import gRPCOptions
from ray.serve.deployment import Deployment
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from actors.client import ShardClient
from actors.domain.customers import is_customer_id, may_see_order
from actors.domain.errors import DomainError, ErrorCode
from actors.domain.orders import Order
from actors.identity.tokens import Role, TokenService
from actors.kinds import ShardKind
from actors.router import ShardRouter
from api.access import Principal, VerifiedTokens
from feira.settings import Settings
from feira.signing_secrets import token_service
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
AUTHORIZATION_KEY = "authorization"  # gRPC metadata keys are lower case
INVENTORY_SERVICE = "feira.v1.InventoryService"
ORDER_SERVICE = "feira.v1.OrderService"
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
    ErrorCode.EMAIL_TAKEN: _C.ALREADY_EXISTS,
    ErrorCode.PASSWORD_TOO_WEAK: _C.INVALID_ARGUMENT,
    ErrorCode.API_KEY_NOT_FOUND: _C.NOT_FOUND,
    ErrorCode.INVALID_GRANT: _C.UNAUTHENTICATED,
    ErrorCode.UNSUPPORTED_GRANT_TYPE: _C.INVALID_ARGUMENT,
    ErrorCode.INVALID_SCOPE: _C.PERMISSION_DENIED,
    ErrorCode.RATE_LIMITED: _C.RESOURCE_EXHAUSTED,
    ErrorCode.REQUEST_BLOCKED: _C.PERMISSION_DENIED,
}


class StatusContext(Protocol):
    """What the servicers use of a context: grpc.aio's and Serve's both have it (Serve's
    ``RayServegRPCContext`` copies the client's metadata, on its Python proxy and on a
    direct-ingress replica alike)."""

    def invocation_metadata(self) -> Iterable[tuple[str, str | bytes]] | None: ...

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


def _forbidden(message: str, **details: Any) -> DomainError:
    return DomainError(ErrorCode.FORBIDDEN, message, **details)


def _unauthenticated(message: str) -> DomainError:
    return DomainError(ErrorCode.UNAUTHENTICATED, message)


# --- who may call what -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MethodAccess:
    """Who may call one RPC: each allowed role, and the scope its token must carry (None:
    any token of the role)."""

    service: str
    grants: Mapping[Role, str | None]

    def refusal(self, method: str, caller: Principal) -> DomainError | None:
        """None when ``caller`` may call ``method``; the FORBIDDEN refusal otherwise."""
        if caller.role is None or caller.role not in self.grants:
            return _forbidden(f"a {caller.name} token may not call {self.service}/{method}")
        scope = self.grants[caller.role]
        if scope is not None and scope not in caller.scopes:
            return _forbidden(f"the token lacks the {scope!r} scope", scope=scope)
        return None


def _access(service: str, grants: Mapping[Role, str | None]) -> MethodAccess:
    return MethodAccess(service, MappingProxyType(dict(grants)))


ORDER_READERS: Final[Mapping[Role, str | None]] = MappingProxyType(
    {
        Role.CUSTOMER: "orders:read",  # its own orders
        Role.MERCHANT: "orders:read",  # orders with one of its lines
        Role.LOGISTICS: "shipments:read",  # orders it carries
        Role.ADMIN: "admin",  # every order
    }
)

# Every RPC the two services have (a test holds this to the protos). Documented in the
# module docstring; keep the two in step.
METHODS: Final[Mapping[str, MethodAccess]] = MappingProxyType(
    {
        "GetStock": _access(INVENTORY_SERVICE, dict.fromkeys(Role)),
        "Reserve": _access(INVENTORY_SERVICE, {Role.ADMIN: "admin"}),
        "Release": _access(INVENTORY_SERVICE, {Role.ADMIN: "admin"}),
        "GetOrder": _access(ORDER_SERVICE, ORDER_READERS),
        "ListOrders": _access(ORDER_SERVICE, ORDER_READERS),
    }
)

Verifier = Callable[[str], Principal]


def bearer_token(context: StatusContext) -> str:
    """The access token of a call's ``authorization: Bearer <token>`` metadata."""
    values = [
        value
        for key, value in context.invocation_metadata() or ()
        if key.lower() == AUTHORIZATION_KEY
    ]
    if not values:
        raise _unauthenticated("send 'authorization: Bearer <access token>' metadata")
    if len(values) > 1:
        raise _unauthenticated("send one 'authorization' metadata entry")
    value = values[0]
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    scheme, _, token = text.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthenticated("authorization must be 'Bearer <access token>'")
    return token


class CallAccess:
    """Authenticates a call's token and holds it to the method's row of :data:`METHODS`."""

    def __init__(
        self, tokens: TokenService | Verifier, methods: Mapping[str, MethodAccess] = METHODS
    ) -> None:
        self._verify: Verifier = (
            VerifiedTokens(tokens).principal if isinstance(tokens, TokenService) else tokens
        )
        self.methods = methods

    def admit(self, method: str, context: StatusContext) -> Principal:
        """The caller, when it may call ``method``; ``DomainError`` (UNAUTHENTICATED or
        FORBIDDEN) otherwise."""
        caller = self._verify(bearer_token(context))  # raises UNAUTHENTICATED
        rule = self.methods.get(method)
        if rule is None:  # fail closed: an RPC without a row is nobody's
            raise _forbidden(f"no access rule for {method}")
        refusal = rule.refusal(method, caller)
        if refusal is not None:
            raise refusal
        return caller


async def admitted(
    access: CallAccess,
    method: str,
    context: StatusContext,
    work: Callable[[Principal], Awaitable[R]],
    empty: Callable[[], R],
) -> R:
    """:func:`answer` for ``work(caller)``, run only once the caller is admitted."""

    async def run() -> R:
        return await work(access.admit(method, context))

    return await answer(context, run, empty)


def _op_id(key: str) -> str:
    if not key:
        raise DomainError(
            ErrorCode.IDEMPOTENCY_KEY_REQUIRED, "idempotency_key is required for a mutation"
        )
    return OP_ID_PREFIX + key


# --- inventory ---------------------------------------------------------------------------


class InventoryServicer:
    """``feira.v1.InventoryService`` over the inventory shards."""

    def __init__(self, shards: ShardRouter, access: CallAccess) -> None:
        self.shards = shards
        self.access = access

    async def GetStock(
        self, request: Any, grpc_context: StatusContext
    ) -> inventory_pb2.GetStockResponse:
        async def work(_: Principal) -> inventory_pb2.GetStockResponse:
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

        return await admitted(
            self.access, "GetStock", grpc_context, work, inventory_pb2.GetStockResponse
        )

    async def Reserve(
        self, request: Any, grpc_context: StatusContext
    ) -> inventory_pb2.ReserveResponse:
        async def work(_: Principal) -> inventory_pb2.ReserveResponse:
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

        return await admitted(
            self.access, "Reserve", grpc_context, work, inventory_pb2.ReserveResponse
        )

    async def Release(
        self, request: Any, grpc_context: StatusContext
    ) -> inventory_pb2.ReleaseResponse:
        async def work(_: Principal) -> inventory_pb2.ReleaseResponse:
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

        return await admitted(
            self.access, "Release", grpc_context, work, inventory_pb2.ReleaseResponse
        )


def _reservation(reply: dict[str, Any]) -> inventory_pb2.Reservation:
    return inventory_pb2.Reservation(
        reservation_id=reply["reservation_id"],
        sku=reply["sku"],
        quantity=reply["quantity"],
        expires_at=reply["expires_at"],
        available=reply["available"],
    )


# --- orders ------------------------------------------------------------------------------


# The store's list filter that is a non-admin caller's own: its subject is the value.
OWN_ORDERS: Final[Mapping[Role, str]] = MappingProxyType(
    {Role.CUSTOMER: "customer_ref", Role.MERCHANT: "merchant_id", Role.LOGISTICS: "carrier"}
)


def may_read(caller: Principal, order: Order) -> bool:
    """The object-level rule of GetOrder and ListOrders (see the module docstring)."""
    if caller.role is Role.ADMIN:
        return True
    subject = caller.subject
    if not subject:
        return False
    if caller.role is Role.CUSTOMER:
        # Never a guest order (customer_ref = the cart id): over HTTP its id's holder
        # may read it, but a gRPC caller has no cart to prove that with.
        return is_customer_id(order.customer_ref) and may_see_order(order.customer_ref, subject)
    if caller.role is Role.MERCHANT:
        return subject in order.merchant_ids
    if caller.role is Role.LOGISTICS:
        return order.shipment is not None and order.shipment.carrier == subject
    return False


def list_filter(caller: Principal, request: Any) -> dict[str, str]:
    """The owner filter ListOrders queries with: the admin's choice, anyone else's own."""
    owner: str | None = request.WhichOneof("owner")
    value: str = getattr(request, owner) if owner else ""
    if caller.role is Role.ADMIN:
        if owner is None or not value:
            raise _invalid("set exactly one of customer_ref and merchant_id")
        return {owner: value}
    own = OWN_ORDERS.get(caller.role) if caller.role is not None else None
    if own is None or not caller.subject:
        raise _forbidden(f"a {caller.name} token may not list orders")
    if owner is not None and (owner != own or value not in ("", caller.subject)):
        raise _forbidden(
            f"a {caller.name} token lists only its own orders: leave the owner unset"
            + (f" or set {own} to the token's subject" if own != "carrier" else "")
        )
    return {own: caller.subject}


class OrderServicer:
    """``feira.v1.OrderService``: reads from the order store."""

    def __init__(self, orders: OrderStore, access: CallAccess) -> None:
        self.orders = orders
        self.access = access

    async def GetOrder(
        self, request: Any, grpc_context: StatusContext
    ) -> orders_pb2.GetOrderResponse:
        async def work(caller: Principal) -> orders_pb2.GetOrderResponse:
            if not request.order_id:
                raise _invalid("order_id is required")
            order = await self.orders.get_order(request.order_id)
            # Someone else's order is as missing as one that does not exist.
            if order is None or not may_read(caller, order):
                raise DomainError(
                    ErrorCode.ORDER_NOT_FOUND, f"order {request.order_id!r} not found"
                )
            return orders_pb2.GetOrderResponse(order=view_for(caller, order))

        return await admitted(
            self.access, "GetOrder", grpc_context, work, orders_pb2.GetOrderResponse
        )

    async def ListOrders(
        self, request: Any, grpc_context: StatusContext
    ) -> orders_pb2.ListOrdersResponse:
        async def work(caller: Principal) -> orders_pb2.ListOrdersResponse:
            query: dict[str, Any] = {
                **list_filter(caller, request),
                "cursor": request.cursor or None,
            }
            if request.limit:
                query["limit"] = int(request.limit)
            try:
                orders, cursor = await self.orders.list_orders(**query)
            except ValueError as error:  # a bad limit, or a cursor this store did not issue
                raise _invalid(str(error)) from error
            # The filter already is the caller's own; this only keeps the rule in one place.
            readable = [o for o in orders if may_read(caller, o)]
            return orders_pb2.ListOrdersResponse(
                orders=[view_for(caller, o) for o in readable], next_cursor=cursor or ""
            )

        return await admitted(
            self.access, "ListOrders", grpc_context, work, orders_pb2.ListOrdersResponse
        )


def view_for(caller: Principal, order: Order) -> orders_pb2.Order:
    """What ``caller`` may see of an order it may read. A merchant sees its own lines and
    their totals (another merchant's lines, the customer and the payment are not its
    business: the same view as ``GET /v1/merchant/orders``); a carrier sees the order's
    status and its shipment only; customers and admins see the whole order."""
    message = order_message(order)
    if caller.role is Role.MERCHANT:
        mine = [line for line in message.lines if line.merchant_id == caller.subject]
        del message.lines[:]
        message.lines.extend(mine)
        message.subtotal = sum(line.base_amount * line.quantity for line in mine)
        message.total = sum(line.unit_amount * line.quantity for line in mine)
        message.discount = message.subtotal - message.total
        message.customer_ref = ""
        message.ClearField("payment")
        del message.reservation_ids[:]
    elif caller.role is Role.LOGISTICS:
        del message.lines[:]
        message.subtotal = message.total = message.discount = 0
        message.customer_ref = ""
        message.ClearField("payment")
        del message.reservation_ids[:]
    return message


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
    """Both services on one object: what Serve's ingress (and a grpc.aio server) calls.

    ``tokens`` verifies the callers' access tokens: a ``TokenService`` (verified tokens
    are cached until they expire) or a callable from a token to its ``Principal``."""

    def __init__(
        self, shards: ShardRouter, orders: OrderStore, tokens: TokenService | Verifier
    ) -> None:
        access = CallAccess(tokens)
        InventoryServicer.__init__(self, shards, access)
        OrderServicer.__init__(self, orders, access)


class GrpcIngress(FeiraGrpc):
    """The ``feira-grpc`` application's ingress; replicas open the stores and shards."""

    def __init__(self, settings: dict[str, Any]) -> None:
        s = Settings.from_wire(settings)
        tokens = token_service(s)  # the HTTP API's keys: a replica without them never serves
        self.stores: Stores = open_configured_stores(s)
        super().__init__(ShardClient.connect(s), self.stores.orders, tokens)

    async def __call__(self, request: Request) -> Response:
        # HTTP reaches this app only at its placeholder route prefix.
        return PlainTextResponse("gRPC only: feira.v1.InventoryService, OrderService", 404)

    async def __del__(self) -> None:
        await self.stores.close()


def grpc_options(port: int) -> gRPCOptions:
    """Serve's gRPC options: for ``serve.start(grpc_options=...)``, once per cluster."""
    return gRPCOptions(port=port, grpc_servicer_functions=list(GRPC_SERVICER_FUNCTIONS))


def bind_grpc(settings: Settings) -> Application:
    # The same drain and health-check options as the BFF (deployments/builder.py).
    from deployments.builder import REPLICA_OPTIONS

    deployment: Deployment = serve.deployment(
        name="grpc", num_replicas=1, **REPLICA_OPTIONS
    )(GrpcIngress)
    app: Application = deployment.bind(settings.to_wire())
    return app


def build_grpc_app(args: dict[str, Any] | None = None) -> Application:
    """Serve's application builder (``import_path: deployments.grpc_ingress:build_grpc_app``)."""
    return bind_grpc(Settings(**(args or {})))
