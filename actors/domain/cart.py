"""Shopping carts for one shard: pure state and rules, no I/O and no clock.

Every mutating method checks everything before it writes, so a refused operation
(``DomainError``) leaves the cart exactly as it was.
"""

from __future__ import annotations

import heapq
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.validation import check_finite, check_quantity, check_sku, check_text

_CART_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_CUSTOMER_ID_MAX = 128
_HOLDER_MAX = 128


@dataclass(frozen=True, slots=True)
class CartLimits:
    max_lines: int = 50
    max_quantity_per_line: int = 99

    def __post_init__(self) -> None:
        for name in ("max_lines", "max_quantity_per_line"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise DomainError(ErrorCode.INVALID_ARGUMENT, f"{name} must be an integer >= 1")


@dataclass(slots=True)
class Cart:
    id: str
    customer_id: str | None
    lines: dict[str, int]  # sku -> quantity; insertion order is display order
    created_at: float
    updated_at: float
    version: int = 0
    # Who froze the cart for checkout (None: not frozen). A frozen cart refuses every
    # change to its lines with CART_FROZEN.
    frozen_by: str | None = None

    @classmethod
    def new(cls, cart_id: str, customer_id: str | None, now: float) -> Cart:
        return cls(cart_id, customer_id, {}, now, now, 0)

    def check_access(self, caller: str | None) -> None:
        """A signed-in customer's cart answers only that customer; a guest cart (no
        customer) answers whoever holds its id, which is unguessable. Someone else's cart
        is "not found", so its existence does not leak either."""
        if self.customer_id is not None and caller != self.customer_id:
            raise DomainError(
                ErrorCode.CART_NOT_FOUND, f"cart {self.id!r} not found", cart_id=self.id
            )

    def add(self, sku: str, quantity: int, limits: CartLimits, now: float) -> None:
        self._require_unfrozen()
        check_sku(sku)
        check_quantity(quantity)
        current = self.lines.get(sku)
        if current is None and len(self.lines) >= limits.max_lines:
            raise DomainError(
                ErrorCode.CART_LINE_LIMIT,
                f"cart already has the maximum of {limits.max_lines} lines",
                max_lines=limits.max_lines,
            )
        total = (current or 0) + quantity
        _check_line_quantity(sku, total, limits)
        self.lines[sku if current is not None else _interned(sku)] = total
        self._touch(now)

    def set_quantity(self, sku: str, quantity: int, limits: CartLimits, now: float) -> None:
        self._require_unfrozen()
        self._require_line(sku)
        check_quantity(quantity)
        _check_line_quantity(sku, quantity, limits)
        self.lines[sku] = quantity
        self._touch(now)

    def remove(self, sku: str, now: float) -> None:
        self._require_unfrozen()
        self._require_line(sku)
        del self.lines[sku]
        self._touch(now)

    @property
    def frozen(self) -> bool:
        return self.frozen_by is not None

    def freeze(self, holder: str, now: float) -> None:
        """Freeze for a checkout: idempotent for the same ``holder``; a cart frozen by
        another holder refuses with CART_FROZEN (one checkout per cart at a time)."""
        check_text(holder, "holder", _HOLDER_MAX)
        if self.frozen_by == holder:
            return
        self._require_unfrozen()
        self.frozen_by = holder
        self._touch(now)

    def unfreeze(self, holder: str | None, now: float) -> bool:
        """Let the lines change again (a failed checkout). Only ``holder``'s freeze is
        lifted (None: whoever holds it); anything else is a no-op. True if it changed."""
        if holder is not None:
            check_text(holder, "holder", _HOLDER_MAX)
        if self.frozen_by is None or (holder is not None and holder != self.frozen_by):
            return False
        self.frozen_by = None
        self._touch(now)
        return True

    def _require_unfrozen(self) -> None:
        if self.frozen_by is not None:
            raise DomainError(
                ErrorCode.CART_FROZEN,
                "the cart is being checked out or was checked out; its lines cannot change",
                cart_id=self.id,
            )

    def item_count(self) -> int:
        return sum(self.lines.values())

    def _require_line(self, sku: str) -> None:
        check_sku(sku)
        if sku not in self.lines:
            raise DomainError(
                ErrorCode.CART_LINE_NOT_FOUND, f"cart has no line for sku {sku!r}", sku=sku
            )

    def merge(self, lines: Sequence[tuple[str, int]], limits: CartLimits, now: float) -> list[str]:
        """Add another cart's lines (a guest cart at sign-in), capped at the limits.

        Quantities of a SKU in both carts add up to at most the per-line limit; lines that
        would pass the line limit are left out. Returns the SKUs not merged in full. All
        input is checked before anything changes. A frozen cart refuses (CART_FROZEN).
        """
        self._require_unfrozen()
        for sku, quantity in lines:
            check_sku(sku)
            check_quantity(quantity)
        skipped: list[str] = []
        changed = False
        for sku, quantity in lines:
            current = self.lines.get(sku)
            if current is None and len(self.lines) >= limits.max_lines:
                skipped.append(sku)
                continue
            wanted = (current or 0) + quantity
            merged = min(wanted, limits.max_quantity_per_line)
            if merged < wanted:
                skipped.append(sku)
            if merged != current:
                self.lines[sku if current is not None else _interned(sku)] = merged
                changed = True
        if changed:
            self._touch(now)
        return skipped

    def _touch(self, now: float) -> None:
        # Never move backwards: a clock step back on another host must not make an
        # active cart look idle (CartBook's idle queue also relies on this).
        if now > self.updated_at:
            self.updated_at = now
        self.version += 1

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {
            "id": self.id,
            "customer_id": self.customer_id,
            "lines": [{"sku": sku, "quantity": qty} for sku, qty in self.lines.items()],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "version": self.version,
        }
        if self.frozen_by is not None:
            # Only when frozen: snapshots of unfrozen carts keep their earlier shape.
            snap["frozen_by"] = self.frozen_by
        return snap

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> Cart:
        """Rebuild a cart from ``snapshot()`` output; malformed input is INVALID_ARGUMENT."""
        if not isinstance(data, Mapping):
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "cart snapshot must be an object")
        missing = [k for k in _SNAPSHOT_KEYS if k not in data]
        if missing:
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT, f"cart snapshot is missing {', '.join(missing)}"
            )
        cart_id = check_cart_id(data["id"])
        customer_id = check_customer_id(data["customer_id"])
        raw_lines = data["lines"]
        if not isinstance(raw_lines, list):
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "cart snapshot lines must be a list")
        lines: dict[str, int] = {}
        for raw in raw_lines:
            if not isinstance(raw, Mapping) or "sku" not in raw or "quantity" not in raw:
                raise DomainError(
                    ErrorCode.INVALID_ARGUMENT, "cart snapshot line needs sku and quantity"
                )
            sku = check_sku(raw["sku"])
            if sku in lines:
                raise DomainError(
                    ErrorCode.INVALID_ARGUMENT, f"cart snapshot repeats sku {sku!r}", sku=sku
                )
            quantity = raw["quantity"]
            if type(quantity) is not int or quantity < 1:
                raise DomainError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"cart snapshot quantity for {sku!r} must be an integer >= 1",
                    sku=sku,
                )
            lines[_interned(sku)] = quantity
        version = data["version"]
        if type(version) is not int or version < 0:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "cart snapshot version must be >= 0")
        frozen_by = data.get("frozen_by")
        if frozen_by is not None:
            check_text(frozen_by, "frozen_by", _HOLDER_MAX)
        return cls(
            cart_id,
            customer_id,
            lines,
            check_finite(data["created_at"], "created_at"),
            check_finite(data["updated_at"], "updated_at"),
            version,
            frozen_by,
        )


