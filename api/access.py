"""Who may call what: one declarative table of every route, and the middleware that holds
every request to it.

Each :class:`Rule` names a method and path template, the callers allowed (``anonymous``
and/or the token roles), the scope a token must carry, and the object-level check the
handler applies (:class:`Owner`: whose cart, order, product, shipment or key it is). The
:class:`AccessControl` middleware runs in front of FastAPI *and* the fast path, so a route
added later cannot bypass it: a request that matches no rule is refused (404, or 405 when
only the method is wrong) before any handler runs, and a test fails until the new route
has a row here (``tests/security/test_permission_matrix.py`` is generated from this table).

Authentication: ``Authorization: Bearer <access token>`` (an EdDSA JWT, see
``actors/identity/tokens.py``). No header: the anonymous caller. A header that is not a
valid access token: 401, even on a public route, because the client meant to sign in and
must learn that it did not. Not allowed: 401 for the anonymous caller (with
``WWW-Authenticate``), 403 for a token of another role or without the scope. The
verified caller is put in ``scope["state"]["principal"]`` for handlers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from actors.domain.errors import DomainError, ErrorCode
from actors.identity.tokens import AccessClaims, Role, TokenService
from api import problems

ANONYMOUS: Final = "anonymous"
CALLERS: Final = (ANONYMOUS, *(role.value for role in Role))
STATE_KEY: Final = "principal"
VERIFIED_CACHE_SIZE = 10_000


class Owner(StrEnum):
    """The object-level check a route's handler applies after this table let it in."""

    NONE = "none"  # public data (catalog, prices, stock, search)
    CART = "cart"  # a customer's cart: that customer; a guest cart: whoever holds its id
    ORDER = "order"  # a customer's order: that customer; a guest order: its id's holder
    SELF = "self"  # the caller's own account, keys or orders
    MERCHANT = "merchant"  # the merchant's own products and orders (another's: 404)
    CARRIER = "carrier"  # the logistics operator's own shipments (another's: 404)
    SIGNATURE = "signature"  # no token: the body's HMAC signature is verified instead


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a token's role, subject and scopes, or the anonymous caller."""

    role: Role | None
    subject: str | None
    scopes: frozenset[str]
    client_id: str | None = None

    @property
    def name(self) -> str:
        """``anonymous`` or the role's value, as in :attr:`Rule.allow`."""
        return ANONYMOUS if self.role is None else self.role.value

    @property
    def customer(self) -> str | None:
        """The customer id when a customer is signed in; None otherwise."""
        return self.subject if self.role is Role.CUSTOMER else None

    @classmethod
    def of(cls, claims: AccessClaims) -> Principal:
        client = claims.extra.get("client_id")
        return cls(
            claims.role, claims.subject, claims.scopes, client if isinstance(client, str) else None
        )


NOBODY: Final = Principal(None, None, frozenset())


@dataclass(frozen=True, slots=True)
class Rule:
    method: str
    path: str  # a template: "/v1/carts/{cart_id}"
    allow: frozenset[str]  # ANONYMOUS and/or Role values
    scope: str | None = None  # a token must carry it (the anonymous caller has none)
    owner: Owner = Owner.NONE
    summary: str = ""
    # OAuth2 client authentication may come as ``Authorization: Basic`` (RFC 6749 §2.3.1):
    # on these routes a Basic header is the endpoint's business, not a bad bearer token.
    basic_auth: bool = False

    def __post_init__(self) -> None:
        unknown = self.allow - set(CALLERS)
        if unknown or not self.allow:
            raise ValueError(f"{self.method} {self.path}: unknown callers {sorted(unknown)}")
        if not self.path.startswith("/"):
            raise ValueError(f"{self.path!r} must start with /")

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))


def _callers(*names: str | Role) -> frozenset[str]:
    return frozenset(n.value if isinstance(n, Role) else n for n in names)


