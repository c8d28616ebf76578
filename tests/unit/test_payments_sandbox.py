"""The sandbox payment processor: test tokens, idempotency, state machine, durable ledger."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from actors.domain.errors import DomainError, ErrorCode
from actors.payments.provider import (
    FINAL_STATES,
    INITIAL_STATES,
    TRANSITIONS,
    Authorization,
    PaymentProvider,
    PaymentState,
    can_move,
    is_retryable,
    outcome_unknown,
)
from actors.payments.sandbox import (
    InMemoryLedger,
    SandboxLedger,
    SandboxProvider,
    SqliteLedger,
    WebhookDelivery,
)
from actors.payments.webhooks import SIGNATURE_HEADER, verify_event

SECRET = b"whsec_sandbox_test_secret_32byte"
PAN = "4111111111111111"
S = PaymentState


class Clock:
    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.deliveries: list[WebhookDelivery] = []

    async def __call__(self, delivery: WebhookDelivery) -> None:
        self.deliveries.append(delivery)

    @property
    def types(self) -> list[str]:
        return [d.event.type for d in self.deliveries]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture(params=["memory", "sqlite"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SandboxLedger]:
    if request.param == "memory":
        yield InMemoryLedger()
        return
    sqlite = SqliteLedger(tmp_path / "sandbox.db")
    yield sqlite
    sqlite.close()


@pytest.fixture
def sandbox(ledger: SandboxLedger, clock: Clock, sink: Sink) -> SandboxProvider:
    return SandboxProvider(ledger, clock=clock, on_event=sink, webhook_secret=SECRET)


async def authorize(
    provider: SandboxProvider,
    token: str = "tok_approve",
    key: str = "auth-1",
    amount: int = 5000,
    **changes: Any,
) -> Authorization:
    params: dict[str, Any] = {
        "amount": amount,
        "currency": "EUR",
        "token": token,
        "idempotency_key": key,
        "metadata": {"order_id": "o-1"},
    } | changes
    return await provider.authorize(**params)


async def refused(call: Any, code: ErrorCode) -> DomainError:
    with pytest.raises(DomainError) as caught:
        await call
    assert caught.value.code is code, caught.value
    return caught.value


# ------------------------------------------------------------------ state machine


def test_transition_table_exhaustively() -> None:
    allowed = {
        (S.AUTHORIZED, S.CAPTURED),
        (S.AUTHORIZED, S.VOIDED),
        (S.CAPTURED, S.REFUNDED),
        (S.CAPTURED, S.PARTIALLY_REFUNDED),
        (S.PARTIALLY_REFUNDED, S.PARTIALLY_REFUNDED),
        (S.PARTIALLY_REFUNDED, S.REFUNDED),
    }
    assert set(TRANSITIONS) == set(PaymentState)
    for current in PaymentState:
        for target in PaymentState:
            assert can_move(current, target) is ((current, target) in allowed), (current, target)
    final, initial = FINAL_STATES, INITIAL_STATES
    assert final == {S.VOIDED, S.REFUNDED, S.DECLINED, S.FAILED}
    assert initial == {S.AUTHORIZED, S.DECLINED, S.FAILED}


def test_the_sandbox_is_a_payment_provider() -> None:
    assert isinstance(SandboxProvider(), PaymentProvider)
    assert SandboxProvider(name="sandbox-eu").name == "sandbox-eu"


# ------------------------------------------------------------------ test tokens


async def test_approve_capture_refund_lifecycle(sandbox: SandboxProvider, sink: Sink) -> None:
    auth = await authorize(sandbox)
    assert auth.state is S.AUTHORIZED
    assert auth.amount == 5000
    assert auth.provider == "sandbox"
    assert (await sandbox.get(auth.payment_id)).state is S.AUTHORIZED

    capture = await sandbox.capture(auth.payment_id, 4000, "cap-1")  # partial capture
    assert (capture.amount, capture.state) == (4000, S.CAPTURED)
    first = await sandbox.refund(auth.payment_id, 1500, "ref-1")
    assert (first.state, first.refunded_total) == (S.PARTIALLY_REFUNDED, 1500)
    await refused(sandbox.refund(auth.payment_id, 2501, "ref-2"), ErrorCode.PAYMENT_AMOUNT_INVALID)
    second = await sandbox.refund(auth.payment_id, 2500, "ref-3")
    assert (second.state, second.refunded_total) == (S.REFUNDED, 4000)
    assert first.refund_id != second.refund_id
    payment = await sandbox.get(auth.payment_id)
    assert (payment.state, payment.captured, payment.refunded) == (S.REFUNDED, 4000, 4000)
    await refused(sandbox.refund(auth.payment_id, 1, "ref-4"), ErrorCode.PAYMENT_STATE_CONFLICT)

    assert sink.types == [
        "payment.authorized",
        "payment.captured",
        "payment.refunded",
        "payment.refunded",
    ]
    for delivery in sink.deliveries:  # every webhook is signed and parses back
        event = verify_event(SECRET, delivery.headers[SIGNATURE_HEADER], delivery.body, 1.75e9)
        assert event == delivery.event
        assert event.data["payment_id"] == auth.payment_id
    assert len({d.event.id for d in sink.deliveries}) == 4
    assert sink.deliveries[2].event.data["refund_amount"] == 1500


async def test_decline_is_final_and_remembered(sandbox: SandboxProvider, sink: Sink) -> None:
    error = await refused(authorize(sandbox, "tok_decline"), ErrorCode.PAYMENT_DECLINED)
    assert not is_retryable(error)
    again = await refused(authorize(sandbox, "tok_decline"), ErrorCode.PAYMENT_DECLINED)
    assert again.details["payment_id"] == error.details["payment_id"]
    assert (await sandbox.get(error.details["payment_id"])).state is S.DECLINED
    assert sink.types == ["payment.failed"]
    await refused(
        sandbox.capture(error.details["payment_id"], 5000, "cap"), ErrorCode.PAYMENT_STATE_CONFLICT
    )


async def test_fail_is_retryable_and_authorizes_nothing(
    sandbox: SandboxProvider, ledger: SandboxLedger, sink: Sink
) -> None:
    error = await refused(authorize(sandbox, "tok_fail"), ErrorCode.PAYMENT_FAILED)
    assert is_retryable(error)
    assert not outcome_unknown(error)
    await refused(authorize(sandbox, "tok_fail"), ErrorCode.PAYMENT_FAILED)
    assert await ledger.key("auth-1") is None
    assert sink.deliveries == []


async def test_timeout_then_retry_returns_the_same_authorization(
    sandbox: SandboxProvider, sink: Sink
) -> None:
    error = await refused(authorize(sandbox, "tok_timeout"), ErrorCode.PAYMENT_TIMEOUT)
    assert is_retryable(error)
    assert outcome_unknown(error)
    # The processor did authorize: its webhook says so.
    assert sink.types == ["payment.authorized"]
    authorized_id = sink.deliveries[0].event.data["payment_id"]
    retry = await authorize(sandbox, "tok_timeout")
    assert retry.payment_id == authorized_id
    assert retry.state is S.AUTHORIZED
    assert await authorize(sandbox, "tok_timeout") == retry
    assert sink.types == ["payment.authorized"]  # no second authorization
    # Another key is another authorization.
    await refused(authorize(sandbox, "tok_timeout", key="auth-2"), ErrorCode.PAYMENT_TIMEOUT)
    assert len(sink.deliveries) == 2


async def test_fail_capture_fails_once_then_succeeds(sandbox: SandboxProvider) -> None:
    auth = await authorize(sandbox, "tok_fail_capture")
    error = await refused(sandbox.capture(auth.payment_id, 5000, "cap-1"), ErrorCode.PAYMENT_FAILED)
    assert is_retryable(error)
    assert (await sandbox.get(auth.payment_id)).state is S.AUTHORIZED
    capture = await sandbox.capture(auth.payment_id, 5000, "cap-1")
    assert capture.state is S.CAPTURED
    assert await sandbox.capture(auth.payment_id, 5000, "cap-1") == capture


async def test_unknown_token_is_refused_without_echoing_it(sandbox: SandboxProvider) -> None:
    for token in ("tok_nope", PAN, ""):
        error = await refused(authorize(sandbox, token), ErrorCode.PAYMENT_TOKEN_INVALID)
        assert PAN not in error.message
        assert PAN not in repr(error.details)


async def test_card_numbers_in_metadata_are_refused(sandbox: SandboxProvider) -> None:
    await refused(
        authorize(sandbox, metadata={"note": f"card {PAN}"}), ErrorCode.CARD_DATA_FORBIDDEN
    )


@pytest.mark.parametrize("amount", [0, -1, 100_000_001, True, 10.0])
async def test_amount_limits(sandbox: SandboxProvider, amount: Any) -> None:
    await refused(authorize(sandbox, amount=amount), ErrorCode.PAYMENT_AMOUNT_INVALID)


async def test_max_amount_is_configurable() -> None:
    small = SandboxProvider(max_amount=1000)
    assert (await authorize(small, amount=1000)).amount == 1000
    await refused(authorize(small, amount=1001, key="k2"), ErrorCode.PAYMENT_AMOUNT_INVALID)


async def test_bad_currency_and_key(sandbox: SandboxProvider) -> None:
    await refused(authorize(sandbox, currency="eur"), ErrorCode.INVALID_ARGUMENT)
    await refused(authorize(sandbox, key=""), ErrorCode.INVALID_ARGUMENT)
    await refused(authorize(sandbox, key="x" * 256), ErrorCode.INVALID_ARGUMENT)


# ------------------------------------------------------------------ idempotency


async def test_same_key_other_parameters_is_a_mismatch(sandbox: SandboxProvider) -> None:
    auth = await authorize(sandbox)
    assert await authorize(sandbox) == auth
    await refused(authorize(sandbox, amount=5001), ErrorCode.IDEMPOTENCY_MISMATCH)
    await refused(authorize(sandbox, currency="SEK"), ErrorCode.IDEMPOTENCY_MISMATCH)
    await refused(authorize(sandbox, "tok_decline"), ErrorCode.IDEMPOTENCY_MISMATCH)
    await refused(authorize(sandbox, metadata={"order_id": "o-2"}), ErrorCode.IDEMPOTENCY_MISMATCH)
    # A key belongs to one operation.
    await refused(sandbox.capture(auth.payment_id, 5000, "auth-1"), ErrorCode.IDEMPOTENCY_MISMATCH)
    capture = await sandbox.capture(auth.payment_id, 5000, "cap-1")
    await refused(sandbox.capture(auth.payment_id, 4999, "cap-1"), ErrorCode.IDEMPOTENCY_MISMATCH)
    assert await sandbox.capture(auth.payment_id, 5000, "cap-1") == capture


async def test_void_and_what_a_void_forbids(sandbox: SandboxProvider, sink: Sink) -> None:
    auth = await authorize(sandbox)
    void = await sandbox.void(auth.payment_id, "void-1")
    assert void.state is S.VOIDED
    assert await sandbox.void(auth.payment_id, "void-1") == void  # replay
    await refused(sandbox.void(auth.payment_id, "void-2"), ErrorCode.PAYMENT_STATE_CONFLICT)
    await refused(sandbox.capture(auth.payment_id, 5000, "cap"), ErrorCode.PAYMENT_STATE_CONFLICT)
    assert sink.types == ["payment.authorized", "payment.voided"]


async def test_capture_rules(sandbox: SandboxProvider) -> None:
    await refused(sandbox.capture("pay_missing", 1, "c0"), ErrorCode.PAYMENT_NOT_FOUND)
    auth = await authorize(sandbox)
    await refused(sandbox.capture(auth.payment_id, 5001, "c1"), ErrorCode.PAYMENT_AMOUNT_INVALID)
    await refused(sandbox.refund(auth.payment_id, 10, "r1"), ErrorCode.PAYMENT_STATE_CONFLICT)
    await sandbox.capture(auth.payment_id, 5000, "c2")
    await refused(sandbox.capture(auth.payment_id, 5000, "c3"), ErrorCode.PAYMENT_STATE_CONFLICT)
    await refused(sandbox.void(auth.payment_id, "v1"), ErrorCode.PAYMENT_STATE_CONFLICT)


async def test_an_authorization_expires_uncaptured(sandbox: SandboxProvider, clock: Clock) -> None:
    auth = await authorize(sandbox)
    assert auth.expires_at == clock.now + 7 * 24 * 3600
    clock.now = auth.expires_at
    assert (await sandbox.get(auth.payment_id)).state is S.VOIDED
    await refused(sandbox.capture(auth.payment_id, 5000, "late"), ErrorCode.PAYMENT_STATE_CONFLICT)


async def test_a_failing_webhook_receiver_does_not_fail_the_payment() -> None:
    async def broken(delivery: WebhookDelivery) -> None:
        raise RuntimeError("receiver down")

    provider = SandboxProvider(on_event=broken, webhook_secret=SECRET)
    assert (await authorize(provider)).state is S.AUTHORIZED


def test_webhooks_need_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        SandboxProvider(on_event=Sink())


# ------------------------------------------------------------------ concurrency


def two_processes(tmp_path: Path, clock: Clock, sink: Sink) -> list[SandboxProvider]:
    """Two providers on one SQLite file: what two replicas see."""
    return [
        SandboxProvider(
            SqliteLedger(tmp_path / "shared.db"),
            clock=clock,
            delay_s=0.01,
            on_event=sink,
            webhook_secret=SECRET,
        )
        for _ in range(2)
    ]


@pytest.fixture(params=["memory", "sqlite-two-instances"])
def racers(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock, sink: Sink
) -> list[SandboxProvider]:
    if request.param == "memory":
        one = SandboxProvider(clock=clock, delay_s=0.01, on_event=sink, webhook_secret=SECRET)
        return [one, one]
    return two_processes(tmp_path, clock, sink)


async def test_concurrent_retries_with_one_key_make_one_authorization(
    racers: list[SandboxProvider], sink: Sink
) -> None:
    results = await asyncio.gather(
        *(authorize(racers[n % 2], "tok_timeout") for n in range(20)), return_exceptions=True
    )
    ids = {r.payment_id for r in results if isinstance(r, Authorization)}
    ids |= {e.details.get("payment_id") for e in results if isinstance(e, DomainError)} - {None}
    timeouts = [r for r in results if isinstance(r, DomainError)]
    assert all(e.code is ErrorCode.PAYMENT_TIMEOUT for e in timeouts)
    assert len(timeouts) == 1  # only the call that authorized lost its answer
    assert len(ids) == 1
    assert sink.types == ["payment.authorized"]
    assert (await authorize(racers[1], "tok_timeout")).payment_id in ids


async def test_concurrent_captures_with_different_keys_capture_once(
    racers: list[SandboxProvider], sink: Sink
) -> None:
    auth = await authorize(racers[0])
    results = await asyncio.gather(
        *(racers[n % 2].capture(auth.payment_id, 5000, f"cap-{n}") for n in range(10)),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert len(ok) == 1
    for error in results:
        if isinstance(error, BaseException):
            assert isinstance(error, DomainError)
            assert error.code in (ErrorCode.PAYMENT_STATE_CONFLICT, ErrorCode.PAYMENT_FAILED)
    assert sink.types.count("payment.captured") == 1


async def test_concurrent_refunds_never_exceed_the_capture(racers: list[SandboxProvider]) -> None:
    auth = await authorize(racers[0])
    await racers[0].capture(auth.payment_id, 5000, "cap")
    results = await asyncio.gather(
        *(racers[n % 2].refund(auth.payment_id, 1000, f"ref-{n}") for n in range(8)),
        return_exceptions=True,
    )
    refunds = [r for r in results if not isinstance(r, BaseException)]
    assert len(refunds) == 5
    payment = await racers[1].get(auth.payment_id)
    assert (payment.state, payment.refunded) == (S.REFUNDED, 5000)
    assert sorted(r.refunded_total for r in refunds) == [1000, 2000, 3000, 4000, 5000]


# ------------------------------------------------------------------ durable ledger


async def test_the_ledger_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.db"
    first = SqliteLedger(path)
    before = SandboxProvider(first)
    await refused(authorize(before, "tok_timeout"), ErrorCode.PAYMENT_TIMEOUT)
    auth_ok = await authorize(before, key="other")
    await before.capture(auth_ok.payment_id, 100, "cap")
    first.close()

    second = SqliteLedger(path)
    after = SandboxProvider(second)
    retry = await authorize(after, "tok_timeout")
    assert (await after.get(retry.payment_id)).state is S.AUTHORIZED
    payment = await after.get(auth_ok.payment_id)
    assert (payment.state, payment.captured) == (S.CAPTURED, 100)
    second.close()


REPO = Path(__file__).resolve().parents[2]

SUBPROCESS = """
import asyncio, sys
from actors.domain.errors import DomainError
from actors.payments.sandbox import SandboxProvider, SqliteLedger

