"""The executable schema, its limits, and its SDL."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types.execution import ExecutionContext

from graph import lean
from graph.executor import LeanExecutionContext
from graph.mutation import Mutation
from graph.nodes import NODE_BY_KIND
from graph.pipeline import RequestPipeline
from graph.query import Query
from graph.scalars import SCALARS
from graph.subscription import Subscription

log = logging.getLogger("chargegraph.graph")


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
    return built


schema = build_schema()


def export_sdl() -> str:
    """The SDL that ``schema.graphql`` at the repository root must equal."""
    return schema.as_str() + "\n"
