import asyncio

import pytest

from actors.coalescer import Coalescer
from actors.protocol import Op, Reply, ok


class Recorder:
    def __init__(self, delay_s: float = 0.0, fail: Exception | None = None) -> None:
        self.batches: list[list[Op]] = []
        self.delay_s = delay_s
        self.fail = fail
        self.concurrent = 0
        self.max_concurrent = 0

    async def send(self, ops: list[Op]) -> list[Reply]:
        self.batches.append(ops)
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            await asyncio.sleep(self.delay_s)
            if self.fail:
                raise self.fail
            return [ok(args[0]) for _, args in ops]
        finally:
            self.concurrent -= 1


async def test_ops_in_one_loop_turn_share_one_call() -> None:
    rec = Recorder()
    c = Coalescer(rec.send, max_batch=100, max_inflight=1)
    replies = await asyncio.gather(*(c.submit(("echo", (i,))) for i in range(10)))
    assert [r[1] for r in replies] == list(range(10))
    assert len(rec.batches) == 1
    assert c.stats.ops_per_call() == 10


async def test_size_bound_splits_batches() -> None:
    rec = Recorder()
    c = Coalescer(rec.send, max_batch=4, max_inflight=8)
    replies = await asyncio.gather(*(c.submit(("echo", (i,))) for i in range(10)))
    assert [r[1] for r in replies] == list(range(10))
    assert [len(b) for b in rec.batches] == [4, 4, 2]


async def test_inflight_bound_makes_later_ops_ride_together() -> None:
    rec = Recorder(delay_s=0.02)
    c = Coalescer(rec.send, max_batch=1000, max_inflight=1)
    first = c.submit(("echo", (0,)))
    await asyncio.sleep(0.005)  # first call is in flight
    rest = [c.submit(("echo", (i,))) for i in range(1, 50)]
    await asyncio.gather(first, *rest)
    assert rec.max_concurrent == 1
    assert [len(b) for b in rec.batches] == [1, 49]


async def test_failure_reaches_every_waiter_and_queue_keeps_working() -> None:
    rec = Recorder(fail=ConnectionError("gone"))
    c = Coalescer(rec.send, max_batch=10, max_inflight=1)
    results = await asyncio.gather(
        *(c.submit(("echo", (i,))) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    rec.fail = None
    assert (await c.submit(("echo", (7,))))[1] == 7
    assert c.stats.failures == 1


async def test_cancelled_waiter_does_not_break_the_batch() -> None:
    rec = Recorder(delay_s=0.01)
    c = Coalescer(rec.send, max_batch=10, max_inflight=1)
    a = c.submit(("echo", (1,)))
    b = c.submit(("echo", (2,)))
    a.cancel()
    assert (await b)[1] == 2
    with pytest.raises(asyncio.CancelledError):
        await a
