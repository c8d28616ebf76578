"""The conventional peer: Feira's hot endpoints as most teams would build them.

Stateless FastAPI workers (uvicorn, uvloop, httptools, one process per core), carts as one
Redis hash each (changed by Lua scripts: one atomic round trip per change), prices and
stock in PostgreSQL (asyncpg, prepared statements, ``SELECT ... FOR UPDATE`` in SKU order
at checkout), product documents from Feira's own SQLite catalog file (read only), and
in-process TTL caches with Feira's TTLs. Same paths, request bodies, response shapes and
problem+json codes as Feira for the routes it has. ``README.md`` here says what it does and
does not do, and why.

    FEIRA_PEER_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/feira_peer \\
    FEIRA_PEER_CATALOG=var/catalog.db .venv/bin/python -m benchmarks.peer --port 8100
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from redis.asyncio import BlockingConnectionPool, Redis
from starlette.exceptions import HTTPException as StarletteHTTPException

from benchmarks.peer.db import Sql, open_pool
from benchmarks.peer.settings import PeerSettings
from storage.sqlite.catalog import SqliteCatalogStore

PROBLEM_BASE = "https://feira.dev/problems/"
PROBLEM_JSON = "application/problem+json"
RECOMMENDATIONS = 4
CACHE_MAX_ENTRIES = 100_000
PAYMENT_PROVIDER = "sandbox"
TOK_APPROVE = "tok_approve"
TOK_DECLINE = "tok_decline"
_CART_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_KEY = re.compile(r"^[\x21-\x7e]{8,128}$")
_SKU = r"^[\x21-\x7e]+$"
TITLES = {
    400: "Bad request",
    402: "Payment required",
    404: "Not found",
    409: "Conflict",
    422: "Unprocessable content",
    500: "Internal server error",
}

V = TypeVar("V")

# Cart hash fields: _v version, _c created, _u updated, _f the checkout holding it (frozen),
# _o its order; every line is l:<sku> -> quantity. Small hashes are listpacks, which keep
# insertion order, so lines come back in the order they were added.
META_FIELDS = 3
ADD_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'cart_not_found'} end
if KEYS[2] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then
  return {'ok', redis.call('HGETALL', KEYS[1])}
end
if redis.call('HEXISTS', KEYS[1], '_f') == 1 then return {'cart_frozen'} end
local field = 'l:' .. ARGV[1]
local qty = tonumber(ARGV[2])
local current = tonumber(redis.call('HGET', KEYS[1], field) or '0')
if current == 0 and redis.call('HLEN', KEYS[1]) - 3 >= tonumber(ARGV[3]) then
  return {'cart_line_limit'}
end
if current + qty > tonumber(ARGV[4]) then return {'quantity_limit'} end
redis.call('HINCRBY', KEYS[1], field, qty)
redis.call('HINCRBY', KEYS[1], '_v', 1)
redis.call('HSET', KEYS[1], '_u', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], '1', 'EX', ARGV[7]) end
return {'ok', redis.call('HGETALL', KEYS[1])}
"""
FREEZE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'cart_not_found'} end
local holder = redis.call('HGET', KEYS[1], '_f')
if holder and holder ~= ARGV[1] then return {'cart_frozen'} end
redis.call('HSET', KEYS[1], '_f', ARGV[1])
return {'ok', redis.call('HGETALL', KEYS[1])}
"""
UNFREEZE_SCRIPT = """
if redis.call('HGET', KEYS[1], '_f') == ARGV[1] then redis.call('HDEL', KEYS[1], '_f') end
return 1
"""


class Refusal(Exception):
    """An answer other than success, as problem+json with a stable ``code``."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra

    def body(self, instance: str) -> dict[str, Any]:
        return {
            "type": PROBLEM_BASE + self.code,
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
            "instance": instance,
            **self.extra,
        }


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    media = PROBLEM_JSON if status >= 400 else "application/json"
    return Response(orjson.dumps(body), status, dict(headers or {}), media_type=media)


