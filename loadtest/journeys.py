"""The locust user classes: who visits Feira and what they do.

* :class:`WebShopper` - a visit on the web site: home page or a category listing, often a
  search, one to three product pages, and for some an add to cart, a look at the cart, a
  checkout and a few polls of the order. Most visitors leave before checkout.
* :class:`MobileShopper` - the mobile app: search, the compact product screen, a cart the
  app keeps across visits (add, change a quantity, remove a line). It does not check out.
* :class:`Merchant` - a merchant's back office: its product list, price changes, restocks,
  product edits and new products (created, priced, stocked, published, later archived).
* :class:`FlashBuyer` - a flash sale: many buyers, one hot SKU, one unit each. Once it is
  sold out, checkout answers ``409 insufficient_stock``: the expected outcome, counted as a
  success and reported on a row of its own, ``[flash] /v1/checkout sold out (409)``.

Every request sends ``X-Api-Key: $FEIRA_LOADTEST_API_KEY`` when it is set. Any other
answer that is not 2xx is a failure named ``<status> <problem code>`` (for example
``409 cart_frozen``, ``429 rate_limited``), so locust's failure table groups them by cause.
Think times are real seconds multiplied by ``--think-scale`` (``FEIRA_LOADTEST_THINK_SCALE``,
default 1); with ``FEIRA_LOADTEST_SEED`` set every user's choices are reproducible.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from locust import FastHttpUser, User, task
from locust.env import Environment

from loadtest.catalog import Catalog, Product, api_headers, pick, shared_catalog
from loadtest.names import FLASH_SOLD_OUT_NAME

log = logging.getLogger("feira.loadtest")

THINK_SCALE_ENV = "FEIRA_LOADTEST_THINK_SCALE"
SEED_ENV = "FEIRA_LOADTEST_SEED"
MERCHANT_KEY_ENV = "FEIRA_LOADTEST_MERCHANT_KEY"
MERCHANT_TOKEN_ENV = "FEIRA_LOADTEST_MERCHANT_TOKEN"
CURRENCY_ENV = "FEIRA_LOADTEST_CURRENCY"
PAYMENT_TOKEN = "tok_approve"
SOLD_OUT = "insufficient_stock"
# Order states a shopper stops polling at: the order processor has taken it on.
SETTLED = frozenset({"paid", "fulfilling", "shipped", "delivered", "cancelled", "refunded"})
MOBILE_CART_MAX_LINES = 10
MERCHANT_LIVE_PRODUCTS = 5
# Refresh a shared merchant token this long before it expires.
TOKEN_MARGIN_S = 30.0

_JSON = {"Accept": "application/json"}
_user_numbers = itertools.count()


# --------------------------------------------------------------------------- settings


def think_scale(environment: Environment | None) -> float:
    options = environment.parsed_options if environment is not None else None
    value = getattr(options, "think_scale", None)
    if value is None:
        value = os.environ.get(THINK_SCALE_ENV, "1")
    scale = float(value)
    if scale < 0:
        raise ValueError(f"think scale must be >= 0, got {scale}")
    return scale


def scaled_between(low: float, high: float) -> Callable[[User], float]:
    """``between(low, high)`` times the think scale, drawn from the user's own stream."""

    def wait(user: User) -> float:
        rng = getattr(user, "rng", random)
        return float(rng.uniform(low, high)) * think_scale(user.environment)

    return wait


def user_rng(environment: Environment | None) -> random.Random:
    options = environment.parsed_options if environment is not None else None
    seed = getattr(options, "seed", None)
    if seed is None and os.environ.get(SEED_ENV, "").strip():
        seed = int(os.environ[SEED_ENV])
    if seed is None:
        return random.Random()
    return random.Random(int(seed) * 1_000_003 + next(_user_numbers))


def merchant_credentials() -> bool:
    return bool(
        os.environ.get(MERCHANT_TOKEN_ENV, "").strip()
        or os.environ.get(MERCHANT_KEY_ENV, "").strip()
    )


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any  # parsed JSON, or None
    ok: bool  # counted as a success

    def get(self, key: str, default: Any = None) -> Any:
        return self.body.get(key, default) if isinstance(self.body, dict) else default


def problem_code(status: int, body: Any, error: BaseException | None = None) -> str:
    """The stable name a failure is grouped under: the problem ``code``, else a fallback."""
    if status == 0:
        return f"connection_error {type(error).__name__ if error else ''}".rstrip()
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return str(body["code"])
    return "no_problem_code"


