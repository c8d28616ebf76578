"""Checkout invariants over HTTP against the Serve app (issue 5, item 8).

- A flash sale: many buyers, few units; exactly the units are sold and paid, nothing is
  oversold, and every other buyer gets a clear 409 ``insufficient_stock``.
- One Idempotency-Key sent by many concurrent requests: one order, one authorization.
- A checkout storm while the order processor and inventory shards are killed: every
  authorization ends in exactly one paid order or is voided, no capture lacks an order,
  and stock reconciles with the orders.

Clients retry a transport error and a gateway failure (``is_gateway_failure``) with the
same Idempotency-Key, and a 409 ``checkout_in_progress`` after its ``Retry-After``, until
they get a definite answer, as a real client must. The truth is read from PostgreSQL (the
orders), the sandbox processor's ledger (the payments) and the inventory shards (stock).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import orjson
import pytest
import ray

from actors.kinds import ShardKind, actor_name
from actors.shells import ORDER_PROCESSOR_NAME
from feira.payments import SANDBOX_LEDGER_FILE
from tests.fault.test_replica_kill import is_gateway_failure
from tests.tokens import deployed_bearer

pytestmark = pytest.mark.fault

PROBLEM_JSON = "application/problem+json"
# Once captured and shipped, an order may only move on along the happy path (or refund).
CAPTURED = frozenset({"paid", "fulfilling", "shipped", "delivered"})
SETTLED = frozenset({"fulfilling", "shipped", "delivered"})
UNSETTLED = frozenset({"pending_payment", "authorized", "paid"})
# A processor killed mid-batch holds its batch's lease (60 s, OrderProcessor.lease_s) and
# an event whose handler failed waits for the lease to lapse, so settling after kills
# takes up to one lease plus the work itself.
SETTLE_BOUND_S = 120.0
ANSWER_BOUND_S = 90.0

FLASH_BUYERS = 1000
FLASH_UNITS = 100


# --- HTTP helpers ---------------------------------------------------------------------


def client(base_url: str, connections: int = 32) -> httpx.AsyncClient:
    # Two cores serve the two replicas, HAProxy, the shards and this driver: a few dozen
    # connections keep every replica busy without queueing thousands in HAProxy.
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(30.0, pool=None),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def is_problem(reply: httpx.Response, code: str) -> bool:
    return reply.headers.get("content-type", "").startswith(PROBLEM_JSON) and bool(
        reply.json().get("code") == code
    )


async def answered(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    retries: Counter[str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """The first definite answer to one logical request, sent again as it was (same
    Idempotency-Key) after a transport error, a gateway failure or a 409
    ``checkout_in_progress``. Feira's 503/504 problems are gateway failures too."""
    deadline = time.monotonic() + ANSWER_BOUND_S
    while True:
        try:
            reply = await http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            reason = type(error).__name__
        else:
            if is_gateway_failure(reply):
                reason = f"http {reply.status_code}"
            elif reply.status_code == 409 and is_problem(reply, "checkout_in_progress"):
                reason = "checkout_in_progress"
            else:
                return reply
        if retries is not None:
            retries[reason] += 1
        if time.monotonic() > deadline:
            pytest.fail(f"{method} {path}: no definite answer in {ANSWER_BOUND_S:.0f} s")
        await asyncio.sleep(0.2 + random.random() * 0.3)


def merchant_headers(settings: Any, merchant_id: str) -> dict[str, str]:
    token = deployed_bearer(settings, merchant_id)
    return {"Authorization": f"Bearer {token}"}


