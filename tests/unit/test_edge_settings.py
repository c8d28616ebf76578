"""Every per-replica cache of the edge is bounded by a setting."""

from __future__ import annotations

import pytest

from actors.domain.rate_limit import InProcessLimiter, RatePlan
from api.access import VerifiedTokens
from deployments.edge import limiter
from feira.settings import Settings
from tests.tokens import TOKENS


async def test_the_in_memory_limiter_keeps_at_most_the_configured_buckets() -> None:
    built = limiter(Settings(rate_limit_local_keys=1_234, redis_url=None))
    assert isinstance(built, InProcessLimiter)
    for i in range(5_000):
        await built.check(f"ip:{i}", RatePlan(1.0, 1), now=1000.0)
    assert 1_000 <= len(built) <= 1_234


def test_verified_tokens_keep_at_most_their_size() -> None:
    cache = VerifiedTokens(TOKENS, size=100)
    for i in range(300):
        token = TOKENS.issue_access(f"cus_{i:04d}", "customer", ("cart",), ttl_s=600)
        cache.principal(token)
    assert len(cache) <= 100


@pytest.mark.parametrize("field", ["edge_cache_entries", "rate_limit_local_keys"])
def test_cache_bounds_refuse_nonsense(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Settings(**{field: 0})
