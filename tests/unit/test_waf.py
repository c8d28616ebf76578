"""The WAF: every attack of the corpus is refused wherever it hides, shop traffic reaches the
app byte for byte, and each limit answers with its own status and one audit line."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from api.waf import (
    IMPORT_PATH,
    MIB,
    Engine,
    Scanner,
    Waf,
    WafSettings,
    _plain,
    _plain_path,
    variants,
)
from api.waf_rules import RULES, Category, Score, Target, check_rules, rules_for
from tests.unit import waf_corpus as corpus

SECRET_AUTH = "Bearer fm1.m-1.1999999999.s3cr3t' OR 1=1--"
SECRET_KEY = "key-<script>alert(1)</script>-zqxj"
SECRET_COOKIE = "session=../../etc/passwd; theme=dark"
SECRET_HEADERS = {"Authorization": SECRET_AUTH, "X-Api-Key": SECRET_KEY, "Cookie": SECRET_COOKIE}


# ---------------------------------------------------------------------------- harness


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Shop:
    """A Waf in front of an echo app, with what the app saw and what the audit log got."""

    waf: Waf
    calls: list[dict[str, Any]] = field(default_factory=list)
    audit: _Records = field(default_factory=_Records)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.waf), base_url="http://shop.test"
        )

    def audit_lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(r.getMessage()) for r in self.audit.records]


def make_shop(waf_settings: WafSettings | None = None) -> Shop:
    calls: list[dict[str, Any]] = []

    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        body = await request.body()
        calls.append(
            {
                "path": scope["path"],
                "query": scope["query_string"],
                "body": body,
                "headers": dict(request.headers),
            }
        )
        await Response(orjson.dumps({"ok": True}), media_type="application/json")(
            scope, receive, send
        )

    audit = _Records()
    logger = logging.getLogger(f"test.waf.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(audit)
    return Shop(Waf(echo, waf_settings, audit_logger=logger), calls, audit)


def _escaped_forms(value: str) -> list[str]:
    """The ways a value could show up in JSON text: as is, lowercased, JSON-escaped."""
    forms = {value, value.lower(), orjson.dumps(value).decode()[1:-1]}
    return [f for f in forms if f.strip()]


def assert_refused(
    shop: Shop,
    response: httpx.Response,
    status: int,
    code: str,
    *,
    never: list[str] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """A problem+json refusal, the app not called, exactly one audit line naming no secret
    and none of ``never``; returns that audit line."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    request_id = response.headers["x-request-id"]
    assert body["request_id"] == request_id
    assert shop.calls == []
    lines = shop.audit_lines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert line["request_id"] == request_id
    assert line["status"] == status
    assert line["reason"] == code
    raw_line = shop.audit.records[0].getMessage()
    for secret in (SECRET_AUTH, SECRET_KEY, SECRET_COOKIE, "s3cr3t", "zqxj"):
        assert secret not in raw_line
    for value in never:
        for form in _escaped_forms(value):
            assert form not in response.text, f"{form!r} echoed in the answer"
            assert form not in raw_line, f"{form!r} written to the audit log"
    return line


def assert_passed(shop: Shop, response: httpx.Response, body: bytes = b"") -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert shop.audit.records == []
    assert len(shop.calls) == 1
    call = shop.calls[0]
    assert call["body"] == body
    return call


async def send_placed(
    client: httpx.AsyncClient, placement: str, payload: str, headers: dict[str, str]
) -> httpx.Response:
    """Send ``payload`` in a query parameter, a JSON field, a form field or the path."""
    if placement == "query":
        return await client.get("/search", params={"q": payload}, headers=headers)
    if placement == "json":
        return await client.post(
            "/v1/merchant/products", json={"name": payload, "sku": "SKU-1"}, headers=headers
        )
    if placement == "form":
        return await client.post("/oauth/token", data={"q": payload}, headers=headers)
    assert placement == "path"
    return await client.get("/v1/products/" + quote(payload, safe=""), headers=headers)


