"""Interfaces for the state that lives in shard memory and is only checkpointed: carts and
sessions. Callers depend on these, never on an adapter.

Cart snapshots are the dicts of ``Cart.snapshot()``: ``id``, ``customer_id``, ``lines``,
``created_at``, ``updated_at`` and ``version``. The store treats them as opaque JSON
documents except for ``id`` (the key) and ``version`` (the write guard).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

CartSnapshot = dict[str, Any]
SessionData = dict[str, Any]


class CartCheckpointStore(Protocol):
    async def save_many(self, snapshots: Sequence[CartSnapshot], ttl_s: int) -> None:
        """Write the snapshots in one round trip; each cart's write is atomic on its own.

        A snapshot whose ``version`` is older than the stored one is skipped, compared by
        the store itself, so two writers racing cannot move a cart backwards; an equal
        version is rewritten (a re-save refreshes the expiry). Of several snapshots of one
        cart in ``snapshots`` only the newest is written. Every written cart expires
        ``ttl_s`` seconds after this call; skipped carts keep their expiry.

        Raises ValueError if ``ttl_s`` is not an integer >= 1, and StoreIntegrityError if a
        snapshot has no string ``id``, no integer ``version`` >= 0 or is not
        JSON-serialisable: both before anything is sent. StoreUnavailable means the store
        could not be reached and any subset of the carts may have been written (calling
        again with the same snapshots is safe).
        """
        ...

    async def load(self, cart_id: str) -> CartSnapshot | None:
        """The stored snapshot, or None if there is none (never saved, deleted or expired)."""
        ...

    async def delete(self, cart_id: str) -> None:
        """Forget the cart. Not version-guarded: the caller must not let an older pending
        save for the same cart reach the store afterwards, or the cart comes back until
        it expires."""
        ...

    async def close(self) -> None: ...


class SessionStore(Protocol):
    async def put(self, session_id: str, data: SessionData, ttl_s: int) -> None:
        """Create or replace the session; it expires ``ttl_s`` seconds from now."""
        ...

    async def get(self, session_id: str) -> SessionData | None: ...

    async def delete(self, session_id: str) -> None: ...

    async def get_and_delete(self, session_id: str) -> SessionData | None:
        """Read and remove in one atomic step, for one-shot tokens: of several concurrent
        callers at most one gets the data."""
        ...

    async def close(self) -> None: ...
