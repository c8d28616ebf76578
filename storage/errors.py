"""The project's own storage errors; adapters translate driver errors into these."""

from __future__ import annotations


class StorageError(Exception):
    """A store could not do what was asked."""


class StoreUnavailable(StorageError):
    """The store is unreachable or timed out: the operation may be retried."""


class StoreIntegrityError(StorageError):
    """The store refused the data (constraint, corrupt row): retrying will not help."""
