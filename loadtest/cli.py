"""``feira loadtest``: ready to wire into ``feira/cli.py``'s ``build_parser``.

    .venv/bin/feira loadtest --profile peak --users 50 --duration 60

Paste into ``feira/cli.py`` (``loadtest/`` is not an installed package, so the repository
root goes on ``sys.path`` first, as ``_cluster_template`` finds ``cluster.yaml``)::

    def _loadtest_cli() -> Any:
        root = str(Path(__file__).resolve().parents[1])
        if root not in sys.path:
            sys.path.insert(0, root)
        import loadtest.cli

        return loadtest.cli

    # in build_parser(), after the other sub-commands:
    _loadtest_cli().add_loadtest_parser(sub)

The sub-command runs locust headless in a subprocess (``loadtest/run.py``), prints P50/P95/
P99, requests/s and failures per request name and aggregated, and exits 1 when any request
failed (flash-sale sell-outs are expected and do not count). Credentials come from the
environment: ``FEIRA_LOADTEST_API_KEY`` (an ``internal``-plan key: ``feira api-key create
--plan internal``), ``FEIRA_LOADTEST_MERCHANT_KEY`` for merchants.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from loadtest.run import add_arguments


def add_loadtest_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``loadtest`` to an ``add_subparsers()`` object; returns the new parser."""
    p: argparse.ArgumentParser = sub.add_parser(
        "loadtest", help="run a locust profile headless and print its percentiles"
    )
    add_arguments(p)
    p.set_defaults(func=cmd_loadtest)
    return p


def cmd_loadtest(args: argparse.Namespace) -> int:
    from loadtest.run import run_from_args

    if not os.environ.get("FEIRA_LOADTEST_API_KEY"):
        print(
            "note: FEIRA_LOADTEST_API_KEY is not set; requests share the anonymous rate plan "
            "(20/s per IP) and will be refused with 429 unless the target runs with "
            "FEIRA_RATE_LIMIT_ENABLED=false"
        )
    return run_from_args(args)
