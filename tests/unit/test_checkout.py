"""Checkout in-process: the real shard services, SQLite stores and the sandbox processor.

Also the cart freeze it relies on (domain rules, shard ops, checkpoints).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.cart_service import CartService
from actors.checkout import CheckoutAnswer, CheckoutService, CheckoutSettings
from actors.domain.cart import Cart, CartLimits
from actors.domain.errors import DomainError, ErrorCode
from actors.domain.orders import OrderStatus
from actors.kinds import ShardKind
from actors.payments.provider import Authorization, PaymentState
from actors.payments.sandbox import InMemoryLedger, SandboxProvider
from actors.shop import new_op_id
from api.routes.checkout import render
from tests.inprocess import InProcess, build_inprocess

FAST = CheckoutSettings(currency="EUR", payment_backoff_s=0.001, shard_backoff_s=0.001)
LIMITS = CartLimits(5, 10)
T0 = 1_700_000_000.0
CART_ID = "c" * 24


# --- helpers shared with test_checkout_api ----------------------------------------------


@dataclass
class Env:
    run: InProcess
    service: CheckoutService
    ledger: InMemoryLedger
    provider: SandboxProvider
    skus: list[str]  # published, priced SKUs of the demo catalog

    def another_service(self, **changes: Any) -> CheckoutService:
        """A second replica over the same shards, stores and processor."""
        settings = CheckoutSettings(**{**_fields(FAST), **changes})
        return CheckoutService(
            self.run.stores.orders,
            self.run.router,
            self.provider,
            self.run.stores.catalog,
            settings,
        )


def _fields(settings: CheckoutSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__slots__}


async def make_env(
    tmp_path: Path,
    *,
    provider: SandboxProvider | None = None,
    settings: CheckoutSettings = FAST,
) -> Env:
    run = await build_inprocess(tmp_path, 30)
    ledger = InMemoryLedger()
    sandbox = provider or SandboxProvider(ledger)
    if provider is not None:
        assert isinstance(provider.ledger, InMemoryLedger)
        ledger = provider.ledger
    service = CheckoutService(run.stores.orders, run.router, sandbox, run.stores.catalog, settings)
    products, _ = await run.stores.catalog.list_products(category=None, cursor=None, limit=30)
    skus = [v["sku"] for p in products for v in p["variants"]]
    quotes = await run.router.fanout(ShardKind.PRICING, skus, "quote")
    priced = sorted(s for s in skus if s in quotes and quotes[s]["unit"] > 0)
    assert len(priced) >= 4
    return Env(run, service, ledger, sandbox, priced)


async def set_stock(run: InProcess, sku: str, on_hand: int) -> None:
    await run.router.call(ShardKind.INVENTORY, sku, "set_on_hand", new_op_id(), sku, on_hand)


async def level(run: InProcess, sku: str) -> dict[str, int]:
    found: dict[str, dict[str, int]] = await run.shop.stock([sku])
    return found[sku]


async def cart_with(run: InProcess, *lines: tuple[str, int]) -> str:
    cart = await run.shop.create_cart()
    for sku, quantity in lines:
        await run.shop.add_item(cart["id"], sku, quantity)
    cart_id: str = cart["id"]
    return cart_id


def body(
    cart_id: str, token: str = "tok_approve", expected: tuple[int, str] | None = None
) -> dict[str, Any]:
    return {
        "cart_id": cart_id,
        "payment_token": token,
        "expected_total": None
        if expected is None
        else {"amount": expected[0], "currency": expected[1]},
    }


def authorizations(ledger: InMemoryLedger, order_id: str | None = None) -> list[Any]:
    return [
        p.payment
        for p in ledger.payments.values()
        if p.payment.state is PaymentState.AUTHORIZED
        and (order_id is None or p.payment.metadata.get("order_id") == order_id)
    ]


async def orders_of(run: InProcess, cart_id: str) -> list[Any]:
    found, _ = await run.stores.orders.list_orders(customer_ref=cart_id, limit=50)
    return found


async def events_of(run: InProcess, order_id: str) -> list[str]:
    claimed = await run.stores.orders.claim_events("test-" + new_op_id(), 1000, 60, time.time())
    return [e.kind for e in claimed if e.order_id == order_id]


async def assert_cart_usable(run: InProcess, cart_id: str, sku: str) -> None:
    await run.shop.add_item(cart_id, sku, 1)


async def assert_cart_frozen(run: InProcess, cart_id: str, sku: str) -> None:
    with pytest.raises(DomainError) as info:
        await run.shop.add_item(cart_id, sku, 1)
    assert info.value.code is ErrorCode.CART_FROZEN


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    built = await make_env(tmp_path)
    yield built
    await built.run.stores.close()


async def checkout(env: Env, data: Mapping[str, Any], key: str) -> CheckoutAnswer:
    return await env.service.checkout(data, key, render)


# --- the cart freeze ----------------------------------------------------------------------


def test_a_frozen_cart_refuses_every_change_and_stays_as_it_was() -> None:
    cart = Cart.new(CART_ID, None, T0)
    cart.add("A", 2, LIMITS, T0)
    cart.freeze("h1", T0 + 1)
    assert cart.frozen
    assert cart.version == 2
    before = cart.snapshot()
    for change in (
        lambda: cart.add("B", 1, LIMITS, T0 + 2),
        lambda: cart.set_quantity("A", 3, LIMITS, T0 + 2),
        lambda: cart.remove("A", T0 + 2),
        lambda: cart.merge([("B", 1)], LIMITS, T0 + 2),
    ):
        with pytest.raises(DomainError) as info:
            change()
        assert info.value.code is ErrorCode.CART_FROZEN
    assert cart.snapshot() == before


def test_freeze_is_idempotent_for_its_holder_and_refused_to_another() -> None:
    cart = Cart.new(CART_ID, None, T0)
    cart.freeze("h1", T0)
    cart.freeze("h1", T0 + 1)
    assert cart.version == 1
    with pytest.raises(DomainError) as info:
        cart.freeze("h2", T0 + 1)
    assert info.value.code is ErrorCode.CART_FROZEN
    assert not cart.unfreeze("h2", T0 + 2)  # not its freeze: no-op
    assert cart.frozen_by == "h1"
    assert cart.unfreeze("h1", T0 + 2)
    assert not cart.frozen
    assert not cart.unfreeze("h1", T0 + 3)
    cart.add("A", 1, LIMITS, T0 + 3)
    cart.freeze("h2", T0 + 4)
    assert cart.unfreeze(None, T0 + 5)  # anyone (an expired order's cleanup)


def test_frozen_state_travels_in_the_snapshot_and_old_snapshots_load_unfrozen() -> None:
    cart = Cart.new(CART_ID, None, T0)
    assert "frozen_by" not in cart.snapshot()  # unfrozen snapshots keep their old shape
    cart.freeze("h1", T0)
    snap = cart.snapshot()
    assert snap["frozen_by"] == "h1"
    assert Cart.from_snapshot(snap) == cart
    del snap["frozen_by"]
    assert not Cart.from_snapshot(snap).frozen
    with pytest.raises(DomainError):
        Cart.from_snapshot({**snap, "frozen_by": 7})


class DictCheckpoints:
    """An in-memory CartCheckpointStore with the version guard of the real ones."""

    def __init__(self) -> None:
        self.saved: dict[str, dict[str, Any]] = {}

    async def save_many(self, snapshots: Any, ttl_s: int) -> None:
        for snap in snapshots:
            held = self.saved.get(snap["id"])
            if held is None or held["version"] <= snap["version"]:
                self.saved[snap["id"]] = dict(snap)

    async def load(self, cart_id: str) -> dict[str, Any] | None:
        return self.saved.get(cart_id)

    async def delete(self, cart_id: str) -> None:
        self.saved.pop(cart_id, None)

    async def close(self) -> None:
        return None


async def test_freeze_ops_are_idempotent_and_survive_a_shard_restart() -> None:
    store = DictCheckpoints()
    shard = CartService(LIMITS, 3600, 100, checkpoints=store, lag_s=0)
    ((ok, _),) = await shard.apply([("create", ("op1", CART_ID, None))])
    await shard.apply([("add", ("op2", CART_ID, "A", 1))])
    [(ok, snap)] = await shard.apply([("freeze", ("op3", CART_ID, "h1"))])
    assert ok
    assert snap["frozen_by"] == "h1"
    [(ok, again)] = await shard.apply([("freeze", ("op4", CART_ID, "h1"))])
    assert ok
    assert again["version"] == snap["version"]
    assert store.saved[CART_ID]["frozen_by"] == "h1"

    restarted = CartService(LIMITS, 3600, 100, checkpoints=store, lag_s=0)
    [(ok, refused)] = await restarted.apply([("add", ("op5", CART_ID, "B", 1))])
    assert not ok
    assert refused[0] == ErrorCode.CART_FROZEN
    [(ok, other)] = await restarted.apply([("freeze", ("op6", CART_ID, "h2"))])
    assert not ok
    assert other[0] == ErrorCode.CART_FROZEN
    # A retried freeze reaching the restarted shard is answered, not refused.
    [(ok, _)] = await restarted.apply([("freeze", ("op3", CART_ID, "h1"))])
    assert ok
    [(ok, thawed)] = await restarted.apply([("unfreeze", ("op7", CART_ID, "h1"))])
    assert ok
    assert "frozen_by" not in thawed
    [(ok, _)] = await restarted.apply([("add", ("op8", CART_ID, "B", 1))])
    assert ok
    assert "frozen_by" not in store.saved[CART_ID]


# --- checkout -----------------------------------------------------------------------------


async def test_happy_path_places_one_authorized_order(env: Env) -> None:
    run = env.run
    a, b = env.skus[0], env.skus[1]
    await set_stock(run, a, 10)
    await set_stock(run, b, 10)
    # A promotion on b: its quote is recorded in the order line.
    await run.router.call(
        ShardKind.PRICING,
        b,
        "upsert_promotion",
        new_op_id(),
        {
            "id": "promo-b",
            "kind": "percent",
            "value": 1000,
            "sku": b,
            "starts_at": 0,
            "ends_at": 4_000_000_000,
        },
    )
    quotes = await run.router.fanout(ShardKind.PRICING, [a, b], "quote")
    total = 2 * quotes[a]["unit"] + quotes[b]["unit"]
    cart_id = await cart_with(run, (b, 1), (a, 2))

    answer = await checkout(env, body(cart_id, expected=(total, "EUR")), "key-happy-1")

    assert answer.status == 202, answer.body
    assert not answer.replayed
    order_id = answer.order_id
    assert order_id is not None
    assert order_id.startswith("o-")
    assert len(order_id) == 26
    assert answer.body["status"] == "authorized"
    assert answer.body["total"] == {"amount": total, "currency": "EUR"}
    assert [line["sku"] for line in answer.body["lines"]] == sorted([a, b])
    order = await run.stores.orders.get_order(order_id)
    assert order is not None
    assert order.status is OrderStatus.AUTHORIZED
    assert order.customer_ref == cart_id
    assert order.total == total
    line_b = next(line for line in order.lines if line.sku == b)
    assert line_b.promotion_id == "promo-b"
    assert line_b.unit_amount == quotes[b]["unit"] < line_b.base_amount == quotes[b]["base"]
    product = await run.stores.catalog.product_for_sku(b)
    assert product is not None
    assert (line_b.product_id, line_b.merchant_id) == (product["id"], product["merchant_id"])
    assert order.reservation_ids == (f"{order_id}:{min(a, b)}", f"{order_id}:{max(a, b)}")
    assert order.expires_at is not None
    assert 0 < order.expires_at - order.created_at <= FAST.reservation_ttl_s
    assert order.payment is not None
    assert order.payment.amount == total
    [auth] = authorizations(env.ledger, order_id)
    assert auth.payment_id == order.payment.payment_id
    assert f"{order_id}:authorize" in env.ledger.keys
    assert await events_of(run, order_id) == ["order.placed", "order.authorized"]
    assert (await level(run, a))["reserved"] == 2
    assert (await level(run, b))["reserved"] == 1
    await assert_cart_frozen(run, cart_id, a)


async def test_same_key_same_body_replays_the_answer_and_places_one_order(env: Env) -> None:
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)
    cart_id = await cart_with(env.run, (sku, 1))
    first = await checkout(env, body(cart_id), "key-replay-1")
    again = await checkout(env, body(cart_id), "key-replay-1")
    assert again.replayed
    assert (again.status, again.body) == (first.status, first.body)
    assert len(await orders_of(env.run, cart_id)) == 1
    assert len(authorizations(env.ledger)) == 1
    assert (await level(env.run, sku))["reserved"] == 1


async def test_same_key_other_body_is_a_mismatch(env: Env) -> None:
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)
    cart_id = await cart_with(env.run, (sku, 1))
    await checkout(env, body(cart_id), "key-mismatch")
    with pytest.raises(DomainError) as info:
        await checkout(env, body(cart_id, token="tok_decline"), "key-mismatch")
    assert info.value.code is ErrorCode.IDEMPOTENCY_MISMATCH
    assert len(await orders_of(env.run, cart_id)) == 1


async def test_twenty_concurrent_requests_with_one_key_make_one_order(env: Env) -> None:
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)
    cart_id = await cart_with(env.run, (sku, 2))
    answers = await asyncio.gather(*(checkout(env, body(cart_id), "key-storm") for _ in range(20)))
    assert {(a.status, a.order_id) for a in answers} == {(202, answers[0].order_id)}
    assert all(a.body == answers[0].body for a in answers)
    assert len(await orders_of(env.run, cart_id)) == 1
    assert len(authorizations(env.ledger)) == 1
    assert (await level(env.run, sku))["reserved"] == 2


async def test_concurrent_replicas_with_one_key_make_one_order(env: Env) -> None:
    """Two services (replicas) share no memory: create_order's DuplicateKey decides."""
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)  # room for every replica's own reservation
    cart_id = await cart_with(env.run, (sku, 1))
    services = [env.service, env.another_service(), env.another_service()]
    results = await asyncio.gather(
        *(s.checkout(body(cart_id), "key-replicas", render) for s in services),
        return_exceptions=True,
    )
    placed = [r for r in results if isinstance(r, CheckoutAnswer) and r.status == 202]
    assert placed, results
    order_ids = {r.order_id for r in placed}
    assert len(order_ids) == 1
    for r in results:  # the others answered as the winner, or "still in progress"
        if isinstance(r, DomainError):
            assert r.code is ErrorCode.CHECKOUT_IN_PROGRESS
        else:
            assert isinstance(r, CheckoutAnswer)
            assert r.status == 202
    assert len(await orders_of(env.run, cart_id)) == 1
    assert len(authorizations(env.ledger)) == 1
    stock = await level(env.run, sku)
    assert (stock["reserved"], stock["available"]) == (1, 4)  # the losers released theirs
    final = await services[1].checkout(body(cart_id), "key-replicas", render)
    assert final.status == 202
    assert final.order_id in order_ids


