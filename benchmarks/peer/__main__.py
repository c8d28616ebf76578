"""Serve the peer: uvicorn, one worker process per core, uvloop and httptools.

    FEIRA_PEER_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/feira_peer \\
    FEIRA_PEER_CATALOG=var/catalog.db .venv/bin/python -m benchmarks.peer --port 8100

The same as ``uvicorn --factory benchmarks.peer.app:app_from_env --workers 2 --loop uvloop
--http httptools --no-access-log``. Settings are ``FEIRA_PEER_*`` variables
(``benchmarks/peer/settings.py``).
"""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from benchmarks.peer.settings import PeerSettings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peer", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    PeerSettings.from_env()  # fail here, not in every worker
    uvicorn.run(
        "benchmarks.peer.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=args.log_level,
        backlog=4096,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
