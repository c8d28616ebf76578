"""The OpenAPI document after ``api.openapi.install_openapi``: problems, security and
headers, checked against the route table and the problem bodies Feira really sends.
(``tests/security/test_schemathesis.py`` checks the document against the running app.)"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import jsonschema
import orjson
import pytest

from actors.domain.errors import DomainError, ErrorCode
from actors.identity.accounts import CUSTOMER_SCOPES, DEFAULT_SCOPES
from api import openapi
from api.access import ANONYMOUS, ROUTES, Rule
from api.app import create_fastapi
from api.problems import PROBLEM_JSON, STATUS, domain_problem, problem, validation_problem

if TYPE_CHECKING:
    from actors.shop import Shop

# Served by FastAPI itself, outside the document.
UNDOCUMENTED = {
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}


async def _ready() -> dict[str, Any]:
    return {}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    document: dict[str, Any] = create_fastapi(cast("Shop", None), _ready).openapi()
    return document


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in openapi.METHODS
    ]


def rules() -> dict[tuple[str, str], Rule]:
    return {(rule.method, rule.path): rule for rule in ROUTES}


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = doc["components"][kind][name]
    return node


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for ``schema`` that resolves the document's ``#/components`` refs."""
    root = {**schema, "components": doc["components"]}
    return jsonschema.Draft202012Validator(root)


def test_the_document_lists_exactly_the_routes_of_the_table(doc: dict[str, Any]) -> None:
    documented = {(method, path) for method, path, _ in operations(doc)}
    assert documented == set(rules()) - UNDOCUMENTED
    # ...and every operation has its own errors listed, none left over from removed routes.
    assert set(openapi.OPERATION_ERRORS) == documented


def test_the_problem_schema_is_rfc_9457_plus_code(doc: dict[str, Any]) -> None:
    schema = doc["components"]["schemas"]["Problem"]
    assert schema["type"] == "object"
    assert set(schema["required"]) == {"type", "title", "status", "code", "detail"}
    assert {"instance", "errors"} <= set(schema["properties"])
    assert schema["additionalProperties"] is True
    # FastAPI's validation error is gone: Feira's 422 is a problem.
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert b"HTTPValidationError" not in orjson.dumps(doc)


def test_every_operation_declares_its_problems(doc: dict[str, Any]) -> None:
    for method, path, op in operations(doc):
        answers = op["responses"]
        declared = {int(code) for code in answers if code[0] in "45"}
        expected = set(openapi.operation_errors(method, path, "requestBody" in op))
        assert declared == expected, (method, path)
        assert set(openapi.EDGE_ERRORS) <= declared, (method, path)
        if "requestBody" in op:
            assert set(openapi.BODY_ERRORS) <= declared, (method, path)
        for status in declared:
            answer = resolve(doc, answers[str(status)])
            schema = answer["content"][PROBLEM_JSON]["schema"]
            assert {"$ref": "#/components/schemas/Problem"} in schema["allOf"], (path, status)
            assert schema["properties"]["status"] == {"const": status}
            if path != openapi.GRAPHQL_PATH:
                assert set(answer["content"]) == {PROBLEM_JSON}, (method, path, status)


