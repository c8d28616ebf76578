"""Prices, promotions and cart totals: pure rules, integer minor units only.

NON-STACKING RULE: at most one promotion applies to a line. Among the promotions that
are active at ``now`` (``starts_at <= now < ends_at``) and match the SKU (by exact SKU,
or by a category that is a path-segment prefix of the SKU's category), the one giving
the lowest unit price wins; ties are broken by the lowest promotion id. A percent
promotion takes ``base.percent_off(bps)`` off (rounded half up), a fixed one takes its
value off, and the unit price never goes below zero. A winner that saves nothing (for
example a tiny percentage of a tiny price) is not reported as applied.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NoReturn

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.money import BASIS_POINTS, Money, validate_currency
from actors.domain.validation import INT64_MAX, SKU_PATTERN, check_quantity, check_sku

_CURRENCY = re.compile(r"[A-Z]{3}")
_PROMOTION_ID_MAX = 64
_PROMOTION_NAME_MAX = 200


def category_prefixes(path: str) -> Iterable[str]:
    """``"a/b/c"`` -> ``"a"``, ``"a/b"``, ``"a/b/c"``; nothing for an empty path."""
    if not path:
        return
    cut = path.find("/")
    while cut != -1:
        yield path[:cut]
        cut = path.find("/", cut + 1)
    yield path


@dataclass(frozen=True, slots=True)
class PriceEntry:
    sku: str
    amount: int  # minor units
    currency: str
    category: str  # path like "electronics/phones/android"; "" when uncategorised


class PromotionKind(StrEnum):
    PERCENT = "percent"
    FIXED = "fixed"


@dataclass(frozen=True, slots=True)
class Promotion:
    id: str
    name: str
    kind: PromotionKind
    value: int  # basis points (1..10000) for PERCENT, minor units (> 0) for FIXED
    currency: str | None  # required for FIXED
    sku: str | None  # exactly one of sku / category is set
    category: str | None
    starts_at: float  # unix seconds, inclusive
    ends_at: float  # unix seconds, exclusive

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise PROMOTION_INVALID naming the first rule this promotion breaks."""
        if not isinstance(self.id, str) or not 0 < len(self.id) <= _PROMOTION_ID_MAX:
            self._invalid(f"id must be 1-{_PROMOTION_ID_MAX} characters")
        if not isinstance(self.name, str) or len(self.name) > _PROMOTION_NAME_MAX:
            self._invalid(f"name must be a string of at most {_PROMOTION_NAME_MAX} characters")
        try:
            kind = PromotionKind(self.kind)
        except ValueError:
            self._invalid(f"kind must be one of {', '.join(PromotionKind)}")
        # Storage hands over plain strings; normalise so identity comparisons hold.
        object.__setattr__(self, "kind", kind)
        if type(self.value) is not int:
            self._invalid("value must be an integer")
        if kind is PromotionKind.PERCENT and not 1 <= self.value <= BASIS_POINTS:
            self._invalid(f"percent value must be 1..{BASIS_POINTS} basis points")
        if kind is PromotionKind.FIXED and not 0 < self.value <= INT64_MAX:
            self._invalid("fixed value must be > 0 minor units")
        if kind is PromotionKind.FIXED and self.currency is None:
            self._invalid("fixed promotions need a currency")
        if self.currency is not None and not _is_currency(self.currency):
            self._invalid(f"currency {self.currency!r} is not an ISO 4217 code")
        if (self.sku is None) == (self.category is None):
            self._invalid("exactly one of sku and category must be set")
        if self.sku is not None and not _is_sku(self.sku):
            self._invalid("sku must be 1-64 printable ASCII characters without whitespace")
        if self.category is not None and not _is_category(self.category):
            self._invalid('category must be a path of non-empty segments like "a/b"')
        if not (_is_finite(self.starts_at) and _is_finite(self.ends_at)):
            self._invalid("starts_at and ends_at must be finite numbers")
        if self.ends_at <= self.starts_at:
            self._invalid("ends_at must be after starts_at")

    def _invalid(self, reason: str) -> NoReturn:
        raise DomainError(
            ErrorCode.PROMOTION_INVALID, f"promotion {self.id!r}: {reason}", promotion_id=self.id
        )

    def is_active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, entry: PriceEntry) -> bool:
        if self.sku is not None:
            return entry.sku == self.sku
        category = self.category or ""
        return entry.category == category or entry.category.startswith(category + "/")

    def applies_to(self, entry: PriceEntry, now: float) -> bool:
        return self.is_active(now) and self.matches(entry)

    def unit_price(self, base: Money) -> Money:
        """The unit price after this promotion alone, floored at zero."""
        if self.kind is PromotionKind.PERCENT:
            return (base - base.percent_off(self.value)).floor_zero()
        return (base - Money(self.value, base.currency)).floor_zero()


