"""The executable schema, its limits, and its SDL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import strawberry
from strawberry.schema.config import StrawberryConfig

from graph import lean
from graph.executor import LeanExecutionContext
from graph.mutation import Mutation
from graph.nodes import NODE_BY_KIND
from graph.pipeline import RequestPipeline
from graph.query import Query
from graph.scalars import SCALARS
from graph.subscription import Subscription


def build_schema(extra_extensions: Sequence[Any] = ()) -> strawberry.Schema:
    built = strawberry.Schema(
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
