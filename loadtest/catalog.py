"""What the load test browses and buys: products and SKUs of the target's catalog.

Fetched once per locust process from ``GET /v1/products`` (a few pages, published products
only) when the first user starts. If the target cannot be read, the suite falls back to the
demo catalog's ids (``storage.demo``: ``p-0000000``, ``SKU-0000000-1``, ...), generated
locally when Feira's code is importable and synthesised from the id pattern otherwise, so a
worker machine needs only locust.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("feira.loadtest")

API_KEY_ENV = "FEIRA_LOADTEST_API_KEY"
FLASH_SKU_ENV = "FEIRA_LOADTEST_FLASH_SKU"
MAX_PRODUCTS_ENV = "FEIRA_LOADTEST_CATALOG_SIZE"
DEFAULT_MAX_PRODUCTS = 500
PAGE_SIZE = 100
FETCH_TIMEOUT_S = 10.0
DEMO_FALLBACK_PRODUCTS = 200
# Words in titles that make poor queries on their own.
_STOP_WORDS = frozenset({"with", "from", "and", "the", "set", "pack", "one", "size"})


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    title: str
    category: str
    skus: tuple[str, ...]
    merchant_id: str | None = None


@dataclass
class Catalog:
    """Products to visit, by id, and the words and categories to search and list by."""

    products: list[Product]
    source: str  # "api" or "demo"
    flash_sku: str
    by_sku: dict[str, Product] = field(init=False)
    categories: list[str] = field(init=False)
    words: list[str] = field(init=False)

    def __post_init__(self) -> None:
        if not self.products:
            raise ValueError("a catalog needs at least one product")
        self.by_sku = {sku: p for p in self.products for sku in p.skus}
        self.categories = sorted({p.category.split("/", 1)[0] for p in self.products if p.category})
        words: set[str] = set()
        for p in self.products:
            for word in p.title.split():
                w = word.strip(".,'\"()").lower()
                if len(w) >= 4 and w.isalpha() and w not in _STOP_WORDS:
                    words.add(w)
        self.words = sorted(words) or ["shirt"]

    @property
    def flash_product(self) -> Product | None:
        return self.by_sku.get(self.flash_sku)

    def shopping_products(self) -> list[Product]:
        """Everything but the flash-sale product: shoppers must not buy the hot SKU out
        from under the flash sale (or hit its sell-out themselves)."""
        hot = self.flash_product
        return [p for p in self.products if p is not hot] or self.products

    def query(self, rng: random.Random) -> str:
        """A search query: one or two catalog words, now and then with a typo."""
        words = [rng.choice(self.words)]
        if rng.random() < 0.3:
            words.append(rng.choice(self.words))
        if rng.random() < 0.15:
            w = words[0]
            if len(w) >= 5:
                cut = rng.randrange(1, len(w) - 1)
                words[0] = w[:cut] + w[cut + 1 :]  # one deleted letter: still a hit
        return " ".join(words)


def _product_of(doc: Mapping[str, Any]) -> Product | None:
    pid = doc.get("id")
    variants = doc.get("variants") or []
    skus = tuple(str(v["sku"]) for v in variants if isinstance(v, Mapping) and v.get("sku"))
    if not isinstance(pid, str) or not skus:
        return None
    merchant = doc.get("merchant_id")
    return Product(
        pid,
        str(doc.get("title") or ""),
        str(doc.get("category") or ""),
        skus,
        merchant if isinstance(merchant, str) else None,
    )


def fetch_products(
    host: str, headers: Mapping[str, str], max_products: int, timeout_s: float = FETCH_TIMEOUT_S
) -> list[Product]:
    """Published products from ``GET /v1/products``, following cursors; raises on any error."""
    found: list[Product] = []
    cursor: str | None = None
    while len(found) < max_products:
        query = {"limit": str(min(PAGE_SIZE, max_products - len(found)))}
        if cursor:
            query["cursor"] = cursor
        url = f"{host.rstrip('/')}/v1/products?{urllib.parse.urlencode(query)}"
        request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            page = json.loads(reply.read())
        for doc in page.get("items", []):
            product = _product_of(doc)
            if product is not None:
                found.append(product)
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return found


def demo_products(count: int = DEMO_FALLBACK_PRODUCTS) -> list[Product]:
    """The demo catalog's published products (``storage.demo``, seed 7, as ``feira up``
    seeds them); without Feira's code, ids in the demo pattern, one SKU each."""
    try:
        from storage.demo import generate
    except ImportError:
        return [
            Product(f"p-{i:07d}", "demo product", "home", (f"SKU-{i:07d}-1",)) for i in range(count)
        ]
    products: list[Product] = []
    for item in generate(count):
        if item.product["status"] == "published":
            made = _product_of(item.product)
            if made is not None:
                products.append(made)
    return products


def api_headers() -> dict[str, str]:
    key = os.environ.get(API_KEY_ENV, "").strip()
    return {"X-Api-Key": key} if key else {}


def load_catalog(host: str, headers: Mapping[str, str] | None = None) -> Catalog:
    """The target's catalog, or the demo ids if it cannot be read (logged)."""
    wanted = int(os.environ.get(MAX_PRODUCTS_ENV, DEFAULT_MAX_PRODUCTS))
    source = "api"
    try:
        products = fetch_products(host, api_headers() if headers is None else headers, wanted)
    except (OSError, ValueError, urllib.error.URLError) as error:
        log.warning("cannot read %s/v1/products (%s); using the demo catalog ids", host, error)
        products = []
    if not products:
        source = "demo"
        products = demo_products()
    flash = os.environ.get(FLASH_SKU_ENV, "").strip() or products[0].skus[0]
    return Catalog(products, source, flash)


_lock = threading.Lock()  # gevent-patched under locust: a greenlet lock
_catalogs: dict[str, Catalog] = {}


def shared_catalog(host: str) -> Catalog:
    """One catalog per target per process, loaded by the first user that asks."""
    with _lock:
        found = _catalogs.get(host)
        if found is None:
            found = load_catalog(host)
            _catalogs[host] = found
            log.info(
                "catalog: %d products from %s; flash-sale SKU %s",
                len(found.products),
                found.source,
                found.flash_sku,
            )
        return found


def reset_shared_catalogs() -> None:
    with _lock:
        _catalogs.clear()


def pick(rng: random.Random, items: Sequence[Product]) -> Product:
    return items[rng.randrange(len(items))]
