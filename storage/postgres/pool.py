"""A lazily created asyncpg pool, and the one place where driver errors become store errors.

asyncpg ships no type information, so it is imported here only: the adapters see the small
``PgConnection`` protocol below and never a driver type.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]
from asyncpg import exceptions as pg_errors

from storage.errors import StorageError, StoreIntegrityError, StoreUnavailable

# Lost or refused connections, timeouts, server shutdown or overload, and transactions the
# server aborted only because of concurrency: the same call may succeed if retried.
# OSError covers refused/reset sockets and DNS failures; TimeoutError (asyncio.TimeoutError
# since 3.11, raised for command_timeout) is an OSError too but is named for visibility.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    pg_errors.PostgresConnectionError,  # class 08, incl. ConnectionDoesNotExistError
    pg_errors.OperatorInterventionError,  # class 57: CannotConnectNow, shutdown, cancelled
    pg_errors.InsufficientResourcesError,  # class 53, incl. TooManyConnectionsError
    pg_errors.SerializationError,
    pg_errors.DeadlockDetectedError,
    pg_errors.LockNotAvailableError,
)

# The server refused the data itself; retrying the same call cannot help. asyncpg also
# raises DataError client-side when a value cannot be encoded for its parameter type.
_REFUSED: tuple[type[BaseException], ...] = (
    pg_errors.IntegrityConstraintViolationError,  # class 23: check, unique, FK, not-null
    pg_errors.DataError,  # class 22
)

# Everything else the driver can raise: other server errors (undefined table, auth,
# syntax), client misuse (InterfaceError) and protocol bugs (InternalClientError).
_OTHER: tuple[type[BaseException], ...] = (
    pg_errors.PostgresError,
    pg_errors.InterfaceError,
    pg_errors.InternalClientError,
)


@contextmanager
def map_pg_errors(what: str = "postgres store") -> Iterator[None]:
    """Re-raise driver and socket errors as the project's storage errors."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"{what}: {_describe(exc)}") from exc
    except _REFUSED as exc:
        raise StoreIntegrityError(f"{what}: {_describe(exc)}") from exc
    except _OTHER as exc:
        raise StorageError(f"{what}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    # TimeoutError() from asyncio carries no message.
    return str(exc) or type(exc).__name__


class PgRecord(Protocol):
    """The part of ``asyncpg.Record`` the adapters use: positional access and unpacking."""

    def __getitem__(self, index: int) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


class PgTransaction(Protocol):
    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...


class PgConnection(Protocol):
    """The subset of ``asyncpg.Connection`` the adapters rely on."""

    async def execute(self, query: str, *args: object) -> str: ...

    async def executemany(self, command: str, args: Iterable[Sequence[object]]) -> None: ...

    async def fetch(self, query: str, *args: object) -> list[PgRecord]: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...

    def transaction(
        self, *, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> PgTransaction: ...


class PgPool:
    """An asyncpg pool created on first use.

    Constructing one opens nothing and needs no event loop, so stores can be built in a
    factory or an actor constructor. The asyncpg pool belongs to the loop that first uses
    it. Driver errors, including failures to connect, leave ``acquire`` as store errors.
    """

    def __init__(
        self,
        dsn: str,
        min_size: int = 1,
        max_size: int = 10,
        command_timeout_s: float = 10,
        *,
        connect_timeout_s: float = 5,
        close_timeout_s: float = 10,
    ) -> None:
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(
                f"need 0 <= min_size <= max_size, 1 <= max_size: {min_size}, {max_size}"
            )
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._command_timeout_s = command_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._close_timeout_s = close_timeout_s
        self._pool: Any = None
        self._closed = False
        # asyncio.Lock binds to a loop on first contended use, not here (3.10+).
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """Whether the underlying pool exists yet (it is created on first ``acquire``)."""
        return self._pool is not None

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[PgConnection]:
        """A pooled connection for the block. Errors raised inside the block by the driver
        are translated here too, so callers need no driver imports."""
        pool = await self._ensure_pool()
        with map_pg_errors():
            # The acquire timeout bounds both waiting for a free connection and
            # opening a new one, so an exhausted or unreachable server fails fast.
            async with pool.acquire(timeout=self._command_timeout_s) as conn:
                yield conn

    async def close(self) -> None:
        """Close the pool; later ``acquire`` calls raise StoreUnavailable. Idempotent."""
        async with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            # Graceful close waits for borrowed connections; a stuck borrower must not
            # hang shutdown forever.
            await asyncio.wait_for(pool.close(), timeout=self._close_timeout_s)
        except TimeoutError:
            pool.terminate()

    async def _ensure_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._closed:
                raise StoreUnavailable("postgres pool is closed")
            if self._pool is None:
                with map_pg_errors("postgres pool"):
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=self._min_size,
                        max_size=self._max_size,
                        command_timeout=self._command_timeout_s,
                        timeout=self._connect_timeout_s,
                    )
            return self._pool
