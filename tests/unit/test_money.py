from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.money import Money, minor_unit_exponent, validate_currency

FAST = settings(max_examples=200, deadline=None)


def test_amount_must_be_int() -> None:
    for bad in (1.0, True, "1", None):
        with pytest.raises(DomainError) as info:
            Money(bad, "EUR")  # type: ignore[arg-type]
        assert info.value.code is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize("code", ["eur", "EU", "EURO", "", "E1R"])
def test_currency_must_be_iso_code(code: str) -> None:
    with pytest.raises(DomainError) as info:
        Money(1, code)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(DomainError):
        validate_currency(code)


def test_arithmetic_and_mismatch() -> None:
    a, b = Money(150, "EUR"), Money(50, "EUR")
    assert a + b == Money(200, "EUR")
    assert b - a == Money(-100, "EUR")
    assert a.times(3) == Money(450, "EUR")
    with pytest.raises(DomainError) as info:
        a + Money(1, "USD")
    assert info.value.code is ErrorCode.CURRENCY_MISMATCH
    with pytest.raises(DomainError) as info:
        a - Money(1, "USD")
    assert info.value.code is ErrorCode.CURRENCY_MISMATCH


@pytest.mark.parametrize(
    ("amount", "bps", "discount"),
    [(100, 1000, 10), (5, 1000, 1), (4, 1000, 0), (15, 5000, 8), (1, 5000, 1), (999, 10000, 999)],
)
def test_percent_off_rounds_half_up(amount: int, bps: int, discount: int) -> None:
    assert Money(amount, "EUR").percent_off(bps) == Money(discount, "EUR")


@FAST
@given(st.integers(0, 10**12), st.integers(0, 10_000))
def test_percent_off_is_exact_integer_rounding(amount: int, bps: int) -> None:
    off = Money(amount, "EUR").percent_off(bps)
    assert type(off.amount) is int
    assert 0 <= off.amount <= amount
    # Within half a minor unit of the exact rational discount, ties going up.
    assert 2 * abs(off.amount * 10_000 - amount * bps) <= 10_000
    assert (off.amount * 10_000 - amount * bps) * 2 != -10_000


def test_floor_zero_zero_and_json() -> None:
    assert Money(-5, "EUR").floor_zero() == Money(0, "EUR")
    assert Money(5, "EUR").floor_zero() == Money(5, "EUR")
    assert Money.zero("JPY") == Money(0, "JPY")
    assert Money(1234, "EUR").to_json() == {"amount": 1234, "currency": "EUR"}


def test_display_uses_minor_unit_exponent() -> None:
    assert minor_unit_exponent("EUR") == 2
    assert Money(1234, "EUR").display() == "12.34 EUR"
    assert Money(-5, "EUR").display() == "-0.05 EUR"
    assert Money(1234, "JPY").display() == "1234 JPY"
    assert Money(1234, "KWD").display() == "1.234 KWD"


def test_domain_error_survives_pickling() -> None:
    err = DomainError(ErrorCode.INSUFFICIENT_STOCK, "only 2 left", available=2)
    back = pickle.loads(pickle.dumps(err))
    assert back.code is ErrorCode.INSUFFICIENT_STOCK
    assert back.message == "only 2 left"
    assert back.details == {"available": 2}
    assert repr(back) == "DomainError('insufficient_stock', 'only 2 left')"
