"""What the PostgreSQL adapters share: closing, chunking and integer-only values."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from itertools import islice
from typing import TypeVar

from storage.errors import StoreIntegrityError, StoreUnavailable
from storage.postgres.pool import PgConnection, PgPool

T = TypeVar("T")

# Rows per executemany: each call is one pipelined round trip, and a bounded chunk keeps
# a streamed bulk load from being materialised whole.
WRITE_CHUNK = 1000


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def require_int(value: object, field: str) -> int:
    """Money and counts are integers. asyncpg would silently truncate 12.5 to 12 for a
    BIGINT parameter, so the check SQLite's schema does with typeof() happens here.

    Accepted exactly as the SQLite adapter accepts them: ints (bool and IntEnum as their
    value), and floats with an integral value, which SQLite's INTEGER affinity stores
    losslessly as integers before its CHECK runs (12.0 becomes 12; 12.5 is refused).
    """
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise StoreIntegrityError(f"{field} must be an integer, got {value!r}")


class PgStore:
    """A store borrows connections from a pool it does not own: prices and stock normally
    share one pool, so closing a store only stops that store; the pool's creator closes it."""

    def __init__(self, pool: PgPool, component: str) -> None:
        self._pool = pool
        self._component = component
        self._closed = False

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[PgConnection]:
        if self._closed:
            raise StoreUnavailable(f"{self._component} store is closed")
        async with self._pool.acquire() as conn:
            yield conn

    async def close(self) -> None:
        self._closed = True
