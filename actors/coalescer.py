"""Gathers concurrent operations bound for one shard into one call.

A Ray actor call costs about a millisecond of CPU here while the operation inside costs
microseconds (DESIGN §7), so operations queue per shard and leave together: the queue is
flushed on the next event-loop turn, or at once when it reaches ``max_batch``. At most
``max_inflight`` calls per shard are outstanding; while they are, new operations wait and
ride the next call, so batches grow with load by themselves.

Transport-agnostic: ``send`` is any coroutine that takes a batch and returns its replies.
Each operation remembers the request id it was submitted under (``feira.logs``); while
``send`` runs, the batch's ids are bound (:func:`feira.logs.request_scope`), so a sender
can pass them to the shard and an in-process shard logs with them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from actors.protocol import Op, Reply
from feira.logs import REQUEST_ID, request_scope

Send = Callable[[list[Op]], Awaitable[list[Reply]]]


@dataclass(slots=True)
class CoalescerStats:
    calls: int = 0
    ops: int = 0
    max_batch_seen: int = 0
    failures: int = 0
    # Most operations waiting at once since the last reset (a sampler resets it).
    peak_pending: int = 0

    def ops_per_call(self) -> float:
        return self.ops / self.calls if self.calls else 0.0


@dataclass(slots=True)
class _Queue:
    ops: list[Op] = field(default_factory=list)
    futures: list[asyncio.Future[Reply]] = field(default_factory=list)
    request_ids: list[str | None] = field(default_factory=list)
    inflight: int = 0
    scheduled: bool = False


class Coalescer:
    def __init__(self, send: Send, max_batch: int, max_inflight: int) -> None:
        self._send = send
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._q = _Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = CoalescerStats()

    def submit(self, op: Op) -> asyncio.Future[Reply]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        q = self._q
        q.ops.append(op)
        q.futures.append(future)
        q.request_ids.append(REQUEST_ID.get())
        waiting = len(q.ops)
        if waiting > self.stats.peak_pending:
            self.stats.peak_pending = waiting
        if waiting >= self._max_batch:
            self._flush()
        elif not q.scheduled:
            q.scheduled = True
            loop.call_soon(self._flush)
        return future

    @property
    def pending(self) -> int:
        return len(self._q.ops)

    @property
    def inflight(self) -> int:
        return self._q.inflight

    def _flush(self) -> None:
        q = self._q
        q.scheduled = False
        while q.ops and q.inflight < self._max_inflight:
            n = self._max_batch
            ops, futures, ids = q.ops[:n], q.futures[:n], q.request_ids[:n]
            del q.ops[:n], q.futures[:n], q.request_ids[:n]
            q.inflight += 1
            task = asyncio.get_running_loop().create_task(self._run(ops, futures, ids))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(
        self, ops: list[Op], futures: list[asyncio.Future[Reply]], ids: list[str | None]
    ) -> None:
        stats = self.stats
        stats.calls += 1
        stats.ops += len(ops)
        stats.max_batch_seen = max(stats.max_batch_seen, len(ops))
        try:
            with request_scope(ids):
                replies = await self._send(ops)
        except Exception as error:  # noqa: BLE001 - every waiter must learn the outcome
            stats.failures += 1
            for f in futures:
                if not f.done():
                    f.set_exception(error)
        else:
            for f, reply in zip(futures, replies, strict=True):
                if not f.done():
                    f.set_result(reply)
        finally:
            self._q.inflight -= 1
            if self._q.ops:
                self._flush()
