from __future__ import annotations

import asyncio
import logging
import secrets
import time

import pytest

from actors.domain.rate_limit import Decision, RatePlan
from storage.errors import StoreUnavailable
from storage.redis.client import RedisClient
from storage.redis.rate_limit import RedisRateLimiter


@pytest.fixture
def limiter(client: RedisClient) -> RedisRateLimiter:
    return RedisRateLimiter(client)


def kid() -> str:
    return f"key-{secrets.token_hex(6)}"


async def server_time(client: RedisClient) -> float:
    seconds, micros = await client.redis().time()
    return seconds + micros / 1_000_000


async def test_burst_then_refusal_with_exact_retry_after(limiter: RedisRateLimiter) -> None:
    plan = RatePlan(rate_per_s=0.5, burst=3)  # T = 2 s: nothing refills during the test
    k = kid()
    decisions = [await limiter.check(k, plan) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[3]
    # Refused at most a few ms after the third admission: the wait is just under T.
    assert 1.9 < refused.retry_after_s <= 2.0
    assert 5.9 < refused.reset_s <= 6.0
    assert refused.new_tat is None
    assert not refused.degraded


async def test_retry_after_is_honoured(limiter: RedisRateLimiter) -> None:
    plan = RatePlan(rate_per_s=20, burst=1)  # T = 50 ms
    k = kid()
    assert (await limiter.check(k, plan)).allowed
    refused = await limiter.check(k, plan)
    assert not refused.allowed
    await asyncio.sleep(refused.retry_after_s + 0.005)
    assert (await limiter.check(k, plan)).allowed


async def test_ttl_is_the_time_until_the_key_is_full_again(
    limiter: RedisRateLimiter, client: RedisClient, prefix: str
) -> None:
    plan = RatePlan(rate_per_s=1, burst=5)
    k = kid()
    for _ in range(3):
        await limiter.check(k, plan)
    key = f"{prefix}rl:{k}"
    # TAT = now + 3 s; the TTL is that (+1 ms rounding), less the few ms the calls took.
    assert 2_900 < await client.redis().pttl(key) <= 3_001
    # A refusal writes nothing.
    plan1 = RatePlan(rate_per_s=0.01, burst=1)
    k1 = kid()
    await limiter.check(k1, plan1)
    ttl = await client.redis().pttl(f"{prefix}rl:{k1}")
    assert not (await limiter.check(k1, plan1)).allowed
    assert await client.redis().pttl(f"{prefix}rl:{k1}") <= ttl


async def test_concurrent_checks_never_admit_more_than_the_burst(
    redis_url: str, prefix: str
) -> None:
    # A pool as large as the concurrency: 400 checks really are in flight at once.
    c = RedisClient(redis_url, prefix=prefix, max_connections=400)
    try:
        limiter = RedisRateLimiter(c)
        plan = RatePlan(rate_per_s=0.001, burst=25)  # no refill within the test
        k = kid()
        results = await asyncio.gather(*(limiter.check(k, plan) for _ in range(400)))
        assert not any(d.degraded for d in results)
        assert sum(d.allowed for d in results) == 25
        assert sorted(d.remaining for d in results if d.allowed) == list(range(25))
    finally:
        await c.close()


async def test_an_exhausted_pool_never_fails_open(redis_url: str, prefix: str) -> None:
    c = RedisClient(redis_url, prefix=prefix, max_connections=2)
    try:
        limiter = RedisRateLimiter(c, fail_open=True)
        plan = RatePlan(rate_per_s=0.001, burst=1)
        k = kid()
        results = await asyncio.gather(
            *(limiter.check(k, plan) for _ in range(50)), return_exceptions=True
        )
        decisions = [r for r in results if isinstance(r, Decision)]
        errors = [r for r in results if not isinstance(r, Decision)]
        assert errors
        assert all(isinstance(e, StoreUnavailable) for e in errors)
        assert sum(d.allowed for d in decisions) == 1
    finally:
        await c.close()


async def test_prefixes_isolate_limits(redis_url: str, prefix: str, client: RedisClient) -> None:
    other = RedisClient(redis_url, prefix=f"{prefix}other:")
    try:
        plan = RatePlan(rate_per_s=0.001, burst=2)
        a, b = RedisRateLimiter(client), RedisRateLimiter(other)
        k = kid()
        assert [(await a.check(k, plan)).allowed for _ in range(3)] == [True, True, False]
        assert [(await b.check(k, plan)).allowed for _ in range(3)] == [True, True, False]
        assert await client.redis().exists(f"{prefix}rl:{k}", f"{prefix}other:rl:{k}") == 2
    finally:
        await other.close()


async def test_garbage_in_the_key_is_treated_as_no_state(
    limiter: RedisRateLimiter, client: RedisClient
) -> None:
    k = kid()
    await client.redis().set(client.key("rl", k), "not a number", px=60_000)
    assert (await limiter.check(k, RatePlan(1, 2))).remaining == 1


async def test_script_cache_flush_is_survived(
    limiter: RedisRateLimiter, client: RedisClient
) -> None:
    plan = RatePlan(rate_per_s=0.001, burst=3)
    k = kid()
    assert (await limiter.check(k, plan)).allowed
    # Other clients of a shared server reload their scripts the same way (NOSCRIPT).
    await client.redis().script_flush()
    assert (await limiter.check(k, plan)).remaining == 1
    assert (await limiter.check(k, plan)).remaining == 0


async def test_unreachable_redis_fails_open_with_a_log(
    closed_port_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    c = RedisClient(closed_port_url, retries=0, connect_timeout_s=0.2)
    try:
        limiter = RedisRateLimiter(c)
        with caplog.at_level(logging.WARNING, logger="feira.ratelimit.redis"):
            d = await limiter.check(kid(), RatePlan(5, 3))
        assert d == Decision(True, None, 0.0, 2, 0.0, degraded=True)
        assert "fail-open" in caplog.text
    finally:
        await c.close()


async def test_unreachable_redis_fails_closed_when_asked(closed_port_url: str) -> None:
    c = RedisClient(closed_port_url, retries=0, connect_timeout_s=0.2)
    try:
        with pytest.raises(StoreUnavailable):
            await RedisRateLimiter(c, fail_open=False).check(kid(), RatePlan(5, 3))
    finally:
        await c.close()


async def test_bad_arguments(limiter: RedisRateLimiter) -> None:
    with pytest.raises(ValueError, match="key"):
        await limiter.check("", RatePlan(1, 1))
    with pytest.raises(ValueError, match="cost"):
        await limiter.check(kid(), RatePlan(1, 2), cost=3)


async def _offer(
    limiter: RedisRateLimiter, key: str, plan: RatePlan, per_s: float, until: float
) -> tuple[int, int]:
    """Send at ``per_s`` on an absolute schedule until ``until`` (monotonic); return
    (offered, admitted)."""
    offered = admitted = 0
    start = time.monotonic()
    while True:
        due = start + offered / per_s
        if due >= until:
            return offered, admitted
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        offered += 1
        admitted += (await limiter.check(key, plan)).allowed


async def test_accuracy_a_key_at_ten_times_its_plan_others_unaffected(
    limiter: RedisRateLimiter, client: RedisClient
) -> None:
    """Issue 6, item 5: a key sending 10x its plan is admitted within 1 % of
    rate x time + burst, while a key within its plan is admitted fully.

    Real time, since Redis decides with its own clock. The window is measured with the
    server's TIME just before the first request and just after the last, so it holds
    every admission and is wider than the span between them by at most a couple of
    round trips (~1 ms, i.e. < 0.1 request at 50/s): GCRA's bound ``rate*w + burst``
    must hold without slack. On the low side, a saturated key is admitted each T on the
    dot (its TAT stays ahead of the clock), but the last cell may be due between the last
    offered request and the end of the window, and the first offered request may start
    a little after the window: 2 requests of slack on top of the 1 %.
    """
    plan = RatePlan(rate_per_s=50, burst=10)
    hot, calm = kid(), kid()
    duration_s = 3.0
    t0 = await server_time(client)
    until = time.monotonic() + duration_s
    senders = [_offer(limiter, hot, plan, 50, until) for _ in range(10)]  # 500/s offered
    results = await asyncio.gather(*senders, _offer(limiter, calm, plan, 45, until))
    t1 = await server_time(client)
    hot_offered = sum(r[0] for r in results[:10])
    hot_admitted = sum(r[1] for r in results[:10])
    calm_offered, calm_admitted = results[10]

    expected = plan.rate_per_s * (t1 - t0) + plan.burst
    print(
        f"\nwindow {t1 - t0:.3f}s offered {hot_offered} admitted {hot_admitted} "
        f"expected {expected:.1f} error {(hot_admitted - expected) / expected:+.2%}; "
        f"calm {calm_admitted}/{calm_offered}"
    )
    assert hot_offered >= 9 * plan.rate_per_s * duration_s  # really ~10x the plan
    assert hot_admitted <= expected
    assert hot_admitted >= expected * 0.99 - 2
    assert calm_admitted == calm_offered
