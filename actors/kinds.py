"""The kinds of shard and how their actors are named."""

from __future__ import annotations

from enum import StrEnum


class ShardKind(StrEnum):
    CART = "cart"
    INVENTORY = "inventory"
    PRICING = "pricing"


def actor_name(kind: ShardKind, index: int) -> str:
    return f"feira-{kind.value}-{index}"