def _is_finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_currency(code: object) -> bool:
    return isinstance(code, str) and _CURRENCY.fullmatch(code) is not None


def _is_sku(sku: object) -> bool:
    return isinstance(sku, str) and SKU_PATTERN.fullmatch(sku) is not None


def _is_category(path: object) -> bool:
    return isinstance(path, str) and bool(path) and all(path.split("/")) and path == path.strip()


@dataclass(frozen=True, slots=True)
class Quote:
    sku: str
    base: Money
    unit: Money
    promotion_id: str | None
    category: str


class PriceBook:
    """Prices and promotions for one currency.

    Promotions are indexed by SKU and by category path, so ``quote`` looks only at the
    promotions that could match: the SKU's own plus those of each prefix of its category.
    """

    __slots__ = ("_by_category", "_by_sku", "_prices", "_promotions", "currency")

    def __init__(self, currency: str) -> None:
        self.currency = validate_currency(currency)
        self._prices: dict[str, PriceEntry] = {}
        self._promotions: dict[str, Promotion] = {}
        self._by_sku: dict[str, dict[str, Promotion]] = {}
        self._by_category: dict[str, dict[str, Promotion]] = {}

    def __len__(self) -> int:
        return len(self._prices)

    def size(self) -> int:
        """Number of SKUs with a price (``len(book)``), for shard stats."""
        return len(self._prices)

    # -- prices ---------------------------------------------------------------------

    def set_price(self, entry: PriceEntry) -> None:
        check_sku(entry.sku)
        if entry.currency != self.currency:
            raise DomainError(
                ErrorCode.CURRENCY_MISMATCH,
                f"price for {entry.sku!r} is in {entry.currency}, this book is {self.currency}",
                sku=entry.sku,
                currency=entry.currency,
                expected=self.currency,
            )
        if type(entry.amount) is not int or not 0 <= entry.amount <= INT64_MAX:
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT,
                f"price for {entry.sku!r} must be an integer amount of minor units >= 0",
                sku=entry.sku,
                field="amount",
            )
        if not isinstance(entry.category, str):
            # Not check_category: rows loaded from the catalog must not fail hydration over
            # an odd path, and any string still matches promotions by segment prefix.
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT,
                f"category for {entry.sku!r} must be a string",
                sku=entry.sku,
                field="category",
            )
        self._prices[entry.sku] = entry

    def remove_price(self, sku: str) -> bool:
        return self._prices.pop(sku, None) is not None

    def has(self, sku: str) -> bool:
        return sku in self._prices

    def entry(self, sku: str) -> PriceEntry:
        entry = self._prices.get(sku)
        if entry is None:
            raise DomainError(ErrorCode.PRICE_NOT_FOUND, f"no price for sku {sku!r}", sku=sku)
        return entry

    # -- promotions -----------------------------------------------------------------

    def promotions(self) -> list[Promotion]:
        return list(self._promotions.values())

    def promotion(self, promotion_id: str) -> Promotion | None:
        return self._promotions.get(promotion_id)

    def set_promotions(self, promotions: Iterable[Promotion]) -> None:
        """Replace every promotion; all are checked before any is installed."""
        incoming = list(promotions)
        seen: set[str] = set()
        for promo in incoming:
            self._check_promotion(promo)
            if promo.id in seen:
                raise DomainError(
                    ErrorCode.PROMOTION_INVALID,
                    f"promotion id {promo.id!r} appears twice",
                    promotion_id=promo.id,
                )
            seen.add(promo.id)
        self._promotions = {}
        self._by_sku = {}
        self._by_category = {}
        for promo in incoming:
            self._index(promo)

    def upsert_promotion(self, promotion: Promotion) -> None:
        self._check_promotion(promotion)
        self.remove_promotion(promotion.id)
        self._index(promotion)

    def remove_promotion(self, promotion_id: str) -> bool:
        promo = self._promotions.pop(promotion_id, None)
        if promo is None:
            return False
        index, key = self._slot(promo)
        bucket = index[key]
        del bucket[promo.id]
        if not bucket:
            del index[key]
        return True

    def _check_promotion(self, promotion: Promotion) -> None:
        if not isinstance(promotion, Promotion):
            raise DomainError(ErrorCode.PROMOTION_INVALID, "not a promotion")
        # Re-run: a frozen dataclass can still be forged with object.__setattr__.
        promotion.validate()
        if promotion.currency is not None and promotion.currency != self.currency:
            raise DomainError(
                ErrorCode.PROMOTION_INVALID,
                f"promotion {promotion.id!r} is in {promotion.currency}, "
                f"this book is {self.currency}",
                promotion_id=promotion.id,
                currency=promotion.currency,
                expected=self.currency,
            )

    def _slot(self, promo: Promotion) -> tuple[dict[str, dict[str, Promotion]], str]:
        if promo.sku is not None:
            return self._by_sku, promo.sku
        return self._by_category, promo.category or ""

    def _index(self, promo: Promotion) -> None:
        self._promotions[promo.id] = promo
        index, key = self._slot(promo)
        index.setdefault(key, {})[promo.id] = promo

    # -- quoting --------------------------------------------------------------------

    def candidates(self, entry: PriceEntry) -> Iterable[Promotion]:
        """Promotions that match ``entry`` by SKU or category, active or not."""
        yield from self._by_sku.get(entry.sku, {}).values()
        for prefix in category_prefixes(entry.category):
            yield from self._by_category.get(prefix, {}).values()

    def quote(self, sku: str, now: float) -> Quote:
        entry = self.entry(sku)
        base = Money(entry.amount, entry.currency)
        best: tuple[int, str] | None = None
        for promo in self.candidates(entry):
            if not promo.is_active(now):
                continue
            key = (promo.unit_price(base).amount, promo.id)
            if best is None or key < best:
                best = key
        if best is None or best[0] == base.amount:
            return Quote(sku, base, base, None, entry.category)
        return Quote(sku, base, Money(best[0], base.currency), best[1], entry.category)

    def quotes(self, skus: Iterable[str], now: float) -> dict[str, Quote]:
        """Quotes for the SKUs that have a price; missing ones are simply absent."""
        return {sku: self.quote(sku, now) for sku in skus if sku in self._prices}


