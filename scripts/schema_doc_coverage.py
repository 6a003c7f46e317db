"""Counts what the GraphQL schema leaves undescribed, as GraphiQL users see it.

Reads the exported SDL (``schema.graphql``, or the file given) and counts the types,
fields (input fields included), arguments and enum values without a description, by the
walk ``tests/graph/test_schema_descriptions.py`` holds the schema to
(``graph.schema_docs.undescribed``). Introspection types and the built-in scalars are
left out: graphql-core describes those.

    python scripts/schema_doc_coverage.py              # the counts
    python scripts/schema_doc_coverage.py --list       # and every undescribed coordinate
    python scripts/schema_doc_coverage.py --list Query # only coordinates starting so
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from graphql import build_schema

ROOT = Path(__file__).resolve().parents[1]
# This tree's ``graph``, whatever else is installed (a shared venv may hold another).
sys.path.insert(0, str(ROOT))

from graph.schema_docs import undescribed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("schema", nargs="?", default=str(ROOT / "schema.graphql"))
    parser.add_argument("--list", nargs="?", const="", default=None, metavar="PREFIX",
                        help="print the undescribed coordinates (starting with PREFIX)")
    args = parser.parse_args()
    sdl = Path(args.schema).read_text(encoding="utf-8")
    found, totals = undescribed(build_schema(sdl))
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