def _parse(content: bytes | None) -> Any:
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return None


class FeiraUser(FastHttpUser):
    """What every Feira user shares: the catalog, its random stream, checked requests."""

    abstract = True
    wait_time = scaled_between(1, 5)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.rng = user_rng(environment)
        self.headers = {**_JSON, **api_headers()}
        self.catalog: Catalog | None = None

    def on_start(self) -> None:
        assert self.host is not None
        self.catalog = shared_catalog(self.host)

    @property
    def shop(self) -> Catalog:
        assert self.catalog is not None, "on_start loads the catalog"
        return self.catalog

    def think(self, low: float, high: float) -> None:
        """A pause while the person reads; gevent-patched, so other users run meanwhile."""
        pause = self.rng.uniform(low, high) * think_scale(self.environment)
        if pause > 0:
            time.sleep(pause)

    def call(
        self,
        method: str,
        path: str,
        name: str,
        *,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: Iterable[int] = (200,),
        sold_out_ok: bool = False,
    ) -> Reply:
        """One request. ``expect`` statuses are successes; with ``sold_out_ok`` a ``409
        insufficient_stock`` is a success renamed to :data:`FLASH_SOLD_OUT_NAME`; anything
        else is a failure named ``<status> <code>``."""
        sent = {**self.headers, **(headers or {})}
        data: str | None = None
        if form is not None:
            data = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        with self.client.request(
            method,
            path,
            name=name,
            data=data,
            json=json_body,
            headers=sent,
            catch_response=True,
        ) as response:
            status = int(response.status_code or 0)
            body = _parse(response.content)
            code = problem_code(status, body, getattr(response, "error", None))
            if status in tuple(expect):
                response.success()
                return Reply(status, body, True)
            if sold_out_ok and status == 409 and code == SOLD_OUT:
                response.request_meta["name"] = FLASH_SOLD_OUT_NAME
                response.success()
                return Reply(status, body, True)
            response.failure(f"{status} {code}")
            return Reply(status, body, False)

    # --- steps shared by the journeys ----------------------------------------------------

    def new_cart(self, prefix: str = "") -> str | None:
        reply = self.call("POST", "/v1/carts", f"{prefix}/v1/carts", expect=(201, 200))
        cart_id = reply.get("id")
        return cart_id if reply.ok and isinstance(cart_id, str) else None

    def add_line(self, cart_id: str, sku: str, quantity: int = 1, prefix: str = "") -> Reply:
        return self.call(
            "POST",
            f"/v1/carts/{cart_id}/items",
            f"{prefix}/v1/carts/[id]/items",
            json_body={"sku": sku, "quantity": quantity},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )

    def checkout(self, cart_id: str, *, prefix: str = "", sold_out_ok: bool = False) -> Reply:
        return self.call(
            "POST",
            "/v1/checkout",
            f"{prefix}/v1/checkout",
            json_body={"cart_id": cart_id, "payment_token": PAYMENT_TOKEN},
            headers={"Idempotency-Key": f"lt-{uuid.uuid4().hex}"},
            expect=(202,),
            sold_out_ok=sold_out_ok,
        )


def in_stock(stock: Any, skus: Iterable[str], hot: str) -> list[str]:
    """The SKUs a product page shows as available (never the flash-sale SKU)."""
    if not isinstance(stock, dict):
        return []
    return [s for s in skus if s != hot and isinstance(stock.get(s), int) and stock[s] > 0]


# --------------------------------------------------------------------------- shoppers


