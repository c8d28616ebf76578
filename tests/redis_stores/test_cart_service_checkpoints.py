"""The cart shard's service over a real Redis: write-behind, reload, retries after restart."""

from __future__ import annotations

import asyncio
from typing import Any

from actors.cart_service import CartService
from actors.domain.cart import CartLimits
from actors.protocol import unwrap
from storage.errors import StoreUnavailable
from storage.redis.carts import RedisCartCheckpoints
from storage.redis.client import RedisClient

CART = "c" * 24


def service(client: RedisClient, lag_s: float) -> CartService:
    return CartService(
        CartLimits(10, 10), 3600, 1000, checkpoints=RedisCartCheckpoints(client), lag_s=lag_s
    )


async def test_lag_zero_is_durable_before_the_reply(client: RedisClient) -> None:
    first = service(client, 0)
    unwrap((await first.apply([("create", ("op1", CART, None))]))[0])
    unwrap((await first.apply([("add", ("op2", CART, "SKU-1", 2))]))[0])
    # A new service instance is a restarted shard: the cart comes back from Redis.
    second = service(client, 0)
    cart = unwrap((await second.apply([("get", (CART,))]))[0])
    assert cart["lines"] == [{"sku": "SKU-1", "quantity": 2}]


async def test_retry_after_restart_is_answered_not_applied(client: RedisClient) -> None:
    first = service(client, 0)
    await first.apply([("create", ("op1", CART, None))])
    await first.apply([("add", ("op-add", CART, "SKU-1", 1))])
    second = service(client, 0)
    again = unwrap((await second.apply([("add", ("op-add", CART, "SKU-1", 1))]))[0])
    assert again["lines"] == [{"sku": "SKU-1", "quantity": 1}]
    fresh = unwrap((await second.apply([("add", ("op-new", CART, "SKU-1", 1))]))[0])
    assert fresh["lines"] == [{"sku": "SKU-1", "quantity": 2}]


async def test_write_behind_coalesces_within_the_lag(client: RedisClient) -> None:
    store = RedisCartCheckpoints(client)
    calls: list[int] = []
    real = store.save_many

    async def counting(snapshots: Any, ttl_s: int) -> None:
        calls.append(len(snapshots))
        await real(snapshots, ttl_s)

    store.save_many = counting  # type: ignore[method-assign]
    svc = CartService(CartLimits(10, 10), 3600, 1000, checkpoints=store, lag_s=0.1)
    await svc.apply([("create", ("op1", CART, None))])
    for i in range(5):
        await svc.apply([("add", (f"op-{i}", CART, "SKU-1", 1))])
    assert calls == []  # nothing written before the lag
    await asyncio.sleep(0.3)
    assert calls == [1]  # one write, of the newest version
    stored = await store.load(CART)
    assert stored is not None
    assert stored["lines"] == [{"sku": "SKU-1", "quantity": 5}]


async def test_failed_synchronous_write_refuses_and_forgets(client: RedisClient) -> None:
    store = RedisCartCheckpoints(client)
    svc = CartService(CartLimits(10, 10), 3600, 1000, checkpoints=store, lag_s=0)
    await svc.apply([("create", ("op1", CART, None))])

    async def down(snapshots: Any, ttl_s: int) -> None:
        raise StoreUnavailable("redis down")

    real = store.save_many
    store.save_many = down  # type: ignore[method-assign]
    reply = (await svc.apply([("add", ("op-x", CART, "SKU-1", 1))]))[0]
    assert reply[0] is False
    assert reply[1][0] == "store_unavailable"
    store.save_many = real  # type: ignore[method-assign]
    # The retry with the same op id is applied now, on the durable cart.
    cart = unwrap((await svc.apply([("add", ("op-x", CART, "SKU-1", 1))]))[0])
    assert cart["lines"] == [{"sku": "SKU-1", "quantity": 1}]
