"""Webhook signatures, event parsing and replay safety."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.domain.errors import DomainError, ErrorCode
from actors.payments.webhooks import (
    InMemorySeenEvents,
    WebhookEvent,
    accept,
    sign,
    verify,
    verify_event,
)

SECRET = b"whsec_" + b"s" * 26
OTHER = b"whsec_" + b"o" * 26
NOW = 1_750_000_000.0
BODY = orjson.dumps(
    {"id": "evt_1", "type": "payment.captured", "created": 1_750_000_000, "data": {"a": 1}}
)


def invalid(call: object) -> DomainError:
    assert callable(call)
    with pytest.raises(DomainError) as caught:
        call()
    assert caught.value.code is ErrorCode.WEBHOOK_SIGNATURE_INVALID
    return caught.value


def test_the_header_is_stripe_style_and_matches_a_hand_computed_mac() -> None:
    header = sign(SECRET, BODY, NOW)
    expected = hmac.new(SECRET, b"1750000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1750000000,v1={expected}"
    assert verify(SECRET, header, BODY, NOW) == 1_750_000_000


def test_wrong_secret_or_body_is_refused() -> None:
    header = sign(SECRET, BODY, NOW)
    invalid(lambda: verify(OTHER, header, BODY, NOW))
    invalid(lambda: verify(SECRET, header, BODY + b" ", NOW))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "t=1750000000",
        "v1=" + "0" * 64,
        "t=abc,v1=" + "0" * 64,
        "t=1750000000,v1=xyz",
        "t=1750000000,v1=" + "0" * 63,
        "t=1,t=2,v1=" + "0" * 64,
        "t=1750000000,v1=" + "A" * 64,
        "t=1750000000," + ",".join(["v1=" + "0" * 64] * 9),
        "t=1750000000,v1=" + "0" * 64 + "," * 3000,
    ],
)
def test_missing_or_malformed_headers_are_refused(header: str | None) -> None:
    invalid(lambda: verify(SECRET, header, BODY, NOW))


def test_the_timestamp_is_signed_too() -> None:
    header = sign(SECRET, BODY, NOW)
    moved = header.replace("t=1750000000", "t=1750000001")
    invalid(lambda: verify(SECRET, moved, BODY, NOW))


def test_an_old_capture_replayed_later_is_refused() -> None:
    header = sign(SECRET, BODY, NOW)
    assert verify(SECRET, header, BODY, NOW + 300) == 1_750_000_000
    error = invalid(lambda: verify(SECRET, header, BODY, NOW + 301))
    assert "tolerance" in error.message
    invalid(lambda: verify(SECRET, header, BODY, NOW - 301))  # from the future
    assert verify(SECRET, header, BODY, NOW + 3600, tolerance_s=3600)


def test_rotation_several_v1_entries_and_several_secrets() -> None:
    both = sign([OTHER, SECRET], BODY, NOW)
    assert both.count("v1=") == 2
    assert verify(SECRET, both, BODY, NOW)
    assert verify(OTHER, both, BODY, NOW)
    old_only = sign(OTHER, BODY, NOW)
    assert verify([SECRET, OTHER], old_only, BODY, NOW)
    invalid(lambda: verify([SECRET], old_only, BODY, NOW))


def test_unknown_schemes_are_ignored() -> None:
    header = sign(SECRET, BODY, NOW) + ",v0=" + "f" * 64
    assert verify(SECRET, header, BODY, NOW)


def test_short_secrets_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="at least"):
        sign(b"short", BODY, NOW)
    with pytest.raises(ValueError, match="no webhook secret"):
        verify([], "t=1,v1=" + "0" * 64, BODY, NOW)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.data())
def test_any_body_tampering_fails(body: bytes, data: st.DataObject) -> None:
    header = sign(SECRET, body, NOW)
    assert verify(SECRET, header, body, NOW)
    if body:
        index = data.draw(st.integers(0, len(body) - 1))
        flip = data.draw(st.integers(1, 255))
        tampered = body[:index] + bytes([body[index] ^ flip]) + body[index + 1 :]
    else:
        tampered = data.draw(st.binary(min_size=1, max_size=5))
    invalid(lambda: verify(SECRET, header, tampered, NOW))
    extended = body + data.draw(st.binary(min_size=1, max_size=5))
    invalid(lambda: verify(SECRET, header, extended, NOW))


# ------------------------------------------------------------------ events


def test_event_parse_and_round_trip() -> None:
    event = WebhookEvent.parse(BODY)
    assert event == WebhookEvent("evt_1", "payment.captured", 1_750_000_000, {"a": 1})
    assert WebhookEvent.parse(event.to_json()) == event


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"type": "payment.captured", "created": 1, "data": {}}',
        b'{"id": "", "type": "payment.captured", "created": 1, "data": {}}',
        b'{"id": "evt 1", "type": "payment.captured", "created": 1, "data": {}}',
        b'{"id": "evt_1", "type": "captured", "created": 1, "data": {}}',
        b'{"id": "evt_1", "type": "Payment.Captured", "created": 1, "data": {}}',
        b'{"id": "evt_1", "type": "payment.captured", "created": "1", "data": {}}',
        b'{"id": "evt_1", "type": "payment.captured", "created": true, "data": {}}',
        b'{"id": "evt_1", "type": "payment.captured", "created": -1, "data": {}}',
        b'{"id": "evt_1", "type": "payment.captured", "created": 1, "data": []}',
    ],
)
def test_bad_events_are_refused(body: bytes) -> None:
    with pytest.raises(DomainError) as caught:
        WebhookEvent.parse(body)
    assert caught.value.code is ErrorCode.WEBHOOK_PAYLOAD_INVALID


def test_the_signature_is_checked_before_the_body_is_parsed() -> None:
    with pytest.raises(DomainError) as caught:
        verify_event(SECRET, sign(OTHER, b"not json", NOW), b"not json", NOW)
    assert caught.value.code is ErrorCode.WEBHOOK_SIGNATURE_INVALID


# ------------------------------------------------------------------ replay safety


async def test_the_same_event_is_taken_in_once() -> None:
    seen = InMemorySeenEvents()
    header = sign(SECRET, BODY, NOW)
    first = await accept(seen, "sandbox", SECRET, header, BODY, NOW)
    assert first is not None
    assert first.id == "evt_1"
    # Redelivered later, freshly signed: verified, but not processed again.
    again = await accept(seen, "sandbox", SECRET, sign(SECRET, BODY, NOW + 60), BODY, NOW + 60)
    assert again is None
    # Another provider's event with the same id is another event.
    assert await seen.first_time("other", "evt_1")


async def test_forget_lets_a_failed_event_be_processed_on_redelivery() -> None:
    seen = InMemorySeenEvents()
    assert await seen.first_time("sandbox", "evt_9")
    await seen.forget("sandbox", "evt_9")
    assert await seen.first_time("sandbox", "evt_9")
    assert not await seen.first_time("sandbox", "evt_9")


async def test_seen_events_are_bounded() -> None:
    seen = InMemorySeenEvents(max_events=3)
    for n in range(5):
        assert await seen.first_time("p", f"e{n}")
    assert not await seen.first_time("p", "e4")
    assert await seen.first_time("p", "e0")  # evicted, oldest first


async def test_a_forged_event_never_reaches_the_seen_store() -> None:
    seen = InMemorySeenEvents()
    with pytest.raises(DomainError):
        await accept(seen, "sandbox", SECRET, sign(OTHER, BODY, NOW), BODY, NOW)
    assert await seen.first_time("sandbox", "evt_1")  # the forgery did not use the id up
