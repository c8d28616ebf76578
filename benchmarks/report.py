"""Where a benchmark's figures go: its JSON report, and its section of RESULTS.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.cart_add import replace_section


def save(
    report: dict[str, Any], out: Path, results_md: Path | None, heading: str, section: str
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    if results_md is not None:
        doc = results_md.read_text() if results_md.exists() else "# Benchmark results\n"
        results_md.write_text(replace_section(doc, heading, section))
        print(f"updated {results_md}")
