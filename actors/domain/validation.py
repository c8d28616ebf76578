"""Argument checks shared by the domain modules, so every shard refuses the same inputs."""

from __future__ import annotations

import math
import re

from actors.domain.errors import DomainError, ErrorCode

SKU_MAX_LEN = 64

# Storage keeps counts and amounts in signed 64-bit columns; refusing here beats a
# driver overflow after the in-memory state has already moved.
INT64_MAX = 2**63 - 1

# Printable ASCII minus space: SKUs travel in URLs, logs and shard keys unescaped.
SKU_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{SKU_MAX_LEN}}}")


def check_sku(sku: object) -> str:
    if not isinstance(sku, str) or SKU_PATTERN.fullmatch(sku) is None:
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT,
            f"sku must be 1-{SKU_MAX_LEN} printable ASCII characters without whitespace",
            field="sku",
        )
    return sku


def check_quantity(quantity: object, *, field: str = "quantity") -> int:
    # bool is an int subclass; True must not sneak in as "1".
    if type(quantity) is not int or quantity < 1:
        raise DomainError(
            ErrorCode.QUANTITY_INVALID, f"{field} must be an integer >= 1", field=field
        )
    return quantity


def check_finite(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT, f"{field} must be a finite number", field=field
        )
    return float(value)


def check_text(value: object, field: str, max_len: int) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT,
            f"{field} must be a non-empty string of at most {max_len} characters",
            field=field,
        )
    return value
