"""Card numbers are found wherever they hide, and ordinary ids are never taken for one."""

from __future__ import annotations

import io
import logging
import random
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from actors.domain.card_data import (
    REDACTED,
    contains_card_number,
    find_card_numbers,
    gtin_ok,
    is_card_number,
    luhn_ok,
    redact,
)
from api.card_guard import (
    CardDataGuard,
    RedactCardNumbers,
    install_log_redaction,
)
from storage.demo import generate

# Published test numbers of the card brands.
TEST_PANS = {
    "visa": ["4111111111111111", "4012888888881881", "4242424242424242", "4222222222222"],
    "visa_debit": ["4000056655665556"],
    "mastercard": ["5555555555554444", "5105105105105100", "2223003122003222"],
    "amex": ["378282246310005", "371449635398431", "378734493671000"],
    "discover": ["6011111111111117", "6011000990139424"],
    "jcb": ["3530111333300000", "3566002020360505"],
    "diners": ["30569309025904", "38520000023237", "36227206271667"],
    "unionpay": ["6200000000000005", "6205500000000000004"],
}
ALL_PANS = [pan for pans in TEST_PANS.values() for pan in pans]


def grouped(pan: str, sep: str) -> str:
    """The number as printed on the card: 4-6-5 for Amex, 4-6-4 for 14 digits, else by 4."""
    if len(pan) == 15:
        sizes = [4, 6, 5]
    elif len(pan) == 14:
        sizes = [4, 6, 4]
    else:
        sizes = [4] * (len(pan) // 4) + ([len(pan) % 4] if len(pan) % 4 else [])
        if sizes[-1] < 3:  # 13 digits: 4-4-5
            sizes[-2] += sizes.pop()
    parts, start = [], 0
    for size in sizes:
        parts.append(pan[start : start + size])
        start += size
    return sep.join(parts)


def test_the_test_numbers_are_luhn_valid() -> None:
    for pan in ALL_PANS:
        assert luhn_ok(pan), pan
        assert is_card_number(pan), pan


def test_luhn_rejects_one_changed_digit_and_non_digits() -> None:
    assert not luhn_ok("4111111111111112")
    assert not luhn_ok("4111 1111 1111 1111")
    assert not luhn_ok("")
    assert not luhn_ok("٤١١١١١١١١١١١١١١١")  # Arabic-Indic digits are not ASCII
    assert luhn_ok("79927398713")  # the textbook example


@pytest.mark.parametrize("pan", ALL_PANS)
@pytest.mark.parametrize("sep", ["", " ", "-"])
def test_every_brand_is_found_with_every_separator(pan: str, sep: str) -> None:
    text = grouped(pan, sep) if sep else pan
    assert contains_card_number(text)
    assert find_card_numbers({"payment": {"card": text}}) == ["$.payment.card"]
    assert find_card_numbers(f"pay with {text} please") == ["$"]
    assert redact(f"card: {text}, exp 12/27") == f"card: {REDACTED}, exp 12/27"


@pytest.mark.parametrize("pan", ALL_PANS)
def test_numbers_as_integers_keys_and_in_lists(pan: str) -> None:
    assert find_card_numbers({"n": int(pan)}) == ["$.n"]
    assert find_card_numbers({"lines": [1, {"x": [2, int(pan)]}]}) == ["$.lines[1].x[1]"]
    paths = find_card_numbers({pan: "value"})
    assert len(paths) == 1
    assert pan not in paths[0]
    assert REDACTED in paths[0]


def test_a_float_holding_a_pan_is_found() -> None:
    assert find_card_numbers({"n": 4111111111111111.0}) == ["$.n"]
    assert find_card_numbers({"price": 19.99, "n": 1999.0}) == []


def test_pan_followed_by_cvv_or_expiry_in_free_text() -> None:
    assert contains_card_number("4111 1111 1111 1111 123")
    assert contains_card_number("my card is 5555-5555-5555-4444-12-27")
    assert redact("4111 1111 1111 1111 123") == f"{REDACTED} 123"


def test_several_numbers_are_all_redacted() -> None:
    text = "a 4111111111111111 b 378282246310005 c 5555 5555 5555 4444 d"
    assert redact(text) == f"a {REDACTED} b {REDACTED} c {REDACTED} d"
    assert redact("nothing here") == "nothing here"


# ---------------------------------------------------------------- false positives


def walk_strings(value: Any) -> list[str]:
    out: list[str] = []
    if isinstance(value, dict):
        for key, child in value.items():
            out.append(str(key))
            out += walk_strings(child)
    elif isinstance(value, list | tuple):
        for child in value:
            out += walk_strings(child)
    else:
        out.append(str(value))
    return out


def test_the_demo_catalog_holds_no_card_number() -> None:
    items = list(generate(500))
    documents = [
        {"product": item.product, "prices": [asdict(p) for p in item.prices]}
        | {"stock": [asdict(s) for s in item.stock]}
        for item in items
    ]
    assert find_card_numbers(documents) == []
    # and no string of it, redacted, changes
    for text in walk_strings(documents):
        assert redact(text) == text


def ordinary_values() -> list[Any]:
    rng = random.Random(5)
    now = datetime(2025, 6, 1, tzinfo=UTC)
    values: list[Any] = [
        "SKU-0000001-1",
        "SKU-0012345-12",
        "p-0000001",
        "o-0000000012345",
        "m-001",
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00.123456+00:00",
        "2024-05-01 12:00:00",
        "sizes 38 39 40 41 42 43 44 45 46",
        "+46 70 123 45 67",
        "+1-202-555-0143",
        "DE89 3704 0044 0532 0130 00",
        "GB82 WEST 1234 5698 7654 32",
        "NO93 8601 1117 947",
        "BE68 5390 0754 7034",
        "4006381333931",  # EAN-13
        "9780306406157",  # ISBN-13
        "036000291452",  # UPC-A
        1999,
        99999,
        100_000_000,
        19.99,
        "EUR 1 234 567,89",
        "0000000000000000",
        "1234567890",
        "v1=" + "ab" * 32,
    ]
    for _ in range(300):
        moment = now + timedelta(seconds=rng.randrange(-(10**8), 10**8))
        stamp = moment.timestamp()
        values += [
            int(stamp),  # seconds
            int(stamp * 1000),  # ms: 13 digits starting with 1
            int(stamp * 1_000_000),  # µs: 16 digits
            int(stamp * 1_000_000_000),  # ns: 19 digits
            moment.isoformat(),
            str(uuid.UUID(int=rng.getrandbits(128))),
            secrets.token_urlsafe(18),  # a cart id
            secrets.token_hex(16),
            f"SKU-{rng.randrange(10**7):07d}-{rng.randrange(1, 20)}",
            f"pay_{secrets.token_hex(12)}",
            rng.randrange(1, 10**8),  # prices in minor units
        ]
    # EAN-13 barcodes with German prefixes (400-440): valid GTINs are never flagged.
    for _ in range(300):
        body = f"{rng.randrange(400, 441)}{rng.randrange(10**9):09d}"
        check = next(d for d in "0123456789" if gtin_ok(body + d))
        values.append(body + check)
    return values


def test_ordinary_ids_timestamps_and_prices_are_not_card_numbers() -> None:
    values = ordinary_values()
    flagged = [v for v in values if find_card_numbers(v)]
    assert flagged == []
    assert find_card_numbers({"values": values}) == []


def test_digits_glued_to_letters_are_identifiers() -> None:
    assert not contains_card_number("x4111111111111111")
    assert not contains_card_number("4111111111111111x")
    assert contains_card_number("card:4111111111111111;")
    assert contains_card_number("[4111111111111111]")


def test_a_longer_digit_run_is_not_a_card_number() -> None:
    assert not contains_card_number("41111111111111110")  # 17 digits, fails Luhn
    assert not contains_card_number("4111111111111111" + "0000")  # 20 digits, one run


# ---------------------------------------------------------------- properties

ISSUER_PREFIXES = ["4", "51", "55", "2221", "2720", "34", "37", "6011", "65", "3528", "36", "62"]


def with_check_digit(partial: str) -> str:
    return next(partial + d for d in "0123456789" if luhn_ok(partial + d))


@st.composite
def valid_pans(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(ISSUER_PREFIXES))
    length = draw(st.integers(min_value=14, max_value=19))
    filler = draw(st.text("0123456789", min_size=length - 1 - len(prefix)))
    filler = filler[: length - 1 - len(prefix)]
    return with_check_digit(prefix + filler.ljust(length - 1 - len(prefix), "0"))


@settings(max_examples=300, deadline=None)
@given(valid_pans(), st.sampled_from(["", " ", "-"]), st.sampled_from(["{}", "a {} b", "{},"]))
def test_any_valid_pan_is_found(pan: str, sep: str, frame: str) -> None:
    text = frame.format(grouped(pan, sep) if sep else pan)
    assert contains_card_number(text)
    assert find_card_numbers({"k": text}) == ["$.k"]
    assert pan not in redact(text).replace(" ", "").replace("-", "")


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=10**12 - 1))
def test_no_number_of_twelve_digits_or_fewer_is_flagged(number: int) -> None:
    assert find_card_numbers(number) == []
    assert find_card_numbers(str(number)) == []
    assert redact(f"id {number}") == f"id {number}"


