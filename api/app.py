"""The FastAPI application: routers, error mapping, OpenAPI at /docs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.types import ASGIApp

from api import problems
from api.fastpath import FastPath
from api.routes import bff, carts, catalog, health

if TYPE_CHECKING:
    from actors.shop import Shop
    from api.routes.health import ReadyCheck


def create_api(shop: Shop, ready_check: ReadyCheck, *, fast_path: bool = True) -> ASGIApp:
    """The HTTP app; ``fast_path`` puts the lean router for hot routes in front of FastAPI."""
    app = create_fastapi(shop, ready_check)
    return FastPath(app, shop) if fast_path else app


def create_fastapi(shop: Shop, ready_check: ReadyCheck) -> FastAPI:
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
    for router in (health.router, catalog.router, carts.router, bff.router):
        app.include_router(router)
    return app
