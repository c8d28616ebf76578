"""The cart shard's behaviour: a CartBook behind batch dispatch, checkpointed write-behind.

Carts live in memory. With a checkpoint store, every changed cart is written to it at most
``lag_s`` after the change, newest version only, many carts per round trip; with
``lag_s == 0`` the write happens before the reply, and a failed write refuses the batch's
changes as retryable and drops those carts from memory, so the next touch reloads what is
durable. A cart not in memory is loaded from the store the first time it is touched
(after a restart, or on another shard count). No Ray here.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from actors.domain.cart import Cart, CartBook, CartLimits, pack_snapshot, unpack_snapshot
from actors.domain.errors import DomainError, ErrorCode
from actors.oplog import OpLog
from actors.protocol import Op, Reply, ok, refused
from actors.service import BatchDispatcher
from storage.carts import CartCheckpointStore
from storage.errors import StorageError

log = logging.getLogger("feira.carts")

_MUTATIONS = ("create", "add", "set_quantity", "remove", "merge", "freeze", "unfreeze")
_RETRY_PAUSE_S = 0.5
# Where each checked mutation carries its caller (after the op id): a replayed operation
# is answered only to the cart's owner.
_CALLER_AT = {"add": 4, "set_quantity": 4, "remove": 3, "merge": 3, "freeze": 3}
# Operation ids kept with each cart's checkpoint, so that a retry reaching a restarted
# shard is answered instead of applied again. A client retries within seconds; the last
# few ids of a cart are enough. Kept as a tuple per cart, oldest first (a deque costs 600
# bytes even when it holds one id).
RECENT_OPS_PER_CART = 16
_OPS_KEY = "op_ids"


class CartService:
    def __init__(
        self,
        limits: CartLimits,
        idle_ttl_s: float,
        op_log_size: int,
        clock: Callable[[], float] = time.time,
        checkpoints: CartCheckpointStore | None = None,
        lag_s: float = 0.05,
    ) -> None:
        self.book = CartBook()
        self.limits = limits
        self.idle_ttl_s = idle_ttl_s
        self._clock = clock
        self._checkpoints = checkpoints
        self._lag_s = lag_s
        self._dirty: set[str] = set()
        # When the oldest change still in ``_dirty`` was made (None when nothing is dirty).
        self._dirty_since: float | None = None
        self.checkpoint_failures = 0
        self._flusher: asyncio.Task[None] | None = None
        self._recent: dict[str, tuple[str, ...]] = {}
        self._dispatch = BatchDispatcher(
            reads={"get": self._get},
            mutations={
                "create": self._create,
                "add": self._add,
                "set_quantity": self._set_quantity,
                "remove": self._remove,
                "merge": self._merge,
                "freeze": self._freeze,
                "unfreeze": self._unfreeze,
            },
            log=OpLog(op_log_size, _pack_reply, _unpack_reply),
            recall=self._recall,
        )

    async def apply(self, ops: list[Op]) -> list[Reply]:
        if self._checkpoints is not None:
            try:
                await self._load_missing(ops)
            except StorageError:
                return [_unavailable() for _ in ops]
        now = self._clock()
        replies, fresh = self._dispatch.run(now, ops)
        carts: set[str] = set()
        for (name, args), (applied, _) in zip(ops, replies, strict=True):
            cart_id = _cart_of(name, args)
            if applied and name in _MUTATIONS and cart_id is not None:
                carts.add(cart_id)
                recent = self._recent.get(cart_id, ())
                if args[0] not in recent:
                    keep = recent[max(0, len(recent) + 1 - RECENT_OPS_PER_CART) :]
                    self._recent[cart_id] = (*keep, args[0])
        if self._checkpoints is None or not carts:
            return replies
        if self._lag_s > 0:
            if not self._dirty:
                self._dirty_since = now
            self._dirty |= carts
            self._schedule_flush()
            return replies
        try:
            await self._save(carts)
        except StorageError:
            for cart_id in carts:
                # Both come back from the last durable checkpoint on the next touch.
                self._recent.pop(cart_id, None)
                if cart_id in self.book:
                    self.book.remove(cart_id)
            return self._dispatch.undo(ops, replies, fresh, _unavailable())
        return replies

    def expire_idle(self) -> list[str]:
        expired = self.book.expire_idle(self._clock(), self.idle_ttl_s)
        self._dirty.difference_update(expired)
        if not self._dirty:
            self._dirty_since = None
        for cart_id in expired:
            self._recent.pop(cart_id, None)
        return expired

    async def flush(self) -> int:
        """Write every dirty cart now; returns how many. Used at shutdown and by tests."""
        dirty, self._dirty = self._dirty, set()
        since, self._dirty_since = self._dirty_since, None
        try:
            await self._save(dirty)
        except StorageError:
            self.checkpoint_failures += 1
            if dirty and since is not None:
                # Still unsaved: the oldest change is the older of the two sets'.
                current = self._dirty_since
                self._dirty_since = since if current is None else min(since, current)
            self._dirty |= dirty
            raise
        return len(dirty)

    def stats(self) -> dict[str, float]:
        """``carts`` in memory; ``dirty``: carts changed and not yet checkpointed;
        ``checkpoint_lag_s``: age of the oldest such change (0 when none);
        ``checkpoint_failures``: failed checkpoint writes so far."""
        lag = 0.0
        if self._dirty and self._dirty_since is not None:
            lag = max(0.0, self._clock() - self._dirty_since)
        return {
            "carts": len(self.book),
            "dirty": len(self._dirty),
            "checkpoint_lag_s": round(lag, 3),
            "checkpoint_failures": self.checkpoint_failures,
        }

    # --- checkpoints --------------------------------------------------------------------

    async def _load_missing(self, ops: list[Op]) -> None:
        assert self._checkpoints is not None
        wanted = {
            c
            for name, args in ops
            if name != "create"
            and isinstance(c := _cart_of(name, args), str)
            and c not in self.book
        }
        if not wanted:
            return
        ids = list(wanted)
        found = await asyncio.gather(*(self._checkpoints.load(c) for c in ids))
        for cart_id, snapshot in zip(ids, found, strict=True):
            # Another batch may have loaded (and changed) it while this one waited.
            if snapshot is not None and cart_id not in self.book:
                try:
                    self.book.put(Cart.from_snapshot(snapshot))
                except DomainError:
                    log.error("stored cart %s is malformed; treating it as unknown", cart_id)
                    continue
                ops_seen = snapshot.get(_OPS_KEY)
                if isinstance(ops_seen, list):
                    kept = tuple(o for o in ops_seen if isinstance(o, str))
                    self._recent[cart_id] = kept[-RECENT_OPS_PER_CART:]

    async def _save(self, cart_ids: set[str]) -> None:
        assert self._checkpoints is not None
        snapshots = [
            {**self.book.get(c).snapshot(), _OPS_KEY: list(self._recent.get(c, ()))}
            for c in cart_ids
            if c in self.book
        ]
        if snapshots:
            await self._checkpoints.save_many(snapshots, int(self.idle_ttl_s))

    def _schedule_flush(self) -> None:
        if self._flusher is None or self._flusher.done():
            # A context of its own: the flush serves many batches, so its log lines must
            # not carry the request ids of the one that happened to start it.
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_later(), context=contextvars.Context()
            )

    async def _flush_later(self) -> None:
        # Changes made while waiting ride along: one write per cart per lag window.
        await asyncio.sleep(self._lag_s)
        while self._dirty:
            try:
                await self.flush()
            except StorageError:
                log.warning("cart checkpoint failed; %d carts pending, retrying", len(self._dirty))
                await asyncio.sleep(_RETRY_PAUSE_S)

    def _recall(self, name: str, args: tuple[Any, ...]) -> Reply | None:
        """A mutation already applied before a restart: answer with the cart as it is."""
        cart_id = _cart_of(name, args)
        recent = self._recent.get(cart_id) if cart_id is not None else None
        if cart_id is None or recent is None or args[0] not in recent or cart_id not in self.book:
            return None
        cart = self.book.get(cart_id)
        at = _CALLER_AT.get(name)
        caller = args[at] if at is not None and len(args) > at else None
        if at is not None and cart.customer_id is not None and caller != cart.customer_id:
            return None  # not the owner: the operation runs and refuses as it would anyway
        snapshot = cart.snapshot()
        return ok({"cart": snapshot, "skipped": []} if name == "merge" else snapshot)

    # --- operations -------------------------------------------------------------------

    # ``caller`` on every operation: the signed-in customer id, or None for a guest; a
    # customer's cart refuses anyone else (Cart.check_access) before anything changes.

    def _cart(self, cart_id: str, caller: str | None) -> Cart:
        cart = self.book.get(cart_id)
        cart.check_access(caller)
        return cart

    def _get(self, now: float, cart_id: str, caller: str | None = None) -> dict[str, Any]:
        return self._cart(cart_id, caller).snapshot()

    def _create(self, now: float, op_id: str, cart_id: str, customer_id: str | None) -> Any:
        return self.book.create(cart_id, customer_id, now).snapshot()

    def _add(
        self,
        now: float,
        op_id: str,
        cart_id: str,
        sku: str,
        quantity: int,
        caller: str | None = None,
    ) -> Any:
        cart = self._cart(cart_id, caller)
        cart.add(sku, quantity, self.limits, now)
        return cart.snapshot()

    def _set_quantity(
        self,
        now: float,
        op_id: str,
        cart_id: str,
        sku: str,
        quantity: int,
        caller: str | None = None,
    ) -> Any:
        cart = self._cart(cart_id, caller)
        cart.set_quantity(sku, quantity, self.limits, now)
        return cart.snapshot()

    def _merge(
        self,
        now: float,
        op_id: str,
        cart_id: str,
        lines: list[tuple[str, int]],
        caller: str | None = None,
    ) -> dict[str, Any]:
        cart = self._cart(cart_id, caller)
        skipped = cart.merge([(sku, qty) for sku, qty in lines], self.limits, now)
        return {"cart": cart.snapshot(), "skipped": skipped}

    def _remove(
        self, now: float, op_id: str, cart_id: str, sku: str, caller: str | None = None
    ) -> Any:
        cart = self._cart(cart_id, caller)
        cart.remove(sku, now)
        return cart.snapshot()

    def _freeze(
        self,
        now: float,
        op_id: str,
        cart_id: str,
        holder: str = "checkout",
        caller: str | None = None,
    ) -> Any:
        """Freeze the cart for a checkout and return its snapshot (idempotent for one
        holder; CART_FROZEN if another holder froze it). The freeze is checkpointed like
        any change, so a restarted shard keeps it."""
        cart = self._cart(cart_id, caller)
        cart.freeze(holder, now)
        return cart.snapshot()

    def _unfreeze(self, now: float, op_id: str, cart_id: str, holder: str | None = None) -> Any:
        """Lift ``holder``'s freeze (None: any) after a failed checkout; a no-op otherwise."""
        cart = self.book.get(cart_id)
        cart.unfreeze(holder, now)
        return cart.snapshot()


