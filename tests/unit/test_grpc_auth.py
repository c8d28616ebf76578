"""Who may call which gRPC method: the ``METHODS`` table, the bearer metadata, the
object-level order rules and the ListOrders filter, against the servicers with a fake
context (the one ``RayServegRPCContext`` and grpc.aio's both stand for) and fakes of the
shards and the order store that record whether the work ran.

The matrix is generated from ``METHODS``: every method x no token / bad tokens / every role
it does not allow / its allowed roles without their scope / its allowed roles with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import pytest

from actors.domain.orders import Order, OrderLine, Shipment
from actors.identity.tokens import KeyRing, Role, TokenService
from api.access import Principal
from deployments.grpc_ingress import (
    ERROR_CODE_KEY,
    INVENTORY_SERVICE,
    METHODS,
    ORDER_SERVICE,
    FeiraGrpc,
)
from feira_grpc import inventory_pb2, orders_pb2
from tests.tokens import AUDIENCE, ISSUER, RING, TOKENS, role_scopes

SKU = "SKU-0000001-1"
CUSTOMER = "cus_" + "c" * 22
OTHER_CUSTOMER = "cus_" + "o" * 22
GUEST_CART = "cart-guest-1"
SUBJECTS = {
    Role.CUSTOMER: CUSTOMER,
    Role.MERCHANT: "m-1",
    Role.LOGISTICS: "carrier-1",
    Role.ADMIN: "ops-1",
}


# --- fakes --------------------------------------------------------------------------------


class FakeContext:
    """A servicer's view of a call: the client's metadata in, a status out."""

    def __init__(self, metadata: Iterable[tuple[str, str | bytes]] = ()) -> None:
        self.metadata = list(metadata)
        self.code: grpc.StatusCode | None = None
        self.details: str | None = None
        self.trailing: list[tuple[str, str]] = []

    def invocation_metadata(self) -> list[tuple[str, str | bytes]]:
        return self.metadata

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self.trailing = list(trailing_metadata)

    @property
    def feira_code(self) -> str | None:
        return dict(self.trailing).get(ERROR_CODE_KEY)


@dataclass
class FakeShards:
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    async def fanout(self, kind: Any, keys: list[str], op: str) -> dict[str, Any]:
        self.calls.append((op, tuple(keys)))
        return {k: {"on_hand": 5, "reserved": 0, "sold": 0, "available": 5} for k in keys}

    async def call(self, kind: Any, key: str, op: str, *args: Any) -> dict[str, Any]:
        self.calls.append((op, *args))
        return {
            "reservation_id": args[1],
            "sku": key,
            "quantity": 1,
            "expires_at": 0.0,
            "available": 4,
        }


@dataclass
class FakeOrders:
    """An order store; ``leaky`` answers every order whatever the filter."""

    orders: dict[str, Order]
    leaky: bool = False
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def get_order(self, order_id: str) -> Order | None:
        self.calls.append(("get_order", {"order_id": order_id}))
        return self.orders.get(order_id)

    async def list_orders(self, **query: Any) -> tuple[list[Order], str | None]:
        self.calls.append(("list_orders", query))
        found = [
            o
            for o in self.orders.values()
            if self.leaky
            or o.customer_ref == query.get("customer_ref")
            or query.get("merchant_id") in o.merchant_ids
            or (o.shipment is not None and o.shipment.carrier == query.get("carrier"))
        ]
        return sorted(found, key=lambda o: -o.created_at), None


def _order(order_id: str, customer: str, merchant: str, at: float, carrier: str = "") -> Order:
    order = Order.create(
        order_id, customer, "EUR", [OrderLine(SKU, "p-1", merchant, 1, 1000, 1000)], at
    )
    return replace(order, shipment=Shipment(carrier, "T-" + order_id)) if carrier else order


T0 = time.time()
ORDERS = {
    o.id: o
    for o in (
        _order("ord-mine", CUSTOMER, "m-1", T0),
        _order("ord-guest", GUEST_CART, "m-2", T0 + 1, carrier="carrier-1"),
        _order("ord-other", OTHER_CUSTOMER, "m-2", T0 + 2, carrier="carrier-2"),
    )
}


@dataclass
class Rig:
    servicer: FeiraGrpc
    shards: FakeShards
    orders: FakeOrders

    @property
    def ran(self) -> bool:
        return bool(self.shards.calls or self.orders.calls)


def make_rig(tokens: Any = TOKENS, leaky: bool = False) -> Rig:
    shards, orders = FakeShards(), FakeOrders(dict(ORDERS), leaky)
    return Rig(FeiraGrpc(shards, orders, tokens), shards, orders)  # type: ignore[arg-type]


@pytest.fixture
def rig() -> Rig:
    return make_rig()


def token(role: Role, scopes: tuple[str, ...] | None = None, subject: str | None = None) -> str:
    return TOKENS.issue_access(
        subject or SUBJECTS[role], role, role_scopes(role) if scopes is None else scopes
    )


def ctx(bearer: str | None) -> FakeContext:
    return FakeContext([] if bearer is None else [("authorization", f"Bearer {bearer}")])


def request_for(method: str, role: Role) -> Any:
    """A request the method would serve for ``role``'s subject (object level included)."""
    if method == "GetStock":
        return inventory_pb2.GetStockRequest(skus=[SKU])
    if method == "Reserve":
        return inventory_pb2.ReserveRequest(
            sku=SKU, quantity=1, reservation_id="r-1", idempotency_key="k-1"
        )
    if method == "Release":
        return inventory_pb2.ReleaseRequest(reservation_id="r-1", sku=SKU, idempotency_key="k-2")
    readable = {
        Role.CUSTOMER: "ord-mine",
        Role.MERCHANT: "ord-mine",
        Role.LOGISTICS: "ord-guest",
        Role.ADMIN: "ord-other",
    }
    if method == "GetOrder":
        return orders_pb2.GetOrderRequest(order_id=readable[role])
    assert method == "ListOrders"
    if role is Role.ADMIN:
        return orders_pb2.ListOrdersRequest(customer_ref=OTHER_CUSTOMER)
    return orders_pb2.ListOrdersRequest()