async def main() -> None:
    provider = SandboxProvider(SqliteLedger(sys.argv[1]))
    try:
        await provider.authorize(amount=700, currency="EUR", token="tok_timeout",
                                 idempotency_key="cross-process", metadata={})
    except DomainError as error:
        print(error.code.value)
    auth = await provider.authorize(amount=700, currency="EUR", token="tok_fail_capture",
                                    idempotency_key="fail-capture", metadata={})
    try:
        await provider.capture(auth.payment_id, 700, "cap-x")
    except DomainError as error:
        print(error.code.value, auth.payment_id)

asyncio.run(main())
"""


async def test_another_process_sees_the_same_processor(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", SUBPROCESS, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0] == "payment_timeout"
    code, payment_id = lines[1].split()
    assert code == "payment_failed"

    ledger = SqliteLedger(path)
    here = SandboxProvider(ledger)
    retry = await here.authorize(
        amount=700,
        currency="EUR",
        token="tok_timeout",
        idempotency_key="cross-process",
        metadata={},
    )
    assert retry.amount == 700
    # The capture failure was remembered over there: here it succeeds at once.
    assert (await here.capture(payment_id, 700, "cap-x")).state is S.CAPTURED
    ledger.close()


def files_starting(directory: Path, prefix: str) -> bytes:
    """The database file with its WAL and shared-memory files."""
    return b"".join(p.read_bytes() for p in directory.iterdir() if p.name.startswith(prefix))


async def test_no_card_number_lands_in_the_ledger_file(tmp_path: Path) -> None:
    path = tmp_path / "pci.db"
    ledger = SqliteLedger(path)
    provider = SandboxProvider(ledger)
    await refused(authorize(provider, PAN), ErrorCode.PAYMENT_TOKEN_INVALID)
    await refused(authorize(provider, metadata={"n": PAN}), ErrorCode.CARD_DATA_FORBIDDEN)
    await authorize(provider, key="fine")
    ledger.close()
    raw = files_starting(tmp_path, "pci.db")
    assert b"fine" in raw  # the file does hold the ledger
    assert PAN.encode() not in raw


async def test_sqlite_commit_is_first_writer_wins(tmp_path: Path) -> None:
    from actors.payments.sandbox import KeyRecord, LedgerConflict

    ledger: Callable[[], SqliteLedger] = lambda: SqliteLedger(tmp_path / "l.db")  # noqa: E731
    a, b = ledger(), ledger()
    first = KeyRecord("k", "authorize", "fp1", b'{"ok": {}}', 1.0)
    second = KeyRecord("k", "authorize", "fp2", b'{"ok": {}}', 2.0)
    assert await a.commit(first, None, 0) is None
    assert await b.commit(second, None, 0) == first
    provider = SandboxProvider(a)
    auth = await authorize(provider, key="k2")
    stored = await b.payment(auth.payment_id)
    assert stored is not None
    assert stored.version == 1
    with pytest.raises(LedgerConflict):
        await b.commit(None, stored, expected_version=0)
    a.close()
    b.close()
