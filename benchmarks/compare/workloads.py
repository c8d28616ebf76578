"""What each journey sends, request by request, built the same for every system.

A journey here is the request-level shape of a locust journey (``loadtest/journeys.py``):
the open-loop driver sends one request per arrival, so a journey is a weighted mix of the
requests a shopper makes, with the state they need (carts, filled carts for checkout)
made before each step and not timed. Feira and the peer answer the same paths and bodies,
so one workload object serves both; only the headers differ (Feira's API key and, for
stock holds, an admin token).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

from benchmarks.cart_add import CartPlan, RequestFactory
from benchmarks.openloop import Request, schedule_count

JSON_HEADERS: Mapping[str, str] = {"Content-Type": "application/json"}

# Request kinds of the peak mix and their weights (percent): the funnel of a sale day
# (``loadtest`` peak profile) flattened to requests. Browsing dominates; about one request
# in thirty-three is a checkout.
PEAK_MIX: Mapping[str, int] = {
    "product_page": 40,
    "listing": 10,
    "cart_view": 12,
    "cart_add": 25,
    "new_cart": 10,
    "checkout": 3,
}
JOURNEYS = ("ping", "browse", "cart_add", "flash", "checkout", "peak")


class Builder(Protocol):
    """Makes the state a journey needs through the system's own API (not timed)."""

    async def new_carts(self, count: int) -> list[str]: ...

    async def filled_carts(self, count: int, skus: Sequence[str]) -> list[str]:
        """``count`` carts holding one unit of ``skus[i % len]`` each."""
        ...


@dataclass
class Catalog:
    """What the system sells, as the benchmark sees it."""

    product_ids: list[str]
    skus: list[str]  # SKUs with plenty of stock, for carts and checkouts
    hot_sku: str  # the flash sale's one SKU


def weighted_kinds(mix: Mapping[str, int], slots: int = 100) -> list[str]:
    """A deterministic, evenly interleaved cycle of request kinds in ``mix`` proportions.

    Largest-remainder placement: kind k appears ``slots * w_k / total`` times and its
    occurrences are spread out, so any window of a step sees close to the mix.
    """
    total = sum(mix.values())
    if total <= 0 or any(w < 0 for w in mix.values()):
        raise ValueError("weights must be non-negative and not all zero")
    events: list[tuple[float, str]] = []
    for kind, weight in mix.items():
        n = round(slots * weight / total)
        events.extend(((i + 0.5) / n, kind) for i in range(n))
    events.sort()
    return [kind for _, kind in events]


@dataclass
class Workload:
    """``make(seq)`` builds request ``seq``; ``prepare(rate, seconds)`` runs before a step."""

    name: str
    make: Callable[[int], Request]
    prepare: Callable[[float, float], Awaitable[None]] | None = None
    expected: frozenset[int] = field(default_factory=frozenset)


def ping(headers: Mapping[str, str]) -> Workload:
    request: Request = ("GET", "/ping", None, dict(headers))
    return Workload("ping", lambda seq: request)


def browse(catalog: Catalog, headers: Mapping[str, str]) -> Workload:
    """Product pages over the catalog, one listing in five: read-mostly traffic."""
    pages = [f"/bff/web/product/{quote(p, safe='')}" for p in catalog.product_ids]
    listing = "/v1/products?limit=20"
    h = dict(headers)

    def make(seq: int) -> Request:
        if seq % 5 == 4:
            return "GET", listing, None, h
        return "GET", pages[(seq * 7919) % len(pages)], None, h

    return Workload("browse", make)


class CartAdds:
    """Adds spread over carts made for each step, never past a line's limit.

    Every step gets carts of its own and counts its adds from zero: a step never finds
    lines an earlier step (or another journey) filled, so a refusal for a full line can
    only be the server's doing.
    """

    def __init__(self, builder: Builder, catalog: Catalog, headers: Mapping[str, str]) -> None:
        self.builder = builder
        self.catalog = catalog
        self.headers = {**headers, **JSON_HEADERS}
        self.factory: RequestFactory | None = None
        self.cart_ids: list[str] = []
        self.count = itertools.count()

    async def ensure(self, requests: int) -> None:
        """Fresh carts of 10 SKUs for ``requests`` adds of one unit (at most 90 a line)."""
        need = max(50, math.ceil(requests / (10 * 90)))
        self.cart_ids = await self.builder.new_carts(need)
        self.factory = CartPlan.build(self.cart_ids, self.catalog.skus, 10).factory()
        self.count = itertools.count()

    def add(self, seq: int) -> Request:
        assert self.factory is not None, "ensure() runs before the first step"
        method, path, body, _ = self.factory(next(self.count))
        return method, path, body, self.headers

    def view(self, seq: int) -> Request:
        cart = self.cart_ids[(seq * 31) % len(self.cart_ids)]
        return "GET", f"/v1/carts/{cart}", None, self.headers