EVERYONE = _callers(ANONYMOUS, *Role)
SHOPPER = _callers(ANONYMOUS, Role.CUSTOMER)
CUSTOMER = _callers(Role.CUSTOMER)
MERCHANT = _callers(Role.MERCHANT)
LOGISTICS = _callers(Role.LOGISTICS)
ADMIN = _callers(Role.ADMIN)
NO_TOKEN = _callers(ANONYMOUS)


def _r(
    method: str,
    path: str,
    allow: frozenset[str],
    scope: str | None = None,
    owner: Owner = Owner.NONE,
    summary: str = "",
    *,
    basic_auth: bool = False,
) -> Rule:
    return Rule(method, path, allow, scope, owner, summary, basic_auth)


# Every route Feira serves. Keep it in the order of the API reference in README.md.
ROUTES: Final[tuple[Rule, ...]] = (
    # operations and documentation
    _r("GET", "/healthz", EVERYONE, summary="process alive"),
    _r("GET", "/ping", EVERYONE, summary="the cheapest answer through the whole edge"),
    _r("GET", "/readyz", EVERYONE, summary="stores reachable, shards ready"),
    _r("GET", "/openapi.json", EVERYONE),
    _r("GET", "/docs", EVERYONE),
    _r("GET", "/docs/oauth2-redirect", EVERYONE),
    _r("GET", "/redoc", EVERYONE),
    # identity
    _r("GET", "/.well-known/jwks.json", EVERYONE, summary="public signing keys"),
    _r(
        "POST",
        "/oauth/token",
        EVERYONE,
        summary="client credentials or refresh",
        basic_auth=True,
    ),
    _r(
        "POST",
        "/oauth/revoke",
        EVERYONE,
        summary="sign out: revoke a refresh token",
        basic_auth=True,
    ),
    _r("POST", "/v1/customers", NO_TOKEN, summary="sign up"),
    _r("POST", "/v1/auth/sign-in", SHOPPER, summary="sign in, merging a guest cart"),
    _r("GET", "/v1/me", CUSTOMER, "orders:read", Owner.SELF),
    _r("GET", "/v1/me/orders", CUSTOMER, "orders:read", Owner.SELF),
    # catalog, search and the product pages: public
    _r("GET", "/v1/products", EVERYONE),
    _r("GET", "/v1/products/{product_id}", EVERYONE),
    _r("GET", "/v1/prices/{sku}", EVERYONE),
    _r("GET", "/v1/stock/{sku}", EVERYONE),
    _r("GET", "/v1/stock", EVERYONE),
    # internal services: stock holds outside checkout (gRPC Reserve/Release over HTTP)
    _r("POST", "/v1/stock/{sku}/reservations", ADMIN, "admin"),
    _r("DELETE", "/v1/stock/{sku}/reservations/{reservation_id}", ADMIN, "admin"),
    _r("GET", "/v1/search", EVERYONE),
    _r("GET", "/bff/web/product/{product_id}", EVERYONE),
    _r("GET", "/bff/mobile/product/{product_id}", EVERYONE),
    _r("GET", "/graphql", EVERYONE, summary="GraphiQL (development only)"),
    _r("POST", "/graphql", EVERYONE, summary="catalog queries (read-only)"),
    # carts and checkout: guests and signed-in customers
    _r("POST", "/v1/carts", SHOPPER, "cart", Owner.SELF),
    _r("GET", "/v1/carts/{cart_id}", SHOPPER, "cart", Owner.CART),
    _r("POST", "/v1/carts/{cart_id}/items", SHOPPER, "cart", Owner.CART),
    _r("PATCH", "/v1/carts/{cart_id}/items/{sku}", SHOPPER, "cart", Owner.CART),
    _r("DELETE", "/v1/carts/{cart_id}/items/{sku}", SHOPPER, "cart", Owner.CART),
    _r("POST", "/v1/checkout", SHOPPER, "checkout", Owner.CART),
    _r("GET", "/v1/orders/{order_id}", SHOPPER, "orders:read", Owner.ORDER),
    # merchants: their own catalog, prices, stock, orders and API keys
    _r("GET", "/v1/merchant/products", MERCHANT, "catalog:write", Owner.MERCHANT),
    _r("POST", "/v1/merchant/products", MERCHANT, "catalog:write", Owner.MERCHANT),
    _r("POST", "/v1/merchant/products/import", MERCHANT, "catalog:write", Owner.MERCHANT),
    _r("GET", "/v1/merchant/products/{product_id}", MERCHANT, "catalog:write", Owner.MERCHANT),
    _r("PATCH", "/v1/merchant/products/{product_id}", MERCHANT, "catalog:write", Owner.MERCHANT),
    _r(
        "POST",
        "/v1/merchant/products/{product_id}/publish",
        MERCHANT,
        "catalog:write",
        Owner.MERCHANT,
    ),
    _r(
        "POST",
        "/v1/merchant/products/{product_id}/archive",
        MERCHANT,
        "catalog:write",
        Owner.MERCHANT,
    ),
    _r("PUT", "/v1/merchant/prices/{sku}", MERCHANT, "catalog:write", Owner.MERCHANT),
    _r("PUT", "/v1/merchant/inventory/{sku}", MERCHANT, "catalog:write", Owner.MERCHANT),
    _r("GET", "/v1/merchant/orders", MERCHANT, "orders:read", Owner.MERCHANT),
    _r(
        "POST",
        "/v1/merchant/orders/{order_id}/refund",
        MERCHANT,
        "orders:write",
        Owner.MERCHANT,
    ),
    _r("GET", "/v1/merchant/api-keys", MERCHANT, "api_keys", Owner.SELF),
    _r("POST", "/v1/merchant/api-keys", MERCHANT, "api_keys", Owner.SELF),
    _r("DELETE", "/v1/merchant/api-keys/{key_id}", MERCHANT, "api_keys", Owner.SELF),
    # logistics operators: their own shipments
    _r("GET", "/v1/logistics/shipments", LOGISTICS, "shipments:read", Owner.CARRIER),
    _r(
        "POST",
        "/v1/logistics/shipments/{order_id}/events",
        LOGISTICS,
        "shipments:write",
        Owner.CARRIER,
    ),
    # payment processors: signed webhooks, no token
    _r("POST", "/v1/payments/webhooks/{provider}", NO_TOKEN, owner=Owner.SIGNATURE),
    # administrators: every API key
    _r("GET", "/v1/admin/api-keys", ADMIN, "admin"),
    _r("POST", "/v1/admin/api-keys", ADMIN, "admin"),
    _r("DELETE", "/v1/admin/api-keys/{key_id}", ADMIN, "admin"),
)


