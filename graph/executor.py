"""The execution context our schema runs with: graphql-core's executor (as Strawberry
configures it), with short paths for plain attribute leaves and for objects.

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
answered here: read the attribute, coerce it. Every other field is executed in the
selection's order as graphql-core's ``execute_field`` does it, with what that looks up
for every object (the field, its resolver through middleware, its nodes) taken from the
plan for fields without arguments; its awaitable answers are awaited together as
graphql-core's ``execute_fields`` does. So does a plain read that
is not the plain case this time — the read or the coercion raising, ``None`` for a
non-null field, a coercion answering nothing: graphql-core then reads the attribute again
(reads have no side effects) and reports the error exactly as it always has, at the same
path.

Objects (a connector of a station, a session's user) are completed on a short path too.
graphql-core walks ``complete_value`` through the non-null wrapper, asks whether the type
is a list, a leaf, abstract or an object, then goes through ``complete_object_value``,
``collect_and_execute_subfields`` and ``execute_collected_subfields`` to the object's
fields: five calls per object. For a concrete object type (nullable or not), a value that
its ``is_type_of`` accepts and a selection outside any ``@defer``, the object's fields are
executed at once. Everything else (None, a rejected value, lists, leaves, abstract types,
deferred parts) takes graphql-core's ``complete_value`` as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from graphql import (
    FieldNode,
    GraphQLField,
    GraphQLLeafType,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    Undefined,
    is_leaf_type,
    is_non_null_type,
    is_object_type,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import Path
from graphql.pyutils.gather_with_cancel import gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import CustomGraphQLEnumType

#: The mark ``graph.lean`` puts on its attribute resolvers: the attribute they read.
ATTRIBUTE_MARK = "lean_attribute"


class _Read(NamedTuple):
    """A plain read: the attribute, the leaf type's coercion, whether None is an answer."""

    attribute: str
    coerce: Callable[[Any], Any]
    nullable: bool


class _Call(NamedTuple):
    """A field without arguments that is not a plain read, looked up once: what
    graphql-core's ``execute_field`` looks up for every object."""

    field: GraphQLField
    resolve: Callable[..., Any]
    nodes: list[FieldNode]


class _Plan(NamedTuple):
    """One selection on one parent type. It keeps its grouped field set alive: plans are
    found by the set's identity."""

    grouped: GroupedFieldSet
    parent_type: GraphQLObjectType
    fields: tuple[tuple[str, FieldDetailsList, _Read | None, _Call | None], ...]


class LeanExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plans: dict[int, _Plan] = {}
        # By the id of a field's return type (pinned by the entry): the object type its
        # values are completed as on the short path, or None for any other type.
        self._objects: dict[int, tuple[GraphQLOutputType, GraphQLObjectType | None]] = {}

    def execute_fields(self, parent_type: GraphQLObjectType, source_value: Any,
                       path: Path | None, grouped_field_set: GroupedFieldSet,
                       position_context: Any) -> Any:
        plan = self._plans.get(id(grouped_field_set))
        if plan is None or plan.grouped is not grouped_field_set \
                or plan.parent_type is not parent_type:
            plan = self._plan(parent_type, grouped_field_set)
        results: dict[str, Any] = {}
        pending: list[str] | None = None
        is_awaitable = self.is_awaitable
        try:
            for name, fields, read, call in plan.fields:
                if read is not None:
                    try:
                        value = getattr(source_value, read.attribute)
                        if value is None:
                            if read.nullable:
                                results[name] = None
                                continue
                        else:
                            coerced = read.coerce(value)
                            if coerced is not None and coerced is not Undefined:
                                results[name] = coerced
                                continue
                    except Exception:  # graphql-core reports it: the field goes its way
                        pass
                field_path = Path(path, name, parent_type.name)
                result = self.execute_field(
                    parent_type, source_value, fields, field_path, position_context) \
                    if call is None else self._execute_call(
                        call, parent_type, source_value, fields, field_path,
                        position_context)
                if result is not Undefined:  # graphql-core leaves out unknown fields
                    results[name] = result
                    if is_awaitable(result):
                        if pending is None:
                            pending = []
                        pending.append(name)
        except Exception:
            if pending:  # settled, as graphql-core does: they may fail too
                self.settle_in_background([results[name] for name in pending])
            raise
        if pending is None:
            return results
        return _awaited(results, pending)

    def complete_value(self, return_type: GraphQLOutputType,
                       field_details_list: FieldDetailsList, info: GraphQLResolveInfo,
                       path: Path, result: Any, position_context: Any) -> Any:
        entry = self._objects.get(id(return_type))
        if entry is None or entry[0] is not return_type:
            entry = self._object_entry(return_type)
        object_type = entry[1]
        if object_type is None or result is None or position_context is not None \
                or isinstance(result, Exception):
            return super().complete_value(return_type, field_details_list, info, path,
                                          result, position_context)
        is_type_of = object_type.is_type_of
        if is_type_of is not None:
            verdict = is_type_of(result, info)
            if verdict is not True:
                # Rejected, or asked asynchronously: graphql-core's own way, which asks
                # again (a type check has no side effects) and reports a rejection.
                close = getattr(verdict, "close", None)
                if close is not None:
                    close()
                return super().complete_value(return_type, field_details_list, info,
                                              path, result, position_context)
        grouped, defer_usages, _ = self.collect_subfields(object_type, field_details_list)
        if defer_usages:
            return super().complete_value(return_type, field_details_list, info, path,
                                          result, position_context)
        return self.execute_fields(object_type, result, path, grouped, None)

    def _execute_call(self, call: _Call, parent_type: GraphQLObjectType, source: Any,
                      fields: FieldDetailsList, path: Path, position_context: Any) -> Any:
        """graphql-core's ``execute_field`` for a field without arguments, with what it
        looks up per object (the field, its resolver through middleware, the field
        nodes) taken from the plan."""
        field = call.field
        return_type = field.type
        info = self.build_resolve_info(field, call.nodes, parent_type, path)
        try:
            result = call.resolve(source, info)
            if self.is_awaitable(result):
                return self.complete_awaitable_value(return_type, fields, info, path,
                                                     result, position_context)
            completed = self.complete_value(return_type, fields, info, path, result,
                                            position_context)
            if self.is_awaitable(completed):
                return _completed_later(self, completed, return_type, fields, path)
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, fields, path)
            return None
        return completed

    def _object_entry(self, return_type: GraphQLOutputType
                      ) -> tuple[GraphQLOutputType, GraphQLObjectType | None]:
        inner = return_type.of_type if is_non_null_type(return_type) else return_type  # type: ignore[attr-defined]
        entry = (return_type, inner if is_object_type(inner) else None)
        self._objects[id(return_type)] = entry
        return entry

    def _plan(self, parent_type: GraphQLObjectType, grouped: GroupedFieldSet) -> _Plan:
        fields = tuple((name, details, *self._field_plan(parent_type, details))
                       for name, details in grouped.items())
        plan = _Plan(grouped, parent_type, fields)
        self._plans[id(grouped)] = plan
        return plan

    def _field_plan(self, parent_type: GraphQLObjectType, field_details_list: FieldDetailsList
                    ) -> tuple[_Read | None, _Call | None]:
        """How the field is answered: a plain read, a planned call, or (neither: unknown
        fields, arguments) graphql-core's ``execute_field``."""
        field_def = self.schema.get_field(parent_type, field_details_list[0].node.name.value)
        if field_def is None or field_def.args \
                or any(details.node.arguments for details in field_details_list):
            return None, None
        resolve = field_def.resolve or self.field_resolver
        middleware = self.middleware_manager
        wrapped = middleware.get_field_resolver(resolve) if middleware is not None \
            else resolve
        call = _Call(field_def, wrapped, [details.node for details in field_details_list])
        attribute = getattr(resolve, ATTRIBUTE_MARK, None)
        if attribute is None or wrapped is not resolve:
            return None, call
        return_type = field_def.type
        nullable = not is_non_null_type(return_type)
        leaf = return_type if nullable else return_type.of_type  # type: ignore[union-attr]
        if not is_leaf_type(leaf):
            return None, call
        return _Read(attribute, _coercion(leaf), nullable), call


#: Output coercions of Strawberry enum types, by the type's id (the entry pins the type).
_ENUM_COERCIONS: dict[int, tuple[GraphQLLeafType, Callable[[Any], Any]]] = {}


def _coercion(leaf: GraphQLLeafType) -> Callable[[Any], Any]:
    """The leaf type's output coercion. Strawberry's enum types look a member's name up
    by comparing it with each of the enum's values in turn (a connector's status: nine);
    here a dict answers for the members, and anything else is left to the type."""
    if not isinstance(leaf, CustomGraphQLEnumType):
        return leaf.coerce_output_value
    entry = _ENUM_COERCIONS.get(id(leaf))
    if entry is not None and entry[0] is leaf:
        return entry[1]
    names: dict[Any, str] = {}
    try:
        for name, value in leaf.values.items():
            names.setdefault(value.value, name)  # the first name, as Strawberry finds it
    except TypeError:  # an unhashable value
        return leaf.coerce_output_value
    members, general = leaf.wrapped_cls, leaf.coerce_output_value

    def coerce(value: Any) -> Any:
        if isinstance(value, members):
            return names[value.value]  # a KeyError goes the general way, which reports
        return general(value)
    _ENUM_COERCIONS[id(leaf)] = (leaf, coerce)
    return coerce


async def _completed_later(executor: LeanExecutionContext, completed: Any,
                           return_type: GraphQLOutputType, fields: FieldDetailsList,
                           path: Path) -> Any:
    """A completion that turned out awaitable, its error handled as graphql-core's
    ``execute_field`` handles it."""
    try:
        return await completed
    except Exception as raw_error:
        executor.handle_field_error(raw_error, return_type, fields, path)
        return None


async def _awaited(results: dict[str, Any], pending: list[str]) -> dict[str, Any]:
    """``results`` with its awaitable answers awaited in place (so in selection order),
    together, as graphql-core's ``execute_fields`` does."""
    if len(pending) == 1:
        name = pending[0]
        results[name] = await results[name]
    else:
        values = await gather_with_cancel(*(results[name] for name in pending))
        results.update(zip(pending, values, strict=True))
    return results
