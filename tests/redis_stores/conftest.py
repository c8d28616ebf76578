"""A real Redis for the Redis adapter tests; never a fake.

The server is, in order: ``FEIRA_TEST_REDIS_URL``; a server already answering on
127.0.0.1:6379; a throwaway ``redis-server`` started here on a free port and stopped at
the end. The first two may be someone's: every key the tests write is under one random
prefix per session, removed at the end with SCAN + UNLINK, never FLUSHALL.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.retry import Retry

from storage.redis.client import RedisClient
from tests.conftest import free_port

URL_ENV = "FEIRA_TEST_REDIS_URL"
LOCAL_URL = "redis://127.0.0.1:6379/0"
START_TIMEOUT_S = 10.0


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
