"""GraphQL at /graphql: products, variants, prices, stock and search facets (strawberry)."""

from api.graphql.limits import QueryLimits
from api.graphql.router import graphql_router
from api.graphql.schema import build_schema

__all__ = ["QueryLimits", "build_schema", "graphql_router"]
