"""The executable schema, its limits, and its SDL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import strawberry
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)

from graph import lean
from graph.context import ReleaseLoaders
from graph.errors import MaskUnexpectedErrors
from graph.executor import LeanExecutionContext
from graph.mutation import Mutation
from graph.nodes import NODE_BY_KIND
from graph.query import Query
from graph.subscription import Subscription

#: Deep enough for every real screen (map → station → connector → session → user →
#: vehicles → node …), shallow enough that cyclic paths cannot fan out without bound.
MAX_DEPTH = 15
MAX_TOKENS = 5_000
MAX_ALIASES = 30

#: The depth and alias limits as validation rules, built once. Strawberry's limiters build
#: a new rule class per instance, i.e. per request, and the validation cache is keyed by
#: the rules: with per-request limiters no document was ever found in it, and every
#: request paid full validation again.
LIMIT_RULES = (*QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules,
               *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules)


def build_schema(extra_extensions: Sequence[Any] = ()) -> strawberry.Schema:
    built = strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=list(NODE_BY_KIND.values()),
        extensions=[
            lambda: AddValidationRules(list(LIMIT_RULES)),
            lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
            MaskUnexpectedErrors,
            ReleaseLoaders,
            # Clients send the same few documents over and over: parse and validate once.
            lambda: ParserCache(maxsize=256),
            lambda: ValidationCache(maxsize=256),
            *extra_extensions,
        ],
        execution_context_class=LeanExecutionContext,
    )
    lean.install(built)
    return built


schema = build_schema()


def export_sdl() -> str:
    """The SDL that ``schema.graphql`` at the repository root must equal."""
    return schema.as_str() + "\n"