class WebShopper(FeiraUser):
    """One visit per task run; the funnel's shares are class attributes."""

    weight = 55
    wait_time = scaled_between(5, 15)  # between visits
    search_share = 0.6
    add_share = 0.35  # of visitors who saw a product
    second_item_share = 0.3
    checkout_share = 0.45  # of carts: the rest are abandoned
    max_order_polls = 3

    @task
    def visit(self) -> None:
        products = self.shop.shopping_products()
        candidates: list[str] = []
        # Land on the home page, or on a category listing.
        if self.shop.categories and self.rng.random() < 0.5:
            category = self.rng.choice(self.shop.categories)
            listing = self.call(
                "GET",
                f"/v1/products?category={quote(category)}&limit=20",
                "/v1/products?category=[c]",
            )
        else:
            listing = self.call("GET", "/v1/products?limit=20", "/v1/products (home)")
        if not listing.ok:
            return
        candidates = [i["id"] for i in listing.get("items", []) if isinstance(i, dict)]
        self.think(1, 4)
        if self.rng.random() < self.search_share:
            query = self.shop.query(self.rng)
            found = self.call("GET", f"/v1/search?{urlencode({'q': query})}&limit=20", "/v1/search")
            if not found.ok:
                return
            hits = [i["id"] for i in found.get("items", []) if isinstance(i, dict)]
            candidates = hits or candidates
            self.think(2, 5)
        hot = self.shop.flash_product
        candidates = [c for c in candidates if hot is None or c != hot.id]
        if not candidates:
            candidates = [pick(self.rng, products).id]
        cart_id: str | None = None
        added = 0
        for _ in range(self.rng.randint(1, 3)):
            product_id = self.rng.choice(candidates)
            page = self.call("GET", f"/bff/web/product/{product_id}", "/bff/web/product/[id]")
            if not page.ok:
                return
            self.think(3, 8)
            wants = self.rng.random() < (self.add_share if added == 0 else self.second_item_share)
            if not wants:
                continue
            product = page.get("product") or {}
            skus = [v.get("sku") for v in product.get("variants", []) if isinstance(v, dict)]
            available = in_stock(page.get("stock"), [s for s in skus if s], self.shop.flash_sku)
            if not available:
                continue  # sold out: the visitor moves on
            if cart_id is None:
                cart_id = self.new_cart()
                if cart_id is None:
                    return
            if not self.add_line(cart_id, self.rng.choice(available)).ok:
                return
            added += 1
            self.think(1, 3)
        if cart_id is None:
            return  # browsed and left: most visits end here
        cart = self.call("GET", f"/v1/carts/{cart_id}", "/v1/carts/[id]")
        if not cart.ok:
            return
        self.think(2, 6)
        if self.rng.random() >= self.checkout_share:
            return  # abandoned cart
        placed = self.checkout(cart_id)
        order_id = placed.get("order_id")
        if not placed.ok or not isinstance(order_id, str):
            return
        for _ in range(self.max_order_polls):
            self.think(1, 3)
            order = self.call("GET", f"/v1/orders/{order_id}", "/v1/orders/[id]")
            if not order.ok or order.get("status") in SETTLED:
                return


class MobileShopper(FeiraUser):
    """The app: search first, compact product screens, a cart kept across visits."""

    weight = 35
    wait_time = scaled_between(5, 20)
    add_share = 0.5
    edit_share = 0.2
    remove_share = 0.1

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.cart_id: str | None = None
        self.lines: list[str] = []

    @task
    def visit(self) -> None:
        query = self.shop.query(self.rng)
        found = self.call("GET", f"/v1/search?{urlencode({'q': query})}&limit=10", "/v1/search")
        if not found.ok:
            return
        hot = self.shop.flash_product
        hits = [
            i["id"]
            for i in found.get("items", [])
            if isinstance(i, dict)
            and isinstance(i.get("id"), str)
            and (hot is None or i["id"] != hot.id)
        ]
        if not hits:
            hits = [pick(self.rng, self.shop.shopping_products()).id]
        self.think(1, 4)
        for _ in range(self.rng.randint(1, 4)):
            screen = self.call(
                "GET",
                f"/bff/mobile/product/{self.rng.choice(hits)}",
                "/bff/mobile/product/[id]",
            )
            if not screen.ok:
                return
            self.think(2, 6)
            if self.rng.random() < self.add_share:
                variants = screen.get("v") or []
                available = [
                    v["s"]
                    for v in variants
                    if isinstance(v, dict)
                    and v.get("s") != self.shop.flash_sku
                    and isinstance(v.get("q"), int)
                    and v["q"] > 0
                ]
                if available and not self.add(self.rng.choice(available)):
                    return
        if self.cart_id is None:
            return
        cart = self.call("GET", f"/v1/carts/{self.cart_id}", "/v1/carts/[id]")
        if not cart.ok:
            return
        self.think(1, 4)
        if self.lines and self.rng.random() < self.edit_share:
            sku = self.rng.choice(self.lines)
            self.call(
                "PATCH",
                f"/v1/carts/{self.cart_id}/items/{sku}",
                "/v1/carts/[id]/items/[sku] (PATCH)",
                json_body={"quantity": self.rng.randint(1, 3)},
            )
        if self.lines and self.rng.random() < self.remove_share:
            sku = self.lines.pop(self.rng.randrange(len(self.lines)))
            self.call(
                "DELETE",
                f"/v1/carts/{self.cart_id}/items/{sku}",
                "/v1/carts/[id]/items/[sku] (DELETE)",
            )

    def add(self, sku: str) -> bool:
        if self.cart_id is None or len(self.lines) >= MOBILE_CART_MAX_LINES:
            # A new cart once the kept one is full, as after a purchase elsewhere.
            self.cart_id = self.new_cart()
            self.lines = []
            if self.cart_id is None:
                return False
        if not self.add_line(self.cart_id, sku).ok:
            return False
        if sku not in self.lines:
            self.lines.append(sku)
        return True