async def test_a_replay_while_the_first_request_runs_is_told_to_retry(tmp_path: Path) -> None:
    gate, entered = asyncio.Event(), asyncio.Event()

    class Held(SandboxProvider):
        async def authorize(self, **kwargs: Any) -> Authorization:
            entered.set()  # the order exists: it is created before the payment
            await gate.wait()
            return await super().authorize(**kwargs)

    env = await make_env(tmp_path, provider=Held(InMemoryLedger()))
    try:
        sku = env.skus[0]
        await set_stock(env.run, sku, 3)
        cart_id = await cart_with(env.run, (sku, 1))
        first = asyncio.create_task(checkout(env, body(cart_id), "key-held"))
        await entered.wait()
        other = env.another_service()
        with pytest.raises(DomainError) as info:
            await other.checkout(body(cart_id), "key-held", render)
        assert info.value.code is ErrorCode.CHECKOUT_IN_PROGRESS
        assert info.value.details["order_id"] == (await orders_of(env.run, cart_id))[0].id
        # Long after (a replica that died mid-checkout): the order's current state.
        late = env.another_service(in_flight_s=0.0)
        derived = await late.checkout(body(cart_id), "key-held", render)
        assert (derived.status, derived.body["status"]) == (202, "pending_payment")
        gate.set()
        answer = await first
        assert answer.body["status"] == "authorized"
        replay = await other.checkout(body(cart_id), "key-held", render)
        assert (replay.status, replay.body) == (answer.status, answer.body)
    finally:
        gate.set()
        await env.run.stores.close()


