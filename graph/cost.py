"""How many objects a query may ask for, estimated before it runs.

Depth, alias and token limits (``graph.pipeline``) do not bound a query's size: thirty
aliases of ``stations(first: 100) { nodes { company { stations(first: 100) … } } }`` four
levels deep stay within all three and ask for billions of objects. Here every field that
returns objects counts how many it may return: a page (``first``/``last``, else the default
page size) under each of its parents, a plain list ``LIST_GUESS`` per parent, a single
object one. A query whose estimate exceeds ``MAX_OBJECTS`` is refused before execution
with ``QUERY_TOO_COMPLEX``; a subscription whose every event would exceed it, likewise.
Estimates err high (fragments on different types all count);
a normal screen asks for a few thousand objects at most.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    ObjectValueNode,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    get_operation_ast,
    is_list_type,
)

from domain.query import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from domain.services.configuration import MAX_KEYS

MAX_OBJECTS = 20_000
#: A plain list under one parent (a station's connectors): a generous typical size.
LIST_GUESS = 10
#: A plain list at the root: analytics rows (``energyTrend``, ``utilization``,
#: ``availability``), up to 10,000 of them (``analytics.MAX_CELLS``). Counted as ten a
#: bucket's station each was let through: per-row stations with their connectors and
#: sessions asked for 30 MB and held the event loop (and the chargers on it) for 10-27 s
#: (QA s18). A large grouped report, a thousand rows and each row's station by name,
#: stays well within ``MAX_OBJECTS``.
ROOT_LIST_GUESS = 1_000
#: Plain lists below the root that may be far longer than ``LIST_GUESS``, by (type,
#: field): a fault report's groups (one per station, connector and error code: counted
#: as analytics rows are) and a station's configuration (as many keys as its charger
#: reported, up to ``configuration.MAX_KEYS``). Counted as ten, thirty aliases of them
#: answered 60,000-190,000 objects for an estimate of a few hundred (QA s18).
LARGE_LISTS: dict[tuple[str, str], int] = {
    ("FaultReport", "groups"): ROOT_LIST_GUESS,
    ("Station", "configuration"): MAX_KEYS,
}
#: Pages whose ``filter`` names a unique key, by (type, field): the filter's field that
#: names one record at most. ``stations(filter: {cpId: "X"}) { nodes { configuration } }``
#: is one station's keys, not a default page's (QA s23: refused as 40,000 objects).
ONE_BY: dict[tuple[str, str], str] = {
    ("Query", "stations"): "cpId",
}
#: Pages whose ``filter`` lists unique keys, by (type, field): at most as many records as
#: the list holds. ``cpIds`` replaces the deprecated ``cpId`` (QA s30), and a client
#: moving to it was refused the one station's configuration it had been answered.
ANY_OF: dict[tuple[str, str], str] = {
    ("Query", "stations"): "cpIds",
}


def estimated_objects(schema: GraphQLSchema, query: str, document: DocumentNode,
                      operation_name: str | None, variables: dict[str, Any] | None) -> int:
    """Objects the operation (``document``, parsed from ``query``) may return at most,
    for a subscription per event. Remembered per query text, operation and page-size
    variables: a repeated request costs a dictionary lookup."""
    sizes = _sizes(variables or {})
    texts = _texts(variables or {})
    key = (id(schema), query, operation_name, sizes, texts)
    found = _ESTIMATES.get(key)
    if found is None:
        found = _estimate(schema, document, operation_name, dict(sizes), texts)
        if len(_ESTIMATES) >= CACHED_ESTIMATES:
            _ESTIMATES.pop(next(iter(_ESTIMATES)))  # the oldest
        _ESTIMATES[key] = found
    return found


CACHED_ESTIMATES = 512
_ESTIMATES: dict[tuple[Any, ...], int] = {}


#: A variable given as an explicit null: it replaces the declared default, and the
#: argument then counts as not given (the resolvers page by ``last`` or their default).
NULL = -1


def _size(value: Any) -> int | None:
    """What a variable says about a page: a whole number (GraphQL takes 100.0 for an
    Int), a list's length (``nodes(ids: $ids)``), or ``NULL``."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return len(value)
    return None


