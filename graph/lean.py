"""Lean field resolvers: the same resolver functions, called without Strawberry's generic
per-call machinery.

Strawberry wraps every resolver in a chain built for the general case: it converts the
field's arguments into Python inputs, runs field extensions through ``functools.reduce``
and ``partial``, binds ``self``/``info``/``root`` by inspecting the signature, and hands
plain attribute fields to a default resolver through two more calls. A nested page such
as ``stations(first: 100) { connectors { activeSession { user vehicle } } }`` makes about
1,100 resolver calls and 1,800 attribute reads, and that chain was a fifth of its time
(``python -m bench.nested_query``).

For the fields where the chain has nothing to do, this pass installs a direct resolver
on graphql-core's field once the schema is built:

* attribute fields (no resolver, no field extension): ``getattr(source, python_name)``,
  which is what Strawberry's default resolver does;
* resolver fields without field extensions, whose resolver takes ``self``, optionally
  ``info`` and the field's arguments: the resolver's function called with the parent as
  ``self``, the same ``Info`` object Strawberry would build and the arguments the request
  gave, by their Python names. Arguments of a plain scalar type (``int``, ``str``,
  ``float``, ``bool``, optional or not) are passed as graphql-core coerced them, which is
  what Strawberry's conversion returns for them; any other argument (inputs, enums,
  lists, IDs, ``Maybe``) goes through Strawberry's own ``convert_argument``. Strawberry's
  generic path converted every argument name to camelCase again on every call: ~40 µs for
  ``stations(first:)`` alone.

Everything else (permission or other field extensions, ``root``/``parent`` parameters,
exception handlers) keeps Strawberry's resolver. Schema extensions
are unaffected: none of ours hooks ``resolve``, and one that did would still run as
graphql-core middleware around these resolvers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import strawberry
from graphql import GraphQLField, GraphQLObjectType, GraphQLResolveInfo
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.arguments import convert_argument
from strawberry.types.base import StrawberryOptional
from strawberry.types.field import StrawberryField

from graph.executor import ATTRIBUTE_MARK

Resolve = Callable[..., Any]


def _attribute(name: str) -> Resolve:
    def resolve(source: Any, _info: GraphQLResolveInfo) -> Any:
        return getattr(source, name)
    # Strawberry's mark for a plain attribute read (its tracing extensions skip those).
    resolve._is_default = True  # type: ignore[attr-defined]
    # And ours: graph.executor answers such a field without calling the resolver.
    setattr(resolve, ATTRIBUTE_MARK, name)
    return resolve


#: Argument types whose converted value is the one graphql-core coerced.
_PLAIN_SCALARS = (int, str, float, bool)


def _argument_plan(field: StrawberryField, schema: strawberry.Schema
                   ) -> list[tuple[str, str, Callable[[Any, Any], Any] | None]]:
    """Per argument: its GraphQL name, its Python name, and its conversion (None: the
    value as graphql-core coerced it)."""
    config, registry = schema.config, schema.schema_converter.scalar_registry
    plan: list[tuple[str, str, Callable[[Any, Any], Any] | None]] = []
    for argument in field.arguments:
        assert argument.python_name
        graphql_name = config.name_converter.from_argument(argument)
        argument_type = argument.type
        if type(argument_type) is StrawberryOptional:  # not Maybe, its subclass
            argument_type = argument_type.of_type
        convert: Callable[[Any, Any], Any] | None = None
        if argument_type not in _PLAIN_SCALARS:
            def convert(value: Any, info: Any, _type: Any = argument.type,
                        _name: str = graphql_name) -> Any:
                return convert_argument(value, _type, registry, config, info, path=(_name,))
        plan.append((graphql_name, argument.python_name, convert))
    return plan


def _with_arguments(function: Callable[..., Any], field: StrawberryField,
                    info_class: type[strawberry.Info], info: inspect.Parameter | None,
                    schema: strawberry.Schema) -> Resolve:
    plan = _argument_plan(field, schema)
    info_name = info.name if info is not None else None

    def resolve(source: Any, raw: GraphQLResolveInfo, **given: Any) -> Any:
        strawberry_info = info_class(_raw_info=raw, _field=field)
        arguments: dict[str, Any] = {}
        for graphql_name, python_name, convert in plan:
            if graphql_name in given:  # absent ones keep the resolver's defaults
                value = given[graphql_name]
                arguments[python_name] = value if convert is None \
                    else convert(value, strawberry_info)
        if info_name is not None:
            arguments[info_name] = strawberry_info
        return function(source, **arguments)
    return resolve


def _method(function: Callable[..., Any], field: StrawberryField,
            info_class: type[strawberry.Info], info: inspect.Parameter | None,
            parameters: list[inspect.Parameter]) -> Resolve:
    if info is None:
        def resolve_plain(source: Any, _info: GraphQLResolveInfo) -> Any:
            return function(source)
        return resolve_plain

    if parameters[1:2] == [info] and info.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                   inspect.Parameter.POSITIONAL_OR_KEYWORD):
        # The usual ``def field(self, info)``: positional, no keyword dict per call.
        def resolve_positional(source: Any, raw: GraphQLResolveInfo) -> Any:
            return function(source, info_class(_raw_info=raw, _field=field))
        return resolve_positional

    info_name = info.name

    def resolve(source: Any, raw: GraphQLResolveInfo) -> Any:
        return function(source, **{info_name: info_class(_raw_info=raw, _field=field)})
    return resolve


def lean_resolver(field: StrawberryField, info_class: type[strawberry.Info],
                  default_resolver: Callable[..., Any] = getattr,
                  schema: strawberry.Schema | None = None) -> Resolve | None:
    """The direct resolver for ``field``, or ``None`` where Strawberry's is needed (fields
    with arguments need the ``schema`` their arguments are converted for)."""
    if field.extensions:
        return None
    resolver = field.base_resolver
    if resolver is None:
        # Attribute fields read with the schema's default resolver; only the plain
        # ``getattr`` one (Strawberry's default) has a direct form here.
        return _attribute(field.python_name) if default_resolver is getattr else None
    if resolver.self_parameter is None or resolver.root_parameter is not None \
            or resolver.parent_parameter is not None:
        return None
    # Only plain functions defined on the type: their first parameter is ``self``.
    function = resolver.wrapped_func
    if not callable(function) or getattr(function, "__self__", None) is not None:
        return None
    if field.arguments:
        if schema is None:
            return None
        return _with_arguments(function, field, info_class, resolver.info_parameter, schema)
    return _method(function, field, info_class, resolver.info_parameter,
                   list(resolver.signature.parameters.values()))


def install(schema: strawberry.Schema) -> list[str]:
    """Replace the resolvers that can be lean; returns the ``Type.field`` names replaced."""
    if schema.exception_handlers:
        return []  # exception handlers need Strawberry's resolver wrapper
    info_class = schema.config.info_class
    default_resolver = schema.config.default_resolver
    replaced = []
    for type_name, graphql_type in schema._schema.type_map.items():
        if not isinstance(graphql_type, GraphQLObjectType) or type_name.startswith("__") \
                or type_name == "Subscription":
            continue
        for field_name, graphql_field in graphql_type.fields.items():
            field = _strawberry_field(graphql_field)
            if field is None:
                continue
            lean = lean_resolver(field, info_class, default_resolver, schema)
            if lean is not None:
                graphql_field.resolve = lean
                replaced.append(f"{type_name}.{field_name}")
    return replaced


def _strawberry_field(graphql_field: GraphQLField) -> StrawberryField | None:
    definition = (graphql_field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    return definition if isinstance(definition, StrawberryField) else None
