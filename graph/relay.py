"""Relay plumbing: the Node interface, connections and how lists become pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import strawberry

from domain.entities import E, Record
from domain.errors import DomainError, ValidationError
from domain.query import (
    DEFAULT_PAGE_SIZE,
    DISTANCE,
    MAX_PAGE_SIZE,
    Filter,
    PageRequest,
    Sort,
    encode_cursor,
    nested_list,
    sort_value,
)
from graph.errors import graphql_error
from graph.ids import to_global_id

if TYPE_CHECKING:
    from graph.context import GraphContext

N = TypeVar("N")


@strawberry.interface(description="An object with a globally unique id (Relay).")
class Node:
    #: The record behind the node (every node type narrows it).
    _r: strawberry.Private[Any]

    # Encoded when asked for, not when a node is built: most nested rows of a page are
    # never asked for their id.
    @strawberry.field(description="Global id, opaque to clients.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(to_global_id(self._r.kind, self._r.id))


@strawberry.type(description="Paging state of a connection (Relay).")
class PageInfo:
    has_next_page: bool = strawberry.field(description=(
        "Paging forward: whether more records follow this page (pass `endCursor` as "
        "`after` for them). Paging backward: true when `before` was given."))
    has_previous_page: bool = strawberry.field(description=(
        "Paging backward (`last` or `before`): whether more records come before this page "
        "(pass `startCursor` as `before` for them). Paging forward: true when `after` was "
        "given."))
    start_cursor: str | None = strawberry.field(description=(
        "The first edge's cursor; null when the page is empty."))
    end_cursor: str | None = strawberry.field(description=(
        "The last edge's cursor; null when the page is empty."))


@strawberry.type(description="One record of a page, with its cursor.")
class Edge(Generic[N]):
    cursor: str = strawberry.field(description=(
        "Opaque keyset cursor of this record: pass it as `after` or `before`. Valid only "
        "for the same list and order."))
    node: N = strawberry.field(description="The record.")


@strawberry.type(description="A page of a list, with cursors to go on.")
class Connection(Generic[N]):
    edges: list[Edge[N]] = strawberry.field(description=(
        "The page's records with their cursors, in the list's order."))
    page_info: PageInfo = strawberry.field(description="Where this page is in the list.")
    _total: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="The node of every edge, for clients that need no cursors.")
    def nodes(self) -> list[N]:
        return [edge.node for edge in self.edges]

    @strawberry.field(description="How many records match, across all pages.")
    async def total_count(self) -> int:
        return await self._total()


@strawberry.enum(description="Sort direction.")
class OrderDirection(Enum):
    ASC = "ASC"
    DESC = "DESC"


#: What the arguments of every connection field mean. They are declared resolver by
#: resolver (a dozen lists at the root, more nested), and their rules are one
#: (``domain.query.PageRequest``), so they are said once, here, and given to every such
#: argument that has no description of its own when the schema is built
#: (``graph.schema.describe_shared_arguments``).
CONNECTION_ARGUMENTS = {
    "first": (f"Page size, paging forward from the start or from `after`: 0 to "
              f"{MAX_PAGE_SIZE}; {DEFAULT_PAGE_SIZE} when neither `first` nor `last` is "
              "given. Giving both `first` and `last` is an error (INVALID)."),
    "after": ("Keyset cursor (an edge's `cursor`, `pageInfo.endCursor`): the page starts "
              "after that record, so records added or removed meanwhile shift nothing. A "
              "cursor from another list or order is an INVALID_CURSOR error."),
    "last": (f"Page size, paging backward from the end or from `before`: 0 to "
             f"{MAX_PAGE_SIZE}. Giving both `first` and `last` is an error (INVALID)."),
    "before": ("Keyset cursor (an edge's `cursor`, `pageInfo.startCursor`): the page ends "
               "before that record; alone, it pages backward with the default size. A "
               "cursor from another list or order is an INVALID_CURSOR error."),
    "filter": ("Only the records meeting every condition given; without it, every record "
               "the viewer may see. A list condition matches any of its values, so an "
               "empty list matches nothing; left out or null, it asks nothing."),
    "orderBy": ("Sort keys, the first deciding first; `id` breaks ties. Without it, the "
                "field's default order. A `NAME` key, where the list has one, sorts names "
                "as people read them: case and accents ignored."),
}



@dataclass(frozen=True, slots=True)
class PageArgs:
    first: int | None = None
    after: str | None = None
    last: int | None = None
    before: str | None = None

    def request(self) -> PageRequest:
        try:
            return PageRequest(first=self.first, after=self.after, last=self.last,
                               before=self.before)
        except DomainError as exc:
            raise graphql_error(exc) from exc

    @property
    def simple_first(self) -> bool:
        """Only ``first`` given: the case a DataLoader can batch across parents."""
        return self.after is None and self.last is None and self.before is None

    @property
    def simple_last(self) -> bool:
        """Only ``last`` given: the end of the list, batched across parents too."""
        return self.last is not None and self.first is None and self.after is None \
            and self.before is None


Wrap = Callable[[Any, "GraphContext"], Any]


def sort_keys(order_by: Sequence[Any] | None, default: Sequence[Sort],
              origin: tuple[float, float] | None = None) -> list[Sort]:
    """``orderBy`` inputs (``field`` enum whose value is the domain field, ``direction``)
    as store sort keys; duplicates keep their first use. ``DISTANCE`` measures from
    ``origin``, the point of the list's ``filter.near``: without one it is a user error."""
    if not order_by:
        return list(default)
    keys: list[Sort] = []
    seen: set[str] = set()
    for item in order_by:
        name = item.field.value
        if name in seen:
            continue
        seen.add(name)
        descending = item.direction is OrderDirection.DESC
        if name != DISTANCE:
            keys.append(Sort(name, descending))
        elif origin is None:
            raise ValidationError("ordering by DISTANCE measures from filter.near: give one",
                              field="filter.near", code="REQUIRED")
        else:
            keys.append(Sort.by_distance(*origin, descending=descending))
    # An order asking what the default's leading keys ask is the default, with its
    # tie-breaker (auditLog's ``AT DESC`` is newest first as its default is, ties newest
    # first too: ``query.newest_first``; QA s30).
    if len(keys) < len(default) and keys == list(default[:len(keys)]):
        return list(default)
    return keys


