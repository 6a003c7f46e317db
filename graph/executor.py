"""The execution context our schema runs with: graphql-core's executor (as Strawberry
configures it), with a short path for plain attribute leaves.

Most fields of a nested page are scalars read straight off a node object (``cpId``,
``status``, ``energyKwh``…). For each of them graphql-core makes a path entry, looks the
field up, builds a resolve info (a fourteen-member tuple) and a list of its nodes, calls
the resolver, asks twice whether the result is awaitable and walks ``complete_value``
through the non-null wrapper to the scalar's ``coerce_output_value`` — several
microseconds of which the value needs only the read and the coercion.

So for each selection (graphql-core hands the same grouped field set to every object of
a list) a plan is worked out once per execution: which fields are **plain reads** — the
resolver is one of ``graph.lean``'s attribute reads, the field takes no arguments,
middleware does not wrap it, and it returns a scalar or enum, nullable or not. Those are
answered here: read the attribute, coerce it. Every other field of the selection goes
through graphql-core's own ``execute_fields``, and the answers are put back in the
selection's order. So does a plain read that is not the plain case this time — the read
or the coercion raising, ``None`` for a non-null field, a coercion answering nothing:
graphql-core then reads the attribute again (reads have no side effects) and reports the
error exactly as it always has, at the same path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, cast

from graphql import GraphQLObjectType, Undefined, is_leaf_type, is_non_null_type
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

#: The mark ``graph.lean`` puts on its attribute resolvers: the attribute they read.
ATTRIBUTE_MARK = "lean_attribute"


class _Read(NamedTuple):
    """A plain read: the attribute, the leaf type's coercion, whether None is an answer."""

    attribute: str
    coerce: Callable[[Any], Any]
    nullable: bool


class _Plan(NamedTuple):
    """One selection on one parent type. It keeps its grouped field set alive: plans are
    found by the set's identity."""

    grouped: GroupedFieldSet
    parent_type: GraphQLObjectType
    fields: tuple[tuple[str, FieldDetailsList, _Read | None], ...]
    has_reads: bool


class LeanExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plans: dict[int, _Plan] = {}

    def execute_fields(self, parent_type: GraphQLObjectType, source_value: Any,
                       path: Path | None, grouped_field_set: GroupedFieldSet,
                       position_context: Any) -> Any:
        plan = self._plans.get(id(grouped_field_set))
        if plan is None or plan.grouped is not grouped_field_set \
                or plan.parent_type is not parent_type:
            plan = self._plan(parent_type, grouped_field_set)
        if not plan.has_reads:
            return super().execute_fields(parent_type, source_value, path,
                                          grouped_field_set, position_context)
        answered: dict[str, Any] = {}
        general: GroupedFieldSet | None = None
        for name, fields, read in plan.fields:
            if read is not None:
                try:
                    value = getattr(source_value, read.attribute)
                    if value is None:
                        if read.nullable:
                            answered[name] = None
                            continue
                    else:
                        coerced = read.coerce(value)
                        if coerced is not None and coerced is not Undefined:
                            answered[name] = coerced
                            continue
                except Exception:  # graphql-core reports it: the field goes its way below
                    pass
            if general is None:
                general = {}
            general[name] = fields
        if general is None:
            return answered
        rest = super().execute_fields(parent_type, source_value, path, general,
                                      position_context)
        if self.is_awaitable(rest):
            return _merged_later(plan, answered, cast("Awaitable[dict[str, Any]]", rest))
        return _merged(plan, answered, cast("dict[str, Any]", rest))

    def _plan(self, parent_type: GraphQLObjectType, grouped: GroupedFieldSet) -> _Plan:
        fields = tuple((name, details, self._read(parent_type, details))
                       for name, details in grouped.items())
        plan = _Plan(grouped, parent_type, fields,
                     any(read is not None for _, _, read in fields))
        self._plans[id(grouped)] = plan
        return plan

    def _read(self, parent_type: GraphQLObjectType,
              field_details_list: FieldDetailsList) -> _Read | None:
        field_def = self.schema.get_field(parent_type, field_details_list[0].node.name.value)
        if field_def is None or field_def.args \
                or any(details.node.arguments for details in field_details_list):
            return None
        resolve = field_def.resolve
        attribute = getattr(resolve, ATTRIBUTE_MARK, None)
        middleware = self.middleware_manager
        if attribute is None or resolve is None or (
                middleware is not None and middleware.get_field_resolver(resolve)
                is not resolve):
            return None
        return_type = field_def.type
        nullable = not is_non_null_type(return_type)
        leaf = return_type if nullable else return_type.of_type  # type: ignore[union-attr]
        if not is_leaf_type(leaf):
            return None
        return _Read(attribute, leaf.coerce_output_value, nullable)


def _merged(plan: _Plan, answered: dict[str, Any], rest: dict[str, Any]) -> dict[str, Any]:
    """Both halves in the selection's order (graphql-core leaves out a field it cannot
    find, so a name may be in neither)."""
    merged: dict[str, Any] = {}
    for name, _, _ in plan.fields:
        if name in answered:
            merged[name] = answered[name]
        elif name in rest:
            merged[name] = rest[name]
    return merged


async def _merged_later(plan: _Plan, answered: dict[str, Any],
                        rest: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    return _merged(plan, answered, await rest)
