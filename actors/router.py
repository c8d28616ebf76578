"""Routes operations to shards by key, coalescing per shard, under a deadline.

Transport-agnostic: each shard is a ``send`` coroutine (a Ray actor call in a
deployment, a direct call into a shard service in unit tests). Errors listed in
``restarting`` mean "the shard is coming back": the same operation — with the same
operation id — is sent again until the deadline, so the shard answers a repeat instead of
applying it twice. A timeout is reported as "outcome unknown".
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import Any

from actors.coalescer import Coalescer, Send
from actors.domain.errors import DomainError, ErrorCode
from actors.kinds import ShardKind
from actors.protocol import Op, Reply, unwrap
from actors.ring import HashRing

_RETRY_BASE_S = 0.05
_RETRY_MAX_S = 1.0


class ShardRouter:
    def __init__(
        self,
        senders: Mapping[ShardKind, Sequence[Send]],
        *,
        max_batch: int,
        max_inflight: int,
        timeout_s: float,
        restarting: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._timeout_s = timeout_s
        self._restarting = restarting
        self._rings = {kind: HashRing(len(s)) for kind, s in senders.items()}
        self._coalescers = {
            kind: [Coalescer(send, max_batch, max_inflight) for send in sends]
            for kind, sends in senders.items()
        }

    def shard_for(self, kind: ShardKind, key: str) -> int:
        return self._rings[kind].shard_for(key)

    def shard_count(self, kind: ShardKind) -> int:
        return len(self._coalescers[kind])

    async def call(self, kind: ShardKind, key: str, op: str, *args: Any) -> Any:
        return await self.call_shard(kind, self.shard_for(kind, key), op, *args)

    async def call_shard(self, kind: ShardKind, shard: int, op: str, *args: Any) -> Any:
        return unwrap(await self._submit(self._coalescers[kind][shard], (op, args)))

    async def fanout(self, kind: ShardKind, keys: Sequence[str], op: str) -> dict[str, Any]:
        """Call ``op(keys_of_shard)`` once per shard that owns some of ``keys``; merge dicts."""
        by_shard: dict[int, list[str]] = {}
        for key in dict.fromkeys(keys):
            by_shard.setdefault(self.shard_for(kind, key), []).append(key)
        parts = await asyncio.gather(
            *(self.call_shard(kind, shard, op, ks) for shard, ks in by_shard.items())
        )
        merged: dict[str, Any] = {}
        for part in parts:
            merged.update(part)
        return merged

    async def broadcast(self, kind: ShardKind, op: str, *args: Any) -> list[Any]:
        calls = (self.call_shard(kind, i, op, *args) for i in range(self.shard_count(kind)))
        return list(await asyncio.gather(*calls))

    def stats(self, *, reset_peaks: bool = False) -> dict[str, dict[str, float]]:
        """Per shard kind, over this process's shards of the kind: ``calls``, ``ops``
        and ``failures`` so far, ``pending`` (operations waiting now), ``pending_peak``
        (most waiting at once since the last ``reset_peaks``) and ``inflight`` calls."""
        out: dict[str, dict[str, float]] = {}
        for kind, cs in self._coalescers.items():
            calls = sum(c.stats.calls for c in cs)
            ops = sum(c.stats.ops for c in cs)
            out[kind.value] = {
                "calls": calls,
                "ops": ops,
                "ops_per_call": round(ops / calls, 2) if calls else 0.0,
                "pending": sum(c.pending for c in cs),
                "pending_peak": sum(c.stats.peak_pending for c in cs),
                "inflight": sum(c.inflight for c in cs),
                "failures": sum(c.stats.failures for c in cs),
            }
            if reset_peaks:
                for c in cs:
                    c.stats.peak_pending = c.pending
        return out

    async def _submit(self, coalescer: Coalescer, op: Op) -> Reply:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _timeout(op)
            future = coalescer.submit(op)
            # A timer on the future, not asyncio.wait_for: wait_for wraps every operation
            # in a task of its own, which costs more than the operation.
            expired: list[bool] = []
            timer = loop.call_later(remaining, _expire, future, expired)
            try:
                return await future
            except asyncio.CancelledError:
                if expired:
                    raise _timeout(op) from None
                raise
            except self._restarting as error:
                attempt += 1
                pause = min(_RETRY_MAX_S, _RETRY_BASE_S * 2**attempt) * random.uniform(0.5, 1)
                if loop.time() + pause >= deadline:
                    raise DomainError(
                        ErrorCode.SHARD_UNAVAILABLE, "shard is restarting; retry shortly"
                    ) from error
                await asyncio.sleep(pause)
            finally:
                timer.cancel()


def _expire(future: asyncio.Future[Reply], expired: list[bool]) -> None:
    if not future.done():
        expired.append(True)
        future.cancel()


def _timeout(op: Op) -> DomainError:
    return DomainError(
        ErrorCode.SHARD_TIMEOUT,
        f"{op[0]} timed out; its outcome is unknown, retry with the same operation id",
    )
