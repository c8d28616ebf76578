"""The real PostgreSQL and Redis servers of a test session, shared by every suite.

Each is the server named by its ``FEIRA_TEST_*_URL`` variable, else the one on its default
local port, else a throwaway one started from the installed binaries; when none can be
had, the session stops with a message saying what to install. Never a fake.
"""

from __future__ import annotations

import os
import secrets
import shutil
import uuid
from collections.abc import Iterator

import pytest

from tests.redis_stores.conftest import (
    LOCAL_URL,
    URL_ENV,
    _answers,
    _probe,
    _start_server,
    _stop,
    _where,
)
from tests.stores.conftest import (
    ENV_URL,
    INSTALL_HINT,
    LOCAL_DSNS,
    PrivateServer,
    can_connect,
    create_database,
    drop_database,
    first_reachable,
    port_answers,
    run_async,
    start_private_server,
    stop_session,
    where,
    with_database,
)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """DSN of a throwaway database on a real server, gone after the session."""
    server: PrivateServer | None = None
    admin = os.environ.get(ENV_URL)
    if admin:
        if not run_async(can_connect(admin)):
            stop_session(f"{ENV_URL} is set, but {where(admin)} refused the connection.")
    elif port_answers("127.0.0.1", 5432):
        admin = run_async(first_reachable(LOCAL_DSNS))
    if not admin:
        server = start_private_server()
        if server is None:
            stop_session(INSTALL_HINT)
        admin = server.admin_dsn
    try:
        database = f"feira_test_{uuid.uuid4().hex[:12]}"
        if not run_async(create_database(admin, database)):
            # Still isolated: every test works in a schema of its own, dropped after it.
            yield admin
            return
        try:
            yield with_database(admin, database)
        finally:
            run_async(drop_database(admin, database))
    finally:
        if server is not None:
            server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get(URL_ENV)
    if url:
        if not _answers(url):
            pytest.exit(f"{URL_ENV} points at {_where(url)}, which does not answer PING", 1)
        yield url
        return
    if _answers(LOCAL_URL):
        yield LOCAL_URL
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit(
            "tests/redis_stores need a Redis server: install one (Debian/Ubuntu: "
            "`apt-get install redis-server`; macOS: `brew install redis`) so `redis-server` "
            f"is on PATH, run one on 127.0.0.1:6379, or set {URL_ENV}=redis://host:port/db",
            1,
        )
    proc, url = _start_server(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def session_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"feira-test-{secrets.token_hex(6)}:"
    yield prefix
    conn = _probe(redis_url, timeout_s=5.0)
    try:
        # The prefix is [a-z0-9:-] only, so it is its own glob pattern.
        batch: list[bytes] = []
        for key in conn.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                conn.unlink(*batch)
                batch.clear()
        if batch:
            conn.unlink(*batch)
    finally:
        conn.close()


