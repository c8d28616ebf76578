from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.domain.errors import DomainError, ErrorCode
from actors.domain.money import Money
from actors.domain.pricing import (
    PriceBook,
    PricedCart,
    PriceEntry,
    Promotion,
    PromotionKind,
    Quote,
    category_prefixes,
    price_lines,
)

FAST = settings(max_examples=200, deadline=None)
T0 = 1_700_000_000.0
PHONE = PriceEntry("PHONE-1", 10_000, "EUR", "electronics/phones/android")


def promo(pid: str = "p1", **kw: Any) -> Promotion:
    fields: dict[str, Any] = {
        "id": pid,
        "name": f"promo {pid}",
        "kind": PromotionKind.PERCENT,
        "value": 1000,
        "currency": None,
        "sku": None,
        "category": "electronics",
        "starts_at": T0,
        "ends_at": T0 + 3600,
    }
    fields.update(kw)
    return Promotion(**fields)


def book_with(*entries: PriceEntry, promotions: tuple[Promotion, ...] = ()) -> PriceBook:
    book = PriceBook("EUR")
    for entry in entries or (PHONE,):
        book.set_price(entry)
    book.set_promotions(promotions)
    return book


def book_state(book: PriceBook, skus: list[str], now: float = T0) -> Any:
    return (
        len(book),
        {s: book.entry(s) for s in skus if book.has(s)},
        sorted(book.promotions(), key=lambda p: p.id),
        {s: book.quote(s, now) for s in skus if book.has(s)},
    )


def refused(code: ErrorCode, book: PriceBook, call: Any, *args: Any) -> DomainError:
    skus = ["PHONE-1", "NEW", "TV-1"]
    before = book_state(book, skus)
    with pytest.raises(DomainError) as info:
        call(*args)
    assert info.value.code is code, info.value
    assert book_state(book, skus) == before
    return info.value


# -- prices ----------------------------------------------------------------------------


def test_book_currency_must_be_valid() -> None:
    with pytest.raises(DomainError) as info:
        PriceBook("eur")
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_set_entry_has_remove() -> None:
    book = book_with()
    assert book.has("PHONE-1")
    assert book.entry("PHONE-1") == PHONE
    book.set_price(replace(PHONE, amount=9_000))
    assert book.entry("PHONE-1").amount == 9_000
    assert len(book) == book.size() == 1
    assert book.remove_price("PHONE-1") is True
    assert book.remove_price("PHONE-1") is False
    assert not book.has("PHONE-1")


def test_free_and_uncategorised_prices_are_allowed() -> None:
    book = book_with(PriceEntry("FREE", 0, "EUR", ""))
    assert book.quote("FREE", T0) == Quote("FREE", Money(0, "EUR"), Money(0, "EUR"), None, "")


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        (PriceEntry("NEW", 100, "USD", "x"), ErrorCode.CURRENCY_MISMATCH),
        (PriceEntry("NEW", -1, "EUR", "x"), ErrorCode.INVALID_ARGUMENT),
        (PriceEntry("NEW", 1.5, "EUR", "x"), ErrorCode.INVALID_ARGUMENT),  # type: ignore[arg-type]
        (PriceEntry("NEW", True, "EUR", "x"), ErrorCode.INVALID_ARGUMENT),
        (PriceEntry("NEW", 2**63, "EUR", "x"), ErrorCode.INVALID_ARGUMENT),
        (PriceEntry("NEW", 1, "EUR", None), ErrorCode.INVALID_ARGUMENT),  # type: ignore[arg-type]
        (PriceEntry("a b", 1, "EUR", "x"), ErrorCode.INVALID_ARGUMENT),
        (PriceEntry("PHONE-1", -5, "EUR", "x"), ErrorCode.INVALID_ARGUMENT),
        (PriceEntry("PHONE-1", 5, "GBP", "x"), ErrorCode.CURRENCY_MISMATCH),
    ],
)
def test_set_price_refusals(entry: PriceEntry, code: ErrorCode) -> None:
    book = book_with(promotions=(promo(),))
    refused(code, book, book.set_price, entry)