LOCATIONS = {"query": "query:q", "json": "body:$.name", "form": "body:q", "path": "path"}
PATHS = {"query": "/search", "json": "/v1/merchant/products", "form": "/oauth/token"}
PLACEMENTS = list(LOCATIONS)


# ---------------------------------------------------------------------------- rule data


def test_the_rule_data_is_consistent() -> None:
    check_rules(RULES)  # every need is a trigger token, ids are unique
    for category in Category:
        critical = [r for r in RULES if r.category is category and r.paranoia == 1]
        assert critical, f"no paranoia level 1 rule for {category}"
        assert all(r.score == Score.CRITICAL for r in critical), category
    # Weaker rules must never block alone at the default threshold.
    assert all(r.score < WafSettings().anomaly_threshold for r in RULES if r.paranoia > 1)
    assert {r.paranoia for r in RULES} == {1, 2, 3, 4}


def test_the_corpora_are_big_enough() -> None:
    by_category: dict[str, int] = {}
    for category, _ in corpus.ATTACKS:
        by_category[category] = by_category.get(category, 0) + 1
    assert len(corpus.ATTACKS) + len(corpus.SCANNER_USER_AGENTS) >= 80
    assert min(by_category.values()) >= 15
    assert len(corpus.SCANNER_USER_AGENTS) >= 15
    assert len(corpus.BENIGN_TEXT) >= 60


def test_a_bad_need_is_refused() -> None:
    rule = RULES[0]
    with pytest.raises(ValueError, match="not a trigger token"):
        check_rules([replace(rule, needs=("not-a-token",))])
    with pytest.raises(ValueError, match="branches and its needs differ"):
        check_rules([replace(rule, needs=("(",))])
    with pytest.raises(ValueError, match="without needs"):
        check_rules([replace(rule, needs=(), branches=())])
    with pytest.raises(ValueError, match="duplicate"):
        check_rules([rule, rule])


# ---------------------------------------------------------------------------- attacks


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize(("category", "payload"), corpus.ATTACKS, ids=repr)
async def test_every_attack_is_blocked_wherever_it_is(
    category: str, payload: str, placement: str
) -> None:
    shop = make_shop()
    async with shop.client() as client:
        response = await send_placed(client, placement, payload, SECRET_HEADERS)
    line = assert_refused(shop, response, 403, "request_blocked", never=[payload])
    body = response.json()
    assert body["type"] == "https://feira.dev/problems/request_blocked"
    assert body["rules"]
    assert body["rules"] == line["rules"]
    assert category in body["categories"]
    assert body["categories"] == line["categories"]
    assert line["score"] >= 5
    assert LOCATIONS[placement] in line["locations"]
    assert line["method"] == ("GET" if placement in ("query", "path") else "POST")
    assert line["client"] == "127.0.0.1"
    if placement == "path":
        assert line["path"] is None  # the path is the payload
        assert "instance" not in body
    else:
        assert line["path"] == PATHS[placement]  # never the query string
        assert body["instance"] == PATHS[placement]


@pytest.mark.parametrize("user_agent", corpus.SCANNER_USER_AGENTS)
async def test_scanner_user_agents_are_blocked(user_agent: str) -> None:
    shop = make_shop()
    async with shop.client() as client:
        response = await client.get(
            "/v1/products/p-1", headers={**SECRET_HEADERS, "User-Agent": user_agent}
        )
    line = assert_refused(shop, response, 403, "request_blocked", never=[user_agent])
    assert response.json()["categories"] == ["scanner"]
    assert line["locations"] == ["header:user-agent"]
    assert line["path"] == "/v1/products/p-1"


async def test_a_payload_in_a_json_key_is_blocked_and_the_key_not_named() -> None:
    shop = make_shop()
    payload = "' UNION SELECT password FROM users--"
    async with shop.client() as client:
        response = await client.post(
            "/v1/merchant/products", json={"attributes": {payload: "x"}}, headers=SECRET_HEADERS
        )
    line = assert_refused(shop, response, 403, "request_blocked", never=[payload])
    assert line["locations"] == ["body:$.attributes.*"]


