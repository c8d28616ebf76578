"""The inventory shard's behaviour: stock in memory, every change durable before its reply.

One batch is one critical section: SKUs it touches are loaded (lazily, on first use), its
operations applied in order, and everything it changed written in one store transaction
(group commit). If that write fails, the touched SKUs are dropped from memory so they are
re-read from the store, and every mutation in the batch is refused as retryable: nothing
is acknowledged that is not durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.inventory import Inventory, Reservation, StockLevel
from actors.oplog import OpLog
from actors.protocol import Op, Reply, ok, refused
from actors.service import BatchDispatcher
from storage.errors import StorageError
from storage.interfaces import StockStore
from storage.records import (
    ReservationRecord,
    StockChange,
    StockRecord,
    StockWrite,
)

log = logging.getLogger("feira.inventory")

# Operations whose sku is the second argument (after the op id) or the first (reads).
_SKU_ARG = {"receive": 1, "set_on_hand": 1, "reserve": 2, "release": 2, "commit": 2}


class _Changes:
    """What a batch changed, accumulated while it runs."""

    __slots__ = ("deleted", "journal", "skus", "upserted")

    def __init__(self) -> None:
        self.skus: set[str] = set()
        self.upserted: dict[str, Reservation] = {}
        self.deleted: set[str] = set()
        self.journal: list[StockChange] = []

    def note(self, op_id: str, kind: str, sku: str, qty: int, rid: str | None, now: float) -> None:
        self.skus.add(sku)
        self.journal.append(StockChange(op_id, sku, kind, qty, rid, now))


class InventoryService:
    def __init__(
        self,
        store: StockStore,
        reservation_ttl_s: float,
        op_log_size: int,
        clock: Callable[[], float] = time.time,
        recall_window_s: float = 30.0,
    ) -> None:
        self.store = store
        # The op log is memory only. For a while after a (re)start, a mutation it does not
        # know may be the retry of one applied before a crash: the journal is asked.
        self._recall_until = time.monotonic() + recall_window_s
        self._journalled: set[str] = set()
        self.inventory = Inventory()
        self.reservation_ttl_s = reservation_ttl_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._changes = _Changes()
        self._dispatch = BatchDispatcher(
            reads={"stock": self._stock},
            mutations={
                "receive": self._receive,
                "set_on_hand": self._set_on_hand,
                "reserve": self._reserve,
                "release": self._release,
                "commit": self._commit,
            },
            log=OpLog(op_log_size, _pack_reply, _unpack_reply),
            recall=self._recall,
        )

    async def apply(self, ops: list[Op]) -> list[Reply]:
        async with self._lock:
            now = self._clock()
            if not await self._ensure_loaded(_skus_of(ops)) or not await self._ask_journal(ops):
                # Never act on a SKU whose stored state is unknown: a receive would
                # otherwise overwrite the real row with a fresh count.
                return [_unavailable() for _ in ops]
            self._changes = _Changes()
            replies, fresh = self._dispatch.run(now, ops)
            if await self._persist(now):
                return replies
            return self._dispatch.undo(ops, replies, fresh, _unavailable())

    async def expire_due(self) -> int:
        """Release reservations whose time has run out; returns how many."""
        async with self._lock:
            now = self._clock()
            self._changes = _Changes()
            expired = self.inventory.expire(now)
            for r in expired:
                self._changes.note(f"expire:{r.id}", "expire", r.sku, r.quantity, r.id, now)
                self._changes.deleted.add(r.id)
            if expired:
                await self._persist(now)
            return len(expired)

    async def _ask_journal(self, ops: list[Op]) -> bool:
        """Fill ``_journalled`` with this batch's op ids already in the journal."""
        self._journalled = set()
        if time.monotonic() > self._recall_until:
            return True
        unknown = [
            args[0]
            for name, args in ops
            if name in _SKU_ARG
            and args
            and isinstance(args[0], str)
            and args[0] not in self._dispatch.log
        ]
        if not unknown:
            return True
        try:
            self._journalled = await self.store.applied_ops(unknown)
        except StorageError:
            return False
        return True

    def _recall(self, name: str, args: tuple[Any, ...]) -> Reply | None:
        if args[0] not in self._journalled:
            return None
        sku = args[_SKU_ARG[name]] if len(args) > _SKU_ARG[name] else None
        if not isinstance(sku, str) or not self.inventory.knows(sku):
            return None
        level = self.inventory.level(sku)
        reservation = self.inventory.reservation(args[1]) if name == "reserve" else None
        if reservation is not None:
            return ok(_reservation_json(reservation, level))
        return ok(_level_json(level))

    async def _ensure_loaded(self, skus: set[str]) -> bool:
        """Load unknown SKUs from the store; False if the store could not say."""
        missing = [s for s in skus if not self.inventory.knows(s)]
        if not missing:
            return True
        try:
            found = await self.store.load(missing)
        except StorageError:
            return False
        for sku, (level, reservations) in found.items():
            try:
                self.inventory.load(
                    StockLevel(sku, level.on_hand, level.reserved, level.sold),
                    [Reservation(r.id, r.sku, r.quantity, r.expires_at) for r in reservations],
                )
            except DomainError:
                log.error("stored stock of %s breaks the invariant; refusing to serve it", sku)
                return False
        return True

    async def _persist(self, now: float) -> bool:
        changes = self._changes
        if not changes.journal:
            return True
        levels = tuple(_record(self.inventory.level(sku)) for sku in sorted(changes.skus))
        write = StockWrite(
            levels=levels,
            upsert_reservations=tuple(
                ReservationRecord(r.id, r.sku, r.quantity, r.expires_at)
                for rid, r in changes.upserted.items()
                if rid not in changes.deleted
            ),
            delete_reservations=tuple(sorted(changes.deleted)),
            journal=tuple(changes.journal),
        )
        try:
            await self.store.write(write)
        except StorageError:
            for sku in changes.skus:
                self.inventory.forget(sku)
            return False
        return True

    # --- operations -------------------------------------------------------------------

    def _stock(self, now: float, skus: list[str]) -> dict[str, dict[str, int]]:
        return {s: _level_json(self.inventory.level(s)) for s in skus if self.inventory.knows(s)}

    def _receive(self, now: float, op_id: str, sku: str, quantity: int) -> dict[str, int]:
        self.inventory.receive(sku, quantity)
        self._changes.note(op_id, "receive", sku, quantity, None, now)
        return _level_json(self.inventory.level(sku))

    def _set_on_hand(self, now: float, op_id: str, sku: str, on_hand: int) -> dict[str, int]:
        self.inventory.set_on_hand(sku, on_hand)
        self._changes.note(op_id, "adjust", sku, on_hand, None, now)
        return _level_json(self.inventory.level(sku))

    def _reserve(
        self,
        now: float,
        op_id: str,
        reservation_id: str,
        sku: str,
        quantity: int,
        ttl_s: float | None = None,
    ) -> dict[str, Any]:
        before = self.inventory.reservation(reservation_id)
        r = self.inventory.reserve(
            reservation_id, sku, quantity, now, ttl_s or self.reservation_ttl_s
        )
        if before is None:
            self._changes.note(op_id, "reserve", sku, quantity, r.id, now)
            self._changes.upserted[r.id] = r
        return _reservation_json(r, self.inventory.level(sku))

    def _release(self, now: float, op_id: str, reservation_id: str, sku: str) -> dict[str, Any]:
        r = self.inventory.release(reservation_id)
        self._changes.note(op_id, "release", r.sku, r.quantity, r.id, now)
        self._changes.deleted.add(r.id)
        return _reservation_json(r, self.inventory.level(r.sku))

    def _commit(self, now: float, op_id: str, reservation_id: str, sku: str) -> dict[str, Any]:
        r = self.inventory.commit(reservation_id, now)
        self._changes.note(op_id, "commit", r.sku, r.quantity, r.id, now)
        self._changes.deleted.add(r.id)
        return _reservation_json(r, self.inventory.level(r.sku))

    def stats(self) -> dict[str, int]:
        return {"skus": self.inventory.sku_count()}