async def test_empty_cart_is_refused_and_unfrozen(env: Env) -> None:
    cart_id = await cart_with(env.run)
    answer = await checkout(env, body(cart_id), "key-empty")
    assert (answer.status, answer.body["code"]) == (422, "cart_empty")
    await assert_cart_usable(env.run, cart_id, env.skus[0])
    # The refusal is the key's answer (the cart changed, the request did not).
    again = await checkout(env, body(cart_id), "key-empty")
    assert again.replayed
    assert (again.status, again.body) == (answer.status, answer.body)
    assert await orders_of(env.run, cart_id) == []


async def test_out_of_stock_reserves_nothing_and_charges_nothing(env: Env) -> None:
    run = env.run
    a, b, c = env.skus[0], env.skus[1], env.skus[2]
    for sku, on_hand in ((a, 5), (b, 1), (c, 5)):
        await set_stock(run, sku, on_hand)
    cart_id = await cart_with(run, (a, 2), (b, 2), (c, 1))
    before = {s: await level(run, s) for s in (a, b, c)}
    answer = await checkout(env, body(cart_id), "key-oos")
    assert answer.status == 409
    assert answer.body["code"] == "insufficient_stock"
    assert answer.body["sku"] == b
    assert {s: await level(run, s) for s in (a, b, c)} == before
    assert await orders_of(run, cart_id) == []
    assert env.ledger.payments == {}
    await assert_cart_usable(run, cart_id, a)