@settings(max_examples=300, deadline=None)
@given(valid_pans())
def test_one_changed_digit_is_not_a_card_number(pan: str) -> None:
    position = len(pan) - 1
    changed = pan[:position] + str((int(pan[position]) + 1) % 10)
    assert not luhn_ok(changed)
    assert not contains_card_number(changed)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=12),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_json_without_long_digit_runs_is_clean(value: Any) -> None:
    assert find_card_numbers(value) == []


# ================================================================ the ASGI guard

PAN = "4111111111111111"


class Downstream:
    """A tiny app that records what reached it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.chunks: list[bytes] = []
        self.app = FastAPI()
        self.app.add_api_route("/echo", self.echo, methods=["POST", "GET"])
        self.app.add_api_route("/stream", self.stream, methods=["POST"])
        self.app.add_api_route("/checkout", self.checkout, methods=["POST"])

    async def echo(self, request: Request) -> Response:
        self.calls.append(request.url.path)
        body = await request.body()
        return Response(body, media_type="application/octet-stream")

    async def stream(self, request: Request) -> Response:
        self.calls.append(request.url.path)
        async for chunk in request.stream():
            if chunk:
                self.chunks.append(chunk)
        return Response(b"".join(self.chunks), media_type="application/octet-stream")

    async def checkout(self, body: CheckoutBody) -> JSONResponse:
        self.calls.append("/checkout")
        return JSONResponse({"token": body.payment_token}, status_code=202)


class CheckoutBody(BaseModel):
    payment_token: str
    note: str = ""


@pytest.fixture
def downstream() -> Downstream:
    return Downstream()


@pytest.fixture
async def client(downstream: Downstream) -> AsyncIterator[httpx.AsyncClient]:
    guarded = CardDataGuard(downstream.app, max_body_bytes=4096)
    transport = httpx.ASGITransport(app=guarded)
    async with httpx.AsyncClient(transport=transport, base_url="http://feira") as http:
        yield http


def assert_refused(response: httpx.Response, *fields: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == "card_data_forbidden"
    assert PAN not in response.text
    assert "4111 1111" not in response.text
    if fields:
        assert body["fields"] == list(fields)
    return body


async def test_a_card_in_a_json_body_is_refused_before_the_app(
    client: httpx.AsyncClient, downstream: Downstream
) -> None:
    response = await client.post(
        "/checkout", json={"payment_token": "tok_approve", "note": f"card {PAN}"}
    )
    assert_refused(response, "$.note")
    response = await client.post("/checkout", json={"payment": {"card": int(PAN)}})
    assert_refused(response, "$.payment.card")
    assert downstream.calls == []
    ok = await client.post("/checkout", json={"payment_token": "tok_approve"})
    assert ok.status_code == 202
    assert downstream.calls == ["/checkout"]


async def test_card_in_a_form_body_or_a_text_body(
    client: httpx.AsyncClient, downstream: Downstream
) -> None:
    form = await client.post("/echo", data={"card": "4111 1111 1111 1111", "x": "1"})
    assert_refused(form, "$.card")
    text = await client.post(
        "/echo", content=f"pay {PAN}".encode(), headers={"content-type": "text/plain"}
    )
    assert_refused(text, "$")
    broken_json = await client.post(
        "/echo", content=f'{{"card": "{PAN}"'.encode(), headers={"content-type": "application/json"}
    )
    assert_refused(broken_json, "$")
    assert downstream.calls == []


async def test_a_normal_body_passes_byte_identical(
    client: httpx.AsyncClient, downstream: Downstream
) -> None:
    raw = '{ "sku" : "SKU-0000001-1",\n "quantity": 2, "at": "2025-06-01T12:00:00Z", "é": 1 }  '
    response = await client.post(
        "/echo", content=raw.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.content == raw.encode()
    assert downstream.calls == ["/echo"]


async def test_a_streamed_body_arrives_in_its_chunks(
    client: httpx.AsyncClient, downstream: Downstream
) -> None:
    sent = [b'{"a": ', b'"SKU-0000001-1"', b", ", b'"b": 2}']

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in sent:
            yield chunk

    response = await client.post(
        "/stream", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.content == b"".join(sent)
    assert downstream.chunks == sent


async def test_a_card_split_over_chunks_is_still_found(
    client: httpx.AsyncClient, downstream: Downstream
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"card": "4111 1111'
        yield b' 1111 1111"}'

    response = await client.post(
        "/stream", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_refused(response, "$.card")
    assert downstream.calls == []


async def test_query_string_and_path(client: httpx.AsyncClient, downstream: Downstream) -> None:
    assert_refused(await client.get("/echo", params={"card": PAN}), "query.card")
    assert_refused(await client.get("/echo?card=4111+1111+1111+1111"), "query.card")
    assert_refused(await client.get("/echo?card=4111%201111%201111%201111"), "query.card")
    assert_refused(await client.get(f"/echo/{PAN}"), "path")
    assert downstream.calls == []
    ok = await client.get("/echo", params={"sku": "SKU-0000001-1", "ts": "1750000000000"})
    assert ok.status_code == 200
    assert downstream.calls == ["/echo"]


async def test_header_values(client: httpx.AsyncClient, downstream: Downstream) -> None:
    refused = await client.get("/echo", headers={"Idempotency-Key": PAN})
    assert_refused(refused, "header:idempotency-key")
    assert PAN not in refused.text
    assert downstream.calls == []
    ok = await client.get(
        "/echo",
        headers={
            "Idempotency-Key": "order-1750000000000",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            # Set by the ingress, random: it may pass a Luhn check by chance.
            "x-request-id": PAN,
            "x-forwarded-for": PAN,
        },
    )
    assert ok.status_code == 200


async def test_oversized_bodies_are_413(client: httpx.AsyncClient, downstream: Downstream) -> None:
    big = b'{"x": "' + b"a" * 5000 + b'"}'
    declared = await client.post("/echo", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert declared.json()["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"a" * 1000

    streamed = await client.post(
        "/stream", content=chunks(), headers={"content-type": "text/plain"}
    )
    assert streamed.status_code == 413
    assert downstream.calls == []


def ndjson_chunks(lines: list[bytes], size: int) -> AsyncIterator[bytes]:
    """The lines as one NDJSON body, cut into chunks of ``size`` bytes (mid-line)."""
    body = b"".join(line + b"\n" for line in lines)

    async def gen() -> AsyncIterator[bytes]:
        for start in range(0, len(body), size):
            yield body[start : start + size]

    return gen()


NDJSON = {"content-type": "application/x-ndjson"}


async def test_ndjson_streams_through_line_by_line(
    client: httpx.AsyncClient, downstream: Downstream
) -> None:
    lines = [orjson.dumps({"title": f"Kettle {n}", "sku": f"SKU-{n:07d}-1"}) for n in range(50)]
    response = await client.post("/stream", content=ndjson_chunks(lines, 37), headers=NDJSON)
    assert response.status_code == 200
    assert response.content == b"".join(line + b"\n" for line in lines)
    # The app got the body while it streamed, in several pieces, each ending on a line.
    assert len(downstream.chunks) > 1
    assert all(chunk.endswith(b"\n") for chunk in downstream.chunks)


async def test_ndjson_is_cut_before_the_line_with_a_card(
    client: httpx.AsyncClient, downstream: Downstream
) -> None:
    good = [orjson.dumps({"title": f"Kettle {n}"}) for n in range(3)]
    bad = orjson.dumps({"title": "Kettle", "attributes": {"note": f"card {PAN}"}})
    lines = [*good, bad, orjson.dumps({"title": "after"})]
    response = await client.post("/stream", content=ndjson_chunks(lines, 10), headers=NDJSON)
    body = assert_refused(response, "line 4.attributes.note")
    assert body["line"] == 4
    received = b"".join(downstream.chunks)
    assert received == b"".join(line + b"\n" for line in good)
    assert PAN.encode() not in received
    assert b"after" not in received


async def test_ndjson_line_over_the_limit_is_413(
    client: httpx.AsyncClient, downstream: Downstream
) -> None:
    lines = [b'{"ok": 1}', b'{"x": "' + b"a" * 6000 + b'"}']
    response = await client.post("/stream", content=ndjson_chunks(lines, 500), headers=NDJSON)
    assert response.status_code == 413
    assert b"".join(downstream.chunks) == b'{"ok": 1}\n'


async def test_other_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await CardDataGuard(app)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]


# ================================================================ log redaction


def test_the_filter_redacts_message_args_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactCardNumbers())
    logger = logging.getLogger("feira.test.filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("charging %s for %d", PAN, 5)
        logger.warning(f"inline 4111-1111-1111-1111 and {{'n': {PAN}}}")
        try:
            raise ValueError(f"bad card {PAN}")
        except ValueError:
            logger.exception("failed")
        logger.warning("no card here: SKU-0000001-1 at %s", 1750000000000)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    out = stream.getvalue()
    assert PAN not in out
    assert "4111-1111" not in out
    assert out.count(REDACTED) == 4
    assert "charging [card number removed] for 5" in out
    assert "no card here: SKU-0000001-1 at 1750000000000" in out


def test_install_redacts_every_record(caplog: pytest.LogCaptureFixture) -> None:
    uninstall = install_log_redaction()
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("feira.api.test").info("card %s", PAN)
            logging.getLogger("somebody.else").error("card 5555 5555 5555 4444")
        assert PAN not in caplog.text
        assert "5555 5555" not in caplog.text
        assert caplog.text.count(REDACTED) == 2
        assert [r.getMessage() for r in caplog.records] == [f"card {REDACTED}"] * 2
        assert install_log_redaction()  # a second call adds nothing
        assert (
            sum(isinstance(f, RedactCardNumbers) for f in logging.getLogger("feira").filters) == 1
        )
    finally:
        uninstall()
    assert not any(isinstance(f, RedactCardNumbers) for f in logging.getLogger("feira").filters)
    record = logging.getLogger("x").makeRecord("x", logging.INFO, "f", 1, PAN, None, None)
    assert record.getMessage() == PAN  # the record factory was restored
