from __future__ import annotations

import asyncio
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.domain.errors import DomainError
from actors.domain.rate_limit import (
    EPSILON_S,
    Decision,
    InProcessLimiter,
    RatePlan,
    gcra,
    headers,
)

plans = st.builds(
    RatePlan,
    rate_per_s=st.floats(min_value=0.1, max_value=1000, allow_nan=False),
    burst=st.integers(min_value=1, max_value=50),
)


def run(times: list[float], plan: RatePlan) -> list[float]:
    """Admitted arrival times of a key offered requests at ``times`` (sorted)."""
    tat: float | None = None
    admitted = []
    for now in times:
        d = gcra(tat, now, plan)
        tat = d.new_tat
        if d.allowed:
            admitted.append(now)
    return admitted


# --- plan validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(0, 1), (-1, 1), (math.inf, 1), (math.nan, 1), (1, 0), (1, 1.5), (True, 1), (1, True)],
)
def test_bad_plans_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(DomainError):
        RatePlan(rate, burst)


def test_cost_must_fit_in_the_burst() -> None:
    plan = RatePlan(10, 3)
    for cost in (0, 4, 1.0):
        with pytest.raises(ValueError, match="cost"):
            gcra(None, 0.0, plan, cost)  # type: ignore[arg-type]


# --- GCRA properties --------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    plan=plans,
    gaps=st.lists(st.floats(min_value=0, max_value=0.5, allow_nan=False), max_size=150),
)
def test_no_window_admits_more_than_rate_times_width_plus_burst(
    plan: RatePlan, gaps: list[float]
) -> None:
    times, now = [], 1000.0
    for gap in gaps:
        now += gap
        times.append(now)
    admitted = run(times, plan)
    # Every window [a_i, a_j] between two admissions is the tightest one holding them.
    for i in range(len(admitted)):
        for j in range(i, len(admitted)):
            width = admitted[j] - admitted[i]
            # EPSILON_S: admission may come 1 us early (float noise), per admission.
            bound = plan.rate_per_s * (width + EPSILON_S * (j - i + 1)) + plan.burst
            assert j - i + 1 <= bound


@settings(max_examples=200, deadline=None)
@given(plan=plans, start=st.floats(min_value=0, max_value=1e6), n=st.integers(1, 500))
def test_a_sender_at_exactly_the_rate_is_always_admitted(
    plan: RatePlan, start: float, n: int
) -> None:
    times = [start + k / plan.rate_per_s for k in range(n)]
    assert len(run(times, plan)) == n


@settings(max_examples=200, deadline=None)
@given(plan=plans, now=st.floats(min_value=0, max_value=1e6))
def test_burst_then_refusal_then_retry_after_is_exact(plan: RatePlan, now: float) -> None:
    tat = None
    for k in range(plan.burst):
        d = gcra(tat, now, plan)
        assert d.allowed
        assert d.remaining == plan.burst - k - 1
        tat = d.new_tat
    refused = gcra(tat, now, plan)
    assert not refused.allowed
    assert refused.new_tat == tat  # a refusal costs nothing
    assert refused.remaining == 0
    assert refused.retry_after_s == pytest.approx(plan.interval_s, abs=EPSILON_S)
    later = now + refused.retry_after_s
    assert gcra(tat, later, plan).allowed
    assert not gcra(tat, later - max(1e-4, 1e-3 * plan.interval_s), plan).allowed


def test_worked_example() -> None:
    plan = RatePlan(rate_per_s=2, burst=3)  # T = 0.5, tau = 1.0
    d1 = gcra(None, 10.0, plan)
    assert d1 == Decision(True, 10.5, 0.0, 2, 0.5)
    d2 = gcra(d1.new_tat, 10.0, plan)
    d3 = gcra(d2.new_tat, 10.0, plan)
    assert (d2.remaining, d3.remaining, d3.new_tat, d3.reset_s) == (1, 0, 11.5, 1.5)
    d4 = gcra(d3.new_tat, 10.2, plan)
    assert not d4.allowed
    assert d4.retry_after_s == pytest.approx(0.3)
    assert d4.reset_s == pytest.approx(1.3)
    # Idle long enough and the whole burst is back.
    assert gcra(d3.new_tat, 20.0, plan).remaining == 2


def test_cost_takes_several_cells() -> None:
    plan = RatePlan(rate_per_s=1, burst=5)
    d = gcra(None, 0.0, plan, cost=4)
    assert d.allowed
    assert d.remaining == 1
    refused = gcra(d.new_tat, 0.0, plan, cost=2)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(1.0)
    assert refused.remaining == 1


