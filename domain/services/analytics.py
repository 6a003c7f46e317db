"""Analytics: energy trends, utilization, availability, faults and an overview.

Every figure is an aggregation the store computes (``Store.aggregate``) over the viewer's
scope from the policy; nothing loads the underlying rows into Python. What makes that
possible is materialized at write time by the charging use cases: the Wh each meter sample
adds (``MeterSample.delta_wh``) and the connector state intervals (``ConnectorInterval``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from domain import validation as v
from domain.aggregation import ByField, ByTime, Count, Group, Max, Metric, Min, OverlapSeconds, Sum
from domain.availability import stations_in_service
from domain.entities import (
    Connector,
    ConnectorInterval,
    ConnectorStatus,
    MeterSample,
    Payment,
    PaymentStatus,
    Record,
    Refund,
    Session,
    SessionState,
    Station,
    StatusEvent,
)
from domain.errors import Unauthenticated, ValidationError
from domain.faults import fault_filter
from domain.ocpp16 import shown_error_code
from domain.policy import Viewer, metered_on
from domain.query import ALL, NONE, Eq, Filter, In, Or, Range, Sub, all_of, any_of
from domain.services.base import Service
from domain.services.intervals import POINT_DOWN
from domain.timebuckets import Bucket, plan, zone

UNUSABLE = (ConnectorStatus.FAULTED, ConnectorStatus.UNAVAILABLE)
#: The overview's bucket for the connectors of offline stations (no ConnectorStatus).
OFFLINE = "OFFLINE"
#: The longest window: ``to`` no later than ``from`` three calendar years on
#: (``_years_after``), as the API's documentation reads. ``timedelta(days=3 * 366)`` let
#: three years and a day through (QA s30).
MAX_YEARS = 3
#: Figures one grouped trend or bucketed share query may answer (buckets x stations or
#: connectors): beyond it a chart would draw nothing readable, and building the cells
#: holds the event loop (``TOO_MANY``).
MAX_CELLS = 10_000


class GroupBy(StrEnum):
    """Figures per station or per connector."""

    STATION = "STATION"
    CONNECTOR = "CONNECTOR"


@dataclass(frozen=True, slots=True)
class Scope:
    """What the caller asked to look at (ids are record ids)."""

    station_ids: tuple[str, ...] | None = None
    cp_ids: tuple[str, ...] | None = None
    company_id: str | None = None
    user_id: str | None = None
    vehicle_id: str | None = None
    #: The stations behind this site now (a private field of theirs: a driver's matches
    #: none). A site of more stations than a list of ids takes (review r26-api2).
    site_id: str | None = None

    def stations(self) -> Filter:
        """The asked-for stations, as a filter on stations."""
        return all_of(
            In("id", self.station_ids) if self.station_ids is not None else None,
            In("cp_id", self.cp_ids) if self.cp_ids is not None else None,
            Eq("company_id", self.company_id) if self.company_id else None,
            Eq("site_id", self.site_id) if self.site_id else None,
        )

    def on_stations(self, field: str = "station_id") -> Filter:
        wanted = self.stations()
        return ALL if wanted == ALL else Sub(field, "station", wanted)

    def history(self) -> Filter:
        """State history (``StatusEvent``, ``ConnectorInterval``) on the asked-for
        stations: a company's is what went to its books (the records' ``company_id``), as
        its sessions are (``booked_sessions``), also on a station it has handed to
        another one since, and none of a station handed to it from before the handover."""
        plugs = replace(self, company_id=None).on_stations()
        return all_of(plugs, Eq("company_id", self.company_id) if self.company_id else None)

    def sessions(self) -> Filter:
        """Sessions on the asked-for stations (what happened at the plugs)."""
        return all_of(self.on_stations(),
                      Eq("user_id", self.user_id) if self.user_id else None,
                      Eq("vehicle_id", self.vehicle_id) if self.vehicle_id else None)

    def booked_sessions(self) -> Filter:
        """Sessions counted as business (started, revenue): a company's are those in its
        books, as its reads are, also on a station it has since handed to another one."""
        if not self.company_id:
            return self.sessions()
        plugs = replace(self, company_id=None)
        return all_of(plugs.sessions(), Eq("company_id", self.company_id))

    def refunds(self) -> Filter:
        """Refunds of the sessions counted as business (``booked_sessions``): a refund
        carries its session's station, driver and vehicle and its payment's books under
        the sessions' field names, so the same filter asks the same of both."""
        return self.booked_sessions()

    def payments(self) -> Filter:
        """Payments of the sessions counted as business, what revenue is: a payment
        carries its session's station, driver and vehicle and its books under the same
        names as refunds do."""
        return self.booked_sessions()

    def samples(self) -> Filter:
        """Meter samples metered on the asked-for plugs. A session's samples follow it, as
        the policy's scope does: a company's are those of the sessions in its books (on a
        station since handed over too), a driver's or vehicle's those of their sessions;
        samples of no session (an unknown transaction) are their station's company's."""
        plugs = replace(self, company_id=None).stations()
        by_session = all_of(Eq("company_id", self.company_id) if self.company_id else None,
                            Eq("user_id", self.user_id) if self.user_id else None,
                            Eq("vehicle_id", self.vehicle_id) if self.vehicle_id else None)
        unlinked = NONE if self.user_id or self.vehicle_id else all_of(
            Eq("session_id", None), metered_on(Eq("company_id", self.company_id)))
        return all_of(
            metered_on(plugs) if plugs != ALL else None,
            any_of(Sub("session_id", "session", by_session), unlinked)
            if by_session != ALL else None,
        )


#: Payments that bill what they ask: all but VOIDED (its session was corrected to cost
#: nothing, so it asks nothing). FAILED ones count: billed, not (yet) collected.
BILLED = (PaymentStatus.PENDING, PaymentStatus.CAPTURED, PaymentStatus.FAILED,
          PaymentStatus.REFUNDED)


