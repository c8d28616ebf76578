"""Opaque page cursors for listings ordered by a string key.

A cursor is the last key of the page, base64url-encoded without padding: URL-safe, and
the same in every adapter, so a cursor works whichever backend issued it.
"""

from __future__ import annotations

import base64
import binascii
import re

_CURSOR = re.compile(r"[A-Za-z0-9_-]+")


def encode_cursor(last_key: str) -> str:
    return base64.urlsafe_b64encode(last_key.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> str:
    """The key a page ended at; ValueError for anything ``encode_cursor`` cannot produce."""
    if not _CURSOR.fullmatch(cursor):
        raise ValueError(f"malformed cursor {cursor!r}: not a cursor returned by a listing")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        last_key = raw.decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(
            f"malformed cursor {cursor!r}: not a cursor returned by a listing"
        ) from exc
    if not last_key:
        raise ValueError(f"malformed cursor {cursor!r}: empty position")
    return last_key
