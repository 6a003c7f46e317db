"""The depth and alias limits of a document, measured in time linear in its size.

Strawberry's ``QueryDepthLimiter`` and ``MaxAliasesLimiter`` walk a fragment again at every
spread of it. A chain of fragments each spreading the next twice (``fragment F0 on Query
{...F1 ...F1}`` …, 21 of them in 856 characters) took 2^21 walks, and the event loop was
held for 15 s: every request, ``/healthz`` and every charger waited. Here each fragment
is measured once per document, after the fragments it spreads (``fragment_order``), and a
spread adds the measure already taken. The numbers are Strawberry's (a fragment spread
twice counts its aliases twice, introspection fields add no depth) and so are the
messages; a too-deep operation is reported once, at the operation.

Recursion follows the nesting of fields within one selection (which the parser bounds),
never a chain of fragments: a chain of hundreds of fragments each spreading the next
made Strawberry's depth limiter fail with a ``RecursionError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
)
from graphql.validation import ASTValidationRule, ValidationRule

#: The code every limit on a document's shape answers with (the size limit's too), so a
#: client tells "make the query smaller" from other errors by one code.
TOO_COMPLEX = {"code": "QUERY_TOO_COMPLEX"}


def fragments_of(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions
            if isinstance(d, FragmentDefinitionNode)}


def spreads_in(selection_set: SelectionSetNode) -> Iterator[str]:
    """The names of the fragments spread in ``selection_set``, at any depth of its fields
    (not through the fragments themselves)."""
    for selection in selection_set.selections:
        if isinstance(selection, FragmentSpreadNode):
            yield selection.name.value
        elif isinstance(selection, FieldNode | InlineFragmentNode) \
                and selection.selection_set is not None:
            yield from spreads_in(selection.selection_set)


def fragment_order(fragments: dict[str, FragmentDefinitionNode]) -> list[str]:
    """The fragments, each after every fragment it spreads (an iterative depth-first
    walk: a chain of fragments may be as long as the token limit allows). A cycle, which
    validation refuses anyway, is cut where it closes; unknown names are left out."""
    order: list[str] = []
    state: dict[str, bool] = {}  # False: being walked, True: placed
    for root in fragments:
        if root in state:
            continue
        state[root] = False
        stack = [(root, iter(list(spreads_in(fragments[root].selection_set))))]
        while stack:
            name, pending = stack[-1]
            child = next(pending, None)
            if child is None:
                stack.pop()
                state[name] = True
                order.append(name)
            elif child in fragments and child not in state:
                state[child] = False
                stack.append((child, iter(list(spreads_in(fragments[child].selection_set)))))
    return order


def _measure(fragments: dict[str, FragmentDefinitionNode],
             measure: Callable[[SelectionSetNode, dict[str, int]], int]) -> dict[str, int]:
    """``measure`` of every fragment, taken once each, in ``fragment_order``."""
    measured: dict[str, int] = {}
    for name in fragment_order(fragments):
        measured[name] = measure(fragments[name].selection_set, measured)
    return measured


def depth(selection_set: SelectionSetNode, fragments: dict[str, int]) -> int:
    """Levels of fields with selections below ``selection_set``, as Strawberry counts
    them (a leaf adds none; nor does an introspection field, whose selection is not
    looked into); ``fragments``: the depth of each fragment."""
    deepest = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.selection_set is None or selection.name.value.startswith("__"):
                continue
            deepest = max(deepest, 1 + depth(selection.selection_set, fragments))
        elif isinstance(selection, InlineFragmentNode):
            deepest = max(deepest, depth(selection.selection_set, fragments))
        elif isinstance(selection, FragmentSpreadNode):
            deepest = max(deepest, fragments.get(selection.name.value, 0))
    return deepest


def aliases(selection_set: SelectionSetNode, fragments: dict[str, int]) -> int:
    """Aliased fields in ``selection_set``, each spread of a fragment counting its
    aliases again (``fragments``: their counts), as Strawberry counts them."""
    count = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            count += selection.alias is not None
            if selection.selection_set is not None:
                count += aliases(selection.selection_set, fragments)
        elif isinstance(selection, InlineFragmentNode):
            count += aliases(selection.selection_set, fragments)
        elif isinstance(selection, FragmentSpreadNode):
            count += fragments.get(selection.name.value, 0)
    return count


def limit_rule(max_depth: int, max_aliases: int) -> type[ASTValidationRule]:
    """A validation rule refusing an operation deeper than ``max_depth`` and a document
    whose operations have more than ``max_aliases`` aliases in all."""

    class DocumentLimits(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            document = context.document
            fragments = fragments_of(document)
            depths = _measure(fragments, depth)
            alias_counts = _measure(fragments, aliases)
            operations = [d for d in document.definitions
                          if isinstance(d, OperationDefinitionNode)]
            for operation in operations:
                if depth(operation.selection_set, depths) > max_depth:
                    name = operation.name.value if operation.name else "anonymous"
                    context.report_error(GraphQLError(
                        f"'{name}' exceeds maximum operation depth of {max_depth}",
                        operation, extensions=dict(TOO_COMPLEX)))
            found = sum(aliases(o.selection_set, alias_counts) for o in operations)
            if found > max_aliases:
                context.report_error(GraphQLError(
                    f"{found} aliases found. Allowed: {max_aliases}",
                    extensions=dict(TOO_COMPLEX)))

    return DocumentLimits
