"""Counts what the GraphQL schema leaves undescribed, as GraphiQL users see it.

Reads the exported SDL (``schema.graphql``, or the file given) and counts the types,
fields (input fields included), arguments and enum values without a description.
Introspection types and the built-in scalars are left out: graphql-core describes those.

    python scripts/schema_doc_coverage.py              # the counts
    python scripts/schema_doc_coverage.py --list       # and every undescribed coordinate
    python scripts/schema_doc_coverage.py --list Query # only coordinates starting so
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    build_schema,
)
from graphql.type import introspection_types, specified_scalar_types

ROOT = Path(__file__).resolve().parents[1]


def undescribed(sdl: str) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Schema coordinates (``Type``, ``Type.field``, ``Type.field(arg:)``, ``Enum.VALUE``)
    without a description, by kind; and how many of each kind there are."""
    schema = build_schema(sdl)
    missing: dict[str, list[str]] = {"types": [], "fields": [], "arguments": [],
                                     "enum values": []}
    totals = dict.fromkeys(missing, 0)
    for name, gtype in sorted(schema.type_map.items()):
        if name in introspection_types or name in specified_scalar_types:
            continue
        totals["types"] += 1
        if not gtype.description:
            missing["types"].append(name)
        if isinstance(gtype, GraphQLObjectType | GraphQLInterfaceType):
            for field_name, field in gtype.fields.items():
                totals["fields"] += 1
                if not field.description:
                    missing["fields"].append(f"{name}.{field_name}")
                for arg_name, arg in field.args.items():
                    totals["arguments"] += 1
                    if not arg.description:
                        missing["arguments"].append(f"{name}.{field_name}({arg_name}:)")
        elif isinstance(gtype, GraphQLInputObjectType):
            for field_name, input_field in gtype.fields.items():
                totals["fields"] += 1
                if not input_field.description:
                    missing["fields"].append(f"{name}.{field_name}")
        elif isinstance(gtype, GraphQLEnumType):
            for value_name, value in gtype.values.items():
                totals["enum values"] += 1
                if not value.description:
                    missing["enum values"].append(f"{name}.{value_name}")
    return missing, totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("schema", nargs="?", default=str(ROOT / "schema.graphql"))
    parser.add_argument("--list", nargs="?", const="", default=None, metavar="PREFIX",
                        help="print the undescribed coordinates (starting with PREFIX)")
    args = parser.parse_args()
    found, totals = undescribed(Path(args.schema).read_text(encoding="utf-8"))
    for kind, names in found.items():
        print(f"{kind:12} {len(names):5} of {totals[kind]:5} undescribed")
    if args.list is not None:
        for names in found.values():
            for coordinate in names:
                if coordinate.startswith(args.list):
                    print(coordinate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