async def call(rig: Rig, method: str, request: Any, context: FakeContext) -> Any:
    return await getattr(rig.servicer, method)(request, grpc_context=context)


# --- the table ----------------------------------------------------------------------------


def test_the_table_covers_every_rpc_of_both_services() -> None:
    rpcs = {
        name: service.full_name
        for module in (inventory_pb2, orders_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for name in service.methods_by_name
    }
    assert {name: rule.service for name, rule in METHODS.items()} == rpcs
    assert set(rpcs.values()) == {INVENTORY_SERVICE, ORDER_SERVICE}


def test_the_table_as_documented() -> None:
    every_role = dict.fromkeys(Role)
    readers = {
        Role.CUSTOMER: "orders:read",
        Role.MERCHANT: "orders:read",
        Role.LOGISTICS: "shipments:read",
        Role.ADMIN: "admin",
    }
    assert {name: dict(rule.grants) for name, rule in METHODS.items()} == {
        "GetStock": every_role,
        "Reserve": {Role.ADMIN: "admin"},
        "Release": {Role.ADMIN: "admin"},
        "GetOrder": readers,
        "ListOrders": readers,
    }


def test_every_granted_scope_is_one_the_role_gets_by_default() -> None:
    # Otherwise the row could never be satisfied by a real key or sign-in.
    for name, rule in METHODS.items():
        for role, scope in rule.grants.items():
            assert scope is None or scope in role_scopes(role), (name, role)


# --- the matrix ---------------------------------------------------------------------------

CASES_ALLOWED = [(m, r) for m, rule in METHODS.items() for r in rule.grants]
CASES_WRONG_ROLE = [(m, r) for m, rule in METHODS.items() for r in Role if r not in rule.grants]
CASES_SCOPED = [(m, r, s) for m, rule in METHODS.items() for r, s in rule.grants.items() if s]


def _forged() -> str:
    forger = TokenService(KeyRing.generate(RING.active_kid), ISSUER, AUDIENCE)
    return forger.issue_access("ops-1", Role.ADMIN, ["admin"])


def _expired() -> str:
    past = TokenService(RING, ISSUER, AUDIENCE, clock=lambda: time.time() - 7200)
    return past.issue_access("ops-1", Role.ADMIN, ["admin"], ttl_s=60)


def _other_audience() -> str:
    return TokenService(RING, ISSUER, "someone-else").issue_access("ops-1", Role.ADMIN, ["admin"])


@pytest.mark.parametrize("method", list(METHODS))
async def test_no_token_is_unauthenticated_and_nothing_runs(rig: Rig, method: str) -> None:
    context = ctx(None)
    reply = await call(rig, method, request_for(method, Role.ADMIN), context)
    assert context.code is grpc.StatusCode.UNAUTHENTICATED
    assert context.feira_code == "unauthenticated"
    assert reply == type(reply)()  # the empty reply
    assert not rig.ran


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param([("authorization", "Bearer not-a-jwt")], id="garbage"),
        pytest.param([("authorization", f"Bearer {_forged()}")], id="forged"),
        pytest.param([("authorization", f"Bearer {_expired()}")], id="expired"),
        pytest.param([("authorization", f"Bearer {_other_audience()}")], id="audience"),
        pytest.param([("authorization", "Basic b3BzOnNlY3JldA==")], id="basic"),
        pytest.param([("authorization", "Bearer ")], id="empty"),
        pytest.param([("authorization", token(Role.ADMIN))], id="no-scheme"),
        pytest.param(
            [("authorization", f"Bearer {token(Role.ADMIN)}")] * 2, id="two-authorizations"
        ),
        pytest.param([("x-token", f"Bearer {token(Role.ADMIN)}")], id="other-key"),
    ],
)
async def test_a_bad_token_is_unauthenticated_and_nothing_runs(
    rig: Rig, method: str, metadata: list[tuple[str, str]]
) -> None:
    context = FakeContext(metadata)
    await call(rig, method, request_for(method, Role.ADMIN), context)
    assert context.code is grpc.StatusCode.UNAUTHENTICATED
    assert context.feira_code == "unauthenticated"
    assert context.details
    for _, value in metadata:  # the reason names what failed, never the token
        sent = value.split()[-1] if value.split() else ""
        assert len(sent) < 20 or sent not in context.details
    assert not rig.ran


