"""Stock levels and reservations for one shard: pure state and rules, no I/O, no clock.

Invariant, for every SKU at all times::

    on_hand >= 0, reserved >= 0, sold >= 0, on_hand - reserved - sold >= 0
    reserved == sum of the quantities of that SKU's live reservations

A reservation is live from ``reserve`` until it is released, committed or swept by
``expire``. One past its ``expires_at`` but not yet swept still holds its stock (so the
invariant holds) but can no longer be committed.

Every method checks everything before it writes, so a ``DomainError`` leaves the
inventory exactly as it was.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.validation import INT64_MAX, check_finite, check_quantity, check_sku, check_text

_RESERVATION_ID_MAX = 256


@dataclass(frozen=True, slots=True)
class StockLevel:
    # Frozen so a level handed to a caller can never drift from, or corrupt, the
    # inventory's copy; a change swaps in a new object.
    sku: str
    on_hand: int
    reserved: int = 0
    sold: int = 0

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved - self.sold


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    sku: str
    quantity: int
    expires_at: float  # unix seconds


class Inventory:
    """The stock of the SKUs one shard owns.

    Expiry uses a lazy min-heap of ``(expires_at, reservation_id)``: released and
    committed reservations leave their entries behind, and ``expire`` skips any entry
    that no longer matches a live reservation exactly.
    """

    __slots__ = ("_by_sku", "_expiry", "_levels", "_reservations")

    def __init__(self) -> None:
        self._levels: dict[str, StockLevel] = {}
        self._reservations: dict[str, Reservation] = {}
        # Created only for SKUs that hold reservations, to keep idle SKUs small.
        self._by_sku: dict[str, dict[str, Reservation]] = {}
        self._expiry: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._levels)

    def sku_count(self) -> int:
        return len(self._levels)

    def skus(self) -> list[str]:
        return list(self._levels)

    def knows(self, sku: str) -> bool:
        return sku in self._levels

    def level(self, sku: str) -> StockLevel:
        level = self._levels.get(sku)
        if level is None:
            raise DomainError(ErrorCode.SKU_NOT_FOUND, f"sku {sku!r} not found", sku=sku)
        return level

    def reservation(self, reservation_id: str) -> Reservation | None:
        return self._reservations.get(reservation_id)

    def reservations_for(self, sku: str) -> list[Reservation]:
        self.level(sku)
        return list(self._by_sku.get(sku, {}).values())

    def load(self, level: StockLevel, reservations: list[Reservation]) -> None:
        """Hydrate one SKU from storage, replacing whatever is in memory for it.

        The SKU format is not re-checked (older rows must still load), but the numeric
        invariant is: everything else here depends on it.
        """
        sku = level.sku
        counts = (level.on_hand, level.reserved, level.sold)
        if any(type(n) is not int or n < 0 for n in counts) or level.available < 0:
            raise DomainError(
                ErrorCode.STOCK_INVALID,
                f"stock level for {sku!r} breaks on_hand >= reserved + sold >= 0",
                sku=sku,
            )
        seen: set[str] = set()
        for res in reservations:
            other = self._reservations.get(res.id)
            if (
                res.sku != sku
                or type(res.quantity) is not int
                or res.quantity < 1
                or res.id in seen
                or (other is not None and other.sku != sku)
            ):
                raise DomainError(
                    ErrorCode.STOCK_INVALID,
                    f"reservation {res.id!r} cannot belong to sku {sku!r}",
                    sku=sku,
                    reservation_id=res.id,
                )
            check_finite(res.expires_at, "expires_at")
            seen.add(res.id)
        held = sum(res.quantity for res in reservations)
        if held != level.reserved:
            raise DomainError(
                ErrorCode.STOCK_INVALID,
                f"sku {sku!r} has reserved={level.reserved} but its reservations hold {held}",
                sku=sku,
                reserved=level.reserved,
                held=held,
            )
        for old in self._by_sku.pop(sku, {}).values():
            del self._reservations[old.id]
        self._levels[sku] = level
        for res in reservations:
            self._hold(res)
        self._compact()

    def forget(self, sku: str) -> None:
        """Drop a SKU and its reservations from memory (not a stock change): the next
        ``load`` re-reads it, e.g. after a failed write left memory ahead of storage."""
        if self._levels.pop(sku, None) is None:
            return
        for res in self._by_sku.pop(sku, {}).values():
            del self._reservations[res.id]
        self._compact()

    def receive(self, sku: str, quantity: int) -> StockLevel:
        check_sku(sku)
        check_quantity(quantity)
        level = self._levels.get(sku) or StockLevel(sku, 0)
        return self._store(replace(level, on_hand=level.on_hand + quantity))

    def set_on_hand(self, sku: str, on_hand: int) -> StockLevel:
        check_sku(sku)
        if type(on_hand) is not int or on_hand < 0:
            raise DomainError(
                ErrorCode.QUANTITY_INVALID, "on_hand must be an integer >= 0", field="on_hand"
            )
        level = self._levels.get(sku) or StockLevel(sku, 0)
        committed = level.reserved + level.sold
        if on_hand < committed:
            raise DomainError(
                ErrorCode.STOCK_INVALID,
                f"on_hand {on_hand} is below reserved + sold ({committed}) for {sku!r}",
                sku=sku,
                on_hand=on_hand,
                reserved=level.reserved,
                sold=level.sold,
            )
        return self._store(replace(level, on_hand=on_hand))

    def reserve(
        self, reservation_id: str, sku: str, quantity: int, now: float, ttl_s: float
    ) -> Reservation:
        check_text(reservation_id, "reservation_id", _RESERVATION_ID_MAX)
        check_quantity(quantity)
        expires_at = check_finite(now, "now") + check_finite(ttl_s, "ttl_s")
        if ttl_s <= 0:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "ttl_s must be > 0", field="ttl_s")
        existing = self._reservations.get(reservation_id)
        if existing is not None:
            # A retried request must not reserve twice; the same id asking for
            # something else is a client bug worth surfacing.
            if existing.sku == sku and existing.quantity == quantity:
                return existing
            raise DomainError(
                ErrorCode.RESERVATION_CONFLICT,
                f"reservation {reservation_id!r} already holds {existing.quantity} of "
                f"{existing.sku!r}",
                reservation_id=reservation_id,
                sku=existing.sku,
                quantity=existing.quantity,
            )
        level = self.level(sku)
        if level.available < quantity:
            raise DomainError(
                ErrorCode.INSUFFICIENT_STOCK,
                f"only {level.available} of {sku!r} available, {quantity} requested",
                sku=sku,
                available=level.available,
                requested=quantity,
            )
        res = Reservation(reservation_id, sku, quantity, expires_at)
        self._levels[sku] = replace(level, reserved=level.reserved + quantity)
        self._hold(res)
        return res

    def release(self, reservation_id: str) -> Reservation:
        res = self._live(reservation_id)
        self._release(res)
        self._compact()
        return res

    def commit(self, reservation_id: str, now: float) -> Reservation:
        check_finite(now, "now")
        res = self._live(reservation_id)
        if now > res.expires_at:
            raise DomainError(
                ErrorCode.RESERVATION_NOT_FOUND,
                f"reservation {reservation_id!r} expired at {res.expires_at}",
                reservation_id=reservation_id,
                expired=True,
                expires_at=res.expires_at,
            )
        level = self._levels[res.sku]
        self._drop(res)
        self._levels[res.sku] = replace(
            level, reserved=level.reserved - res.quantity, sold=level.sold + res.quantity
        )
        self._compact()
        return res

    def expire(self, now: float) -> list[Reservation]:
        """Release every reservation with ``expires_at <= now``, soonest first."""
        released: list[Reservation] = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            at, reservation_id = heapq.heappop(heap)
            res = self._reservations.get(reservation_id)
            # Stale entry: released, committed, or the id was reused with another expiry
            # (that reservation has its own entry).
            if res is None or res.expires_at != at:
                continue
            self._release(res)
            released.append(res)
        self._compact()
        return released

    def _live(self, reservation_id: str) -> Reservation:
        res = self._reservations.get(reservation_id)
        if res is None:
            raise DomainError(
                ErrorCode.RESERVATION_NOT_FOUND,
                f"reservation {reservation_id!r} not found",
                reservation_id=reservation_id,
            )
        return res

    def _store(self, level: StockLevel) -> StockLevel:
        if level.on_hand > INT64_MAX:
            raise DomainError(
                ErrorCode.QUANTITY_INVALID,
                f"on_hand for {level.sku!r} would exceed the storable maximum",
                sku=level.sku,
            )
        self._levels[level.sku] = level
        return level

    def _hold(self, res: Reservation) -> None:
        self._reservations[res.id] = res
        self._by_sku.setdefault(res.sku, {})[res.id] = res
        heapq.heappush(self._expiry, (res.expires_at, res.id))

    def _release(self, res: Reservation) -> None:
        level = self._levels[res.sku]
        self._drop(res)
        self._levels[res.sku] = replace(level, reserved=level.reserved - res.quantity)

    def _drop(self, res: Reservation) -> None:
        del self._reservations[res.id]
        held = self._by_sku[res.sku]
        del held[res.id]
        if not held:
            del self._by_sku[res.sku]

    def _compact(self) -> None:
        # Dead heap entries otherwise linger until their expiry time passes. Called only
        # at the end of public methods: expire() iterates the heap in place.
        if len(self._expiry) > 2 * len(self._reservations) + 64:
            self._expiry = [(r.expires_at, r.id) for r in self._reservations.values()]
            heapq.heapify(self._expiry)
