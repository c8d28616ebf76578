"""The payment-provider interface: authorize, capture, void, refund. No Ray, no I/O.

Rules every provider keeps (the sandbox enforces them; a real adapter maps its processor's
answers onto them):

- Every call takes an idempotency key. The same key with the same parameters returns the
  first outcome, including a decline; the same key with other parameters is refused
  (``IDEMPOTENCY_MISMATCH``). Keys are per operation: use a fresh key for each distinct
  capture or refund, and the same key for every retry of one.
- ``PAYMENT_DECLINED`` is final: the processor refused, nothing to retry.
- ``PAYMENT_FAILED`` means nothing happened at the processor (it said so); ``PAYMENT_TIMEOUT``
  means the outcome is unknown (the call may have authorized). Both are retryable, and only
  with the SAME idempotency key: the provider then returns the first outcome, never a
  second authorization. After giving up on a timeout, reconcile (``get``, ``void``).
- Card numbers never reach a provider call: ``token`` is the processor's token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

import orjson

from actors.domain.errors import DomainError, ErrorCode

MAX_IDEMPOTENCY_KEY = 255


class PaymentState(StrEnum):
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    VOIDED = "voided"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"
    DECLINED = "declined"
    FAILED = "failed"


# The only moves a payment makes. A payment starts authorized, declined or failed.
TRANSITIONS: Mapping[PaymentState, frozenset[PaymentState]] = {
    # Voided also covers an authorization that expired uncaptured.
    PaymentState.AUTHORIZED: frozenset({PaymentState.CAPTURED, PaymentState.VOIDED}),
    PaymentState.CAPTURED: frozenset({PaymentState.REFUNDED, PaymentState.PARTIALLY_REFUNDED}),
    PaymentState.PARTIALLY_REFUNDED: frozenset(
        {PaymentState.PARTIALLY_REFUNDED, PaymentState.REFUNDED}
    ),
    PaymentState.VOIDED: frozenset(),
    PaymentState.REFUNDED: frozenset(),
    PaymentState.DECLINED: frozenset(),
    PaymentState.FAILED: frozenset(),
}
INITIAL_STATES = frozenset({PaymentState.AUTHORIZED, PaymentState.DECLINED, PaymentState.FAILED})
FINAL_STATES = frozenset(state for state, moves in TRANSITIONS.items() if not moves)


def can_move(current: PaymentState, target: PaymentState) -> bool:
    return target in TRANSITIONS[current]


def check_move(payment_id: str, current: PaymentState, target: PaymentState) -> None:
    if not can_move(current, target):
        raise DomainError(
            ErrorCode.PAYMENT_STATE_CONFLICT,
            f"payment {payment_id} is {current.value}; it cannot become {target.value}",
            payment_id=payment_id,
            state=current.value,
        )


@dataclass(frozen=True, slots=True)
class Payment:
    """The processor's view of one payment."""

    payment_id: str
    provider: str
    state: PaymentState
    amount: int  # authorized, minor units
    currency: str
    created_at: float
    captured: int = 0
    refunded: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)
    decline_code: str | None = None


@dataclass(frozen=True, slots=True)
class Authorization:
    payment_id: str
    provider: str
    amount: int
    currency: str
    created_at: float
    state: PaymentState = PaymentState.AUTHORIZED
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Capture:
    payment_id: str
    amount: int
    currency: str
    captured_at: float
    state: PaymentState = PaymentState.CAPTURED


@dataclass(frozen=True, slots=True)
class Void:
    payment_id: str
    voided_at: float
    state: PaymentState = PaymentState.VOIDED


@dataclass(frozen=True, slots=True)
class Refund:
    refund_id: str
    payment_id: str
    amount: int
    currency: str
    refunded_total: int  # over every refund of the payment, this one included
    refunded_at: float
    state: PaymentState = PaymentState.REFUNDED  # or PARTIALLY_REFUNDED


@runtime_checkable
class PaymentProvider(Protocol):
    """A payment processor. Amounts are integer minor units of ``currency`` (ISO 4217)."""

    @property
    def name(self) -> str: ...

    async def authorize(
        self,
        *,
        amount: int,
        currency: str,
        token: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> Authorization: ...

    async def capture(self, payment_id: str, amount: int, idempotency_key: str) -> Capture:
        """Capture up to the authorized amount, once; the remainder is released."""
        ...

    async def void(self, payment_id: str, idempotency_key: str) -> Void:
        """Release an uncaptured authorization."""
        ...

    async def refund(self, payment_id: str, amount: int, idempotency_key: str) -> Refund:
        """Refund part or all of what was captured; several refunds may add up to it."""
        ...

    async def get(self, payment_id: str) -> Payment:
        """The payment as the processor knows it (for reconciliation); PAYMENT_NOT_FOUND."""
        ...


def is_retryable(error: BaseException) -> bool:
    """True when the same call with the same idempotency key may be tried again."""
    return isinstance(error, DomainError) and error.code in (
        ErrorCode.PAYMENT_FAILED,
        ErrorCode.PAYMENT_TIMEOUT,
    )


def outcome_unknown(error: BaseException) -> bool:
    """True when the processor may have acted although the call failed."""
    return isinstance(error, DomainError) and error.code is ErrorCode.PAYMENT_TIMEOUT


def check_idempotency_key(key: str) -> str:
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT,
            f"an idempotency key is 1-{MAX_IDEMPOTENCY_KEY} printable characters",
        )
    return key


def fingerprint(operation: str, **params: object) -> str:
    """A digest of a call's parameters: the same key must come with the same fingerprint.

    A digest, not the parameters, so a stored key never keeps a token or metadata in clear.
    """
    body = orjson.dumps({"op": operation, **params}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


def idempotency_mismatch(key: str) -> DomainError:
    return DomainError(
        ErrorCode.IDEMPOTENCY_MISMATCH,
        "this idempotency key was used with different parameters",
        idempotency_key=key,
    )