async def sku_for_sale(
    http: httpx.AsyncClient, settings: Any, merchant_id: str, tag: str, units: int, price: int
) -> str:
    """A new SKU as a merchant puts one on sale: a draft product, published, priced and
    stocked through the merchant API."""
    headers = merchant_headers(settings, merchant_id)
    sku = f"{tag}-{uuid.uuid4().hex[:10]}".upper()
    product = {
        "title": f"Flash item {sku}",
        "brand": "Kestrel",
        "category": "home/kitchen/kettles",
        "description": "On sale for a moment only.",
        "attributes": {"material": "enamelled steel"},
        "variants": [{"sku": sku, "options": {"color": "red"}}],
    }
    created = await answered(http, "POST", "/v1/merchant/products", json=product, headers=headers)
    assert created.status_code == 201, created.text
    product_id = created.json()["id"]
    published = await answered(
        http, "POST", f"/v1/merchant/products/{product_id}/publish", headers=headers
    )
    assert published.status_code == 200, published.text
    key = {"Idempotency-Key": f"setup-{sku}"}
    priced = await answered(
        http,
        "PUT",
        f"/v1/merchant/prices/{sku}",
        json={"amount": price, "currency": "EUR"},
        headers=headers | key,
    )
    assert priced.status_code == 200, priced.text
    stocked = await answered(
        http,
        "PUT",
        f"/v1/merchant/inventory/{sku}",
        json={"on_hand": units},
        headers=headers | key,
    )
    assert stocked.status_code == 200, stocked.text
    assert stocked.json()["on_hand"] == units
    return sku


async def cart_with(http: httpx.AsyncClient, items: Iterable[tuple[str, int]]) -> str:
    created = await answered(http, "POST", "/v1/carts")
    assert created.status_code == 201, created.text
    cart_id = str(created.json()["id"])
    for n, (sku, quantity) in enumerate(items):
        added = await answered(
            http,
            "POST",
            f"/v1/carts/{cart_id}/items",
            json={"sku": sku, "quantity": quantity},
            headers={"Idempotency-Key": f"{cart_id[:12]}-add-{n}"},
        )
        assert added.status_code == 200, added.text
    return cart_id


async def checkout(
    http: httpx.AsyncClient,
    cart_id: str,
    key: str,
    token: str = "tok_approve",
    retries: Counter[str] | None = None,
) -> httpx.Response:
    return await answered(
        http,
        "POST",
        "/v1/checkout",
        retries,
        json={"cart_id": cart_id, "payment_token": token},
        headers={"Idempotency-Key": key},
    )


async def stock_of(http: httpx.AsyncClient, skus: Iterable[str]) -> dict[str, dict[str, int]]:
    levels: dict[str, dict[str, int]] = {}
    for sku in skus:
        reply = await answered(http, "GET", f"/v1/stock/{sku}")
        assert reply.status_code == 200, reply.text
        levels[sku] = reply.json()
    return levels


# --- the stores' truth ----------------------------------------------------------------


