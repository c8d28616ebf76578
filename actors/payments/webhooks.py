"""Signed provider webhooks: HMAC-SHA256 signatures, event parsing, replay safety.

Signature scheme (Stripe's): the header ``Feira-Signature: t=<unix s>,v1=<hex>[,v1=<hex>…]``
where each ``v1`` is ``HMAC-SHA256(secret, f"{t}.".encode() + raw_body)``. Several ``v1``
entries let a sender sign with an old and a new secret while they rotate; the receiver may
also hold several secrets. A signature is good when any ``v1`` matches any secret (constant
time) and ``t`` is within ``tolerance_s`` of now: an old delivery captured and played again
later is refused. Within the tolerance, a repeated event is caught by its id
(:class:`SeenEvents`), so each event takes effect once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from actors.domain.errors import DomainError, ErrorCode

SIGNATURE_HEADER = "Feira-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300
MAX_HEADER_CHARS = 4096
MAX_SIGNATURES = 8
MIN_SECRET_BYTES = 16

EVENT_TYPES = frozenset(
    {
        "payment.authorized",
        "payment.captured",
        "payment.voided",
        "payment.refunded",
        "payment.failed",
    }
)
_EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_EVENT_TYPE = re.compile(r"[a-z][a-z_]*(\.[a-z][a-z_]*)+")
_HEX64 = re.compile(r"[0-9a-f]{64}")

Secrets = bytes | Sequence[bytes]


def _secrets(secret: Secrets) -> list[bytes]:
    listed = [secret] if isinstance(secret, bytes) else list(secret)
    if not listed:
        raise ValueError("no webhook secret given")
    for one in listed:
        if len(one) < MIN_SECRET_BYTES:
            raise ValueError(f"a webhook secret must be at least {MIN_SECRET_BYTES} bytes")
    return listed


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: Secrets, body: bytes, now: float) -> str:
    """The signature header value for ``body`` sent at ``now``; one ``v1`` per secret."""
    timestamp = int(now)
    signatures = ",".join(f"{SCHEME}={_mac(one, timestamp, body)}" for one in _secrets(secret))
    return f"t={timestamp},{signatures}"


def _invalid(reason: str) -> DomainError:
    return DomainError(ErrorCode.WEBHOOK_SIGNATURE_INVALID, reason)


def _parse_header(header: str | None) -> tuple[int, list[str]]:
    if not header or len(header) > MAX_HEADER_CHARS:
        raise _invalid(f"missing or oversized {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise _invalid(f"malformed {SIGNATURE_HEADER} header")
        if name == "t":
            if timestamp is not None or not (value.isascii() and value.isdigit()):
                raise _invalid(f"malformed {SIGNATURE_HEADER} timestamp")
            timestamp = int(value)
        elif name == SCHEME:
            if not _HEX64.fullmatch(value):
                raise _invalid(f"malformed {SIGNATURE_HEADER} signature")
            signatures.append(value)
        # Other schemes (v0, future ones) are ignored, as Stripe does.
    if timestamp is None or not signatures:
        raise _invalid(f"{SIGNATURE_HEADER} needs t= and at least one {SCHEME}=")
    if len(signatures) > MAX_SIGNATURES:
        raise _invalid(f"too many signatures in {SIGNATURE_HEADER}")
    return timestamp, signatures


def verify(
    secret: Secrets,
    header: str | None,
    body: bytes,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> int:
    """The signed timestamp when ``header`` signs ``body``; WEBHOOK_SIGNATURE_INVALID if not."""
    secrets = _secrets(secret)
    timestamp, signatures = _parse_header(header)
    matched = False
    for one in secrets:
        expected = _mac(one, timestamp, body)
        for candidate in signatures:
            # Every pair is compared (no early exit): timing says nothing about which matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise _invalid("webhook signature does not match")
    if abs(now - timestamp) > tolerance_s:
        raise _invalid("webhook timestamp outside the tolerance")
    return timestamp


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    id: str
    type: str
    created: int
    data: Mapping[str, Any]

    @classmethod
    def parse(cls, body: bytes) -> WebhookEvent:
        """Parse and validate an event body; WEBHOOK_PAYLOAD_INVALID when it is not one."""

        def bad(reason: str) -> DomainError:
            return DomainError(ErrorCode.WEBHOOK_PAYLOAD_INVALID, reason)

        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise bad("webhook body is not JSON") from error
        if not isinstance(doc, dict):
            raise bad("webhook body must be a JSON object")
        event_id, kind, created, data = (doc.get(k) for k in ("id", "type", "created", "data"))
        if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
            raise bad("event id must be 1-128 of [A-Za-z0-9_.:-]")
        if not isinstance(kind, str) or len(kind) > 64 or not _EVENT_TYPE.fullmatch(kind):
            raise bad("event type must look like 'payment.captured'")
        if type(created) is not int or created < 0:
            raise bad("event created must be a non-negative integer (unix seconds)")
        if not isinstance(data, dict):
            raise bad("event data must be a JSON object")
        return cls(event_id, kind, created, data)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"id": self.id, "type": self.type, "created": self.created, "data": dict(self.data)}
        )


def verify_event(
    secret: Secrets,
    header: str | None,
    body: bytes,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> WebhookEvent:
    """Verify the signature first (never parse unauthenticated input), then parse."""
    verify(secret, header, body, now, tolerance_s)
    return WebhookEvent.parse(body)


class SeenEvents(Protocol):
    """Which provider events were already taken in, so a redelivery takes effect once.

    A durable implementation should record the id in the same transaction as the event's
    effect. Otherwise call ``forget`` when processing fails, so the provider's redelivery
    is processed rather than dropped as a duplicate.
    """

    async def first_time(self, provider: str, event_id: str) -> bool:
        """True exactly once per (provider, event id): the caller processes the event."""
        ...

    async def forget(self, provider: str, event_id: str) -> None: ...


class InMemorySeenEvents:
    """For tests and single-process runs. Holds the newest ``max_events`` ids (FIFO)."""

    def __init__(self, max_events: int = 100_000) -> None:
        if max_events < 1:
            raise ValueError("max_events must be positive")
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._max = max_events

    # No await inside: each call is atomic on the event loop.
    async def first_time(self, provider: str, event_id: str) -> bool:
        key = (provider, event_id)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return True

    async def forget(self, provider: str, event_id: str) -> None:
        self._seen.pop((provider, event_id), None)


async def accept(
    seen: SeenEvents,
    provider: str,
    secret: Secrets,
    header: str | None,
    body: bytes,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> WebhookEvent | None:
    """A verified event to process, or None when it was already taken in (answer 200 all
    the same, so the provider stops redelivering it)."""
    event = verify_event(secret, header, body, now, tolerance_s)
    return event if await seen.first_time(provider, event.id) else None
