"""Retry pacing shared by the adapters that reconnect on their own."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt n (from 1) waits about
    ``initial_s * 2**(n-1)``, never more than ``max_s``, jittered down by up to half so
    that replicas that lost the bus together do not come back in step."""

    initial_s: float = 0.05
    max_s: float = 5.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s:
            raise ValueError("need 0 < initial_s <= max_s")

    def delay(self, attempt: int) -> float:
        base = min(self.max_s, self.initial_s * 2.0 ** min(max(attempt, 1) - 1, 30))
        return base * random.uniform(0.5, 1.0)
