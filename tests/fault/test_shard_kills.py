"""Shard actors killed under load: nothing acknowledged is lost, nothing is oversold.

Every client retries an operation with the same operation id (and the same reservation
id) until it gets a definite answer, as a real caller must after "outcome unknown".
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import pytest
import ray

from actors.domain.errors import DomainError, ErrorCode
from actors.kinds import ShardKind, actor_name
from feira.stores import open_configured_stores

pytestmark = pytest.mark.fault

UNKNOWN = {ErrorCode.SHARD_UNAVAILABLE, ErrorCode.SHARD_TIMEOUT, ErrorCode.STORE_UNAVAILABLE}


def op() -> str:
    return uuid.uuid4().hex


async def definite(shard_client: Any, kind: ShardKind, key: str, name: str, *args: Any) -> Any:
    """Call until the outcome is known; returns the value or the refusal's code."""
    for _ in range(200):
        try:
            return await shard_client.call(kind, key, name, *args)
        except DomainError as error:
            if error.code not in UNKNOWN:
                return error.code
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} on {key} never got a definite answer")


async def killer(
    settings: Any,
    kinds: list[ShardKind],
    every_s: float,
    stop: asyncio.Event,
    kill_times: list[float] | None = None,
) -> int:
    counts = {ShardKind.CART: settings.cart_shards, ShardKind.INVENTORY: settings.inventory_shards}
    kills = 0
    rng = random.Random(7)
    while not stop.is_set():
        await asyncio.sleep(every_s)
        kind = rng.choice(kinds)
        name = actor_name(kind, rng.randrange(counts[kind]))
        ray.kill(ray.get_actor(name, namespace=settings.namespace), no_restart=False)
        kills += 1
        if kill_times is not None:
            kill_times.append(time.monotonic())
    return kills


async def test_reservations_survive_inventory_kills(shard_client: Any, seeded: Any) -> None:
    skus = [f"FAULT-{uuid.uuid4().hex[:6]}-{i}" for i in range(6)]
    for sku in skus:
        await definite(shard_client, ShardKind.INVENTORY, sku, "set_on_hand", op(), sku, 40)
    stop = asyncio.Event()
    kill_task = asyncio.create_task(killer(seeded, [ShardKind.INVENTORY], 1.5, stop))
    acked: dict[str, set[str]] = {sku: set() for sku in skus}

    async def shopper(n: int) -> None:
        rng = random.Random(n)
        for i in range(12):
            await asyncio.sleep(rng.uniform(0.1, 0.4))
            sku = rng.choice(skus)
            rid = f"r-{n}-{i}"
            outcome = await definite(
                shard_client, ShardKind.INVENTORY, sku, "reserve", op(), rid, sku, 1
            )
            if isinstance(outcome, dict):
                acked[sku].add(rid)
            else:
                assert outcome is ErrorCode.INSUFFICIENT_STOCK

    await asyncio.gather(*(shopper(n) for n in range(30)))
    stop.set()
    kills = await kill_task
    levels = await shard_client.fanout(ShardKind.INVENTORY, skus, "stock")
    stores = open_configured_stores(seeded)
    try:
        stored = await stores.stock.load(skus)
    finally:
        await stores.close()
    for sku in skus:
        level = levels[sku]
        assert level["on_hand"] - level["reserved"] - level["sold"] >= 0
        assert level["reserved"] == len(acked[sku]), (sku, level, len(acked[sku]))
        record, reservations = stored[sku]
        assert (record.on_hand, record.reserved, record.sold) == (40, len(acked[sku]), 0)
        assert {r.id for r in reservations} == acked[sku]
    total = sum(len(a) for a in acked.values())
    print(f"\ninventory kills: {kills}; reservations acknowledged: {total}; "
          f"per SKU stored == acknowledged for {len(skus)} SKUs")
    assert kills >= 2