def _connection(ctx: GraphContext, records: Sequence[Record], cursors: Sequence[str],
                has_next: bool, has_previous: bool, wrap: Wrap,
                total: Callable[[], Awaitable[int]]) -> Connection[Any]:
    edges = [Edge(cursor=c, node=wrap(r, ctx)) for r, c in zip(records, cursors, strict=True)]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_next,
            has_previous_page=has_previous,
            start_cursor=cursors[0] if cursors else None,
            end_cursor=cursors[-1] if cursors else None,
        ),
        _total=total,
    )


async def page_connection(ctx: GraphContext, kind: type[E], wrap: Wrap, where: Filter,
                          sort: Sequence[Sort], args: PageArgs,
                          under: tuple[str, Any] | None = None, within: str | None = None,
                          seen: str | None = None) -> Connection[Any]:
    """A top-level list (or, ``under`` its key field and value, one parent's nested list,
    ``within`` naming it when more than that key does; ``seen`` as ``nested_connection``'s):
    one store query for the page, one more only if ``totalCount`` is selected."""
    reads = ctx.services.reads
    try:
        page = await reads.page(ctx.viewer, kind, where, sort, args.request(), under,
                                within, seen)
    except DomainError as exc:
        raise graphql_error(exc) from exc

    async def total() -> int:
        return await reads.count(ctx.viewer, kind, where, sort, under, seen)

    return _connection(ctx, page.items, page.cursors, page.has_next, page.has_previous,
                       wrap, total)


async def nested_connection(ctx: GraphContext, kind: type[E], wrap: Wrap, key_field: str,
                            key: Any, where: Filter, sort: Sequence[Sort], args: PageArgs,
                            parent: Sequence[tuple[str, Any]] = (), seen: str | None = None
                            ) -> Connection[Any]:
    """A list under a parent (``Station.sessions``). With only ``first``, or only ``last``
    (the reversed order read, then flipped), the rows for all parents come from one batched
    query; paging within one parent's list with cursors is
    a query of its own (clients do that for one parent at a time). ``parent``: keys of
    ``where`` that, beyond ``key_field``, make the list the parent's own (its cursors
    belong to it alone, ``query.nested_list``). ``seen``: ``key`` is the id of a record of
    that kind read through the viewer's scope (``Station._under_seen``): its page, count
    and cursor pages are asked by the key alone (``Policy.scope_under``)."""
    within = nested_list(key_field, key, *parent)
    backward = args.simple_last
    if not (args.simple_first or backward):
        return await page_connection(ctx, kind, wrap, where, sort, args, (key_field, key),
                                     within, seen)
    limit = args.last if backward else args.first
    if limit is None:
        limit = 20
    if not 0 <= limit <= MAX_PAGE_SIZE:
        args.request()  # raises the same error as a top-level list
    # ``last`` alone is the first rows of the reversed order, flipped back, as the stores
    # read a backward page: batched across parents like ``first`` (each parent's list
    # was a store call of its own, and its ``totalCount`` another; QA s28).
    order = reversed_order(sort) if backward else tuple(sort)
    rows = await ctx.loaders.many_by(kind, key_field, where, order, limit + 1, seen
                                     ).load(key)
    records = rows[:limit][::-1] if backward else rows[:limit]
    cursors = [encode_cursor(kind.kind, sort, [sort_value(r, s) for s in sort], r.id, within)
               for r in records]

    async def total() -> int:
        return int(await ctx.loaders.count_by(kind, key_field, where, seen).load(key))

    more = len(rows) > limit
    return _connection(ctx, records, cursors, not backward and more, backward and more,
                       wrap, total)


def reversed_order(sort: Sequence[Sort]) -> tuple[Sort, ...]:
    """``sort`` read backward, its ``id`` tie-breaker too (the stores append it ascending
    unless ``sort`` names ``id``)."""
    flipped = tuple(Sort(s.field, not s.descending, s.origin) for s in sort)
    if all(s.field != "id" for s in sort):
        flipped += (Sort("id", descending=True),)
    return flipped
