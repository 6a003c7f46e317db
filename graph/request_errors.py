"""Codes (and fields) for the errors graphql-core itself raises about a request: a
syntax error, a document the schema does not validate, a variable its type refuses.

The README promises every top-level error an ``extensions.code``, and a ``field`` when an
argument is at fault; these came with neither (QA s18: ``state: NOPE``, ``first:
2147483648``, a required variable left out), so a client matching on codes could not tell
them from anything else. The codes are those GraphQL servers commonly use.
"""

from __future__ import annotations

import re
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    GraphQLError,
    ListValueNode,
    Node,
    ObjectFieldNode,
    Visitor,
    visit,
)

PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
BAD_USER_INPUT = "BAD_USER_INPUT"

#: graphql-core's words for a variable its type refuses: "Variable '$f' has invalid
#: value at .state: …", "Variable '$n' has invalid value: …", "Variable '$n' of required
#: type 'Int!' was not provided."
_VARIABLE = re.compile(r"Variable '\$(\w+)'(?: has invalid value at ((?:\.\w+|\[\d+\])+))?")


def _coded(error: GraphQLError, code: str, field: str | None = None) -> GraphQLError:
    if error.extensions and "code" in error.extensions:
        return error  # ours (a size limit), already coded
    extensions: dict[str, Any] = {**(error.extensions or {}), "code": code}
    if field:
        extensions["field"] = field
    return GraphQLError(error.message, error.nodes, error.source, error.positions,
                        error.path, error.original_error, extensions)


def parse_failed(error: GraphQLError) -> GraphQLError:
    """The syntax error itself, coded: its type (``GraphQLSyntaxError``) is how the
    websocket door tells a query that does not parse."""
    if not error.extensions or "code" not in error.extensions:
        error.extensions = {**(error.extensions or {}), "code": PARSE_FAILED}
    return error


def validation_failed(errors: list[GraphQLError], document: DocumentNode
                      ) -> list[GraphQLError]:
    """Validation errors, each with the argument (``filter.state``) whose literal value is
    at fault when it is one. The paths come from one walk of the document, whatever the
    number of errors (a walk per error cost half a second of event loop for a 5,000-token
    document with 100 bad values: QA s18)."""
    if not errors:
        return errors
    paths = _argument_paths(document)
    return [_coded(error, VALIDATION_FAILED, _path_of(error, paths)) for error in errors]


def _path_of(error: GraphQLError, paths: dict[tuple[int, int], str]) -> str | None:
    node = error.nodes[0] if error.nodes else None
    if node is None or node.loc is None:
        return None
    return paths.get((node.loc.start, node.loc.end))


def variable_refused(error: GraphQLError) -> GraphQLError:
    """A variable refused before execution, its path as the field (``f.state``); other
    errors unchanged."""
    if error.path is not None or not isinstance(error.original_error, GraphQLError | None):
        return error  # raised while executing: not about a variable's value
    found = _VARIABLE.match(error.message)
    if found is None:
        return error
    name, path = found.groups()
    field = name + (path or "").replace("[", ".").replace("]", "")
    return _coded(error, BAD_USER_INPUT, field)


class _ArgumentPaths(Visitor):
    """The dotted path of argument and input-object field names, and list indexes, of
    every node inside an argument, by the node's place in the document: the path a
    variable's refusal names too (``input.connectors.1.type``)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.paths: dict[tuple[int, int], str] = {}

    def enter(self, node: Node, key: Any, _parent: Any, _path: Any, ancestors: Any) -> Any:
        if isinstance(node, ArgumentNode | ObjectFieldNode):
            self.names.append(node.name.value)
        elif _list_item(key, ancestors):
            self.names.append(str(key))
        if self.names and node.loc is not None:
            self.paths.setdefault((node.loc.start, node.loc.end), ".".join(self.names))
        return None

    def leave(self, node: Node, key: Any, _parent: Any, _path: Any, ancestors: Any) -> Any:
        if isinstance(node, ArgumentNode | ObjectFieldNode) or _list_item(key, ancestors):
            self.names.pop()
        return None


def _list_item(key: Any, ancestors: Any) -> bool:
    """Whether the visited node is an item of a list value (its key is its index)."""
    return isinstance(key, int) and bool(ancestors) and isinstance(ancestors[-1],
                                                                    ListValueNode)


def _argument_paths(document: DocumentNode) -> dict[tuple[int, int], str]:
    finder = _ArgumentPaths()
    visit(document, finder)
    return finder.paths