async def orders_with_skus(settings: Any, skus: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Every order holding a line of one of ``skus``: id -> {status, cart, lines, payment}."""
    conn = await asyncpg.connect(settings.postgres_url)
    try:
        rows = await conn.fetch(
            "SELECT id, status, customer_ref, doc::text AS doc FROM orders"
            " WHERE EXISTS (SELECT 1 FROM jsonb_array_elements(doc->'lines') AS line"
            "               WHERE line->>'sku' = ANY($1::text[]))",
            list(skus),
        )
    finally:
        await conn.close()
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        doc = orjson.loads(row["doc"])
        found[row["id"]] = {
            "status": row["status"],
            "cart": row["customer_ref"],
            "lines": {line["sku"]: line["quantity"] for line in doc["lines"]},
            "payment": (doc.get("payment") or {}).get("payment_id"),
        }
    return found


async def orders_by_id(settings: Any, order_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """id -> {status, payment} of the stored orders among ``order_ids``."""
    conn = await asyncpg.connect(settings.postgres_url)
    try:
        rows = await conn.fetch(
            "SELECT id, status, doc->'payment'->>'payment_id' AS payment FROM orders"
            " WHERE id = ANY($1::text[])",
            list(order_ids),
        )
    finally:
        await conn.close()
    return {row["id"]: {"status": row["status"], "payment": row["payment"]} for row in rows}


async def orders_of_cart(settings: Any, cart_id: str) -> list[str]:
    conn = await asyncpg.connect(settings.postgres_url)
    try:
        rows = await conn.fetch("SELECT id FROM orders WHERE customer_ref = $1", cart_id)
    finally:
        await conn.close()
    return [str(row["id"]) for row in rows]


def ledger_payments(settings: Any) -> list[dict[str, Any]]:
    """Every payment the sandbox processor holds (a real processor's view: it knows
    nothing of Feira's orders but the order id Feira put in the metadata)."""
    path = Path(settings.data_dir) / SANDBOX_LEDGER_FILE
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        docs = [row[0] for row in conn.execute("SELECT doc FROM sandbox_payments")]
    finally:
        conn.close()
    return [orjson.loads(doc)["payment"] for doc in docs]


def payments_by_order(payments: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_order: dict[str, list[dict[str, Any]]] = {}
    for payment in payments:
        order_id = payment.get("metadata", {}).get("order_id")
        if isinstance(order_id, str):
            by_order.setdefault(order_id, []).append(payment)
    return by_order


async def settled(
    settings: Any, skus: list[str], done: frozenset[str] = SETTLED
) -> dict[str, dict[str, Any]]:
    """The orders of ``skus`` once none is left in between (pending/authorized/paid) and
    every one that was paid is in ``done``; fails after SETTLE_BOUND_S."""
    deadline = time.monotonic() + SETTLE_BOUND_S
    while True:
        orders = await orders_with_skus(settings, skus)
        waiting = [o for o, v in orders.items() if v["status"] in UNSETTLED - done]
        if not waiting:
            return orders
        if time.monotonic() > deadline:
            states = Counter(v["status"] for v in orders.values())
            pytest.fail(
                f"orders not settled in {SETTLE_BOUND_S:.0f} s: {dict(states)}; e.g. {waiting[:5]}"
            )
        await asyncio.sleep(0.5)


# --- 1. the flash sale ----------------------------------------------------------------


async def test_flash_sale_sells_exactly_its_stock(feira_url: str, seeded: Any) -> None:
    buyers, units = FLASH_BUYERS, FLASH_UNITS
    async with client(feira_url) as http:
        sku = await sku_for_sale(http, seeded, "m-flash", "FLASH", units, 2999)
        started = time.monotonic()
        carts = await asyncio.gather(*(cart_with(http, [(sku, 1)]) for _ in range(buyers)))
        carts_s = time.monotonic() - started
        retries: Counter[str] = Counter()
        go = asyncio.Event()

        async def buyer(cart_id: str) -> httpx.Response:
            await go.wait()
            return await checkout(http, cart_id, f"flash-{cart_id}", retries=retries)

        tasks = [asyncio.create_task(buyer(c)) for c in carts]
        sale_started = time.monotonic()
        go.set()
        replies = await asyncio.gather(*tasks)
        sale_s = time.monotonic() - sale_started

        won = [r for r in replies if r.status_code == 202]
        lost = [r for r in replies if r.status_code != 202]
        unclear = [
            (r.status_code, r.text[:200])
            for r in lost
            if not (r.status_code == 409 and is_problem(r, "insufficient_stock"))
        ]
        order_ids = {r.json()["order_id"] for r in won}
        orders = await settled(seeded, [sku])
        settled_s = time.monotonic() - sale_started
        level = (await stock_of(http, [sku]))[sku]
    by_order = payments_by_order(ledger_payments(seeded))
    states = Counter(v["status"] for v in orders.values())
    print(
        f"\nflash sale over HTTP: {buyers} buyers, {units} units; carts filled in "
        f"{carts_s:.1f} s; checkouts answered in {sale_s:.1f} s ({buyers / sale_s:.0f}/s), "
        f"settled after {settled_s:.1f} s; 202: {len(won)}, 409 insufficient_stock: "
        f"{len(lost) - len(unclear)}, unclear: {len(unclear)}; retries: {dict(retries)}; "
        f"orders: {dict(states)}; stock: {level}; "
        f"oversold: {max(0, level['sold'] + level['reserved'] - level['on_hand'])}"
    )
    assert unclear == []
    assert len(won) == units
    assert all(r.json()["status"] == "authorized" for r in won)
    assert len(order_ids) == units
    # Exactly the answered orders exist, every one captured and shipped.
    assert set(orders) == order_ids
    assert set(states) <= SETTLED, states
    assert level["on_hand"] - level["reserved"] - level["sold"] >= 0
    assert (level["on_hand"], level["reserved"], level["sold"]) == (units, 0, units)
    # One authorization per order at the processor, and it was captured.
    for order_id in order_ids:
        payments = by_order.get(order_id, [])
        assert len(payments) == 1, (order_id, payments)
        assert payments[0]["state"] == "captured", (order_id, payments)
        assert payments[0]["payment_id"] == orders[order_id]["payment"]


# --- 2. one key, many concurrent requests ---------------------------------------------


async def test_concurrent_retries_with_one_key_make_one_order(feira_url: str, seeded: Any) -> None:
    async with client(feira_url) as http:
        sku = await sku_for_sale(http, seeded, "m-retry", "RETRY", 10, 1500)
        cart_id = await cart_with(http, [(sku, 2)])
        key = f"same-{uuid.uuid4().hex}"
        retries: Counter[str] = Counter()
        replies = await asyncio.gather(
            *(checkout(http, cart_id, key, retries=retries) for _ in range(20))
        )
        statuses = Counter(r.status_code for r in replies)
        replayed = sum(r.headers.get("Idempotent-Replayed") == "true" for r in replies)
        order_ids = {r.json().get("order_id") for r in replies}
        assert statuses == {202: 20}, [(r.status_code, r.text[:200]) for r in replies]
        assert len(order_ids) == 1, order_ids
        (order_id,) = order_ids
        orders = await settled(seeded, [sku])
        level = (await stock_of(http, [sku]))[sku]
    in_store = await orders_of_cart(seeded, cart_id)
    payments = payments_by_order(ledger_payments(seeded)).get(order_id, [])
    print(
        f"\none key, 20 concurrent checkouts: answers {dict(statuses)} ({replayed} marked "
        f"replayed), retries {dict(retries)}; orders for the cart: {len(in_store)}; "
        f"authorizations: {len(payments)}; stock: {level}"
    )
    assert in_store == [order_id]
    assert set(orders) == {order_id}
    assert len(payments) == 1, payments
    assert payments[0]["state"] == "captured", payments
    assert (level["on_hand"], level["reserved"], level["sold"]) == (10, 0, 2)


# --- 3. a checkout storm with kills ---------------------------------------------------


async def kill_during(settings: Any, stop: asyncio.Event, every_s: float) -> Counter[str]:
    """Kill the order processor and a random inventory shard in turn until ``stop``;
    Ray restarts each (no_restart=False)."""
    kills: Counter[str] = Counter()
    rng = random.Random()
    victims = [ORDER_PROCESSOR_NAME, "inventory"]
    n = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass
        else:
            break
        name = victims[n % 2]
        n += 1
        if name == "inventory":
            name = actor_name(ShardKind.INVENTORY, rng.randrange(settings.inventory_shards))
        try:
            handle = ray.get_actor(name, namespace=settings.namespace)
        except ValueError:
            kills["not found"] += 1  # restarting: its name comes back with it
            continue
        ray.kill(handle, no_restart=False)
        kills["order processor" if name == ORDER_PROCESSOR_NAME else "inventory shard"] += 1
    return kills


async def test_checkout_storm_with_processor_and_shard_kills(feira_url: str, seeded: Any) -> None:
    storm = 150
    t0 = time.time()
    rng = random.Random()
    async with client(feira_url) as http:
        skus = [
            await sku_for_sale(http, seeded, "m-storm", f"STORM{i}", 80, 1000 + 100 * i)
            for i in range(4)
        ]
        plans: list[tuple[list[tuple[str, int]], str]] = []
        for n in range(storm):
            chosen = sorted(rng.sample(skus, rng.choice([1, 1, 2])))
            items = [(sku, rng.choice([1, 1, 2])) for sku in chosen]
            token = (
                "tok_decline"
                if n % 10 == 3
                else ("tok_fail_capture" if n % 10 == 7 else "tok_approve")
            )
            plans.append((items, token))
        carts = await asyncio.gather(*(cart_with(http, items) for items, _ in plans))

        retries: Counter[str] = Counter()
        stop = asyncio.Event()
        killer = asyncio.create_task(kill_during(seeded, stop, 1.5))

        async def shopper(n: int) -> httpx.Response:
            await asyncio.sleep(rng.uniform(0, 8))
            return await checkout(http, carts[n], f"storm-{carts[n]}", plans[n][1], retries)

        started = time.monotonic()
        replies = await asyncio.gather(*(shopper(n) for n in range(storm)))
        storm_s = time.monotonic() - started
        stop.set()
        kills = await killer

        answers: Counter[str] = Counter()
        answered_orders: dict[str, str] = {}  # order id -> its cart
        unexpected = []
        for n, reply in enumerate(replies):
            body = reply.json()
            if reply.status_code == 202:
                answers[f"202 {body['status']}"] += 1
                answered_orders[body["order_id"]] = carts[n]
            elif reply.status_code == 402 and plans[n][1] == "tok_decline":
                answers["402 declined"] += 1
            elif reply.status_code == 409 and is_problem(reply, "insufficient_stock"):
                answers["409 insufficient_stock"] += 1
            else:
                unexpected.append((reply.status_code, reply.text[:300]))
        orders = await settled(seeded, skus, done=SETTLED)
        settle_s = time.monotonic() - started
        levels = await stock_of(http, skus)
    payments = [p for p in ledger_payments(seeded) if p["created_at"] >= t0 - 1]
    by_order = payments_by_order(payments)
    states = Counter(v["status"] for v in orders.values())
    pay_states = Counter(p["state"] for p in payments)
    print(
        f"\ncheckout storm: {storm} checkouts in {storm_s:.1f} s, settled after "
        f"{settle_s:.1f} s; kills: {dict(kills)}; answers: {dict(answers)}; "
        f"client retries: {dict(retries)}; orders: {dict(states)}; "
        f"payments at the processor: {dict(pay_states)}"
    )
    problems: list[str] = []
    problems += [f"unexpected answer {u}" for u in unexpected]
    # Every answered order exists; an order the client was told about is never lost.
    problems += [f"answered order {o} not stored" for o in answered_orders if o not in orders]
    # One order per checkout key (cart): no order beyond what was answered, except the
    # declined ones, which the client was told about through their 402.
    per_cart = Counter(v["cart"] for v in orders.values())
    problems += [f"cart {c} has {k} orders" for c, k in per_cart.items() if k > 1]
    for order_id, order in orders.items():
        mine = by_order.get(order_id, [])
        captured = [p for p in mine if p["state"] == "captured"]
        if len(mine) > 1:
            problems.append(f"order {order_id} has {len(mine)} authorizations")
        if order["status"] in CAPTURED:
            if len(captured) != 1 or captured[0]["payment_id"] != order["payment"]:
                problems.append(f"order {order_id} is {order['status']} but payments {mine}")
        elif captured:
            problems.append(f"order {order_id} is {order['status']} with a capture {captured}")
        elif any(p["state"] == "authorized" for p in mine):
            problems.append(f"order {order_id} is {order['status']}; authorization not voided")
    # Every payment the processor took since the storm began belongs to exactly one stored
    # order (of any SKU: the previous test's last capture may fall in the window): a
    # capture to a paid order holding that payment, an authorization nowhere left open.
    stored = await orders_by_id(seeded, by_order)
    for order_id, mine in by_order.items():
        owner = stored.get(order_id)
        if owner is None:
            problems.append(f"payment(s) {mine} for order {order_id}, which does not exist")
            continue
        for payment in mine:
            if payment["state"] == "authorized":
                problems.append(f"authorization {payment} left open ({owner})")
            if payment["state"] == "captured" and (
                owner["status"] not in CAPTURED or owner["payment"] != payment["payment_id"]
            ):
                problems.append(f"capture {payment} without a paid order ({owner})")
    # Stock reconciles: sold = units of captured orders; nothing left reserved.
    for sku in skus:
        sold = sum(v["lines"].get(sku, 0) for v in orders.values() if v["status"] in CAPTURED)
        held = sum(v["lines"].get(sku, 0) for v in orders.values() if v["status"] in UNSETTLED)
        level = levels[sku]
        if level["on_hand"] - level["reserved"] - level["sold"] < 0:
            problems.append(f"{sku} oversold: {level}")
        if (level["sold"], level["reserved"]) != (sold, held):
            problems.append(f"{sku}: stock {level} but orders hold sold={sold}, held={held}")
    assert problems == [], "\n".join(problems)
    assert answers["202 authorized"] + answers["202 pending_payment"] >= storm // 2
    assert kills["order processor"] >= 2, kills
    assert kills["inventory shard"] >= 2, kills
