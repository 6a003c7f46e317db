"""Everything the schema does around an operation, as one Strawberry extension.

Per request: the document's limits (depth, aliases, tokens), the parse and validation
caches, masking unexpected errors, and releasing the request's loaders. These were six
extensions (Strawberry's ``AddValidationRules``, ``MaxTokensLimiter``, ``ParserCache``,
``ValidationCache``, and our error mask and loader release). Strawberry builds every
extension anew for each request and, for each of its four hooks, asks each extension
whether it has that hook and wraps the ones it has in a context manager: 24 questions and
six context managers per request, ~45 µs of a ten-station page's ~2 ms
(``python -m bench.nested_query``). One extension with three hooks costs a third of that.

With introspection off (``CHARGEGRAPH_INTROSPECTION=false``, ``GraphContext.introspection``)
``__schema`` and ``__type`` are validation errors (graphql-core's
``NoSchemaIntrospectionCustomRule``), and the errors' "Did you mean …?" suggestions are left
out (``graph.errors.mask``, which every error a client sees goes through, on both doors):
they name the fields, arguments, types and enum values nearest to a guess, which
would let a prober read the schema back a guess at a time.

Validation results are cached by the document's text (with the rules): the parse cache
hands the same text the same document, and graphql-core's document nodes hash by walking
the whole tree, which Strawberry's ``ValidationCache`` (keyed by the document) paid on
every request.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionNode,
    parse,
    print_ast,
    specified_rules,
)
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from graph.context import GraphContext
from graph.cost import MAX_OBJECTS, estimated_objects
from graph.errors import mask
from graph.limits import TOO_COMPLEX, limit_rule
from graph.request_errors import parse_failed, validation_failed

#: Deep enough for every real screen (map → station → connector → session → user →
#: vehicles → node …), shallow enough that cyclic paths cannot fan out without bound.
MAX_DEPTH = 15
MAX_TOKENS = 5_000
MAX_ALIASES = 30
#: Documents whose parse and validation are remembered: clients send the same few over
#: and over; bounded, so unique texts cannot grow memory.
CACHED_DOCUMENTS = 256

#: The depth and alias limits as a validation rule, built once: validation is cached by
#: its rules (a rule class per request would never be found in the cache). Ours rather than
#: Strawberry's limiters, which walk a fragment again at every spread (``graph.limits``).
LIMIT_RULES: tuple[type[ASTValidationRule], ...] = (limit_rule(MAX_DEPTH, MAX_ALIASES),)


#: The rules an operation is validated with: graphql-core's (Strawberry's default) and the
#: limits (Strawberry adds its own two in ``validate_document``).
RULES: tuple[type[ASTValidationRule], ...] = (*specified_rules, *LIMIT_RULES)
#: What a request is validated with besides, when introspection is off.
NO_INTROSPECTION: tuple[type[ASTValidationRule], ...] = (NoSchemaIntrospectionCustomRule,)


def prepared(schema: GraphQLSchema, query: str, *, introspection: bool = True
             ) -> tuple[DocumentNode, list[GraphQLError]]:
    """``query`` parsed and validated as a request over HTTP is, from the same caches: for
    the operations of a websocket (``graph.live_ws``), so both doors have the same limits
    (and, ``introspection`` off, refuse ``__schema``; the errors' suggestions are left out
    where every error is, by ``mask``). Raises ``GraphQLSyntaxError`` for a query that
    does not parse (or has too many tokens)."""
    rules = RULES if introspection else (*RULES, *NO_INTROSPECTION)
    return _parsed(query), _validated(schema, query, rules)


def operations_in(query: str) -> int:
    """How many operations ``query`` defines (0 when it does not parse: the execution
    reports that)."""
    try:
        document = _parsed(query)
    except GraphQLError:
        return 0
    return sum(isinstance(d, OperationDefinitionNode) for d in document.definitions)


def operation_type(query: str, operation_name: str | None) -> str:
    """``query``, ``mutation`` or ``subscription``: what the request runs (the named
    operation, or the only one); ``unknown`` when that cannot be told (it does not
    parse, or names no operation it has). From the cached parse the execution uses."""
    try:
        document = _parsed(query)
    except GraphQLError:
        return "unknown"
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)
                  and (operation_name is None or (d.name and d.name.value == operation_name))]
    return operations[0].operation.value if len(operations) == 1 else "unknown"


def mutation_fields(query: str, operation_name: str | None) -> list[str]:
    """The root fields the mutation ``query`` runs (``operation_name``'s, or the only
    one), one per selection (aliases of one field count apart), through fragments;
    ``__typename`` left out. Empty when it does not parse or names no operation."""
    return [f.name.value for f in _root_fields(query, operation_name)[0]]


def payload_fields(query: str, operation_name: str | None) -> set[str]:
    """The fields selected in the answers of the root fields of ``query`` (their
    payloads' fields, by name whatever their alias, through fragments)."""
    roots, fragments = _root_fields(query, operation_name)
    return {f.name.value for root in roots if root.selection_set is not None
            for f in _flattened(root.selection_set.selections, fragments)}


def _fragments(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions
            if isinstance(d, FragmentDefinitionNode)}


def _root_fields(query: str, operation_name: str | None
                 ) -> tuple[list[FieldNode], dict[str, FragmentDefinitionNode]]:
    """``mutation_fields``' nodes, and the document's fragments (for what they select)."""
    try:
        document = _parsed(query)
    except GraphQLError:
        return [], {}
    fragments = _fragments(document)
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)
                  and (operation_name is None or (d.name and d.name.value == operation_name))]
    if len(operations) != 1:
        return [], fragments
    return _flattened(operations[0].selection_set.selections, fragments), fragments