class TTLCache(Generic[V]):
    """A dict with expiry; cleared when full (simple and O(1), as teams usually write it)."""

    def __init__(self, ttl_s: float, max_entries: int = CACHE_MAX_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._data: dict[str, tuple[float, V]] = {}

    def get(self, key: str) -> V | None:
        hit = self._data.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: str, value: V) -> None:
        if len(self._data) >= self.max_entries:
            self._data.clear()
        self._data[key] = (time.monotonic() + self.ttl_s, value)

    async def read_through(
        self, keys: Sequence[str], fetch: Callable[[list[str]], Awaitable[dict[str, V]]]
    ) -> dict[str, V]:
        found: dict[str, V] = {}
        missing: list[str] = []
        for key in keys:
            value = self.get(key)
            if value is None:
                missing.append(key)
            else:
                found[key] = value
        if missing:
            fetched = await fetch(missing)
            for key, value in fetched.items():
                self.put(key, value)
                found[key] = value
        return found


@dataclass(frozen=True, slots=True)
class Price:
    sku: str
    amount: int
    currency: str
    product_id: str
    merchant_id: str


def money(amount: int, currency: str) -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


def price_json(p: Price) -> dict[str, Any]:
    return {
        "sku": p.sku,
        "base": money(p.amount, p.currency),
        "unit": money(p.amount, p.currency),
        "promotion_id": None,
    }


def priced_lines(
    lines: Sequence[tuple[str, int]], prices: Mapping[str, Price], currency: str
) -> tuple[list[dict[str, Any]], int]:
    """Feira's priced line shape (no promotions here: unit = base) and the total."""
    out: list[dict[str, Any]] = []
    total = 0
    for sku, quantity in lines:
        p = prices.get(sku)
        if p is None:
            raise Refusal(404, "price_not_found", f"no price for sku {sku!r}", sku=sku)
        line_total = p.amount * quantity
        total += line_total
        out.append(
            {
                "sku": sku,
                "quantity": quantity,
                "unit": money(p.amount, currency),
                "base": money(p.amount, currency),
                "line_total": money(line_total, currency),
                "discount": money(0, currency),
                "promotion_id": None,
            }
        )
    return out, total


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cart_fields(flat: Sequence[Any]) -> dict[str, str]:
    """HGETALL's flat [field, value, ...] list (from a script) as a dict."""
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def cart_lines(fields: Mapping[str, str]) -> list[tuple[str, int]]:
    return [(k[2:], int(v)) for k, v in fields.items() if k.startswith("l:")]


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str = Field(min_length=1, max_length=64, pattern=_SKU)
    quantity: StrictInt = Field(ge=1, le=1_000_000)


class MoneyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: StrictInt = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class CheckoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cart_id: str = Field(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    payment_token: str = Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")
    expected_total: MoneyIn | None = None


class ReserveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quantity: StrictInt = Field(1, ge=1, le=1_000)


class Peer:
    """One worker's connections and caches."""

    def __init__(self, settings: PeerSettings, pool: Any, redis: Redis) -> None:
        self.settings = settings
        self.sql = Sql.for_schema(settings.schema)
        self.pool = pool
        self.redis = redis
        self.catalog = SqliteCatalogStore(settings.catalog_path)
        self.prices: TTLCache[Price] = TTLCache(settings.price_cache_ttl_s)
        self.products: TTLCache[dict[str, Any]] = TTLCache(settings.product_cache_ttl_s)
        self.related: TTLCache[list[dict[str, Any]]] = TTLCache(settings.product_cache_ttl_s)
        self.page_stock: TTLCache[int] = TTLCache(settings.page_stock_ttl_s)
        self.add_script = redis.register_script(ADD_SCRIPT)
        self.freeze_script = redis.register_script(FREEZE_SCRIPT)
        self.unfreeze_script = redis.register_script(UNFREEZE_SCRIPT)

    @classmethod
    async def open(cls, settings: PeerSettings) -> Peer:
        pool = await open_pool(settings.postgres_url, settings.pg_pool_size, settings.schema)
        redis = Redis(
            connection_pool=BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=settings.redis_pool_size, timeout=5
            )
        )
        return cls(settings, pool, redis)

    async def close(self) -> None:
        await self.catalog.close()
        await self.redis.aclose()
        await self.pool.close()

    # --- keys ----------------------------------------------------------------------------

    def cart_key(self, cart_id: str) -> str:
        # The hash tag keeps a cart and its idempotency keys in one Redis Cluster slot.
        return f"{self.settings.redis_prefix}cart:{{{cart_id}}}"

    def idem_key(self, cart_id: str, key: str) -> str:
        return f"{self.settings.redis_prefix}cart:{{{cart_id}}}:idem:{key}"

    # --- reads ---------------------------------------------------------------------------

    async def _fetch_prices(self, skus: list[str]) -> dict[str, Price]:
        rows = await self.pool.fetch(self.sql.prices, skus)
        return {
            r["sku"]: Price(r["sku"], r["amount"], r["currency"], r["product_id"], r["merchant_id"])
            for r in rows
        }

    async def quotes(self, skus: Sequence[str], *, require: bool = False) -> dict[str, Price]:
        found = await self.prices.read_through(skus, self._fetch_prices)
        if require:
            for sku in skus:
                if sku not in found:
                    raise Refusal(404, "sku_not_found", f"unknown SKU {sku!r}", sku=sku)
        return found

    async def _fetch_stock(self, skus: list[str]) -> dict[str, int]:
        rows = await self.pool.fetch(self.sql.page_stock, skus)
        return {r["sku"]: int(r["available"]) for r in rows}

    async def product(self, product_id: str) -> dict[str, Any]:
        doc = self.products.get(product_id)
        if doc is None:
            found = await self.catalog.get_product(product_id)
            if found is None or found.get("status") != "published":
                raise Refusal(
                    404, "product_not_found", f"no product {product_id!r}", product_id=product_id
                )
            doc = dict(found)
            self.products.put(product_id, doc)
        return doc

    async def product_page(self, product_id: str) -> dict[str, Any]:
        doc = await self.product(product_id)
        skus = [v["sku"] for v in doc.get("variants", [])]
        quotes = await self.quotes(skus)
        stock = await self.page_stock.read_through(skus, self._fetch_stock) if skus else {}
        category = doc.get("category") or ""
        related = self.related.get(category)
        if related is None:
            listed, _ = await self.catalog.list_products(
                category=category or None, cursor=None, limit=RECOMMENDATIONS + 1
            )
            related = [dict(p) for p in listed]
            self.related.put(category, related)
        return {
            "product": doc,
            "prices": {s: price_json(q) for s, q in quotes.items()},
            "stock": {s: stock.get(s, 0) for s in skus},
            "recommendations": [p for p in related if p["id"] != product_id][:RECOMMENDATIONS],
        }

    # --- carts ---------------------------------------------------------------------------

    async def priced_cart(self, cart_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
        lines = cart_lines(fields)
        quotes = await self.quotes([sku for sku, _ in lines], require=True)
        currency = self.settings.currency
        priced, total = priced_lines(lines, quotes, currency)
        return {
            "id": cart_id,
            "customer_id": None,
            "version": int(fields.get("_v", 0)),
            "created_at": float(fields.get("_c", 0)),
            "updated_at": float(fields.get("_u", 0)),
            "lines": priced,
            "subtotal": money(total, currency),
            "discount_total": money(0, currency),
            "total": money(total, currency),
            "currency": currency,
            "item_count": sum(q for _, q in lines),
        }

    async def create_cart(self) -> dict[str, Any]:
        cart_id = secrets.token_urlsafe(18)
        now = repr(time.time())
        key = self.cart_key(cart_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"_v": "0", "_c": now, "_u": now})
            pipe.expire(key, self.settings.cart_ttl_s)
            await pipe.execute()
        return await self.priced_cart(cart_id, {"_v": "0", "_c": now, "_u": now})

    async def get_cart(self, cart_id: str) -> dict[str, Any]:
        check_cart_id(cart_id)
        raw = await self.redis.hgetall(self.cart_key(cart_id))
        if not raw:
            raise Refusal(404, "cart_not_found", f"no cart {cart_id!r}", cart_id=cart_id)
        return await self.priced_cart(cart_id, {_text(k): _text(v) for k, v in raw.items()})

    async def add_item(self, cart_id: str, item: ItemIn, key: str | None) -> dict[str, Any]:
        check_cart_id(cart_id)
        # Price first: an unknown SKU is refused before the cart changes.
        await self.quotes([item.sku], require=True)
        s = self.settings
        reply = await self.add_script(
            keys=[self.cart_key(cart_id), self.idem_key(cart_id, key) if key else ""],
            args=[
                item.sku,
                item.quantity,
                s.cart_max_lines,
                s.cart_max_quantity,
                repr(time.time()),
                s.cart_ttl_s,
                s.idempotency_ttl_s,
            ],
        )
        status = _text(reply[0])
        if status != "ok":
            raise cart_refusal(status, cart_id, item.sku)
        return await self.priced_cart(cart_id, cart_fields(reply[1]))

    # --- checkout ------------------------------------------------------------------------

    async def checkout(self, body: CheckoutIn, key: str) -> tuple[int, dict[str, Any], bool]:
        """(status, body, replayed)."""
        request_hash = hashlib.sha256(orjson.dumps(body.model_dump())).hexdigest()
        now = time.time()
        claimed = await self.pool.fetchval(self.sql.checkout_claim, key, request_hash, now)
        if claimed is None:
            row = await self.pool.fetchrow(self.sql.checkout_existing, key)
            if row is None or row["request_hash"] != request_hash:
                raise Refusal(
                    422, "idempotency_mismatch", "this Idempotency-Key was used with another body"
                )
            if row["status"] is None:
                raise Refusal(409, "checkout_in_progress", "the first request is still running")
            return int(row["status"]), dict(row["response"]), True
        try:
            status, answer = await self._checkout(body, key, now)
        except Refusal as refusal:
            answer = refusal.body("/v1/checkout")
            await self.pool.execute(self.sql.checkout_store, key, refusal.status, answer)
            raise
        return status, answer, False

    async def _checkout(self, body: CheckoutIn, key: str, now: float) -> tuple[int, dict[str, Any]]:
        if body.payment_token not in (TOK_APPROVE, TOK_DECLINE):
            raise Refusal(422, "payment_token_invalid", "unknown payment token")
        cart_key = self.cart_key(body.cart_id)
        frozen = await self.freeze_script(keys=[cart_key], args=[key])
        if _text(frozen[0]) != "ok":
            raise cart_refusal(_text(frozen[0]), body.cart_id, None)
        lines = cart_lines(cart_fields(frozen[1]))
        try:
            if not lines:
                raise Refusal(422, "cart_empty", "the cart has no lines")
            order = await self._reserve(body, lines, now)
        except Refusal:
            await self.unfreeze_script(keys=[cart_key], args=[key])
            raise
        return await self._pay(body, key, order, now)

    async def _reserve(
        self, body: CheckoutIn, lines: list[tuple[str, int]], now: float
    ) -> dict[str, Any]:
        """Lock the SKUs' stock rows (in SKU order), check, reserve, create the order."""
        order_id = "o-" + secrets.token_urlsafe(18)
        lines = sorted(lines)
        skus = [sku for sku, _ in lines]
        currency = self.settings.currency
        async with self.pool.acquire() as conn, conn.transaction():
            rows = {r["sku"]: r for r in await conn.fetch(self.sql.lock_lines, skus)}
            for sku, quantity in lines:
                row = rows.get(sku)
                if row is None:
                    raise Refusal(404, "sku_not_found", f"unknown SKU {sku!r}", sku=sku)
                if row["available"] < quantity:
                    raise Refusal(
                        409,
                        "insufficient_stock",
                        f"only {row['available']} of {sku!r} available",
                        sku=sku,
                        available=row["available"],
                        requested=quantity,
                    )
            prices = {
                s: Price(s, r["amount"], r["currency"], r["product_id"], r["merchant_id"])
                for s, r in rows.items()
            }
            priced, total = priced_lines(lines, prices, currency)
            if body.expected_total is not None and (
                body.expected_total.amount != total or body.expected_total.currency != currency
            ):
                raise Refusal(
                    409, "price_changed", "the total changed", total=money(total, currency)
                )
            for line in priced:
                price = prices[line["sku"]]
                line["product_id"] = price.product_id
                line["merchant_id"] = price.merchant_id
            order = {
                "id": order_id,
                "status": "pending_payment",
                "currency": currency,
                "lines": [order_line(line) for line in priced],
                "subtotal": money(total, currency),
                "discount": money(0, currency),
                "total": money(total, currency),
                "payment": None,
                "shipment": None,
                "expires_at": now + self.settings.reservation_ttl_s,
                "created_at": now,
                "updated_at": now,
            }
            await conn.execute(
                self.sql.place_order,
                skus,
                [q for _, q in lines],
                order_id,
                order["expires_at"],
                body.cart_id,
                order,
                now,
            )
        return order

    async def _pay(
        self, body: CheckoutIn, key: str, order: dict[str, Any], now: float
    ) -> tuple[int, dict[str, Any]]:
        """The sandbox's semantics: tok_approve authorizes, tok_decline is declined."""
        order_id = order["id"]
        payment_id = "pay_" + secrets.token_hex(12)
        updated = time.time()
        if body.payment_token == TOK_DECLINE:
            failed = {**order, "status": "payment_failed", "updated_at": updated}
            failed["payment"] = {
                "status": "declined",
                "provider": PAYMENT_PROVIDER,
                "payment_id": payment_id,
                "amount": order["total"],
            }
            refusal = Refusal(402, "payment_declined", "the card was declined", order_id=order_id)
            answer = refusal.body("/v1/checkout")
            await self.pool.execute(self.sql.decline, order_id, failed, updated, key, 402, answer)
            await self.unfreeze_script(keys=[self.cart_key(body.cart_id)], args=[key])
            return 402, answer
        placed = {**order, "status": "authorized", "updated_at": updated}
        placed["payment"] = {
            "status": "authorized",
            "provider": PAYMENT_PROVIDER,
            "payment_id": payment_id,
            "amount": order["total"],
        }
        answer = {"order_id": order_id, **placed}
        await self.pool.execute(
            self.sql.authorize, order_id, "authorized", placed, updated, key, 202, answer
        )
        # The cart stays frozen: it became this order.
        await self.redis.hset(self.cart_key(body.cart_id), "_o", order_id)
        return 202, answer

    async def get_order(self, order_id: str) -> dict[str, Any]:
        body = await self.pool.fetchval(self.sql.get_order, order_id)
        if body is None:
            raise Refusal(404, "order_not_found", f"no order {order_id!r}", order_id=order_id)
        return dict(body)

    async def flash_reserve(self, sku: str, quantity: int) -> dict[str, Any]:
        reservation_id = "r-" + secrets.token_urlsafe(12)
        expires_at = time.time() + self.settings.reservation_ttl_s
        taken = await self.pool.fetchval(
            self.sql.flash_reserve, sku, quantity, reservation_id, expires_at
        )
        if taken is None:
            if await self.pool.fetchval(self.sql.sku_exists, sku) is None:
                raise Refusal(404, "sku_not_found", f"unknown SKU {sku!r}", sku=sku)
            raise Refusal(409, "insufficient_stock", f"{sku!r} is sold out", sku=sku)
        return {
            "reservation_id": reservation_id,
            "sku": sku,
            "quantity": quantity,
            "expires_at": expires_at,
        }


