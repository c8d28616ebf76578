"""Payments: the provider interface, the sandbox processor and signed webhooks (issue 5)."""

from actors.payments.provider import (
    Authorization,
    Capture,
    Payment,
    PaymentProvider,
    PaymentState,
    Refund,
    Void,
    is_retryable,
    outcome_unknown,
)

__all__ = [
    "Authorization",
    "Capture",
    "Payment",
    "PaymentProvider",
    "PaymentState",
    "Refund",
    "Void",
    "is_retryable",
    "outcome_unknown",
]