_SNAPSHOT_KEYS = ("id", "customer_id", "lines", "created_at", "updated_at", "version")
_FROZEN_KEYS = (*_SNAPSHOT_KEYS, "frozen_by")
_LINE_KEYS = ("sku", "quantity")
_PACKED_HEAD = 6  # id, customer_id, created_at, updated_at, version, frozen_by; then lines


def _interned(sku: str) -> str:
    """One string object per SKU however many carts hold it: every operation arrives with
    a string of its own, and a cart keeps the one of the operation that added the line."""
    return sys.intern(str(sku))


def pack_snapshot(snap: object) -> tuple[Any, ...] | None:
    """:meth:`Cart.snapshot` output as one flat tuple (a fifth of its memory, for keeping
    many of them), or None if ``snap`` is not exactly that shape. Lossless:
    ``unpack_snapshot(pack_snapshot(s)) == s``, key order included."""
    if type(snap) is not dict:
        return None
    keys = tuple(snap)
    if keys != _SNAPSHOT_KEYS and (keys != _FROZEN_KEYS or snap["frozen_by"] is None):
        return None
    lines = snap["lines"]
    if type(lines) is not list:
        return None
    flat: list[Any] = [
        snap["id"],
        snap["customer_id"],
        snap["created_at"],
        snap["updated_at"],
        snap["version"],
        snap.get("frozen_by"),
    ]
    for line in lines:
        if type(line) is not dict or tuple(line) != _LINE_KEYS:
            return None
        flat.append(line["sku"])
        flat.append(line["quantity"])
    return tuple(flat)


