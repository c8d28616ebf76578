"""Money as integer minor units with an ISO 4217 code. Floats never enter."""

from __future__ import annotations

import re
from dataclasses import dataclass

from actors.domain.errors import DomainError, ErrorCode

_CURRENCY = re.compile(r"^[A-Z]{3}$")

# Minor-unit exponents that differ from 2 (ISO 4217); everything else has cents.
_EXPONENTS = {"JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "VND": 0, "BHD": 3, "KWD": 3, "JOD": 3}

BASIS_POINTS = 10_000


def validate_currency(code: str) -> str:
    if not _CURRENCY.match(code):
        raise DomainError(ErrorCode.INVALID_ARGUMENT, f"currency {code!r} is not an ISO 4217 code")
    return code


def minor_unit_exponent(currency: str) -> int:
    return _EXPONENTS.get(currency, 2)


@dataclass(frozen=True, slots=True)
class Money:
    amount: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.amount) is not int:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "money amounts are integer minor units")
        validate_currency(self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise DomainError(
                ErrorCode.CURRENCY_MISMATCH,
                f"cannot combine {self.currency} with {other.currency}",
            )

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def times(self, quantity: int) -> Money:
        return Money(self.amount * quantity, self.currency)

    def percent_off(self, basis_points: int) -> Money:
        """The discount for ``basis_points`` (1/100 of a percent), rounded half up."""
        rounded = (self.amount * basis_points + BASIS_POINTS // 2) // BASIS_POINTS
        return Money(rounded, self.currency)

    def floor_zero(self) -> Money:
        return self if self.amount >= 0 else Money(0, self.currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    def to_json(self) -> dict[str, object]:
        return {"amount": self.amount, "currency": self.currency}

    def display(self) -> str:
        exp = minor_unit_exponent(self.currency)
        if exp == 0:
            return f"{self.amount} {self.currency}"
        sign = "-" if self.amount < 0 else ""
        whole, frac = divmod(abs(self.amount), 10**exp)
        return f"{sign}{whole}.{frac:0{exp}d} {self.currency}"
