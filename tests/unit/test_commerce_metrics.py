"""Commerce metrics in-process: what the shop and checkout report, counted in memory.

A session is a cart; an order is placed when its checkout ends authorized (or pending an
unknown payment outcome); each checkout run reports once, replays report nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from actors.checkout import CheckoutAnswer, CheckoutService, CheckoutSettings
from actors.commerce_metrics import CommerceMetrics, InMemoryMetrics, NullMetrics
from api.routes.checkout import render
from tests.unit.test_checkout import FAST, Env, body, cart_with, make_env, set_stock

# The checkout's clock runs this far ahead of the carts', so a checkout "takes" ~30 s.
AHEAD_S = 30.0


def service_with(env: Env, metrics: InMemoryMetrics, settings: CheckoutSettings = FAST) -> Any:
    return CheckoutService(
        env.run.stores.orders,
        env.run.router,
        env.provider,
        env.run.stores.catalog,
        settings,
        clock=lambda: time.time() + AHEAD_S,
        metrics=metrics,
    )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    built = await make_env(tmp_path)
    yield built
    await built.run.stores.close()


@pytest.fixture
def metrics(env: Env) -> InMemoryMetrics:
    found = InMemoryMetrics()
    env.run.shop.metrics = found
    env.service = service_with(env, found)
    return found


async def checkout(env: Env, data: dict[str, Any], key: str) -> CheckoutAnswer:
    return await env.service.checkout(data, key, render)


def test_the_implementations_fit_the_protocol() -> None:
    kept: list[CommerceMetrics] = [NullMetrics(), InMemoryMetrics()]
    for m in kept:
        m.cart_created()
        m.order_placed(1.5, 100, "EUR")
        m.payment_failed("payment_declined")
        m.checkout_refused("cart_empty")
    memory = kept[1]
    assert isinstance(memory, InMemoryMetrics)
    assert memory.conversion == 1.0


async def test_a_cart_then_a_checkout_records_one_session_and_one_order(
    env: Env, metrics: InMemoryMetrics
) -> None:
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)
    cart_id = await cart_with(env.run, (sku, 2))
    assert metrics.carts_created == 1
    assert metrics.orders_placed == 0
    assert metrics.conversion == 0.0

    answer = await checkout(env, body(cart_id), "key-metrics-1")
    assert answer.status == 202
    assert answer.body["status"] == "authorized"
    assert metrics.carts_created == 1  # checking out creates no session
    [order] = metrics.orders
    assert AHEAD_S <= order.seconds_since_cart_created < AHEAD_S + 30
    assert order.total_minor == answer.body["total"]["amount"] > 0
    assert order.currency == "EUR"
    assert metrics.conversion == 1.0
    assert not metrics.payment_failures
    assert not metrics.checkout_refusals


async def test_a_second_cart_without_an_order_halves_the_conversion(
    env: Env, metrics: InMemoryMetrics
) -> None:
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)
    cart_id = await cart_with(env.run, (sku, 1))
    await cart_with(env.run, (sku, 1))
    await checkout(env, body(cart_id), "key-metrics-half")
    assert (metrics.carts_created, metrics.orders_placed) == (2, 1)
    assert metrics.conversion == 0.5


async def test_a_decline_records_a_payment_failure_and_no_order(
    env: Env, metrics: InMemoryMetrics
) -> None:
    sku = env.skus[0]
    await set_stock(env.run, sku, 5)
    cart_id = await cart_with(env.run, (sku, 1))
    answer = await checkout(env, body(cart_id, token="tok_decline"), "key-metrics-decline")
    assert answer.status >= 400
    assert metrics.payment_failures == {"payment_declined": 1}
    assert metrics.orders_placed == 0
    assert not metrics.checkout_refusals


async def test_an_unknown_payment_outcome_counts_as_placed(tmp_path: Path) -> None:
    env = await make_env(tmp_path)
    try:
        metrics = InMemoryMetrics()
        env.run.shop.metrics = metrics
        env.service = service_with(
            env, metrics, CheckoutSettings(currency="EUR", payment_attempts=1)
        )
        sku = env.skus[0]
        await set_stock(env.run, sku, 5)
        cart_id = await cart_with(env.run, (sku, 1))
        answer = await checkout(env, body(cart_id, token="tok_timeout"), "key-metrics-unknown")
        assert answer.body["status"] == "pending_payment"
        assert metrics.orders_placed == 1
        assert not metrics.payment_failures
    finally:
        await env.run.stores.close()


async def test_replayed_answers_record_nothing_new(env: Env, metrics: InMemoryMetrics) -> None:
    sku = env.skus[0]
    await set_stock(env.run, sku, 10)
    paid = await cart_with(env.run, (sku, 1))
    declined = await cart_with(env.run, (sku, 1))
    empty = await cart_with(env.run)
    # Concurrent requests with one key share one run: one order reported.
    first, second = await asyncio.gather(
        checkout(env, body(paid), "key-replay-paid"), checkout(env, body(paid), "key-replay-paid")
    )
    assert first.body["order_id"] == second.body["order_id"]
    await checkout(env, body(declined, token="tok_decline"), "key-replay-declined")
    await checkout(env, body(empty), "key-replay-empty")
    before = (
        metrics.carts_created,
        list(metrics.orders),
        dict(metrics.payment_failures),
        dict(metrics.checkout_refusals),
    )
    assert len(before[1]) == 1
    assert before[2:] == ({"payment_declined": 1}, {"cart_empty": 1})

    replays = [
        await checkout(env, body(paid), "key-replay-paid"),
        await checkout(env, body(declined, token="tok_decline"), "key-replay-declined"),
        await checkout(env, body(empty), "key-replay-empty"),
    ]
    assert all(answer.replayed for answer in replays)
    # Another replica replaying from the store reports nothing either.
    other = service_with(env, metrics)
    again = await other.checkout(body(paid), "key-replay-paid", render)
    assert again.replayed
    after = (
        metrics.carts_created,
        list(metrics.orders),
        dict(metrics.payment_failures),
        dict(metrics.checkout_refusals),
    )
    assert after == before


async def test_refusals_record_their_code(env: Env, metrics: InMemoryMetrics) -> None:
    sku = env.skus[0]
    await set_stock(env.run, sku, 1)
    empty = await cart_with(env.run)
    too_many = await cart_with(env.run, (sku, 2))
    answer = await checkout(env, body(empty), "key-refuse-empty")
    assert answer.status >= 400
    answer = await checkout(env, body(too_many), "key-refuse-stock")
    assert answer.status >= 400
    assert metrics.checkout_refusals == {"cart_empty": 1, "insufficient_stock": 1}
    assert metrics.orders_placed == 0
    assert not metrics.payment_failures