def sampled_in(start: datetime, end: datetime) -> Filter:
    """Meter samples whose energy a window [start, end) holds: those in (start, end].

    A reading reports the energy that flowed up to its instant, over the interval since
    the reading before, so samples are bucketed closed on the right too
    (``ByTime.closed_right``): one taken exactly on a bucket's end (a clock-aligned
    meter's 00:00:00) is in the bucket that ends there, as billing spreads it over that
    interval (``tariff_bands.attributed_wh``). Closed on the left, every hour of
    clock-aligned readings was one reading interval late (QA s6: 23:00 → 0.5 kWh,
    00:00 → 1.5 kWh where billing said 1.0 / 1.0; readings ending at 22:00:00 put energy
    in the hour after the session ended). A sample records only its own instant, not
    where its interval began, so its energy is not spread: a reading interval with a
    bucket boundary inside it counts whole in the bucket it ends."""
    return Range("at", gt=start, lte=end)


def billed(scope: Filter, start: datetime, end: datetime, currency: str | None = None
           ) -> Filter:
    """Payments opened in [start, end) (``created_at``: the invoice date) that bill what
    they ask, in ``currency`` if given, within ``scope``."""
    return all_of(scope, In("status", BILLED), Eq("currency", currency) if currency else None,
                  Range("created_at", gte=start, lt=end))


@dataclass(frozen=True, slots=True)
class EnergyBucket:
    start: datetime
    energy_wh: int
    sessions: int
    #: Gross: what the payments opened in the bucket billed (``billed``).
    revenue_minor: int
    currency: str
    #: Paid back in the bucket (``Refund.at``), whenever it was billed.
    refunds_minor: int = 0
    #: Set when grouped (``GroupBy``): whose figures these are. ``station_id`` is None for
    #: samples stored before they recorded their station (their cpId tells it).
    station_id: str | None = None
    cp_id: str | None = None
    connector_id: int | None = None

    @property
    def net_minor(self) -> int:
        """Gross less refunds: below 0 in a bucket that paid back more than it billed."""
        return self.revenue_minor - self.refunds_minor


@dataclass(frozen=True, slots=True)
class ShareRow:
    station_id: str
    cp_id: str
    connector_id: int | None
    window_seconds: float
    first_seconds: float  # occupied / available
    second_seconds: float = 0.0  # charging (utilization) / state known (availability)
    start: datetime | None = None  # the bucket's start, when asked per bucket

    def share(self, seconds: float) -> float:
        return seconds / self.window_seconds if self.window_seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class FaultGroup:
    station_id: str
    cp_id: str
    connector_id: int  # 0: the charge point as a whole
    error_code: str
    count: int
    first_seen: datetime
    last_seen: datetime
    duration_seconds: float
    #: Of ``duration_seconds``, the time its station was offline (the fault still open).
    offline_seconds: float
    open: bool


#: A fault group: station id, charge point id, connector id (0: the point), error code.
FaultKey = tuple[str, str, int, str]
FAULT_KEYS = [ByField("station_id"), ByField("cp_id"), ByField("connector_id"),
              ByField("error_code")]


@dataclass(frozen=True, slots=True)
class _FaultTime:
    """Time in one fault within a window, the offline part of it, and when its first
    state interval overlapping the window began."""

    seconds: float
    offline_seconds: float
    since: datetime


def _key(row: dict[str, Any]) -> FaultKey:
    return (row["g0"], row["g1"], int(row["g2"]), row["g3"])


def _as_shown(groups: list[FaultGroup]) -> list[FaultGroup]:
    """Groups made by the stored code joined by the code shown: one OCPP 1.6 has not (a
    row written by another tool) reads OtherError (``ocpp16.member``), so it is one group
    with OtherError's, its reports and time added up (review s30: two groups, both shown
    ``OTHER_ERROR``). A plug has one code at a time: the times do not overlap."""
    joined: dict[FaultKey, FaultGroup] = {}
    for g in groups:
        code = shown_error_code(g.error_code).value
        k = (g.station_id, g.cp_id, g.connector_id, code)
        seen = joined.get(k)
        joined[k] = replace(g, error_code=code) if seen is None else replace(
            seen, count=seen.count + g.count, first_seen=min(seen.first_seen, g.first_seen),
            last_seen=max(seen.last_seen, g.last_seen),
            duration_seconds=seen.duration_seconds + g.duration_seconds,
            offline_seconds=seen.offline_seconds + g.offline_seconds,
            open=seen.open or g.open)
    return list(joined.values())


def _connector_own_state() -> Filter:
    """Intervals whose status and error are the connector's own: the charge point was
    not down. (History recorded before the point's state was kept beside it counts as
    the connector's, as it always did.)"""
    up = tuple(s for s in ConnectorStatus if s not in POINT_DOWN)
    return Or((Eq("point_status", None), In("point_status", up)))


def _fault_time_by_key(rows: list[dict[str, Any]]) -> dict[FaultKey, _FaultTime]:
    """Rows grouped by a fault's key and ``online`` (``g4``), added up per key."""
    times: dict[FaultKey, _FaultTime] = {}
    for row in rows:
        k, seconds = _key(row), float(row["s"])
        offline = 0.0 if row["g4"] else seconds
        seen = times.get(k)
        times[k] = _FaultTime(seconds, offline, row["since"]) if seen is None else \
            _FaultTime(seen.seconds + seconds, seen.offline_seconds + offline,
                       min(seen.since, row["since"]))
    return times


def _point_time_by_key(by_plug: dict[FaultKey, _FaultTime]) -> dict[FaultKey, _FaultTime]:
    """The charge point's fault time, keyed by connector 0: every connector records the
    point's state beside its own, so each has the same stretches while it existed; the
    connector that has the most of it stands for the point (one added during an outage
    has less of it). A station without connectors has no state history."""
    points: dict[FaultKey, _FaultTime] = {}
    for (station_id, cp_id, _, code), t in by_plug.items():
        k = (station_id, cp_id, 0, code)
        best = points.get(k)
        if best is None or t.seconds > best.seconds:
            points[k] = _FaultTime(t.seconds, t.offline_seconds,
                                   t.since if best is None else min(t.since, best.since))
        else:
            points[k] = replace(best, since=min(t.since, best.since))
    return points


