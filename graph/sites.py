"""Sites in the graph (site load management): the ``Site`` node with its stations and the
shares of the sessions charging behind it, the ``sites``/``site`` roots (through the one
read path: the policy's ``site`` scope, a company's operators and admins; drivers see
none) and the mutations that keep sites and put stations behind them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from domain import entities as d
from domain.errors import DomainError
from domain.query import ALL, Sort
from domain.validation import Checks
from graph.errors import PAYLOAD_ERRORS, UserError, attempt, graphql_error
from graph.ids import expect_id
from graph.inputs import checked_id, given
from graph.nodes import (
    NODE_BY_KIND,
    RECORD_OF_NODE,
    Audited,
    Company,
    Connector,
    Session,
    Station,
    _audited,
    _connectors_of,
    _node,
    _page,
    _related,
)
from graph.relay import Connection, Node, PageArgs, nested_connection, page_connection

if TYPE_CHECKING:
    from graph.context import GraphContext

Info = strawberry.Info

strawberry.enum(d.ChargingRateUnit, name="ChargingRateUnit",
                description="The unit of the limits a site sends its chargers (OCPP); a "
                            "charger taking only the other is sent that.")
strawberry.enum(d.LimitAnswer, name="LimitAnswer", description=(
    "What became of the last limit sent to a session's charger: its answer to "
    "SetChargingProfile, or why none came (PENDING: a higher limit being sent now). "
    "Only ACCEPTED is under control."))
ChargingRateUnit = d.ChargingRateUnit
LimitAnswer = d.LimitAnswer

OLDEST_FIRST = (Sort("created_at"),)
BY_START = (Sort("transaction_id"),)

_SITE_KW = "In kW, above 0 and at most 100000."
_VOLTAGE = "Per phase, 100 to 1000 V: converts limits in A (W = A × V × phases)."
_PHASES = "1, 2 or 3 phases: converts limits in A (W = A × V × phases)."
_REQUIRED = " Cannot be null (REQUIRED)."


def _ctx(info: Info) -> GraphContext:
    return info.context  # type: ignore[no-any-return]


@strawberry.type(description="One session's share of its site's power, and whether its "
                             "charger took it.")
class SiteAllocation:
    power_kw: float = strawberry.field(description="Its share as last sent; 0 is paused "
                                                   "(the site cannot give it the minimum).")
    bound_kw: float = strawberry.field(description=(
        "The most its charger may draw, as far as its answers tell: the share it accepted; "
        "after a refusal what it had before (its connector's rating before any was "
        "accepted); after silence the higher of the two. The site holds this much for a "
        "session not under control, and shares only the rest."))
    limit: float | None = strawberry.field(description="The limit as sent, in `unit`; null "
                                                       "before it was sent.")
    unit: ChargingRateUnit = strawberry.field(  # type: ignore[valid-type]
        description="The unit of `limit`: the site's when it was sent, or the other when "
                    "the charger's ChargingScheduleAllowedChargingRateUnit names only that.")
    limit_sent_at: datetime | None = strawberry.field(description=(
        "When the last limit was sent, UTC; null before one was."))
    answer: LimitAnswer | None = strawberry.field(  # type: ignore[valid-type]
        description="The charger's answer to the last limit; null before one was sent.")
    under_control: bool = strawberry.field(description="The charger accepted its limit.")
    transaction_id: int = strawberry.field(description="The session's OCPP transactionId.")
    _r: strawberry.Private[d.SiteAllocation]

    @classmethod
    def wrap(cls, r: d.SiteAllocation, ctx: GraphContext) -> SiteAllocation:
        return _node(cls, {"power_kw": r.power_kw, "bound_kw": r.bound_kw,
                           "limit": r.limit, "unit": r.unit,
                           "limit_sent_at": r.limit_sent_at, "answer": r.answer,
                           "under_control": r.answer is d.LimitAnswer.ACCEPTED,
                           "transaction_id": r.transaction_id, "_r": r})

    @strawberry.field(description="The session (null where the viewer does not keep its "
                                  "books).")
    async def session(self, info: Info) -> Session | None:
        return await _related(info, Session, self._r.session_id)  # type: ignore[no-any-return]

    @strawberry.field(description="The connector the session charges on; null when "
                                  "removed.")
    async def connector(self, info: Info) -> Connector | None:
        found = await _connectors_of(_ctx(info)).load(self._r.station_id)
        on = [c for c in found if c.connector_id == self._r.connector_id]
        return Connector.wrap(on[0], _ctx(info)) if on else None


@strawberry.type(description="Chargers behind one grid connection: the sessions charging "
                             "on its stations share `maxPowerKw`.")
class Site(Node, Audited):
    name: str = strawberry.field(description="As entered.")
    max_power_kw: float = strawberry.field(description="The grid connection's limit.")
    min_power_kw: float = strawberry.field(description=(
        "The least a session is given; below it a charger cannot charge, so the sessions "
        "started last are paused instead."))
    unit: ChargingRateUnit = strawberry.field(  # type: ignore[valid-type]
        description="The unit of the limits its chargers are sent.")
    voltage: float = strawberry.field(description="For limits in A: W = A × V × phases.")
    phases: int = strawberry.field(description=_PHASES)
    _r: strawberry.Private[d.Site]

    @classmethod
    def wrap(cls, r: d.Site, ctx: GraphContext) -> Site:
        return _audited(cls, r, {"name": r.name, "max_power_kw": r.max_power_kw,
                                 "min_power_kw": r.min_power_kw, "unit": r.unit,
                                 "voltage": r.voltage, "phases": r.phases})

    @strawberry.field(description="The company whose site it is.")
    async def company(self, info: Info) -> Company | None:
        return await _related(info, Company, self._r.company_id)  # type: ignore[no-any-return]

    @strawberry.field(description="The stations behind it, in creation order.")
    async def stations(self, info: Info, first: int | None = None, after: str | None = None,
                       last: int | None = None, before: str | None = None
                       ) -> Connection[Station]:
        return await nested_connection(_ctx(info), d.Station, Station.wrap, "site_id",
                                       self._r.id, ALL, (), _page(first, after, last, before))

    @strawberry.field(description="The shares of the sessions charging behind it now, in "
                                  "transaction order.")
    async def allocations(self, info: Info) -> list[SiteAllocation]:
        ctx = _ctx(info)
        rows = await ctx.loaders.many_by(d.SiteAllocation, "site_id", ALL, BY_START,
                                         1000).load(self._r.id)
        return [SiteAllocation.wrap(r, ctx) for r in rows]


NODE_BY_KIND["site"] = Site
RECORD_OF_NODE[Site] = d.Site


@strawberry.input(description="A new site of a company.")
class CreateSiteInput:
    name: str = strawberry.field(description="At most 200 characters.")
    max_power_kw: float = strawberry.field(description=(
        "The grid connection's limit the sessions share. " + _SITE_KW))
    company_id: strawberry.ID | None = strawberry.field(
        default=None, description="An operator's own company when left out.")
    min_power_kw: float | None = strawberry.field(default=None, description=(
        "6 A on each phase when left out (4.14 kW on three 230 V phases); with limits in A "
        "it may not be less."))
    unit: ChargingRateUnit = strawberry.field(  # type: ignore[valid-type]
        default=d.ChargingRateUnit.W, description=(
            "The unit of the limits its chargers are sent; W unless given."))
    voltage: float | None = strawberry.field(default=None, description="230 V when left "
                                                                       "out.")
    phases: int | None = strawberry.field(default=None, description="3 when left out.")


@strawberry.input(description=(
    "What to change of a site; fields left out stay as they are. A new limit, minimum or "
    "unit reaches its chargers at once."))
class UpdateSiteInput:
    id: strawberry.ID = strawberry.field(description=(
        "The site's global id (INVALID_ID if it is no site's)."))
    name: str | None = strawberry.field(default=strawberry.UNSET, description=(
        "At most 200 characters." + _REQUIRED))
    max_power_kw: float | None = strawberry.field(default=strawberry.UNSET, description=(
        "The grid connection's limit. " + _SITE_KW + _REQUIRED))
    min_power_kw: float | None = strawberry.field(default=strawberry.UNSET, description=(
        "The least a session is given, at most `maxPowerKw`; with limits in A at least 6 "
        "A on each phase." + _REQUIRED))
    unit: ChargingRateUnit | None = strawberry.field(  # type: ignore[valid-type]
        default=strawberry.UNSET, description=(
            "The unit of the limits its chargers are sent." + _REQUIRED))
    voltage: float | None = strawberry.field(default=strawberry.UNSET,
                                             description=_VOLTAGE + _REQUIRED)
    phases: int | None = strawberry.field(default=strawberry.UNSET,
                                          description=_PHASES + _REQUIRED)


@strawberry.input(description="The site to remove.")
class RemoveSiteInput:
    id: strawberry.ID = strawberry.field(description=(
        "The site's global id (INVALID_ID if it is no site's)."))


@strawberry.input(description="Which station goes behind which site.")
class AssignStationToSiteInput:
    station_id: strawberry.ID = strawberry.field(description=(
        "The station (admins and its operators)."))
    site_id: strawberry.ID | None = strawberry.field(description=(
        "A site of the station's company (INVALID otherwise); null: behind no site."))


@strawberry.type(description="What a mutation of a site returns.")
class SitePayload:
    site: Site | None = strawberry.field(description=(
        "The site as the mutation left it (as it was, for a removal); null when it "
        "failed."))
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


@strawberry.type(description="The answer to `assignStationToSite`.")
class AssignStationToSitePayload:
    station: Station | None = strawberry.field(description=(
        "The station as it is now (`Station.site`); null when it failed."))
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


def _site(record: d.Site | None, ctx: GraphContext) -> Site | None:
    return Site.wrap(record, ctx) if record is not None else None


@strawberry.type
class SiteQuery:
    @strawberry.field(description="Sites, oldest first: an admin's all, an operator's "
                                  "their company's; none for drivers.")
    async def sites(self, info: Info, first: int | None = None, after: str | None = None,
                    last: int | None = None, before: str | None = None) -> Connection[Site]:
        return await page_connection(_ctx(info), d.Site, Site.wrap, ALL, OLDEST_FIRST,
                                     PageArgs(first=first, after=after, last=last,
                                              before=before))

    @strawberry.field(description="A site by id; null when missing or hidden.")
    async def site(self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(
            description="The site's global id (INVALID_ID if it is no site's id).")]
                   ) -> Site | None:
        ctx = _ctx(info)
        try:
            record_id = expect_id(str(id), "site", "id")
        except DomainError as exc:
            raise graphql_error(exc) from exc
        return _site(await ctx.loaders.by_id(d.Site).load(record_id), ctx)


@strawberry.type
class SiteMutation:
    @strawberry.mutation(description="A site of a company (admins and its operators).")
    async def create_site(self, info: Info, input: CreateSiteInput) -> SitePayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.sites.create_site(
                ctx.viewer, name=input.name, max_power_kw=input.max_power_kw,
                company_id=checked_id(checks, input.company_id, "company", "companyId"),
                min_power_kw=input.min_power_kw, unit=input.unit,
                voltage=input.voltage, phases=input.phases, checks=checks)

        site, errors = await attempt(ctx, run, input=input)
        return SitePayload(site=_site(site, ctx), errors=errors)

    @strawberry.mutation(description="Edits a site; a new limit reaches its chargers at "
                                     "once.")
    async def update_site(self, info: Info, input: UpdateSiteInput) -> SitePayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.sites.update_site(
                ctx.viewer, checked_id(checks, input.id, "site", "id"), name=given(input.name),
                max_power_kw=given(input.max_power_kw),
                min_power_kw=given(input.min_power_kw), unit=given(input.unit),
                voltage=given(input.voltage), phases=given(input.phases), checks=checks)

        site, errors = await attempt(ctx, run, input=input)
        return SitePayload(site=_site(site, ctx), errors=errors)

    @strawberry.mutation(description="Removes a site; refused (IN_USE) while stations are "
                                     "assigned to it. Returns it as it was.")
    async def remove_site(self, info: Info, input: RemoveSiteInput) -> SitePayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.sites.remove_site(
                ctx.viewer, checked_id(checks, input.id, "site", "id"), checks=checks)

        site, errors = await attempt(ctx, run)
        return SitePayload(site=_site(site, ctx), errors=errors)

    @strawberry.mutation(description="Puts a station behind a site of its company "
                                     "(`siteId: null`: behind none).")
    async def assign_station_to_site(self, info: Info, input: AssignStationToSiteInput
                                     ) -> AssignStationToSitePayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.sites.assign_station(
                ctx.viewer, checked_id(checks, input.station_id, "station", "stationId"),
                checked_id(checks, input.site_id, "site", "siteId"), checks=checks)

        station, errors = await attempt(ctx, run, input=input)
        return AssignStationToSitePayload(
            station=Station.wrap(station, ctx) if station is not None else None,
            errors=errors)