# -- cart totals ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PricedLine:
    sku: str
    quantity: int
    unit: Money
    base: Money
    line_total: Money  # unit * quantity
    promotion_id: str | None

    @property
    def discount(self) -> Money:
        return self.base.times(self.quantity) - self.line_total

    def to_json(self) -> dict[str, object]:
        return {
            "sku": self.sku,
            "quantity": self.quantity,
            "unit": self.unit.to_json(),
            "base": self.base.to_json(),
            "line_total": self.line_total.to_json(),
            "discount": self.discount.to_json(),
            "promotion_id": self.promotion_id,
        }


@dataclass(frozen=True, slots=True)
class PricedCart:
    lines: tuple[PricedLine, ...]
    subtotal: Money  # sum of base * quantity
    discount_total: Money  # subtotal - total
    total: Money  # sum of line totals
    currency: str
    item_count: int

    def to_json(self) -> dict[str, object]:
        return {
            "lines": [line.to_json() for line in self.lines],
            "subtotal": self.subtotal.to_json(),
            "discount_total": self.discount_total.to_json(),
            "total": self.total.to_json(),
            "currency": self.currency,
            "item_count": self.item_count,
        }


def price_lines(
    lines: Iterable[tuple[str, int]], quotes: Mapping[str, Quote], currency: str
) -> PricedCart:
    """Total a cart from per-SKU quotes; every line needs a quote in ``currency``."""
    validate_currency(currency)
    priced: list[PricedLine] = []
    subtotal = total = Money.zero(currency)
    items = 0
    for sku, quantity in lines:
        check_quantity(quantity)
        quote = quotes.get(sku)
        if quote is None:
            raise DomainError(ErrorCode.PRICE_NOT_FOUND, f"no price for sku {sku!r}", sku=sku)
        if quote.unit.currency != currency or quote.base.currency != currency:
            raise DomainError(
                ErrorCode.CURRENCY_MISMATCH,
                f"price for {sku!r} is in {quote.unit.currency}, the cart is in {currency}",
                sku=sku,
                currency=quote.unit.currency,
                expected=currency,
            )
        line_total = quote.unit.times(quantity)
        priced.append(
            PricedLine(sku, quantity, quote.unit, quote.base, line_total, quote.promotion_id)
        )
        subtotal += quote.base.times(quantity)
        total += line_total
        items += quantity
    return PricedCart(tuple(priced), subtotal, subtotal - total, total, currency, items)
