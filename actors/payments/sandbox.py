"""A sandbox payment processor that behaves like an external one, test tokens included.

Test tokens (anything else is ``PAYMENT_TOKEN_INVALID``):

=====================  ===================================================================
``tok_approve``        authorizes
``tok_decline``        declined (``PAYMENT_DECLINED``, final); the decline is remembered
``tok_fail``           fails before authorizing (``PAYMENT_FAILED``, retryable); nothing is
                       recorded, so it fails again on every retry
``tok_timeout``        authorizes at the processor, then the caller gets ``PAYMENT_TIMEOUT``
                       (outcome unknown); a retry with the same key returns that authorization
``tok_fail_capture``   authorizes; the first capture fails (``PAYMENT_FAILED``), the next
                       capture attempt (same key or not) succeeds
=====================  ===================================================================

Amounts must be 1..``max_amount``. Authorizations expire uncaptured after ``auth_ttl_s``.
The processor's memory is a :class:`SandboxLedger`: in memory for unit tests, or SQLite
(:class:`SqliteLedger`) so it survives restarts and is shared by every process that opens the
same file, like a real processor's. Every change is announced as a signed webhook
(``payment.authorized|captured|voided|refunded|failed``) to an optional async callback.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from actors.domain.card_data import find_card_numbers
from actors.domain.errors import DomainError, ErrorCode
from actors.domain.money import validate_currency
from actors.payments.provider import (
    Authorization,
    Capture,
    Payment,
    PaymentState,
    Refund,
    Void,
    check_idempotency_key,
    check_move,
    fingerprint,
    idempotency_mismatch,
)
from actors.payments.webhooks import SIGNATURE_HEADER, Secrets, WebhookEvent, sign

log = logging.getLogger("feira.payments.sandbox")

TOK_APPROVE = "tok_approve"
TOK_DECLINE = "tok_decline"
TOK_FAIL = "tok_fail"
TOK_TIMEOUT = "tok_timeout"
TOK_FAIL_CAPTURE = "tok_fail_capture"
TEST_TOKENS = frozenset({TOK_APPROVE, TOK_DECLINE, TOK_FAIL, TOK_TIMEOUT, TOK_FAIL_CAPTURE})

DEFAULT_MAX_AMOUNT = 100_000_000  # 1,000,000.00 in a two-decimal currency
DEFAULT_AUTH_TTL_S = 7 * 24 * 3600
MAX_METADATA = 50
MAX_METADATA_CHARS = 500
_COMMIT_ATTEMPTS = 8

R = TypeVar("R")


# ---------------------------------------------------------------------------- ledger


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """The first outcome of a call made with one idempotency key."""

    key: str
    operation: str
    fingerprint: str
    outcome: bytes  # JSON: {"ok": {...}} or {"error": {"code", "message", "details"}}
    created_at: float


@dataclass(frozen=True, slots=True)
class LedgerPayment:
    """A payment as the sandbox stores it: the public view plus what drives its behaviour."""

    payment: Payment
    version: int  # 1 when created, +1 per change; guards concurrent writers
    token: str  # a test token, never a card number
    expires_at: float
    capture_failures: int = 0


class LedgerConflict(Exception):
    """The payment changed since it was read (another writer got there first)."""


class SandboxLedger(Protocol):
    async def key(self, key: str) -> KeyRecord | None: ...

    async def payment(self, payment_id: str) -> LedgerPayment | None: ...

    async def commit(
        self, record: KeyRecord | None, payment: LedgerPayment | None, expected_version: int
    ) -> KeyRecord | None:
        """Write ``record`` and ``payment`` atomically, all or nothing.

        If ``record``'s key is already taken, write nothing and return the stored record
        (the first outcome wins). If the stored payment's version is not
        ``expected_version`` (0: must not exist yet), raise :class:`LedgerConflict`.
        Otherwise write both and return None.
        """
        ...


def _payment_doc(stored: LedgerPayment) -> bytes:
    doc = asdict(stored)
    doc["payment"]["metadata"] = dict(stored.payment.metadata)
    return orjson.dumps(doc)


def _payment_from_doc(raw: bytes | str) -> LedgerPayment:
    doc = orjson.loads(raw)
    payment = doc.pop("payment")
    payment["state"] = PaymentState(payment["state"])
    return LedgerPayment(payment=Payment(**payment), **doc)


class InMemoryLedger:
    """For unit tests: one process, lost on exit. ``commit`` never awaits, so it is atomic."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyRecord] = {}
        self.payments: dict[str, LedgerPayment] = {}

    async def key(self, key: str) -> KeyRecord | None:
        return self.keys.get(key)

    async def payment(self, payment_id: str) -> LedgerPayment | None:
        return self.payments.get(payment_id)

    async def commit(
        self, record: KeyRecord | None, payment: LedgerPayment | None, expected_version: int
    ) -> KeyRecord | None:
        if record is not None and record.key in self.keys:
            return self.keys[record.key]
        if payment is not None:
            current = self.payments.get(payment.payment.payment_id)
            if (current.version if current else 0) != expected_version:
                raise LedgerConflict(payment.payment.payment_id)
            self.payments[payment.payment.payment_id] = payment
        if record is not None:
            self.keys[record.key] = record
        return None


