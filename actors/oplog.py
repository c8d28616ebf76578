"""Bounded memory of applied operation ids, so a retried mutation is answered, not re-applied."""

from __future__ import annotations

from collections import OrderedDict

from actors.protocol import Reply


class OpLog:
    __slots__ = ("_capacity", "_replies")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._replies: OrderedDict[str, Reply] = OrderedDict()

    def get(self, op_id: str) -> Reply | None:
        return self._replies.get(op_id)

    def record(self, op_id: str, reply: Reply) -> None:
        self._replies[op_id] = reply
        if len(self._replies) > self._capacity:
            self._replies.popitem(last=False)

    def forget(self, op_id: str) -> None:
        self._replies.pop(op_id, None)

    def __len__(self) -> int:
        return len(self._replies)
