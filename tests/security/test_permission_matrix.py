"""Every route x every caller, generated from the route table in ``api/access.py``.

A caller the table does not allow gets 401 (anonymous) or 403 (a token of another role,
or without the route's scope) and never reaches the handler; an allowed caller is never
refused for who it is. A route served by the app but missing from the table (or a table
row that serves nothing) fails :func:`test_the_table_lists_exactly_the_served_routes`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from actors.identity.tokens import Role
from api import fastpath
from api.access import ANONYMOUS, CALLERS, ROUTES, TABLE, Rule
from tests.security.conftest import Site
from tests.tokens import bearer, role_scopes

SUBJECTS = {"merchant": "m-001", "logistics": "dhl", "admin": "root"}
PLACEHOLDERS = {
    "cart_id": "c" * 24,
    "sku": "SKU-NOPE",
    "product_id": "p-nope",
    "order_id": "o-nope",
    "key_id": "nokey",
    "reservation_id": "res-nope-1",
    "provider": "sandbox",
}


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PLACEHOLDERS[m[1]], path)


def rule_id(rule: Rule) -> str:
    return f"{rule.method} {rule.path}"


async def headers_for(
    site: Site, caller: str, scopes: tuple[str, ...] | None = None
) -> dict[str, str]:
    if caller == ANONYMOUS:
        return {}
    if caller == Role.CUSTOMER.value and scopes is None:
        return {"Authorization": f"Bearer {await site.customer('matrix@example.com')}"}
    subject = SUBJECTS.get(caller, "cus_matrixcustomer000000")
    return bearer(subject, caller, scopes)


async def call(site: Site, rule: Rule, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    kwargs: dict[str, object] = {"headers": headers}
    if rule.method in {"POST", "PUT", "PATCH"}:
        kwargs["json"] = {}
    reply = await site.client.request(rule.method, concrete(rule.path), **kwargs)  # type: ignore[arg-type]
    is_problem = reply.headers.get("content-type", "").startswith("application/problem+json")
    return reply.status_code, (reply.json() if is_problem else {})


@pytest.mark.parametrize("rule", ROUTES, ids=rule_id)
async def test_every_caller_on_every_route(site: Site, rule: Rule) -> None:
    for caller in CALLERS:
        status, problem = await call(site, rule, await headers_for(site, caller))
        if caller in rule.allow:
            assert status not in (401, 403), (caller, status, problem)
        elif caller == ANONYMOUS:
            assert (status, problem.get("code")) == (401, "unauthenticated"), caller
        else:
            assert (status, problem.get("code")) == (403, "forbidden"), (caller, problem)


SCOPED = [
    (rule, role) for rule in ROUTES if rule.scope for role in sorted(rule.allow - {ANONYMOUS})
]


@pytest.mark.parametrize(
    ("rule", "role"), SCOPED, ids=lambda v: v if isinstance(v, str) else rule_id(v)
)
async def test_a_token_without_the_route_scope_is_forbidden(
    site: Site, rule: Rule, role: str
) -> None:
    assert rule.scope is not None
    narrowed = tuple(s for s in role_scopes(role) if s != rule.scope)
    status, problem = await call(site, rule, await headers_for(site, role, narrowed))
    assert (status, problem.get("code"), problem.get("scope")) == (403, "forbidden", rule.scope)


def fastapi_of(app: ASGIApp) -> FastAPI:
    while not isinstance(app, FastAPI):
        app = app.app  # type: ignore[attr-defined]
    return app


def served_routes(routes: Iterable[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every HTTP route, through included routers. FastAPI 0.165
    includes routers lazily (``_IncludedRouter``: its router and the include prefix);
    older versions copy the routes, which the first branch sees."""
    served: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, APIRoute | Route) and route.methods:
            served |= {(m, prefix + route.path) for m in route.methods if m != "HEAD"}
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = route.include_context  # type: ignore[attr-defined]
            served |= served_routes(inner.routes, prefix + context.prefix)
    return served


async def test_the_table_lists_exactly_the_served_routes(site: Site) -> None:
    app = fastapi_of(site.client._transport.app)  # type: ignore[attr-defined]
    served = served_routes(app.routes)
    table = {(r.method, r.path) for r in ROUTES}
    assert served - table == set(), "served routes missing from api/access.py ROUTES"
    assert table - served == set(), "ROUTES rows that no route serves"
    # The fast path answers only routes the table (and FastAPI) also know.
    for method, length, fixed, _ in fastpath._ROUTES:
        path = "/".join(fixed.get(i, "x") if i else "" for i in range(length))
        rule, _ = TABLE.find(method, path)
        assert rule is not None, (method, path)


async def test_unknown_routes_are_refused_before_any_handler(site: Site) -> None:
    missing = await site.client.get("/v1/nowhere")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = await site.client.delete("/v1/products")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET"
