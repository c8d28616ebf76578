"""/graphql over HTTP: queries by GET or POST (mutations, once there are any, by POST only),
GraphiQL on GET only when enabled.

Status codes: a request GraphQL refuses before executing anything (a syntax error, an
unknown field, a limit) is answered 400 (500 if the refusal is our own failure); a request
that executed is answered 200, with field errors, if any, next to the data (GraphQL over
HTTP, application/json). Transport problems (no query, a body that is not JSON, GraphiQL
asked for while disabled) are 4xx with the same ``{"errors": [...]}`` shape. Every error
carries ``extensions.code``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from cross_web import HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLHTTPResponse
from strawberry.http.parse_content_type import parse_content_type
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from api.graphql.limits import QueryLimits
from api.graphql.loaders import RequestContext
from api.graphql.schema import (
    DEFAULT_LIMITS,
    INTERNAL_ERROR,
    INTERNAL_MESSAGE,
    build_schema,
    log,
)

if TYPE_CHECKING:
    from actors.shop import Shop

HTTP_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def _errors_body(message: str, code: str) -> bytes:
    return json.dumps({"errors": [{"message": message, "extensions": {"code": code}}]}).encode()


def _is_request_error(data: GraphQLHTTPResponse) -> bool:
    """Nothing executed: no data, and no error belongs to a field."""
    errors = data.get("errors") or []
    return (
        data.get("data") is None
        and bool(errors)
        and all(isinstance(e, dict) and "path" not in e for e in errors)
    )


def _codes(data: GraphQLHTTPResponse) -> set[str]:
    return {
        str(e.get("extensions", {}).get("code"))
        for e in data.get("errors") or []
        if isinstance(e, dict)
    }


class FeiraGraphQLRouter(GraphQLRouter[RequestContext, None]):
    def parse_json(self, data: str | bytes) -> Any:
        try:
            return self.decode_json(data)
        except ValueError as error:  # JSONDecodeError, and UnicodeDecodeError (not UTF-8)
            raise HTTPException(400, "Unable to parse request body as JSON") from error

    async def parse_http_body(self, request: Any) -> Any:
        # Strawberry reads members of the JSON body without checking it is an object: a
        # body of "x", 1 or null was a 500. Refuse it as the other malformed bodies are.
        if request.method == "POST":
            content_type, _ = parse_content_type(request.content_type or "")
            if "application/json" in content_type:
                body = self.parse_json(await request.get_body())
                if not isinstance(body, dict | list):
                    raise HTTPException(400, "The request body must be a JSON object")
        return await super().parse_http_body(request)

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        if result.errors:
            # Last line of defence: an error without a code did not go through the schema's
            # formatter (it was raised outside of an operation); never show its text.
            result.errors = [
                e if (e.extensions or {}).get("code") else _masked(e) for e in result.errors
            ]
        return await super().process_result(request, result)

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        if isinstance(response_data, dict) and _is_request_error(response_data):
            # Refused before execution: the request's fault, unless it was our own failure.
            failed = INTERNAL_ERROR in _codes(response_data)
            sub_response.status_code = 500 if failed else 400
        return super().create_response(response_data, sub_response)

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        try:
            return await super().run(request, context=context, root_value=root_value)
        except HTTPException as error:
            return Response(
                _errors_body(error.reason, HTTP_CODES.get(error.status_code, "BAD_REQUEST")),
                status_code=error.status_code,
                media_type="application/json",
            )


def _masked(error: GraphQLError) -> GraphQLError:
    log.error("GraphQL error escaped formatting: %s", error.message, exc_info=error.original_error)
    return GraphQLError(INTERNAL_MESSAGE, extensions={"code": INTERNAL_ERROR})


def graphql_router(
    shop: Shop, *, graphiql: bool, limits: QueryLimits = DEFAULT_LIMITS
) -> GraphQLRouter[RequestContext, None]:
    """The router to mount at ``/graphql`` (``app.include_router(r, prefix="/graphql")``)."""

    async def context() -> RequestContext:
        return RequestContext(shop)

    return FeiraGraphQLRouter(
        build_schema(limits),
        graphql_ide="graphiql" if graphiql else None,
        allow_queries_via_get=True,
        context_getter=context,
        subscription_protocols=(),
        tags=["graphql"],
    )
