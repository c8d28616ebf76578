"""Schemathesis over Feira's OpenAPI document, in-process (ASGI, no network, no Ray).

Every operation of ``/openapi.json`` is fuzzed against the whole HTTP stack (security
headers, card guard, WAF, access control, fast path, FastAPI) with every feature on
(``tests/security/conftest.py``, plus the embedded search index), as a caller the route
table allows: anonymous when it may, else the first allowed role's token (a real
signed-up customer for the customer routes). Every answer must not be a 5xx, and must
match its documented status codes, content type, body schema and required headers.

Random ids mostly find nothing (404), so the site is seeded with real objects (carts with
lines, an order in fulfilment, API keys) and a generated case now and then has a path
parameter or body member swapped for one of them (the ``flatmap_*`` hooks): Hypothesis
draws the swap, so it shrinks and replays like the rest of the case.

The app is built inside Schemathesis's own event loop, on the first ASGI lifespan startup:
the in-process runtime's routers and stores belong to the loop that made them. Schemathesis
ends the lifespan after every test (and starts one on the next request), so the site
outlives lifespans and is closed by the fixture's last one.

Runtime: about 40-50 s on 2 cores (46 operations; MAX_EXAMPLES fuzzed cases each, plus the
examples and coverage phases).
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from actors.index_sync import FilePosition, IndexSync
from actors.order_processor import OrderProcessor, choose_carrier
from api.access import ANONYMOUS, TABLE, Rule
from api.app import create_fastapi
from api.problems import PROBLEM_JSON
from api.routes.merchant import NDJSON_TYPES
from storage.search.tantivy_index import TantivySearchIndex
from tests.security.conftest import CARRIERS, Site, build_site
from tests.tokens import bearer

if TYPE_CHECKING:
    import httpx

    from actors.shop import Shop

CHECKS = [
    schemathesis.checks.not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
]
# Per operation, for the fuzzing phase; the examples and coverage phases add their own.
MAX_EXAMPLES = 50
MERCHANT = "m-001"  # owns seeded products
ADMIN = "root"
CUSTOMER_EMAIL = "fuzz@example.com"
CUSTOMER_PASSWORD = "correct horse battery"
# Body members worth a real value now and then, and the known-value list each draws from.
BODY_KNOWN = {
    "sku": "sku",
    "cart_id": "cart_id",
    "guest_cart_id": "cart_id",
    "email": "email",
    "password": "password",
    "payment_token": "payment_token",
}


# The merchant import's NDJSON is text on the wire.
schemathesis.serializer.alias(list(NDJSON_TYPES), "text/plain")


async def _no_ready_check() -> dict[str, Any]:
    return {}


# The document the routes generate; the app under test must serve exactly this one
# (test_the_site_serves_the_fuzzed_document). Loaded from the bare FastAPI app so that
# collection does not build a whole site.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_fastapi(cast("Shop", None), _no_ready_check)
)


@dataclass
class Known:
    """Real values on the seeded site, by path parameter or body member name."""

    values: dict[str, list[str]] = field(default_factory=dict)
    customer_token: str = ""
    carrier: str = ""

    def add(self, name: str, *values: str) -> None:
        self.values.setdefault(name, []).extend(values)


KNOWN = Known()  # filled when the site starts; read while cases are generated


class SiteApp:
    """The site, built and seeded on lifespan startup in the loop that serves it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.known = KNOWN
        KNOWN.values.clear()  # one site per module run
        self.site: Site | None = None
        self.inner: ASGIApp | None = None
        self.index: TantivySearchIndex | None = None
        self.closing = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert self.inner is not None, "the site is built on lifespan startup"
        await self.inner(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # Schemathesis ends every ASGI lifespan after each test and starts one again on the
        # next request; the site outlives them all, closed only when the module is done.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.site is None:
                    self.site = await build_site(self.data_dir)
                    transport = self.site.client._transport
                    self.inner = cast("ASGIApp", getattr(transport, "app"))  # noqa: B009
                    await self._with_search(self.site)
                    await self._seed(self.site)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.closing:
                    await self._close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _close(self) -> None:
        if self.index is not None:
            await self.index.close()
        if self.site is not None:
            await self.site.client.aclose()
            await self.site.env.run.stores.close()
        self.site = self.inner = self.index = None

    async def _with_search(self, site: Site) -> None:
        """Search too (the site has none): the embedded index, holding the catalog."""
        stores = site.env.run.stores
        self.index = TantivySearchIndex(
            str(self.data_dir / "search"), writer_heap_bytes=15_000_000, search_threads=1
        )
        position = FilePosition(self.data_dir / "search.position")
        await IndexSync(stores.catalog, stores.prices, self.index, position).rebuild()
        site.env.run.shop.search_index = self.index

    async def _seed(self, site: Site) -> None:
        client, known = site.client, self.known
        token = await site.customer(CUSTOMER_EMAIL, CUSTOMER_PASSWORD)
        customer = {"Authorization": f"Bearer {token}"}
        merchant = bearer(MERCHANT, "merchant")
        known.customer_token = token
        known.add("email", CUSTOMER_EMAIL)
        known.add("password", CUSTOMER_PASSWORD)
        known.add("payment_token", "tok_approve", "tok_decline")
        known.add("provider", "sandbox")
        own = await _ok(client.get("/v1/merchant/products?limit=4", headers=merchant))
        public = await _ok(client.get("/v1/products?limit=4"))
        for product in own["items"] + public["items"]:
            known.add("product_id", product["id"])
            known.add("sku", *(v["sku"] for v in product["variants"]))
        sku = own["items"][0]["variants"][0]["sku"]
        await _ok(
            client.put(f"/v1/merchant/inventory/{sku}", json={"on_hand": 10**6}, headers=merchant)
        )
        # Three carts with a line: a guest's that stays open, a guest's and the customer's
        # that are checked out. The customer's order is taken to fulfilment (paid, shipment
        # made) by the order processor; the guest's order is readable by anyone.
        carts = []
        for headers in ({}, {}, customer):
            cart = await _ok(client.post("/v1/carts", headers=headers), 201)
            line = {"sku": sku, "quantity": 1}
            await _ok(client.post(f"/v1/carts/{cart['id']}/items", json=line, headers=headers))
            carts.append((cart["id"], headers))
        known.add("cart_id", *(cart_id for cart_id, _ in carts))
        for number, (cart_id, headers) in enumerate(carts[1:]):
            placed = await _ok(
                client.post(
                    "/v1/checkout",
                    json={"cart_id": cart_id, "payment_token": "tok_approve"},
                    headers={**headers, "Idempotency-Key": f"schemathesis-seed-{number}"},
                ),
                202,
            )
            known.add("order_id", placed["order_id"])
        order_id = known.values["order_id"][-1]
        run = site.env.run
        processor = OrderProcessor(
            run.stores.orders, run.router, site.env.provider, carriers=CARRIERS
        )
        for _ in range(10):
            if await processor.run_once() == 0:
                break
        known.carrier = choose_carrier(order_id, CARRIERS)
        # API keys: a merchant's own, and an administrator's public application key.
        made = await _ok(
            client.post("/v1/merchant/api-keys", json={"label": "seed"}, headers=merchant), 201
        )
        admin = bearer(ADMIN, "admin")
        public_key = await _ok(
            client.post("/v1/admin/api-keys", json={"label": "app"}, headers=admin), 201
        )
        known.add("key_id", made["key_id"], public_key["key_id"])


async def _ok(reply: Awaitable[httpx.Response], status: int = 200) -> Any:
    response = await reply
    assert response.status_code == status, response.text
    return response.json()


class Callers:
    """The running site, a client for it, and a token for each role."""

    def __init__(self, app: SiteApp, client: schemathesis_asgi.ASGIClient) -> None:
        self.app = app
        self.client = client
        self.known = app.known

    def headers(self, rule: Rule) -> dict[str, str]:
        """Anonymous when the route allows it, else the first allowed role's token."""
        if ANONYMOUS in rule.allow:
            return {}
        role = sorted(rule.allow)[0]
        if role == "customer":
            return {"Authorization": f"Bearer {self.known.customer_token}"}
        subject = {"merchant": MERCHANT, "logistics": self.known.carrier, "admin": ADMIN}[role]
        return bearer(subject, role)


@pytest.fixture(scope="module")
def callers() -> Iterator[Callers]:
    with tempfile.TemporaryDirectory(prefix="feira-schemathesis-") as data_dir:
        app = SiteApp(Path(data_dir))
        asgi_app: Any = app
        try:
            with schemathesis_asgi.get_client(asgi_app) as client:  # starts the lifespan
                yield Callers(app, client)
        finally:
            app.closing = True
            with schemathesis_asgi.get_client(asgi_app):  # a lifespan to end, if none runs
                pass
            schemathesis_asgi.shutdown_lifespans()


def rule_of(case: schemathesis.Case[Any]) -> Rule:
    rule, _ = TABLE.find(case.operation.method.upper(), case.operation.path)
    assert rule is not None, f"{case.operation.label} is not in api.access.ROUTES"
    return rule


def test_the_site_serves_the_fuzzed_document(callers: Callers) -> None:
    served = callers.client.get("/openapi.json")
    assert served.status_code == 200
    assert orjson.loads(served.content) == schema.raw_schema


def test_the_seeded_objects_and_callers_are_real(callers: Callers) -> None:
    """The callers this suite fuzzes as are let in, and the seeded objects exist: a wrong
    token or id would turn every case into a 401, 403 or 404, and the fuzzing into a
    test of the refusal alone."""
    known = callers.known.values
    checked = {
        ("GET", "/v1/me"): 200,
        ("GET", "/v1/merchant/products"): 200,
        ("GET", "/v1/admin/api-keys"): 200,
        ("GET", f"/v1/carts/{known['cart_id'][0]}"): 200,
        ("GET", f"/v1/merchant/products/{known['product_id'][0]}"): 200,
        ("GET", f"/v1/orders/{known['order_id'][0]}"): 200,
        ("GET", "/v1/search?q=kestrel"): 200,
    }
    for (method, path), status in checked.items():
        rule, _ = TABLE.find(method, path.partition("?")[0])
        assert rule is not None
        reply = callers.client.request(method, path, headers=callers.headers(rule))
        assert reply.status_code == status, (path, reply.text)
    shipments = callers.client.get(
        "/v1/logistics/shipments?include_done=true",
        headers=bearer(callers.known.carrier, "logistics"),
    )
    assert known["order_id"][-1] in [s["order_id"] for s in shipments.json()["items"]]


@schema.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any]
) -> st.SearchStrategy[dict[str, Any]]:
    if not path_parameters:
        return st.just(path_parameters)
    return _now_and_then_known(path_parameters, {name: name for name in path_parameters})


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    if not isinstance(body, dict):
        return st.just(body)
    return _now_and_then_known(body, BODY_KNOWN)


def _now_and_then_known(
    container: dict[str, Any], aliases: dict[str, str]
) -> st.SearchStrategy[dict[str, Any]]:
    """``container`` with each member that has known values swapped for one of them, or
    not (even odds): Hypothesis draws which, so a failure shrinks and replays like any
    other."""
    members: dict[str, st.SearchStrategy[Any]] = {}
    for name, value in container.items():
        values = KNOWN.values.get(aliases.get(name, ""))
        members[name] = st.just(value) | st.sampled_from(values) if values else st.just(value)
    return st.fixed_dictionaries(members)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api(case: schemathesis.Case[Any], callers: Callers) -> None:
    response = case.call_and_validate(
        app=callers.app, headers=callers.headers(rule_of(case)), checks=CHECKS
    )
    # Every error is problem+json, except GraphQL's own transport errors.
    if response.status_code >= 400 and case.path != "/graphql":
        assert response.headers["content-type"][0].startswith(PROBLEM_JSON), response.text