_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS sandbox_keys (
        key TEXT PRIMARY KEY,
        operation TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        outcome BLOB NOT NULL,
        created_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS sandbox_payments (
        payment_id TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        doc BLOB NOT NULL
    )
    """,
)


class SqliteLedger:
    """The ledger in a SQLite file (WAL): survives restarts, shared by every process that
    opens the same path. Calls run on a worker thread; ``commit`` is one ``BEGIN IMMEDIATE``
    transaction, so concurrent writers in other processes serialize on the file lock."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 10.0) -> None:
        self._path = str(path)
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()  # one connection, used by one thread at a time
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout_s,
                isolation_level=None,  # explicit transactions only
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
            self._conn = conn
        return self._conn

    async def _run(self, work: Callable[[sqlite3.Connection], R]) -> R:
        def locked() -> R:
            with self._lock:
                return work(self._connection())

        return await asyncio.to_thread(locked)

    async def key(self, key: str) -> KeyRecord | None:
        def read(conn: sqlite3.Connection) -> KeyRecord | None:
            row = conn.execute(
                "SELECT key, operation, fingerprint, outcome, created_at FROM sandbox_keys"
                " WHERE key = ?",
                (key,),
            ).fetchone()
            return None if row is None else KeyRecord(row[0], row[1], row[2], bytes(row[3]), row[4])

        return await self._run(read)

    async def payment(self, payment_id: str) -> LedgerPayment | None:
        def read(conn: sqlite3.Connection) -> LedgerPayment | None:
            row = conn.execute(
                "SELECT doc FROM sandbox_payments WHERE payment_id = ?", (payment_id,)
            ).fetchone()
            return None if row is None else _payment_from_doc(row[0])

        return await self._run(read)

    async def commit(
        self, record: KeyRecord | None, payment: LedgerPayment | None, expected_version: int
    ) -> KeyRecord | None:
        def write(conn: sqlite3.Connection) -> KeyRecord | None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if record is not None:
                    row = conn.execute(
                        "SELECT key, operation, fingerprint, outcome, created_at"
                        " FROM sandbox_keys WHERE key = ?",
                        (record.key,),
                    ).fetchone()
                    if row is not None:
                        conn.execute("ROLLBACK")
                        return KeyRecord(row[0], row[1], row[2], bytes(row[3]), row[4])
                if payment is not None:
                    pid = payment.payment.payment_id
                    row = conn.execute(
                        "SELECT version FROM sandbox_payments WHERE payment_id = ?", (pid,)
                    ).fetchone()
                    if (row[0] if row else 0) != expected_version:
                        raise LedgerConflict(pid)
                    conn.execute(
                        "INSERT INTO sandbox_payments (payment_id, version, doc) VALUES (?, ?, ?)"
                        " ON CONFLICT (payment_id) DO UPDATE"
                        " SET version = excluded.version, doc = excluded.doc",
                        (pid, payment.version, _payment_doc(payment)),
                    )
                if record is not None:
                    conn.execute(
                        "INSERT INTO sandbox_keys"
                        " (key, operation, fingerprint, outcome, created_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (
                            record.key,
                            record.operation,
                            record.fingerprint,
                            record.outcome,
                            record.created_at,
                        ),
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return None

        return await self._run(write)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# ---------------------------------------------------------------------------- provider


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One webhook as a processor would POST it: the raw body and its headers."""

    event: WebhookEvent
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


WebhookSink = Callable[[WebhookDelivery], Awaitable[None]]


def _ok(value: Any) -> bytes:
    return orjson.dumps({"ok": asdict(value)})


def _err(error: DomainError) -> bytes:
    body = {"code": error.code.value, "message": error.message, "details": error.details}
    return orjson.dumps({"error": body})


def _replay(record: KeyRecord, operation: str, fp: str) -> dict[str, Any]:
    """The stored successful outcome, or raise the stored error (or a key mismatch)."""
    if record.operation != operation or record.fingerprint != fp:
        raise idempotency_mismatch(record.key)
    outcome = orjson.loads(record.outcome)
    if "error" in outcome:
        error = outcome["error"]
        raise DomainError(ErrorCode(error["code"]), error["message"], **error["details"])
    value: dict[str, Any] = outcome["ok"]
    value["state"] = PaymentState(value["state"])
    return value


def _failed(message: str, **details: Any) -> DomainError:
    return DomainError(ErrorCode.PAYMENT_FAILED, message, retryable=True, **details)


class SandboxProvider:
    """A test processor (see the module docstring for its tokens)."""

    def __init__(
        self,
        ledger: SandboxLedger | None = None,
        *,
        name: str = "sandbox",
        clock: Callable[[], float] = time.time,
        delay_s: float = 0.0,
        max_amount: int = DEFAULT_MAX_AMOUNT,
        auth_ttl_s: float = DEFAULT_AUTH_TTL_S,
        on_event: WebhookSink | None = None,
        webhook_secret: Secrets | None = None,
    ) -> None:
        if on_event is not None and webhook_secret is None:
            raise ValueError("webhooks need a webhook_secret to sign them")
        self._name = name
        self.ledger: SandboxLedger = ledger if ledger is not None else InMemoryLedger()
        self._clock = clock
        self._delay_s = delay_s
        self._max_amount = max_amount
        self._auth_ttl_s = auth_ttl_s
        self._on_event = on_event
        self._secret = webhook_secret

    @property
    def name(self) -> str:
        return self._name

    # -- helpers

    async def _latency(self) -> None:
        if self._delay_s > 0:
            await asyncio.sleep(self._delay_s)

    def _check_amount(self, amount: int) -> None:
        if type(amount) is not int or not 0 < amount <= self._max_amount:
            raise DomainError(
                ErrorCode.PAYMENT_AMOUNT_INVALID,
                f"amount must be an integer from 1 to {self._max_amount} minor units",
                max_amount=self._max_amount,
            )

    def _view(self, stored: LedgerPayment) -> Payment:
        """The payment as of now: an uncaptured authorization past its expiry is voided."""
        payment = stored.payment
        if payment.state is PaymentState.AUTHORIZED and self._clock() >= stored.expires_at:
            return replace(payment, state=PaymentState.VOIDED)
        return payment

    async def _load(self, payment_id: str) -> LedgerPayment:
        stored = await self.ledger.payment(payment_id)
        if stored is None:
            raise DomainError(
                ErrorCode.PAYMENT_NOT_FOUND, f"no payment {payment_id}", payment_id=payment_id
            )
        return stored

    async def _emit(self, kind: str, stored: LedgerPayment, **extra: Any) -> None:
        if self._on_event is None or self._secret is None:
            return
        payment = stored.payment
        data: dict[str, Any] = {
            "payment_id": payment.payment_id,
            "provider": self._name,
            "state": payment.state.value,
            "amount": payment.amount,
            "currency": payment.currency,
            "captured": payment.captured,
            "refunded": payment.refunded,
            "metadata": dict(payment.metadata),
            **extra,
        }
        now = self._clock()
        # One event per committed change: a redelivery would carry the same id.
        event_id = f"evt_{payment.payment_id}_{stored.version}"
        event = WebhookEvent(event_id, kind, int(now), data)
        body = event.to_json()
        headers = {
            SIGNATURE_HEADER: sign(self._secret, body, now),
            "content-type": "application/json",
        }
        try:
            await self._on_event(WebhookDelivery(event, body, headers))
        except Exception:  # a receiver's failure is not the payer's
            log.exception("webhook %s (%s) was not delivered", event_id, kind)

    # -- the provider interface

    async def authorize(
        self,
        *,
        amount: int,
        currency: str,
        token: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> Authorization:
        check_idempotency_key(idempotency_key)
        self._check_amount(amount)
        validate_currency(currency)
        clean = self._check_metadata(metadata)
        if token not in TEST_TOKENS:
            # Never echo the token: a caller may have put a card number there.
            raise DomainError(ErrorCode.PAYMENT_TOKEN_INVALID, "unknown payment token")
        fp = fingerprint("authorize", amount=amount, currency=currency, token=token, metadata=clean)
        existing = await self.ledger.key(idempotency_key)
        if existing is not None:
            return Authorization(**_replay(existing, "authorize", fp))
        await self._latency()
        if token == TOK_FAIL:
            raise _failed("the processor failed before authorizing; nothing was authorized")
        now = self._clock()
        payment_id = "pay_" + secrets.token_hex(12)
        declined = token == TOK_DECLINE
        payment = Payment(
            payment_id=payment_id,
            provider=self._name,
            state=PaymentState.DECLINED if declined else PaymentState.AUTHORIZED,
            amount=amount,
            currency=currency,
            created_at=now,
            metadata=clean,
            decline_code="card_declined" if declined else None,
        )
        stored = LedgerPayment(payment, 1, token, now + self._auth_ttl_s)
        authorization = Authorization(
            payment_id, self._name, amount, currency, now, expires_at=stored.expires_at
        )
        decline = DomainError(
            ErrorCode.PAYMENT_DECLINED,
            "the card was declined",
            payment_id=payment_id,
            decline_code="card_declined",
        )
        outcome = _err(decline) if declined else _ok(authorization)
        record = KeyRecord(idempotency_key, "authorize", fp, outcome, now)
        winner = await self.ledger.commit(record, stored, expected_version=0)
        if winner is not None:  # a concurrent call with this key got there first
            return Authorization(**_replay(winner, "authorize", fp))
        if declined:
            await self._emit("payment.failed", stored, reason="card_declined")
            raise decline
        await self._emit("payment.authorized", stored)
        if token == TOK_TIMEOUT:
            raise DomainError(
                ErrorCode.PAYMENT_TIMEOUT,
                "the processor did not answer in time; retry with the same idempotency key",
                retryable=True,
            )
        return authorization

    def _check_metadata(self, metadata: Mapping[str, str]) -> dict[str, str]:
        clean = dict(metadata)
        if len(clean) > MAX_METADATA or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= MAX_METADATA_CHARS
            for k, v in clean.items()
        ):
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT,
                f"metadata is at most {MAX_METADATA} short string pairs",
            )
        if find_card_numbers(clean):
            raise DomainError(
                ErrorCode.CARD_DATA_FORBIDDEN, "payment metadata must not hold a card number"
            )
        return clean

    async def _change(
        self,
        operation: str,
        idempotency_key: str,
        fp: str,
        payment_id: str,
        apply: Callable[[LedgerPayment, float], tuple[LedgerPayment, Any]],
    ) -> dict[str, Any]:
        """Read the payment, ``apply`` the change, commit it with the key record; again if
        another writer changed the payment meanwhile. Returns the outcome as a dict."""
        for _ in range(_COMMIT_ATTEMPTS):
            existing = await self.ledger.key(idempotency_key)
            if existing is not None:
                return _replay(existing, operation, fp)
            stored = await self._load(payment_id)
            await self._latency()
            now = self._clock()
            changed, result = apply(stored, now)
            record = KeyRecord(idempotency_key, operation, fp, _ok(result), now)
            try:
                winner = await self.ledger.commit(record, changed, stored.version)
            except LedgerConflict:
                continue
            if winner is not None:
                return _replay(winner, operation, fp)
            value: dict[str, Any] = asdict(result)
            await self._emit(f"payment.{_EVENTS[operation]}", changed, **_event_extra(value))
            return value
        raise _failed("the payment is busy; retry with the same idempotency key")

    async def capture(self, payment_id: str, amount: int, idempotency_key: str) -> Capture:
        check_idempotency_key(idempotency_key)
        self._check_amount(amount)
        fp = fingerprint("capture", payment_id=payment_id, amount=amount)

        # The one capture failure of tok_fail_capture is recorded on the payment (not under
        # the key), so the next attempt succeeds in any process.
        stored = await self._load(payment_id)
        if (
            stored.token == TOK_FAIL_CAPTURE
            and stored.capture_failures == 0
            and await self.ledger.key(idempotency_key) is None
        ):
            await self._latency()
            try:
                await self.ledger.commit(
                    None,
                    replace(stored, capture_failures=1, version=stored.version + 1),
                    stored.version,
                )
            except LedgerConflict:
                pass  # someone else changed it: fall through and try for real
            else:
                raise _failed(
                    "the processor failed to capture; nothing was captured",
                    payment_id=payment_id,
                )

        def apply(stored: LedgerPayment, now: float) -> tuple[LedgerPayment, Capture]:
            payment = self._view(stored)
            check_move(payment_id, payment.state, PaymentState.CAPTURED)
            if amount > payment.amount:
                raise DomainError(
                    ErrorCode.PAYMENT_AMOUNT_INVALID,
                    f"cannot capture more than the {payment.amount} authorized",
                    payment_id=payment_id,
                )
            changed = replace(payment, state=PaymentState.CAPTURED, captured=amount)
            capture = Capture(payment_id, amount, payment.currency, now)
            return replace(stored, payment=changed, version=stored.version + 1), capture

        return Capture(**await self._change("capture", idempotency_key, fp, payment_id, apply))

    async def void(self, payment_id: str, idempotency_key: str) -> Void:
        check_idempotency_key(idempotency_key)
        fp = fingerprint("void", payment_id=payment_id)

        def apply(stored: LedgerPayment, now: float) -> tuple[LedgerPayment, Void]:
            payment = stored.payment  # an expired authorization may still be voided
            check_move(payment_id, payment.state, PaymentState.VOIDED)
            changed = replace(payment, state=PaymentState.VOIDED)
            return replace(stored, payment=changed, version=stored.version + 1), Void(
                payment_id, now
            )

        return Void(**await self._change("void", idempotency_key, fp, payment_id, apply))

    async def refund(self, payment_id: str, amount: int, idempotency_key: str) -> Refund:
        check_idempotency_key(idempotency_key)
        self._check_amount(amount)
        fp = fingerprint("refund", payment_id=payment_id, amount=amount)

        def apply(stored: LedgerPayment, now: float) -> tuple[LedgerPayment, Refund]:
            payment = stored.payment
            total = payment.refunded + amount
            target = (
                PaymentState.REFUNDED
                if total == payment.captured
                else PaymentState.PARTIALLY_REFUNDED
            )
            check_move(payment_id, payment.state, target)
            if total > payment.captured:
                raise DomainError(
                    ErrorCode.PAYMENT_AMOUNT_INVALID,
                    f"cannot refund more than the {payment.captured - payment.refunded} left",
                    payment_id=payment_id,
                )
            changed = replace(payment, state=target, refunded=total)
            refund_id = "re_" + secrets.token_hex(12)
            refund = Refund(refund_id, payment_id, amount, payment.currency, total, now, target)
            return replace(stored, payment=changed, version=stored.version + 1), refund

        return Refund(**await self._change("refund", idempotency_key, fp, payment_id, apply))

    async def get(self, payment_id: str) -> Payment:
        return self._view(await self._load(payment_id))


_EVENTS = {"capture": "captured", "void": "voided", "refund": "refunded"}


def _event_extra(value: Mapping[str, Any]) -> dict[str, Any]:
    """What a change's event adds to the payment's fields (a refund's id and amount)."""
    if "refund_id" in value:
        return {"refund_id": value["refund_id"], "refund_amount": value["amount"]}
    return {}