class Checkouts:
    """A fresh filled cart and Idempotency-Key for every checkout request, made before
    the step; one unit of one SKU each, spread over many SKUs so none runs out."""

    def __init__(
        self, builder: Builder, catalog: Catalog, headers: Mapping[str, str], run_id: str
    ) -> None:
        self.builder = builder
        self.catalog = catalog
        self.headers = {**headers, **JSON_HEADERS}
        self.run_id = run_id
        self.bodies: list[bytes] = []
        self.next = 0
        self.counter = itertools.count()

    async def ensure(self, count: int) -> None:
        self.bodies = self.bodies[self.next :]
        self.next = 0
        if len(self.bodies) < count:
            carts = await self.builder.filled_carts(count - len(self.bodies), self.catalog.skus)
            self.bodies += [
                json.dumps({"cart_id": c, "payment_token": "tok_approve"}).encode() for c in carts
            ]

    def make(self, seq: int) -> Request:
        # More arrivals than prepared carts would replay a cart; the driver never asks for
        # more than ``ensure`` was told, so this wraps only on a bug and then is visible as
        # 409 cart_frozen errors rather than silently re-measuring the same order.
        body = self.bodies[self.next % len(self.bodies)]
        self.next += 1
        key = f"cmp-{self.run_id}-{next(self.counter)}"
        return "POST", "/v1/checkout", body, {**self.headers, "Idempotency-Key": key}


def cart_add(adds: CartAdds) -> Workload:
    async def prepare(rate: float, seconds: float) -> None:
        await adds.ensure(schedule_count(rate, seconds))

    return Workload("cart_add", adds.add, prepare)


def checkout(checkouts: Checkouts) -> Workload:
    async def prepare(rate: float, seconds: float) -> None:
        await checkouts.ensure(schedule_count(rate, seconds))

    return Workload("checkout", lambda seq: checkouts.make(seq), prepare)


def flash(catalog: Catalog, headers: Mapping[str, str]) -> Workload:
    """Every buyer holds one unit of the one hot SKU."""
    path = f"/v1/stock/{quote(catalog.hot_sku, safe='')}/reservations"
    h = {**headers, **JSON_HEADERS}
    return Workload("flash", lambda seq: ("POST", path, b"{}", h))


def peak(
    catalog: Catalog,
    headers: Mapping[str, str],
    adds: CartAdds,
    checkouts: Checkouts,
    builder: Builder,
    mix: Mapping[str, int] = PEAK_MIX,
) -> Workload:
    cycle = weighted_kinds(mix)
    share = {kind: cycle.count(kind) / len(cycle) for kind in set(cycle)}
    reads = browse(catalog, headers).make
    h = {**headers, **JSON_HEADERS}
    # Per kind, how many of that kind came before position p of the cycle: request seq's
    # own sequence number within its kind, so each kind's factory spreads its own state.
    offsets = {kind: [cycle[:p].count(kind) for p in range(len(cycle))] for kind in share}
    per_cycle = {kind: cycle.count(kind) for kind in share}

    def nth(kind: str, seq: int) -> int:
        return (seq // len(cycle)) * per_cycle[kind] + offsets[kind][seq % len(cycle)]

    def make(seq: int) -> Request:
        kind = cycle[seq % len(cycle)]
        n = nth(kind, seq)
        if kind == "product_page":
            return reads(n * 5)  # never the listing slot of browse's cycle
        if kind == "listing":
            return reads(4)
        if kind == "cart_view":
            return adds.view(n)
        if kind == "cart_add":
            return adds.add(n)
        if kind == "new_cart":
            return "POST", "/v1/carts", b"", h
        return checkouts.make(n)

    async def prepare(rate: float, seconds: float) -> None:
        arrivals = schedule_count(rate, seconds)
        await adds.ensure(math.ceil(arrivals * share["cart_add"]))
        await checkouts.ensure(math.ceil(arrivals * share["checkout"]) + 5)

    return Workload("peak", make, prepare)
