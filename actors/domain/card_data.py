"""Card numbers (PANs) must never enter Feira: find them in any JSON value, redact them in text.

What counts as a card number here:

- a run of 13-19 ASCII digits, optionally in groups separated by *single* spaces or dashes
  (``4111 1111 1111 1111``, ``3782-822463-10005``); when the run has separators, every group
  in the candidate has at least 3 digits (card layouts are 4-4-4-4, 4-6-5, 4-6-4, 4-4-4-4-3),
  so sizes ``38 39 40 41 …``, phone numbers and dates are not read as one number;
- not glued to a letter or a digit on either side: ``x4111…``, hashes, base64 ids and IBANs
  (``DE89 3704 …``) are identifiers, not card numbers;
- passing the Luhn check;
- starting with a digit an issuer uses: never 0 (zero-padded ids), and 1 only at 15 digits
  (UATP). Millisecond, microsecond and nanosecond Unix timestamps (13, 16, 19 digits starting
  with 1) and snowflake ids are therefore not flagged; every card brand (Visa 4, Mastercard
  2/5, Amex/JCB/Diners 3, Discover/UnionPay/Maestro 6, RuPay 8, …) is;
- at 13 digits, only Visa's old ``4…`` numbers, and not a valid EAN-13/ISBN-13 barcode
  (GTIN check digit): product barcodes are 13 digits and would pass Luhn one time in ten.

A run longer than 19 digits is also searched for a card number inside it, window by window
over its groups (``4111 1111 1111 1111 123`` is a PAN followed by a CVV).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

REDACTED = "[card number removed]"
MIN_DIGITS = 13
MAX_DIGITS = 19
MIN_GROUP = 3

# A maximal run of digit groups with single separators, not glued to letters or digits.
# Possessive quantifiers: the run is taken whole or not at all (no shorter sub-matches).
_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9]++(?:[ -][0-9]++)*+(?![0-9A-Za-z])")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of ASCII digits; False for anything else."""
    if len(digits) < 2 or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def gtin_ok(digits: str) -> bool:
    """The GS1 check digit (EAN/UPC/ISBN-13): weights 3 and 1 from the right, mod 10."""
    if len(digits) < 2 or not digits.isascii() or not digits.isdigit():
        return False
    total = sum((ord(c) - 48) * (3 if i % 2 == 0 else 1) for i, c in enumerate(digits[-2::-1]))
    return (10 - total % 10) % 10 == ord(digits[-1]) - 48


def _issuer_ok(digits: str) -> bool:
    first = digits[0]
    if len(digits) == 13:
        return first == "4" and not gtin_ok(digits)
    return first != "0" and (first != "1" or len(digits) == 15)


def is_card_number(digits: str) -> bool:
    """True for 13-19 digits that pass Luhn and start like an issuer's number."""
    return MIN_DIGITS <= len(digits) <= MAX_DIGITS and _issuer_ok(digits) and luhn_ok(digits)


def _spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every card number in ``text``, in order; windows may overlap."""
    if len(text) < MIN_DIGITS:
        return
    for match in _RUN.finditer(text):
        run = match.group()
        if len(run) < MIN_DIGITS:
            continue
        if run.isdigit():
            if len(run) <= MAX_DIGITS and is_card_number(run):
                yield match.span()
            continue
        # Groups with their offsets in the text.
        groups: list[tuple[int, str]] = []
        offset = match.start()
        for group in re.split(r"[ -]", run):
            groups.append((offset, group))
            offset += len(group) + 1
        for first in range(len(groups)):
            digits = ""
            for last in range(first, len(groups)):
                group = groups[last][1]
                if len(group) < MIN_GROUP:
                    break
                digits += group
                if len(digits) > MAX_DIGITS:
                    break
                if is_card_number(digits):
                    yield groups[first][0], groups[last][0] + len(group)


def contains_card_number(text: str) -> bool:
    return next(_spans(text), None) is not None


def redact(text: str) -> str:
    """``text`` with every card number replaced by ``[card number removed]``."""
    merged: list[list[int]] = []
    for start, end in sorted(_spans(text)):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    if not merged:
        return text
    parts: list[str] = []
    position = 0
    for start, end in merged:
        parts.append(text[position:start])
        parts.append(REDACTED)
        position = end
    parts.append(text[position:])
    return "".join(parts)


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e20:
        return str(int(value))
    return None


def child_path(path: str, key: str) -> str:
    """``path`` extended by ``key``, with any card number in the key redacted."""
    key = redact(key)
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'{path}["{escaped}"]'


def find_card_numbers(value: Any, root: str = "$") -> list[str]:
    """JSONPath-like paths (``$.payment.card``, ``$.lines[2]``) of every place in ``value``
    holding a card number, in a key or in a value, as a string or a number.

    A path never contains the number itself: a key that is one is shown redacted.
    """
    found: dict[str, None] = {}  # ordered, no duplicates
    stack: list[tuple[str, Any]] = [(root, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, Mapping):
            children: list[tuple[str, Any]] = []
            for key, child in item.items():
                key_text = _scalar_text(key)
                where = child_path(path, str(key) if key_text is None else key_text)
                if key_text is not None and contains_card_number(key_text):
                    found[where] = None
                children.append((where, child))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend(reversed([(f"{path}[{i}]", child) for i, child in enumerate(item)]))
        else:
            text = _scalar_text(item)
            if text is not None and contains_card_number(text):
                found[path] = None
    return list(found)
