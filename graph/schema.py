"""The executable schema, its limits, and its SDL."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    get_named_type,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.types.execution import ExecutionContext

from graph import lean
from graph.command_types import OCPP_VALUE_DESCRIPTIONS
from graph.enums import VALUE_DESCRIPTIONS
from graph.executor import LeanExecutionContext
from graph.mutation import INPUT_ARGUMENT, Mutation
from graph.nodes import NODE_BY_KIND
from graph.pipeline import RequestPipeline
from graph.query import Query
from graph.relay import CONNECTION_ARGUMENTS
from graph.scalars import SCALARS
from graph.subscription import Subscription

log = logging.getLogger("chargegraph.graph")

#: What the ``filter`` of every subscription does (``describe_shared_arguments``).
EVENT_FILTER = ("Only the events meeting every condition given; without it, every event "
                "the viewer may see.")
#: The values' descriptions of every enum whose class is the domain's.
ENUM_VALUE_DESCRIPTIONS = {**VALUE_DESCRIPTIONS, **OCPP_VALUE_DESCRIPTIONS}


class Schema(strawberry.Schema):
    """Strawberry's schema, without its logging of every error with a traceback at ERROR:
    syntax, validation, limit and domain errors are the client's, and an anonymous client
    could flood the log with them. Unexpected errors are logged where they are masked
    (``graph.errors.mask``), once, under the id the client sees."""

    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        for error in errors:
            log.debug("client error: %s", error.message)


def build_schema(extra_extensions: Sequence[Any] = ()) -> strawberry.Schema:
    built = Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=list(NODE_BY_KIND.values()),
        # The limits, the parse and validation caches, error masking and releasing the
        # request's loaders: one extension (graph/pipeline.py says why).
        extensions=[RequestPipeline, *extra_extensions],
        execution_context_class=LeanExecutionContext,
        config=StrawberryConfig(scalar_map=SCALARS),
    )
    lean.install(built)
    describe_shared_arguments(built._schema)
    return built


def describe_shared_arguments(schema: GraphQLSchema) -> None:
    """Describe the arguments declared alike in many resolvers, where a resolver gave no
    description of its own: the paging, ``filter`` and ``orderBy`` arguments of every
    field returning a connection (``graph.relay.CONNECTION_ARGUMENTS``), the ``input``
    of every mutation (``graph.mutation.INPUT_ARGUMENT``) and the ``filter`` of every
    subscription (``EVENT_FILTER``); and the values of the domain's enums
    (``graph.enums.VALUE_DESCRIPTIONS``, ``graph.command_types.OCPP_VALUE_DESCRIPTIONS``).
    Only descriptions change."""
    for graphql_type in schema.type_map.values():
        if isinstance(graphql_type, GraphQLEnumType):
            for name, value in graphql_type.values.items():
                text = ENUM_VALUE_DESCRIPTIONS.get(graphql_type.name, {}).get(name)
                if value.description is None and text is not None:
                    value.description = text
        if not isinstance(graphql_type, GraphQLObjectType) \
                or graphql_type.name.startswith("__"):
            continue
        for field in graphql_type.fields.values():
            shared: dict[str, str] = {}
            if get_named_type(field.type).name.endswith("Connection"):
                shared = CONNECTION_ARGUMENTS
            elif graphql_type is schema.mutation_type:
                shared = {"input": INPUT_ARGUMENT}
            elif graphql_type is schema.subscription_type:
                shared = {"filter": EVENT_FILTER}
            for name, argument in field.args.items():
                if argument.description is None and name in shared:
                    argument.description = shared[name]


schema = build_schema()


def export_sdl() -> str:
    """The SDL that ``schema.graphql`` at the repository root must equal."""
    return schema.as_str() + "\n"