@pytest.mark.parametrize(("method", "role"), CASES_WRONG_ROLE)
async def test_a_role_not_in_the_row_is_forbidden(rig: Rig, method: str, role: Role) -> None:
    context = ctx(token(role))
    await call(rig, method, request_for(method, Role.ADMIN), context)
    assert context.code is grpc.StatusCode.PERMISSION_DENIED
    assert context.feira_code == "forbidden"
    assert not rig.ran


@pytest.mark.parametrize(("method", "role", "scope"), CASES_SCOPED)
async def test_an_allowed_role_without_the_scope_is_forbidden(
    rig: Rig, method: str, role: Role, scope: str
) -> None:
    others = tuple(s for s in role_scopes(role) if s != scope)
    context = ctx(token(role, others))
    await call(rig, method, request_for(method, role), context)
    assert context.code is grpc.StatusCode.PERMISSION_DENIED
    assert context.feira_code == "forbidden"
    assert context.details == f"the token lacks the {scope!r} scope"
    assert not rig.ran


@pytest.mark.parametrize(("method", "role"), CASES_ALLOWED)
async def test_an_allowed_role_with_its_scope_is_served(rig: Rig, method: str, role: Role) -> None:
    context = ctx(token(role))
    reply = await call(rig, method, request_for(method, role), context)
    assert context.code is None, context.details
    assert rig.ran
    if method == "GetStock":
        assert [level.sku for level in reply.levels] == [SKU]
    elif method in ("Reserve", "Release"):
        assert reply.reservation.reservation_id == "r-1"
    elif method == "GetOrder":
        assert reply.order.id == request_for(method, role).order_id
    else:
        assert reply.orders, "every caller has an order of its own in the fixture"


async def test_the_scheme_is_case_insensitive_and_bytes_are_read() -> None:
    for metadata in (
        [("authorization", f"bearer {token(Role.ADMIN)}")],
        [("Authorization", f"BEARER  {token(Role.ADMIN)} ")],
        [("authorization", f"Bearer {token(Role.ADMIN)}".encode())],
    ):
        rig, context = make_rig(), FakeContext(metadata)
        await call(rig, "GetStock", request_for("GetStock", Role.ADMIN), context)
        assert context.code is None, (metadata, context.details)
        assert rig.ran


async def test_authentication_comes_before_request_validation(rig: Rig) -> None:
    # A refused caller learns nothing about its request, not even that it is malformed.
    context = ctx(None)
    await call(rig, "GetOrder", orders_pb2.GetOrderRequest(), context)
    assert context.code is grpc.StatusCode.UNAUTHENTICATED
    context = ctx(token(Role.CUSTOMER))
    await call(rig, "Reserve", inventory_pb2.ReserveRequest(), context)
    assert context.code is grpc.StatusCode.PERMISSION_DENIED


