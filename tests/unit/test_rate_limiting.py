"""The rate-limit middleware with the in-process limiter and a fake clock: no network."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.domain.rate_limit import EPSILON_S, Decision, InProcessLimiter, RatePlan
from api.problems import PROBLEM_BASE
from api.rate_limiting import (
    DEFAULT_EXEMPT_PATHS,
    ApiClient,
    CachedKeyLookup,
    Limiter,
    RateLimit,
    RateLimitSettings,
    scope_client,
)
from storage.errors import StoreUnavailable

PEER = "198.51.100.1"


@dataclass(frozen=True)
class Key:
    key_id: str
    plan: str


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recording:
    """A limiter that records the buckets it was asked about."""

    def __init__(self, inner: Limiter) -> None:
        self.inner = inner
        self.keys: list[str] = []

    async def check(
        self, key: str, plan: RatePlan, now: float | None = None, cost: int = 1
    ) -> Decision:
        self.keys.append(key)
        return await self.inner.check(key, plan, now, cost)


class Unavailable:
    async def check(
        self, key: str, plan: RatePlan, now: float | None = None, cost: int = 1
    ) -> Decision:
        raise StoreUnavailable("redis at 127.0.0.1:1: connection refused")


class Lookup:
    """A key store that counts its calls."""

    def __init__(self, keys: Mapping[str, Key]) -> None:
        self.keys = dict(keys)
        self.calls: list[str] = []

    async def __call__(self, plaintext: str) -> ApiClient | None:
        self.calls.append(plaintext)
        return self.keys.get(plaintext)


class Echo:
    """The inner app: answers 200 with the key id it was given, counting requests."""

    def __init__(self, extra_headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self.calls = 0
        self.extra_headers = list(extra_headers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        if scope["type"] != "http":
            return
        body = orjson.dumps({"api_key_id": scope_client(scope)})
        headers = [(b"content-type", b"application/json"), *self.extra_headers]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    scope: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        found = [v for n, v in self.headers if n == name.lower()]
        assert len(found) <= 1, f"{name} sent {len(found)} times"
        return found[0] if found else None

    def json(self) -> Any:
        return orjson.loads(self.body)


async def call(
    app: Any,
    path: str = "/v1/products",
    *,
    key: str | None = None,
    peer: str | None = PEER,
    headers: Iterable[tuple[str, str]] = (),
) -> Answer:
    raw = [(n.lower().encode(), v.encode()) for n, v in headers]
    if key is not None:
        raw.append((b"x-api-key", key.encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "client": (peer, 50000) if peer is not None else None,
        "server": ("testserver", 80),
    }
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = messages[0]
    assert start["type"] == "http.response.start"
    return Answer(
        status=start["status"],
        headers=[(n.decode().lower(), v.decode()) for n, v in start["headers"]],
        body=b"".join(m.get("body", b"") for m in messages[1:]),
        scope=scope,
    )


def make(
    plans: Mapping[str, RatePlan] | None = None,
    *,
    keys: Mapping[str, Key] | None = None,
    lookup: Any = None,
    limiter: Limiter | None = None,
    app: Echo | None = None,
    clock: Clock | None = None,
    **overrides: Any,
) -> tuple[RateLimit, Echo, Clock]:
    app = app or Echo()
    clock = clock or Clock()
    if plans is not None:
        overrides["plans"] = plans
        overrides.setdefault("route_plans", {})
    config = RateLimitSettings(**overrides)
    if lookup is None and keys is not None:
        lookup = Lookup(keys)
    middleware = RateLimit(app, limiter or InProcessLimiter(), config, lookup, clock=clock)
    return middleware, app, clock


async def statuses(app: RateLimit, n: int, **kwargs: Any) -> list[int]:
    return [(await call(app, **kwargs)).status for _ in range(n)]


# --- anonymous and key limits -----------------------------------------------------------


async def test_anonymous_callers_are_limited_per_ip_by_the_anonymous_plan() -> None:
    mw, app, clock = make({"anonymous": RatePlan(2, 3)})
    assert await statuses(mw, 4) == [200, 200, 200, 429]
    assert app.calls == 3
    # Another address has its own bucket.
    assert await statuses(mw, 3, peer="198.51.100.2") == [200, 200, 200]
    clock.now += 0.5  # one emission interval: exactly one more
    assert await statuses(mw, 2) == [200, 429]


async def test_keys_are_limited_by_their_plan_and_apart_from_each_other() -> None:
    plans = {"anonymous": RatePlan(1, 1), "standard": RatePlan(1, 2), "partner": RatePlan(1, 5)}
    keys = {"s3cret-a": Key("ka", "standard"), "s3cret-b": Key("kb", "partner")}
    limiter = Recording(InProcessLimiter())
    mw, _, _ = make(plans, keys=keys, limiter=limiter)
    assert await statuses(mw, 3, key="s3cret-a") == [200, 200, 429]
    assert await statuses(mw, 6, key="s3cret-b") == [200] * 5 + [429]
    # Keys do not spend the IP's anonymous budget (burst 1), from the same address.
    assert await statuses(mw, 2) == [200, 429]
    assert set(limiter.keys) == {"key:ka", "key:kb", f"ip:{PEER}"}


async def test_the_key_id_is_left_for_later_layers() -> None:
    mw, _, _ = make(keys={"s3cret": Key("k-1", "standard")})
    known = await call(mw, key="s3cret")
    assert known.json() == {"api_key_id": "k-1"}
    assert scope_client(known.scope) == "k-1"
    assert known.scope["state"] == {"api_key_id": "k-1"}
    anonymous = await call(mw)
    assert anonymous.json() == {"api_key_id": None}
    assert scope_client(anonymous.scope) is None


async def test_unknown_key_is_401_and_never_reaches_the_app() -> None:
    lookup = Lookup({"good": Key("k", "standard")})
    mw, app, _ = make(lookup=lookup)
    for presented in ("bad", ""):
        answer = await call(mw, key=presented)
        assert answer.status == 401
        assert answer.header("content-type") == "application/problem+json"
        assert answer.header("www-authenticate") == 'ApiKey realm="feira", header="X-Api-Key"'
        assert answer.json() == {
            "type": PROBLEM_BASE + "unauthenticated",
            "title": "Unauthenticated",
            "status": 401,
            "code": "unauthenticated",
            "detail": "unknown or revoked API key",
            "instance": "/v1/products",
        }
        assert "state" not in answer.scope
    assert app.calls == 0
    assert lookup.calls == ["bad"]  # an empty header is refused without a lookup


async def test_without_a_key_lookup_a_presented_key_is_refused() -> None:
    mw, app, _ = make()
    assert (await call(mw, key="anything")).status == 401
    assert app.calls == 0
    assert (await call(mw)).status == 200


async def test_a_key_with_a_plan_the_settings_lack_gets_the_anonymous_plan(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plans = {"anonymous": RatePlan(1, 2), "standard": RatePlan(1, 50)}
    mw, _, _ = make(plans, keys={"s": Key("k", "gold")})
    with caplog.at_level(logging.ERROR, "feira.api.rate_limiting"):
        assert await statuses(mw, 3, key="s") == [200, 200, 429]
    assert [r.getMessage() for r in caplog.records] == [
        "API key k has plan 'gold', which the rate-limit settings do not define; "
        "limiting it by the anonymous plan"
    ]


# --- answers ----------------------------------------------------------------------------


async def test_429_body_and_headers_exactly() -> None:
    mw, app, clock = make({"anonymous": RatePlan(0.5, 1)})  # T = 2 s
    assert (await call(mw)).status == 200
    clock.now += 0.1
    refused = await call(mw)
    assert refused.status == 429
    assert app.calls == 1
    assert refused.header("retry-after") == "2"  # 1.9 s, rounded up
    assert refused.header("ratelimit-policy") == '"anonymous";q=1;w=2'
    assert refused.header("ratelimit") == '"anonymous";r=0;t=2'
    assert refused.header("content-type") == "application/problem+json"
    assert refused.json() == {
        "type": PROBLEM_BASE + "rate_limited",
        "title": "Too many requests",
        "status": 429,
        "code": "rate_limited",
        "detail": "rate limit of plan 'anonymous' exceeded; retry in 2 s",
        "instance": "/v1/products",
        "policy": "anonymous",
        "retry_after_s": 2,
    }
    # Honouring Retry-After works: 2 s after the refusal, admitted.
    clock.now += 2
    assert (await call(mw)).status == 200


async def test_retry_after_is_at_least_one_whole_second() -> None:
    mw, _, clock = make({"anonymous": RatePlan(100, 1)})  # T = 10 ms
    assert (await call(mw)).status == 200
    clock.now += 0.001
    refused = await call(mw)
    assert refused.status == 429
    assert refused.header("retry-after") == "1"
    assert refused.json()["retry_after_s"] == 1
    assert refused.json()["detail"].endswith("retry in 1 s")


async def test_admitted_responses_carry_the_ratelimit_headers() -> None:
    mw, _, _ = make({"anonymous": RatePlan(10, 5)})
    first = await call(mw)
    assert first.status == 200
    assert first.header("ratelimit-policy") == '"anonymous";q=5;w=1'
    assert first.header("ratelimit") == '"anonymous";r=4;t=1'
    assert first.header("retry-after") is None
    assert first.header("content-type") == "application/json"
    second = await call(mw)
    assert second.header("ratelimit") == '"anonymous";r=3;t=1'


async def test_headers_the_app_set_itself_are_not_duplicated() -> None:
    app = Echo([(b"RateLimit", b'"app";r=1;t=1')])
    mw, _, _ = make({"anonymous": RatePlan(10, 5)}, app=app)
    answer = await call(mw)
    assert answer.header("ratelimit") == '"app";r=1;t=1'  # header() asserts it is alone
    assert answer.header("ratelimit-policy") == '"anonymous";q=5;w=1'


async def test_a_degraded_decision_carries_only_the_policy() -> None:
    class Degraded:
        async def check(
            self, key: str, plan: RatePlan, now: float | None = None, cost: int = 1
        ) -> Decision:
            return Decision(True, None, 0.0, plan.burst - 1, 0.0, degraded=True)

    mw, _, _ = make({"anonymous": RatePlan(10, 5)}, limiter=Degraded())
    answer = await call(mw)
    assert answer.status == 200
    assert answer.header("ratelimit-policy") == '"anonymous";q=5;w=1'
    assert answer.header("ratelimit") is None


async def test_an_unavailable_limiter_answers_503() -> None:
    mw, app, _ = make(limiter=Unavailable(), keys={"s": Key("k", "standard")})
    for key in (None, "s"):
        answer = await call(mw, key=key)
        assert answer.status == 503
        assert answer.header("retry-after") == "1"
        body = answer.json()
        assert (body["code"], body["status"]) == ("store_unavailable", 503)
        assert body["detail"] == "the rate limiter is unavailable; retry shortly"
    assert app.calls == 0


async def test_an_unavailable_key_store_answers_503() -> None:
    async def down(plaintext: str) -> ApiClient | None:
        raise StoreUnavailable("postgres: timeout")

    mw, app, _ = make(lookup=down)
    answer = await call(mw, key="s")
    assert answer.status == 503
    assert answer.header("retry-after") == "1"
    assert answer.json()["detail"] == "API keys cannot be checked right now; retry shortly"
    assert app.calls == 0


# --- routes, exemptions, other scopes ---------------------------------------------------


async def test_route_plans_stack_on_the_main_limit_per_ip() -> None:
    plans = {
        "anonymous": RatePlan(100, 100),
        "standard": RatePlan(100, 100),
        "auth": RatePlan(1, 2),
    }
    limiter = Recording(InProcessLimiter())
    mw, _, clock = make(
        plans,
        route_plans={"/v1/auth/sign-in": "auth"},
        keys={"s": Key("k", "standard")},
        limiter=limiter,
    )
    first = await call(mw, "/v1/auth/sign-in")
    assert first.status == 200
    assert first.header("ratelimit-policy") == '"anonymous";q=100;w=1, "auth";q=2;w=2'
    assert first.header("ratelimit") == '"anonymous";r=99;t=1, "auth";r=1;t=1'
    # A key does not escape the route limit: it is per IP, whoever calls.
    assert (await call(mw, "/v1/auth/sign-in", key="s")).status == 200
    refused = await call(mw, "/v1/auth/sign-in")
    assert refused.status == 429
    assert refused.header("ratelimit-policy") == '"auth";q=2;w=2'
    assert refused.json()["policy"] == "auth"
    assert refused.header("retry-after") == "1"
    # Other routes and other addresses are untouched.
    assert (await call(mw, "/v1/products")).status == 200
    assert (await call(mw, "/v1/auth/sign-in", peer="203.0.113.9")).status == 200
    assert limiter.keys[:4] == [
        f"ip:{PEER}",
        f"route:/v1/auth/sign-in:ip:{PEER}",
        "key:k",
        f"route:/v1/auth/sign-in:ip:{PEER}",
    ]
    clock.now += 1.0
    assert (await call(mw, "/v1/auth/sign-in")).status == 200


async def test_default_route_plans_cover_the_guessable_routes() -> None:
    mw, _, _ = make()
    for path in ("/v1/auth/sign-in", "/v1/customers", "/oauth/token"):
        codes = await statuses(mw, 11, path=path)
        assert codes == [200] * 10 + [429], path


async def test_exempt_paths_are_never_limited_nor_authenticated() -> None:
    lookup = Lookup({})
    limiter = Recording(InProcessLimiter())
    mw, app, _ = make({"anonymous": RatePlan(1, 1)}, lookup=lookup, limiter=limiter)
    for path in sorted(DEFAULT_EXEMPT_PATHS):
        answers = [await call(mw, path, key="bogus") for _ in range(5)]
        assert [a.status for a in answers] == [200] * 5
        assert all(a.header("ratelimit") is None for a in answers)
    assert app.calls == 10
    assert lookup.calls == []
    assert limiter.keys == []


async def test_websocket_and_lifespan_pass_through() -> None:
    limiter = Recording(InProcessLimiter())
    mw, app, _ = make({"anonymous": RatePlan(1, 1)}, limiter=limiter)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        raise AssertionError("the echo app sends nothing on these scopes")

    for kind in ("websocket", "lifespan"):
        scope = {"type": kind, "path": "/ws", "headers": [(b"x-api-key", b"bogus")]}
        await mw(scope, receive, send)
    assert app.calls == 2
    assert limiter.keys == []


async def test_disabled_limits_nothing_but_still_checks_keys() -> None:
    limiter = Recording(InProcessLimiter())
    mw, app, _ = make(
        {"anonymous": RatePlan(1, 1)},
        enabled=False,
        keys={"s": Key("k", "anonymous")},
        limiter=limiter,
    )
    assert await statuses(mw, 5) == [200] * 5
    assert (await call(mw, key="s")).json() == {"api_key_id": "k"}
    assert (await call(mw, key="bad")).status == 401
    assert (await call(mw)).header("ratelimit") is None
    assert limiter.keys == []
    assert app.calls == 7


# --- client addresses -------------------------------------------------------------------


async def test_x_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    limiter = Recording(InProcessLimiter())
    mw, _, _ = make({"anonymous": RatePlan(1, 2)}, limiter=limiter)
    codes = [
        (await call(mw, headers=[("X-Forwarded-For", f"203.0.113.{i}")])).status for i in range(3)
    ]
    assert codes == [200, 200, 429]  # spoofing a new address each time gains nothing
    assert set(limiter.keys) == {f"ip:{PEER}"}


async def test_x_forwarded_for_from_a_trusted_proxy_names_the_client() -> None:
    limiter = Recording(InProcessLimiter())
    mw, _, _ = make(
        {"anonymous": RatePlan(1, 1)},
        trusted_proxies=frozenset({"10.0.0.0/8", "192.0.2.1"}),
        limiter=limiter,
    )
    cases = [
        # (peer, X-Forwarded-For values, bucket)
        ("10.0.0.1", ["203.0.113.5"], "203.0.113.5"),
        # The client wrote 6.6.6.6 itself; our proxy appended what it saw.
        ("10.0.0.1", ["6.6.6.6, 203.0.113.6"], "203.0.113.6"),
        # Two trusted hops (a CDN edge, then our ingress); two header lines.
        ("10.0.0.1", ["7.7.7.7, 203.0.113.7", "192.0.2.1"], "203.0.113.7"),
        # Ports and brackets removed; an IPv6 client by its /64.
        ("10.0.0.1", ["203.0.113.8:4711"], "203.0.113.8"),
        ("10.0.0.1", ["[2001:db8:aa:bb::1]:443"], "2001:db8:aa:bb::/64"),
        # Garbage where an address should be: the nearest address we can vouch for.
        ("10.0.0.1", ["203.0.113.9, not-an-ip, 192.0.2.1"], "192.0.2.1"),
        # Every hop trusted: the left-most is the origin.
        ("10.0.0.1", ["10.1.1.1, 10.2.2.2"], "10.1.1.1"),
        # A trusted peer without the header is the client.
        ("10.0.0.2", [], "10.0.0.2"),
        # An untrusted peer's header is not believed.
        ("203.0.113.10", ["10.0.0.5"], "203.0.113.10"),
        # A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6.
        ("::ffff:10.0.0.1", ["203.0.113.11"], "203.0.113.11"),
    ]
    for peer, forwarded, bucket in cases:
        limiter.keys.clear()
        answer = await call(mw, peer=peer, headers=[("X-Forwarded-For", v) for v in forwarded])
        assert answer.status == 200, (peer, forwarded)
        assert limiter.keys == [f"ip:{bucket}"], (peer, forwarded)


async def test_ipv6_clients_share_a_bucket_per_64() -> None:
    limiter = Recording(InProcessLimiter())
    mw, _, _ = make({"anonymous": RatePlan(1, 2)}, limiter=limiter)
    assert (await call(mw, peer="2001:db8:1:2::1")).status == 200
    assert (await call(mw, peer="2001:db8:1:2:ffff:ffff:ffff:ffff")).status == 200
    assert (await call(mw, peer="2001:db8:1:2::abcd")).status == 429  # same /64
    assert (await call(mw, peer="2001:db8:1:3::1")).status == 200  # the next /64
    assert limiter.keys == ["ip:2001:db8:1:2::/64"] * 3 + ["ip:2001:db8:1:3::/64"]
    limiter.keys.clear()
    await call(mw, peer="::ffff:203.0.113.1")
    await call(mw, peer=None)
    assert limiter.keys == ["ip:203.0.113.1", "ip:unknown"]


# --- the key cache ----------------------------------------------------------------------


async def test_cache_keeps_known_keys_for_the_ttl_so_revocation_lands_within_it() -> None:
    clock = Clock(0.0)
    store = Lookup({"s": Key("k", "standard")})
    cache = CachedKeyLookup(store, ttl_s=30.0, clock=clock)
    assert await cache("s") == Key("k", "standard")
    clock.now = 29.9
    del store.keys["s"]  # revoked in the store
    assert await cache("s") == Key("k", "standard")  # still cached here
    assert store.calls == ["s"]
    clock.now = 30.0
    assert await cache("s") is None  # the TTL is up: revocation visible
    assert store.calls == ["s", "s"]


async def test_cache_remembers_unknown_keys_for_the_negative_ttl() -> None:
    clock = Clock(0.0)
    store = Lookup({})
    cache = CachedKeyLookup(store, negative_ttl_s=5.0, clock=clock)
    assert await cache("new") is None
    store.keys["new"] = Key("k", "standard")  # created just after a failed try
    clock.now = 4.9
    assert await cache("new") is None
    clock.now = 5.0
    assert await cache("new") == Key("k", "standard")
    assert store.calls == ["new", "new"]


async def test_negative_caching_can_be_turned_off() -> None:
    store = Lookup({})
    cache = CachedKeyLookup(store, negative_ttl_s=0, clock=Clock(0.0))
    for _ in range(3):
        assert await cache("x") is None
    assert store.calls == ["x"] * 3


async def test_cache_errors_are_not_cached() -> None:
    calls = 0

    async def flaky(plaintext: str) -> ApiClient | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailable("down")
        return Key("k", "standard")

    cache = CachedKeyLookup(flaky, clock=Clock(0.0))
    with pytest.raises(StoreUnavailable):
        await cache("s")
    assert await cache("s") == Key("k", "standard")
    assert calls == 2


async def test_cache_is_bounded_least_recently_used_first() -> None:
    store = Lookup({f"s{i}": Key(f"k{i}", "standard") for i in range(4)})
    cache = CachedKeyLookup(store, max_entries=2, clock=Clock(0.0))
    await cache("s0")
    await cache("s1")
    await cache("s0")  # s0 is now the most recently used
    await cache("s2")  # evicts s1
    assert len(cache) == 2
    store.calls.clear()
    await cache("s0")
    await cache("s2")
    assert store.calls == []
    await cache("s1")
    assert store.calls == ["s1"]


async def test_a_flood_of_unknown_keys_does_not_evict_known_ones() -> None:
    store = Lookup({"real": Key("k", "standard")})
    cache = CachedKeyLookup(store, max_entries=3, clock=Clock(0.0))
    await cache("real")
    for i in range(100):
        assert await cache(f"guess-{i}") is None
    assert len(cache) == 4  # 1 known + 3 unknown: each table bounded
    store.calls.clear()
    assert await cache("real") == Key("k", "standard")
    assert store.calls == []


async def test_concurrent_misses_share_one_lookup() -> None:
    release = asyncio.Event()
    calls: list[str] = []

    async def slow(plaintext: str) -> ApiClient | None:
        calls.append(plaintext)
        await release.wait()
        return Key("k", "standard") if plaintext == "s" else None

    cache = CachedKeyLookup(slow, clock=Clock(0.0))
    waiting = [asyncio.ensure_future(cache(p)) for p in ["s"] * 10 + ["t"] * 5]
    await asyncio.sleep(0)
    # One waiter giving up does not cancel the lookup for the others.
    waiting[0].cancel()
    release.set()
    results = await asyncio.gather(*waiting[1:])
    assert calls == ["s", "t"]
    assert results == [Key("k", "standard")] * 9 + [None] * 5
    assert waiting[0].cancelled()


async def test_cache_holds_digests_never_the_plaintext() -> None:
    secret = "fk_live_0123456789abcdef"
    cache = CachedKeyLookup(Lookup({secret: Key("k", "standard")}), clock=Clock(0.0))
    await cache(secret)
    await cache("unknown-secret-value")

    def strings(obj: object, depth: int = 0) -> Iterable[object]:
        if depth > 4:
            return
        yield obj
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from strings(k, depth + 1)
                yield from strings(v, depth + 1)
        elif isinstance(obj, tuple | list):
            for v in obj:
                yield from strings(v, depth + 1)

    tables = [v for k, v in vars(cache).items() if k != "_lookup"]
    seen = list(strings(tables))
    assert secret not in seen
    assert "unknown-secret-value" not in seen
    assert hashlib.sha256(secret.encode()).digest() in seen


def test_cache_arguments() -> None:
    store = Lookup({})
    for kwargs in (
        {"ttl_s": 0},
        {"ttl_s": math.inf},
        {"negative_ttl_s": -1},
        {"max_entries": 0},
        {"max_entries": 1.5},
    ):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            CachedKeyLookup(store, **kwargs)


async def test_the_middleware_with_the_cache_asks_the_store_once() -> None:
    store = Lookup({"s": Key("k", "standard")})
    mw, _, _ = make(lookup=CachedKeyLookup(store))
    assert await statuses(mw, 20, key="s") == [200] * 20
    assert await statuses(mw, 3, key="bad") == [401] * 3
    assert store.calls == ["s", "bad"]


# --- settings ---------------------------------------------------------------------------


def test_default_settings() -> None:
    s = RateLimitSettings()
    assert s.enabled is True
    assert dict(s.plans) == {
        "anonymous": RatePlan(20, 40),
        "standard": RatePlan(50, 100),
        "partner": RatePlan(200, 400),
        "internal": RatePlan(2000, 4000),
        "auth": RatePlan(1, 10),
    }
    assert s.anonymous_plan == "anonymous"
    assert dict(s.route_plans) == {
        "/v1/auth/sign-in": "auth",
        "/v1/customers": "auth",
        "/oauth/token": "auth",
    }
    assert s.trusted_proxies == frozenset()
    assert s.exempt_paths == frozenset({"/healthz", "/readyz"})


def test_settings_copy_their_mappings() -> None:
    plans = {"anonymous": RatePlan(1, 1)}
    s = RateLimitSettings(plans=plans, route_plans={})
    plans["anonymous"] = RatePlan(1000, 1000)
    assert s.plans["anonymous"] == RatePlan(1, 1)
    with pytest.raises(TypeError):
        s.plans["x"] = RatePlan(1, 1)  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"anonymous_plan": "nobody"}, "anonymous_plan 'nobody' is not in plans"),
        ({"route_plans": {"/x": "gold"}}, r"route_plans\['/x'\] names unknown plan 'gold'"),
        ({"route_plans": {"x": "auth"}}, "must start with '/'"),
        ({"plans": {"anonymous": RatePlan(1, 1), "a b": RatePlan(1, 1)}}, "plan name 'a b'"),
        ({"plans": {"anonymous": (1, 1)}}, "must be a RatePlan"),
        ({"trusted_proxies": frozenset({"10.0.0.0/33"})}, "not an IP or CIDR"),
        ({"trusted_proxies": frozenset({"proxy.internal"})}, "not an IP or CIDR"),
        ({"trusted_proxies": "10.0.0.1"}, "not a string"),
        ({"exempt_paths": "/healthz"}, "not a string"),
        ({"enabled": "yes"}, "enabled must be a bool"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    if "plans" in kwargs:
        kwargs = {"route_plans": {}, **kwargs}
    with pytest.raises(ValueError, match=message):
        RateLimitSettings(**kwargs)


def test_settings_parse_trusted_proxies() -> None:
    s = RateLimitSettings(trusted_proxies=frozenset({"10.0.0.0/8", "2001:db8::1"}))
    assert {str(n) for n in s.trusted_networks} == {"10.0.0.0/8", "2001:db8::1/128"}


# --- accuracy and the window property ---------------------------------------------------


async def test_accuracy_at_ten_times_the_rate_is_exact() -> None:
    """The Redis accuracy test's scenario with a fake clock: a key offered 10x its rate for
    3 s is admitted exactly burst + floor(rate * elapsed); others are unaffected."""
    rate, burst, duration = 40, 10, 3.0
    plans = {
        "anonymous": RatePlan(20, 40),
        "standard": RatePlan(50, 100),
        "hot": RatePlan(rate, burst),
    }
    keys = {"hot": Key("hot", "hot"), "calm": Key("calm", "standard")}
    mw, _, clock = make(plans, keys=keys)
    start = clock.now
    # Three senders merged in time order: hot at 10x, calm and anonymous at half their rate.
    sends: list[tuple[float, str | None]] = [
        (k / (10 * rate), "hot") for k in range(int(duration * 10 * rate) + 1)
    ]
    sends += [(k / 25, "calm") for k in range(int(duration * 25) + 1)]
    sends += [(k / 10, None) for k in range(int(duration * 10) + 1)]
    admitted = {"hot": 0, "calm": 0, None: 0}
    sent = {"hot": 0, "calm": 0, None: 0}
    for at, who in sorted(sends, key=lambda s: s[0]):
        clock.now = start + at
        sent[who] += 1
        answer = await call(mw, key=who, peer="203.0.113.77" if who is None else PEER)
        assert answer.status in (200, 429)
        admitted[who] += answer.status == 200
    elapsed = duration
    expected = burst + math.floor(rate * elapsed)
    print(f"in-process: admitted {admitted['hot']} of {sent['hot']} (expected {expected})")
    assert admitted["hot"] == expected, "admitted == burst + floor(rate * elapsed)"
    assert admitted["calm"] == sent["calm"]
    assert admitted[None] == sent[None]


@settings(max_examples=150, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=200, allow_nan=False),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0, max_value=0.3, allow_nan=False), max_size=120),
)
def test_no_window_admits_more_than_rate_times_width_plus_burst(
    rate: float, burst: int, gaps: list[float]
) -> None:
    plan = RatePlan(rate, burst)
    mw, _, clock = make({"anonymous": RatePlan(1, 1), "p": plan}, keys={"s": Key("k", "p")})

    async def drive() -> list[float]:
        admitted = []
        for gap in gaps:
            clock.now += gap
            if (await call(mw, key="s")).status == 200:
                admitted.append(clock.now)
        return admitted

    admitted = asyncio.run(drive())
    # The tightest window holding admissions i..j is [a_i, a_j]; EPSILON_S per admission
    # is the limiter's float allowance.
    for i in range(len(admitted)):
        for j in range(i, len(admitted)):
            width = admitted[j] - admitted[i]
            assert j - i + 1 <= rate * (width + EPSILON_S * (j - i + 1)) + burst


async def test_guessing_keys_spends_the_ip_anonymous_budget() -> None:
    # Unknown keys are 401 until the guesser's IP has used its anonymous burst; then 429.
    limiter, echo, _ = make({"anonymous": RatePlan(1.0, 3)}, keys={})
    statuses = [(await call(limiter, key=f"fk_guess{n}")).status for n in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    assert echo.calls == 0
    # Another IP is not affected.
    assert (await call(limiter, key="fk_other", peer="203.0.113.9")).status == 401