ORDER_LINE_KEYS = (
    "sku",
    "product_id",
    "merchant_id",
    "quantity",
    "unit",
    "base",
    "line_total",
    "discount",
    "promotion_id",
)


def order_line(line: Mapping[str, Any]) -> dict[str, Any]:
    return {k: line[k] for k in ORDER_LINE_KEYS}


def check_cart_id(cart_id: str) -> None:
    if not _CART_ID.fullmatch(cart_id):
        raise Refusal(404, "cart_not_found", "no such cart", cart_id=cart_id[:64])


def cart_refusal(status: str, cart_id: str, sku: str | None) -> Refusal:
    if status == "cart_not_found":
        return Refusal(404, status, f"no cart {cart_id!r}", cart_id=cart_id)
    if status == "cart_frozen":
        return Refusal(409, status, "a checkout holds this cart", cart_id=cart_id)
    if status == "cart_line_limit":
        return Refusal(422, status, "the cart has the most lines it may have", sku=sku)
    if status == "quantity_limit":
        return Refusal(422, status, "that quantity is over the line limit", sku=sku)
    return Refusal(500, "internal", f"unexpected cart script answer {status!r}")


def peer_of(request: Request) -> Peer:
    peer: Peer = request.app.state.peer
    return peer


IdemHeader = Annotated[str | None, Header(alias="Idempotency-Key")]