def _unavailable() -> Reply:
    return refused(DomainError(ErrorCode.STORE_UNAVAILABLE, "stock store unavailable; retry"))


def _skus_of(ops: list[Op]) -> set[str]:
    skus: set[str] = set()
    for name, args in ops:
        if name == "stock" and args and isinstance(args[0], list):
            skus.update(s for s in args[0] if isinstance(s, str))
        elif name in _SKU_ARG and len(args) > _SKU_ARG[name]:
            sku = args[_SKU_ARG[name]]
            if isinstance(sku, str):
                skus.add(sku)
    return skus


def _record(level: StockLevel) -> StockRecord:
    return StockRecord(level.sku, level.on_hand, level.reserved, level.sold)


_LEVEL_KEYS = ("on_hand", "reserved", "sold", "available")
_RESERVATION_KEYS = ("reservation_id", "sku", "quantity", "expires_at", "available")


def _level_json(level: StockLevel) -> dict[str, int]:
    return {
        "on_hand": level.on_hand,
        "reserved": level.reserved,
        "sold": level.sold,
        "available": level.available,
    }


def _reservation_json(r: Reservation, level: StockLevel) -> dict[str, Any]:
    return {
        "reservation_id": r.id,
        "sku": r.sku,
        "quantity": r.quantity,
        "expires_at": r.expires_at,
        "available": level.available,
    }


# --- the op log's form of a reply ---------------------------------------------------------
# Up to ``op_log_size`` replies stay in memory: a reply dict and its (True, ...) wrapper cost
# about 260 bytes, its values in one tuple about 70. Refusals are kept as they are.


class _PackedLevel(tuple[Any, ...]):
    """A successful reply that is a stock level: its values in ``_LEVEL_KEYS`` order."""

    __slots__ = ()


class _PackedReservation(tuple[Any, ...]):
    """A successful reply about a reservation: its values in ``_RESERVATION_KEYS`` order."""

    __slots__ = ()


def _pack_reply(reply: Reply) -> object:
    success, value = reply
    if success and type(value) is dict:
        keys = tuple(value)
        if keys == _LEVEL_KEYS:
            return _PackedLevel(value.values())
        if keys == _RESERVATION_KEYS:
            return _PackedReservation(value.values())
    return reply


def _unpack_reply(stored: object) -> Reply:
    if type(stored) is _PackedLevel:
        return ok(dict(zip(_LEVEL_KEYS, stored, strict=True)))
    if type(stored) is _PackedReservation:
        return ok(dict(zip(_RESERVATION_KEYS, stored, strict=True)))
    return cast(Reply, stored)
