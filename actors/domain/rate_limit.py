"""Rate limits: the generic cell rate algorithm (GCRA) as a pure function, an in-process
limiter for embedded mode, and the HTTP headers that tell a client where it stands.

GCRA keeps one number per key, the theoretical arrival time (TAT): when the key's next
request would be due if it sent at exactly its rate. With emission interval ``T = 1/rate``
and tolerance ``tau = T * (burst - 1)``, a request costing ``n`` is admitted when

    max(tat, now) + n*T - now <= T * burst        (for n = 1: now >= tat - tau)

and then ``tat`` becomes ``max(tat, now) + n*T``. Over any window of length ``w`` a key is
admitted at most ``rate*w + burst`` requests, and a sender at exactly its rate is never
refused. No I/O here; ``storage/redis/rate_limit.py`` runs the same arithmetic in Lua.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from actors.domain.errors import DomainError, ErrorCode

# Admission may come this much early: float rounding in ``tat`` must not refuse a sender
# at exactly its rate. One microsecond admits nothing measurable.
EPSILON_S = 1e-6
MAX_RATE_PER_S = 1_000_000.0
MAX_BURST = 1_000_000
DEFAULT_MAX_KEYS = 100_000
POLICY_NAME = "default"


@dataclass(frozen=True, slots=True)
class RatePlan:
    """``rate_per_s`` sustained requests per second, up to ``burst`` at once."""

    rate_per_s: float
    burst: int

    def __post_init__(self) -> None:
        rate = self.rate_per_s
        if (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not math.isfinite(rate)
            or not 0 < rate <= MAX_RATE_PER_S
        ):
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT,
                f"rate_per_s must be a finite number in (0, {MAX_RATE_PER_S:g}]",
            )
        if type(self.burst) is not int or not 1 <= self.burst <= MAX_BURST:
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT, f"burst must be an integer in [1, {MAX_BURST}]"
            )

    @property
    def interval_s(self) -> float:
        """The emission interval T."""
        return 1.0 / self.rate_per_s

    @property
    def tolerance_s(self) -> float:
        """tau = T * (burst - 1): how far ahead of the schedule a key may run."""
        return self.interval_s * (self.burst - 1)

    @property
    def window_s(self) -> float:
        """Time to earn back a full burst: the ``w`` advertised for quota ``burst``."""
        return self.burst / self.rate_per_s


@dataclass(frozen=True, slots=True)
class Decision:
    """``new_tat`` is the key's state after the call (None when the state lives elsewhere,
    e.g. in Redis). ``retry_after_s`` is 0 when allowed, else the exact wait until this
    same request would be admitted. ``remaining`` is how many unit-cost requests would be
    admitted right now; ``reset_s`` is the time until the full burst is available again.
    ``degraded`` marks a decision made without the limiter (fail-open on a store outage).
    """

    allowed: bool
    new_tat: float | None
    retry_after_s: float
    remaining: int
    reset_s: float
    degraded: bool = False


def check_cost(cost: int, plan: RatePlan) -> None:
    if type(cost) is not int or not 1 <= cost <= plan.burst:
        # More than the burst could never be admitted: a caller bug, not a refusal.
        raise ValueError(f"cost must be an integer in [1, burst={plan.burst}]")


def gcra(tat: float | None, now: float, plan: RatePlan, cost: int = 1) -> Decision:
    """One GCRA step. ``tat`` None means the key has no state (a full burst available)."""
    check_cost(cost, plan)
    interval = plan.interval_s
    limit = interval * plan.burst  # tau + T
    base = now if tat is None or tat < now else tat
    new_tat = base + interval * cost
    allow_at = new_tat - limit
    if now + EPSILON_S >= allow_at:
        return Decision(
            allowed=True,
            new_tat=new_tat,
            retry_after_s=0.0,
            remaining=_remaining(limit - (new_tat - now), interval),
            reset_s=new_tat - now,
        )
    return Decision(
        allowed=False,
        new_tat=tat,
        retry_after_s=allow_at - now,
        remaining=_remaining(limit - (base - now), interval),
        reset_s=base - now,
    )


def _remaining(room_s: float, interval: float) -> int:
    # The same EPSILON_S as admission: ``remaining`` is exactly what would be admitted.
    return max(0, math.floor((room_s + EPSILON_S) / interval))


class InProcessLimiter:
    """GCRA per key in a dict, for embedded mode (one process, no Redis).

    Memory is bounded by ``max_keys``. A key whose TAT has passed is in the same state as
    a key never seen, so dropping it loses nothing; such keys are swept when the table is
    full, and only if one may have expired (``_sweep_after`` is a lower bound on every
    stored TAT, so a full table of live keys costs O(1) per new key, not a scan). When no
    key has expired, the least recently used one is dropped: that key gets its burst back
    early, which is lenient, never stricter than the plan.

    Not thread-safe; ``check`` never awaits, so concurrent tasks on one loop are atomic.
    """

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if type(max_keys) is not int or max_keys < 1:
            raise ValueError("max_keys must be an integer >= 1")
        self._max_keys = max_keys
        self._tats: dict[str, float] = {}
        self._sweep_after = math.inf

    def __len__(self) -> int:
        return len(self._tats)

    async def check(
        self, key: str, plan: RatePlan, now: float | None = None, cost: int = 1
    ) -> Decision:
        if not isinstance(key, str) or not key:
            raise ValueError("rate-limit key must be a non-empty string")
        at = time.monotonic() if now is None else now
        tat = self._tats.pop(key, None)  # re-inserted below: the dict stays in LRU order
        decision = gcra(tat, at, plan, cost)
        if decision.new_tat is not None and decision.new_tat > at:
            if len(self._tats) >= self._max_keys:
                self._make_room(at)
            self._tats[key] = decision.new_tat
            self._sweep_after = min(self._sweep_after, decision.new_tat)
        return decision

    def _make_room(self, now: float) -> None:
        if now >= self._sweep_after:
            self._tats = {k: t for k, t in self._tats.items() if t > now}
            self._sweep_after = min(self._tats.values(), default=math.inf)
        while len(self._tats) >= self._max_keys:
            del self._tats[next(iter(self._tats))]


def headers(decision: Decision, plan: RatePlan, policy: str = POLICY_NAME) -> dict[str, str]:
    """Response headers for a decision, per draft-ietf-httpapi-ratelimit-headers (-10/-11):
    ``RateLimit-Policy: "default";q=<burst>;w=<seconds to earn a full burst>`` and
    ``RateLimit: "default";r=<remaining>;t=<seconds until full>``, plus ``Retry-After``
    (whole seconds, rounded up) when refused. A degraded (fail-open) decision knows
    nothing current, so it carries the policy only.
    """
    if not policy or not all(c.isalnum() or c in "-_." for c in policy):
        raise ValueError("policy name must be non-empty [A-Za-z0-9._-]")
    out = {
        "RateLimit-Policy": f'"{policy}";q={plan.burst};w={_whole_seconds(plan.window_s)}',
    }
    if decision.degraded:
        return out
    out["RateLimit"] = (
        f'"{policy}";r={decision.remaining};t={_whole_seconds(decision.reset_s, floor=0)}'
    )
    if not decision.allowed:
        out["Retry-After"] = str(_whole_seconds(decision.retry_after_s))
    return out


def _whole_seconds(seconds: float, floor: int = 1) -> int:
    # Rounded up (a client waiting that long is admitted), forgiving float noise.
    return max(floor, math.ceil(seconds - EPSILON_S))
