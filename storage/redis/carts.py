"""Cart checkpoints in Redis: one string key per cart holding its snapshot as JSON."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx

from storage.carts import CartSnapshot
from storage.errors import StoreIntegrityError
from storage.redis.client import RedisClient
from storage.redis.codec import decode_object, encode_object

# Lua numbers are doubles: larger versions would compare inexactly inside the script.
_MAX_VERSION = 2**53

# KEYS[1] cart key; ARGV: snapshot JSON, its version, TTL in seconds.
# The stored version is read from the stored JSON itself, so the value stays a plain
# snapshot that load() returns as is. A stored value that is not a snapshot (wrong type,
# not JSON, no numeric version) is replaced: the live cart in the shard is the truth, and
# refusing would leave the cart without any checkpoint.
_SAVE_SCRIPT = """
local current = redis.pcall('GET', KEYS[1])
if type(current) == 'string' then
  local ok, doc = pcall(cjson.decode, current)
  if ok and type(doc) == 'table' and type(doc['version']) == 'number'
      and doc['version'] > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""
_SAVE_SHA = hashlib.sha1(_SAVE_SCRIPT.encode()).hexdigest()


class RedisCartCheckpoints:
    """CartCheckpointStore on Redis, keys ``{prefix}cart:{id}``.

    ``save_many`` sends one EVALSHA per cart in a single non-transactional pipeline: each
    script run is atomic for its cart, and without MULTI the carts need not share a hash
    slot. The pipeline is not chunked, so the caller's flush size bounds its size.
    ``close`` closes the client, including for other stores sharing it.
    """

    def __init__(self, client: RedisClient) -> None:
        self._client = client

    async def save_many(self, snapshots: Sequence[CartSnapshot], ttl_s: int) -> None:
        if type(ttl_s) is not int or ttl_s < 1:
            raise ValueError("ttl_s must be an integer >= 1")
        batch = [
            (self._client.key("cart", cart_id), payload, version)
            for cart_id, (version, payload) in _newest_by_id(snapshots).items()
        ]
        if not batch:
            return
        with self._client.errors(f"save {len(batch)} carts"):
            results = await self._run(batch, ttl_s)
            # The script cache is empty after a server restart, failover or SCRIPT
            # FLUSH. Loading it up front instead would cost a round trip per call.
            retry = [item for item, r in zip(batch, results, strict=True) if _no_script(r)]
            if retry:
                await self._client.redis().script_load(_SAVE_SCRIPT)
                results = [r for r in results if not _no_script(r)]
                results += await self._run(retry, ttl_s)
            for result in results:
                if isinstance(result, Exception):
                    raise result

    async def load(self, cart_id: str) -> CartSnapshot | None:
        with self._client.errors("load cart"):
            raw = await self._client.redis().get(self._client.key("cart", cart_id))
        return None if raw is None else decode_object(raw, f"cart {cart_id!r}")

    async def delete(self, cart_id: str) -> None:
        with self._client.errors("delete cart"):
            await self._client.redis().delete(self._client.key("cart", cart_id))

    async def close(self) -> None:
        await self._client.close()

    async def _run(self, batch: list[tuple[str, bytes, int]], ttl_s: int) -> list[Any]:
        pipe = self._client.redis().pipeline(transaction=False)
        for key, payload, version in batch:
            pipe.evalsha(_SAVE_SHA, 1, key, payload, version, ttl_s)
        # Errors come back in the list, so every reply is read and NOSCRIPT can be told
        # apart from real failures.
        return await pipe.execute(raise_on_error=False)


def _newest_by_id(snapshots: Sequence[CartSnapshot]) -> dict[str, tuple[int, bytes]]:
    """Validate and encode every snapshot before anything is sent; keep the newest per id
    (the later one on equal versions, as the caller produced it later)."""
    newest: dict[str, tuple[int, bytes]] = {}
    for snapshot in snapshots:
        cart_id = snapshot.get("id") if isinstance(snapshot, dict) else None
        if not isinstance(cart_id, str) or not cart_id:
            raise StoreIntegrityError("cart snapshot needs a non-empty string id")
        version = snapshot.get("version")
        if type(version) is not int or not 0 <= version < _MAX_VERSION:
            raise StoreIntegrityError(
                f"cart {cart_id!r}: snapshot version must be an integer in [0, 2**53)"
            )
        payload = encode_object(snapshot, f"cart {cart_id!r}")
        held = newest.get(cart_id)
        if held is None or held[0] <= version:
            newest[cart_id] = (version, payload)
    return newest


def _no_script(result: object) -> bool:
    return isinstance(result, rx.NoScriptError)
