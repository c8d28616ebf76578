"""Sort keys shared by the search backends.

Every sort order is a total order: its primary value, then the product id. Tantivy can
order hits by one fast field only, so each order is also stored as one string whose
byte order is that total order: a fixed-width primary number, "|", then the id. Its
primary number alone is kept as an integer field, so a page can start at a primary
value with a range filter (tantivy has no range queries over strings).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storage.records import SearchDoc

# Primaries live in [0, 2**62]; 19 decimal digits hold them, so keys compare as numbers.
PRIMARY_CEIL = 2**62
_DIGITS = 19
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _clamp(value: int) -> int:
    return max(0, min(PRIMARY_CEIL - 1, value))


def created_micros(created_at: str) -> int:
    """Microseconds since the epoch of an ISO 8601 time; 0 when it does not parse."""
    try:
        moment = datetime.fromisoformat(created_at)
    except ValueError:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def price_asc_primary(price: int | None) -> int:
    """Cheapest first; products without a price last."""
    return PRIMARY_CEIL if price is None else _clamp(price)


def price_desc_primary(price: int | None) -> int:
    """Dearest first; products without a price last."""
    return PRIMARY_CEIL if price is None else PRIMARY_CEIL - 1 - _clamp(price)


def newest_primary(created_at: str) -> int:
    return PRIMARY_CEIL - 1 - _clamp(created_micros(created_at))


def sort_key(primary: int, product_id: str) -> str:
    return f"{primary:0{_DIGITS}d}|{product_id}"


def id_words(product_id: str) -> tuple[int, int]:
    """The id's first 16 UTF-8 bytes as two big-endian integers, zero-padded.

    Ordering by them agrees with ordering by the id wherever they differ; equal pairs
    (ids sharing their first 16 bytes) must be compared by the full id.
    """
    raw = product_id.encode()[:16].ljust(16, b"\0")
    return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")


def primaries(doc: SearchDoc) -> dict[str, int]:
    """Primary value of each field-sorted order for ``doc``."""
    return {
        "price_asc": price_asc_primary(doc.price),
        "price_desc": price_desc_primary(doc.price),
        "newest": newest_primary(doc.created_at),
    }