# --------------------------------------------------------------------------- flash sale


class FlashBuyer(FeiraUser):
    """Everyone wants the one hot SKU: a look at its page, a cart, a checkout."""

    weight = 10
    wait_time = scaled_between(0.5, 3)

    @task
    def buy(self) -> None:
        hot = self.shop.flash_sku
        product = self.shop.flash_product
        if product is not None:
            page = self.call("GET", f"/bff/web/product/{product.id}", "[flash] /bff/web/product")
            if not page.ok:
                return
            self.think(0.2, 1)
        cart_id = self.new_cart(prefix="[flash] ")
        if cart_id is None:
            return
        if not self.add_line(cart_id, hot, prefix="[flash] ").ok:
            return
        self.checkout(cart_id, prefix="[flash] ", sold_out_ok=True)


# --------------------------------------------------------------------------- merchants


class TokenSource:
    """A merchant access token shared by every merchant user of this process.

    ``FEIRA_LOADTEST_MERCHANT_TOKEN`` is used as is; otherwise the API key in
    ``FEIRA_LOADTEST_MERCHANT_KEY`` gets one from ``POST /oauth/token`` (client credentials),
    renewed shortly before it expires. One token per process, not per user: the token
    endpoint is rate limited per client IP (the ``auth`` plan, 1/s).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def bearer(self, user: FeiraUser) -> str | None:
        static = os.environ.get(MERCHANT_TOKEN_ENV, "").strip()
        if static:
            return static
        with self._lock:
            if self._token is not None and time.monotonic() < self._expires_at - TOKEN_MARGIN_S:
                return self._token
            key = os.environ.get(MERCHANT_KEY_ENV, "").strip()
            parts = key.split("_")
            if len(parts) < 3:
                log.error("%s is not an API key (fk_<id>_<secret>)", MERCHANT_KEY_ENV)
                return None
            reply = user.call(
                "POST",
                "/oauth/token",
                "/oauth/token",
                form={
                    "grant_type": "client_credentials",
                    "client_id": parts[1],
                    "client_secret": key,
                    "scope": "catalog:write",
                },
            )
            token = reply.get("access_token")
            if not reply.ok or not isinstance(token, str):
                return None
            self._token = token
            self._expires_at = time.monotonic() + float(reply.get("expires_in", 300))
            return token

    def forget(self) -> None:
        with self._lock:
            self._token = None


TOKENS = TokenSource()


class Merchant(FeiraUser):
    """A merchant's back office, on its own products only."""

    weight = 2
    wait_time = scaled_between(2, 6)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.own: list[Product] = []
        self.created: list[str] = []

    def auth(self) -> dict[str, str] | None:
        token = TOKENS.bearer(self)
        return None if token is None else {"Authorization": f"Bearer {token}"}

    def on_start(self) -> None:
        super().on_start()
        self.refresh_products()

    def refresh_products(self) -> None:
        auth = self.auth()
        if auth is None:
            return
        listed = self.call(
            "GET",
            "/v1/merchant/products?status=published&limit=100",
            "/v1/merchant/products",
            headers=auth,
        )
        hot = self.shop.flash_sku
        own: list[Product] = []
        for doc in listed.get("items", []):
            if not isinstance(doc, dict):
                continue
            skus = tuple(
                str(v["sku"])
                for v in doc.get("variants", [])
                if isinstance(v, dict) and v.get("sku") and v.get("sku") != hot
            )
            if skus and isinstance(doc.get("id"), str):
                own.append(Product(doc["id"], str(doc.get("title", "")), "", skus))
        # The flash-sale product stays as it is: its stock is the sale.
        flash = self.shop.flash_product
        self.own = [p for p in own if flash is None or p.id != flash.id]

    def some_sku(self) -> tuple[str, str] | None:
        if not self.own:
            return None
        product = pick(self.rng, self.own)
        return product.id, self.rng.choice(product.skus)

    @task(2)
    def list_products(self) -> None:
        auth = self.auth()
        if auth is not None:
            status = self.rng.choice(("published", "draft", "archived"))
            self.call(
                "GET",
                f"/v1/merchant/products?status={status}&limit=20",
                "/v1/merchant/products",
                headers=auth,
            )

    @task(4)
    def reprice(self) -> None:
        chosen, auth = self.some_sku(), self.auth()
        if chosen is None or auth is None:
            return
        sku = chosen[1]
        current = self.call("GET", f"/v1/prices/{sku}", "/v1/prices/[sku]")
        base = current.get("base") or {}
        amount = base.get("amount") if isinstance(base, dict) else None
        if not current.ok or not isinstance(amount, int):
            return
        self.think(1, 3)
        changed = int(amount * self.rng.uniform(0.9, 1.1)) // 100 * 100 + 99
        self.call(
            "PUT",
            f"/v1/merchant/prices/{sku}",
            "/v1/merchant/prices/[sku]",
            json_body={"amount": max(199, min(99_999, changed)), "currency": base["currency"]},
            headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
        )

    @task(3)
    def restock(self) -> None:
        chosen, auth = self.some_sku(), self.auth()
        if chosen is None or auth is None:
            return
        sku = chosen[1]
        level = self.call("GET", f"/v1/stock/{sku}", "/v1/stock/[sku]")
        on_hand = level.get("on_hand")
        if not level.ok or not isinstance(on_hand, int):
            return
        self.think(1, 3)
        # Only ever up: a restock never drops below what is reserved or sold.
        self.call(
            "PUT",
            f"/v1/merchant/inventory/{sku}",
            "/v1/merchant/inventory/[sku]",
            json_body={"on_hand": on_hand + self.rng.randint(5, 50)},
            headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
        )

    @task(2)
    def edit_product(self) -> None:
        chosen, auth = self.some_sku(), self.auth()
        if chosen is None or auth is None:
            return
        self.call(
            "PATCH",
            f"/v1/merchant/products/{chosen[0]}",
            "/v1/merchant/products/[id] (PATCH)",
            json_body={"description": f"Updated by the load test, revision {uuid.uuid4().hex}."},
            headers=auth,
        )

    @task(1)
    def new_product(self) -> None:
        """Create a draft, price and stock it, publish it; archive the oldest beyond a few."""
        auth = self.auth()
        if auth is None:
            return
        sku = f"LT-{uuid.uuid4().hex[:12].upper()}"
        made = self.call(
            "POST",
            "/v1/merchant/products",
            "/v1/merchant/products (POST)",
            json_body={
                "title": "Load Test Enamel Kettle",
                "brand": "Kestrel",
                "category": "home/kitchen/kettles",
                "description": "Created by the Feira load test.",
                "attributes": {"material": "enamelled steel"},
                "variants": [{"sku": sku, "options": {"color": "red"}, "images": []}],
            },
            headers=auth,
            expect=(201,),
        )
        product_id = made.get("id")
        if not made.ok or not isinstance(product_id, str):
            return
        self.think(1, 3)
        currency = os.environ.get(CURRENCY_ENV, "EUR")
        steps: list[tuple[str, str, str, dict[str, Any] | None]] = [
            (
                "PUT",
                f"/v1/merchant/prices/{sku}",
                "/v1/merchant/prices/[sku]",
                {"amount": 4999, "currency": currency},
            ),
            (
                "PUT",
                f"/v1/merchant/inventory/{sku}",
                "/v1/merchant/inventory/[sku]",
                {"on_hand": 25},
            ),
            (
                "POST",
                f"/v1/merchant/products/{product_id}/publish",
                "/v1/merchant/products/[id]/publish",
                None,
            ),
        ]
        for method, path, name, body in steps:
            if not self.call(method, path, name, json_body=body, headers=auth).ok:
                return
        self.created.append(product_id)
        if len(self.created) > MERCHANT_LIVE_PRODUCTS:
            oldest = self.created.pop(0)
            self.call(
                "POST",
                f"/v1/merchant/products/{oldest}/archive",
                "/v1/merchant/products/[id]/archive",
                headers=auth,
            )


USER_CLASSES: tuple[type[FeiraUser], ...] = (WebShopper, MobileShopper, Merchant, FlashBuyer)
