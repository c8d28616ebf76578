"""Error codes carried by domain exceptions.

Codes are stable strings: clients match on them, so never rename one. The HTTP status
for each code is decided in ``api/problems.py`` and nowhere else.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INVALID_ARGUMENT = "invalid_argument"
    CART_NOT_FOUND = "cart_not_found"
    CART_LINE_NOT_FOUND = "cart_line_not_found"
    CART_LINE_LIMIT = "cart_line_limit"
    QUANTITY_INVALID = "quantity_invalid"
    QUANTITY_LIMIT = "quantity_limit"
    SKU_NOT_FOUND = "sku_not_found"
    PRODUCT_NOT_FOUND = "product_not_found"
    PRICE_NOT_FOUND = "price_not_found"
    CURRENCY_MISMATCH = "currency_mismatch"
    PROMOTION_INVALID = "promotion_invalid"
    INSUFFICIENT_STOCK = "insufficient_stock"
    STOCK_INVALID = "stock_invalid"
    RESERVATION_NOT_FOUND = "reservation_not_found"
    RESERVATION_CONFLICT = "reservation_conflict"
    SHARD_UNAVAILABLE = "shard_unavailable"
    SHARD_TIMEOUT = "shard_timeout"
    STORE_UNAVAILABLE = "store_unavailable"
    SEARCH_UNAVAILABLE = "search_unavailable"
    FORBIDDEN = "forbidden"
    UNAUTHENTICATED = "unauthenticated"
    PRODUCT_INVALID = "product_invalid"
    PRODUCT_CONFLICT = "product_conflict"
    ORDER_NOT_FOUND = "order_not_found"
    ORDER_CONFLICT = "order_conflict"  # illegal status transition or stale version
    IDEMPOTENCY_MISMATCH = "idempotency_mismatch"  # same key, different request body

    # Payments and card data (issue 5).
    PAYMENT_DECLINED = "payment_declined"  # final: the processor refused; do not retry
    PAYMENT_FAILED = "payment_failed"  # nothing happened at the processor; retry, same key
    PAYMENT_TIMEOUT = "payment_timeout"  # outcome unknown; retry with the same key
    PAYMENT_TOKEN_INVALID = "payment_token_invalid"
    PAYMENT_AMOUNT_INVALID = "payment_amount_invalid"
    PAYMENT_NOT_FOUND = "payment_not_found"
    PAYMENT_STATE_CONFLICT = "payment_state_conflict"  # e.g. capture after void
    CARD_DATA_FORBIDDEN = "card_data_forbidden"  # a card number reached Feira
    WEBHOOK_SIGNATURE_INVALID = "webhook_signature_invalid"
    WEBHOOK_PAYLOAD_INVALID = "webhook_payload_invalid"

    # Order processing and logistics (issue 5).
    SHIPMENT_NOT_FOUND = "shipment_not_found"  # no shipment, or another carrier's
    SHIPMENT_EVENT_INVALID = "shipment_event_invalid"  # not allowed in the order's status
    FEATURE_DISABLED = "feature_disabled"  # the deployment did not configure this API

    # Checkout (issue 5).
    CART_FROZEN = "cart_frozen"  # a checkout holds the cart; its lines cannot change
    CART_EMPTY = "cart_empty"
    PRICE_CHANGED = "price_changed"  # the fresh total is not the expected_total sent
    IDEMPOTENCY_KEY_REQUIRED = "idempotency_key_required"
    CHECKOUT_IN_PROGRESS = "checkout_in_progress"  # same key, first request not finished
    PAYMENT_PROVIDER_ERROR = "payment_provider_error"  # gave up; the order is payment_failed
    # Identity and the security edge (issue 6).
    EMAIL_TAKEN = "email_taken"  # sign-up with an email that already has an account
    PASSWORD_TOO_WEAK = "password_too_weak"  # shorter than 12 characters, or too long
    API_KEY_NOT_FOUND = "api_key_not_found"  # no such key, or another owner's
    INVALID_GRANT = "invalid_grant"  # OAuth2: bad/expired/reused refresh token or client secret
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
    INVALID_SCOPE = "invalid_scope"  # a scope the client was not granted
    RATE_LIMITED = "rate_limited"  # 429; Retry-After says when to come back
    REQUEST_BLOCKED = "request_blocked"  # the WAF refused the request


class DomainError(Exception):
    """A refusal the caller can act on; ``code`` is the machine-readable reason."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions cross process boundaries (actor -> replica); keep details on the trip.
        return (_rebuild, (self.code, self.message, self.details))

    def __repr__(self) -> str:
        return f"DomainError({self.code.value!r}, {self.message!r})"


def _rebuild(code: ErrorCode, message: str, details: dict[str, Any]) -> DomainError:
    return DomainError(code, message, **details)
