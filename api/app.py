"""The FastAPI application: routers, error mapping, OpenAPI at /docs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.types import ASGIApp

from actors.merchant import ChangeHook, MerchantCatalog, invalidating
from api import problems
from api.card_guard import CardDataGuard
from api.fastpath import FastPath
from api.graphql import graphql_router
from api.merchant_auth import MerchantTokens
from api.routes import bff, carts, catalog, health, merchant, search
from api.routes import checkout as checkout_routes
from api.routes.orders_ops import OrdersOps
from api.routes.orders_ops import router as orders_ops_router
from api.security_headers import SecurityHeaders

if TYPE_CHECKING:
    from actors.checkout import CheckoutService
    from actors.shop import Shop
    from api.routes.health import ReadyCheck


def create_api(
    shop: Shop,
    ready_check: ReadyCheck,
    *,
    fast_path: bool = True,
    merchant_tokens: MerchantTokens | None = None,
    on_change: ChangeHook | None = None,
    graphiql: bool = False,
    orders_ops: OrdersOps | None = None,
    checkout: CheckoutService | None = None,
) -> ASGIApp:
    """The HTTP app; ``fast_path`` puts the lean router for hot routes in front of FastAPI.

    Without ``merchant_tokens`` the merchant API answers 401. ``on_change`` is told of
    every merchant change after this replica's caches dropped it (to tell the others).
    ``graphiql`` serves the GraphiQL IDE on GET /graphql. Without ``orders_ops`` or
    ``checkout`` their routes answer 404 ``feature_disabled``.
    """
    app = create_fastapi(shop, ready_check, graphiql=graphiql)
    app.state.merchant_tokens = merchant_tokens
    app.state.orders_ops = orders_ops  # logistics, payment webhooks, merchant orders
    app.state.checkout = checkout  # POST /v1/checkout, GET /v1/orders/{id}
    hook = invalidating(shop, on_change) if on_change else invalidating(shop)
    app.state.merchant = MerchantCatalog(shop.catalog, shop.shards, shop.currency, hook)
    # The card guard sees a request before any route, the fast path or a log line; the
    # security headers go on every answer, the guard's refusals included.
    return SecurityHeaders(CardDataGuard(FastPath(app, shop) if fast_path else app))


def create_fastapi(shop: Shop, ready_check: ReadyCheck, *, graphiql: bool = False) -> FastAPI:
    app = FastAPI(
        title="Feira",
        version="0.1.0",
        summary="Actor-based commerce runtime: catalog, carts, prices and stock.",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.shop = shop
    app.state.ready_check = ready_check
    problems.install(app)
    routers = (health.router, catalog.router, search.router, carts.router, bff.router)
    for router in (*routers, merchant.router):
        app.include_router(router)
    app.include_router(graphql_router(shop, graphiql=graphiql), prefix="/graphql")
    app.include_router(orders_ops_router)
    app.include_router(checkout_routes.router)
    return app
