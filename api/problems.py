"""Errors as RFC 9457 problem details. The only place that maps error codes to HTTP."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from actors.domain.errors import DomainError, ErrorCode

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://feira.dev/problems/"

log = logging.getLogger("feira.api")

STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.CART_NOT_FOUND: 404,
    ErrorCode.CART_LINE_NOT_FOUND: 404,
    ErrorCode.SKU_NOT_FOUND: 404,
    ErrorCode.PRODUCT_NOT_FOUND: 404,
    ErrorCode.PRICE_NOT_FOUND: 404,
    ErrorCode.RESERVATION_NOT_FOUND: 404,
    ErrorCode.CART_LINE_LIMIT: 422,
    ErrorCode.QUANTITY_INVALID: 422,
    ErrorCode.QUANTITY_LIMIT: 422,
    ErrorCode.CURRENCY_MISMATCH: 422,
    ErrorCode.PROMOTION_INVALID: 422,
    ErrorCode.INSUFFICIENT_STOCK: 409,
    ErrorCode.STOCK_INVALID: 409,
    ErrorCode.RESERVATION_CONFLICT: 409,
    ErrorCode.SHARD_UNAVAILABLE: 503,
    ErrorCode.STORE_UNAVAILABLE: 503,
    ErrorCode.SHARD_TIMEOUT: 504,
    ErrorCode.SEARCH_UNAVAILABLE: 503,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.PRODUCT_INVALID: 422,
    ErrorCode.PRODUCT_CONFLICT: 409,
    ErrorCode.ORDER_NOT_FOUND: 404,
    ErrorCode.ORDER_CONFLICT: 409,
    ErrorCode.IDEMPOTENCY_MISMATCH: 422,
    ErrorCode.PAYMENT_DECLINED: 402,
    ErrorCode.PAYMENT_FAILED: 502,
    ErrorCode.PAYMENT_TIMEOUT: 504,
    ErrorCode.PAYMENT_TOKEN_INVALID: 422,
    ErrorCode.PAYMENT_AMOUNT_INVALID: 422,
    ErrorCode.PAYMENT_NOT_FOUND: 404,
    ErrorCode.PAYMENT_STATE_CONFLICT: 409,
    ErrorCode.CARD_DATA_FORBIDDEN: 422,
    # 400, not 401: a webhook sender has no credentials to offer (no WWW-Authenticate).
    ErrorCode.WEBHOOK_SIGNATURE_INVALID: 400,
    ErrorCode.WEBHOOK_PAYLOAD_INVALID: 400,
    ErrorCode.SHIPMENT_NOT_FOUND: 404,
    ErrorCode.SHIPMENT_EVENT_INVALID: 409,
    ErrorCode.FEATURE_DISABLED: 404,
    ErrorCode.CART_FROZEN: 409,
    ErrorCode.CART_EMPTY: 422,
    ErrorCode.PRICE_CHANGED: 409,
    ErrorCode.IDEMPOTENCY_KEY_REQUIRED: 400,
    ErrorCode.CHECKOUT_IN_PROGRESS: 409,
    # Final for this order (payment_failed); a new checkout needs a new key.
    ErrorCode.PAYMENT_PROVIDER_ERROR: 502,
    ErrorCode.EMAIL_TAKEN: 409,
    ErrorCode.PASSWORD_TOO_WEAK: 422,
    ErrorCode.API_KEY_NOT_FOUND: 404,
    # RFC 6749 §5.2: token-endpoint errors are 400 (invalid_client would be 401).
    ErrorCode.INVALID_GRANT: 400,
    ErrorCode.UNSUPPORTED_GRANT_TYPE: 400,
    ErrorCode.INVALID_SCOPE: 400,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.REQUEST_BLOCKED: 403,
}

RETRYABLE = {
    ErrorCode.SHARD_UNAVAILABLE,
    ErrorCode.STORE_UNAVAILABLE,
    ErrorCode.SHARD_TIMEOUT,
    ErrorCode.SEARCH_UNAVAILABLE,
    ErrorCode.PAYMENT_FAILED,
    ErrorCode.PAYMENT_TIMEOUT,
    ErrorCode.CHECKOUT_IN_PROGRESS,
}

TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Unprocessable content",
    500: "Internal server error",
    503: "Service unavailable",
    504: "Gateway timeout",
    402: "Payment required",
    413: "Content too large",
    429: "Too many requests",
    431: "Request header fields too large",
    415: "Unsupported media type",
    414: "URI too long",
    502: "Bad gateway",
}


def problem(
    status: int,
    code: str,
    detail: str,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return Response(orjson.dumps(body), status, headers=headers, media_type=PROBLEM_JSON)


def domain_problem(error: DomainError, instance: str | None = None) -> Response:
    status = STATUS.get(error.code, 400)
    headers = {"Retry-After": "1"} if error.code in RETRYABLE else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="feira"'}
    extra = {k: v for k, v in error.details.items() if k not in {"type", "status", "title"}}
    return problem(status, error.code.value, error.message, instance, headers, **extra)


def validation_problem(errors: Sequence[Any], instance: str | None) -> Response:
    """422 for input that does not match the schema, from pydantic's error list."""
    listed = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")} for e in errors]
    return problem(
        422,
        ErrorCode.INVALID_ARGUMENT.value,
        "the request does not match the schema",
        instance,
        errors=listed,
    )


def unexpected_problem(instance: str, exc: BaseException) -> Response:
    log.exception("unhandled error on %s", instance, exc_info=exc)
    return problem(500, "internal", "an unexpected error occurred", instance)


def install(app: FastAPI) -> None:
    async def on_domain(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        return domain_problem(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_problem(exc.errors(), request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return problem(exc.status_code, code, str(exc.detail), request.url.path, headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return unexpected_problem(request.url.path, exc)

    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
