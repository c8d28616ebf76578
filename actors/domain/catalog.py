"""Catalog rules: what a merchant may store as a product, and its lifecycle.

Plain functions over plain dicts; no Ray, no I/O. The API validates shapes first; these
rules are the ones every entry point (JSON, NDJSON import, GraphQL later) must share.
"""

from __future__ import annotations

import re
import secrets
from enum import StrEnum
from typing import Any

from actors.domain.errors import DomainError, ErrorCode
from storage.records import ProductDoc


class ProductStatus(StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    ARCHIVED = "archived"


# Archived products come back by publishing again; nothing returns to draft once shoppers
# may have seen it, so a draft is always something no shopper has seen.
TRANSITIONS: dict[ProductStatus, frozenset[ProductStatus]] = {
    ProductStatus.DRAFT: frozenset({ProductStatus.PUBLISHED, ProductStatus.ARCHIVED}),
    ProductStatus.PUBLISHED: frozenset({ProductStatus.ARCHIVED}),
    ProductStatus.ARCHIVED: frozenset({ProductStatus.PUBLISHED}),
}

MAX_TITLE = 200
MAX_DESCRIPTION = 5_000
MAX_BRAND = 100
MAX_VARIANTS = 100
MAX_ATTRIBUTES = 50
MAX_OPTIONS = 10
MAX_IMAGES = 20
MAX_TEXT = 200  # attribute and option names and values, image references

PRODUCT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SKU = re.compile(r"[\x21-\x7e]{1,64}")
CATEGORY = re.compile(r"[a-z0-9_-]+(/[a-z0-9_-]+){0,7}")
NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

# Fields a merchant writes; everything else (id, merchant_id, status, timestamps) is set
# by the platform, so a document cannot claim another merchant or skip the lifecycle.
EDITABLE = ("title", "description", "brand", "category", "attributes", "variants")


def new_product_id() -> str:
    return "p-" + secrets.token_hex(8)


def _invalid(message: str, field: str) -> DomainError:
    return DomainError(ErrorCode.PRODUCT_INVALID, message, field=field)


def _text(raw: dict[str, Any], field: str, limit: int, *, required: bool) -> str:
    value = raw.get(field)
    if not required and (value is None or value == ""):
        return ""
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"{field} must be a non-empty string", field)
    if len(value) > limit:
        raise _invalid(f"{field} must be at most {limit} characters", field)
    return value.strip()


def _string_map(value: Any, field: str, limit: int) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{field} must be an object of name -> text", field)
    if len(value) > limit:
        raise _invalid(f"{field} may have at most {limit} entries", field)
    out: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise _invalid(
                f"{field} name {name!r} must be lower-case letters, digits or _", field
            )
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            raise _invalid(f"{field}.{name} must be text of 1 to {MAX_TEXT} characters", field)
        out[name] = text.strip()
    return out


def _variants(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_VARIANTS:
        raise _invalid(f"variants must be a list of 1 to {MAX_VARIANTS} variants", "variants")
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for index, variant in enumerate(value):
        where = f"variants[{index}]"
        if not isinstance(variant, dict):
            raise _invalid(f"{where} must be an object", where)
        sku = variant.get("sku")
        if not isinstance(sku, str) or not SKU.fullmatch(sku):
            raise _invalid(f"{where}.sku must be 1 to 64 printable ASCII characters", where)
        if sku in seen:
            raise _invalid(f"SKU {sku!r} appears twice", where)
        seen.add(sku)
        images = variant.get("images", [])
        if not isinstance(images, list) or len(images) > MAX_IMAGES:
            raise _invalid(f"{where}.images must be a list of at most {MAX_IMAGES}", where)
        for image in images:
            if not isinstance(image, str) or not image or len(image) > MAX_TEXT:
                raise _invalid(f"{where}.images must hold image references", where)
        out.append(
            {
                "sku": sku,
                "options": _string_map(variant.get("options"), f"{where}.options", MAX_OPTIONS),
                "images": list(images),
            }
        )
    return out


def _category(raw: dict[str, Any]) -> str:
    value = raw.get("category")
    if not isinstance(value, str) or not CATEGORY.fullmatch(value):
        raise _invalid(
            "category must be a path of 1 to 8 lower-case segments, like 'home/kitchen'",
            "category",
        )
    return value


def product_fields(raw: Any) -> dict[str, Any]:
    """The editable fields of a complete product, validated and normalised."""
    if not isinstance(raw, dict):
        raise _invalid("a product must be a JSON object", "")
    unknown = sorted(set(raw) - set(EDITABLE) - {"id", "status"})
    if unknown:
        raise _invalid(f"unknown fields: {', '.join(unknown)}", unknown[0])
    return {
        "title": _text(raw, "title", MAX_TITLE, required=True),
        "description": _text(raw, "description", MAX_DESCRIPTION, required=False),
        "brand": _text(raw, "brand", MAX_BRAND, required=True),
        "category": _category(raw),
        "attributes": _string_map(raw.get("attributes"), "attributes", MAX_ATTRIBUTES),
        "variants": _variants(raw.get("variants")),
    }


def new_product(raw: Any, merchant_id: str, now: str) -> ProductDoc:
    """A merchant's new product. It starts as a draft unless it asks to be published."""
    fields = product_fields(raw)
    product_id = raw.get("id") if isinstance(raw, dict) else None
    if product_id is None:
        product_id = new_product_id()
    elif not isinstance(product_id, str) or not PRODUCT_ID.fullmatch(product_id):
        raise _invalid("id must be 1 to 64 letters, digits, '-' or '_'", "id")
    status = raw.get("status", ProductStatus.DRAFT.value)
    if status not in (ProductStatus.DRAFT, ProductStatus.PUBLISHED):
        raise _invalid("a new product's status must be 'draft' or 'published'", "status")
    return {
        "id": product_id,
        **fields,
        "status": status,
        "merchant_id": merchant_id,
        "created_at": now,
        "updated_at": now,
    }


def edited(current: ProductDoc, changes: Any, now: str) -> ProductDoc:
    """``current`` with some editable fields replaced (a JSON merge of top-level fields)."""
    if not isinstance(changes, dict) or not changes:
        raise _invalid("send an object with at least one field to change", "")
    fixed = sorted(set(changes) - set(EDITABLE))
    if fixed:
        raise _invalid(
            f"these fields cannot be changed here: {', '.join(fixed)}"
            " (status changes through /publish and /archive)",
            fixed[0],
        )
    merged = {key: current.get(key) for key in EDITABLE} | changes
    return {**current, **product_fields(merged), "updated_at": now}


def transition(current: ProductDoc, target: ProductStatus, now: str) -> ProductDoc:
    status = ProductStatus(current["status"])
    if status == target:
        return current  # repeating a transition is a no-op, so clients may retry it
    if target not in TRANSITIONS[status]:
        raise DomainError(
            ErrorCode.PRODUCT_CONFLICT,
            f"a {status.value} product cannot become {target.value}",
            status=status.value,
        )
    return {**current, "status": target.value, "updated_at": now}
