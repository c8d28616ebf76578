"""JSON objects to and from the bytes stored in Redis."""

from __future__ import annotations

from typing import Any

import orjson

from storage.errors import StoreIntegrityError


def encode_object(value: dict[str, Any], what: str) -> bytes:
    if not isinstance(value, dict):
        raise StoreIntegrityError(f"{what}: must be a JSON object")
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise StoreIntegrityError(f"{what}: not JSON-serialisable: {exc}") from exc


def decode_object(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StoreIntegrityError(f"{what}: stored value is not JSON") from exc
    if not isinstance(value, dict):
        raise StoreIntegrityError(f"{what}: stored value is not a JSON object")
    return value