async def test_an_attack_deep_in_a_json_array_is_located() -> None:
    shop = make_shop()
    doc = {"variants": [{"sku": "A"}, {"sku": "B", "tags": ["ok", "<script>x</script>"]}]}
    async with shop.client() as client:
        response = await client.post("/v1/merchant/products", json=doc)
    line = assert_refused(shop, response, 403, "request_blocked", never=["<script>x"])
    assert line["locations"] == ["body:$.variants[1].tags[1]"]


async def test_an_attack_on_one_ndjson_line_names_the_line() -> None:
    shop = make_shop()
    lines = [{"id": "p-1", "title": "Kids' shoes"}, {"id": "p-2", "title": "Drop earrings"}]
    lines.append({"id": "p-3", "title": "x'; DROP TABLE products; --"})
    body = b"\n".join(orjson.dumps(line) for line in lines) + b"\n"
    async with shop.client() as client:
        response = await client.post(
            IMPORT_PATH, content=body, headers={"Content-Type": "application/x-ndjson"}
        )
    line = assert_refused(shop, response, 403, "request_blocked", never=["DROP TABLE"])
    assert line["locations"] == ["body:line 3:$.title"]


async def test_a_body_that_is_not_json_is_scanned_as_text() -> None:
    shop = make_shop()
    async with shop.client() as client:
        response = await client.post(
            "/v1/carts/c-1/items",
            content=b"{sku: ' OR 1=1--",
            headers={"Content-Type": "application/json"},
        )
    line = assert_refused(shop, response, 403, "request_blocked", never=["' OR 1=1--"])
    assert line["locations"] == ["body:$"]

    shop = make_shop()
    async with shop.client() as client:
        response = await client.post(
            "/v1/carts/c-1/items",
            content=b"{sku: SKU-1, quantity: 2",
            headers={"Content-Type": "application/json"},
        )
    assert_passed(shop, response, b"{sku: SKU-1, quantity: 2")


async def test_literal_dot_segments_in_the_path_are_blocked() -> None:
    # httpx removes ../ from URLs, as browsers do; raw clients send them as they are.
    shop = make_shop()
    status, _, body = await call_asgi(shop.waf, path="/v1/products/../../etc/passwd")
    assert status == 403
    assert b"passwd" not in body
    assert orjson.loads(body)["categories"] == ["path_traversal"]
    assert shop.audit_lines()[0]["path"] is None


# ---------------------------------------------------------------------------- benign


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("text", corpus.BENIGN_TEXT, ids=repr)
async def test_look_alikes_pass_untouched(text: str, placement: str, level: int) -> None:
    shop = make_shop(WafSettings(paranoia_level=level))
    async with shop.client() as client:
        response = await send_placed(client, placement, text, {})
    assert response.status_code == 200, response.text
    call = shop.calls[0]
    if placement == "query":
        assert httpx.QueryParams(call["query"].decode())["q"] == text
    elif placement == "json":
        assert orjson.loads(call["body"]) == {"name": text, "sku": "SKU-1"}
        assert call["body"] == response.request.content
    elif placement == "form":
        assert httpx.QueryParams(call["body"].decode())["q"] == text
        assert call["body"] == response.request.content
    else:
        assert call["path"] == "/v1/products/" + text
    assert shop.audit.records == []


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    corpus.BENIGN_BODIES,
    ids=[f"{p} {t}" for p, t, _ in corpus.BENIGN_BODIES],
)
async def test_shop_bodies_reach_the_app_byte_identical(
    path: str, content_type: str, body: bytes, level: int
) -> None:
    shop = make_shop(WafSettings(paranoia_level=level))
    async with shop.client() as client:
        response = await client.post(path, content=body, headers={"Content-Type": content_type})
    call = assert_passed(shop, response, body)
    assert call["path"] == path


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("user_agent", corpus.BENIGN_USER_AGENTS)
async def test_ordinary_user_agents_pass(user_agent: str, level: int) -> None:
    shop = make_shop(WafSettings(paranoia_level=level))
    async with shop.client() as client:
        response = await client.get(
            "/v1/products/p-1",
            headers={"User-Agent": user_agent, "Referer": "https://shop.test/search?q=shoes"},
        )
    assert_passed(shop, response)


