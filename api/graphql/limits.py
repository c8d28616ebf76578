"""What one GraphQL request may ask for, checked before any resolver runs.

Two checkpoints, both in one schema extension:

- before parsing: the query text's length and its number of lexical tokens (parsing cost
  is linear in tokens, and it runs before anything else can refuse the document);
- after validation, before execution: the selected operation's depth, its number of
  aliases, every ``first`` argument (1..``max_page``), and its estimated cost. Variables
  are coerced first, so ``first: $n`` counts with the value sent.

Cost is an estimate of how many objects the response holds, which is what a request
costs here (resolver CPU, loader keys, response size): every object-typed field costs 1
per object, scalars cost nothing, and a list multiplies its selection by its expected
length: ``first`` for a connection's ``nodes``, ``LIST_ESTIMATES`` for other lists.
Introspection fields (``__schema``, ``__type``) are not counted, so GraphiQL and code
generators work; the token limit bounds them.

Every refusal is a GraphQL error whose message names the limit and the value, with an
``extensions.code`` a client can match on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Source,
    get_named_type,
    get_nullable_type,
    is_list_type,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from graphql.language import Lexer, TokenKind
from graphql.utilities import get_operation_ast
from strawberry.extensions import SchemaExtension

from actors.domain.errors import ErrorCode

QUERY_TOO_LARGE = "QUERY_TOO_LARGE"
QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
# A page size out of range is bad input, the same code a resolver's DomainError carries.
INVALID_ARGUMENT = ErrorCode.INVALID_ARGUMENT.value

PAGE_ARGUMENT = "first"
PAGE_ITEMS = "nodes"  # a connection's list, as long as the page asked for

# Expected length of lists that have no page argument, by (type, field). Averages, not
# maxima (a product may have 100 variants): the budget guards against abuse, and the
# loaders bound each backend call whatever the real length turns out to be.
LIST_ESTIMATES: dict[tuple[str, str], int] = {
    ("Product", "variants"): 10,
    ("Product", "attributes"): 10,
    ("Variant", "options"): 5,
    ("SearchConnection", "facets"): 10,
    ("Facet", "values"): 20,
}
DEFAULT_LIST_ESTIMATE = 10
MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class QueryLimits:
    max_chars: int = 20_000
    max_tokens: int = 2_000
    max_depth: int = 10
    max_aliases: int = 30
    max_cost: int = 5_000
    max_page: int = MAX_PAGE


def limit_error(code: str, message: str, nodes: Any = None) -> GraphQLError:
    return GraphQLError(message, nodes=nodes, extensions={"code": code})


def count_tokens(query: str, stop_after: int) -> int:
    """Lexical tokens in ``query`` (comments excluded), counting no further than
    ``stop_after + 1``. A lexing error ends the count: the parser will report it."""
    lexer = Lexer(Source(query))
    count = 0
    try:
        while lexer.advance().kind != TokenKind.EOF:
            count += 1
            if count > stop_after:
                break
    except GraphQLError:
        pass
    return count


def check_text(query: str, limits: QueryLimits) -> GraphQLError | None:
    if len(query) > limits.max_chars:
        return limit_error(
            QUERY_TOO_LARGE,
            f"query is {len(query)} characters long; the limit is {limits.max_chars}",
        )
    tokens = count_tokens(query, limits.max_tokens)
    if tokens > limits.max_tokens:
        return limit_error(
            QUERY_TOO_LARGE,
            f"query has more than {limits.max_tokens} tokens; the limit is {limits.max_tokens}",
        )
    return None


@dataclass(slots=True)
class Measure:
    cost: int = 0
    depth: int = 0
    aliases: int = 0

    def add(self, other: Measure) -> None:
        self.cost += other.cost
        self.aliases += other.aliases
        self.depth = max(self.depth, other.depth)


_Composite = GraphQLObjectType | GraphQLInterfaceType


class _Analyzer:
    """One walk over an operation, fragments expanded (and memoized, so a document that
    spreads fragments into each other cannot make the walk exponential)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variables: VariableValues,
        limits: QueryLimits,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.limits = limits
        self.errors: list[GraphQLError] = []
        self._memo: dict[tuple[str, int], Measure] = {}

    def selection_set(self, node: SelectionSetNode, parent: Any, page: int) -> Measure:
        total = Measure()
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                total.add(self.field(selection, parent, page))
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self.schema.get_type(condition.name.value) if condition else parent
                total.add(self.selection_set(selection.selection_set, inner, page))
            elif isinstance(selection, FragmentSpreadNode):
                total.add(self.fragment(selection.name.value, page))
        return total

    def fragment(self, name: str, page: int) -> Measure:
        key = (name, page)
        if key not in self._memo:
            definition = self.fragments[name]
            parent = self.schema.get_type(definition.type_condition.name.value)
            self._memo[key] = self.selection_set(definition.selection_set, parent, page)
        return self._memo[key]

    def field(self, node: FieldNode, parent: Any, page: int) -> Measure:
        name = node.name.value
        aliases = 1 if node.alias else 0
        if name.startswith("__") or not isinstance(parent, _Composite):
            # Introspection and __typename (the only field a union has).
            return Measure(aliases=aliases)
        definition = parent.fields[name]
        if node.selection_set is None:
            return Measure(depth=1, aliases=aliases)
        inner_page = page
        if PAGE_ARGUMENT in definition.args:
            inner_page = self.page_size(node, definition)
        child = self.selection_set(node.selection_set, get_named_type(definition.type), inner_page)
        count = 1
        if is_list_type(get_nullable_type(definition.type)):
            count = (
                page
                if name == PAGE_ITEMS
                else LIST_ESTIMATES.get((parent.name, name), DEFAULT_LIST_ESTIMATE)
            )
        return Measure(
            cost=count * (1 + child.cost),
            depth=1 + child.depth,
            aliases=aliases + child.aliases,
        )

    def page_size(self, node: FieldNode, definition: Any) -> int:
        first = get_argument_values(definition, node, self.variables).get(PAGE_ARGUMENT)
        if not isinstance(first, int):
            return self.limits.max_page
        if not 1 <= first <= self.limits.max_page:
            self.errors.append(
                limit_error(
                    INVALID_ARGUMENT,
                    f"{PAGE_ARGUMENT} must be between 1 and {self.limits.max_page}, got {first}",
                    [node],
                )
            )
            return max(1, min(first, self.limits.max_page))
        return first


