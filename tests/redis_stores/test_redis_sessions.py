from __future__ import annotations

import asyncio
import secrets

import pytest

from storage.carts import SessionStore
from storage.errors import StoreIntegrityError
from storage.redis.client import RedisClient
from storage.redis.sessions import RedisSessionStore


@pytest.fixture
def sessions(client: RedisClient) -> RedisSessionStore:
    return RedisSessionStore(client)


def sid() -> str:
    return secrets.token_urlsafe(16)


def test_satisfies_the_interface(client: RedisClient) -> None:
    _: SessionStore = RedisSessionStore(client)


async def test_put_get_delete(sessions: RedisSessionStore) -> None:
    s = sid()
    data = {"customer_id": "c-1", "cart_id": "cart-0123456789abcdef", "n": 3, "ok": True}
    await sessions.put(s, data, 60)
    assert await sessions.get(s) == data
    await sessions.put(s, {"customer_id": "c-2"}, 60)
    assert await sessions.get(s) == {"customer_id": "c-2"}
    await sessions.delete(s)
    assert await sessions.get(s) is None
    await sessions.delete(s)


async def test_missing_session_is_none(sessions: RedisSessionStore) -> None:
    assert await sessions.get(sid()) is None
    assert await sessions.get_and_delete(sid()) is None


async def test_ttl_is_set_on_every_put(
    sessions: RedisSessionStore, client: RedisClient, prefix: str
) -> None:
    s = sid()
    key = f"{prefix}session:{s}"
    await sessions.put(s, {"a": 1}, 30)
    assert 25_000 < await client.redis().pttl(key) <= 30_000
    await sessions.put(s, {"a": 2}, 600)
    assert 590_000 < await client.redis().pttl(key) <= 600_000


async def test_session_expires(sessions: RedisSessionStore, client: RedisClient) -> None:
    s = sid()
    await sessions.put(s, {"a": 1}, 60)
    # Expiry itself is Redis's: shorten it rather than wait a whole second.
    await client.redis().pexpire(client.key("session", s), 20)
    await asyncio.sleep(0.05)
    assert await sessions.get(s) is None


async def test_get_and_delete_is_one_shot(sessions: RedisSessionStore) -> None:
    token = sid()
    await sessions.put(token, {"purpose": "reset", "customer_id": "c-9"}, 60)
    results = await asyncio.gather(*(sessions.get_and_delete(token) for _ in range(20)))
    assert [r for r in results if r is not None] == [{"purpose": "reset", "customer_id": "c-9"}]
    assert await sessions.get(token) is None


async def test_refuses_bad_arguments(sessions: RedisSessionStore) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await sessions.put(sid(), {}, 0)
    with pytest.raises(ValueError, match="session id"):
        await sessions.get("")
    with pytest.raises(StoreIntegrityError, match="JSON"):
        await sessions.put(sid(), {"when": object()}, 60)


async def test_wrong_type_is_an_integrity_error(
    sessions: RedisSessionStore, client: RedisClient
) -> None:
    s = sid()
    await client.redis().rpush(client.key("session", s), b"x")
    with pytest.raises(StoreIntegrityError, match="WRONGTYPE"):
        await sessions.get(s)
    with pytest.raises(StoreIntegrityError, match="WRONGTYPE"):
        await sessions.get_and_delete(s)


async def test_prefix_isolation(redis_url: str, session_prefix: str) -> None:
    token = secrets.token_hex(8)
    a = RedisClient(redis_url, prefix=f"{session_prefix}a-{token}:")
    b = RedisClient(redis_url, prefix=f"{session_prefix}b-{token}:")
    try:
        await RedisSessionStore(a).put(token, {"a": 1}, 60)
        assert await RedisSessionStore(b).get(token) is None
        assert await RedisSessionStore(b).get_and_delete(token) is None
        assert await RedisSessionStore(a).get(token) == {"a": 1}
        keys = [k async for k in a.redis().scan_iter(match=f"*{token}*", count=1000)]
        assert keys == [f"{a.prefix}session:{token}".encode()]
    finally:
        await a.close()
        await b.close()
