"""Cache-invalidation events: what a change bus carries between replicas. Records only;
the buses are ``actors.invalidation`` (the protocol and the Ray hub) and
``storage.redis.changes`` (Redis pub/sub)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class CacheKind(StrEnum):
    PRODUCT = "product"  # keys are product ids
    PRICE = "price"  # keys are SKUs


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """These keys changed in their store; replicas must drop what they cached for them."""

    kind: CacheKind
    keys: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", CacheKind(self.kind))
        keys: Any = self.keys
        if isinstance(keys, str | bytes):
            raise TypeError("keys must be a sequence of strings, not one string")
        keys = tuple(keys)
        if not keys:
            raise ValueError("a cache event needs at least one key")
        for key in keys:
            if not isinstance(key, str) or not key:
                raise ValueError(f"cache keys must be non-empty strings, got {key!r}")
        object.__setattr__(self, "keys", keys)

    @classmethod
    def products(cls, product_ids: Iterable[str]) -> CacheEvent:
        return cls(CacheKind.PRODUCT, tuple(product_ids))

    @classmethod
    def prices(cls, skus: Iterable[str]) -> CacheEvent:
        return cls(CacheKind.PRICE, tuple(skus))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "keys": list(self.keys)}

    @classmethod
    def from_json(cls, data: Any) -> CacheEvent:
        """Raises ValueError (or TypeError) for anything that is not an event."""
        if not isinstance(data, dict):
            raise ValueError("not a cache event")
        kind, keys = data.get("kind"), data.get("keys")
        if not isinstance(kind, str) or not isinstance(keys, list):
            raise ValueError("not a cache event")
        return cls(CacheKind(kind), tuple(keys))


@dataclass(frozen=True, slots=True)
class Reset:
    """The subscriber may have missed events: drop every cached entry."""

    reason: str = ""


Change = CacheEvent | Reset