@dataclass(frozen=True, slots=True)
class Overview:
    stations_online: int
    stations_offline: int
    connectors_by_status: dict[str, int]
    active_sessions: int
    energy_today_wh: int
    #: Per currency: gross (payments opened today), refunds made today, and net.
    revenue_today: dict[str, int]
    refunds_today: dict[str, int]

    @property
    def net_revenue_today(self) -> dict[str, int]:
        """Gross less refunds per currency, for every currency either has."""
        return {c: self.revenue_today.get(c, 0) - self.refunds_today.get(c, 0)
                for c in sorted(self.revenue_today.keys() | self.refunds_today.keys())}


def _window(start: datetime, end: datetime, prefix: str = "") -> None:
    """``prefix``: where the caller was given the bounds, for the errors about them
    (``filter.`` for energyTrend's deprecated filter pair: QA s17, they named the
    top-level ``to`` that form lacked)."""
    v.instant(start, f"{prefix}from")
    v.instant(end, f"{prefix}to")
    if end <= start:
        raise ValidationError("`to` must be after `from`", field=f"{prefix}to",
                              code="OUT_OF_RANGE")
    latest = _years_after(start, MAX_YEARS)
    if end > latest:
        raise ValidationError(f"at most three years at once: no later than {latest.isoformat()}",
                              field=f"{prefix}to", code="OUT_OF_RANGE")


def _years_after(instant: datetime, years: int) -> datetime:
    """The same UTC date and time ``years`` on; 28 February for a 29th in a year without
    one."""
    instant = instant.astimezone(UTC)
    try:
        return instant.replace(year=instant.year + years)
    except ValueError:
        return instant.replace(year=instant.year + years, day=28)


def _overlapping(start_field: str, end_field: str, lo: datetime, hi: datetime) -> Filter:
    return all_of(Range(start_field, lt=hi), Or((Eq(end_field, None),
                                                 Range(end_field, gt=lo))))


#: Rows (buckets, each once per station or connector when grouped) one request may ask
#: for across all its energy trends and bucketed shares: a row costs about a hundred
#: microseconds of the event loop (building and sending it), and thirty aliased trends
#: of 10,000 hourly buckets stalled chargers for seconds.
BUCKETS_PER_REQUEST = 20_000


@dataclass(slots=True)
class BucketBudget:
    """What is left of a request's ``BUCKETS_PER_REQUEST``. Its buckets are spent before
    any store work; the rest of its rows (the buckets again for each further station or
    connector) once their number is known, before they are built. Counted as buckets
    only, twenty aliases of 10,000 rows per connector (500 buckets each) were 200,000
    rows for 10,000 spent, and held the event loop for seconds (QA)."""

    left: int = BUCKETS_PER_REQUEST

    def spend(self, count: int, field: str = "bucket") -> None:
        if count > self.left:
            raise ValidationError(
                f"more than {BUCKETS_PER_REQUEST} rows (buckets, per station or connector "
                "when grouped) in one request: use larger buckets, shorter windows, fewer "
                "stations or fewer queries", field=field, code="QUERY_TOO_COMPLEX")
        self.left -= count


def _signed_in(viewer: Viewer) -> None:
    """Analytics are for signed-in viewers. The public map shows stations and their live
    status, not history: anyone else would get zeros and empty lists that read as
    measured (no energy today, no faults)."""
    if viewer.anonymous:
        raise Unauthenticated("sign in first")


def _per_connector(scope: Scope) -> None:
    """Utilization, availability and faults come from the connectors' state history
    (``ConnectorInterval``, ``StatusEvent``), which names no driver or vehicle: a
    Charging stretch cannot be told to be this driver's. Filtering only the sessions
    would count other drivers' charging against one driver's occupancy, and ignoring the
    filter would answer for everyone, so it is refused."""
    for value, field in ((scope.user_id, "filter.userId"),
                         (scope.vehicle_id, "filter.vehicleId")):
        if value:
            raise ValidationError(
                "connector state history is per station and connector, not per driver or "
                "vehicle: filter by stations here (energyTrend follows drivers)",
                field=field, code="UNSUPPORTED")


def _elapsed(start: datetime, now: datetime) -> float:
    """The seconds of a window that have passed (``now``: its end, or the present if
    earlier): what shares are of. "Today" at 18:00 is 18 hours, so a connector busy all
    day so far reads 1.0, not 0.75 of a day that has not happened."""
    return max((now - start).total_seconds(), 0.0)


def _per_station(rows: list[ShareRow]) -> list[ShareRow]:
    """One row per station: the sums of its connector rows."""
    stations: dict[str, ShareRow] = {}
    for row in rows:
        total = stations.get(row.station_id)
        stations[row.station_id] = replace(row, connector_id=None) if total is None else \
            replace(total, window_seconds=total.window_seconds + row.window_seconds,
                    first_seconds=total.first_seconds + row.first_seconds,
                    second_seconds=total.second_seconds + row.second_seconds)
    return list(stations.values())


#: A record kind's start, end and the instant on our clock its start was current:
#: (start, end, since) of ``OverlapSeconds``.
_Times = tuple[str, str, str]
#: Sessions and state intervals live on their charger's timeline (its clock may be hours
#: behind ours, or 1970), so one still open lasts until its own "now" there: its start
#: plus what our clock saw since it was current (a session's start received,
#: ``created_at``, on the service's clock; an interval's ``observed_at``). Our clock's
#: now was hours of charging for a charger 3 h behind, and a whole day so far for one
#: never set (QA s20, time). Stored, not ``ChargerClocks``: analytics may run on an
#: instance that does not hold the charger. A start queued offline and sent on
#: reconnecting counts, while open, from its receipt's offset: its close sets it right.
TIMES: dict[type[Record], _Times] = {
    Session: ("start_time", "end_time", "created_at"),
    ConnectorInterval: ("start", "end", "observed_at"),
}