def _flattened(selections: Sequence[SelectionNode],
               fragments: dict[str, FragmentDefinitionNode]) -> list[FieldNode]:
    """The fields of a selection set, those of its fragments in place; ``__typename``
    left out."""
    fields: list[FieldNode] = []

    def collect(selections: Sequence[SelectionNode], seen: frozenset[str]) -> None:
        for selection in selections:
            if isinstance(selection, FieldNode):
                if selection.name.value != "__typename":
                    fields.append(selection)
            elif isinstance(selection, InlineFragmentNode):
                collect(selection.selection_set.selections, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in fragments and name not in seen:  # a cycle is invalid anyway
                    collect(fragments[name].selection_set.selections, seen | {name})

    collect(selections, frozenset())
    return fields


def normalized(query: str) -> str:
    """``query`` printed from its parse: the same document whatever its spacing and
    comments (an idempotency key's request compared with its retry)."""
    try:
        return print_ast(_parsed(query))
    except GraphQLError:
        return query


@lru_cache(maxsize=CACHED_DOCUMENTS)
def _parsed(query: str) -> DocumentNode:
    try:
        return parse(query, max_tokens=MAX_TOKENS)
    except GraphQLError as error:
        # graphql-core reports the token limit as a syntax error; it is a size limit.
        if f"contains more than {MAX_TOKENS} tokens" in error.message:
            error.extensions = dict(TOO_COMPLEX)
        else:
            parse_failed(error)
        raise


@lru_cache(maxsize=CACHED_DOCUMENTS)
def _validated(schema: GraphQLSchema, query: str,
               rules: tuple[type[ASTValidationRule], ...]) -> list[GraphQLError]:
    # Strawberry's validation: graphql-core's with Strawberry's own rules added.
    document = _parsed(query)
    return validation_failed(
        [_the_clients(error) for error in validate_document(schema, document, rules)],
        document)


def _the_clients(error: GraphQLError) -> GraphQLError:
    """A validation error as the client's mistake, whatever raised it. A literal a scalar
    refuses (``from: "yesterday"`` for a ``DateTime``) is reported by graphql-core with the
    scalar's ``ValueError`` as its original error, which ``mask`` takes for a bug: the
    client got "Internal server error" and the log a traceback at ERROR, where the same
    value as a variable gave the scalar's message. The message already says it all."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return error
    return GraphQLError(error.message, error.nodes, error.source, error.positions,
                        error.path, None, error.extensions)


class RequestPipeline(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.validation_rules = (*context.validation_rules, *LIMIT_RULES)
        introspection = not isinstance(context.context, GraphContext) \
            or context.context.introspection
        if not introspection:
            context.validation_rules = (*context.validation_rules, *NO_INTROSPECTION)
        yield
        result = context.result
        if result is not None and result.errors:
            # Without suggestions when introspection is off: validation's, and a
            # variable's coercion's too.
            result.errors = [mask(error, suggestions=introspection)
                             for error in result.errors]
        # graphql-core's executor is a reference cycle (its resolve-info helpers are bound
        # methods of the executor) and holds the context: without this, everything the
        # request loaded waited for the cyclic garbage collector (about 400 objects per
        # ten-station page, a quarter of a millisecond per request in collector pauses).
        if isinstance(context.context, GraphContext):
            context.context.loaders.release()

    def on_parse(self) -> Iterator[None]:
        # A syntax error or too many tokens raise here, as they did in Strawberry's
        # ParserCache. Without a query text (a document given as such, or nothing)
        # Strawberry's own step decides.
        context = self.execution_context
        if context.query and context.graphql_document is None:
            context.graphql_document = _parsed(context.query)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.query and context.pre_execution_errors is None:
            errors = _validated(context.schema._schema, context.query,
                                tuple(context.validation_rules))
            if not errors and context.graphql_document is not None:
                errors = too_complex(context.schema._schema, context.query,
                                      context.graphql_document, context.operation_name,
                                      context.variables)
            context.pre_execution_errors = errors
        yield


def too_complex(schema: GraphQLSchema, query: str, document: DocumentNode,
                 operation_name: str | None, variables: dict[str, Any] | None
                 ) -> list[GraphQLError]:
    """The size limit (``graph.cost``): checked with the variables, so after validation;
    also for subscriptions over the socket (``graph.live_ws``), per event."""
    objects = estimated_objects(schema, query, document, operation_name, variables)
    if objects <= MAX_OBJECTS:
        return []
    return [GraphQLError(
        f"the query may ask for about {objects:,} objects; at most {MAX_OBJECTS:,} at once:"
        " ask for smaller pages, or fewer nested lists",
        extensions=dict(TOO_COMPLEX))]
