"""A lean ASGI front for the hottest routes; every other request goes on to FastAPI.

FastAPI's dependency solving, middleware stack and response-model machinery cost more CPU
per request than a whole coalesced cart operation (measured: a raw ASGI answer holds
~1,200 req/s through Serve where the same answer through FastAPI fails at 800). The routes
here are the same ones FastAPI documents in OpenAPI, validated with the same pydantic
types and answered with the same problem+json errors; the test suites run every case
against both paths so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from actors.domain.errors import DomainError, ErrorCode
from api import problems
from api.access import principal_of, route_path
from api.models import CartId, CartItemAdd, IdempotencyKey, ProductId, ReservationIn, Sku
from api.routes.bff import compact_product_page
from api.routes.catalog import stock_out

if TYPE_CHECKING:
    from actors.shop import Shop

MAX_BODY_BYTES = 64 * 1024
_JSON = "application/json"
_PONG = orjson.dumps({"ok": True})

_cart_id: TypeAdapter[str] = TypeAdapter(CartId)
_sku: TypeAdapter[str] = TypeAdapter(Sku)
_product_id: TypeAdapter[str] = TypeAdapter(ProductId)
_idem_key: TypeAdapter[str] = TypeAdapter(IdempotencyKey)

Handler = Callable[["Shop", list[str], Scope, bytes], Awaitable[Response]]


class _BodyTooLarge(Exception):
    pass


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status, media_type=_JSON)


def _check(adapter: TypeAdapter[str], value: str, where: str) -> str:
    try:
        return adapter.validate_python(value)
    except ValidationError as error:
        raise _Invalid(error, where) from error


class _Invalid(Exception):
    def __init__(self, error: ValidationError, where: str) -> None:
        self.errors = [{**e, "loc": (where, *e.get("loc", ()))} for e in error.errors()]


def _idempotency_op_id(scope: Scope, cart_id: str) -> str | None:
    for name, value in scope["headers"]:
        if name == b"idempotency-key":
            key = _check(_idem_key, value.decode("latin-1"), "header")
            return f"{cart_id}:{key}"
    return None


async def _add_item(shop: Shop, parts: list[str], scope: Scope, body: bytes) -> Response:
    cart_id = _check(_cart_id, parts[3], "path")
    try:
        item = CartItemAdd.model_validate_json(body or b"null")
    except ValidationError as error:
        raise _Invalid(error, "body") from error
    op_id = _idempotency_op_id(scope, cart_id)
    caller = principal_of(scope).customer
    return _json(await shop.add_item(cart_id, item.sku, item.quantity, op_id, caller))


async def _get_cart(shop: Shop, parts: list[str], scope: Scope, body: bytes) -> Response:
    cart_id = _check(_cart_id, parts[3], "path")
    return _json(await shop.get_cart(cart_id, principal_of(scope).customer))


async def _get_stock(shop: Shop, parts: list[str], scope: Scope, body: bytes) -> Response:
    sku = _check(_sku, parts[3], "path")
    levels = await shop.stock([sku])
    if sku not in levels:
        raise DomainError(ErrorCode.SKU_NOT_FOUND, f"unknown SKU {sku!r}", sku=sku)
    return _json(stock_out(sku, levels[sku]))


async def _reserve(shop: Shop, parts: list[str], scope: Scope, body: bytes) -> Response:
    sku = _check(_sku, parts[3], "path")
    try:
        hold = ReservationIn.model_validate_json(body or b"null")
    except ValidationError as error:
        raise _Invalid(error, "body") from error
    reply = await shop.reserve_stock(sku, hold.quantity, hold.reservation_id, hold.ttl_s)
    return _json(reply, 201)


async def _ping(shop: Shop, parts: list[str], scope: Scope, body: bytes) -> Response:
    return Response(_PONG, 200, media_type=_JSON)


async def _get_price(shop: Shop, parts: list[str], scope: Scope, body: bytes) -> Response:
    return _json(await shop.price(_check(_sku, parts[3], "path")))


async def _get_product(shop: Shop, parts: list[str], scope: Scope, body: bytes) -> Response:
    return _json(await shop.product(_check(_product_id, parts[3], "path")))


async def _web_product(shop: Shop, parts: list[str], scope: Scope, body: bytes) -> Response:
    return _json(await shop.product_page(_check(_product_id, parts[4], "path")))


async def _mobile_product(shop: Shop, parts: list[str], scope: Scope, body: bytes) -> Response:
    page = await shop.product_page(_check(_product_id, parts[4], "path"))
    return _json(compact_product_page(page))


# (method, number of path segments, fixed segments by position) -> handler
_ROUTES: list[tuple[str, int, dict[int, str], Handler]] = [
    ("GET", 2, {1: "ping"}, _ping),
    ("POST", 5, {1: "v1", 2: "carts", 4: "items"}, _add_item),
    ("POST", 5, {1: "v1", 2: "stock", 4: "reservations"}, _reserve),
    ("GET", 4, {1: "v1", 2: "carts"}, _get_cart),
    ("GET", 4, {1: "v1", 2: "stock"}, _get_stock),
    ("GET", 4, {1: "v1", 2: "prices"}, _get_price),
    ("GET", 4, {1: "v1", 2: "products"}, _get_product),
    ("GET", 5, {1: "bff", 2: "web", 3: "product"}, _web_product),
    ("GET", 5, {1: "bff", 2: "mobile", 3: "product"}, _mobile_product),
]


def match(method: str, path: str) -> tuple[Handler, list[str]] | None:
    parts = path.split("/")
    for route_method, length, fixed, handler in _ROUTES:
        if (
            method == route_method
            and len(parts) == length
            and all(parts[i] == v for i, v in fixed.items())
            and all(parts[1:])
        ):
            return handler, parts
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class FastPath:
    def __init__(self, app: ASGIApp, shop: Shop) -> None:
        self.app = app
        self.shop = shop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        found = match(scope["method"], path)
        if found is None:
            await self.app(scope, receive, send)
            return
        handler, parts = found
        response = await self._answer(handler, parts, scope, receive, path)
        await response(scope, receive, send)

    async def _answer(
        self, handler: Handler, parts: list[str], scope: Scope, receive: Receive, path: str
    ) -> Response:
        try:
            body = await _read_body(receive) if scope["method"] == "POST" else b""
            return await handler(self.shop, parts, scope, body)
        except DomainError as error:
            return problems.domain_problem(error, path)
        except _Invalid as error:
            return problems.validation_problem(error.errors, path)
        except _BodyTooLarge:
            return problems.problem(
                413, "payload_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes", path
            )
        except Exception as error:  # noqa: BLE001 - the last resort answer is a 500 problem
            return problems.unexpected_problem(path, error)
