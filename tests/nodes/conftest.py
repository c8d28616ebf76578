"""The node-failure suite: its own multi-node Ray cluster, in a subprocess, run first.

Order: pytest keeps session fixtures until the session ends, so once any test has asked
for the session's Ray cluster (``tests/conftest.py``: Serve apps, HAProxy, the indexer
and order-processor loops), it runs until the last test. These tests start a second,
multi-node cluster on the same two cores; run after the session cluster started, they
would share the CPU with it. So they run first, before anything starts Ray, and their
cluster is gone before the session's starts. (The root conftest's own rule, the
card-number scan last, is kept: both are stable sorts.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.stores.conftest import (
    create_database,
    drop_database,
    run_async,
    with_database,
    with_search_path,
)

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: HERE not in item.path.parents)


@pytest.fixture
def node_database(pg_database: str) -> Iterator[str]:
    """A database of the scenario's own on the session's server, dropped after it (a
    schema of its own in the session's database where the role may not create one)."""
    name = f"feira_nodes_{uuid.uuid4().hex[:12]}"
    if run_async(create_database(pg_database, name)):
        try:
            yield with_database(pg_database, name)
        finally:
            run_async(drop_database(pg_database, name))
        return
    run_async(_execute(pg_database, f"CREATE SCHEMA {name}"))
    try:
        yield with_search_path(pg_database, name)
    finally:
        run_async(_execute(pg_database, f"DROP SCHEMA IF EXISTS {name} CASCADE"))


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