async def test_an_empty_post_needs_no_content_type() -> None:
    shop = make_shop()
    async with shop.client() as client:
        response = await client.post("/v1/carts")
    assert_passed(shop, response)


# ---------------------------------------------------------------------------- never inspected


@pytest.mark.parametrize("secret_field", ["password", "client_secret", "refresh_token"])
async def test_secret_form_fields_are_not_inspected(secret_field: str) -> None:
    strong = "p'; DROP TABLE users;--<script>$(id)"
    shop = make_shop(WafSettings(paranoia_level=4))
    async with shop.client() as client:
        response = await client.post(
            "/oauth/token", data={"grant_type": "password", secret_field: strong}
        )
    assert_passed(shop, response, response.request.content)

    # The same value in an ordinary field is an attack (the control).
    shop = make_shop()
    async with shop.client() as client:
        response = await client.post("/oauth/token", data={"username": strong})
    assert_refused(shop, response, 403, "request_blocked", never=[strong])


async def test_the_payment_token_is_not_inspected() -> None:
    shop = make_shop(WafSettings(paranoia_level=4))
    body = orjson.dumps({"cart_id": "c-1", "payment_token": "tok_' OR 1=1--<svg/onload=x>"})
    async with shop.client() as client:
        response = await client.post(
            "/v1/checkout", content=body, headers={"Content-Type": "application/json"}
        )
    assert_passed(shop, response, body)


async def test_credential_headers_are_never_inspected_even_at_paranoia_4() -> None:
    shop = make_shop(WafSettings(paranoia_level=4))
    headers = {**SECRET_HEADERS, "Idempotency-Key": "k'; DROP TABLE orders; --"}
    async with shop.client() as client:
        response = await client.get("/v1/products/p-1", headers=headers)
    assert_passed(shop, response)


async def test_other_headers_are_inspected_from_paranoia_2() -> None:
    referer = "https://evil.example/<script>alert(1)</script>"
    shop = make_shop(WafSettings(paranoia_level=1))
    async with shop.client() as client:
        response = await client.get("/v1/products/p-1", headers={"Referer": referer})
    assert_passed(shop, response)

    shop = make_shop(WafSettings(paranoia_level=2))
    async with shop.client() as client:
        response = await client.get(
            "/v1/products/p-1", headers={**SECRET_HEADERS, "Referer": referer}
        )
    line = assert_refused(shop, response, 403, "request_blocked", never=[referer])
    assert line["locations"] == ["header:referer"]


# ---------------------------------------------------------------------------- paranoia


@pytest.mark.parametrize("payload", corpus.PL2_ONLY_ATTACKS)
async def test_weak_hints_add_up_only_from_paranoia_2(payload: str) -> None:
    shop = make_shop(WafSettings(paranoia_level=1))
    async with shop.client() as client:
        response = await client.get("/search", params={"q": payload})
    assert_passed(shop, response)

    shop = make_shop(WafSettings(paranoia_level=2))
    async with shop.client() as client:
        response = await client.get("/search", params={"q": payload})
    line = assert_refused(shop, response, 403, "request_blocked", never=[payload])
    assert len(line["rules"]) >= 2  # two weak rules, neither enough alone
    assert all(r.paranoia == 2 for r in RULES if r.id in line["rules"])


async def test_a_paranoia_2_rule_blocks_at_2_and_not_at_1() -> None:
    text = "Kids' and adults' sizes"  # sqli-quote-keyword, a level 2 rule worth 3
    for level, expected in ((1, 200), (2, 403)):
        shop = make_shop(WafSettings(paranoia_level=level, anomaly_threshold=3))
        async with shop.client() as client:
            response = await client.get("/search", params={"q": text})
        assert response.status_code == expected
        if expected == 403:
            assert response.json()["rules"] == ["sqli-quote-keyword"]