def unpack_snapshot(packed: tuple[Any, ...]) -> dict[str, Any]:
    """The snapshot :func:`pack_snapshot` packed, as a new dict."""
    cart_id, customer_id, created_at, updated_at, version, frozen_by = packed[:_PACKED_HEAD]
    snap: dict[str, Any] = {
        "id": cart_id,
        "customer_id": customer_id,
        "lines": [
            {"sku": packed[i], "quantity": packed[i + 1]}
            for i in range(_PACKED_HEAD, len(packed), 2)
        ],
        "created_at": created_at,
        "updated_at": updated_at,
        "version": version,
    }
    if frozen_by is not None:
        snap["frozen_by"] = frozen_by
    return snap


def check_cart_id(cart_id: object) -> str:
    if not isinstance(cart_id, str) or _CART_ID.fullmatch(cart_id) is None:
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT,
            "cart id must be 16-64 characters from A-Z, a-z, 0-9, '_' and '-'",
            field="cart_id",
        )
    return cart_id


def check_customer_id(customer_id: object) -> str | None:
    if customer_id is None:
        return None
    return check_text(customer_id, "customer_id", _CUSTOMER_ID_MAX)


class CartBook:
    """The carts one shard owns.

    Idle expiry uses a lazy min-heap of ``(updated_at seen, cart_id)`` so a sweep costs
    O(expired + touched) rather than a scan of every cart. An entry may be stale (the
    cart was touched, replaced or removed since); it is checked against the live cart
    when it reaches the top. That is sound because an entry's time is never later than
    its cart's ``updated_at``, which only moves forward.
    """

    __slots__ = ("_carts", "_idle")

    def __init__(self) -> None:
        self._carts: dict[str, Cart] = {}
        self._idle: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._carts)

    def __contains__(self, cart_id: object) -> bool:
        return cart_id in self._carts

    def create(self, cart_id: str, customer_id: str | None, now: float) -> Cart:
        check_cart_id(cart_id)
        check_customer_id(customer_id)
        check_finite(now, "now")
        if cart_id in self._carts:
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT, f"cart {cart_id!r} already exists", cart_id=cart_id
            )
        cart = Cart.new(cart_id, customer_id, float(now))
        self._carts[cart_id] = cart
        self._enqueue(cart)
        return cart

    def get(self, cart_id: str) -> Cart:
        cart = self._carts.get(cart_id)
        if cart is None:
            raise DomainError(
                ErrorCode.CART_NOT_FOUND, f"cart {cart_id!r} not found", cart_id=cart_id
            )
        return cart

    def put(self, cart: Cart) -> None:
        """Install ``cart`` (e.g. from a checkpoint), replacing any cart with its id."""
        check_cart_id(cart.id)
        check_finite(cart.updated_at, "updated_at")
        self._carts[cart.id] = cart
        # Always enqueue: the replacement may be older than the cart it replaces, and
        # the existing entry would then be later than its cart's updated_at.
        self._enqueue(cart)

    def remove(self, cart_id: str) -> Cart:
        cart = self.get(cart_id)
        del self._carts[cart_id]
        return cart

    def expire_idle(self, now: float, idle_ttl_s: float) -> list[str]:
        """Drop carts whose last change is at least ``idle_ttl_s`` before ``now``."""
        check_finite(now, "now")
        if check_finite(idle_ttl_s, "idle_ttl_s") <= 0:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "idle_ttl_s must be > 0")
        cutoff = now - idle_ttl_s
        expired: list[str] = []
        heap = self._idle
        while heap and heap[0][0] <= cutoff:
            _, cart_id = heapq.heappop(heap)
            cart = self._carts.get(cart_id)
            if cart is None:
                continue
            if cart.updated_at <= cutoff:
                del self._carts[cart_id]
                expired.append(cart_id)
            else:
                heapq.heappush(heap, (cart.updated_at, cart_id))
        self._compact()
        return expired

    def _enqueue(self, cart: Cart) -> None:
        heapq.heappush(self._idle, (cart.updated_at, cart.id))
        self._compact()

    def _compact(self) -> None:
        # Removals and repeated puts leave dead entries; rebuild before they dominate.
        if len(self._idle) > 2 * len(self._carts) + 64:
            self._idle = [(c.updated_at, c.id) for c in self._carts.values()]
            heapq.heapify(self._idle)


def _check_line_quantity(sku: str, quantity: int, limits: CartLimits) -> None:
    if quantity > limits.max_quantity_per_line:
        raise DomainError(
            ErrorCode.QUANTITY_LIMIT,
            f"line quantity {quantity} exceeds the limit of {limits.max_quantity_per_line}",
            sku=sku,
            requested=quantity,
            max_quantity=limits.max_quantity_per_line,
        )