#: The store sums state and session time per connector (``AnalyticsService._rows``).
PER_CONNECTOR = [ByField("station_id"), ByField("connector_id")]


#: Buckets whose overlaps one aggregate sums (a metric each: a column and three
#: parameters in SQLite, an accumulator in MongoDB).
SPANS_PER_QUERY = 200


@dataclass(frozen=True, slots=True)
class _Span:
    """A window shares are of: [lo, hi), elapsed up to ``now``; ``bucket``: the start of
    the bucket it is part of, when asked per bucket (lo is later in the first bucket)."""

    lo: datetime
    hi: datetime
    now: datetime
    bucket: datetime | None = None

    @property
    def elapsed(self) -> float:
        return _elapsed(self.lo, min(self.now, self.hi))


@dataclass(frozen=True, slots=True)
class _Plug:
    """A connector a share row is of (``AnalyticsService._connectors``): one that
    exists (``current``), or one known from the state history in the viewer's books."""

    station_id: str
    cp_id: str
    connector_id: int
    current: bool = True


#: A group of a grouped trend: (station id, cp id) or (station id, cp id, connector id);
#: () when not grouped.
GroupKey = tuple[Any, ...]


def _energy_groups(group_by: GroupBy | None) -> list[Group]:
    """The group keys added to a trend's time key. The cpId beside the station id keeps
    samples stored before they recorded their station (station id None) apart per
    charger; meter samples and sessions both carry all three fields."""
    if group_by is None:
        return []
    keys: list[Group] = [ByField("station_id"), ByField("cp_id")]
    return [*keys, ByField("connector_id")] if group_by is GroupBy.CONNECTOR else keys


def _cells(rows: list[dict[str, Any]], metric: str, groups: int
           ) -> dict[tuple[int, GroupKey], Any]:
    """A trend's rows by (time key, group)."""
    return {(r["g0"], tuple(r[f"g{i}"] for i in range(1, groups + 1))): r[metric]
            for r in rows}


def _groups_in(*cells: dict[tuple[int, GroupKey], Any]) -> list[GroupKey]:
    """The groups with any figure, by cpId and connector."""
    found = {g for figures in cells for _, g in figures}
    # A MongoDB payment written before it recorded its charger has none (``cp_id``).
    return sorted(found, key=lambda g: (g[1] or "", (g[2] or 0) if len(g) > 2 else 0,
                                        g[0] or ""))


def _group_fields(group: GroupKey) -> dict[str, Any]:
    if not group:
        return {}
    connector = group[2] if len(group) > 2 else None  # none on a payment from before
    return {"station_id": group[0], "cp_id": group[1],
            "connector_id": int(connector) if connector is not None else None}


def _check_cells(cells: int, field: str) -> None:
    if cells > MAX_CELLS:
        raise ValidationError(
            f"{cells} figures asked for, at most {MAX_CELLS}: use larger buckets, a "
            "shorter window or fewer stations", field=field, code="TOO_MANY")


