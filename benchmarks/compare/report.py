"""The comparison as a markdown section and a latency-versus-rate plot."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.compare.run import ops_per_call_at

SECTION_HEADING = "## Feira against a conventional peer, open loop (issue 8)"
LABELS = {
    "ping": "GET /ping (ceiling)",
    "browse": "browse (product pages, listings)",
    "cart_add": "cart add",
    "flash": "flash-sale hold, one hot SKU",
    "checkout": "checkout (new order each)",
    "peak": "peak mix",
}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _rate(value: float | None, journey: Mapping[str, Any] | None) -> str:
    if value is None:
        return "none passed"
    if journey and all(step["passed"] for step in journey["steps"]):
        # The ladder ran out (top rate or step count) before any step failed: a floor.
        return f">= {value:,.0f}"
    return f"{value:,.0f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _p95_at(journey: Mapping[str, Any] | None) -> str:
    if not journey or journey.get("best_rate") is None:
        return "-"
    for step in journey["steps"]:
        if step["rate"] == journey["best_rate"]:
            return f"{step['p95_s'] * 1000:.0f}"
    return "-"


def best(report: Mapping[str, Any], system: str, journey: str) -> float | None:
    found = report["systems"].get(system, {}).get("journeys", {}).get(journey)
    return None if found is None else found.get("best_rate")


def goals(report: Mapping[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(goal, target, measured, met) for issue 8's four goals."""
    feira = report["systems"].get("feira", {})
    peak = ratio(best(report, "feira", "peak"), best(report, "peer", "peak"))
    flash = ratio(best(report, "feira", "flash"), best(report, "peer", "flash"))
    oversold = feira.get("oversell", {}).get("oversold")
    cart_vs_ping = ratio(best(report, "feira", "cart_add"), best(report, "feira", "ping"))
    cart_vs_bare = ratio(best(report, "feira", "cart_add"), best(report, "peer", "ping"))
    peak_steps = feira.get("journeys", {}).get("peak", {}).get("steps", [])
    ops = ops_per_call_at(peak_steps, best(report, "feira", "peak"))
    carried = [v for v in ops.values() if v is not None]
    mean_ops = sum(carried) / len(carried) if carried else None

    def met(value: float | None, floor: float) -> bool | None:
        return None if value is None else value >= floor

    return [
        (
            "peak-mix capacity vs the peer",
            "at least 1.0x (stretch 1.5x)",
            _x(peak),
            met(peak, 1.0),
        ),
        (
            "flash-sale holds/s vs the peer, 0 oversold",
            "at least 10x, 0",
            f"{_x(flash)}, {oversold if oversold is not None else '-'} oversold",
            None if flash is None else flash >= 10 and oversold == 0,
        ),
        (
            "cart-add capacity vs the ping ceiling",
            "at least 0.5x",
            f"{_x(cart_vs_ping)} of Feira's /ping, {_x(cart_vs_bare)} of bare uvicorn's",
            met(cart_vs_ping, 0.5),
        ),
        (
            "ops per shard call at peak",
            "at least 10",
            "-"
            if mean_ops is None
            else f"{mean_ops:.1f} ({', '.join(f'{k} {v}' for k, v in ops.items())})",
            met(mean_ops, 10),
        ),
    ]


def markdown(report: Mapping[str, Any], plot_name: str | None) -> str:
    machine = report["machine"]
    lines = [
        SECTION_HEADING,
        "",
        f"{report['date']}, {machine.get('nproc')} CPUs ({machine.get('cpu_model')}), "
        f"{machine.get('memory_gib', '?')} GiB; driver and server on the same machine, one "
        "system at a time. Each step offers a constant rate for "
        f"{report['options']['warmup_s']:g} s warm-up + {report['options']['duration_s']:g} s "
        "measured; latency runs from each request's intended send time. A rate passes "
        "with P95 < 200 ms and errors < 0.1 %.",
        "",
        f"Command: `{report['command']}`",
        "",
        "| journey | Feira req/s | peer req/s | Feira / peer | Feira P95 ms | peer P95 ms |",
        "|:---|---:|---:|---:|---:|---:|",
    ]
    systems = report["systems"]
    for name in report["options"]["journeys"]:
        f_j = systems.get("feira", {}).get("journeys", {}).get(name)
        p_j = systems.get("peer", {}).get("journeys", {}).get(name)
        f_best, p_best = best(report, "feira", name), best(report, "peer", name)
        lines.append(
            f"| {LABELS.get(name, name)} | {_rate(f_best, f_j)} | {_rate(p_best, p_j)} "
            f"| {_x(ratio(f_best, p_best))} | {_p95_at(f_j)} | {_p95_at(p_j)} |"
        )
    lines += ["", "| goal | target | measured | met |", "|:---|:---|:---|:---|"]
    for goal, target, measured, ok in goals(report):
        mark = "-" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {goal} | {target} | {measured} | {mark} |")
    for name, system in systems.items():
        over = system.get("oversell")
        if over:
            lines += [
                "",
                f"Oversell check, {name}: {over['units']} units offered {over['offered']} holds "
                f"at {over['rate']:,.0f}/s: {over['held']} held, {over['refused_409']} refused "
                f"(409), other answers {over['other'] or 'none'}; the store then held "
                f"{over['stored']['reserved']} reserved of {over['stored']['on_hand']} on hand: "
                f"**{over['oversold']} oversold**.",
            ]
    if plot_name:
        lines += ["", f"![P95 latency against offered rate]({plot_name})"]
    lines.append("")
    return "\n".join(lines)


def plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display here or on CI
    import matplotlib.pyplot as plt

    names = list(report["options"]["journeys"])
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for system, style in (("feira", "o-"), ("peer", "s--")):
            journey = report["systems"].get(system, {}).get("journeys", {}).get(name)
            if not journey:
                continue
            steps = sorted(journey["steps"], key=lambda s: s["rate"])
            ax.plot(
                [s["rate"] for s in steps],
                [min(s["p95_s"] * 1000, 5000) for s in steps],
                style,
                label=system,
            )
        ax.axhline(200, color="grey", linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        ax.set_title(LABELS.get(name, name), fontsize=10)
        ax.set_xlabel("offered req/s")
        ax.set_ylabel("P95 ms")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(f"Feira vs conventional peer, {report['date']}", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
