"""Rate limiting at the HTTP edge: per API key (by the key's plan) and per client IP.

:class:`RateLimit` is ASGI middleware. For each HTTP request (websocket, lifespan and the
exempt paths pass through untouched) it picks one bucket:

* ``X-Api-Key`` present: the key is looked up; unknown or revoked answers 401
  ``unauthenticated`` without reaching the app, a known key is limited in bucket
  ``key:<key_id>`` by its plan, and its id is left in ``scope["state"]["api_key_id"]``
  (read it with :func:`scope_client`; Starlette's ``request.state.api_key_id`` is the same).
* no key: bucket ``ip:<client ip>`` with the anonymous plan.

A route listed in ``route_plans`` (sign-in, sign-up, token issuance: where guessing is the
threat) is limited again, per client IP, in ``route:<path>:ip:<ip>``, whoever the caller.
A refusal answers 429 ``rate_limited`` with ``Retry-After``, ``RateLimit-Policy`` and
``RateLimit``; an admitted request's response gets ``RateLimit-Policy`` and ``RateLimit``.
A limiter (or key store) that is unreachable answers 503 ``store_unavailable``.

Client IP: the ASGI peer address, unless the peer is a trusted proxy, in which case the
right-most ``X-Forwarded-For`` hop that is not itself trusted: every hop right of it was
appended by a proxy we trust, anything left of it may have been written by the client.
IPv6 clients are bucketed by their /64: one host (one home router, one VM) normally owns a
whole /64 and can rotate through 2^64 addresses at will, so a per-address bucket would be
no limit at all. IPv4-mapped IPv6 peers (``::ffff:a.b.c.d``, from dual-stack sockets) count
as the IPv4 address they are.

:class:`CachedKeyLookup` keeps API-key answers in replica memory so that a key costs a store
round trip once per ``ttl_s``, not per request. The price: a revoked key keeps working on a
replica for up to ``ttl_s`` (30 s by default) after revocation, and a newly created key may
be refused for up to ``negative_ttl_s`` (5 s) if it was tried, unknown, just before.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors.domain.errors import ErrorCode
from actors.domain.rate_limit import Decision, RatePlan, headers
from api.problems import problem
from storage.errors import StoreUnavailable

log = logging.getLogger("feira.api.rate_limiting")

V = TypeVar("V")

API_KEY_HEADER = b"x-api-key"
FORWARDED_FOR_HEADER = b"x-forwarded-for"
STATE_KEY_ID = "api_key_id"
UNKNOWN_KEY = "unknown or revoked API key"
# RFC 9110 requires a challenge on every 401; there is no registered scheme for API keys.
API_KEY_CHALLENGE = 'ApiKey realm="feira", header="X-Api-Key"'
UNKNOWN_CLIENT = "unknown"  # no peer address (e.g. a unix socket): one shared bucket
IPV6_PREFIX = 64

_PLAN_NAME = re.compile(r"[A-Za-z0-9._-]+")  # what a RateLimit-Policy name may hold


class Limiter(Protocol):
    """What the middleware needs from a limiter; ``InProcessLimiter`` and
    ``RedisRateLimiter`` both are one."""

    async def check(
        self, key: str, plan: RatePlan, now: float | None = None, cost: int = 1
    ) -> Decision: ...


class ApiClient(Protocol):
    """What the middleware needs from an API key: its id (never the secret) and the name of
    its plan, one of ``RateLimitSettings.plans``."""

    @property
    def key_id(self) -> str: ...

    @property
    def plan(self) -> str: ...


# Given the plaintext X-Api-Key value, the key, or None when it is unknown or revoked.
KeyLookup = Callable[[str], Awaitable[ApiClient | None]]


# --- key lookup cache -------------------------------------------------------------------


class CachedKeyLookup:
    """A :data:`KeyLookup` in front of another, caching its answers in this replica.

    Known keys are kept ``ttl_s`` and unknown ones ``negative_ttl_s`` (0 turns negative
    caching off); so a revocation takes effect on every replica within ``ttl_s``. Entries
    are keyed by the SHA-256 of the plaintext: a heap dump shows no usable key.

    Known and unknown answers live in separate tables, each at most ``max_entries``
    (least recently used goes first): a flood of made-up keys can then only churn the
    unknown table, never push real keys out and turn every request into a store call.
    Concurrent misses of one key share a single call to ``lookup``. A lookup that raises
    is not cached; every caller waiting on it sees the error.
    """

    def __init__(
        self,
        lookup: KeyLookup,
        *,
        ttl_s: float = 30.0,
        max_entries: int = 10_000,
        negative_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(ttl_s) and ttl_s > 0):
            raise ValueError("ttl_s must be a finite number > 0")
        if not (math.isfinite(negative_ttl_s) and negative_ttl_s >= 0):
            raise ValueError("negative_ttl_s must be a finite number >= 0")
        if type(max_entries) is not int or max_entries < 1:
            raise ValueError("max_entries must be an integer >= 1")
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._known: dict[bytes, tuple[float, ApiClient]] = {}
        self._unknown: dict[bytes, float] = {}
        self._inflight: dict[bytes, asyncio.Task[ApiClient | None]] = {}

    def __len__(self) -> int:
        return len(self._known) + len(self._unknown)

    async def __call__(self, plaintext: str) -> ApiClient | None:
        digest = hashlib.sha256(plaintext.encode("utf-8", "surrogateescape")).digest()
        now = self._clock()
        known = self._known.pop(digest, None)
        if known is not None and known[0] > now:
            self._known[digest] = known  # re-inserted last: the dict is in LRU order
            return known[1]
        expires = self._unknown.pop(digest, None)
        if expires is not None and expires > now:
            self._unknown[digest] = expires
            return None
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._load(digest, plaintext))
            task.add_done_callback(_retrieve)
            self._inflight[digest] = task
        # Shielded: one waiter giving up (client gone) must not cancel the others' lookup.
        return await asyncio.shield(task)

    def invalidate(self, plaintext: str) -> None:
        """Forget one key here (e.g. this replica revoked it), so the next request asks."""
        digest = hashlib.sha256(plaintext.encode("utf-8", "surrogateescape")).digest()
        self._known.pop(digest, None)
        self._unknown.pop(digest, None)

    def clear(self) -> None:
        self._known.clear()
        self._unknown.clear()

    async def _load(self, digest: bytes, plaintext: str) -> ApiClient | None:
        try:
            found = await self._lookup(plaintext)
        finally:
            # Removed before any waiter resumes: a later miss starts a fresh lookup.
            self._inflight.pop(digest, None)
        now = self._clock()
        if found is not None:
            _put(self._known, digest, (now + self._ttl_s, found), self._max_entries)
        elif self._negative_ttl_s > 0:
            _put(self._unknown, digest, now + self._negative_ttl_s, self._max_entries)
        return found


def _put(table: dict[bytes, V], digest: bytes, value: V, max_entries: int) -> None:
    table.pop(digest, None)
    while len(table) >= max_entries:
        del table[next(iter(table))]
    table[digest] = value


def _retrieve(task: asyncio.Task[ApiClient | None]) -> None:
    # Every waiter may have gone (cancelled) before a failed lookup ends; reading the
    # exception here keeps asyncio from logging "exception was never retrieved".
    if not task.cancelled():
        task.exception()


# --- settings ---------------------------------------------------------------------------

DEFAULT_PLANS: Mapping[str, RatePlan] = MappingProxyType(
    {
        "anonymous": RatePlan(rate_per_s=20, burst=40),  # per client IP
        "standard": RatePlan(rate_per_s=50, burst=100),
        "partner": RatePlan(rate_per_s=200, burst=400),
        "internal": RatePlan(rate_per_s=2000, burst=4000),
        # Per client IP on routes where each request is a guess (passwords, secrets).
        "auth": RatePlan(rate_per_s=1, burst=10),
    }
)
DEFAULT_ROUTE_PLANS: Mapping[str, str] = MappingProxyType(
    {"/v1/auth/sign-in": "auth", "/v1/customers": "auth", "/oauth/token": "auth"}
)
DEFAULT_EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """Plans by name, which plan anonymous callers and which routes get, and whose
    ``X-Forwarded-For`` to believe. Mappings are copied read-only at construction; a plan
    name that ``plans`` does not define is refused then, not at the first request."""

    enabled: bool = True
    plans: Mapping[str, RatePlan] = field(default_factory=lambda: DEFAULT_PLANS)
    anonymous_plan: str = "anonymous"
    route_plans: Mapping[str, str] = field(default_factory=lambda: DEFAULT_ROUTE_PLANS)
    trusted_proxies: frozenset[str] = frozenset()
    exempt_paths: frozenset[str] = DEFAULT_EXEMPT_PATHS
    trusted_networks: tuple[Network, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError("enabled must be a bool")
        plans = dict(self.plans)
        for name, plan in plans.items():
            if not isinstance(name, str) or not _PLAN_NAME.fullmatch(name):
                raise ValueError(f"plan name {name!r} must be non-empty [A-Za-z0-9._-]")
            if not isinstance(plan, RatePlan):
                raise ValueError(f"plan {name!r} must be a RatePlan")
        if self.anonymous_plan not in plans:
            raise ValueError(f"anonymous_plan {self.anonymous_plan!r} is not in plans")
        routes = dict(self.route_plans)
        for path, name in routes.items():
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(f"route_plans path {path!r} must start with '/'")
            if name not in plans:
                raise ValueError(f"route_plans[{path!r}] names unknown plan {name!r}")
        networks: list[Network] = []
        proxies = _strings(self.trusted_proxies, "trusted_proxies")
        for entry in proxies:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"trusted_proxies entry {entry!r} is not an IP or CIDR") from exc
        exempt = _strings(self.exempt_paths, "exempt_paths")
        set_ = object.__setattr__  # frozen: the normalised copies are set once, here
        set_(self, "plans", MappingProxyType(plans))
        set_(self, "route_plans", MappingProxyType(routes))
        set_(self, "trusted_proxies", proxies)
        set_(self, "exempt_paths", exempt)
        set_(self, "trusted_networks", tuple(networks))


def _strings(values: Iterable[str], name: str) -> frozenset[str]:
    if isinstance(values, str):
        # A lone string would otherwise become a set of its characters.
        raise ValueError(f"{name} must be a collection of strings, not a string")
    out = frozenset(values)
    if not all(isinstance(v, str) for v in out):
        raise ValueError(f"{name} must hold strings")
    return out


# --- client addresses -------------------------------------------------------------------


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in an ``X-Forwarded-For`` hop or a peer host, ports and brackets
    removed; IPv4-mapped IPv6 as IPv4. None when it is not an address."""
    text = text.strip()
    if text.startswith("["):  # "[2001:db8::1]:443"
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # "203.0.113.5:1234"
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _bucket_of(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


@functools.lru_cache(maxsize=8192)
def _bucket_host(host: str) -> str:
    # A peer "host" that is no address (a test client's name, a unix socket path) is
    # server-given, not client-chosen, so it is safe to use as it is.
    ip = _parse_ip(host)
    return host if ip is None else _bucket_of(ip)


def _header(scope: Scope, name: bytes) -> bytes | None:
    # ASGI servers lowercase header names (Starlette relies on it too).
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def scope_client(scope: Scope) -> str | None:
    """The id of the API key this request was authenticated with, or None (anonymous, or
    the request did not go through :class:`RateLimit`)."""
    state = scope.get("state")
    if not isinstance(state, dict):
        return None
    key_id = state.get(STATE_KEY_ID)
    return key_id if isinstance(key_id, str) else None


# --- the middleware ---------------------------------------------------------------------


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class RateLimit:
    """Rate-limit every HTTP request (see the module docstring).

    ``key_lookup`` None means this deployment has no API keys: a request that presents
    one is refused 401 like any unknown key, so a credential is never silently ignored.
    ``clock``, when given, is passed to the limiter as ``now`` (tests; ``RedisRateLimiter``
    ignores it and uses Redis' clock). With ``settings.enabled`` False nothing is limited,
    but API keys are still checked and recorded: turning limits off must not turn a bad
    key into an anonymous caller.

    A key whose plan is not in ``settings.plans`` (the key store and the configuration
    disagree) is limited by the anonymous plan, in its own bucket, and logged.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: Limiter,
        settings: RateLimitSettings,
        key_lookup: KeyLookup | None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.settings = settings
        self.key_lookup = key_lookup
        self._clock = clock
        self._plans = settings.plans
        self._anonymous = (settings.anonymous_plan, settings.plans[settings.anonymous_plan])
        self._routes = {p: (n, settings.plans[n]) for p, n in settings.route_plans.items()}
        self._exempt = settings.exempt_paths
        self._networks = settings.trusted_networks
        self._misconfigured: set[str] = set()
        # Per instance: the answer depends on this instance's trusted networks.
        self._trusted = functools.lru_cache(maxsize=4096)(self._is_trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._exempt:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        raw_key = _header(scope, API_KEY_HEADER)
        client: ApiClient | None = None
        if raw_key is not None:
            try:
                client = await self._authenticate(raw_key)
            except StoreUnavailable as exc:
                await self._unavailable(scope, send, "API keys cannot be checked right now", exc)
                return
        # An unknown key is answered 401, but only once the guesser's IP has paid for the
        # attempt from its anonymous budget: a flood of made-up keys is throttled like any
        # anonymous flood, not answered (and looked up) at whatever rate it arrives.
        unknown_key = raw_key is not None and client is None
        if client is not None:
            scope.setdefault("state", {})[STATE_KEY_ID] = client.key_id
        if not self.settings.enabled:
            if unknown_key:
                await self._unknown_key(scope, send)
            else:
                await self.app(scope, receive, send)
            return
        ip: str | None = None
        if client is not None:
            bucket = f"key:{client.key_id}"
            name, plan = self._plan_of(client)
        else:
            ip = self._client_ip(scope)
            bucket = f"ip:{ip}"
            name, plan = self._anonymous
        now = None if self._clock is None else self._clock()
        route = self._routes.get(path)
        try:
            # The main bucket first: when the route refuses, a main-bucket token is lost;
            # the other way round a scarcer route token (1/s) would be.
            decision = await self.limiter.check(bucket, plan, now)
            if not decision.allowed:
                await self._refuse(scope, send, decision, plan, name)
                return
            if unknown_key:
                await self._unknown_key(scope, send)
                return
            extra: tuple[Decision, RatePlan, str] | None = None
            if route is not None:
                if ip is None:
                    ip = self._client_ip(scope)
                route_name, route_plan = route
                route_decision = await self.limiter.check(f"route:{path}:ip:{ip}", route_plan, now)
                if not route_decision.allowed:
                    await self._refuse(scope, send, route_decision, route_plan, route_name)
                    return
                extra = (route_decision, route_plan, route_name)
        except StoreUnavailable as exc:
            await self._unavailable(scope, send, "the rate limiter is unavailable", exc)
            return
        added = _allowed_headers(decision, plan, name, extra)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = list(message.get("headers", ()))
                present = {n.lower() for n, _ in out}
                out += [(n, v) for n, v in added if n not in present]
                message = {**message, "headers": out}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _authenticate(self, raw_key: bytes) -> ApiClient | None:
        if not raw_key or self.key_lookup is None:
            return None
        return await self.key_lookup(raw_key.decode("latin-1"))

    def _plan_of(self, client: ApiClient) -> tuple[str, RatePlan]:
        plan = self._plans.get(client.plan)
        if plan is not None:
            return client.plan, plan
        if client.plan not in self._misconfigured and len(self._misconfigured) < 1000:
            self._misconfigured.add(client.plan)  # logged once per plan name, not per request
            log.error(
                "API key %s has plan %r, which the rate-limit settings do not define; "
                "limiting it by the anonymous plan",
                client.key_id,
                client.plan,
            )
        return self._anonymous

    def _client_ip(self, scope: Scope) -> str:
        peer = scope.get("client")
        if not peer or not peer[0]:
            return UNKNOWN_CLIENT
        host: str = peer[0]
        if not self._networks or not self._trusted(host):
            return host if ":" not in host else _bucket_host(host)
        forwarded = [v for n, v in scope["headers"] if n == FORWARDED_FOR_HEADER]
        chosen = _bucket_host(host)
        if not forwarded:
            return chosen
        hops = b",".join(forwarded).decode("latin-1").split(",")
        for hop in reversed(hops):
            ip = _parse_ip(hop)
            if ip is None:
                # A trusted proxy writes only addresses: garbage here came from elsewhere,
                # so the nearest address we could vouch for is the one to use.
                break
            chosen = _bucket_of(ip)
            if not self._trusted(str(ip)):
                break
        return chosen

    def _is_trusted(self, host: str) -> bool:
        ip = _parse_ip(host)
        return ip is not None and any(ip in net for net in self._networks)

    async def _refuse(
        self, scope: Scope, send: Send, decision: Decision, plan: RatePlan, name: str
    ) -> None:
        out = headers(decision, plan, name)
        wait = out.get("Retry-After", "1")
        response = problem(
            429,
            ErrorCode.RATE_LIMITED.value,
            f"rate limit of plan {name!r} exceeded; retry in {wait} s",
            scope["path"],
            out,
            policy=name,
            retry_after_s=int(wait),
        )
        await response(scope, _no_receive, send)

    async def _unknown_key(self, scope: Scope, send: Send) -> None:
        response = problem(
            401,
            ErrorCode.UNAUTHENTICATED.value,
            UNKNOWN_KEY,
            scope["path"],
            {"WWW-Authenticate": API_KEY_CHALLENGE},
        )
        await response(scope, _no_receive, send)

    async def _unavailable(
        self, scope: Scope, send: Send, detail: str, exc: StoreUnavailable
    ) -> None:
        # No traceback: during an outage this fires on every request.
        log.warning("answering 503 on %s: %s: %s", scope["path"], detail, exc)
        response = problem(
            503,
            ErrorCode.STORE_UNAVAILABLE.value,
            f"{detail}; retry shortly",
            scope["path"],
            {"Retry-After": "1"},
        )
        await response(scope, _no_receive, send)


def _allowed_headers(
    decision: Decision,
    plan: RatePlan,
    name: str,
    extra: tuple[Decision, RatePlan, str] | None,
) -> list[tuple[bytes, bytes]]:
    main = headers(decision, plan, name)
    if extra is not None:
        # Both policies, as the list the ratelimit-headers draft allows.
        more = headers(*extra)
        for field_name, value in more.items():
            main[field_name] = f"{main[field_name]}, {value}" if field_name in main else value
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in main.items()]