class AnalyticsService(Service):
    def _scoped(self, viewer: Viewer, kind: str, where: Filter) -> Filter:
        """The viewer's scope AND what they asked for, conditions on private fields
        guarded as reads guard them, also inside subqueries: a driver filtering the
        overview by company and cpIds must not learn who runs a station from its count."""
        return all_of(self.policy.scope(viewer, kind),
                      self.policy.guard_nested(viewer, kind, where))

    # ------------------------------------------------------------- energy trend
    async def energy_trend(self, viewer: Viewer, scope: Scope, start: datetime, end: datetime,
                           bucket: Bucket, time_zone: str = "UTC",
                           currency: str | None = None, budget: BucketBudget | None = None,
                           group_by: GroupBy | None = None, *, window_in: str = ""
                           ) -> list[EnergyBucket]:
        """Energy per bucket from meter samples (a session over midnight counts on both
        days; a sample counts in the bucket it ends, ``sampled_in``), sessions started
        per bucket, gross revenue billed in it (``_revenue``) and the refunds made in it
        (``_refunds``; net is the one less the other).
        For signed-in viewers only (anyone else would get a window of zeros); ``budget``:
        the request's (``BucketBudget``). With ``group_by``, every bucket once per
        station (connector) with figures in the window, each the same three aggregates
        with the group's key added (``_energy_groups``), at most ``MAX_CELLS``.
        ``window_in``: where the caller was given the bounds (``_window``'s ``prefix``):
        its own arguments (``""``) or the API's deprecated filter pair (``filter.``)."""
        _signed_in(viewer)
        _window(start, end, window_in)
        tz = zone(time_zone)
        # The same ISO 4217 check as setTariff: an unknown code would only ever match no
        # session and answer a revenue of 0 in a currency that does not exist.
        if currency is not None:
            currency = v.currency(currency)
        # One plan for all five aggregates: its keys are the same on any field, closed on
        # either side (``plan``); three plans cost three times the zone's offsets (QA s30).
        energy_plan = plan("at", bucket, tz, start, end, closed_right=True)
        keys_at = energy_plan.keys

        def on(field: str) -> ByTime:  # the same buckets closed on the left
            return replace(energy_plan.grouping, field=field, closed_right=False)

        if budget is not None:  # before the first await: aliases run side by side
            budget.spend(len(energy_plan.starts))
        keys = _energy_groups(group_by)
        energy = await self.store.aggregate(
            MeterSample,
            self._scoped(viewer, "meter_sample",
                         all_of(scope.samples(), sampled_in(start, end))),
            [energy_plan.grouping, *keys], {"wh": Sum("delta_wh")})
        started = await self.store.aggregate(
            Session, self._scoped(viewer, "session", all_of(
                scope.booked_sessions(), Range("start_time", gte=start, lt=end))),
            [on("start_time"), *keys], {"n": Count()})
        currency = currency or await self._main_currency(viewer, scope, start, end)
        revenue = await self._revenue(viewer, scope, currency, start, end,
                                      [on("created_at"), *keys])
        wh, n = _cells(energy, "wh", len(keys)), _cells(started, "n", len(keys))
        minor = _cells(revenue, "minor", len(keys))
        # Refunds are bucketed by their ``at`` too, but a refund is made at that instant:
        # in the bucket starting there (the same keys, closed on the left).
        back = _cells(await self._refunds(viewer, scope, currency, start, end,
                                          [on("at"), *keys]), "minor", len(keys))
        groups = [()] if group_by is None else _groups_in(wh, n, minor, back)
        _check_cells(len(energy_plan.starts) * len(groups), "groupBy")
        if budget is not None and len(groups) > 1:  # its buckets once are spent already
            budget.spend(len(energy_plan.starts) * (len(groups) - 1), "groupBy")
        return [EnergyBucket(start=instant,
                             energy_wh=round(wh.get((keys_at[i], g), 0)),
                             sessions=int(n.get((keys_at[i], g), 0)),
                             revenue_minor=round(minor.get((keys_at[i], g), 0)),
                             refunds_minor=round(back.get((keys_at[i], g), 0)),
                             currency=currency, **_group_fields(g))
                for g in groups for i, instant in enumerate(energy_plan.starts)]

    async def _revenue(self, viewer: Viewer, scope: Scope, currency: str | None,
                       start: datetime, end: datetime, keys: list[Group]
                       ) -> list[dict[str, Any]]:
        """What the payments opened in [start, end) billed, summed per ``keys``
        (``minor``), in ``currency`` if given: gross revenue is what was billed, booked
        when it was (a payment is opened when its session closes; its ``created_at`` is
        the invoice date). Not the sessions' cost by their end: a late StopTransaction
        rewrites both after the money moved, while the payment keeps what was asked
        (``payments.repriced``: only an uncollected one, PENDING or FAILED, follows the
        correction, a VOIDED one asks nothing), so a correction moved revenue into a
        period already reported and net no longer matched captured less refunded (QA
        s18, billing2). Seen as payments are: in their books, or a driver's own. A
        session without a payment (it cost nothing) bills nothing."""
        return await self.store.aggregate(
            Payment, self._scoped(viewer, "payment", billed(scope.payments(), start, end,
                                                            currency)),
            keys, {"minor": Sum("amount_minor")})

    async def _refunds(self, viewer: Viewer, scope: Scope, currency: str | None,
                       start: datetime, end: datetime, keys: list[Group]
                       ) -> list[dict[str, Any]]:
        """Refunds made in [start, end) (``Refund.at``), summed per ``keys`` (``minor``),
        in ``currency`` if given. Booked when made, as accounting books them: a session
        billed in March and refunded in April lowers April's net, and March's figures
        stay as reported. Seen as payments are: in their books, or a driver's own."""
        return await self.store.aggregate(
            Refund, self._scoped(viewer, "refund", all_of(
                scope.refunds(), Eq("currency", currency) if currency else None,
                Range("at", gte=start, lt=end))),
            keys, {"minor": Sum("amount_minor")})

    async def _main_currency(self, viewer: Viewer, scope: Scope, start: datetime,
                             end: datetime) -> str:
        """The currency most payments billed in the window, and refunds made in it, were
        in: a window of refunds only is shown in theirs."""
        rows = await self.store.aggregate(
            Payment, self._scoped(viewer, "payment", billed(scope.payments(), start, end)),
            [ByField("currency")], {"n": Count()})
        refunds = await self.store.aggregate(
            Refund, self._scoped(viewer, "refund", all_of(
                scope.refunds(), Range("at", gte=start, lt=end))),
            [ByField("currency")], {"n": Count()})
        counts = Counter({r["g0"]: r["n"] for r in rows if r["g0"]})
        counts.update({r["g0"]: r["n"] for r in refunds if r["g0"]})
        return counts.most_common(1)[0][0] if counts else "EUR"

    # ------------------------------------------------------------- utilization, availability
    async def _connectors(self, viewer: Viewer, scope: Scope, lo: datetime, hi: datetime
                          ) -> list[_Plug]:
        """The connectors to give rows for, over ``lo`` .. ``hi``: those of the asked-for
        stations the viewer runs now, and of every station those with state history in
        its books overlapping the window (``Scope.history``), read from that history
        (one aggregate): a company that handed a station over keeps rows of its time
        there, as it keeps the station's sessions (their ``station`` null: it no longer
        sees it), also once the new company removed the station or a connector of it
        (review r27-analytics2: rows came from the connectors the removal deleted), and
        a removed connector keeps its rows of the time it was there, also on a station
        handed back since (review r27-analytics3: a plug the other company removed lost
        the figures of the first period); a station handed away before the window has no
        row (zeros read as measured). A connector known from history only has rows
        only where that history overlaps (``_rows``). Drivers and the
        public map see every connector's live status but no station's history; a row
        for them would read 0 seconds available or charging as if measured, so they get
        no row, as a hidden record reads like a missing one."""
        books = self.policy.scope(viewer, "connector_interval")
        if books == NONE:
            return []
        plugs = {(c.station_id, c.connector_id): _Plug(c.station_id, c.cp_id, c.connector_id)
                 for c in await self.store.find_all(Connector, self._scoped(
                     viewer, "connector", scope.on_stations()), limit=100_000)}
        for row in await self.store.aggregate(
                ConnectorInterval, self._scoped(viewer, "connector_interval", all_of(
                    scope.history(), _overlapping("start", "end", lo, hi))),
                [*PER_CONNECTOR, ByField("cp_id")], {"n": Count()}):
            plugs.setdefault((row["g0"], row["g1"]),
                             _Plug(row["g0"], row["g2"], row["g1"], current=False))
        return list(plugs.values())

    @staticmethod
    def _rows(connectors: list[_Plug], by_connector: bool, window: float,
              first: dict[tuple[Any, ...], float], second: dict[tuple[Any, ...], float],
              bucket: datetime | None = None,
              there: dict[tuple[Any, ...], float] | None = None) -> list[ShareRow]:
        """A row per connector (``_connectors``), or per station the sum of its
        connectors' rows, so the two add up and a station's share is the mean of its
        connectors'. The store sums per connector; a connector counts at most the whole
        window, also when its records overlap (sessions of a charger whose clock stepped
        back). A connector known from history only (removed, or of a station the viewer
        no longer runs) has a row only where its history in the viewer's books overlaps
        the window (``there``: those seconds), and only that part is its window: a plug
        removed at 16:00 has no row, and drags no share, in a bucket after it, and the
        buckets add up to the whole window (review r27-analytics4)."""
        rows = []
        for c in connectors:
            key = (c.station_id, c.connector_id)
            span = window
            if not c.current:
                span = min((there or {}).get(key, 0.0), window)
                if span <= 0:
                    continue
            rows.append(ShareRow(station_id=c.station_id, cp_id=c.cp_id,
                                 connector_id=c.connector_id, window_seconds=span,
                                 first_seconds=min(first.get(key, 0.0), span),
                                 second_seconds=min(second.get(key, 0.0), span),
                                 start=bucket))
        if not by_connector:
            rows = _per_station(rows)
        return sorted(rows, key=lambda r: (r.cp_id, r.connector_id or 0))

    def _spans(self, start: datetime, end: datetime, bucket: Bucket | None, time_zone: str,
               budget: BucketBudget | None) -> list[_Span]:
        """The windows shares are of: the whole window, or each bucket's part of it
        (aligned in ``time_zone`` as energy trends are), each up to now. ``now`` is our
        clock's, not capped at the window: an open record's own now is its start plus
        what our clock saw since (``TIMES``), which the window's end caps in the store."""
        tz = zone(time_zone)
        now = self.now()
        if bucket is None:
            return [_Span(start, end, now)]
        starts = plan("start", bucket, tz, start, end).starts
        if budget is not None:  # before the first await, as energy trends spend it
            budget.spend(len(starts))
        ends = (*starts[1:], end)
        return [_Span(max(lo, start), min(hi, end), now, bucket=lo)
                for lo, hi in zip(starts, ends, strict=True)]

    async def _overlaps(self, viewer: Viewer, kind: type[Record], where: Filter,
                        fields: _Times, spans: list[_Span]
                        ) -> list[dict[tuple[Any, ...], float]]:
        """Per span, the seconds each connector's records of ``kind`` overlap it: one
        ``OverlapSeconds`` per span in one aggregate (``SPANS_PER_QUERY`` at a time),
        only over the records overlapping those spans; a record still open up to its
        own now on its charger's timeline (``TIMES``)."""
        lo, hi, since = fields
        found: list[dict[tuple[Any, ...], float]] = []
        for first in range(0, len(spans), SPANS_PER_QUERY):
            part = spans[first:first + SPANS_PER_QUERY]
            rows = await self.store.aggregate(
                kind, self._scoped(viewer, "connector_interval", all_of(
                    where, _overlapping(lo, hi, part[0].lo, part[-1].hi))),
                PER_CONNECTOR, {f"s{i}": OverlapSeconds(lo, hi, s.lo, s.hi, s.now, since)
                                for i, s in enumerate(part)})
            found.extend({(r["g0"], r["g1"]): float(r[f"s{i}"]) for r in rows}
                         for i in range(len(part)))
        return found

    async def _share_rows(self, viewer: Viewer, scope: Scope, by_connector: bool,
                          spans: list[_Span], first: tuple[type[Record], Filter, _Times],
                          second: tuple[type[Record], Filter, _Times],
                          budget: BucketBudget | None = None) -> list[ShareRow]:
        """Rows of two overlap sums per connector (or station) per span, each capped at
        its span (``_rows``). The rows' number is known before the sums: beyond
        ``MAX_CELLS``, or beyond what is left of the request's ``budget`` (its spans were
        spent by ``_spans``), it is refused before they are."""
        connectors = await self._connectors(viewer, scope, spans[0].lo, spans[-1].hi)
        groups = len(connectors) if by_connector else len({c.station_id for c in connectors})
        if len(spans) > 1:
            _check_cells(len(spans) * groups, "bucket")
        if budget is not None and groups > 1:
            budget.spend(len(spans) * (groups - 1))
        firsts = await self._overlaps(viewer, *first, spans)
        seconds = await self._overlaps(viewer, *second, spans)
        # Where the connectors known from history only were there (one more aggregate,
        # only when there are any).
        theres: list[dict[tuple[Any, ...], float]] = [{} for _ in spans]
        if not all(c.current for c in connectors):
            theres = await self._overlaps(viewer, ConnectorInterval, scope.history(),
                                          TIMES[ConnectorInterval], spans)
        rows = [row for span, a, b, there in zip(spans, firsts, seconds, theres, strict=True)
                for row in self._rows(connectors, by_connector, span.elapsed, a, b,
                                      span.bucket, there)]
        # Stable: each connector's (station's) buckets stay in time order.
        return sorted(rows, key=lambda r: (r.cp_id, r.connector_id or 0))

    async def utilization(self, viewer: Viewer, scope: Scope, start: datetime, end: datetime,
                          by_connector: bool, bucket: Bucket | None = None,
                          time_zone: str = "UTC", budget: BucketBudget | None = None
                          ) -> list[ShareRow]:
        """Share of the window (or of each ``bucket`` of it, aligned in ``time_zone``)
        each connector (or station: all its connectors) was occupied by a session, and
        was charging (status Charging, its station online: an offline charger's state is
        unknown; a StopTransaction ends it, ``intervals.finishing``). Only connectors
        whose state history the viewer may see (``_connectors``)."""
        _signed_in(viewer)
        _per_connector(scope)
        _window(start, end)
        spans = self._spans(start, end, bucket, time_zone, budget)
        # Occupancy and charging time both by the books, the sessions' and the state
        # intervals' own (``Scope.history``): a station handed over is its old company's
        # up to the handover and its new one's after it, both of its sessions and of its
        # state (review r27).
        return await self._share_rows(
            viewer, scope, by_connector, spans,
            (Session, scope.booked_sessions(), TIMES[Session]),
            # Charging while its station was online: offline, the status is only the
            # last one reported, and nobody can tell the charging went on.
            (ConnectorInterval, all_of(scope.history(), Eq("online", True),
                                       Eq("status", ConnectorStatus.CHARGING)),
             TIMES[ConnectorInterval]), budget if bucket is not None else None)

    async def availability(self, viewer: Viewer, scope: Scope, start: datetime, end: datetime,
                           by_connector: bool, bucket: Bucket | None = None,
                           time_zone: str = "UTC", budget: BucketBudget | None = None
                           ) -> list[ShareRow]:
        """Share of the window (or of each ``bucket`` of it) each connector was usable:
        its station online and its status neither Faulted nor Unavailable; and
        (``second_seconds``) the time its state was known at all. Time before a
        connector's state history began (its station added later, its charger not yet
        connected) and the central system's own outages (``ConnectorInterval.known``:
        from a disconnect it recorded for stopping or crashing until the charger's next
        connection) count as not usable in the share, and are the window less the known
        time: an uptime KPI divides by the known time instead, so neither the server's
        downtime nor its charger's absence meanwhile is held against the charger. Only
        connectors whose state history the viewer may see (``_connectors``)."""
        _signed_in(viewer)
        _per_connector(scope)
        _window(start, end)
        spans = self._spans(start, end, bucket, time_zone, budget)
        usable = [s for s in ConnectorStatus if s not in UNUSABLE]
        return await self._share_rows(
            viewer, scope, by_connector, spans,
            (ConnectorInterval, all_of(scope.history(), Eq("online", True),
                                       In("status", tuple(usable))),
             TIMES[ConnectorInterval]),
            # Every stretch of state history, offline ones included (known to be
            # offline), but the central system's outages: nobody was listening.
            (ConnectorInterval, all_of(scope.history(), Eq("known", True)),
             TIMES[ConnectorInterval]), budget if bucket is not None else None)

    # ------------------------------------------------------------- faults
    def fault_events_filter(self, scope: Scope, start: datetime, end: datetime) -> Filter:
        """The individual fault reports in the window (StatusEvents stating a fault,
        ``domain.faults``: an error code, or status Faulted whatever its code), in the
        books asked for (``Scope.history``), as the groups count them."""
        _per_connector(scope)
        _window(start, end)
        return all_of(scope.history(), fault_filter(), Range("at", gte=start, lt=end))

    async def fault_reports(self, viewer: Viewer, scope: Scope, start: datetime,
                            end: datetime) -> list[FaultGroup]:
        """Faults by station, connector and error code: how often reported, first and last
        report, total time in that fault within the window (and how much of it the
        station was offline), and whether it is still reported now. A fault is what
        ``domain.faults`` says: a Faulted status reported with NoError is the group of
        error code NoError (its events carry the charger's vendor code and text).

        A charger-wide fault (reported on connector 0) is one group on connector 0: its
        time is the charge point's, from its connectors' state history, and it is open
        while the station reports it. A connector's groups are its own reports: the time
        the point was down is not theirs. A fault stays open, and its time counts, while
        its station is offline: the last thing the charger said stands until a report
        clears it.

        A fault already going when the window opens (reported before it, cleared inside
        it or not at all) is a group too, from its state intervals: no report in the
        window (count 0), the time it spent inside the window, and as first and last seen
        the last report of it before the window.

        Reports and time are those of the viewer's books (and of a company asked for,
        ``Scope.history``): a fault going when its station was handed over is the new
        company's from the handover, where its state interval began in its books, and
        first and last seen are that instant if it has no report of its own (review r27:
        they told the old company's report). Grouped by the code as shown
        (``_as_shown``)."""
        _signed_in(viewer)
        reports = await self.store.aggregate(
            StatusEvent, self._scoped(viewer, "status_event",
                                      self.fault_events_filter(scope, start, end)),
            FAULT_KEYS, {"n": Count(), "first": Min("at"), "last": Max("at")})
        groups = {_key(r): (int(r["n"]), r["first"], r["last"]) for r in reports}
        times = await self._fault_times(viewer, scope, start, end)
        # Faults carried into the window: time inside it but no report in it. (A stretch
        # with no time inside, one starting after "now" on a charger clock ahead of ours,
        # is left out like the window's future.)
        carried = {k: t.since for k, t in times.items() if k not in groups and t.seconds > 0}
        if carried:
            before = await self._last_reports_before(viewer, scope, start, carried)
            for k, since in carried.items():
                seen = before.get(k, since)  # no report kept: when its interval began
                groups[k] = (0, seen, seen)
        open_now = await self._open_faults(viewer, scope)
        none = _FaultTime(0.0, 0.0, start)
        return sorted(_as_shown([
            FaultGroup(station_id=k[0], cp_id=k[1], connector_id=k[2], error_code=k[3],
                       count=n, first_seen=first, last_seen=last,
                       duration_seconds=times.get(k, none).seconds,
                       offline_seconds=times.get(k, none).offline_seconds,
                       open=k in open_now)
            for k, (n, first, last) in groups.items()]),
            key=lambda g: (g.cp_id, g.connector_id, g.error_code))

    async def _fault_times(self, viewer: Viewer, scope: Scope, start: datetime,
                           end: datetime) -> dict[FaultKey, _FaultTime]:
        """Time in each fault within the window, from the state intervals: a connector's
        own faults (its error code while the charge point was not down), and the charge
        point's (connector 0: its error code beside every connector's stretch)."""
        lo, hi, observed = TIMES[ConnectorInterval]
        within = all_of(scope.history(), _overlapping(lo, hi, start, end))
        # An open fault lasts until its own now on its charger's timeline (``TIMES``).
        metrics: dict[str, Metric] = {
            "s": OverlapSeconds(lo, hi, start, end, self.now(), observed), "since": Min(lo)}
        own = await self.store.aggregate(
            ConnectorInterval, self._scoped(viewer, "connector_interval", all_of(
                within, fault_filter(), _connector_own_state())),
            [*FAULT_KEYS, ByField("online")], metrics)
        point = await self.store.aggregate(
            ConnectorInterval, self._scoped(viewer, "connector_interval", all_of(
                within, fault_filter("point_status", "point_error_code"))),
            [*FAULT_KEYS[:3], ByField("point_error_code"), ByField("online")], metrics)
        return _fault_time_by_key(own) | _point_time_by_key(_fault_time_by_key(point))

    async def _open_faults(self, viewer: Viewer, scope: Scope) -> set[FaultKey]:
        """The faults reported now: each connector's own error code, and the charge
        point's (connector 0, ``Station.error_code``); what ``station { errorCode }``
        and ``connector { errorCode }`` read. Removed connectors and stations report
        nothing."""
        plugs = await self.store.aggregate(
            Connector, all_of(self._scoped(viewer, "connector", scope.on_stations()),
                              fault_filter()), FAULT_KEYS, {"n": Count()})
        points = await self.store.aggregate(
            Station, all_of(self._scoped(viewer, "station", scope.stations()),
                            fault_filter()),
            [ByField("id"), ByField("cp_id"), ByField("error_code")], {"n": Count()})
        return {_key(r) for r in plugs} | {(r["g0"], r["g1"], 0, r["g2"]) for r in points}

    async def _last_reports_before(self, viewer: Viewer, scope: Scope, start: datetime,
                                   wanted: dict[FaultKey, Any]
                                   ) -> dict[FaultKey, datetime]:
        """The newest report before ``start`` of each (station, cp, connector, error code)
        in ``wanted``; narrowed by station and code, so it reads only those stations'
        history of those faults."""
        rows = await self.store.aggregate(
            StatusEvent, self._scoped(viewer, "status_event", all_of(
                scope.history(),
                In("station_id", tuple(sorted({k[0] for k in wanted}))),
                In("error_code", tuple(sorted({k[3] for k in wanted}))),
                fault_filter(), Range("at", lt=start))),
            FAULT_KEYS, {"last": Max("at")})
        return {k: r["last"] for r in rows if (k := _key(r)) in wanted}

    # ------------------------------------------------------------- overview
    async def overview(self, viewer: Viewer, scope: Scope, time_zone: str = "UTC"
                       ) -> Overview:
        """The network now and today in ``time_zone``: for signed-in viewers only."""
        _signed_in(viewer)
        tz = zone(time_zone)
        now = self.now()
        local = now.astimezone(tz)
        midnight = datetime(local.year, local.month, local.day, tzinfo=tz).astimezone(
            now.tzinfo)
        tomorrow = (datetime(local.year, local.month, local.day, tzinfo=tz)
                    + timedelta(days=1)).astimezone(now.tzinfo)
        # "Today" is midnight to tomorrow for energy as for revenue: samples a charger
        # stamped after today (its clock ahead, or history replayed) are another day's,
        # so the overview and the energy trend's day agree (a reading at midnight is
        # yesterday's energy: ``sampled_in``).
        stations = await self.store.aggregate(
            Station, self._scoped(viewer, "station", scope.stations()),
            [ByField("online")], {"n": Count()})
        online = {bool(r["g0"]): r["n"] for r in stations}
        connectors = await self._connectors_by_status(viewer, scope)
        active = await self.store.count(Session, self._scoped(viewer, "session", all_of(
            scope.booked_sessions(), Eq("state", SessionState.ACTIVE))))
        energy = await self.store.aggregate(
            MeterSample, self._scoped(viewer, "meter_sample", all_of(
                scope.samples(), sampled_in(midnight, tomorrow))), [],
            {"wh": Sum("delta_wh")})
        revenue = await self._revenue(viewer, scope, None, midnight, tomorrow,
                                      [ByField("currency")])
        refunds = await self._refunds(viewer, scope, None, midnight, tomorrow,
                                      [ByField("currency")])
        return Overview(
            stations_online=online.get(True, 0), stations_offline=online.get(False, 0),
            connectors_by_status=connectors,
            active_sessions=active, energy_today_wh=round(energy[0]["wh"]) if energy else 0,
            revenue_today={r["g0"]: round(r["minor"]) for r in revenue if r["g0"]},
            refunds_today={r["g0"]: round(r["minor"]) for r in refunds if r["g0"]})

    async def _connectors_by_status(self, viewer: Viewer, scope: Scope) -> dict[str, int]:
        """Connectors of online stations by their status, those of offline stations
        under ``OFFLINE``: their status is the last one reported, and a connector of a
        charger that is away cannot be started, whatever it said last (a map would
        advertise it as available). The connectors of an online station down as a whole
        (connector 0 Unavailable or Faulted) count under that status, as their state
        history records them (``intervals.effective_state``): each plug may still say
        Available, but none can charge (QA: counted AVAILABLE while availability and
        ``availableNow`` had them unusable)."""
        on = await self.store.aggregate(
            Connector, self._scoped(viewer, "connector", all_of(
                scope.on_stations(), Sub("station_id", "station", stations_in_service()))),
            [ByField("status")], {"n": Count()})
        counts = Counter({ConnectorStatus(r["g0"]).name: int(r["n"]) for r in on})
        for down in sorted(POINT_DOWN):
            counts[down.name] += await self.store.count(
                Connector, self._scoped(viewer, "connector", all_of(
                    scope.on_stations(), Sub("station_id", "station", all_of(
                        Eq("online", True), Eq("status", down))))))
        counts[OFFLINE] = await self.store.count(
            Connector, self._scoped(viewer, "connector", all_of(
                scope.on_stations(), Sub("station_id", "station", Eq("online", False)))))
        return {status: n for status, n in counts.items() if n}