# --- in-process limiter -----------------------------------------------------------------


async def test_in_process_limiter_keeps_keys_apart() -> None:
    limiter = InProcessLimiter()
    plan = RatePlan(1, 2)
    assert [(await limiter.check("a", plan, now=0.0)).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert (await limiter.check("b", plan, now=0.0)).allowed
    assert (await limiter.check("a", plan, now=1.0)).allowed


async def test_in_process_limiter_is_atomic_under_concurrent_tasks() -> None:
    limiter = InProcessLimiter()
    plan = RatePlan(0.001, 20)
    results = await asyncio.gather(*(limiter.check("k", plan) for _ in range(500)))
    assert sum(d.allowed for d in results) == 20


async def test_expired_keys_are_evicted_first() -> None:
    limiter = InProcessLimiter(max_keys=3)
    plan = RatePlan(1, 5)  # one check: TAT = now + 1 s
    await limiter.check("old-1", plan, now=0.0)
    await limiter.check("old-2", plan, now=0.0)
    await limiter.check("live", plan, now=5.0)
    await limiter.check("live", plan, now=5.0)  # TAT 7.0
    assert len(limiter) == 3
    # At 6.0, old-1 and old-2 have expired (TAT 1.0): both go, "live" keeps its state.
    await limiter.check("new", plan, now=6.0)
    assert len(limiter) == 2
    assert (await limiter.check("live", plan, now=6.0)).remaining == 3


async def test_memory_stays_bounded_with_only_live_keys() -> None:
    limiter = InProcessLimiter(max_keys=100)
    plan = RatePlan(0.001, 5)  # nothing expires during the test
    for i in range(1000):
        await limiter.check(f"k{i}", plan, now=float(i) / 1000)
        assert len(limiter) <= 100
    # The least recently used keys went; a recent one kept its state.
    assert (await limiter.check("k999", plan, now=1.0)).remaining == 3
    assert (await limiter.check("k0", plan, now=1.0)).remaining == 4


async def test_refusals_do_not_store_new_keys_nor_grow() -> None:
    limiter = InProcessLimiter(max_keys=10)
    plan = RatePlan(1, 1)
    for _ in range(100):
        await limiter.check("same", plan, now=0.0)
    assert len(limiter) == 1


def test_limiter_arguments() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        InProcessLimiter(max_keys=0)
    with pytest.raises(ValueError, match="key"):
        asyncio.run(InProcessLimiter().check("", RatePlan(1, 1)))


# --- headers ----------------------------------------------------------------------------

_SF_ITEM = re.compile(r'^"default";r=\d+;t=\d+$')


def test_headers_when_allowed() -> None:
    plan = RatePlan(rate_per_s=2, burst=3)
    d = gcra(None, 0.0, plan)
    assert headers(d, plan) == {
        "RateLimit-Policy": '"default";q=3;w=2',
        "RateLimit": '"default";r=2;t=1',
    }


def test_headers_when_refused_carry_retry_after_rounded_up() -> None:
    plan = RatePlan(rate_per_s=0.4, burst=1)  # T = 2.5 s
    first = gcra(None, 0.0, plan)
    refused = gcra(first.new_tat, 0.1, plan)
    h = headers(refused, plan)
    assert refused.retry_after_s == pytest.approx(2.4)
    assert h["Retry-After"] == "3"
    assert h["RateLimit"] == '"default";r=0;t=3'
    assert h["RateLimit-Policy"] == '"default";q=1;w=3'
    assert _SF_ITEM.match(h["RateLimit"])


def test_retry_after_is_at_least_one_second_and_ignores_float_noise() -> None:
    plan = RatePlan(1, 1)
    assert headers(Decision(False, 1.0, 0.0004, 0, 0.0004), plan)["Retry-After"] == "1"
    assert headers(Decision(False, 3.0, 2.0000000001, 0, 2.0), plan)["Retry-After"] == "2"


def test_degraded_decision_advertises_only_the_policy() -> None:
    plan = RatePlan(50, 10)
    h = headers(Decision(True, None, 0.0, 9, 0.0, degraded=True), plan, policy="api-key")
    assert h == {"RateLimit-Policy": '"api-key";q=10;w=1'}


def test_policy_name_is_checked() -> None:
    plan = RatePlan(1, 1)
    with pytest.raises(ValueError, match="policy"):
        headers(gcra(None, 0.0, plan), plan, policy='x";q=1000')