def test_missing_price() -> None:
    book = book_with()
    refused(ErrorCode.PRICE_NOT_FOUND, book, book.entry, "NEW")
    err = refused(ErrorCode.PRICE_NOT_FOUND, book, book.quote, "NEW", T0)
    assert err.details["sku"] == "NEW"
    assert book.quotes(["PHONE-1", "NEW"], T0).keys() == {"PHONE-1"}


# -- promotions: validation ------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"pid": ""},
        {"pid": "x" * 65},
        {"name": None},
        {"name": "n" * 201},
        {"kind": "bogo"},
        {"value": 0},
        {"value": 10_001},
        {"value": 5.0},
        {"value": True},
        {"kind": PromotionKind.FIXED, "value": 100},  # no currency
        {"kind": PromotionKind.FIXED, "value": 0, "currency": "EUR"},
        {"kind": PromotionKind.FIXED, "value": -1, "currency": "EUR"},
        {"currency": "euro"},
        {"sku": "PHONE-1"},  # both sku and category
        {"category": None},  # neither
        {"category": None, "sku": "bad sku"},
        {"category": ""},
        {"category": "electronics/"},
        {"category": "/electronics"},
        {"category": "a//b"},
        {"category": " electronics"},
        {"ends_at": T0},
        {"ends_at": T0 - 1},
        {"starts_at": float("nan")},
        {"ends_at": float("inf")},
        {"starts_at": None},
    ],
)
def test_promotion_validation(kw: dict[str, Any]) -> None:
    pid = kw.pop("pid", "p1")
    with pytest.raises(DomainError) as info:
        promo(pid, **kw)
    assert info.value.code is ErrorCode.PROMOTION_INVALID
    assert info.value.message.startswith("promotion ")


def test_promotion_kind_from_plain_string() -> None:
    p = promo(kind="fixed", value=100, currency="EUR")
    assert p.kind is PromotionKind.FIXED
    assert promo(kind="percent").kind is PromotionKind.PERCENT


def test_promotion_validate_catches_forged_instance() -> None:
    p = promo()
    object.__setattr__(p, "value", 0)
    with pytest.raises(DomainError) as info:
        p.validate()
    assert info.value.code is ErrorCode.PROMOTION_INVALID
    book = book_with()
    refused(ErrorCode.PROMOTION_INVALID, book, book.upsert_promotion, p)


def test_applies_to_window_and_matching() -> None:
    p = promo(category="electronics/phones")
    assert p.applies_to(PHONE, T0)
    assert p.applies_to(PHONE, T0 + 3599.5)
    assert not p.applies_to(PHONE, T0 - 0.001)
    assert not p.applies_to(PHONE, T0 + 3600)  # end is exclusive
    for category, hit in [
        ("electronics/phones", True),
        ("electronics/phones/android", True),
        ("electronics/phonesx", False),
        ("electronics", False),
        ("electronicsx/phones", False),
        ("", False),
    ]:
        assert p.applies_to(replace(PHONE, category=category), T0) is hit, category
    by_sku = promo(category=None, sku="PHONE-1")
    assert by_sku.applies_to(PHONE, T0)
    assert not by_sku.applies_to(replace(PHONE, sku="PHONE-10"), T0)


def test_category_prefixes() -> None:
    assert list(category_prefixes("a/b/c")) == ["a", "a/b", "a/b/c"]
    assert list(category_prefixes("a")) == ["a"]
    assert list(category_prefixes("")) == []


# -- promotions: book ------------------------------------------------------------------


def test_promotion_currency_must_match_book() -> None:
    book = book_with(promotions=(promo("keep"),))
    usd = promo("p2", kind=PromotionKind.FIXED, value=100, currency="USD")
    refused(ErrorCode.PROMOTION_INVALID, book, book.upsert_promotion, usd)
    refused(ErrorCode.PROMOTION_INVALID, book, book.set_promotions, [promo("p3"), usd])
    percent_usd = promo("p4", currency="USD")
    refused(ErrorCode.PROMOTION_INVALID, book, book.upsert_promotion, percent_usd)
    book.upsert_promotion(promo("p5", currency="EUR"))


