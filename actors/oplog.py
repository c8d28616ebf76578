"""Bounded memory of applied operation ids, so a retried mutation is answered, not re-applied.

Up to ``capacity`` replies are kept per shard, so they are a large part of a shard's hot
state: a shard may give a ``pack`` that stores each reply in a leaner form, and the
``unpack`` that gives back a reply equal to the one recorded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import cast

from actors.protocol import Reply

Pack = Callable[[Reply], object]
Unpack = Callable[[object], Reply]


def _same(value: object) -> object:
    return value


def _as_reply(value: object) -> Reply:
    return cast(Reply, value)  # only ever a Reply when nothing packs


class OpLog:
    __slots__ = ("_capacity", "_pack", "_replies", "_unpack")

    def __init__(
        self, capacity: int, pack: Pack | None = None, unpack: Unpack | None = None
    ) -> None:
        if (pack is None) != (unpack is None):
            raise ValueError("pack and unpack go together")
        self._capacity = capacity
        self._pack: Pack = pack or _same
        self._unpack: Unpack = unpack or _as_reply
        self._replies: OrderedDict[str, object] = OrderedDict()

    def get(self, op_id: str) -> Reply | None:
        stored = self._replies.get(op_id)
        return None if stored is None else self._unpack(stored)

    def record(self, op_id: str, reply: Reply) -> None:
        self._replies[op_id] = self._pack(reply)
        if len(self._replies) > self._capacity:
            self._replies.popitem(last=False)

    def __contains__(self, op_id: object) -> bool:
        return op_id in self._replies

    def forget(self, op_id: str) -> None:
        self._replies.pop(op_id, None)

    def __len__(self) -> int:
        return len(self._replies)
