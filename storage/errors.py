"""The project's own storage errors; adapters translate driver errors into these."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.records import IdempotencyRecord


class StorageError(Exception):
    """A store could not do what was asked."""


class StoreUnavailable(StorageError):
    """The store is unreachable or timed out: the operation may be retried."""


class StoreIntegrityError(StorageError):
    """The store refused the data (constraint, corrupt row): retrying will not help."""


# --- orders, outbox and idempotency (issue 5) -------------------------------------------


class StoreConflict(StorageError):
    """The write lost a race or broke a rule the store enforces: the stored order's
    version is not the expected one, or the status change is not in the transition table.
    Nothing was written; re-read and decide again."""


class RecordNotFound(StorageError):
    """The row the write refers to does not exist (e.g. transitioning an unknown order)."""


class DuplicateKey(StorageError):
    """A live idempotency record already holds this (scope, key). Nothing was written;
    ``existing`` is the stored record, so the caller can answer with the first response
    (or with IDEMPOTENCY_MISMATCH when its request hash differs)."""

    def __init__(self, existing: IdempotencyRecord) -> None:
        super().__init__(f"idempotency key {existing.key!r} already used in {existing.scope!r}")
        self.existing = existing

    def __reduce__(self) -> tuple[object, ...]:
        return (DuplicateKey, (self.existing,))