def test_set_promotions_is_all_or_nothing() -> None:
    book = book_with(promotions=(promo("keep", value=500),))
    err = refused(ErrorCode.PROMOTION_INVALID, book, book.set_promotions, [promo("a"), promo("a")])
    assert "twice" in err.message
    refused(ErrorCode.PROMOTION_INVALID, book, book.set_promotions, [promo("b"), "junk"])
    book.set_promotions([promo("new", value=2000)])
    assert [p.id for p in book.promotions()] == ["new"]
    assert book.quote("PHONE-1", T0).unit.amount == 8_000


def test_upsert_moves_promotion_between_indexes() -> None:
    book = book_with(PHONE, PriceEntry("TV-1", 50_000, "EUR", "electronics/tv"))
    book.upsert_promotion(promo("p1", category=None, sku="TV-1"))
    assert book.quote("TV-1", T0).promotion_id == "p1"
    assert book.quote("PHONE-1", T0).promotion_id is None
    book.upsert_promotion(promo("p1", category="electronics/phones"))
    assert book.quote("TV-1", T0).promotion_id is None
    assert book.quote("PHONE-1", T0).promotion_id == "p1"
    assert book.promotion("p1") == promo("p1", category="electronics/phones")
    assert book.remove_promotion("p1") is True
    assert book.remove_promotion("p1") is False
    assert book.quote("PHONE-1", T0).promotion_id is None
    assert book.promotions() == []


# -- quoting ---------------------------------------------------------------------------


def test_quote_without_promotions() -> None:
    q = book_with().quote("PHONE-1", T0)
    assert q == Quote("PHONE-1", Money(10_000, "EUR"), Money(10_000, "EUR"), None, PHONE.category)


def test_best_single_promotion_wins_no_stacking() -> None:
    promotions = (
        promo("cat10", value=1000),
        promo("sku15", category=None, sku="PHONE-1", value=1500),
        promo("fix2000", kind=PromotionKind.FIXED, value=2000, currency="EUR"),
        promo("future", value=9000, starts_at=T0 + 10, ends_at=T0 + 20),
        promo("other", value=9000, category="garden"),
    )
    q = book_with(promotions=promotions).quote("PHONE-1", T0)
    assert (q.unit.amount, q.promotion_id) == (8_000, "fix2000")  # not 10000*0.9*0.85-2000
    q = book_with(promotions=promotions).quote("PHONE-1", T0 + 10)
    assert (q.unit.amount, q.promotion_id) == (1_000, "future")


def test_ties_go_to_lowest_id() -> None:
    promotions = (
        promo("b", value=1000),
        promo("a", kind=PromotionKind.FIXED, value=1000, currency="EUR"),
        promo("c", category=None, sku="PHONE-1", value=1000),
    )
    assert book_with(promotions=promotions).quote("PHONE-1", T0).promotion_id == "a"


def test_unit_never_below_zero() -> None:
    book = book_with(
        promotions=(promo("big", kind=PromotionKind.FIXED, value=50_000, currency="EUR"),)
    )
    q = book.quote("PHONE-1", T0)
    assert q.unit == Money(0, "EUR")
    assert q.promotion_id == "big"
    assert book_with(promotions=(promo("all", value=10_000),)).quote("PHONE-1", T0).unit.amount == 0


def test_percent_rounds_half_up() -> None:
    entry = PriceEntry("S", 15, "EUR", "electronics")
    q = book_with(entry, promotions=(promo(value=5000),)).quote("S", T0)
    assert q.unit.amount == 7  # discount 7.5 -> 8


