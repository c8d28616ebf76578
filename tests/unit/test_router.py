import asyncio

import pytest

from actors.domain.errors import DomainError, ErrorCode
from actors.kinds import ShardKind
from actors.protocol import Op, Reply, ok, refused
from actors.router import ShardRouter


class Restarting(Exception):
    pass


class FlakyShard:
    """Fails the first ``failures`` calls as if restarting, then applies ops once per op id."""

    def __init__(self, failures: int = 0, delay_s: float = 0.0) -> None:
        self.failures = failures
        self.delay_s = delay_s
        self.applied: dict[str, int] = {}
        self.calls = 0

    async def send(self, ops: list[Op]) -> list[Reply]:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if self.failures:
            self.failures -= 1
            raise Restarting
        out: list[Reply] = []
        for name, args in ops:
            if name == "bad":
                out.append(refused(DomainError(ErrorCode.QUANTITY_INVALID, "no")))
            elif name == "get":
                out.append(ok({k: k.upper() for k in args[0]}))
            else:
                self.applied[args[0]] = self.applied.get(args[0], 0) + 1
                out.append(ok(args[0]))
        return out


def router(shards: list[FlakyShard], timeout_s: float = 1.0) -> ShardRouter:
    return ShardRouter(
        {ShardKind.CART: [s.send for s in shards]},
        max_batch=100,
        max_inflight=2,
        timeout_s=timeout_s,
        restarting=(Restarting,),
    )


async def test_routes_by_key_consistently() -> None:
    shards = [FlakyShard() for _ in range(4)]
    r = router(shards)
    for i in range(40):
        await r.call(ShardKind.CART, f"key{i}", "put", f"key{i}")
    for i, shard in enumerate(shards):
        for op_id in shard.applied:
            assert r.shard_for(ShardKind.CART, op_id) == i
    assert sum(len(s.applied) for s in shards) == 40


async def test_refusal_becomes_domain_error_without_failing_neighbours() -> None:
    r = router([FlakyShard()])
    good, bad = await asyncio.gather(
        r.call(ShardKind.CART, "a", "put", "op1"),
        r.call(ShardKind.CART, "a", "bad"),
        return_exceptions=True,
    )
    assert good == "op1"
    assert isinstance(bad, DomainError)
    assert bad.code is ErrorCode.QUANTITY_INVALID


async def test_restart_is_retried_with_the_same_op_id() -> None:
    shard = FlakyShard(failures=2)
    r = router([shard])
    assert await r.call(ShardKind.CART, "a", "put", "op-7") == "op-7"
    assert shard.applied == {"op-7": 1}
    assert shard.calls == 3


async def test_restart_past_deadline_is_unavailable() -> None:
    r = router([FlakyShard(failures=1000)], timeout_s=0.2)
    with pytest.raises(DomainError) as info:
        await r.call(ShardKind.CART, "a", "put", "op")
    assert info.value.code is ErrorCode.SHARD_UNAVAILABLE


async def test_slow_shard_times_out_as_outcome_unknown() -> None:
    r = router([FlakyShard(delay_s=0.5)], timeout_s=0.05)
    with pytest.raises(DomainError) as info:
        await r.call(ShardKind.CART, "a", "put", "op")
    assert info.value.code is ErrorCode.SHARD_TIMEOUT
    assert "unknown" in info.value.message


async def test_fanout_groups_keys_per_shard_and_merges() -> None:
    shards = [FlakyShard() for _ in range(3)]
    r = router(shards)
    keys = [f"s{i}" for i in range(30)] + ["s1"]
    merged = await r.fanout(ShardKind.CART, keys, "get")
    assert merged == {k: k.upper() for k in keys}
    assert sum(s.calls for s in shards) <= 3
    assert r.stats()["cart"]["ops"] <= 3
