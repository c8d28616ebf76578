"""What the API asks of the runtime, composed from shard calls, stores and replica caches.

No Ray here: the shards are reached through a :class:`ShardCaller`, which is the Ray
``ShardClient`` in a deployment and an in-process caller in unit tests.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

from actors.cache import TTLCache
from actors.commerce_metrics import NULL_METRICS, CommerceMetrics
from actors.domain.customers import CUSTOMER_ID_PREFIX
from actors.domain.errors import DomainError, ErrorCode
from actors.domain.money import Money
from actors.domain.pricing import Quote, price_lines
from actors.kinds import ShardKind
from storage.interfaces import CatalogStore, SearchIndex
from storage.records import ProductDoc, SearchQuery, SearchResult

MAX_SKUS_PER_LOOKUP = 100
RECOMMENDATIONS = 4

V = TypeVar("V")


class ShardCaller(Protocol):
    async def call(self, kind: ShardKind, key: str, op: str, *args: Any) -> Any: ...

    async def fanout(self, kind: ShardKind, keys: Sequence[str], op: str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class ShopLimits:
    price_cache_size: int = 100_000
    price_cache_ttl_s: float = 1.0
    product_cache_size: int = 20_000
    product_cache_ttl_s: float = 30.0
    # Availability shown on product pages only; carts and checkout always ask the shards.
    page_stock_ttl_s: float = 0.5


def new_cart_id() -> str:
    # 144 random bits: a cart id is a bearer secret for guest carts, so it must be unguessable.
    # Never the customer-id prefix: a guest order's customer_ref is its cart id, and an
    # order whose ref looks like a customer's is shown only to that customer.
    while True:
        cart_id = secrets.token_urlsafe(18)
        if not cart_id.startswith(CUSTOMER_ID_PREFIX):
            return cart_id


# Operation ids: a random per-process prefix and a counter are as unique as uuid4 and
# cost no system call per operation.
_OP_PREFIX = secrets.token_hex(8)
_op_counter = itertools.count()


def new_op_id() -> str:
    return f"{_OP_PREFIX}{next(_op_counter):x}"


def _scoped(op_id: str | None, caller: str | None) -> str:
    """A client-derived operation id, made the caller's own: the shard answers a repeated
    id from its log without running the operation (or its owner check) again, so another
    caller presenting the same id must get a different one."""
    if op_id is None:
        return new_op_id()
    return op_id if caller is None else f"{op_id}@{caller}"


class Shop:
    def __init__(
        self,
        shards: ShardCaller,
        catalog: CatalogStore,
        currency: str,
        limits: ShopLimits = ShopLimits(),
        search_index: SearchIndex | None = None,
        metrics: CommerceMetrics = NULL_METRICS,
    ) -> None:
        self.shards = shards
        self.metrics = metrics
        self.catalog = catalog
        self.search_index = search_index
        self.currency = currency
        self.prices: TTLCache[dict[str, Any]] = TTLCache(
            limits.price_cache_size, limits.price_cache_ttl_s
        )
        self.products: TTLCache[ProductDoc] = TTLCache(
            limits.product_cache_size, limits.product_cache_ttl_s
        )
        # Recommendations per category: the same few products for every page of a category.
        self.related: TTLCache[list[ProductDoc]] = TTLCache(
            limits.product_cache_size, limits.product_cache_ttl_s
        )
        self.page_stock: TTLCache[dict[str, int]] = TTLCache(
            limits.price_cache_size, limits.page_stock_ttl_s
        )
        # Bumped by every invalidation. A read that started before one must not put what it
        # read into a cache after it, or the stale value would come back for a whole TTL.
        self.generation = 0

    # --- carts ------------------------------------------------------------------------

    async def create_cart(self, customer_id: str | None = None) -> dict[str, Any]:
        cart_id = new_cart_id()
        snap = await self.shards.call(
            ShardKind.CART, cart_id, "create", new_op_id(), cart_id, customer_id
        )
        self.metrics.cart_created()  # a cart is a session (actors/commerce_metrics.py)
        return await self._priced(snap)

    # ``caller``: the signed-in customer's id, or None for a guest. A customer's cart
    # answers only its customer (the shard checks it before any change).

    async def get_cart(self, cart_id: str, caller: str | None = None) -> dict[str, Any]:
        return await self._priced(
            await self.shards.call(ShardKind.CART, cart_id, "get", cart_id, caller)
        )

    async def add_item(
        self,
        cart_id: str,
        sku: str,
        quantity: int,
        op_id: str | None = None,
        caller: str | None = None,
    ) -> dict[str, Any]:
        # Price first: an unknown SKU must be refused before the cart changes.
        await self.quotes([sku], require=True)
        op = _scoped(op_id, caller)
        snap = await self.shards.call(
            ShardKind.CART, cart_id, "add", op, cart_id, sku, quantity, caller
        )
        return await self._priced(snap)

    async def set_quantity(
        self,
        cart_id: str,
        sku: str,
        quantity: int,
        op_id: str | None = None,
        caller: str | None = None,
    ) -> dict[str, Any]:
        op = _scoped(op_id, caller)
        snap = await self.shards.call(
            ShardKind.CART, cart_id, "set_quantity", op, cart_id, sku, quantity, caller
        )
        return await self._priced(snap)

    async def remove_item(
        self, cart_id: str, sku: str, op_id: str | None = None, caller: str | None = None
    ) -> dict[str, Any]:
        snap = await self.shards.call(
            ShardKind.CART, cart_id, "remove", _scoped(op_id, caller), cart_id, sku, caller
        )
        return await self._priced(snap)

    async def merge_carts(
        self, guest_cart_id: str, customer_cart_id: str, caller: str | None = None
    ) -> dict[str, Any]:
        """Move a guest cart's lines into the customer's cart (at sign-in).

        The operation id is derived from both carts, so signing in twice, or a retry after
        a restart, merges once. The guest cart is left to expire. ``caller`` must be
        allowed to read the guest cart and to change the customer's.
        """
        if guest_cart_id == customer_cart_id:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "cannot merge a cart into itself")
        guest = await self.shards.call(ShardKind.CART, guest_cart_id, "get", guest_cart_id, caller)
        lines = [(line["sku"], line["quantity"]) for line in guest["lines"]]
        result = await self.shards.call(
            ShardKind.CART,
            customer_cart_id,
            "merge",
            _scoped(f"merge:{guest_cart_id}:{customer_cart_id}", caller),
            customer_cart_id,
            lines,
            caller,
        )
        return {**await self._priced(result["cart"]), "skipped": result["skipped"]}

    async def _priced(self, snap: dict[str, Any]) -> dict[str, Any]:
        lines = [(line["sku"], line["quantity"]) for line in snap["lines"]]
        quotes = await self.quotes([sku for sku, _ in lines], require=True)
        priced = price_lines(lines, {s: _quote(q) for s, q in quotes.items()}, self.currency)
        return {
            "id": snap["id"],
            "customer_id": snap["customer_id"],
            "version": snap["version"],
            "created_at": snap["created_at"],
            "updated_at": snap["updated_at"],
            **priced.to_json(),
        }

    # --- prices and stock -------------------------------------------------------------

    async def quotes(self, skus: Sequence[str], *, require: bool = False) -> dict[str, Any]:
        """Current quotes, from the replica cache when fresh (prices may lag by its TTL)."""
        quote = partial(self.shards.fanout, ShardKind.PRICING, op="quote")
        found = await self._read_through(self.prices, skus, quote)
        if require:
            for sku in skus:
                if sku not in found:
                    raise DomainError(ErrorCode.SKU_NOT_FOUND, f"unknown SKU {sku!r}", sku=sku)
        return found

    async def price(self, sku: str) -> dict[str, Any]:
        return _price_json((await self.quotes([sku], require=True))[sku])

    async def stock(self, skus: Sequence[str]) -> dict[str, dict[str, int]]:
        _check_sku_count(skus)
        return await self.shards.fanout(ShardKind.INVENTORY, list(skus), "stock")

    async def reserve_stock(
        self, sku: str, quantity: int, reservation_id: str | None, ttl_s: float | None
    ) -> dict[str, Any]:
        """Hold ``quantity`` of ``sku`` for an internal service (a queue-based flash sale,
        a point of sale). Checkout reserves on its own; this is for callers outside it.
        The op id follows from the request, so a retry is answered from the shard's
        journal, while the same id asking for another quantity reaches the domain and is
        refused; ``hold_`` ids never meet checkout's ``<order>:<sku>`` ones."""
        rid = reservation_id or f"hold_{secrets.token_urlsafe(12)}"
        reply: dict[str, Any] = await self.shards.call(
            ShardKind.INVENTORY,
            sku,
            "reserve",
            f"http:reserve:{rid}:{sku}:{quantity}",
            rid,
            sku,
            quantity,
            ttl_s,
        )
        return reply

    async def release_stock(self, sku: str, reservation_id: str) -> dict[str, Any]:
        reply: dict[str, Any] = await self.shards.call(
            ShardKind.INVENTORY,
            sku,
            "release",
            f"http:release:{reservation_id}",
            reservation_id,
            sku,
        )
        return reply

    async def _page_stock(self, skus: Sequence[str]) -> dict[str, dict[str, int]]:
        """Stock for display, up to ``page_stock_ttl_s`` old: a warm product page is then
        answered from memory alone."""
        return await self._read_through(self.page_stock, skus, self.stock)

    # --- catalog ----------------------------------------------------------------------

    async def product(self, product_id: str) -> ProductDoc:
        doc = self.products.get(product_id)
        if doc is None:
            generation = self.generation
            doc = await self.catalog.get_product(product_id)
            if doc is None or doc.get("status") != "published":
                raise DomainError(
                    ErrorCode.PRODUCT_NOT_FOUND, f"no product {product_id!r}", product_id=product_id
                )
            if generation == self.generation:
                self.products.put(product_id, doc)
        return doc

    async def published_products(self, product_ids: Sequence[str]) -> dict[str, ProductDoc]:
        """The published products among ``product_ids``, with one catalog call at most.

        Same visibility and caching as :meth:`product`; unknown, draft and archived
        products are simply absent.
        """
        return await self._read_through(
            self.products,
            product_ids,
            self.catalog.get_products,
            keep=lambda doc: doc.get("status") == "published",
        )

    async def _read_through(
        self,
        cache: TTLCache[V],
        keys: Sequence[str],
        fetch: Callable[[list[str]], Awaitable[dict[str, V]]],
        keep: Callable[[V], bool] | None = None,
    ) -> dict[str, V]:
        """Fresh cache entries, plus one ``fetch`` of the misses whose results (those
        ``keep`` accepts) are cached unless an invalidation happened meanwhile."""
        found, missing = cache.split(keys)
        if missing:
            generation = self.generation
            fetched = await fetch(missing)
            fresh = generation == self.generation
            for key, value in fetched.items():
                if keep is None or keep(value):
                    found[key] = value
                    if fresh:
                        cache.put(key, value)
        return found

    async def list_products(
        self, category: str | None, cursor: str | None, limit: int
    ) -> tuple[list[ProductDoc], str | None]:
        try:
            return await self.catalog.list_products(category=category, cursor=cursor, limit=limit)
        except ValueError as error:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, str(error)) from error

    async def product_page(self, product_id: str) -> dict[str, Any]:
        """Everything the product screen shows, in one call."""
        doc = await self.product(product_id)
        skus = [v["sku"] for v in doc.get("variants", [])]
        quotes = await self.quotes(skus)
        stock = await self._page_stock(skus) if skus else {}
        category = doc.get("category") or ""
        related = self.related.get(category)
        if related is None:
            generation = self.generation
            related, _ = await self.catalog.list_products(
                category=category or None, cursor=None, limit=RECOMMENDATIONS + 1
            )
            if generation == self.generation:
                self.related.put(category, related)
        return {
            "product": doc,
            "prices": {s: _price_json(q) for s, q in quotes.items()},
            "stock": {s: stock.get(s, {}).get("available", 0) for s in skus},
            "recommendations": [p for p in related if p["id"] != product_id][:RECOMMENDATIONS],
        }

    async def search(self, query: SearchQuery) -> SearchResult:
        if self.search_index is None:
            raise DomainError(
                ErrorCode.SEARCH_UNAVAILABLE, "search is not configured on this replica"
            )
        try:
            return await self.search_index.search(query)
        except ValueError as error:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, str(error)) from error

    # --- cache invalidation -------------------------------------------------------------

    def invalidate_products(self, product_ids: Sequence[str]) -> None:
        """A merchant changed these products: drop them, and every category's
        recommendations (a change may move a product in or out of any of them)."""
        self.generation += 1
        for product_id in product_ids:
            self.products.invalidate(product_id)
        self.related.clear()

    def invalidate_prices(self, skus: Sequence[str]) -> None:
        self.generation += 1
        for sku in skus:
            self.prices.invalidate(sku)

    def clear_caches(self) -> None:
        """For when invalidations may have been missed (a bus reconnect)."""
        self.generation += 1
        self.products.clear()
        self.related.clear()
        self.prices.clear()

    def caches(self) -> dict[str, TTLCache[Any]]:
        """This replica's read caches by name (the ``cache`` label of the cache metrics)."""
        return {
            "product": self.products,
            "price": self.prices,
            "page_stock": self.page_stock,
            "recommendations": self.related,
        }

    def cache_stats(self) -> dict[str, int]:
        """``<cache>_hits`` and ``<cache>_misses`` so far, for each of :meth:`caches`."""
        out: dict[str, int] = {}
        for name, cache in self.caches().items():
            out[f"{name}_hits"] = cache.hits
            out[f"{name}_misses"] = cache.misses
        return out


def _check_sku_count(skus: Sequence[str]) -> None:
    if not skus or len(skus) > MAX_SKUS_PER_LOOKUP:
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT, f"ask for 1 to {MAX_SKUS_PER_LOOKUP} SKUs at a time"
        )


def _quote(q: dict[str, Any]) -> Quote:
    currency = q["currency"]
    return Quote(
        sku=q["sku"],
        base=Money(q["base"], currency),
        unit=Money(q["unit"], currency),
        promotion_id=q["promotion_id"],
        category=q["category"],
    )


def _price_json(q: dict[str, Any]) -> dict[str, Any]:
    currency = q["currency"]
    return {
        "sku": q["sku"],
        "base": {"amount": q["base"], "currency": currency},
        "unit": {"amount": q["unit"], "currency": currency},
        "promotion_id": q["promotion_id"],
    }