def test_promotion_that_saves_nothing_is_not_reported() -> None:
    entry = PriceEntry("S", 4, "EUR", "electronics")
    q = book_with(entry, promotions=(promo(value=1000),)).quote("S", T0)  # 0.4 rounds to 0
    assert (q.unit.amount, q.promotion_id) == (4, None)
    free = PriceEntry("F", 0, "EUR", "electronics")
    assert book_with(free, promotions=(promo(),)).quote("F", T0).promotion_id is None


# -- cart totals -----------------------------------------------------------------------


def test_price_lines_totals_and_json() -> None:
    book = book_with(
        PHONE,
        PriceEntry("CASE", 1_999, "EUR", "accessories"),
        promotions=(promo("p10", value=1000),),
    )
    quotes = book.quotes(["PHONE-1", "CASE"], T0)
    priced = price_lines([("PHONE-1", 2), ("CASE", 3)], quotes, "EUR")
    assert isinstance(priced, PricedCart)
    assert priced.subtotal == Money(2 * 10_000 + 3 * 1_999, "EUR")
    assert priced.total == Money(2 * 9_000 + 3 * 1_999, "EUR")
    assert priced.discount_total == Money(2_000, "EUR")
    assert priced.item_count == 5
    assert [line.promotion_id for line in priced.lines] == ["p10", None]
    assert priced.lines[0].line_total == Money(18_000, "EUR")
    assert priced.lines[0].discount == Money(2_000, "EUR")
    doc = json.loads(json.dumps(priced.to_json()))
    assert doc["total"] == {"amount": 23_997, "currency": "EUR"}
    assert doc["subtotal"] == {"amount": 25_997, "currency": "EUR"}
    assert doc["discount_total"] == {"amount": 2_000, "currency": "EUR"}
    assert doc["item_count"] == 5
    assert doc["lines"][0] == {
        "sku": "PHONE-1",
        "quantity": 2,
        "unit": {"amount": 9_000, "currency": "EUR"},
        "base": {"amount": 10_000, "currency": "EUR"},
        "line_total": {"amount": 18_000, "currency": "EUR"},
        "discount": {"amount": 2_000, "currency": "EUR"},
        "promotion_id": "p10",
    }


def test_price_lines_empty_cart() -> None:
    priced = price_lines([], {}, "JPY")
    assert priced.total == priced.subtotal == priced.discount_total == Money(0, "JPY")
    assert priced.item_count == 0
    assert priced.lines == ()


def test_price_lines_refusals() -> None:
    quotes = book_with().quotes(["PHONE-1"], T0)
    with pytest.raises(DomainError) as info:
        price_lines([("PHONE-1", 1), ("GONE", 1)], quotes, "EUR")
    assert info.value.code is ErrorCode.PRICE_NOT_FOUND
    assert info.value.details["sku"] == "GONE"
    with pytest.raises(DomainError) as info:
        price_lines([("PHONE-1", 1)], quotes, "USD")
    assert info.value.code is ErrorCode.CURRENCY_MISMATCH
    with pytest.raises(DomainError) as info:
        price_lines([("PHONE-1", 0)], quotes, "EUR")
    assert info.value.code is ErrorCode.QUANTITY_INVALID
    with pytest.raises(DomainError) as info:
        price_lines([], {}, "eur")
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


# -- properties ------------------------------------------------------------------------

CATEGORIES = ["a", "a/b", "a/b/c", "a/bc", "ab", "x/y", ""]
PROMO_CATEGORIES = ["a", "a/b", "a/b/c", "a/bc", "ab", "x", "x/y"]
SKUS = ["S1", "S2", "S3", "S4"]


