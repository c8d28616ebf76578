"""Batch dispatch shared by the shard services: one call, many operations.

Mutations carry an operation id as their first argument; the reply to each id is kept in
an :class:`OpLog`, so a retry of the same operation (after a timeout or an actor restart)
gets the first answer back instead of applying twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors.domain.errors import DomainError, ErrorCode
from actors.oplog import OpLog
from actors.protocol import Op, Reply, ok, refused

Handler = Callable[..., Any]
# Asked when the op log does not know an operation id: a durable memory of applied ids
# (e.g. a checkpoint's) may; returns the reply to give instead of applying again.
Recall = Callable[[str, tuple[Any, ...]], Reply | None]


class BatchDispatcher:
    def __init__(
        self,
        reads: dict[str, Handler],
        mutations: dict[str, Handler],
        log: OpLog,
        recall: Recall | None = None,
    ) -> None:
        self._reads = reads
        self._mutations = mutations
        self._recall = recall
        self.log = log

    def run(self, now: float, ops: list[Op]) -> tuple[list[Reply], list[str]]:
        """Apply ``ops`` in order; returns the replies and the ids of newly applied mutations."""
        replies: list[Reply] = []
        fresh: list[str] = []
        for name, args in ops:
            mutation = self._mutations.get(name)
            if mutation is not None:
                op_id = args[0] if args else None
                if not isinstance(op_id, str) or not op_id:
                    replies.append(refused(_bad(f"{name} needs an operation id")))
                    continue
                seen = self.log.get(op_id)
                if seen is None and self._recall is not None:
                    seen = self._recall(name, args)
                if seen is not None:
                    replies.append(seen)
                    continue
                reply = _call(mutation, now, args)
                self.log.record(op_id, reply)
                fresh.append(op_id)
                replies.append(reply)
                continue
            read = self._reads.get(name)
            if read is None:
                replies.append(refused(_bad(f"unknown operation {name!r}")))
                continue
            replies.append(_call(read, now, args))
        return replies, fresh


    def undo(
        self, ops: list[Op], replies: list[Reply], fresh: list[str], refusal: Reply
    ) -> list[Reply]:
        """The batch's changes did not become durable: forget their op ids, so a retry
        applies, and answer every mutation with ``refusal`` (reads keep their replies)."""
        for op_id in fresh:
            self.log.forget(op_id)
        return [
            refusal if name in self._mutations else reply
            for (name, _), reply in zip(ops, replies, strict=True)
        ]


def _call(handler: Handler, now: float, args: tuple[Any, ...]) -> Reply:
    try:
        return ok(handler(now, *args))
    except DomainError as error:
        return refused(error)
    except TypeError as error:
        # A malformed batch from a mismatched client version, not a bug in the shard.
        return refused(_bad(f"bad arguments: {error}"))


def _bad(message: str) -> DomainError:
    return DomainError(ErrorCode.INVALID_ARGUMENT, message)