def test_graphql_answers_its_own_errors_as_json_and_the_edges_as_problems(
    doc: dict[str, Any],
) -> None:
    get = doc["paths"]["/graphql"]["get"]
    assert set(get["responses"]["400"]["content"]) == {"application/json", PROBLEM_JSON}
    assert get["responses"]["401"] == {"$ref": "#/components/responses/Problem401"}
    assert [p["name"] for p in get["parameters"]] == ["query", "variables", "operationName"]
    body = doc["paths"]["/graphql"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["query"]


def test_the_security_of_each_operation_is_the_route_tables(doc: dict[str, Any]) -> None:
    table = rules()
    for method, path, op in operations(doc):
        rule = table[(method, path)]
        options = op["security"]
        assert ({} in options) == (ANONYMOUS in rule.allow), (method, path)
        roles = sorted(rule.allow - {ANONYMOUS})
        bearer = [o for o in options if openapi.BEARER in o]
        assert all(o[openapi.BEARER] == roles for o in bearer), (method, path)
        assert bool(bearer) == bool(roles), (method, path)
        oauth = [o[openapi.OAUTH2] for o in options if openapi.OAUTH2 in o]
        if openapi.KEY_ROLES & set(roles):
            assert oauth, (method, path)
            assert all(s == ([rule.scope] if rule.scope else []) for s in oauth)
        else:
            assert not oauth, (method, path)
        # An API key alone never authorises a route that needs a token.
        if ANONYMOUS not in rule.allow:
            assert {openapi.API_KEY: []} not in options, (method, path)


def test_the_examples_match_the_table() -> None:
    rule = rules()[("GET", "/v1/merchant/products")]
    assert openapi.security_of(rule) == [
        {"bearerAuth": ["merchant"]},
        {"bearerAuth": ["merchant"], "apiKey": []},
        {"oauth2": ["catalog:write"]},
        {"oauth2": ["catalog:write"], "apiKey": []},
    ]
    public = rules()[("GET", "/v1/products")]
    assert openapi.security_of(public)[:2] == [{}, {"apiKey": []}]
    customer = rules()[("GET", "/v1/me")]
    assert all(openapi.OAUTH2 not in option for option in openapi.security_of(customer))


def test_the_security_schemes(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == schemes["bearerAuth"] | {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert schemes["apiKey"] | {"in": "header", "name": "X-Api-Key"} == schemes["apiKey"]
    flow = schemes["oauth2"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "/oauth/token"
    # Only API keys' roles get tokens by client credentials, so only their scopes.
    key_scopes = {s for scopes in DEFAULT_SCOPES.values() for s in scopes}
    assert set(flow["scopes"]) == key_scopes
    assert not set(CUSTOMER_SCOPES) - key_scopes & set(flow["scopes"])
    used = {
        scope
        for _, _, op in operations(doc)
        for option in op["security"]
        for scope in option.get(openapi.OAUTH2, [])
    }
    assert used <= set(flow["scopes"])


def test_required_headers_of_problems_and_success(doc: dict[str, Any]) -> None:
    responses = doc["components"]["responses"]
    headers = doc["components"]["headers"]

    def required(response: dict[str, Any]) -> set[str]:
        return {
            name
            for name, header in response.get("headers", {}).items()
            if resolve(doc, header).get("required")
        }

    assert required(responses["Problem401"]) == {"WWW-Authenticate"}
    assert required(responses["Problem405"]) == {"Allow"}
    assert required(responses["Problem429"]) == {"Retry-After"}
    assert not headers["RateLimit"].get("required")
    created = doc["paths"]["/v1/carts"]["post"]["responses"]["201"]
    assert required(created) == {"Location"}
    assert {"RateLimit", "RateLimit-Policy"} <= set(created["headers"])


@pytest.mark.parametrize("code", sorted(STATUS, key=str), ids=str)
def test_every_domain_refusal_matches_its_problem_response(
    doc: dict[str, Any], code: ErrorCode
) -> None:
    response = domain_problem(DomainError(code, "no", sku="SKU-1"), "/v1/x")
    name = openapi.problem_response_name(response.status_code)
    schema = doc["components"]["responses"][name]["content"][PROBLEM_JSON]["schema"]
    validator(doc, schema).validate(orjson.loads(response.body))
    assert response.media_type == PROBLEM_JSON


def test_the_problem_schema_refuses_what_is_not_a_problem(doc: dict[str, Any]) -> None:
    schema = doc["components"]["responses"]["Problem404"]["content"][PROBLEM_JSON]["schema"]
    check = validator(doc, schema)
    good = orjson.loads(problem(404, "not_found", "no route /x", "/x").body)
    check.validate(good)
    for bad in (
        {k: v for k, v in good.items() if k != "code"},
        good | {"status": 400},  # the body's status is the answer's
        good | {"type": "about:blank"},
        {"detail": [{"loc": ["body"], "msg": "x"}]},  # FastAPI's own 422 shape
    ):
        with pytest.raises(jsonschema.ValidationError):
            check.validate(bad)
    invalid = validation_problem([{"loc": ("body", "sku"), "msg": "too long"}], "/v1/carts")
    schema_422 = doc["components"]["responses"]["Problem422"]["content"][PROBLEM_JSON]["schema"]
    validator(doc, schema_422).validate(orjson.loads(invalid.body))


def test_a_route_missing_from_the_table_fails_the_document() -> None:
    document = {"openapi": "3.1.0", "paths": {"/v1/new": {"get": {"responses": {}}}}}
    with pytest.raises(KeyError, match=r"not in api\.access\.ROUTES"):
        openapi.post_process(document)
    listed = (Rule("GET", "/v1/new", frozenset({ANONYMOUS})),)
    with pytest.raises(KeyError, match="OPERATION_ERRORS"):
        openapi.post_process(document, listed)


def test_the_document_is_built_once_and_not_changed_in_place() -> None:
    app = create_fastapi(cast("Shop", None), _ready)
    first = app.openapi()
    assert app.openapi() is first
    raw = {"openapi": "3.1.0", "paths": {"/healthz": {"get": {"responses": {"200": {}}}}}}
    before = orjson.dumps(raw)
    processed = openapi.post_process(raw)
    assert orjson.dumps(raw) == before
    assert "Problem" in processed["components"]["schemas"]