async def test_price_changed_reserves_nothing(env: Env) -> None:
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)
    cart_id = await cart_with(env.run, (sku, 1))
    quote = (await env.run.router.fanout(ShardKind.PRICING, [sku], "quote"))[sku]
    before = await level(env.run, sku)
    answer = await checkout(env, body(cart_id, expected=(quote["unit"] - 1, "EUR")), "key-price")
    assert (answer.status, answer.body["code"]) == (409, "price_changed")
    assert answer.body["expected_total"] == {"amount": quote["unit"] - 1, "currency": "EUR"}
    assert answer.body["total"] == {"amount": quote["unit"], "currency": "EUR"}
    assert await level(env.run, sku) == before
    assert env.ledger.payments == {}
    await assert_cart_usable(env.run, cart_id, sku)


async def test_a_decline_fails_the_order_releases_stock_and_unfreezes(env: Env) -> None:
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)
    cart_id = await cart_with(env.run, (sku, 2))
    before = await level(env.run, sku)
    answer = await checkout(env, body(cart_id, token="tok_decline"), "key-decline")
    assert (answer.status, answer.body["code"]) == (402, "payment_declined")
    order_id = answer.body["order_id"]
    assert answer.body["order_status"] == "payment_failed"
    order = await env.run.stores.orders.get_order(order_id)
    assert order is not None
    assert order.status is OrderStatus.PAYMENT_FAILED
    assert await events_of(env.run, order_id) == ["order.placed", "order.payment_failed"]
    assert await level(env.run, sku) == before
    assert authorizations(env.ledger) == []
    await assert_cart_usable(env.run, cart_id, sku)
    again = await checkout(env, body(cart_id, token="tok_decline"), "key-decline")
    assert again.replayed
    assert (again.status, again.body) == (answer.status, answer.body)
    # Another card, another key: the shopper checks out.
    paid = await checkout(env, body(cart_id), "key-decline-2")
    assert paid.status == 202
    assert paid.body["status"] == "authorized"


