"""Analytics queries: energy trends, utilization, availability, faults, overview. The
numbers come from the domain's analytics use cases (computed in the store, scoped by the
policy); this module only shapes them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated

import strawberry

from domain import entities as d
from domain.currencies import major_units
from domain.errors import DomainError, ValidationError
from domain.query import Sort
from domain.services.analytics import BucketBudget, FaultGroup, GroupBy, Scope, ShareRow
from domain.timebuckets import Bucket
from graph.command_types import ChargePointErrorCode, shown_error_code
from graph.context import GraphContext
from graph.filters import BOUNDED, bounded, global_ids
from graph.ids import expect_id
from graph.nodes import Money, Station, StatusEvent, _related_now, wants
from graph.relay import Connection, PageArgs, page_connection
from graph.scalars import BigInt

Info = strawberry.Info
From = Annotated[datetime, strawberry.argument(name="from", description="Window start.")]
#: ``analytics._window``'s calendar rule.
WINDOW_END = ("Window end, exclusive: after `from`, at most three years later (the same UTC "
              "date and time, the 28th for a 29 February).")
To = Annotated[datetime, strawberry.argument(description=WINDOW_END)]
strawberry.enum(Bucket, name="TimeBucket", description="Size of a trend bucket.")
TimeBucket = Bucket


@strawberry.enum(description="One row per station or per connector.")
class AnalyticsGroup(Enum):
    STATION = "STATION"
    CONNECTOR = "CONNECTOR"


_WHOSE = ("Count this driver's (vehicle's) charging: energy, sessions and revenue. Not "
          "accepted by utilization, availability and faultReports (UNSUPPORTED): they come "
          "from the connectors' state history, which names no driver.")


@strawberry.input(description="Which stations, or whose charging, to count.")
class AnalyticsFilter:
    station_ids: list[strawberry.ID] | None = strawberry.field(default=None, description=(
        f"Only these stations (global ids), {BOUNDED}; an empty list: none. A dashboard "
        "of a larger network leaves it out to count all its stations, or asks by "
        "`siteId` or `companyId`."))
    cp_ids: list[str] | None = strawberry.field(default=None, description=(
        f"Only the stations with these OCPP identities, {BOUNDED}; an empty list: "
        "none."))
    company_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Only this company's stations. Matches nothing for a driver, who is not told "
        "which company runs a station. As for its operators: what went to its books, "
        "sessions, energy and revenue and a station's state history (utilization, "
        "availability, faults) alike: a station handed to it counts from the handover on, "
        "one it handed to another company up to the handover."))
    user_id: strawberry.ID | None = strawberry.field(default=None, description=_WHOSE)
    vehicle_id: strawberry.ID | None = strawberry.field(default=None, description=_WHOSE)
    site_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Only the stations behind this site now (`Station.site`), however many: a site "
        "of more stations than `stationIds` takes. Matches nothing for a driver, who is "
        "not told which site a station is behind."))

    def to_domain(self) -> Scope:
        return Scope(
            station_ids=global_ids(self.station_ids, "station", "filter.stationIds"),
            cp_ids=None if (cp_ids := bounded(self.cp_ids, "filter.cpIds")) is None
            else tuple(cp_ids),
            company_id=expect_id(str(self.company_id), "company", "filter.companyId")
            if self.company_id else None,
            user_id=expect_id(str(self.user_id), "user", "filter.userId")
            if self.user_id else None,
            vehicle_id=expect_id(str(self.vehicle_id), "vehicle", "filter.vehicleId")
            if self.vehicle_id else None,
            site_id=expect_id(str(self.site_id), "site", "filter.siteId")
            if self.site_id else None,
        )


#: What ``energyTrend``'s window end counts.
_TREND_END = (f"{WINDOW_END} Energy from meter values counts readings after `from` up to "
              "`to` included (a reading reports what flowed up to it).")
_IN_FILTER = ("Give the window as `energyTrend`'s `from` and `to`, as utilization, "
              "availability and faultReports take theirs.")


@strawberry.input(description="An analytics filter, with `energyTrend`'s window in it "
                              "before that took `from` and `to` as arguments.")
class EnergyTrendFilter(AnalyticsFilter):
    from_: datetime | None = strawberry.field(
        name="from", default=None, deprecation_reason=_IN_FILTER,
        description="Window start (with `to`; or `energyTrend`'s `from`, not both).")
    to: datetime | None = strawberry.field(default=None, deprecation_reason=_IN_FILTER,
                                           description=_TREND_END)


@strawberry.type(description="Energy, sessions and revenue of one time bucket: gross "
                             "(`revenue`, what was billed in it), refunds made in it, and "
                             "net.")
class EnergyBucket:
    start: datetime = strawberry.field(description="Bucket start (UTC instant of the local "
                                                   "midnight, hour, Monday or month start).")
    energy_kwh: float = strawberry.field(description=(
        "Energy delivered in the bucket, from meter values: a reading counts in the bucket "
        "it ends, so one taken exactly at the bucket's end is in it (it reports what "
        "flowed up to then), one at its start in the bucket before."))
    sessions: int = strawberry.field(description="Sessions that started in the bucket.")
    revenue: Decimal = strawberry.field(description=(
        "Gross: what was billed in the bucket, in `currency`, refunds not deducted: the "
        "amounts of the payments opened in it (a session's payment is opened when the "
        "session ends), as asked of the drivers, collected or not. A late correction of "
        "a session changes it only while its payment collected nothing (PENDING or "
        "FAILED: its next try asks the corrected amount; a voided one bills "
        "nothing); once money moved, neither the amount nor the bucket changes."))
    refunds: Decimal = strawberry.field(
        description="Paid back in the bucket, in `currency`: booked when the refund was "
                    "made, whenever it was billed (a session of last month refunded "
                    "today lowers today's net; last month's figures stay).")
    net_revenue: Decimal = strawberry.field(
        description="`revenue` less `refunds`; below 0 in a bucket that paid back more "
                    "than it billed.")
    currency: str = strawberry.field(description=(
        "ISO 4217 code of `revenue`, `refunds` and `netRevenue`: the one asked for, else "
        "the window's most used."))
    cp_id: str | None = strawberry.field(
        default=None, description="With `groupBy`: the charge point these figures are "
                                  "of; null otherwise.")
    connector_id: int | None = strawberry.field(
        default=None, description="With `groupBy: CONNECTOR`: the connector; null "
                                  "otherwise.")
    _station_id: strawberry.Private[str | None] = None

    @strawberry.field(description="With `groupBy`: the station, if the viewer may see it "
                                  "(energy follows its sessions' books, which may be kept "
                                  "by a company that no longer runs it).")
    def station(self, info: Info) -> Station | None:
        return _related_now(info, Station, self._station_id)  # type: ignore[no-any-return]


async def _prefetch_stations(info: Info, station_ids: Iterable[str | None], *path: str
                             ) -> None:
    """The rows' stations, loaded in one call when the selection asks for them, so each
    row's ``station`` answers at once: an awaitable per row (graphql-core's await, a task
    of its list's gather) was most of a long bucketed answer (QA s30: 9,900 rows of
    ``availability`` with their station took seconds). A failure to load them fails no
    row (``fetch`` answers None): each row's nullable ``station`` loads it again (one
    batch), and is null with the error if that fails too, as before the prefetch
    (review s30: the error failed the whole list, whose rows are non-null: the answer's
    every field)."""
    if wants(info, *path, "station"):
        ids = list(dict.fromkeys(i for i in station_ids if i))
        if ids:
            ctx: GraphContext = info.context
            await ctx.loaders.by_id(d.Station).fetch(ids)


_WINDOW = ("The window up to now (its end, or the present if earlier), once per connector "
           "counted: a station row counts the connectors it has a row of and adds up "
           "their rows.")
_START = ("With `bucket`: the bucket's start (UTC instant of the local hour, midnight, "
          "Monday or month start); its window is the bucket's part of `from`..`to` up to "
          "now. Null without `bucket`.")
_ROWS = ("A row per connector the station has now, and per connector removed since (or "
         "of a station handed away) with history in the viewer's books in the window: "
         "its window only that time there, none where it has none; or per station the "
         "sum of those rows. "
         "With `bucket` (aligned in `timeZone`, IANA), those rows per bucket, each capped "
         "to its bucket, ordered by station and connector, then time; at most 10,000 rows "
         "(TOO_MANY).")
_GROUP_BY = ("Each bucket's figures per station (or connector) with any in the window, "
             "ordered by charge point and connector, then time; at most 10,000 rows "
             "(TOO_MANY). Without it, one figure per bucket.")
_TIME_ZONE = "IANA zone the buckets are aligned in (only with `bucket`; checked always)."
_FILTER = ("Which stations or whose charging to count, within what the viewer may see; "
           "without it, all of that.")
_CURRENCY = ("ISO 4217 code of the revenue and refunds counted (those in other currencies "
             "are left out); default: the currency most payments billed and refunds made "
             "in the window have, else EUR.")
_ROW_GROUP = "A row per station (default) or per connector."
_ROW_BUCKET = "Split the rows into buckets of this size; without it, one row for the window."
_ROW_STATION = ("The station, if the viewer may see it: null on the rows of a station its "
                "company handed to another one, which keep the state history of its time "
                "there (as its sessions do).")


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


# The rows' figures are plain attributes, the shares worked out when a row is made: a
# field with a resolver costs graphql-core's resolve info and completion per row, which
# three of them made a third of a long bucketed answer's rendering (QA s30).
@strawberry.type(description="How much of the window connectors were occupied and charging.")
class UtilizationRow:
    cp_id: str = strawberry.field(description="The station's OCPP identity.")
    connector_id: int | None = strawberry.field(description="Null for station rows.")
    window_seconds: float = strawberry.field(description=_WINDOW)
    occupied_seconds: float = strawberry.field(description=(
        "Seconds of the window a session was open on the connector(s)."))
    charging_seconds: float = strawberry.field(description=(
        "Seconds of the window the status was Charging."))
    _station_id: strawberry.Private[str]

    start: datetime | None = strawberry.field(description=_START)
    occupied_share: float = strawberry.field(
        description="Share of the window a session was open (0..1).")
    charging_share: float = strawberry.field(
        description="Share of the window the status was Charging (0..1).")

    @strawberry.field(description=_ROW_STATION)
    def station(self, info: Info) -> Station | None:
        return _related_now(info, Station, self._station_id)  # type: ignore[no-any-return]

    @classmethod
    def of(cls, row: ShareRow) -> UtilizationRow:
        return cls(cp_id=row.cp_id, connector_id=row.connector_id,
                   window_seconds=row.window_seconds, occupied_seconds=row.first_seconds,
                   charging_seconds=row.second_seconds, start=row.start,
                   occupied_share=_share(row.first_seconds, row.window_seconds),
                   charging_share=_share(row.second_seconds, row.window_seconds),
                   _station_id=row.station_id)


@strawberry.type(description="How much of the window connectors were usable: station "
                             "online, status neither Faulted nor Unavailable.")
class AvailabilityRow:
    cp_id: str = strawberry.field(description="The station's OCPP identity.")
    connector_id: int | None = strawberry.field(description="Null for station rows.")
    window_seconds: float = strawberry.field(description=_WINDOW)
    available_seconds: float = strawberry.field(description=(
        "Seconds of the window the connector(s) were usable: station online, status "
        "neither Faulted nor Unavailable."))
    reported_seconds: float = strawberry.field(
        description="The part of the window the connector's state was known: from when "
                    "its state history began (its charger's first connection or report "
                    "after it was added), offline time included (known to be offline), "
                    "the central system's own outages not (stopped or crashed: from "
                    "then until the charger's next connection nobody was listening).")
    start: datetime | None = strawberry.field(description=_START)
    _station_id: strawberry.Private[str]
    unknown_seconds: float = strawberry.field(
        description="`windowSeconds` less `reportedSeconds`: before the connector's state "
                    "history began (a station added or first connected inside the "
                    "window), and the central system's own outages until the charger "
                    "connected again. It counts as not available in `availableShare`.")
    available_share: float = strawberry.field(
        description="`availableSeconds` / `windowSeconds` (0..1): time nothing was known "
                    "counts as not available.")
    reported_available_share: float = strawberry.field(
        description="`availableSeconds` / `reportedSeconds` (0..1): the uptime KPI, of "
                    "the time the state was known (offline time counts as not "
                    "available); 0 when nothing was.")

    @strawberry.field(description=_ROW_STATION)
    def station(self, info: Info) -> Station | None:
        return _related_now(info, Station, self._station_id)  # type: ignore[no-any-return]

    @classmethod
    def of(cls, row: ShareRow) -> AvailabilityRow:
        return cls(cp_id=row.cp_id, connector_id=row.connector_id,
                   window_seconds=row.window_seconds, available_seconds=row.first_seconds,
                   reported_seconds=row.second_seconds, start=row.start,
                   unknown_seconds=max(row.window_seconds - row.second_seconds, 0.0),
                   available_share=_share(row.first_seconds, row.window_seconds),
                   reported_available_share=_share(row.first_seconds, row.second_seconds),
                   _station_id=row.station_id)


@strawberry.type(description="Faults of one error code on one connector, or on the charge "
                             "point as a whole (connector 0). A fault is a report with an "
                             "error code, or with status FAULTED whatever its code.")
class FaultSummary:
    cp_id: str = strawberry.field(description="The station's OCPP identity.")
    connector_id: int = strawberry.field(
        description="0 is the charge point as a whole: a charger-wide fault, one group, "
                    "its time the point's. A connector's groups are its own reports: the "
                    "time the charge point was down is the point's, not theirs.")
    error_code: ChargePointErrorCode = strawberry.field(
        description="OCPP ChargePointErrorCode. `NO_ERROR`: reported FAULTED without an "
                    "error code (a Faulted status is a fault whatever its code); the "
                    "charger's `vendorErrorCode` and `info` are on its `events`.")
    count: int = strawberry.field(
        description="Reports of this error on this connector in the window; 0 for a fault "
                    "reported before the window and still going in it.")
    first_seen: datetime = strawberry.field(description=(
        "Its first report in the window, UTC; for a fault going on when the window "
        "opened (`count` 0), its last report before the window."))
    last_seen: datetime = strawberry.field(description=(
        "Its last report in the window, UTC (for `count` 0, as `firstSeen`)."))
    total_duration_seconds: float = strawberry.field(
        description="Time spent in this fault within the window (up to now). A fault stays "
                    "open while its station is offline (the charger's last report stands "
                    "until a report clears it), and that time counts here too: "
                    "`offlineSeconds` is how much of it the station was offline.")
    offline_seconds: float = strawberry.field(
        description="Of `totalDurationSeconds`, the time the station was offline with the "
                    "fault still open.")
    open: bool = strawberry.field(
        description="The charger reports it now: the connector's `errorCode`, for "
                    "connector 0 the station's. An offline station's fault stays open.")
    _station_id: strawberry.Private[str]

    @strawberry.field(description=_ROW_STATION)
    def station(self, info: Info) -> Station | None:
        return _related_now(info, Station, self._station_id)  # type: ignore[no-any-return]

    @classmethod
    def of(cls, g: FaultGroup) -> FaultSummary:
        return cls(cp_id=g.cp_id, connector_id=g.connector_id,
                   error_code=shown_error_code(g.error_code),
                   count=g.count, first_seen=g.first_seen, last_seen=g.last_seen,
                   total_duration_seconds=g.duration_seconds,
                   offline_seconds=g.offline_seconds, open=g.open,
                   _station_id=g.station_id)


@strawberry.type(description="The faults of a window: grouped, and one by one.")
class FaultReport:
    groups: list[FaultSummary] = strawberry.field(description=(
        "A group per station, connector and error code with a fault in the window."))
    _scope: strawberry.Private[Scope]
    _from: strawberry.Private[datetime]
    _to: strawberry.Private[datetime]

    @strawberry.field(description="The individual fault reports, newest first.")
    async def events(self, info: Info, first: int | None = None, after: str | None = None,
                     last: int | None = None, before: str | None = None
                     ) -> Connection[StatusEvent]:
        ctx: GraphContext = info.context
        where = ctx.services.analytics.fault_events_filter(self._scope, self._from, self._to)
        return await page_connection(ctx, d.StatusEvent, StatusEvent.wrap, where,
                                     [Sort("at", descending=True)],
                                     PageArgs(first=first, after=after, last=last,
                                              before=before))


@strawberry.type(description="Connectors in one status, or of offline stations.")
class StatusCount:
    status: str = strawberry.field(
        description="A `ConnectorStatus` name, or `OFFLINE`: the connectors of stations "
                    "that are offline, whatever they last reported.")
    count: int = strawberry.field(description="How many connectors.")


@strawberry.type(description="The network right now.")
class Overview:
    stations_online: int = strawberry.field(description="Stations whose charger is "
                                                        "connected now.")
    stations_offline: int = strawberry.field(description="Stations whose charger is not.")
    connectors_by_status: list[StatusCount] = strawberry.field(
        description="Connectors of online stations by status, and those of offline "
                    "stations under `OFFLINE` (never counted as available: a charger "
                    "that is away cannot start a session); those of a station "
                    "`UNAVAILABLE` or `FAULTED` as a whole under that status, whatever "
                    "they report (none of them can charge); each connector once.")
    active_sessions: int = strawberry.field(description="Sessions charging now (ACTIVE).")
    energy_today_kwh: float = strawberry.field(description=(
        "Energy delivered today (from midnight in `timeZone`), kWh, from meter values: "
        "a reading taken at midnight is yesterday's (it reports what flowed up to then)."))
    revenue_today: list[Money] = strawberry.field(
        description="Gross per currency: what was billed today (the payments opened "
                    "today, as `EnergyBucket.revenue` counts them).")
    refunds_today: list[Money] = strawberry.field(
        description="Paid back today per currency, whenever it was billed.")
    net_revenue_today: list[Money] = strawberry.field(
        description="`revenueToday` less `refundsToday` per currency (every currency "
                    "either has).")


def _trend_window(from_: datetime | None, to: datetime | None,
                  filter: EnergyTrendFilter | None) -> tuple[datetime, datetime, str]:
    """``energyTrend``'s window: its ``from``/``to``, or (deprecated) its filter's, and
    where it was given (the prefix of its fields); one pair, not parts of both (QA s30:
    the other analytics take theirs as arguments)."""
    in_filter = (filter.from_, filter.to) if filter is not None else (None, None)
    prefix = ""
    if in_filter != (None, None):
        if from_ is not None or to is not None:
            raise ValidationError("give the window as `from` and `to`, or in `filter` "
                                  "(deprecated), not both",
                                  field="filter.from" if in_filter[0] else "filter.to")
        (from_, to), prefix = in_filter, "filter."
    if from_ is None:
        raise DomainError("required", field=f"{prefix}from", code="REQUIRED")
    if to is None:
        raise DomainError("required", field=f"{prefix}to", code="REQUIRED")
    return from_, to, prefix


def _budget(ctx: GraphContext) -> BucketBudget:
    """The request's buckets, shared by its trends and bucketed shares (aliases)."""
    budget: BucketBudget = ctx.extra.setdefault("bucket_budget", BucketBudget())
    return budget