async def test_verified_tokens_are_cached_per_servicer() -> None:
    class Counting(TokenService):
        verified = 0

        def verify_access(self, token: str) -> Any:
            Counting.verified += 1
            return super().verify_access(token)

    rig = make_rig(Counting(RING, ISSUER, AUDIENCE))
    bearer = token(Role.ADMIN)
    for _ in range(3):
        context = ctx(bearer)
        await call(rig, "GetStock", request_for("GetStock", Role.ADMIN), context)
        assert context.code is None
    assert Counting.verified == 1


async def test_a_verifier_callable_is_accepted() -> None:
    seen: list[str] = []

    def verify(raw: str) -> Principal:
        seen.append(raw)
        return Principal(Role.MERCHANT, "m-1", frozenset({"orders:read"}))

    rig = make_rig(verify)
    context = ctx("opaque")
    reply = await call(rig, "ListOrders", orders_pb2.ListOrdersRequest(), context)
    assert context.code is None
    assert seen == ["opaque"]
    assert [o.id for o in reply.orders] == ["ord-mine"]


# --- object level: GetOrder ---------------------------------------------------------------

VISIBLE = {
    (Role.CUSTOMER, CUSTOMER): {"ord-mine"},
    (Role.CUSTOMER, OTHER_CUSTOMER): {"ord-other"},
    # A customer token can never reach a guest order, whatever its subject.
    (Role.CUSTOMER, GUEST_CART): set(),
    (Role.MERCHANT, "m-1"): {"ord-mine"},
    (Role.MERCHANT, "m-2"): {"ord-guest", "ord-other"},
    (Role.MERCHANT, "m-3"): set(),
    (Role.LOGISTICS, "carrier-1"): {"ord-guest"},
    (Role.LOGISTICS, "carrier-2"): {"ord-other"},
    (Role.ADMIN, "ops-1"): set(ORDERS),
}


@pytest.mark.parametrize(("role", "subject"), list(VISIBLE))
async def test_get_order_shows_only_the_callers_orders(role: Role, subject: str) -> None:
    bearer = token(role, subject=subject)
    for order_id in [*ORDERS, "ord-missing"]:
        rig, context = make_rig(), ctx(bearer)
        reply = await call(rig, "GetOrder", orders_pb2.GetOrderRequest(order_id=order_id), context)
        if order_id in VISIBLE[role, subject]:
            assert context.code is None, (order_id, context.details)
            assert reply.order.id == order_id
        else:
            # Someone else's order is exactly as missing as one that does not exist.
            assert context.code is grpc.StatusCode.NOT_FOUND, order_id
            assert context.feira_code == "order_not_found"
            assert context.details == f"order {order_id!r} not found"
            assert not reply.HasField("order")


# --- object level: ListOrders -------------------------------------------------------------


def _listed(rig: Rig) -> list[dict[str, Any]]:
    return [query for name, query in rig.orders.calls if name == "list_orders"]


OWN_FILTER = {
    Role.CUSTOMER: {"customer_ref": CUSTOMER},
    Role.MERCHANT: {"merchant_id": "m-1"},
    Role.LOGISTICS: {"carrier": "carrier-1"},
}


OWN_CASES = [
    (Role.CUSTOMER, {}),
    (Role.CUSTOMER, {"customer_ref": ""}),
    (Role.CUSTOMER, {"customer_ref": CUSTOMER}),
    (Role.MERCHANT, {}),
    (Role.MERCHANT, {"merchant_id": ""}),
    (Role.MERCHANT, {"merchant_id": "m-1"}),
    (Role.LOGISTICS, {}),  # the proto has no carrier field: logistics names no owner
]


@pytest.mark.parametrize(("role", "owner"), OWN_CASES)
async def test_list_orders_is_the_callers_own(role: Role, owner: dict[str, str]) -> None:
    rig, context = make_rig(), ctx(token(role))
    reply = await call(rig, "ListOrders", orders_pb2.ListOrdersRequest(**owner), context)
    assert context.code is None, context.details
    assert _listed(rig) == [{**OWN_FILTER[role], "cursor": None}]
    expected = {Role.CUSTOMER: ["ord-mine"], Role.MERCHANT: ["ord-mine"]}
    assert [o.id for o in reply.orders] == expected.get(role, ["ord-guest"])