async def test_an_unknown_token_is_422_and_leaves_nothing_reserved(env: Env) -> None:
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)
    cart_id = await cart_with(env.run, (sku, 1))
    before = await level(env.run, sku)
    answer = await checkout(env, body(cart_id, token="tok_nope"), "key-badtoken")
    assert (answer.status, answer.body["code"]) == (422, "payment_token_invalid")
    assert "tok_nope" not in str(answer.body)
    assert await level(env.run, sku) == before
    assert env.ledger.payments == {}
    await assert_cart_usable(env.run, cart_id, sku)


async def test_a_provider_that_keeps_failing_fails_the_order(env: Env) -> None:
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)
    cart_id = await cart_with(env.run, (sku, 1))
    answer = await checkout(env, body(cart_id, token="tok_fail"), "key-fail")
    assert (answer.status, answer.body["code"]) == (502, "payment_provider_error")
    order = await env.run.stores.orders.get_order(answer.body["order_id"])
    assert order is not None
    assert order.status is OrderStatus.PAYMENT_FAILED
    assert (await level(env.run, sku))["reserved"] == 0
    await assert_cart_usable(env.run, cart_id, sku)


async def test_a_timeout_is_resolved_by_the_retry_with_the_same_key(env: Env) -> None:
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)
    cart_id = await cart_with(env.run, (sku, 1))
    answer = await checkout(env, body(cart_id, token="tok_timeout"), "key-timeout")
    assert answer.status == 202
    assert answer.body["status"] == "authorized"
    assert len(authorizations(env.ledger)) == 1


