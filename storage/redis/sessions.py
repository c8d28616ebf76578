"""Sessions and one-shot tokens in Redis: one string key per session holding JSON."""

from __future__ import annotations

from storage.carts import SessionData
from storage.redis.client import RedisClient
from storage.redis.codec import decode_object, encode_object


class RedisSessionStore:
    """SessionStore on Redis, keys ``{prefix}session:{id}``; expiry is Redis's own.

    ``close`` closes the client, including for other stores sharing it.
    """

    def __init__(self, client: RedisClient) -> None:
        self._client = client

    async def put(self, session_id: str, data: SessionData, ttl_s: int) -> None:
        if type(ttl_s) is not int or ttl_s < 1:
            raise ValueError("ttl_s must be an integer >= 1")
        payload = encode_object(data, "session data")
        with self._client.errors("put session"):
            await self._client.redis().set(self._key(session_id), payload, ex=ttl_s)

    async def get(self, session_id: str) -> SessionData | None:
        with self._client.errors("get session"):
            raw = await self._client.redis().get(self._key(session_id))
        return None if raw is None else decode_object(raw, "session")

    async def delete(self, session_id: str) -> None:
        with self._client.errors("delete session"):
            await self._client.redis().delete(self._key(session_id))

    async def get_and_delete(self, session_id: str) -> SessionData | None:
        # GETDEL (Redis >= 6.2) is one command, so two concurrent redeemers of a token
        # cannot both read it.
        with self._client.errors("take session"):
            raw = await self._client.redis().getdel(self._key(session_id))
        return None if raw is None else decode_object(raw, "session")

    async def close(self) -> None:
        await self._client.close()

    def _key(self, session_id: str) -> str:
        # An empty id would make every caller share one key.
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session id must be a non-empty string")
        return self._client.key("session", session_id)
