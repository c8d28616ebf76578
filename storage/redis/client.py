"""The Redis connection shared by the Redis adapters, their key prefix, and the one place
where redis-py errors become the project's storage errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from storage.errors import StorageError, StoreIntegrityError, StoreUnavailable

DEFAULT_PREFIX = "feira:"
_SCHEMES = ("redis", "rediss", "unix")

# Transient server states (replica promoted or still syncing, cluster resharding, memory
# full until keys expire, another script running): the same call may work later.
_TRANSIENT_RESPONSES = (
    rx.ReadOnlyError,
    rx.TryAgainError,
    rx.ClusterDownError,
    rx.OutOfMemoryError,
)
_TRANSIENT_CODES = frozenset({"BUSY"})
# The server refused what is stored or what a script did with it.
_DATA_CODES = frozenset({"WRONGTYPE"})
_SCRIPT_MARKERS = ("user_script:", "Error running script")


class RedisClient:
    """One lazily created ``redis.asyncio.Redis`` (with its connection pool) for a URL.

    Nothing connects at construction, so stores can be built in a constructor without an
    event loop; the pool appears on first use and its connections belong to the event
    loop that used it first.

    Timeouts are short and driver retries few on purpose: the callers (write-behind
    checkpointers, request handlers) have their own retry and backoff, and must learn
    quickly that the store is down rather than stall behind redis-py's defaults (ten
    retries). One retry remains so that a pooled connection the server closed while idle
    costs a reconnect rather than an error; every write the adapters issue is safe to
    repeat.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout_s: float = 2.0,
        connect_timeout_s: float = 1.0,
        retries: int = 1,
        max_connections: int | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ValueError("Redis URL must start with redis://, rediss:// or unix://")
        if socket_timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("Redis timeouts must be > 0")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self._url = url
        self._prefix = prefix
        self._socket_timeout_s = socket_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._retries = retries
        self._max_connections = max_connections
        # Credentials must not reach logs through error messages.
        self._where = (
            f"redis at {parts.path}"
            if parts.scheme == "unix"
            else f"redis at {parts.hostname}:{parts.port or 6379}{parts.path}"
        )
        self._redis: Redis | None = None
        self._closed = False

    @property
    def prefix(self) -> str:
        return self._prefix

    def key(self, kind: str, ident: str) -> str:
        return f"{self._prefix}{kind}:{ident}"

    def redis(self) -> Redis:
        if self._closed:
            raise StoreUnavailable(f"{self._where}: client is closed")
        if self._redis is None:
            self._redis = Redis.from_url(
                self._url,
                socket_timeout=self._socket_timeout_s,
                socket_connect_timeout=self._connect_timeout_s,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), self._retries),
                max_connections=self._max_connections,
            )
        return self._redis

    @contextmanager
    def errors(self, operation: str) -> Iterator[None]:
        """Translate driver and socket errors raised inside the block."""
        try:
            yield
        except rx.RedisError as exc:
            raise _translate(exc)(f"{operation} on {self._where}: {exc}") from exc
        except OSError as exc:
            # Socket errors redis-py did not wrap; includes the builtin TimeoutError.
            raise StoreUnavailable(f"{operation} on {self._where}: {exc}") from exc

    async def ping(self) -> None:
        with self.errors("ping"):
            await self.redis().ping()

    async def close(self) -> None:
        """Close the pool. Idempotent; stores sharing this client stop working too."""
        self._closed = True
        redis, self._redis = self._redis, None
        if redis is not None:
            await redis.aclose()


def _translate(exc: rx.RedisError) -> type[StorageError]:
    # Order matters: the auth errors and BusyLoadingError are ConnectionErrors.
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError | rx.NoPermissionError):
        # Configuration (password, ACL): waiting will not fix it, and the data is fine.
        return StorageError
    if isinstance(exc, rx.ConnectionError | rx.TimeoutError):
        # Refused, reset, timed out, LOADING (BusyLoadingError), pool exhausted.
        return StoreUnavailable
    if isinstance(exc, rx.ResponseError):
        if isinstance(exc, _TRANSIENT_RESPONSES):
            return StoreUnavailable
        text = str(exc)
        code = exc.status_code or text.partition(" ")[0]
        if code in _TRANSIENT_CODES:
            return StoreUnavailable
        if code in _DATA_CODES or any(marker in text for marker in _SCRIPT_MARKERS):
            return StoreIntegrityError
    # Other ResponseErrors (bad arguments: a bug here), DataError, InvalidResponse.
    return StorageError
