"""Which schema coordinates of ours have no description: the one walk behind
``tests/graph/test_schema_descriptions.py`` (every coordinate must be described) and
``scripts/schema_doc_coverage.py`` (the counts of an SDL file). graphql-core's
introspection types and the built-in scalars are left out: it describes those itself."""

from __future__ import annotations

from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
)
from graphql.type import introspection_types, specified_scalar_types

#: The kinds of coordinate counted, in the order they are reported.
KINDS = ("types", "fields", "arguments", "enum values")


def _described(text: str | None) -> bool:
    return bool((text or "").strip())  # blank reads as nothing in GraphiQL's docs pane


def ours(name: str) -> bool:
    """Whether a named type is the schema's own, not graphql-core's."""
    return name not in introspection_types and name not in specified_scalar_types


def undescribed(schema: GraphQLSchema) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The coordinates without a description (``Type``, ``Type.field``,
    ``Type.field(arg:)``, ``Enum.VALUE``; input fields count as fields), by kind; and how
    many coordinates of each kind there are."""
    missing: dict[str, list[str]] = {kind: [] for kind in KINDS}
    totals = dict.fromkeys(KINDS, 0)
    for name, named in sorted(schema.type_map.items()):
        if not ours(name):
            continue
        for kind, coordinate, description in _coordinates(named):
            totals[kind] += 1
            if not _described(description):
                missing[kind].append(coordinate)
    return missing, totals


def _coordinates(named: GraphQLNamedType) -> list[tuple[str, str, str | None]]:
    """(kind, coordinate, description) of a type and of what it declares."""
    name = named.name
    found = [("types", name, named.description)]
    if isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
        for field_name, field in named.fields.items():
            found += _field(f"{name}.{field_name}", field)
    elif isinstance(named, GraphQLInputObjectType):
        found += [("fields", f"{name}.{field_name}", field.description)
                  for field_name, field in named.fields.items()]
    elif isinstance(named, GraphQLEnumType):
        found += [("enum values", f"{name}.{value_name}", value.description)
                  for value_name, value in named.values.items()]
    return found


def _field(coordinate: str, field: GraphQLField) -> list[tuple[str, str, str | None]]:
    return [("fields", coordinate, field.description),
            *(("arguments", f"{coordinate}({arg_name}:)", argument.description)
              for arg_name, argument in field.args.items())]