class RouteTable:
    """Finds the rule for a request by segment comparison: no regex, a dict lookup by
    segment count and a few string compares on the hot path."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        self._by_length: dict[int, list[Rule]] = {}
        seen: set[tuple[str, str]] = set()
        for rule in self.rules:
            key = (rule.method, rule.path)
            if key in seen:
                raise ValueError(f"duplicate rule {rule.method} {rule.path}")
            seen.add(key)
            self._by_length.setdefault(len(rule.segments), []).append(rule)

    def find(self, method: str, path: str) -> tuple[Rule | None, tuple[str, ...]]:
        """The rule for (method, path), and the methods the path allows (for a 405)."""
        parts = path.split("/")
        if method == "HEAD":
            method = "GET"
        allowed: list[str] = []
        for rule in self._by_length.get(len(parts), ()):
            if _matches(rule.segments, parts):
                if rule.method == method:
                    return rule, ()
                allowed.append(rule.method)
        return None, tuple(allowed)


def _matches(template: tuple[str, ...], parts: list[str]) -> bool:
    for fixed, part in zip(template, parts, strict=True):
        if fixed.startswith("{"):
            if not part:
                return False
        elif fixed != part:
            return False
    return True


TABLE: Final = RouteTable(ROUTES)


class VerifiedTokens:
    """Access tokens already verified by this replica, until they expire: a shopper sends
    the same token with every request, and an Ed25519 check costs more than the route."""

    def __init__(
        self,
        tokens: TokenService,
        size: int = VERIFIED_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tokens = tokens
        self._size = size
        self._clock = clock
        self._seen: dict[str, tuple[Principal, float]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def principal(self, token: str) -> Principal:
        hit = self._seen.get(token)
        if hit is not None and self._clock() < hit[1]:
            return hit[0]
        claims = self._tokens.verify_access(token)  # raises UNAUTHENTICATED
        principal = Principal.of(claims)
        if len(self._seen) >= self._size:
            self._seen.clear()  # crude, bounded; a miss only costs one verification
        # Expire with the token (no leeway here: a cached entry never outlives it).
        self._seen[token] = (principal, claims.expires_at)
        return principal


def route_path(scope: Scope) -> str:
    """The request path as the routes see it: without the mount prefix Serve may set."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def bearer(scope: Scope) -> str | None:
    """The bearer token of a request; "" for an Authorization header of another form."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else ""
    return None


def principal_of(scope: Scope) -> Principal:
    """The caller AccessControl put on the request (the anonymous one if none)."""
    state = scope.get("state")
    found = state.get(STATE_KEY) if isinstance(state, dict) else None
    return found if isinstance(found, Principal) else NOBODY


def decide(rule: Rule, principal: Principal) -> DomainError | None:
    """None when ``principal`` may call ``rule``'s route; the refusal otherwise."""
    if principal.name not in rule.allow:
        if principal.role is None:
            return DomainError(ErrorCode.UNAUTHENTICATED, "this route needs a bearer token")
        return DomainError(
            ErrorCode.FORBIDDEN, f"a {principal.name} token may not call {rule.method} {rule.path}"
        )
    if principal.role is not None and rule.scope and rule.scope not in principal.scopes:
        return DomainError(
            ErrorCode.FORBIDDEN, f"the token lacks the {rule.scope!r} scope", scope=rule.scope
        )
    return None


