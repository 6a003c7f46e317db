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


def validation_failed(error: GraphQLError, document: DocumentNode) -> GraphQLError:
    """A validation error, with the argument (``filter.state``) whose literal value is at
    fault when it is one."""
    node = error.nodes[0] if error.nodes else None
    return _coded(error, VALIDATION_FAILED,
                  _argument_path(document, node) if node is not None else None)


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


class _ArgumentPath(Visitor):
    """The dotted path of argument and input-object field names down to ``target``."""

    def __init__(self, target: Node) -> None:
        super().__init__()
        self.target = target
        self.names: list[str] = []
        self.found: str | None = None

    def enter(self, node: Node, *_: Any) -> Any:
        if self.found is not None:
            return self.BREAK
        if isinstance(node, ArgumentNode | ObjectFieldNode):
            self.names.append(node.name.value)
        if node is self.target or (node.loc is not None and self.target.loc is not None
                                   and node.loc.start == self.target.loc.start
                                   and node.loc.end == self.target.loc.end):
            if self.names:
                self.found = ".".join(self.names)
            return self.BREAK
        return None

    def leave(self, node: Node, *_: Any) -> Any:
        if isinstance(node, ArgumentNode | ObjectFieldNode):
            self.names.pop()
        return None


def _argument_path(document: DocumentNode, node: Node) -> str | None:
    finder = _ArgumentPath(node)
    visit(document, finder)
    return finder.found
