"""map_mongo_errors: driver errors become the project's storage errors, cause kept."""

from __future__ import annotations

import pytest
from bson.errors import InvalidDocument
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    CursorNotFound,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    InvalidOperation,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
    WriteConcernError,
    WriteError,
    WTimeoutError,
)

from storage.errors import StorageError, StoreIntegrityError, StoreUnavailable
from storage.mongo import map_mongo_errors


def _retryable() -> OperationFailure:
    details = {"errmsg": "primary stepped down", "errorLabels": ["RetryableWriteError"]}
    return OperationFailure("primary stepped down", code=189, details=details)


def _bulk(
    write_errors: list[dict[str, object]], concern_errors: list[dict[str, object]]
) -> BulkWriteError:
    return BulkWriteError(
        {"writeErrors": write_errors, "writeConcernErrors": concern_errors, "nInserted": 0}
    )


CASES: list[tuple[BaseException, type[StorageError]]] = [
    (ConnectionFailure("connection refused"), StoreUnavailable),
    (AutoReconnect("connection reset"), StoreUnavailable),
    (NetworkTimeout("timed out"), StoreUnavailable),
    (ServerSelectionTimeoutError("no servers"), StoreUnavailable),
    (NotPrimaryError("not primary"), StoreUnavailable),
    (WaitQueueTimeoutError("pool exhausted"), StoreUnavailable),
    (ExecutionTimeout("operation exceeded time limit", code=50), StoreUnavailable),
    (OperationFailure("operation exceeded time limit", code=50), StoreUnavailable),
    (WriteConcernError("waiting for replication", code=64), StoreUnavailable),
    (WTimeoutError("waiting for replication timed out", code=64), StoreUnavailable),
    (_retryable(), StoreUnavailable),
    (_bulk([], [{"code": 64, "errmsg": "waiting for replication"}]), StoreUnavailable),
    (_bulk([{"index": 0, "code": 50, "errmsg": "time limit"}], []), StoreUnavailable),
    (DuplicateKeyError("E11000 duplicate key", code=11000), StoreIntegrityError),
    (WriteError("Document failed validation", code=121), StoreIntegrityError),
    (OperationFailure("Document failed validation", code=121), StoreIntegrityError),
    (OperationFailure("E11000 duplicate key", code=11000), StoreIntegrityError),
    (_bulk([{"index": 3, "code": 11000, "errmsg": "E11000"}], []), StoreIntegrityError),
    (InvalidDocument("cannot encode object"), StoreIntegrityError),
    (DocumentTooLarge("BSON document too large"), StoreIntegrityError),
    (OperationFailure("not authorized", code=13), StorageError),
    (OperationFailure("unknown operator: $foo", code=2), StorageError),
    (CursorNotFound("cursor id not found", code=43), StorageError),
    (ConfigurationError("bad option"), StorageError),
    (InvalidOperation("cannot use a closed client"), StorageError),
]


@pytest.mark.parametrize(
    ("raised", "expected"), CASES, ids=[f"{type(e).__name__}-{i}" for i, (e, _) in enumerate(CASES)]
)
def test_map_mongo_errors(raised: BaseException, expected: type[StorageError]) -> None:
    with pytest.raises(StorageError) as info, map_mongo_errors("catalog store"):
        raise raised
    assert type(info.value) is expected
    assert info.value.__cause__ is raised
    assert str(info.value).startswith("catalog store: ")


def test_map_mongo_errors_leaves_other_errors_alone() -> None:
    with pytest.raises(ValueError, match="not a driver error"), map_mongo_errors():
        raise ValueError("not a driver error")


def test_an_empty_message_names_the_error() -> None:
    with pytest.raises(StoreUnavailable, match="AutoReconnect"), map_mongo_errors():
        raise AutoReconnect()
