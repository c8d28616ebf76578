from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from redis import exceptions as rx

from storage.errors import StorageError, StoreIntegrityError, StoreUnavailable
from storage.redis.carts import RedisCartCheckpoints
from storage.redis.client import RedisClient
from storage.redis.sessions import RedisSessionStore

SNAPSHOT = {"id": "cart-0123456789abcdef", "version": 1, "lines": []}


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"redis://127.0.0.1:{s.getsockname()[1]}/0"


async def test_construction_does_not_connect(closed_port_url: str) -> None:
    client = RedisClient(closed_port_url)
    RedisCartCheckpoints(client)
    RedisSessionStore(client)
    await client.close()


def test_rejects_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisClient("http://127.0.0.1:6379")


async def test_unreachable_server_is_unavailable_promptly(closed_port_url: str) -> None:
    client = RedisClient(closed_port_url, connect_timeout_s=0.5, socket_timeout_s=0.5)
    carts, sessions = RedisCartCheckpoints(client), RedisSessionStore(client)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"load cart on redis at 127\.0\.0\.1"):
        await carts.load("cart-0123456789abcdef")
    with pytest.raises(StoreUnavailable):
        await carts.save_many([SNAPSHOT], 60)
    with pytest.raises(StoreUnavailable):
        await sessions.get_and_delete("token")
    with pytest.raises(StoreUnavailable):
        await client.ping()
    assert time.monotonic() - started < 3.0
    await client.close()


async def test_silent_server_times_out_as_unavailable(silent_url: str) -> None:
    client = RedisClient(silent_url, connect_timeout_s=0.3, socket_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        await RedisCartCheckpoints(client).save_many([SNAPSHOT], 60)
    # One try plus one retry, each bounded by the socket timeout.
    assert time.monotonic() - started < 3.0
    assert isinstance(info.value.__cause__, rx.TimeoutError | TimeoutError)
    await client.close()


async def test_closed_client_is_unavailable(client: RedisClient) -> None:
    await client.ping()
    await client.close()
    await client.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await RedisCartCheckpoints(client).load("cart-0123456789abcdef")


def test_credentials_stay_out_of_messages() -> None:
    client = RedisClient("redis://user:s3cret@127.0.0.1:1/0")
    with pytest.raises(StoreUnavailable) as info, client.errors("probe"):
        raise rx.ConnectionError("refused")
    assert "s3cret" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (rx.ConnectionError("Connection refused"), StoreUnavailable),
        (rx.TimeoutError("Timeout reading from socket"), StoreUnavailable),
        (rx.BusyLoadingError("Redis is loading the dataset in memory"), StoreUnavailable),
        (rx.MaxConnectionsError("Too many connections"), StoreUnavailable),
        (ConnectionResetError(104, "reset"), StoreUnavailable),
        (TimeoutError(), StoreUnavailable),
        (rx.ReadOnlyError("You can't write against a read only replica."), StoreUnavailable),
        (rx.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
         StoreUnavailable),
        (rx.ResponseError("BUSY Redis is busy running a script."), StoreUnavailable),
        (rx.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
         StoreIntegrityError),
        (rx.ResponseError("ERR user_script:3: attempt to compare nil with number"),
         StoreIntegrityError),
        (rx.ResponseError("ERR syntax error"), StorageError),
        (rx.AuthenticationError("invalid password"), StorageError),
        (rx.NoPermissionError("this user has no permissions"), StorageError),
        (rx.DataError("Invalid input of type: 'NoneType'"), StorageError),
    ],
)  # fmt: skip
def test_error_mapping(raised: Exception, expected: type[StorageError]) -> None:
    client = RedisClient("redis://127.0.0.1:1/0")
    with pytest.raises(StorageError) as info, client.errors("op"):
        raise raised
    assert type(info.value) is expected
    assert info.value.__cause__ is raised