async def test_flash_sale_with_kills_sells_exactly_the_stock(
    shard_client: Any, seeded: Any
) -> None:
    sku = f"FLASH-{uuid.uuid4().hex[:8]}"
    units = 20
    await definite(shard_client, ShardKind.INVENTORY, sku, "set_on_hand", op(), sku, units)
    stop = asyncio.Event()
    kill_task = asyncio.create_task(killer(seeded, [ShardKind.INVENTORY], 1.0, stop))

    async def buyer(n: int) -> bool:
        await asyncio.sleep(random.Random(n).uniform(0, 3))
        outcome = await definite(
            shard_client, ShardKind.INVENTORY, sku, "reserve", op(), f"flash-{n}", sku, 1
        )
        if isinstance(outcome, dict):
            return True
        assert outcome is ErrorCode.INSUFFICIENT_STOCK
        return False

    wins = await asyncio.gather(*(buyer(n) for n in range(300)))
    stop.set()
    kills = await kill_task
    level = (await shard_client.fanout(ShardKind.INVENTORY, [sku], "stock"))[sku]
    print(f"\nflash sale: {sum(wins)} of 300 buyers reserved {units} units; kills: {kills}; "
          f"oversold: {max(0, sum(wins) - units)}")
    assert sum(wins) == units
    assert level == {"on_hand": units, "reserved": units, "sold": 0, "available": 0}
    assert kills >= 2


async def test_carts_survive_cart_shard_kills(shard_client: Any, seeded: Any) -> None:
    carts = [uuid.uuid4().hex + "fault" for _ in range(40)]
    for cart_id in carts:
        await definite(shard_client, ShardKind.CART, cart_id, "create", op(), cart_id, None)
    stop = asyncio.Event()
    kill_times: list[float] = []
    kill_task = asyncio.create_task(killer(seeded, [ShardKind.CART], 1.0, stop, kill_times))
    last_acked: dict[str, Any] = {}
    acked_at: dict[str, float] = {}
    history: dict[str, list[Any]] = {cart_id: [[]] for cart_id in carts}

    async def shopper(cart_id: str) -> None:
        for i in range(15):
            outcome = await definite(
                shard_client, ShardKind.CART, cart_id, "add", op(), cart_id, f"SKU-{i % 4}", 1
            )
            if isinstance(outcome, dict):
                last_acked[cart_id] = outcome
                acked_at[cart_id] = time.monotonic()
                history[cart_id].append(outcome["lines"])
            await asyncio.sleep(0.15)

    await asyncio.gather(*(shopper(c) for c in carts))
    stop.set()
    kills = await kill_task
    # Changes older than the checkpoint lag are durable; wait past it, then kill every
    # cart shard once more so what follows is read back from Redis.
    lag_s = seeded.cart_checkpoint_lag_ms / 1000
    await asyncio.sleep(lag_s + 0.5)
    for i in range(seeded.cart_shards):
        ray.kill(
            ray.get_actor(actor_name(ShardKind.CART, i), namespace=seeded.namespace),
            no_restart=False,
        )
    # By design a kill may lose a change younger than the lag (plus scheduling slack on a
    # loaded 2-core machine): such a cart must still read back one of its acknowledged
    # states, never an invented one. Every other cart must read back its last one.
    window_s = lag_s + 0.5
    mismatched, in_window = [], 0
    for cart_id in carts:
        now = await definite(shard_client, ShardKind.CART, cart_id, "get", cart_id)
        if not isinstance(now, ErrorCode) and now["lines"] == last_acked[cart_id]["lines"]:
            continue
        t = acked_at[cart_id]
        lost_young = any(t <= k <= t + window_s for k in kill_times)
        if lost_young and not isinstance(now, ErrorCode) and now["lines"] in history[cart_id]:
            in_window += 1
            continue
        mismatched.append(cart_id)
    print(f"\ncart kills: {kills + seeded.cart_shards}; carts checked: {len(carts)}; "
          f"lost or changed: {len(mismatched)}; last change lost inside the lag window "
          f"(allowed): {in_window}")
    assert mismatched == []