def _sizes(variables: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    """What the variables say of sizes (``_size``), and the lengths of the lists in those
    given as objects (``"f.cpIds"``): what an ``ANY_OF`` filter may list its keys in."""
    found: dict[str, int] = {}
    for name, value in variables.items():
        if (size := _size(value)) is not None:
            found[name] = size
        elif isinstance(value, dict):
            found.update((f"{name}.{field}", len(inner)) for field, inner in value.items()
                         if isinstance(inner, list))
    return tuple(sorted(found.items()))


def _texts(variables: dict[str, Any]) -> frozenset[str]:
    """The variables given as text, and the text fields of those given as objects
    (``"filter.cpId"``): what an ``ONE_BY`` filter may name its key with."""
    found: set[str] = set()
    for name, value in variables.items():
        if isinstance(value, str):
            found.add(name)
        elif isinstance(value, dict):
            found.update(f"{name}.{field}" for field, inner in value.items()
                         if isinstance(inner, str))
    return frozenset(found)


def _estimate(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None,
              sizes: dict[str, int], texts: frozenset[str] = frozenset()) -> int:
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return 0
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    # A variable left out takes its default: ``query($n: Int = 100)``.
    for definition in operation.variable_definitions or ():
        name, default = definition.variable.name.value, definition.default_value
        if name not in sizes and default is not None:
            size = _literal_size(default)
            if size is not None:
                sizes = {**sizes, name: size}
    return _Estimator(schema, fragments, sizes, texts).selection(
        root, operation.selection_set, 1, None)


def _literal_size(value: ValueNode) -> int | None:
    if isinstance(value, IntValueNode):
        return int(value.value)
    if isinstance(value, ListValueNode):
        return len(value.values)
    return None


def _filter_field(node: FieldNode, key: str) -> ValueNode | str | None:
    """The field ``key`` of ``node``'s ``filter`` argument as written, or, the filter
    given as a variable, the name its field has among the variables (``"f.cpId"``)."""
    for argument in node.arguments or ():
        if argument.name.value != "filter":
            continue
        value = argument.value
        if isinstance(value, VariableNode):
            return f"{value.name.value}.{key}"
        if isinstance(value, ObjectValueNode):
            return next((f.value for f in value.fields if f.name.value == key), None)
    return None


class _Estimator:
    def __init__(self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode],
                 sizes: dict[str, int], texts: frozenset[str]) -> None:
        self.schema = schema
        self.fragments = fragments
        self.sizes = sizes
        self.texts = texts
        #: ``fragment``'s estimates per (fragment, type, page), for one parent.
        self.measured: dict[tuple[str, str, int | None], int] = {}

    def selection(self, parent: GraphQLNamedType, selection_set: SelectionSetNode,
                  parents: int, page: int | None) -> int:
        """Objects below ``parents`` objects of type ``parent``. ``page``: inside a
        connection, its lists (``nodes``, ``edges``) hold a page, not ``LIST_GUESS``."""
        total = 0
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                total += self.field(parent, node, parents, page)
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition
                typed = self.schema.get_type(condition.name.value) if condition else parent
                total += self.selection(typed or parent, node.selection_set, parents, page)
            elif isinstance(node, FragmentSpreadNode):
                total += parents * self.fragment(parent, node.name.value, page)
        return total

    def fragment(self, parent: GraphQLNamedType, name: str, page: int | None) -> int:
        """Objects below ONE object for a spread of fragment ``name``: estimated once per
        fragment, type and page, since an estimate grows in proportion to its parents.
        Walking a fragment again at each spread took exponential time: a chain of
        fragments each spreading the next twice, 21 deep, held the event loop for
        seconds."""
        fragment = self.fragments.get(name)
        if fragment is None:
            return 0
        typed = self.schema.get_type(fragment.type_condition.name.value) or parent
        key = (name, typed.name, page)
        found = self.measured.get(key)
        if found is None:
            found = self.measured[key] = self.selection(typed, fragment.selection_set, 1,
                                                        page)
        return found

    def field(self, parent: GraphQLNamedType, node: FieldNode, parents: int,
              page: int | None) -> int:
        if node.selection_set is None or not isinstance(
                parent, GraphQLObjectType | GraphQLInterfaceType):
            return 0  # a leaf, or a union's own fields (only __typename)
        definition = parent.fields.get(node.name.value)
        if definition is None:
            return 0
        paged = "first" in definition.args or "last" in definition.args
        if paged:
            count, inner_page = parents, self._page(node)
            if (key := ONE_BY.get((parent.name, node.name.value))) is not None \
                    and self._names(node, key):
                inner_page = min(inner_page, 1)
            if (key := ANY_OF.get((parent.name, node.name.value))) is not None \
                    and (listed := self._listed(node, key)) is not None:
                inner_page = min(inner_page, listed)
        elif "ids" in definition.args:  # nodes(ids: [...]): one object per id
            count, inner_page = parents * self._ids(node), None
        elif is_list_type(get_nullable_type(definition.type)):
            guess = ROOT_LIST_GUESS if parent is self.schema.query_type \
                else LARGE_LISTS.get((parent.name, node.name.value), LIST_GUESS)
            count, inner_page = parents * (page or guess), None
        else:
            count, inner_page = parents, None
        return count + self.selection(get_named_type(definition.type), node.selection_set,
                                      count, inner_page)

    def _page(self, node: FieldNode) -> int:
        sizes = [size for name in ("first", "last")
                 if (size := self._argument(node, name)) is not None]
        if not sizes:
            return DEFAULT_PAGE_SIZE
        return max(0, min(max(sizes), MAX_PAGE_SIZE))  # both given: the larger

    def _names(self, node: FieldNode, key: str) -> bool:
        """Whether the field's ``filter`` gives ``key`` as text: literally, or by a
        variable given text (the filter itself a variable holding it, or its field)."""
        given = _filter_field(node, key)
        if isinstance(given, str):
            return given in self.texts
        return isinstance(given, StringValueNode) or (
            isinstance(given, VariableNode) and given.name.value in self.texts)

    def _listed(self, node: FieldNode, key: str) -> int | None:
        """How many items the field's ``filter`` lists in ``key``: literally, or by a
        variable (the filter itself a variable holding it, or its field); ``None`` when
        it gives no list."""
        given = _filter_field(node, key)
        if isinstance(given, str):
            return self.sizes.get(given)
        if isinstance(given, VariableNode):
            size = self.sizes.get(given.name.value)
            return None if size == NULL else size
        return _literal_size(given) if isinstance(given, ListValueNode) else None

    def _ids(self, node: FieldNode) -> int:
        size = self._argument(node, "ids")
        return MAX_PAGE_SIZE if size is None else max(0, size)

    def _argument(self, node: FieldNode, name: str) -> int | None:
        for argument in node.arguments or ():
            if argument.name.value == name:
                value = argument.value
                if isinstance(value, VariableNode):
                    size = self.sizes.get(value.name.value)
                    return None if size == NULL else size
                return _literal_size(value)
        return None

