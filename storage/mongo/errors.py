"""The one place where MongoDB driver errors become store errors.

pymongo's exceptions say a lot about whether a retry can help; the adapters only need the
project's three answers: unavailable (retry), refused (do not), or some other failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bson.errors import InvalidDocument
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
    WriteError,
)

from storage.errors import StorageError, StoreIntegrityError, StoreUnavailable

# Lost or refused connections, no server to select, a primary that stepped down, network
# and server-side timeouts, and writes whose durability the server could not confirm:
# the same call may succeed if retried. ConnectionFailure covers AutoReconnect,
# NetworkTimeout, NotPrimaryError, ServerSelectionTimeoutError and WaitQueueTimeoutError;
# WriteConcernError covers WTimeoutError.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    ConnectionFailure,
    ExecutionTimeout,
    WriteConcernError,
)

# The server (or the BSON encoder) refused the data itself. WriteError covers
# DuplicateKeyError and document validation failures (code 121) of single writes.
_REFUSED: tuple[type[BaseException], ...] = (WriteError, InvalidDocument)

# Codes that mean "this data is refused" when they come as a plain OperationFailure
# (findAndModify reports a duplicate key or a failed validation that way).
_REFUSED_CODES = frozenset({11000, 11001, 12582, 121})


def _kind(exc: BaseException) -> type[StorageError]:
    if isinstance(exc, BulkWriteError):
        # Refused documents make it an integrity error; a timeout, or only write-concern
        # errors (applied but not confirmed durable), make it worth a retry.
        if exc.timeout or not exc.details.get("writeErrors"):
            return StoreUnavailable
        return StoreIntegrityError
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailable
    if isinstance(exc, PyMongoError) and (
        exc.timeout or exc.has_error_label("RetryableWriteError")
    ):
        return StoreUnavailable
    if isinstance(exc, _REFUSED):
        return StoreIntegrityError
    if isinstance(exc, OperationFailure) and exc.code in _REFUSED_CODES:
        return StoreIntegrityError
    return StorageError


@contextmanager
def map_mongo_errors(what: str = "mongo store") -> Iterator[None]:
    """Re-raise driver errors as the project's storage errors; others pass through."""
    try:
        yield
    except (PyMongoError, InvalidDocument) as exc:
        raise _kind(exc)(f"{what}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
