"""The comparison benchmark's pure parts: the rate ladder, the peak mix, the report."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.compare.ladder import Ladder
from benchmarks.compare.report import goals, markdown, plot
from benchmarks.compare.workloads import PEAK_MIX, weighted_kinds


def climb(ladder: Ladder, capacity: float) -> list[tuple[float, bool]]:
    history: list[tuple[float, bool]] = []
    while (rate := ladder.next_rate(history)) is not None:
        history.append((rate, rate <= capacity))
    return history


def test_the_ladder_climbs_then_bisects() -> None:
    history = climb(Ladder(start=100, factor=2, resolution=1.12), capacity=700)
    rates = [r for r, _ in history]
    assert rates[:4] == [100, 200, 400, 800]  # up by the factor until 800 fails
    assert all(400 < r < 800 for r in rates[4:])  # then only between pass and failure
    assert Ladder.best(history) is not None
    assert 560 <= Ladder.best(history) <= 700  # type: ignore[operator]


def test_the_ladder_comes_down_when_the_first_step_fails() -> None:
    history = climb(Ladder(start=100, factor=2, min_rate=5), capacity=30)
    assert history[:3] == [(100, False), (50, False), (25, True)]
    assert Ladder.best(history) == 30  # then bisected up between 25 and 35


@given(
    capacity=st.floats(min_value=1, max_value=50_000),
    start=st.floats(min_value=5, max_value=5_000),
)
def test_the_ladder_ends_and_never_reports_a_failed_rate(capacity: float, start: float) -> None:
    ladder = Ladder(start=start, max_steps=12)
    history = climb(ladder, capacity)
    assert len(history) <= 12
    best = Ladder.best(history)
    assert best is None or best <= capacity
    assert best is None or all(ok or rate > best for rate, ok in history)


def test_a_pass_above_a_failure_is_noise() -> None:
    assert Ladder.best([(100, True), (200, False), (300, True)]) == 100


def test_the_peak_mix_keeps_its_proportions_and_interleaves() -> None:
    cycle = weighted_kinds(PEAK_MIX)
    counts = Counter(cycle)
    assert counts == {kind: weight for kind, weight in PEAK_MIX.items()}
    # checkouts are spread over the cycle, not bunched together
    where = [i for i, kind in enumerate(cycle) if kind == "checkout"]
    assert min(b - a for a, b in itertools.pairwise(where)) >= 20


def test_weights_must_mean_something() -> None:
    with pytest.raises(ValueError, match="weights"):
        weighted_kinds({"a": 0})


def _journey(best: float | None, rates: list[float], ops: float | None = None) -> dict[str, Any]:
    steps = []
    for rate in rates:
        extra = {}
        if ops is not None:
            extra = {
                "coalescing": {"cart": {"ops_per_call": ops}, "pricing": {"ops_per_call": ops}}
            }
        steps.append(
            {
                "rate": rate,
                "p95_s": 0.05,
                "passed": best is not None and rate <= best,
                "extra": extra,
            }
        )
    return {"best_rate": best, "steps": steps}


def _report() -> dict[str, Any]:
    return {
        "date": "2026-11-29 13:00 UTC",
        "command": ".venv/bin/python -m benchmarks.compare",
        "machine": {"nproc": 2, "cpu_model": "test", "memory_gib": 23.5},
        "options": {
            "journeys": ["ping", "cart_add", "flash", "peak"],
            "warmup_s": 2,
            "duration_s": 8,
        },
        "systems": {
            "peer": {
                "journeys": {
                    "ping": _journey(20000, [20000]),
                    "cart_add": _journey(3300, [3300]),
                    "flash": _journey(2200, [2200]),
                    "peak": _journey(900, [900]),
                }
            },
            "feira": {
                "journeys": {
                    "ping": _journey(3000, [3000]),
                    "cart_add": _journey(1600, [1600]),
                    "flash": _journey(None, [100]),
                    "peak": _journey(1000, [1000], ops=12.0),
                },
                "oversell": {
                    "units": 500,
                    "offered": 1500,
                    "rate": 1400,
                    "held": 500,
                    "refused_409": 1000,
                    "other": {},
                    "stored": {"on_hand": 500, "reserved": 500, "sold": 0},
                    "oversold": 0,
                },
            },
        },
    }


def test_goals_are_judged_from_the_measurements() -> None:
    judged = {goal: (measured, met) for goal, _, measured, met in goals(_report())}
    assert judged["peak-mix capacity vs the peer"] == ("1.11x", True)
    assert judged["flash-sale holds/s vs the peer, 0 oversold"][1] is None  # nothing passed
    assert judged["cart-add capacity vs the ping ceiling"][1] is True  # 1600 / 3000
    assert judged["ops per shard call at peak"][1] is True


def test_markdown_and_plot(tmp_path: Path) -> None:
    text = markdown(_report(), "compare.png")
    assert "| cart add | >= 1,600 | >= 3,300 | 0.48x |" in text  # no step failed: floors
    assert "none passed" in text
    assert "**0 oversold**" in text
    assert "![P95 latency against offered rate](compare.png)" in text
    plot(_report(), tmp_path / "compare.png")
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
