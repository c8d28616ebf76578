"""Stable key → shard mapping.

blake2b gives the same 64-bit digest in every process (Python's ``hash()`` is salted
per process, so two replicas would disagree). Jump consistent hashing (Lamping & Veach,
2014) then spreads keys evenly and, when the shard count grows from n to n+1, moves only
1/(n+1) of the keys.
"""

from __future__ import annotations

from hashlib import blake2b

_JUMP_MULTIPLIER = 2862933555777941757
_MASK64 = (1 << 64) - 1


def key_digest(key: str) -> int:
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "big")


def jump_hash(digest: int, buckets: int) -> int:
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    b, j = -1, 0
    while j < buckets:
        b = j
        digest = (digest * _JUMP_MULTIPLIER + 1) & _MASK64
        j = int((b + 1) * ((1 << 31) / ((digest >> 33) + 1)))
    return b


class HashRing:
    __slots__ = ("shards",)

    def __init__(self, shards: int) -> None:
        if shards < 1:
            raise ValueError("a ring needs at least one shard")
        self.shards = shards

    def shard_for(self, key: str) -> int:
        return jump_hash(key_digest(key), self.shards)
