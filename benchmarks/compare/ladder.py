"""Which rate to offer next: up by a factor until a step fails, then bisect once or twice
between the last pass and the first failure, so a capacity is found in a handful of steps
without knowing it in advance."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Ladder:
    start: float
    factor: float = 1.5
    max_rate: float = 20_000.0
    min_rate: float = 5.0
    # Stop bisecting once the failing rate is within this ratio of the passing one.
    resolution: float = 1.12
    max_steps: int = 14

    def __post_init__(self) -> None:
        if not 0 < self.min_rate <= self.start <= self.max_rate:
            raise ValueError("need 0 < min_rate <= start <= max_rate")
        if self.factor <= 1 or self.resolution <= 1:
            raise ValueError("factor and resolution must be > 1")

    def next_rate(self, history: Sequence[tuple[float, bool]]) -> float | None:
        """The next rate to offer after ``history`` (rate, passed), or None when done."""
        if not history:
            return self.start
        if len(history) >= self.max_steps:
            return None
        passes = [rate for rate, ok in history if ok]
        fails = [rate for rate, ok in history if not ok]
        if not fails:
            last = max(passes)
            if last >= self.max_rate:
                return None
            return _nice(min(last * self.factor, self.max_rate))
        high = min(fails)
        low = max((r for r in passes if r < high), default=None)
        if low is None:  # even the lowest rate tried failed: come down
            lower = _nice(high / self.factor)
            return lower if lower >= self.min_rate and lower < high else None
        if high / low <= self.resolution:
            return None
        middle = _nice((low * high) ** 0.5)
        return middle if low < middle < high else None

    @staticmethod
    def best(history: Sequence[tuple[float, bool]]) -> float | None:
        """The highest rate that passed below every failure (a pass above a failure is noise
        and does not count)."""
        fails = [rate for rate, ok in history if not ok]
        ceiling = min(fails, default=float("inf"))
        return max((rate for rate, ok in history if ok and rate < ceiling), default=None)


def _nice(rate: float) -> float:
    """Rates rounded to two significant figures (1,234 -> 1,200), so tables read well."""
    if rate <= 0:
        return rate
    digits = len(str(int(rate))) - 2
    step = 10 ** max(digits, 0)
    return float(round(rate / step) * step)