def _cart_of(name: str, args: tuple[Any, ...]) -> str | None:
    """The cart an operation touches: after the op id for mutations, first for reads."""
    index = 1 if name in _MUTATIONS else 0
    cart_id = args[index] if len(args) > index else None
    return cart_id if isinstance(cart_id, str) else None


def _unavailable() -> Reply:
    return refused(DomainError(ErrorCode.STORE_UNAVAILABLE, "cart store unavailable; retry"))


# --- the op log's form of a reply ---------------------------------------------------------
# Up to ``op_log_size`` replies stay in memory; a cart snapshot as dicts costs about 800
# bytes, as one flat tuple about 150 (its strings are the cart's own). Anything else
# (refusals) is kept as it is.


class _PackedCart(tuple[Any, ...]):
    """A successful reply that is one cart snapshot, packed."""

    __slots__ = ()


class _PackedMerge(tuple[Any, ...]):
    """A successful merge reply: the skipped SKUs (a tuple), then the packed snapshot."""

    __slots__ = ()


def _pack_reply(reply: Reply) -> object:
    success, value = reply
    if not success:
        return reply
    packed = pack_snapshot(value)
    if packed is not None:
        return _PackedCart(packed)
    if type(value) is dict and tuple(value) == ("cart", "skipped"):
        skipped = value["skipped"]
        packed = pack_snapshot(value["cart"])
        if packed is not None and type(skipped) is list:
            return _PackedMerge((tuple(skipped), *packed))
    return reply


def _unpack_reply(stored: object) -> Reply:
    if type(stored) is _PackedCart:
        return ok(unpack_snapshot(stored))
    if type(stored) is _PackedMerge:
        return ok({"cart": unpack_snapshot(stored[1:]), "skipped": list(stored[0])})
    return cast(Reply, stored)
