"""Opaque, URL-safe page cursors bound to the query that issued them.

A cursor carries a backend-specific position (a ``search_after`` tuple, an offset, ...)
together with a fingerprint of the query's filters and sort. Decoding checks both, so a
cursor replayed against another query, another sort or another backend is refused with
ValueError instead of silently returning the wrong page. The page size is not part of
the fingerprint: a client may change ``limit`` between pages.

The checksum only catches damaged or hand-edited cursors; cursors are not secret (a
position in a public result list grants nothing), so they are not signed with a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import orjson

from storage.records import SearchQuery
from storage.search.query import attribute_filters, category_path, normalised_text

_VERSION = 1
_CHECKSUM_BYTES = 6
MAX_CURSOR_CHARS = 500


def query_fingerprint(query: SearchQuery) -> str:
    """Everything that decides which products match and in what order."""
    canonical = orjson.dumps(
        [
            normalised_text(query.text),
            None if query.category is None else category_path(query.category),
            sorted(set(query.brands)),
            attribute_filters(query),
            query.min_price,
            query.max_price,
            str(query.sort),
        ]
    )
    return hashlib.blake2b(canonical, digest_size=9).hexdigest()


def _checksum(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_CHECKSUM_BYTES, person=b"feira-cursor").digest()


def encode_cursor(backend: str, query: SearchQuery, position: Any) -> str:
    """``position`` must be JSON-serialisable; ``decode_cursor`` gives it back."""
    payload = orjson.dumps(
        {"v": _VERSION, "b": backend, "q": query_fingerprint(query), "p": position}
    )
    raw = _checksum(payload) + payload
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(backend: str, query: SearchQuery, cursor: str) -> Any:
    """The position inside ``cursor``; ValueError when it is malformed or was issued
    for another query or backend."""
    if not cursor or len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
        raise ValueError("invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError) as error:
        raise ValueError("invalid cursor") from error
    checksum, payload = raw[:_CHECKSUM_BYTES], raw[_CHECKSUM_BYTES:]
    if len(checksum) != _CHECKSUM_BYTES or checksum != _checksum(payload):
        raise ValueError("invalid cursor")
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise ValueError("invalid cursor") from error
    if not isinstance(data, dict) or data.get("v") != _VERSION or "p" not in data:
        raise ValueError("invalid cursor")
    if data.get("b") != backend or data.get("q") != query_fingerprint(query):
        raise ValueError("cursor belongs to a different query; start again without it")
    return data["p"]