async def test_weak_hints_in_different_fields_do_not_add_up() -> None:
    # Each is a level 2 hint worth 3; together 6, but in different fields.
    doc = {"title": "Kids' and adults' sizes", "subtitle": "Dog | Cat"}
    shop = make_shop(WafSettings(paranoia_level=2))
    async with shop.client() as client:
        response = await client.post("/v1/merchant/products", json=doc)
    assert_passed(shop, response, response.request.content)


# ---------------------------------------------------------------------------- limits


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "CONNECT"])
async def test_a_method_not_allowed_is_405_with_allow(method: str) -> None:
    shop = make_shop()
    async with shop.client() as client:
        response = await client.request(method, "/v1/products/p-1", headers=SECRET_HEADERS)
    line = assert_refused(shop, response, 405, "method_not_allowed")
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
    assert line["method"] == method


async def test_a_url_too_long_is_414() -> None:
    shop = make_shop()
    async with shop.client() as client:
        response = await client.get("/v1/products/p-1", params={"q": "a" * 4096})
    line = assert_refused(shop, response, 414, "uri_too_long")
    assert line["path"] == "/v1/products/p-1"

    shop = make_shop(WafSettings(max_url_chars=100))
    async with shop.client() as client:
        response = await client.get("/" + "a" * 99)
    assert_passed(shop, response)


async def test_too_many_headers_is_431() -> None:
    shop = make_shop()
    headers = {f"X-Filler-{i}": "1" for i in range(101)}
    async with shop.client() as client:
        response = await client.get("/v1/products/p-1", headers=headers)
    assert_refused(shop, response, 431, "request_header_fields_too_large")


async def test_headers_too_large_is_431() -> None:
    shop = make_shop()
    async with shop.client() as client:
        response = await client.get("/v1/products/p-1", headers={"X-Big": "a" * 16 * 1024})
    assert_refused(shop, response, 431, "request_header_fields_too_large")

    shop = make_shop()
    async with shop.client() as client:
        response = await client.get("/v1/products/p-1", headers={"X-Big": "a" * 15 * 1024})
    assert_passed(shop, response)


async def test_a_declared_body_too_large_is_413_before_reading() -> None:
    shop = make_shop()
    status, _, body = await call_asgi(
        shop.waf,
        method="POST",
        headers=[(b"content-type", b"application/json"), (b"content-length", b"1048577")],
        chunks=None,  # reading the body fails the test
    )
    assert status == 413
    assert orjson.loads(body)["code"] == "payload_too_large"
    assert shop.calls == []
    assert len(shop.audit.records) == 1