def create_app(settings: PeerSettings, peer: Peer | None = None) -> FastAPI:
    """The app. Without ``peer`` it opens its connections in its lifespan (uvicorn)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = peer is None
        app.state.peer = peer if peer is not None else await Peer.open(settings)
        try:
            yield
        finally:
            if opened:
                await app.state.peer.close()

    app = FastAPI(title="Feira peer", lifespan=lifespan, docs_url=None, redoc_url=None)
    if peer is not None:
        app.state.peer = peer

    async def on_refusal(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refusal)
        return json_response(exc.body(request.url.path), exc.status)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")}
            for e in exc.errors()
        ]
        refusal = Refusal(422, "invalid_argument", "the request does not match the schema")
        return json_response({**refusal.body(request.url.path), "errors": errors}, 422)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        refusal = Refusal(exc.status_code, code, str(exc.detail))
        return json_response(refusal.body(request.url.path), exc.status_code)

    app.add_exception_handler(Refusal, on_refusal)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)

    @app.get("/ping")
    async def ping() -> Response:
        return json_response({"ok": True})

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        peer = peer_of(request)
        await peer.pool.fetchval("SELECT 1")
        await peer.redis.ping()
        return json_response({"postgres": "ok", "redis": "ok"})

    @app.get("/v1/products")
    async def list_products(
        request: Request,
        category: Annotated[str | None, Query(max_length=200)] = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> Response:
        # The benchmarks find their SKUs here; a listing is read from the catalog as is.
        try:
            items, next_cursor = await peer_of(request).catalog.list_products(
                category=category, cursor=cursor, limit=limit
            )
        except ValueError as error:
            raise Refusal(400, "invalid_argument", str(error)) from error
        return json_response({"items": items, "next_cursor": next_cursor})

    @app.get("/v1/products/{product_id}")
    async def get_product(request: Request, product_id: str) -> Response:
        return json_response(await peer_of(request).product(product_id))

    @app.get("/bff/web/product/{product_id}")
    async def product_page(request: Request, product_id: str) -> Response:
        return json_response(await peer_of(request).product_page(product_id))

    @app.post("/v1/carts")
    async def create_cart(request: Request) -> Response:
        cart = await peer_of(request).create_cart()
        return json_response(cart, 201, {"Location": f"/v1/carts/{cart['id']}"})

    @app.get("/v1/carts/{cart_id}")
    async def get_cart(request: Request, cart_id: str) -> Response:
        return json_response(await peer_of(request).get_cart(cart_id))

    @app.post("/v1/carts/{cart_id}/items")
    async def add_item(
        request: Request, cart_id: str, item: ItemIn, key: IdemHeader = None
    ) -> Response:
        if key is not None and not _KEY.fullmatch(key):
            raise Refusal(400, "invalid_argument", "Idempotency-Key must be 8-128 visible chars")
        return json_response(await peer_of(request).add_item(cart_id, item, key))

    @app.post("/v1/checkout")
    async def checkout(request: Request, body: CheckoutIn, key: IdemHeader = None) -> Response:
        if key is None:
            raise Refusal(400, "idempotency_key_required", "send an Idempotency-Key header")
        if not _KEY.fullmatch(key):
            raise Refusal(400, "invalid_argument", "Idempotency-Key must be 8-128 visible chars")
        status, answer, replayed = await peer_of(request).checkout(body, key)
        headers = {"Cache-Control": "no-store"}
        if status == 202:
            headers["Location"] = f"/v1/orders/{answer['order_id']}"
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return json_response(answer, status, headers)

    @app.get("/v1/orders/{order_id}")
    async def get_order(request: Request, order_id: str) -> Response:
        order = await peer_of(request).get_order(order_id)
        return json_response(order, headers={"Cache-Control": "no-store"})

    @app.post("/v1/stock/{sku}/reservations")
    async def flash_reserve(request: Request, sku: str, body: ReserveIn | None = None) -> Response:
        quantity = body.quantity if body is not None else 1
        return json_response(await peer_of(request).flash_reserve(sku, quantity), 201)

    return app


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory benchmarks.peer.app:app_from_env``."""
    return create_app(PeerSettings.from_env())
