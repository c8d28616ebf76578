"""GCRA rate limiting in Redis: one key per limited subject, ``{prefix}rl:{key}``, holding
its theoretical arrival time (TAT) in microseconds of the Redis server's clock.

The whole step (read TAT, decide, write TAT) is one Lua script, so concurrent checks on a
key from any number of replicas serialise in Redis and never admit more than the plan.
The time is the server's own (``TIME``), so replicas whose clocks disagree still agree on
every decision. Redis >= 5 replicates a script's effects, not the script, so calling
``TIME`` before a write is allowed.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from redis import exceptions as rx

from actors.domain.rate_limit import EPSILON_S, Decision, RatePlan, check_cost
from storage.errors import StoreUnavailable
from storage.redis.client import RedisClient

log = logging.getLogger("feira.ratelimit.redis")

_US = 1_000_000

# KEYS[1] the subject's key; ARGV: emission interval T (us), burst, cost, epsilon (us).
# Returns {allowed 0/1, retry_after_us, remaining, reset_us}, all integers (rounded up).
# A stored value that is not a number is treated as no state: the key only ever holds a
# TAT, and refusing forever on garbage would be worse than granting one burst.
# The TTL is new_tat - now: once it has passed, tat <= now, which is the same state as no
# key at all, so expiry loses nothing (one extra millisecond covers rounding).
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local eps = tonumber(ARGV[4])
local limit = interval * burst
local raw = redis.call('GET', KEYS[1])
local tat = raw and tonumber(raw) or now
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - limit
if now + eps < allow_at then
  local remaining = math.floor((limit - (tat - now) + eps) / interval)
  if remaining < 0 then remaining = 0 end
  return {0, math.ceil(allow_at - now), remaining, math.ceil(tat - now)}
end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', ttl_ms)
local remaining = math.floor((limit - (new_tat - now) + eps) / interval)
if remaining < 0 then remaining = 0 end
return {1, 0, remaining, math.ceil(new_tat - now)}
"""
_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()


class RedisRateLimiter:
    """The same ``check`` as ``InProcessLimiter``, shared by every replica through Redis.

    When Redis is unreachable (``StoreUnavailable``) the limiter either fails open
    (``fail_open=True``, the default: the request is admitted, a ``degraded`` decision is
    returned and a warning logged) or fails closed (the ``StoreUnavailable`` propagates;
    the caller answers 503). Open is the right default for shopper traffic: a Redis outage
    must not take the shop down with it, and losing rate limiting for its duration is the
    smaller harm. Closed suits endpoints where a flood costs more than an outage (sign-in,
    token issuance). Other storage errors (auth, a key of the wrong type) always raise:
    they are misconfiguration, not an outage, and must be seen. So does an exhausted
    connection pool (more concurrent checks than ``max_connections``, redis-py's default
    being 100): size the client's pool for the replica's concurrency.

    ``close`` closes the client, including for other stores sharing it.
    """

    def __init__(self, client: RedisClient, *, fail_open: bool = True) -> None:
        self._client = client
        self._fail_open = fail_open

    @property
    def fail_open(self) -> bool:
        return self._fail_open

    async def check(
        self, key: str, plan: RatePlan, now: float | None = None, cost: int = 1
    ) -> Decision:
        """``now`` is accepted for interface parity and ignored: Redis's clock decides."""
        del now
        if not isinstance(key, str) or not key:
            raise ValueError("rate-limit key must be a non-empty string")
        check_cost(cost, plan)
        args = (
            repr(plan.interval_s * _US),
            plan.burst,
            cost,
            repr(EPSILON_S * _US),
        )
        rkey = self._client.key("rl", key)
        try:
            with self._client.errors("rate-limit check"):
                reply = await self._eval(rkey, args)
        except StoreUnavailable as exc:
            # An exhausted connection pool is this process's overload, not a Redis
            # outage, and a flood of concurrent requests causes it: failing open then
            # would let exactly the flood through.
            if not self._fail_open or isinstance(exc.__cause__, rx.MaxConnectionsError):
                raise
            log.warning("rate limiter unavailable, admitting (fail-open): %s", exc)
            return Decision(
                allowed=True,
                new_tat=None,
                retry_after_s=0.0,
                remaining=plan.burst - cost,
                reset_s=0.0,
                degraded=True,
            )
        allowed, retry_us, remaining, reset_us = (int(v) for v in reply)
        return Decision(
            allowed=bool(allowed),
            new_tat=None,
            retry_after_s=retry_us / _US,
            remaining=remaining,
            reset_s=reset_us / _US,
        )

    async def close(self) -> None:
        await self._client.close()

    async def _eval(self, rkey: str, args: tuple[Any, ...]) -> list[Any]:
        redis = self._client.redis()
        try:
            reply = await redis.evalsha(_SHA, 1, rkey, *args)
        except rx.NoScriptError:
            # Empty script cache after a restart, failover or SCRIPT FLUSH. EVAL both
            # runs and caches the script, so the next call's EVALSHA finds it.
            reply = await redis.eval(_SCRIPT, 1, rkey, *args)
        return list(reply)