async def test_a_streamed_body_too_large_is_413() -> None:
    shop = make_shop(WafSettings(max_body_bytes=1000, inspect_body_bytes=4096))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 100

    async with shop.client() as client:
        response = await client.post(
            "/v1/merchant/products", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert "content-length" not in response.request.headers
    assert_refused(shop, response, 413, "payload_too_large")


async def test_a_streamed_body_within_the_limit_arrives_whole() -> None:
    shop = make_shop()
    parts = [b'{"name": "Kids\' shoes", ', b'"sku": "SKU-1", ', b'"tags": ["a", "b"]}']

    async def chunks() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async with shop.client() as client:
        response = await client.post(
            "/v1/merchant/products", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert_passed(shop, response, b"".join(parts))


async def test_a_body_over_the_inspection_limit_is_scanned_only_at_its_start() -> None:
    small = WafSettings(inspect_body_bytes=1024, max_body_bytes=64 * 1024)
    filler = {"description": "x " * 1000}

    # An attack in the first KiB is found (the JSON is tokenised, not parsed).
    shop = make_shop(small)
    doc = {"name": "<script>alert(1)</script>", **filler}
    async with shop.client() as client:
        response = await client.post("/v1/merchant/products", json=doc)
    line = assert_refused(shop, response, 403, "request_blocked", never=["<script>"])
    assert line["locations"] == ["body:prefix"]

    # Past the limit it is not: the documented cost of a bounded inspection.
    shop = make_shop(small)
    doc = {**filler, "name": "<script>alert(1)</script>"}
    async with shop.client() as client:
        response = await client.post("/v1/merchant/products", json=doc)
    assert_passed(shop, response, response.request.content)


async def test_a_stream_over_the_limit_after_inspection_is_cut_with_413() -> None:
    shop = make_shop(WafSettings(inspect_body_bytes=1024, max_body_bytes=8 * 1024))

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(32):
            yield orjson.dumps({"id": f"p-{i}", "title": "x" * 480}) + b"\n"

    async with shop.client() as client:
        response = await client.post(
            "/v1/merchant/products",
            content=chunks(),
            headers={"Content-Type": "application/x-ndjson"},
        )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert shop.calls == []  # the app saw the client go away and answered nothing
    assert len(shop.audit.records) == 1


async def test_the_import_path_has_its_own_body_limit() -> None:
    limits = WafSettings(
        max_body_bytes=1000,
        body_limits_by_path_prefix={IMPORT_PATH: 100_000},
        inspect_body_bytes=512,
    )
    lines = b"".join(
        orjson.dumps({"id": f"p-{i}", "title": "Kids' shoes"}) + b"\n" for i in range(200)
    )
    assert 1000 < len(lines) < 100_000
    shop = make_shop(limits)
    async with shop.client() as client:
        response = await client.post(
            IMPORT_PATH, content=lines, headers={"Content-Type": "application/x-ndjson"}
        )
    assert_passed(shop, response, lines)

    shop = make_shop(limits)
    async with shop.client() as client:
        response = await client.post(
            "/v1/merchant/products",
            content=lines,
            headers={"Content-Type": "application/x-ndjson"},
        )
    assert_refused(shop, response, 413, "payload_too_large")


def test_body_limits_match_whole_path_segments() -> None:
    s = WafSettings()
    assert s.body_limit(IMPORT_PATH) == 64 * MIB
    assert s.body_limit(IMPORT_PATH + "/") == 64 * MIB
    assert s.body_limit(IMPORT_PATH + "er") == 1 * MIB
    assert s.body_limit("/v1/carts/c-1/items") == 1 * MIB
    nested = WafSettings(body_limits_by_path_prefix={"/a": 10, "/a/b/": 20})
    assert nested.body_limit("/a/b/c") == 20
    assert nested.body_limit("/a/c") == 10
    assert nested.body_limit("/ab") == nested.max_body_bytes


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json; charset=utf-7",
        "",
    ],
)
async def test_an_unsupported_body_type_is_415(content_type: str) -> None:
    shop = make_shop()
    headers = {"Content-Type": content_type} if content_type else {}
    async with shop.client() as client:
        response = await client.post("/v1/carts/c-1/items", content=b"{}", headers=headers)
    if not content_type:
        assert "content-type" not in response.request.headers
    assert_refused(shop, response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON; charset=UTF-8",
        "application/merge-patch+json",
        "application/x-ndjson",
        "application/x-www-form-urlencoded; charset=utf-8",
    ],
)
async def test_supported_body_types_pass(content_type: str) -> None:
    shop = make_shop()
    body = b"a=1" if "form" in content_type else b'{"sku": "SKU-1"}'
    async with shop.client() as client:
        response = await client.post(
            "/v1/carts/c-1/items", content=body, headers={"Content-Type": content_type}
        )
    assert_passed(shop, response, body)


# ---------------------------------------------------------------------------- request ids, log


