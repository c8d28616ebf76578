from __future__ import annotations

import hashlib
import secrets
from typing import Any

import orjson
import pytest
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection

from actors.domain.cart import Cart, CartLimits
from storage.carts import CartCheckpointStore
from storage.errors import StoreIntegrityError
from storage.redis import carts as carts_module
from storage.redis.carts import RedisCartCheckpoints
from storage.redis.client import RedisClient

TTL_S = 3600


@pytest.fixture
def store(client: RedisClient) -> RedisCartCheckpoints:
    return RedisCartCheckpoints(client)


def cart_id() -> str:
    return f"cart-{secrets.token_hex(8)}"


def snapshot(cid: str, version: int, *, sku: str = "SKU-1") -> dict[str, Any]:
    return {
        "id": cid,
        "customer_id": None,
        "lines": [{"sku": sku, "quantity": version or 1}],
        "created_at": 1_700_000_000.0,
        "updated_at": 1_700_000_000.0 + version,
        "version": version,
    }


class Wire:
    """Counts what reaches the socket: one packed send is one round trip."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sends = 0
        self.executes = 0
        send = AbstractConnection.send_packed_command
        execute = Pipeline.execute

        async def counted_send(conn: AbstractConnection, *args: Any, **kwargs: Any) -> None:
            self.sends += 1
            await send(conn, *args, **kwargs)

        async def counted_execute(pipe: Pipeline, *args: Any, **kwargs: Any) -> Any:
            self.executes += 1
            return await execute(pipe, *args, **kwargs)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counted_send)
        monkeypatch.setattr(Pipeline, "execute", counted_execute)


def test_satisfies_the_interface(client: RedisClient) -> None:
    _: CartCheckpointStore = RedisCartCheckpoints(client)


async def test_round_trip_of_a_real_cart(store: RedisCartCheckpoints) -> None:
    cart = Cart.new(cart_id(), "customer-7", 1_700_000_000.5)
    cart.add("SKU-1", 2, CartLimits(), 1_700_000_001.25)
    cart.add("SKU-2", 1, CartLimits(), 1_700_000_002.0)
    await store.save_many([cart.snapshot()], TTL_S)
    loaded = await store.load(cart.id)
    assert loaded == cart.snapshot()
    assert loaded is not None
    assert Cart.from_snapshot(loaded) == cart


async def test_stored_as_json_under_the_prefix(
    store: RedisCartCheckpoints, client: RedisClient, prefix: str
) -> None:
    cid = cart_id()
    await store.save_many([snapshot(cid, 1)], TTL_S)
    raw = await client.redis().get(f"{prefix}cart:{cid}")
    assert raw is not None
    assert orjson.loads(raw) == snapshot(cid, 1)


async def test_load_of_a_missing_cart_is_none(store: RedisCartCheckpoints) -> None:
    assert await store.load(cart_id()) is None


async def test_newer_version_replaces_older(store: RedisCartCheckpoints) -> None:
    cid = cart_id()
    await store.save_many([snapshot(cid, 3)], TTL_S)
    await store.save_many([snapshot(cid, 5)], TTL_S)
    assert await store.load(cid) == snapshot(cid, 5)


async def test_older_version_never_overwrites_newer(store: RedisCartCheckpoints) -> None:
    cid = cart_id()
    await store.save_many([snapshot(cid, 5)], TTL_S)
    await store.save_many([snapshot(cid, 3, sku="SKU-OLD")], TTL_S)
    assert await store.load(cid) == snapshot(cid, 5)


@pytest.mark.parametrize("order", [(5, 3), (3, 5)])
async def test_newest_wins_within_one_call(
    store: RedisCartCheckpoints, order: tuple[int, int]
) -> None:
    cid, other = cart_id(), cart_id()
    await store.save_many(
        [snapshot(cid, order[0]), snapshot(other, 1), snapshot(cid, order[1], sku="SKU-B")],
        TTL_S,
    )
    loaded = await store.load(cid)
    assert loaded is not None
    assert loaded["version"] == 5
    assert await store.load(other) == snapshot(other, 1)


async def test_guard_is_server_side(
    store: RedisCartCheckpoints, client: RedisClient, prefix: str
) -> None:
    # Another writer (e.g. a shard that took over the cart) stored v9 meanwhile.
    cid = cart_id()
    await client.redis().set(f"{prefix}cart:{cid}", orjson.dumps(snapshot(cid, 9)))
    await store.save_many([snapshot(cid, 4)], TTL_S)
    assert await store.load(cid) == snapshot(cid, 9)


async def test_equal_version_is_rewritten(store: RedisCartCheckpoints) -> None:
    cid = cart_id()
    await store.save_many([snapshot(cid, 2)], TTL_S)
    again = snapshot(cid, 2) | {"customer_id": "c-1"}
    await store.save_many([again], TTL_S)
    assert await store.load(cid) == again


async def test_ttl_is_set_and_refreshed(
    store: RedisCartCheckpoints, client: RedisClient, prefix: str
) -> None:
    cid = cart_id()
    key = f"{prefix}cart:{cid}"
    await store.save_many([snapshot(cid, 1)], 100)
    assert 90_000 < await client.redis().pttl(key) <= 100_000
    # Time passing, without waiting for it.
    await client.redis().pexpire(key, 5_000)
    await store.save_many([snapshot(cid, 2)], 100)
    assert 90_000 < await client.redis().pttl(key) <= 100_000
    await client.redis().pexpire(key, 5_000)
    await store.save_many([snapshot(cid, 2)], 200)
    assert 190_000 < await client.redis().pttl(key) <= 200_000


async def test_refused_stale_write_leaves_ttl_alone(
    store: RedisCartCheckpoints, client: RedisClient, prefix: str
) -> None:
    cid = cart_id()
    key = f"{prefix}cart:{cid}"
    await store.save_many([snapshot(cid, 5)], 100)
    await client.redis().pexpire(key, 5_000)
    await store.save_many([snapshot(cid, 3)], 100)
    assert 0 < await client.redis().pttl(key) <= 5_000


async def test_save_many_of_500_carts_is_one_round_trip(
    store: RedisCartCheckpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [cart_id() for _ in range(500)]
    # Connect (and warm the script cache) first, so only the save is counted.
    await store.save_many([snapshot(ids[0], 0)], TTL_S)
    wire = Wire(monkeypatch)
    await store.save_many([snapshot(cid, 1) for cid in ids], TTL_S)
    assert (wire.executes, wire.sends) == (1, 1)
    monkeypatch.undo()
    loaded = [await store.load(cid) for cid in (ids[0], ids[250], ids[-1])]
    assert [c["version"] if c else None for c in loaded] == [1, 1, 1]


async def test_empty_save_sends_nothing(
    store: RedisCartCheckpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    wire = Wire(monkeypatch)
    await store.save_many([], TTL_S)
    assert (wire.executes, wire.sends) == (0, 0)


async def test_reloads_the_script_when_the_server_lost_it(
    store: RedisCartCheckpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A script text the server has never seen stands in for SCRIPT FLUSH or a restart,
    # which would disturb other users of a shared server.
    script = carts_module._SAVE_SCRIPT + f"-- {secrets.token_hex(8)}\n"
    monkeypatch.setattr(carts_module, "_SAVE_SCRIPT", script)
    monkeypatch.setattr(carts_module, "_SAVE_SHA", hashlib.sha1(script.encode()).hexdigest())
    cid = cart_id()
    await store.save_many([snapshot(cid, 7)], TTL_S)
    await store.save_many([snapshot(cid, 6)], TTL_S)
    assert await store.load(cid) == snapshot(cid, 7)


async def test_delete(store: RedisCartCheckpoints) -> None:
    cid = cart_id()
    await store.save_many([snapshot(cid, 1)], TTL_S)
    await store.delete(cid)
    assert await store.load(cid) is None
    await store.delete(cid)


@pytest.mark.parametrize(
    "bad",
    [
        {"version": 1},
        {"id": "", "version": 1},
        {"id": "x" * 16},
        {"id": "x" * 16, "version": "1"},
        {"id": "x" * 16, "version": -1},
        {"id": "x" * 16, "version": True},
        {"id": "x" * 16, "version": 2**53},
        {"id": "x" * 16, "version": 1, "lines": {1, 2}},
    ],
)
async def test_malformed_snapshot_refuses_the_whole_batch(
    store: RedisCartCheckpoints, bad: dict[str, Any]
) -> None:
    good = cart_id()
    with pytest.raises(StoreIntegrityError):
        await store.save_many([snapshot(good, 1), bad], TTL_S)
    assert await store.load(good) is None


async def test_ttl_must_be_positive(store: RedisCartCheckpoints) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await store.save_many([snapshot(cart_id(), 1)], 0)


async def test_corrupt_checkpoint_fails_load_and_is_replaced_by_save(
    store: RedisCartCheckpoints, client: RedisClient, prefix: str
) -> None:
    cid, hashed = cart_id(), cart_id()
    await client.redis().set(f"{prefix}cart:{cid}", b"{not json")
    await client.redis().hset(f"{prefix}cart:{hashed}", "version", 99)
    with pytest.raises(StoreIntegrityError, match="not JSON"):
        await store.load(cid)
    with pytest.raises(StoreIntegrityError, match="WRONGTYPE"):
        await store.load(hashed)
    await store.save_many([snapshot(cid, 1), snapshot(hashed, 1)], TTL_S)
    assert await store.load(cid) == snapshot(cid, 1)
    assert await store.load(hashed) == snapshot(hashed, 1)


async def test_prefix_isolation(redis_url: str, session_prefix: str) -> None:
    token = secrets.token_hex(8)
    cid = f"cart-{token}"
    a = RedisClient(redis_url, prefix=f"{session_prefix}a-{token}:")
    b = RedisClient(redis_url, prefix=f"{session_prefix}b-{token}:")
    try:
        await RedisCartCheckpoints(a).save_many([snapshot(cid, 1)], TTL_S)
        assert await RedisCartCheckpoints(b).load(cid) is None
        assert await RedisCartCheckpoints(a).load(cid) == snapshot(cid, 1)
        await RedisCartCheckpoints(b).delete(cid)
        assert await RedisCartCheckpoints(a).load(cid) == snapshot(cid, 1)
        # Every key anywhere on the server that mentions the id is under a's prefix.
        keys = [k async for k in a.redis().scan_iter(match=f"*{token}*", count=1000)]
        assert keys == [f"{a.prefix}cart:{cid}".encode()]
    finally:
        await a.close()
        await b.close()
