"""The FastAPI application: routers, error mapping, OpenAPI at /docs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.types import ASGIApp

from actors.merchant import ChangeHook, MerchantCatalog, invalidating
from api import problems
from api.access import VERIFIED_CACHE_SIZE, AccessControl
from api.card_guard import CardDataGuard
from api.fastpath import FastPath
from api.graphql import graphql_router
from api.openapi import install_openapi
from api.rate_limiting import KeyLookup, Limiter, RateLimit, RateLimitSettings
from api.request_context import RequestContext
from api.request_metrics import RequestMetrics, RequestSink
from api.routes import (
    api_keys,
    bff,
    carts,
    catalog,
    health,
    identity,
    merchant,
    reservations,
    search,
)
from api.routes import checkout as checkout_routes
from api.routes.orders_ops import OrdersOps
from api.routes.orders_ops import router as orders_ops_router
from api.security_headers import SecurityHeaders
from api.waf import Waf, WafSettings

if TYPE_CHECKING:
    from actors.checkout import CheckoutService
    from actors.identity.accounts import IdentityService
    from actors.identity.tokens import TokenService
    from actors.shop import Shop
    from api.routes.health import ReadyCheck


@dataclass(frozen=True)
class Edge:
    """The security edge in front of every route. ``tokens`` verifies bearer tokens
    (None: only anonymous callers), ``identity`` serves accounts, the OAuth2 endpoints
    and API keys; ``limiter`` with ``rate_limits`` turns rate limiting on."""

    tokens: TokenService | None = None
    identity: IdentityService | None = None
    waf: WafSettings = field(default_factory=WafSettings)
    limiter: Limiter | None = None
    rate_limits: RateLimitSettings | None = None
    key_lookup: KeyLookup | None = None
    token_cache_size: int = VERIFIED_CACHE_SIZE  # verified access tokens kept per replica


def create_api(
    shop: Shop,
    ready_check: ReadyCheck,
    *,
    edge: Edge | None = None,
    fast_path: bool = True,
    on_change: ChangeHook | None = None,
    graphiql: bool = False,
    orders_ops: OrdersOps | None = None,
    checkout: CheckoutService | None = None,
    request_metrics: RequestSink | None = None,
    echo_request_id: bool = True,
) -> ASGIApp:
    """The HTTP app; ``fast_path`` puts the lean router for hot routes in front of FastAPI.

    ``on_change`` is told of every merchant change after this replica's caches dropped it
    (to tell the others). ``graphiql`` serves the GraphiQL IDE on GET /graphql. Without
    ``orders_ops``, ``checkout`` or ``edge.identity`` their routes answer 404
    ``feature_disabled``. ``request_metrics`` is told of every request answered (route
    template, method, status, problem code, seconds). ``echo_request_id=False`` leaves
    the answer's ``X-Request-Id`` to Ray Serve, which sets it on every answer itself.
    """
    edge = edge or Edge()
    app = create_fastapi(shop, ready_check, graphiql=graphiql)
    app.state.tokens = edge.tokens
    app.state.identity = edge.identity
    app.state.orders_ops = orders_ops  # logistics, payment webhooks, merchant orders
    app.state.checkout = checkout  # POST /v1/checkout, GET /v1/orders/{id}
    if edge.rate_limits is not None:
        app.state.plan_names = frozenset(edge.rate_limits.plans)
    hook = invalidating(shop, on_change) if on_change else invalidating(shop)
    app.state.merchant = MerchantCatalog(shop.catalog, shop.shards, shop.currency, hook)
    # Outermost first: the request id (so every answer and log line, refusals included,
    # carries it); the request metrics (so they time and count every answer); security
    # headers on every answer; the card guard before anything reads or logs a body; the
    # rate limit before any work is spent; the WAF before a route sees hostile input; the
    # route table before any handler (fast path included).
    inner: ASGIApp = FastPath(app, shop) if fast_path else app
    inner = AccessControl(inner, edge.tokens, token_cache_size=edge.token_cache_size)
    inner = Waf(inner, edge.waf)
    if edge.limiter is not None and edge.rate_limits is not None:
        inner = RateLimit(inner, edge.limiter, edge.rate_limits, edge.key_lookup)
    outer: ASGIApp = SecurityHeaders(CardDataGuard(inner))
    if request_metrics is not None:
        outer = RequestMetrics(outer, request_metrics)
    return RequestContext(outer, echo=echo_request_id)


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
    routers = [health.router, catalog.router, search.router, carts.router, bff.router]
    routers += [reservations.router, merchant.router, identity.router, api_keys.router]
    for router in routers:
        app.include_router(router)
    app.include_router(graphql_router(shop, graphiql=graphiql), prefix="/graphql")
    app.include_router(orders_ops_router)
    app.include_router(checkout_routes.router)
    install_openapi(app)
    return app
