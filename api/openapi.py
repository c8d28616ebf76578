"""The OpenAPI document, made to tell the truth: FastAPI generates it from the routes, and
:func:`install_openapi` post-processes it once, in one place, with what the routes cannot
say for themselves because the ASGI stack in front of them answers it:

- errors: every answer Feira refuses with is ``application/problem+json`` (RFC 9457, see
  :mod:`api.problems`), described by the ``Problem`` schema. Each operation lists the
  error statuses it can really give: those of the edge (access control, WAF, card guard,
  rate limit) on every operation, plus its own (:data:`OPERATION_ERRORS`). FastAPI's
  default ``422 HTTPValidationError`` is replaced: Feira answers validation errors as a
  problem too.
- security: the ``bearerAuth`` (an EdDSA JWT), ``oauth2`` (client credentials at
  ``/oauth/token``, for API keys with a role) and ``apiKey`` (``X-Api-Key``: the
  application's rate plan) schemes, and per operation who may call it, from the route
  table :data:`api.access.ROUTES` (``{}``: anonymous callers too).
- rate limits: the ``RateLimit`` and ``RateLimit-Policy`` headers on answers, and
  ``Retry-After`` on a 429.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, Final

from fastapi import FastAPI

from actors.identity.accounts import DEFAULT_SCOPES
from api.access import ANONYMOUS, ROUTES, Rule
from api.problems import PROBLEM_BASE, PROBLEM_JSON, TITLES

PROBLEM: Final = "Problem"
FASTAPI_VALIDATION_DESCRIPTION: Final = "Validation Error"
BEARER: Final = "bearerAuth"
OAUTH2: Final = "oauth2"
API_KEY: Final = "apiKey"
TOKEN_URL: Final = "/oauth/token"
METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
BODY_METHODS: Final = frozenset({"post", "put", "patch"})
# Roles an API key may hold, and so obtain tokens for with client credentials.
KEY_ROLES: Final = frozenset(role.value for role in DEFAULT_SCOPES)

# What the edge may answer on any operation, before or instead of its handler:
# 401 a bearer token that is not valid (even on a public route) or an unknown X-Api-Key,
# 403 the WAF's verdict or a caller the route table refuses, 414/431 the WAF's URL and
# header limits, 422 a card number anywhere in the request (or input that does not match
# the schema), 429 the rate limit, 503 the rate limiter's store unreachable.
EDGE_ERRORS: Final = (401, 403, 414, 422, 429, 431, 503)
# ...and on an operation that takes a body: 400 a body that does not parse, 413 too
# large, 415 not JSON/form/NDJSON in UTF-8.
BODY_ERRORS: Final = (400, 413, 415)

# Each operation's own errors, from its handler (see api/problems.py STATUS for which
# error code is which status). 404 covers ``feature_disabled`` too: accounts, checkout
# and order processing are optional. 504: a shard did not answer in time.
OPERATION_ERRORS: Final[Mapping[tuple[str, str], tuple[int, ...]]] = {
    ("GET", "/healthz"): (),
    ("GET", "/ping"): (),
    ("GET", "/readyz"): (504,),
    ("GET", "/.well-known/jwks.json"): (404,),
    ("POST", "/oauth/token"): (400, 404),
    ("POST", "/oauth/revoke"): (400, 404),
    ("POST", "/v1/customers"): (400, 404, 409),
    ("POST", "/v1/auth/sign-in"): (400, 404, 409, 504),
    ("GET", "/v1/me"): (404,),
    ("GET", "/v1/me/orders"): (400, 404),
    ("GET", "/v1/products"): (400,),
    ("GET", "/v1/products/{product_id}"): (404,),
    ("GET", "/v1/prices/{sku}"): (404, 504),
    ("GET", "/v1/stock/{sku}"): (404, 504),
    ("GET", "/v1/stock"): (504,),
    ("POST", "/v1/stock/{sku}/reservations"): (404, 409, 504),
    ("DELETE", "/v1/stock/{sku}/reservations/{reservation_id}"): (404, 504),
    ("GET", "/v1/search"): (400,),
    ("GET", "/bff/web/product/{product_id}"): (404, 504),
    ("GET", "/bff/mobile/product/{product_id}"): (404, 504),
    ("GET", "/graphql"): (400, 404, 405),
    ("POST", "/graphql"): (400,),
    ("POST", "/v1/carts"): (504,),
    ("GET", "/v1/carts/{cart_id}"): (404, 504),
    ("POST", "/v1/carts/{cart_id}/items"): (400, 404, 409, 504),
    ("PATCH", "/v1/carts/{cart_id}/items/{sku}"): (400, 404, 409, 504),
    ("DELETE", "/v1/carts/{cart_id}/items/{sku}"): (400, 404, 409, 504),
    ("POST", "/v1/checkout"): (400, 402, 404, 409, 502, 504),
    ("GET", "/v1/orders/{order_id}"): (404,),
    ("GET", "/v1/merchant/products"): (400,),
    ("POST", "/v1/merchant/products"): (400, 409),
    ("POST", "/v1/merchant/products/import"): (400,),
    ("GET", "/v1/merchant/products/{product_id}"): (404,),
    ("PATCH", "/v1/merchant/products/{product_id}"): (400, 404, 409),
    ("POST", "/v1/merchant/products/{product_id}/publish"): (404, 409),
    ("POST", "/v1/merchant/products/{product_id}/archive"): (404, 409),
    ("PUT", "/v1/merchant/prices/{sku}"): (400, 404, 504),
    ("PUT", "/v1/merchant/inventory/{sku}"): (400, 404, 409, 504),
    ("GET", "/v1/merchant/orders"): (400, 404),
    ("POST", "/v1/merchant/orders/{order_id}/refund"): (404, 409, 502, 504),
    ("GET", "/v1/merchant/api-keys"): (404,),
    ("POST", "/v1/merchant/api-keys"): (400, 404),
    ("DELETE", "/v1/merchant/api-keys/{key_id}"): (404,),
    ("GET", "/v1/logistics/shipments"): (400, 404),
    ("POST", "/v1/logistics/shipments/{order_id}/events"): (404, 409),
    ("POST", "/v1/payments/webhooks/{provider}"): (400, 404, 409),
    ("GET", "/v1/admin/api-keys"): (404,),
    ("POST", "/v1/admin/api-keys"): (400, 404),
    ("DELETE", "/v1/admin/api-keys/{key_id}"): (404,),
}

# GraphQL answers its own transport errors as ``{"errors": [...]}`` in application/json
# (GraphQL over HTTP), not as problems; the edge in front of it still answers problems.
GRAPHQL_PATH: Final = "/graphql"
GRAPHQL_STATUSES: Final = frozenset({400, 404, 405})
GRAPHQL_ERRORS_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["errors"],
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["message"],
                "properties": {
                    "message": {"type": "string"},
                    "extensions": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}},
                    },
                },
            },
        },
        "data": {"type": "null"},
    },
}

GRAPHQL_RESULT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "the data asked for; field errors, if any, next to it",
    "properties": {
        "data": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        "errors": GRAPHQL_ERRORS_SCHEMA["properties"]["errors"],
        "extensions": {"type": "object"},
    },
}
# The GraphQL router (strawberry) documents neither its query parameters nor its body.
GRAPHQL_GET_PARAMETERS: Final[list[dict[str, Any]]] = [
    {
        "name": "query",
        "in": "query",
        "required": True,
        "description": "a GraphQL query (mutations only by POST)",
        "schema": {"type": "string"},
    },
    {
        "name": "variables",
        "in": "query",
        "required": False,
        "description": "the variables, a JSON object",
        "schema": {"type": "string"},
    },
    {"name": "operationName", "in": "query", "required": False, "schema": {"type": "string"}},
]
GRAPHQL_POST_BODY: Final[dict[str, Any]] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["query"],
                "properties": {
                    "query": {"type": "string"},
                    "variables": {"anyOf": [{"type": "object"}, {"type": "null"}]},
                    "operationName": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
            },
            "example": {"query": "{ products(first: 2) { nodes { id title } } }"},
        }
    },
}


def _document_graphql(paths: dict[str, Any]) -> None:
    item = paths.get(GRAPHQL_PATH)
    if not isinstance(item, dict):
        return
    get, post = item.get("get"), item.get("post")
    if isinstance(get, dict):
        get.setdefault("parameters", copy.deepcopy(GRAPHQL_GET_PARAMETERS))
    if isinstance(post, dict):
        post.setdefault("requestBody", copy.deepcopy(GRAPHQL_POST_BODY))
    for operation in (get, post):
        if isinstance(operation, dict):
            ok = operation.setdefault("responses", {}).setdefault("200", {})
            ok["description"] = "executed (field errors, if any, next to the data)"
            ok["content"] = {"application/json": {"schema": GRAPHQL_RESULT_SCHEMA}}


PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "title": PROBLEM,
    "type": "object",
    "description": (
        "An error, as RFC 9457 problem details (application/problem+json). `code` is the "
        "stable machine-readable error code; other members (`errors`, `sku`, `order_id`, "
        "`retry_after_s`, RFC 6749's `error`...) depend on the code."
    ),
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {
            "type": "string",
            "description": f"{PROBLEM_BASE}<code>",
            "pattern": "^" + PROBLEM_BASE.replace(".", "\\.") + "[a-z0-9_]+$",
        },
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "code": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "the request path"},
        "errors": {
            "type": "array",
            "description": "validation errors: where (`loc`) and what (`msg`)",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

# Headers: referenced from components.headers.
RATE_LIMIT_HEADERS: Final[dict[str, dict[str, Any]]] = {
    "RateLimit": {
        "description": "the remaining quota and when it resets (when rate limiting is on)",
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": "the plan's quota and window (when rate limiting is on)",
        "schema": {"type": "string"},
    },
}
HEADERS: Final[dict[str, dict[str, Any]]] = {
    **RATE_LIMIT_HEADERS,
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "WWW-Authenticate": {
        "description": "the scheme to authenticate with (RFC 6750)",
        "required": True,
        "schema": {"type": "string"},
    },
    "Allow": {
        "description": "the methods the path allows",
        "required": True,
        "schema": {"type": "string"},
    },
}
# Answers that point at what they made: (method, path) -> (status, always sent).
LOCATIONS: Final[Mapping[tuple[str, str], tuple[str, bool]]] = {
    ("POST", "/v1/carts"): ("201", True),
    ("POST", "/v1/customers"): ("201", True),
    ("POST", "/v1/merchant/products"): ("201", True),
    ("POST", "/v1/checkout"): ("202", False),
}
# Headers each problem status carries (required ones must be on every such answer).
STATUS_HEADERS: Final[Mapping[int, tuple[str, ...]]] = {
    401: ("WWW-Authenticate",),
    405: ("Allow",),
    429: ("Retry-After", *RATE_LIMIT_HEADERS),
}
DESCRIPTIONS: Final[Mapping[int, str]] = {
    400: "Bad request: invalid argument, OAuth2 refusal, missing Idempotency-Key",
    401: "No valid credentials: a bad bearer token, an unknown API key, none where needed",
    402: "Payment declined",
    403: "Refused: the caller's role or scope, or the WAF",
    404: "Not found (another owner's object is not found too), or the feature is disabled",
    405: "Method not allowed",
    409: "Conflict with the current state",
    413: "Request body too large",
    414: "URL too long",
    415: "Unsupported request media type or charset",
    422: "Input that does not match the schema, a rule of the domain, or holds card data",
    429: "Rate limit exceeded",
    431: "Request headers too large",
    502: "The payment provider failed",
    503: "A store or shard is unavailable; retry",
    504: "A shard or the payment provider did not answer in time",
}


def problem_response_name(status: int) -> str:
    return f"{PROBLEM}{status}"


def _problem_response(status: int) -> dict[str, Any]:
    """A response component: a Problem whose ``status`` member is the HTTP status."""
    schema = {
        "allOf": [{"$ref": f"#/components/schemas/{PROBLEM}"}],
        "properties": {"status": {"const": status}},
    }
    response: dict[str, Any] = {
        "description": DESCRIPTIONS.get(status, TITLES.get(status, "Error")),
        "content": {PROBLEM_JSON: {"schema": schema}},
    }
    names = STATUS_HEADERS.get(status, ())
    if names:
        response["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in names}
    return response


def operation_errors(method: str, path: str, has_body: bool) -> tuple[int, ...]:
    """Every error status the operation can answer, sorted."""
    own = OPERATION_ERRORS.get((method.upper(), path))
    if own is None:
        raise KeyError(f"{method.upper()} {path}: no entry in api.openapi.OPERATION_ERRORS")
    statuses = {*EDGE_ERRORS, *own}
    if has_body or method.lower() in BODY_METHODS:
        statuses.update(BODY_ERRORS)
    return tuple(sorted(statuses))


def security_of(rule: Rule) -> list[dict[str, list[str]]]:
    """The OpenAPI security requirements of a route: alternatives, ``{}`` for anonymous.

    ``bearerAuth`` lists the roles allowed (OpenAPI 3.1: role names for non-OAuth2
    schemes); ``oauth2`` the scope its token must carry, for the roles an API key may
    have. An X-Api-Key may come with any of them: it picks the rate plan, it never
    authorises on its own.
    """
    roles = sorted(rule.allow - {ANONYMOUS})
    scopes = [rule.scope] if rule.scope else []
    options: list[dict[str, list[str]]] = []
    if ANONYMOUS in rule.allow:
        options += [{}, {API_KEY: []}]
    if roles:
        options += [{BEARER: roles}, {BEARER: roles, API_KEY: []}]
    if KEY_ROLES & set(roles):
        options += [{OAUTH2: scopes}, {OAUTH2: scopes, API_KEY: []}]
    return options


def security_schemes() -> dict[str, Any]:
    # The scopes an API key's token may hold: those of the key roles (customers sign in).
    holders: dict[str, list[str]] = {}
    for role, scopes in DEFAULT_SCOPES.items():
        for scope in scopes:
            holders.setdefault(scope, []).append(role.value)
    return {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "An access token (EdDSA JWT): a customer's from sign-in or the refresh "
                "grant, an application's from client credentials. The requirement lists "
                "the roles allowed."
            ),
        },
        OAUTH2: {
            "type": "oauth2",
            "description": "Client credentials of an API key that has a role.",
            "flows": {
                "clientCredentials": {
                    "tokenUrl": TOKEN_URL,
                    "scopes": {
                        scope: f"held by: {', '.join(roles)}"
                        for scope, roles in sorted(holders.items())
                    },
                }
            },
        },
        API_KEY: {
            "type": "apiKey",
            "in": "header",
            "name": "X-Api-Key",
            "description": (
                "Identifies the application for its rate plan; never authorises on its "
                "own. An unknown or revoked key is 401."
            ),
        },
    }


def _success_headers(response: dict[str, Any]) -> None:
    headers = response.setdefault("headers", {})
    for name in RATE_LIMIT_HEADERS:
        headers.setdefault(name, {"$ref": f"#/components/headers/{name}"})


def _operations(paths: Mapping[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for path, item in paths.items():
        for method in METHODS:
            operation = item.get(method)
            if isinstance(operation, dict):
                yield method, path, operation


def _uses(node: Any, ref: str) -> bool:
    if isinstance(node, dict):
        return node.get("$ref") == ref or any(_uses(v, ref) for v in node.values())
    if isinstance(node, list):
        return any(_uses(v, ref) for v in node)
    return False


def post_process(document: dict[str, Any], rules: Iterable[Rule] = ROUTES) -> dict[str, Any]:
    """A copy of FastAPI's ``document`` with problems, security and rate-limit headers."""
    doc = copy.deepcopy(document)
    by_route = {(rule.method, rule.path): rule for rule in rules}
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas[PROBLEM] = copy.deepcopy(PROBLEM_SCHEMA)
    components["headers"] = copy.deepcopy(HEADERS)
    components["securitySchemes"] = security_schemes()
    responses = components.setdefault("responses", {})
    _document_graphql(doc.get("paths", {}))
    for method, path, operation in _operations(doc.get("paths", {})):
        rule = by_route.get((method.upper(), path))
        if rule is None:
            raise KeyError(f"{method.upper()} {path}: not in api.access.ROUTES")
        operation["security"] = security_of(rule)
        answers: dict[str, Any] = operation.setdefault("responses", {})
        for code, answer in answers.items():
            if code.startswith("2") and "$ref" not in answer:
                _success_headers(answer)
        location = LOCATIONS.get((method.upper(), path))
        if location is not None and location[0] in answers:
            answers[location[0]]["headers"]["Location"] = {
                "description": "where what was made can be read",
                "required": location[1],
                "schema": {"type": "string", "pattern": "^/"},
            }
        for status in operation_errors(method, path, "requestBody" in operation):
            name = problem_response_name(status)
            responses.setdefault(name, _problem_response(status))
            ref: dict[str, Any] = {"$ref": f"#/components/responses/{name}"}
            said = answers.get(str(status), {}).get("description")
            if (
                said
                and said != FASTAPI_VALIDATION_DESCRIPTION
                and "$ref" not in answers[str(status)]
            ):
                ref["description"] = said  # the route's own words for this status (3.1)
            if path == GRAPHQL_PATH and status in GRAPHQL_STATUSES:
                # Either GraphQL's own transport error or the edge's problem.
                answer = copy.deepcopy(_problem_response(status))
                answer["description"] = f"{answer['description']}; GraphQL errors as JSON"
                answer["content"]["application/json"] = {"schema": GRAPHQL_ERRORS_SCHEMA}
                answers[str(status)] = answer
            else:
                answers[str(status)] = ref
        answers.pop("default", None)
        operation["responses"] = dict(sorted(answers.items()))
    # FastAPI's validation error schemas are unused now: Feira's 422 is a Problem.
    for name in ("HTTPValidationError", "ValidationError"):
        if name in schemas and not _uses(doc, f"#/components/schemas/{name}"):
            del schemas[name]
    doc["components"]["responses"] = dict(sorted(responses.items()))
    return doc


def install_openapi(app: FastAPI) -> None:
    """Serve the post-processed document at the app's ``openapi_url``, built once."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = post_process(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