@strawberry.type
class AnalyticsQuery:
    @strawberry.field(description="Energy, sessions, revenue and refunds per "
                                  "hour/day/week/month, aligned in `timeZone` (IANA), empty "
                                  "buckets included.")
    async def energy_trend(self, info: Info,
                           from_: Annotated[datetime | None, strawberry.argument(
                               name="from", description=(
                                   "Window start; required (or, deprecated, "
                                   "`filter.from` and `filter.to`)."))] = None,
                           to: Annotated[datetime | None, strawberry.argument(
                               description=_TREND_END)] = None,
                           filter: Annotated[EnergyTrendFilter | None, strawberry.argument(
                               description=_FILTER)] = None,
                           *,
                           bucket: Annotated[TimeBucket, strawberry.argument(  # type: ignore[valid-type]
                               description="Bucket size.")],
                           time_zone: Annotated[str, strawberry.argument(
                               description="IANA zone the buckets are aligned in.")] = "UTC",
                           currency: Annotated[str | None, strawberry.argument(
                               description=_CURRENCY)] = None,
                           group_by: Annotated[AnalyticsGroup | None,
                                               strawberry.argument(description=_GROUP_BY)]
                           = None) -> list[EnergyBucket]:
        ctx: GraphContext = info.context
        start, end, window_in = _trend_window(from_, to, filter)
        buckets = await ctx.services.analytics.energy_trend(
            ctx.viewer, filter.to_domain() if filter else Scope(), start, end, bucket, time_zone,
            currency, _budget(ctx), GroupBy(group_by.value) if group_by else None,
            window_in=window_in)
        await _prefetch_stations(info, (b.station_id for b in buckets))
        return [EnergyBucket(start=b.start, energy_kwh=b.energy_wh / 1000,
                             sessions=b.sessions,
                             revenue=major_units(b.revenue_minor, b.currency),
                             refunds=major_units(b.refunds_minor, b.currency),
                             net_revenue=major_units(b.net_minor, b.currency),
                             currency=b.currency, cp_id=b.cp_id, connector_id=b.connector_id,
                             _station_id=b.station_id) for b in buckets]

    @strawberry.field(description="Share of the window each connector was occupied and "
                                  "charging. " + _ROWS)
    async def utilization(self, info: Info, from_: From, to: To,
                          filter: Annotated[AnalyticsFilter | None, strawberry.argument(
                              description=_FILTER)] = None,
                          group_by: Annotated[AnalyticsGroup, strawberry.argument(
                              description=_ROW_GROUP)] = AnalyticsGroup.STATION,
                          bucket: Annotated[TimeBucket | None, strawberry.argument(  # type: ignore[valid-type]
                              description=_ROW_BUCKET)] = None,
                          time_zone: Annotated[str, strawberry.argument(
                              description=_TIME_ZONE)] = "UTC"
                          ) -> list[UtilizationRow]:
        ctx: GraphContext = info.context
        rows = await ctx.services.analytics.utilization(
            ctx.viewer, filter.to_domain() if filter else Scope(), from_, to,
            group_by is AnalyticsGroup.CONNECTOR, bucket, time_zone,
            _budget(ctx) if bucket else None)
        await _prefetch_stations(info, (r.station_id for r in rows))
        return [UtilizationRow.of(r) for r in rows]

    @strawberry.field(description="Share of the window each connector was usable. " + _ROWS)
    async def availability(self, info: Info,
                           from_: From, to: To,
                           filter: Annotated[AnalyticsFilter | None, strawberry.argument(
                               description=_FILTER)] = None,
                          group_by: Annotated[AnalyticsGroup, strawberry.argument(
                              description=_ROW_GROUP)] = AnalyticsGroup.STATION,
                           bucket: Annotated[TimeBucket | None, strawberry.argument(  # type: ignore[valid-type]
                               description=_ROW_BUCKET)] = None,
                           time_zone: Annotated[str, strawberry.argument(
                               description=_TIME_ZONE)] = "UTC"
                           ) -> list[AvailabilityRow]:
        ctx: GraphContext = info.context
        rows = await ctx.services.analytics.availability(
            ctx.viewer, filter.to_domain() if filter else Scope(), from_, to,
            group_by is AnalyticsGroup.CONNECTOR, bucket, time_zone,
            _budget(ctx) if bucket else None)
        await _prefetch_stations(info, (r.station_id for r in rows))
        return [AvailabilityRow.of(r) for r in rows]

    @strawberry.field(description="Faults by station, connector and error code.")
    async def fault_reports(self, info: Info,
                            from_: From, to: To,
                            filter: Annotated[AnalyticsFilter | None, strawberry.argument(
                                description=_FILTER)] = None) -> FaultReport:
        ctx: GraphContext = info.context
        scope = filter.to_domain() if filter else Scope()
        groups = await ctx.services.analytics.fault_reports(ctx.viewer, scope, from_, to)
        await _prefetch_stations(info, (g.station_id for g in groups), "groups")
        return FaultReport(groups=[FaultSummary.of(g) for g in groups], _scope=scope,
                           _from=from_, _to=to)

    @strawberry.field(description="Stations online, connectors by status, sessions now, "
                                  "energy, revenue and refunds today (in `timeZone`).")
    async def overview(self, info: Info,
                       time_zone: Annotated[str, strawberry.argument(
                           description="IANA zone whose today is counted.")] = "UTC",
                       filter: Annotated[AnalyticsFilter | None, strawberry.argument(
                           description=_FILTER)] = None) -> Overview:
        ctx: GraphContext = info.context
        o = await ctx.services.analytics.overview(
            ctx.viewer, filter.to_domain() if filter else Scope(), time_zone)
        return Overview(
            stations_online=o.stations_online, stations_offline=o.stations_offline,
            connectors_by_status=[StatusCount(status=k, count=v)
                                  for k, v in sorted(o.connectors_by_status.items())],
            active_sessions=o.active_sessions, energy_today_kwh=o.energy_today_wh / 1000,
            revenue_today=_money(o.revenue_today), refunds_today=_money(o.refunds_today),
            net_revenue_today=_money(o.net_revenue_today))


def _money(by_currency: dict[str, int]) -> list[Money]:
    return [Money(amount_minor=BigInt(v), currency=k) for k, v in sorted(by_currency.items())]