async def test_an_unresolved_timeout_leaves_the_order_pending_with_one_authorization(
    tmp_path: Path,
) -> None:
    env = await make_env(tmp_path, settings=CheckoutSettings(currency="EUR", payment_attempts=1))
    try:
        sku = env.skus[0]
        await set_stock(env.run, sku, 5)
        cart_id = await cart_with(env.run, (sku, 1))
        answer = await checkout(env, body(cart_id, token="tok_timeout"), "key-timeout-1")
        assert answer.status == 202
        assert answer.body["status"] == "pending_payment"
        order = await env.run.stores.orders.get_order(answer.body["order_id"])
        assert order is not None
        assert order.status is OrderStatus.PENDING_PAYMENT
        assert order.payment is None
        assert len(authorizations(env.ledger)) == 1
        assert (await level(env.run, sku))["reserved"] == 1  # held until expiry/reconcile
        await assert_cart_frozen(env.run, cart_id, sku)
        again = await checkout(env, body(cart_id, token="tok_timeout"), "key-timeout-1")
        assert (again.status, again.body) == (answer.status, answer.body)
        assert len(authorizations(env.ledger)) == 1
    finally:
        await env.run.stores.close()


async def test_another_key_cannot_check_out_a_frozen_cart(env: Env) -> None:
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)
    cart_id = await cart_with(env.run, (sku, 1))
    await checkout(env, body(cart_id), "key-first")
    with pytest.raises(DomainError) as info:
        await checkout(env, body(cart_id), "key-second")
    assert info.value.code is ErrorCode.CART_FROZEN
    assert len(await orders_of(env.run, cart_id)) == 1


async def test_bad_input_is_refused_before_anything_happens(env: Env) -> None:
    cart_id = await cart_with(env.run, (env.skus[0], 1))
    for data, key, code in (
        (body(cart_id), None, ErrorCode.IDEMPOTENCY_KEY_REQUIRED),
        (body(cart_id), "", ErrorCode.IDEMPOTENCY_KEY_REQUIRED),
        (body(cart_id), "bad key\n", ErrorCode.INVALID_ARGUMENT),
        ({**body(cart_id), "extra": 1}, "k-1", ErrorCode.INVALID_ARGUMENT),
        (body("short"), "k-2", ErrorCode.INVALID_ARGUMENT),
        (
            {**body(cart_id), "expected_total": {"amount": 1.5, "currency": "EUR"}},
            "k-3",
            ErrorCode.INVALID_ARGUMENT,
        ),
    ):
        with pytest.raises(DomainError) as info:
            await env.service.checkout(data, key, render)
        assert info.value.code is code
    with pytest.raises(DomainError) as info:
        await checkout(env, body("x" * 24), "k-4")
    assert info.value.code is ErrorCode.CART_NOT_FOUND
    await assert_cart_usable(env.run, cart_id, env.skus[0])