@st.composite
def promotions(draw: st.DrawFn, pid: str) -> Promotion:
    kind = draw(st.sampled_from(PromotionKind))
    value = (
        draw(st.integers(1, 10_000))
        if kind is PromotionKind.PERCENT
        else draw(st.integers(1, 30_000))
    )
    start = draw(st.integers(-5, 5))
    by_sku = draw(st.booleans())
    return Promotion(
        id=pid,
        name=pid,
        kind=kind,
        value=value,
        currency="EUR" if kind is PromotionKind.FIXED or draw(st.booleans()) else None,
        sku=draw(st.sampled_from(SKUS)) if by_sku else None,
        category=None if by_sku else draw(st.sampled_from(PROMO_CATEGORIES)),
        starts_at=T0 + start,
        ends_at=T0 + start + draw(st.integers(1, 10)),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[PriceEntry], list[Promotion], float]:
    entries = [
        PriceEntry(sku, draw(st.integers(0, 20_000)), "EUR", draw(st.sampled_from(CATEGORIES)))
        for sku in SKUS
    ]
    pool = [f"p{i:02d}" for i in range(30)]
    ids = draw(st.lists(st.sampled_from(pool), unique=True, max_size=8))
    promos = [draw(promotions(pid)) for pid in ids]
    now = T0 + draw(st.sampled_from([-6, -1, 0, 0.5, 1, 3, 9, 20]))
    return entries, promos, now


def reference_quote(entry: PriceEntry, promos: list[Promotion], now: float) -> tuple[int, Any]:
    """Brute force, written independently of the book's index and helpers."""
    base = entry.amount
    options: list[tuple[int, str]] = []
    for p in promos:
        if not p.starts_at <= now < p.ends_at:
            continue
        if p.sku is not None:
            if p.sku != entry.sku:
                continue
        else:
            want = (p.category or "").split("/")
            if entry.category.split("/")[: len(want)] != want:
                continue
        # Half up via a different formula than Money.percent_off.
        off = (base * p.value * 2 + 10_000) // 20_000 if p.kind == "percent" else p.value
        options.append((max(base - off, 0), p.id))
    if not options:
        return base, None
    unit, pid = min(options)
    return (unit, pid) if unit < base else (base, None)


LINES = st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 99)), max_size=4)


@FAST
@given(scenarios(), LINES)
def test_quotes_match_brute_force_and_totals_add_up(
    scenario: tuple[list[PriceEntry], list[Promotion], float], lines: list[tuple[str, int]]
) -> None:
    entries, promos, now = scenario
    book = book_with(*entries, promotions=tuple(promos))
    for entry in entries:
        q = book.quote(entry.sku, now)
        assert type(q.unit.amount) is int
        assert type(q.base.amount) is int
        assert 0 <= q.unit.amount <= q.base.amount == entry.amount
        assert (q.unit.amount, q.promotion_id) == reference_quote(entry, promos, now)
        if q.promotion_id is not None:
            winner = book.promotion(q.promotion_id)
            assert winner is not None
            assert winner.applies_to(entry, now)
            assert winner.unit_price(q.base) == q.unit

    priced = price_lines(lines, book.quotes(SKUS, now), "EUR")
    assert priced.subtotal - priced.discount_total == priced.total
    assert 0 <= priced.total.amount <= priced.subtotal.amount
    assert priced.total.amount == sum(line.line_total.amount for line in priced.lines)
    assert priced.item_count == sum(q for _, q in lines)
    for money in (priced.subtotal, priced.total, priced.discount_total):
        assert type(money.amount) is int


# Fewer examples: same generator as above, only the upsert/remove path differs.
@settings(max_examples=100, deadline=None)
@given(scenarios(), st.data())
def test_incremental_updates_match_brute_force(
    scenario: tuple[list[PriceEntry], list[Promotion], float], data: st.DataObject
) -> None:
    entries, promos, now = scenario
    book = book_with(*entries)
    live: dict[str, Promotion] = {}
    for p in promos:
        book.upsert_promotion(p)
        live[p.id] = p
        if data.draw(st.booleans()):
            victim = data.draw(st.sampled_from(sorted(live)))
            assert book.remove_promotion(victim)
            del live[victim]
    assert sorted(p.id for p in book.promotions()) == sorted(live)
    for entry in entries:
        q = book.quote(entry.sku, now)
        assert (q.unit.amount, q.promotion_id) == reference_quote(entry, list(live.values()), now)