@pytest.mark.parametrize(
    ("role", "owner"),
    [
        (Role.CUSTOMER, {"customer_ref": OTHER_CUSTOMER}),
        (Role.CUSTOMER, {"merchant_id": "m-1"}),
        (Role.CUSTOMER, {"merchant_id": ""}),
        (Role.MERCHANT, {"merchant_id": "m-2"}),
        (Role.MERCHANT, {"customer_ref": CUSTOMER}),
        (Role.LOGISTICS, {"customer_ref": CUSTOMER}),
        (Role.LOGISTICS, {"merchant_id": "carrier-1"}),
        (Role.LOGISTICS, {"merchant_id": ""}),
    ],
)
async def test_list_orders_of_another_owner_is_forbidden(role: Role, owner: dict[str, str]) -> None:
    rig, context = make_rig(), ctx(token(role))
    reply = await call(rig, "ListOrders", orders_pb2.ListOrdersRequest(**owner), context)
    assert context.code is grpc.StatusCode.PERMISSION_DENIED
    assert context.feira_code == "forbidden"
    assert list(reply.orders) == []
    assert not rig.ran


@pytest.mark.parametrize(
    "owner",
    [{"customer_ref": OTHER_CUSTOMER}, {"merchant_id": "m-2"}],
    ids=["customer", "merchant"],
)
async def test_an_admin_lists_any_owner(owner: dict[str, str]) -> None:
    rig, context = make_rig(), ctx(token(Role.ADMIN))
    reply = await call(rig, "ListOrders", orders_pb2.ListOrdersRequest(**owner, limit=5), context)
    assert context.code is None
    assert _listed(rig) == [{**owner, "cursor": None, "limit": 5}]
    assert "ord-other" in [o.id for o in reply.orders]


@pytest.mark.parametrize("owner", [{}, {"customer_ref": ""}, {"merchant_id": ""}])
async def test_an_admin_must_name_an_owner(owner: dict[str, str]) -> None:
    rig, context = make_rig(), ctx(token(Role.ADMIN))
    await call(rig, "ListOrders", orders_pb2.ListOrdersRequest(**owner), context)
    assert context.code is grpc.StatusCode.INVALID_ARGUMENT
    assert not rig.ran


@pytest.mark.parametrize(
    ("role", "subject", "expected"),
    [
        (Role.CUSTOMER, CUSTOMER, ["ord-mine"]),
        (Role.CUSTOMER, GUEST_CART, []),
        (Role.MERCHANT, "m-2", ["ord-other", "ord-guest"]),
        (Role.LOGISTICS, "carrier-2", ["ord-other"]),
    ],
)
async def test_a_listed_page_holds_only_readable_orders(
    role: Role, subject: str, expected: list[str]
) -> None:
    # Even a store that answered too much: the object-level rule filters the page.
    rig, context = make_rig(leaky=True), ctx(token(role, subject=subject))
    reply = await call(rig, "ListOrders", orders_pb2.ListOrdersRequest(), context)
    assert context.code is None
    assert [o.id for o in reply.orders] == expected


async def test_merchants_and_carriers_see_only_their_part_of_an_order() -> None:
    lines = [
        OrderLine(SKU, "p-1", "m-1", 2, 900, 1000),
        OrderLine("SKU-2", "p-2", "m-2", 1, 500, 500),
    ]
    shared = replace(
        Order.create("ord-shared", CUSTOMER, "EUR", lines, T0),
        shipment=Shipment("carrier-1", "T-shared"),
    )
    views: dict[Role, Any] = {}
    for role, subject in (
        (Role.MERCHANT, "m-1"),
        (Role.LOGISTICS, "carrier-1"),
        (Role.ADMIN, "ops-1"),
    ):
        rig, context = make_rig(), ctx(token(role, subject=subject))
        rig.orders.orders["ord-shared"] = shared
        reply = await call(
            rig, "GetOrder", orders_pb2.GetOrderRequest(order_id="ord-shared"), context
        )
        assert context.code is None, context.details
        views[role] = reply.order
    merchant = views[Role.MERCHANT]
    assert [line.merchant_id for line in merchant.lines] == ["m-1"]
    assert (merchant.subtotal, merchant.total, merchant.discount) == (2000, 1800, 200)
    assert merchant.customer_ref == ""
    assert not merchant.HasField("payment")
    carrier = views[Role.LOGISTICS]
    assert list(carrier.lines) == []
    assert carrier.customer_ref == ""
    assert carrier.shipment.tracking_number == "T-shared"
    admin = views[Role.ADMIN]
    assert len(admin.lines) == 2
    assert admin.customer_ref == CUSTOMER
