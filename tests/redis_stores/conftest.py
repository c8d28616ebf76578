"""A real Redis for the Redis adapter tests; never a fake.

The server is, in order: ``FEIRA_TEST_REDIS_URL``; a server already answering on
127.0.0.1:6379; a throwaway ``redis-server`` started here on a free port and stopped at
the end. The first two may be someone's: every key the tests write is under one random
prefix per session, removed at the end with SCAN + UNLINK, never FLUSHALL.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.retry import Retry

from storage.redis.client import RedisClient

URL_ENV = "FEIRA_TEST_REDIS_URL"
LOCAL_URL = "redis://127.0.0.1:6379/0"
START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _probe(url: str, timeout_s: float = 0.5) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def _answers(url: str) -> bool:
    conn = _probe(url)
    try:
        return bool(conn.ping())
    except (rx.RedisError, OSError):
        # Nothing there, or something that is not Redis (Ray's GCS once defaulted to 6379).
        return False
    finally:
        conn.close()


def _where(url: str) -> str:
    # The URL may carry a password.
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.hostname else parts.path


def _start_server(binary: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--loglevel", "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.exit(f"redis-server exited at start ({proc.returncode}): {err}", returncode=1)
        if _answers(url):
            return proc, url
        time.sleep(0.05)
    _stop(proc)
    pytest.exit(f"redis-server on port {port} did not answer within {START_TIMEOUT_S}s", 1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    if proc.stderr:
        proc.stderr.close()


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


@pytest.fixture
def prefix(session_prefix: str) -> str:
    """A prefix of this test's own, inside the session's (so cleanup covers it)."""
    return f"{session_prefix}{secrets.token_hex(4)}:"


@pytest.fixture
async def client(redis_url: str, prefix: str) -> AsyncIterator[RedisClient]:
    c = RedisClient(redis_url, prefix=prefix)
    yield c
    await c.close()


@pytest.fixture
def closed_port_url() -> str:
    """A URL where nothing listens (the port was free a moment ago)."""
    return f"redis://127.0.0.1:{free_port()}/0"