async def test_a_sane_request_id_is_kept_and_an_odd_one_replaced() -> None:
    attack = {"q": "<script>alert(1)</script>"}
    shop = make_shop()
    async with shop.client() as client:
        response = await client.get("/search", params=attack, headers={"X-Request-Id": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    assert shop.audit_lines()[0]["request_id"] == "req-42"

    shop = make_shop()
    odd = 'a b"}{<script>'
    async with shop.client() as client:
        response = await client.get("/search", params=attack, headers={"X-Request-Id": odd})
    generated = response.headers["x-request-id"]
    assert generated != odd
    assert len(generated) == 32
    assert odd not in shop.audit.records[0].getMessage()


async def test_the_forwarded_client_is_logged_only_when_it_is_an_address() -> None:
    attack = {"q": "' OR 1=1--"}
    for forwarded, expected in (("203.0.113.9, 10.0.0.1", "203.0.113.9"), ("<x>", None)):
        shop = make_shop()
        async with shop.client() as client:
            await client.get("/search", params=attack, headers={"X-Forwarded-For": forwarded})
        assert shop.audit_lines()[0].get("forwarded_for") == expected


# ---------------------------------------------------------------------------- switches and settings


async def test_a_disabled_waf_passes_everything() -> None:
    shop = make_shop(WafSettings(enabled=False))
    async with shop.client() as client:
        attack = await client.get("/search", params={"q": "' OR 1=1--"})
        trace = await client.request("TRACE", "/v1/products/p-1")
        scanner = await client.get("/", headers={"User-Agent": "sqlmap/1.7"})
    assert [r.status_code for r in (attack, trace, scanner)] == [200, 200, 200]
    assert len(shop.calls) == 3
    assert shop.audit.records == []


async def test_other_scope_types_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    waf = Waf(app)
    for kind in ("lifespan", "websocket"):
        await waf({"type": kind, "path": "/../etc/passwd", "headers": []}, _no_body, _ignore)
    assert seen == ["lifespan", "websocket"]


@pytest.mark.parametrize(
    "bad",
    [
        {"paranoia_level": 0},
        {"paranoia_level": 5},
        {"paranoia_level": True},
        {"anomaly_threshold": 0},
        {"max_body_bytes": -1},
        {"max_header_bytes": 0},
        {"max_header_count": 0},
        {"max_url_chars": 0},
        {"inspect_body_bytes": 0},
        {"body_limits_by_path_prefix": {"v1/import": 10}},
        {"body_limits_by_path_prefix": {"/v1/import": -5}},
        {"allowed_methods": frozenset({"get"})},
        {"allowed_methods": frozenset()},
        {"allowed_content_types": frozenset({"application/json; charset=utf-8"})},
        {"enabled": "yes"},
    ],
)
def test_invalid_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        WafSettings(**bad)


def test_settings_are_frozen_and_own_their_limits() -> None:
    limits = {"/v1/import": 10}
    s = WafSettings(body_limits_by_path_prefix=limits)
    limits["/v1/import"] = 10**9
    assert s.body_limit("/v1/import") == 10
    with pytest.raises(AttributeError):
        s.paranoia_level = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------- properties


PARANOID = Engine(4)
SCANNED_TARGETS = (Target.PATH, Target.QUERY, Target.HEADERS, Target.BODY)


def _assert_dispatch_is_sound(text: str) -> None:
    """The engine, with its shortcuts (plain strings, trigger tokens, per-token branches),
    finds exactly the rules whose full pattern matches a normalised form of ``text``."""
    forms, _ = variants(text.lower())
    for target in SCANNED_TARGETS:
        expected = {
            rule.id
            for rule in rules_for(target, 4)
            if any(rule.pattern.search(form) for form in forms)
        }
        found = {rule.id for rule in PARANOID.match(text, target)}
        assert found == expected, (text, target)
        if expected:
            assert not _plain(text), (text, expected)
        if expected and target is Target.PATH:
            assert not _plain_path(text), (text, expected)


def test_every_rule_match_on_the_corpus_is_dispatched() -> None:
    texts = [p for _, p in corpus.ATTACKS] + corpus.BENIGN_TEXT + corpus.PL2_ONLY_ATTACKS
    texts += ["/v1/products/" + p for _, p in corpus.ATTACKS]
    for text in texts:
        _assert_dispatch_is_sound(text)


FRAGMENTS = [
    "union", "select", " ", "'", '"', "--", "/*", "*/", "..", "/", "\\", "etc", "passwd",
    "<", ">", "script", "on", "error", "=", "(", ")", ";", "|", "&", "$", "`", "cat", "id",
    "sleep", "5", "1", "or", "and", "%2e", "%", "00", "\n", "#", "@@", "version", "javascript",
    ":", "document", ".", "cookie", "bin", "sh", "-i", "dev", "tcp", "wp-", "admin", "x", "_",
    "information_schema", "0x", "414141", "{", "}", "${", "jndi", "-", "&#60;", "windows",
    "pma", "cgi-bin", "wp-content", "id_rsa", "proc", "var", "log", "*",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=12).map("".join))
def test_no_rule_matches_text_that_holds_none_of_its_needs(text: str) -> None:
    _assert_dispatch_is_sound(text)
    _assert_dispatch_is_sound("/" + text.replace(" ", "/"))


SAFE_ALPHABET = st.characters(
    codec="utf-8",
    categories=["L", "N", "Zs"],
) | st.sampled_from(list(",.!?+-"))


# A name starts with a letter or digit: ".env" or ".netrc" alone is a probe for the file,
# and blocked on purpose.
PRODUCT_NAMES = st.builds(
    str.__add__,
    st.characters(codec="utf-8", categories=["L", "N"]),
    st.text(SAFE_ALPHABET, max_size=59),
)
ENGINES = {level: Engine(level) for level in (1, 2)}


@settings(max_examples=300, deadline=None)
@given(PRODUCT_NAMES)
def test_product_names_of_letters_and_light_punctuation_never_block(name: str) -> None:
    for level in (1, 2):
        scanner = Scanner(ENGINES[level], WafSettings().skip_fields)
        scanner.json({"name": name, "description": name}, "body:$")
        scanner.text(name, Target.QUERY, "query:q")
        assert scanner.score < 5, (name, scanner.findings and scanner.findings.by_location)


UTF8_TEXT = st.characters(codec="utf-8")
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(UTF8_TEXT, max_size=30),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(UTF8_TEXT, max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(JSON_VALUES, st.integers(min_value=1, max_value=7))
def test_whatever_the_waf_lets_through_reaches_the_app_byte_identical(
    value: Any, pieces: int
) -> None:
    body = orjson.dumps(value)
    size = max(1, len(body) // pieces)
    chunks = [body[i : i + size] for i in range(0, len(body), size)] or [b""]

    async def run() -> tuple[int, list[Message]]:
        received: list[Message] = []

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            while True:
                message = await receive()
                received.append(message)
                if not message.get("more_body"):
                    break
            await Response(b"ok")(scope, receive, send)

        status, _, _ = await call_asgi(
            Waf(app, WafSettings(paranoia_level=2)),
            method="POST",
            headers=[(b"content-type", b"application/json")],
            chunks=chunks,
        )
        return status, received

    status, received = asyncio.run(run())
    if status == 200:
        assert [m.get("body", b"") for m in received] == chunks  # the same chunks, in order
    else:
        assert status == 403
        assert received == []


# ---------------------------------------------------------------------------- raw ASGI


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


async def _ignore(message: Message) -> None:
    return None


async def call_asgi(
    app: Any,
    *,
    method: str = "GET",
    path: str = "/v1/products/p-1",
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: list[bytes] | None = (),  # type: ignore[assignment]
) -> tuple[int, dict[str, str], bytes]:
    """One request straight to an ASGI app (no URL normalisation); ``chunks`` None means
    the body must not be read."""
    pending = list(chunks) if chunks is not None else None

    async def receive() -> Message:
        assert pending is not None, "the body was read"
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        return {"type": "http.request", "body": b"", "more_body": False}

    start: dict[str, Any] = {}
    body: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        else:
            body.append(message.get("body", b""))

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers or [],
        "client": ("127.0.0.1", 40000),
        "root_path": "",
    }
    await app(scope, receive, send)
    found = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    return start["status"], found, b"".join(body)