class AccessControl:
    """ASGI middleware: authenticate, find the route's rule, refuse or let through."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: TokenService | None,
        table: RouteTable = TABLE,
        token_cache_size: int = VERIFIED_CACHE_SIZE,
    ) -> None:
        self.app = app
        self.table = table
        self._verified = VerifiedTokens(tokens, token_cache_size) if tokens is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        rule, methods = self.table.find(scope["method"], path)
        if rule is None:
            await _no_route(methods, path)(scope, receive, send)
            return
        try:
            principal = self._authenticate(scope, rule)
        except DomainError as error:
            await _refuse(error, path)(scope, receive, send)
            return
        refusal = decide(rule, principal)
        if refusal is not None:
            await _refuse(refusal, path)(scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = principal
        await self.app(scope, receive, send)

    def _authenticate(self, scope: Scope, rule: Rule) -> Principal:
        token = bearer(scope)
        if token is None or (not token and rule.basic_auth):
            return NOBODY
        if not token:
            raise DomainError(ErrorCode.UNAUTHENTICATED, "send 'Authorization: Bearer <token>'")
        if self._verified is None:
            raise DomainError(ErrorCode.UNAUTHENTICATED, "tokens are not accepted here")
        return self._verified.principal(token)


def _refuse(error: DomainError, path: str) -> Response:
    response = problems.domain_problem(error, path)
    if error.code is ErrorCode.UNAUTHENTICATED:
        # RFC 6750 §3: tell the client which scheme to use.
        response.headers["WWW-Authenticate"] = 'Bearer realm="feira"'
    return response


def _no_route(methods: tuple[str, ...], path: str) -> Response:
    if methods:
        allow = ", ".join(sorted(set(methods)))
        return problems.problem(
            405, "method_not_allowed", f"{path} allows {allow}", path, {"Allow": allow}
        )
    return problems.problem(404, "not_found", f"no route {path}", path)
