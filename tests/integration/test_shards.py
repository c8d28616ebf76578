"""Shard actors on a real local Ray cluster, reached through the shard client."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import ray

from actors.domain.errors import DomainError, ErrorCode
from actors.kinds import ShardKind, actor_name
from feira.stores import open_configured_stores

pytestmark = pytest.mark.integration


def op() -> str:
    return uuid.uuid4().hex


async def test_concurrent_reservations_never_oversell(shard_client: Any, seeded: Any) -> None:
    sku = f"FLASH-{uuid.uuid4().hex[:8]}"
    await shard_client.call(ShardKind.INVENTORY, sku, "set_on_hand", op(), sku, 25)

    async def buyer(i: int) -> str:
        try:
            await shard_client.call(ShardKind.INVENTORY, sku, "reserve", op(), f"r{i}", sku, 1)
        except DomainError as error:
            return error.code.value
        return "reserved"

    outcomes = await asyncio.gather(*(buyer(i) for i in range(200)))
    assert outcomes.count("reserved") == 25
    assert outcomes.count(ErrorCode.INSUFFICIENT_STOCK.value) == 175
    level = (await shard_client.fanout(ShardKind.INVENTORY, [sku], "stock"))[sku]
    assert level == {"on_hand": 25, "reserved": 25, "sold": 0, "available": 0}
    # What the shard acknowledged is what the store holds.
    stores = open_configured_stores(seeded)
    try:
        stored, reservations = (await stores.stock.load([sku]))[sku]
        assert (stored.on_hand, stored.reserved, stored.sold) == (25, 25, 0)
        assert len(reservations) == 25
    finally:
        await stores.close()
    stats = shard_client.stats()["inventory"]
    assert stats["ops_per_call"] > 1, stats


async def test_same_op_id_applies_once(shard_client: Any) -> None:
    sku = f"IDEM-{uuid.uuid4().hex[:8]}"
    op_id = op()
    first = await shard_client.call(ShardKind.INVENTORY, sku, "receive", op_id, sku, 5)
    again = await shard_client.call(ShardKind.INVENTORY, sku, "receive", op_id, sku, 5)
    assert first == again
    level = (await shard_client.fanout(ShardKind.INVENTORY, [sku], "stock"))[sku]
    assert level["on_hand"] == 5


async def test_killed_inventory_shard_restarts_with_acknowledged_stock(
    shard_client: Any, seeded: Any
) -> None:
    sku = f"KILL-{uuid.uuid4().hex[:8]}"
    await shard_client.call(ShardKind.INVENTORY, sku, "set_on_hand", op(), sku, 10)
    await shard_client.call(ShardKind.INVENTORY, sku, "reserve", op(), f"r-{sku}", sku, 3)
    shard = shard_client.shard_for(ShardKind.INVENTORY, sku)
    handle = ray.get_actor(actor_name(ShardKind.INVENTORY, shard), namespace=seeded.namespace)
    ray.kill(handle, no_restart=False)
    # The client retries through the restart; the shard reloads the SKU from the store.
    level = (await shard_client.fanout(ShardKind.INVENTORY, [sku], "stock"))[sku]
    assert level == {"on_hand": 10, "reserved": 3, "sold": 0, "available": 7}
    committed = await shard_client.call(
        ShardKind.INVENTORY, sku, "commit", op(), f"r-{sku}", sku
    )
    assert committed["available"] == 7


async def test_reservation_expires_and_releases(shard_client: Any) -> None:
    sku = f"TTL-{uuid.uuid4().hex[:8]}"
    await shard_client.call(ShardKind.INVENTORY, sku, "set_on_hand", op(), sku, 4)
    await shard_client.call(ShardKind.INVENTORY, sku, "reserve", op(), f"r-{sku}", sku, 4, 0.3)
    level = (await shard_client.fanout(ShardKind.INVENTORY, [sku], "stock"))[sku]
    assert level["available"] == 0
    for _ in range(50):
        await asyncio.sleep(0.1)
        level = (await shard_client.fanout(ShardKind.INVENTORY, [sku], "stock"))[sku]
        if level["available"] == 4:
            break
    assert level == {"on_hand": 4, "reserved": 0, "sold": 0, "available": 4}


async def test_cart_ops_coalesce_per_shard(shard_client: Any) -> None:
    cart_ids = [uuid.uuid4().hex + "cart" for _ in range(40)]
    await asyncio.gather(
        *(shard_client.call(ShardKind.CART, c, "create", op(), c, None) for c in cart_ids)
    )
    before = shard_client.stats()["cart"]
    snaps = await asyncio.gather(
        *(
            shard_client.call(ShardKind.CART, c, "add", op(), c, f"SKU-{i % 5}", 1)
            for c in cart_ids
            for i in range(5)
        )
    )
    assert len(snaps) == 200
    after = shard_client.stats()["cart"]
    calls = after["calls"] - before["calls"]
    assert calls <= 20, f"200 ops took {calls} calls"
    cart = await shard_client.call(ShardKind.CART, cart_ids[0], "get", cart_ids[0])
    assert sorted(line["sku"] for line in cart["lines"]) == [f"SKU-{i}" for i in range(5)]


async def test_prices_come_from_the_store(shard_client: Any) -> None:
    quotes = await shard_client.fanout(ShardKind.PRICING, ["SKU-0000001-1", "NOPE"], "quote")
    assert set(quotes) == {"SKU-0000001-1"}
    assert isinstance(quotes["SKU-0000001-1"]["unit"], int)
