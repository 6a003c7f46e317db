"""The Query root: `me`, `node(id:)` and one connection per entity list."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import strawberry

from domain import entities as d
from domain.errors import DomainError
from domain.query import ALL, Eq, Filter, Sort, all_of, newest_first
from graph.analytics import AnalyticsQuery
from graph.context import GraphContext
from graph.filters import (
    MAX_FILTER_IDS,
    AuditFilter,
    AuditOrder,
    CompanyFilter,
    CompanyOrder,
    ConnectorFilter,
    ConnectorOrder,
    IdTagFilter,
    IdTagOrder,
    PaymentFilter,
    PaymentOrder,
    ReservationFilter,
    ReservationOrder,
    SessionFilter,
    SessionOrder,
    StationFilter,
    StationOrder,
    UserFilter,
    UserOrder,
    VehicleFilter,
    VehicleOrder,
    bounded,
)
from graph.ids import from_global_id
from graph.nodes import (
    NODE_BY_KIND,
    AuditEntry,
    Company,
    Connector,
    IdTag,
    Payment,
    Reservation,
    Session,
    Station,
    Tariff,
    User,
    Vehicle,
    garage,
    wants,
)
from graph.relay import Connection, Node, PageArgs, page_connection, sort_keys
from graph.sites import SiteQuery
from graph.webhooks import WebhookQuery

Info = strawberry.Info

NEWEST_SESSIONS = (Sort("start_time", descending=True),)
NEWEST_AUDIT = newest_first("at")


def _ctx(info: Info) -> GraphContext:
    return info.context  # type: ignore[no-any-return]


async def _list(info: Info, kind: type[d.Record], node: Any, filter: Any, order_by: Any,
                default_sort: tuple[Sort, ...], first: int | None, after: str | None,
                last: int | None, before: str | None, within: Filter = ALL
                ) -> Connection[Any]:
    """``within``: the records the list is of, whatever the filter (a garage's cars)."""
    where = all_of(filter.to_domain() if filter is not None else ALL, within)
    # A list filtered by ``near`` may be ordered by DISTANCE from its point.
    near = getattr(filter, "near", None)
    connection = await page_connection(
        _ctx(info), kind, node.wrap, where,
        sort_keys(order_by, default_sort, near.point if near is not None else None),
        PageArgs(first=first, after=after, last=last, before=before),
    )
    prefetch = getattr(node, "prefetch", None)
    if prefetch is not None and connection.edges:
        # Look ahead: the page's nested levels load now, one call per level, for
        # ``nodes { … }`` and ``edges { node { … } }`` alike.
        await prefetch(_ctx(info), [edge.node._r for edge in connection.edges],
                       lambda *path: wants(info, "nodes", *path)
                       or wants(info, "edges", "node", *path))
    return connection


async def _node(info: Info, global_id: str) -> Node | None:
    try:
        kind, record_id = from_global_id(global_id)
    except DomainError:
        return None  # not one of our ids reads like a hidden one: null
    node_type = NODE_BY_KIND.get(kind)
    if node_type is None:
        return None
    record = await _ctx(info).loaders.by_id(d.ENTITY_BY_KIND[kind]).load(record_id)
    return node_type.wrap(record, _ctx(info)) if record is not None else None


@strawberry.type(description=(
    "Reads. Every list and object is limited to what the viewer may see: a hidden object "
    "reads as null, as a missing one does."))
class Query(AnalyticsQuery, WebhookQuery, SiteQuery):
    @strawberry.field(description="The signed-in user; null when anonymous.")
    async def me(self, info: Info) -> User | None:
        viewer = _ctx(info).viewer
        if viewer.user_id is None:
            return None
        record = await _ctx(info).loaders.by_id(d.User).load(viewer.user_id)
        return User.wrap(record, _ctx(info)) if record else None

    @strawberry.field(description="Any object by its global id; null if missing or hidden.")
    async def node(self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(
            description="A global id, as any object's `id` field gives it.")]
                   ) -> Node | None:
        return await _node(info, str(id))

    @strawberry.field(description="Objects by global ids, in order; null where missing or "
                                  "hidden.")
    async def nodes(self, info: Info, ids: Annotated[list[strawberry.ID], strawberry.argument(
            description=f"Global ids, at most {MAX_FILTER_IDS} (TOO_LONG).")]
                    ) -> list[Node | None]:
        # A list too long is TOO_LONG here as in every filter (QA s30: OUT_OF_RANGE).
        bounded(ids, "ids")
        # Together, so that the ids of each kind join one batch: one store call per kind
        # (awaited one by one, each id was a store call of its own; QA s28).
        return list(await asyncio.gather(*(_node(info, str(i)) for i in ids)))

    @strawberry.field(description=(
        "Companies, in id order: an admin's all, anyone else's their own company (none "
        "when signed out)."))
    async def companies(self, info: Info, filter: CompanyFilter | None = None,
                        order_by: list[CompanyOrder] | None = None,  # type: ignore[valid-type]
                        first: int | None = None, after: str | None = None,
                        last: int | None = None, before: str | None = None
                        ) -> Connection[Company]:
        return await _list(info, d.Company, Company, filter, order_by, (), first, after, last,
                           before)

    @strawberry.field(description=(
        "Users the viewer may see. An operator sees drivers by name only: email, role and "
        "`active` of people outside their company read null. Filtering or sorting on one "
        "of those fields (`filter.role`, `filter.active`, `filter.search` by email, "
        "`orderBy: EMAIL`) lists only the users whose field the viewer can read, their "
        "company's staff, since the others' values cannot be compared without being told."))
    async def users(self, info: Info, filter: UserFilter | None = None,
                    order_by: list[UserOrder] | None = None,  # type: ignore[valid-type]
                    first: int | None = None, after: str | None = None,
                    last: int | None = None, before: str | None = None) -> Connection[User]:
        return await _list(info, d.User, User, filter, order_by, (), first, after, last,
                           before)

    @strawberry.field(description=(
        "Vehicles in garages (not those removed), in id order: a driver's own (their "
        "garage, as `me { vehicles }`: the cars a remote start or reservation may name); "
        "an operator's own, their company's people's and those of sessions in their books; "
        "an admin's all. None when signed out. A removed vehicle is read as its sessions' "
        "`vehicle` or by `node(id:)`, and so is, in its reduced view, a car a driver "
        "charged that was handed to another owner since."))
    async def vehicles(self, info: Info, filter: VehicleFilter | None = None,
                       order_by: list[VehicleOrder] | None = None,  # type: ignore[valid-type]
                       first: int | None = None, after: str | None = None,
                       last: int | None = None, before: str | None = None
                       ) -> Connection[Vehicle]:
        # A driver's list is their garage (``Policy.theirs``), not the whole of their
        # scope, which also takes their sessions' cars handed over since (review
        # r28-org: their apps offered such a car for a remote start, NOT_FOUND there).
        return await _list(info, d.Vehicle, Vehicle, filter, order_by, (), first, after, last,
                           before, within=garage(_ctx(info)))

    @strawberry.field(name="idTags", description=(
        "Charging cards (OCPP idTags), in id order: a driver's own, an operator's own and "
        "their company's people's, an admin's all. None when signed out."))
    async def id_tags(self, info: Info, filter: IdTagFilter | None = None,
                      order_by: list[IdTagOrder] | None = None,  # type: ignore[valid-type]
                      first: int | None = None, after: str | None = None,
                      last: int | None = None, before: str | None = None
                      ) -> Connection[IdTag]:
        return await _list(info, d.IdTag, IdTag, filter, order_by, (), first, after, last,
                           before)

    @strawberry.field(description=(
        "Stations, in id order unless `orderBy` says otherwise (DISTANCE needs "
        "`filter.near`). Drivers, and signed-out clients when the public map is on, see "
        "every accepted station in its public view (owner, company, hardware and "
        "registration read null); an operator sees the stations they run, an admin all."))
    async def stations(self, info: Info, filter: StationFilter | None = None,
                       order_by: list[StationOrder] | None = None,  # type: ignore[valid-type]
                       first: int | None = None, after: str | None = None,
                       last: int | None = None, before: str | None = None
                       ) -> Connection[Station]:
        return await _list(info, d.Station, Station, filter, order_by, (), first, after, last,
                           before)

    @strawberry.field(description="A station by its OCPP identity; null if missing or hidden.")
    async def station(self, info: Info, cp_id: Annotated[str, strawberry.argument(
            description="The charger's OCPP identity (`cpId`), exactly as it connects.")]
                      ) -> Station | None:
        ctx = _ctx(info)
        record = await ctx.services.reads.find_one(ctx.viewer, d.Station, Eq("cp_id", cp_id))
        return Station.wrap(record, ctx) if record else None

    @strawberry.field(description=(
        "Connectors, by station cpId then connector number. Drivers, and signed-out "
        "clients when the public map is on, see those of accepted stations; an operator "
        "those of the stations they run, an admin all."))
    async def connectors(self, info: Info, filter: ConnectorFilter | None = None,
                         order_by: list[ConnectorOrder] | None = None,  # type: ignore[valid-type]
                         first: int | None = None, after: str | None = None,
                         last: int | None = None, before: str | None = None
                         ) -> Connection[Connector]:
        return await _list(info, d.Connector, Connector, filter, order_by,
                           (Sort("cp_id"), Sort("connector_id")), first, after, last, before)

    @strawberry.field(description=(
        "Charging sessions, newest start first unless `orderBy` says otherwise: a "
        "driver's own, an operator's those in their books (charged at a station they ran "
        "then), an admin's all. None when signed out."))
    async def sessions(self, info: Info, filter: SessionFilter | None = None,
                       order_by: list[SessionOrder] | None = None,  # type: ignore[valid-type]
                       first: int | None = None, after: str | None = None,
                       last: int | None = None, before: str | None = None
                       ) -> Connection[Session]:
        return await _list(info, d.Session, Session, filter, order_by, NEWEST_SESSIONS, first,
                           after, last, before)

    @strawberry.field(description=(
        "Reservations, in id order: a driver's own; an operator's those in their books "
        "and the live ones (PENDING or ACTIVE, not expired) on the stations they run now; "
        "an admin's all. None when signed out."))
    async def reservations(self, info: Info, filter: ReservationFilter | None = None,
                           order_by: list[ReservationOrder] | None = None,  # type: ignore[valid-type]
                           first: int | None = None, after: str | None = None,
                           last: int | None = None, before: str | None = None
                           ) -> Connection[Reservation]:
        return await _list(info, d.Reservation, Reservation, filter, order_by, (), first,
                           after, last, before)

    @strawberry.field(description=(
        "Payments, in id order: a driver's own, an operator's those in their books, an "
        "admin's all. None when signed out."))
    async def payments(self, info: Info, filter: PaymentFilter | None = None,
                       order_by: list[PaymentOrder] | None = None,  # type: ignore[valid-type]
                       first: int | None = None, after: str | None = None,
                       last: int | None = None, before: str | None = None
                       ) -> Connection[Payment]:
        return await _list(info, d.Payment, Payment, filter, order_by, (), first, after, last,
                           before)

    @strawberry.field(description=(
        "Price lists, latest `validFrom` first. Drivers, and signed-out clients when the "
        "public map is on, see every company's and every existing station's; an "
        "operator their company's and their stations'; an admin all (also a removed "
        "station's, kept as its sessions' price history)."))
    async def tariffs(self, info: Info, first: int | None = None, after: str | None = None,
                      last: int | None = None, before: str | None = None
                      ) -> Connection[Tariff]:
        return await _list(info, d.Tariff, Tariff, None, None,
                           (Sort("valid_from", descending=True),), first, after, last, before)

    @strawberry.field(description=(
        "The change log, newest first unless `orderBy` says otherwise (entries of one "
        "instant newest first too: the last written first, as `AT DESC` orders them). "
        "Entries are read "
        "by whose the record was when it changed, not by who changed it: a driver reads "
        "those about what was theirs (their account, cards, cars, sessions, "
        "reservations, payments); an operator those in their company's books (its "
        "people, stations, tariffs, sites, webhooks, the sessions it kept the books of) "
        "and the history of the stations they run now; an admin all. Private fields of "
        "a person's records (a car's battery) are left out of images as reads leave them "
        "out."))
    async def audit_log(self, info: Info, filter: AuditFilter | None = None,
                        order_by: list[AuditOrder] | None = None,  # type: ignore[valid-type]
                        first: int | None = None, after: str | None = None,
                        last: int | None = None, before: str | None = None
                        ) -> Connection[AuditEntry]:
        return await _list(info, d.AuditEntry, AuditEntry, filter, order_by, NEWEST_AUDIT,
                           first, after, last, before)