def check_operation(
    schema: GraphQLSchema,
    document: Any,
    operation_name: str | None,
    raw_variables: dict[str, Any] | None,
    limits: QueryLimits,
) -> list[GraphQLError]:
    """Errors for every limit the selected operation breaks; empty when it may run.

    Only called on a validated document. When the operation cannot be selected or its
    variables do not coerce, nothing is reported here: execution refuses it on its own,
    before any resolver runs.
    """
    operation = get_operation_ast(document, operation_name)
    if not isinstance(operation, OperationDefinitionNode):
        return []
    variables = get_variable_values(
        schema, operation.variable_definitions or (), raw_variables or {}
    )
    if isinstance(variables, list):
        return []
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    root = schema.get_root_type(operation.operation)
    analyzer = _Analyzer(schema, fragments, variables, limits)
    measure = analyzer.selection_set(operation.selection_set, root, 1)
    errors = analyzer.errors
    if measure.depth > limits.max_depth:
        errors.append(
            limit_error(
                QUERY_TOO_DEEP,
                f"query depth is {measure.depth}; the limit is {limits.max_depth}",
                [operation],
            )
        )
    if measure.aliases > limits.max_aliases:
        errors.append(
            limit_error(
                TOO_MANY_ALIASES,
                f"query uses {measure.aliases} aliases; the limit is {limits.max_aliases}",
                [operation],
            )
        )
    if measure.cost > limits.max_cost:
        errors.append(
            limit_error(
                QUERY_TOO_COSTLY,
                f"query cost is {measure.cost}; the limit is {limits.max_cost} "
                "(each object in the response costs 1, lists multiply by their "
                "page size: ask for fewer items or fewer fields)",
                [operation],
            )
        )
    return errors


class QueryLimiter(SchemaExtension):
    """Schema extension enforcing ``QueryLimits``; one instance per request."""

    def __init__(self, limits: QueryLimits) -> None:
        self.limits = limits

    def on_parse(self) -> Iterator[None]:
        query = self.execution_context.query
        if query is not None and self.execution_context.graphql_document is None:
            refused = check_text(query, self.limits)
            if refused is not None:
                # Strawberry turns an error raised here into the request's only error.
                raise refused
        yield

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is not None and not context.result:
            errors = check_operation(
                context.schema._schema,
                context.graphql_document,
                context.operation_name,
                context.variables,
                self.limits,
            )
            if errors:
                # A result set before execution replaces it: no resolver runs.
                context.result = ExecutionResult(data=None, errors=errors)
        yield
