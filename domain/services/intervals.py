"""Connector state history (``ConnectorInterval``): contiguous intervals of what analytics
tells apart (status, error code, online), on the charger's timeline."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import cast

from domain.availability import POINT_DOWN
from domain.entities import (
    BILLED_TIME_TOLERANCE,
    Connector,
    ConnectorInterval,
    ConnectorStatus,
    Session,
    Station,
)
from domain.ids import new_id
from domain.policy import Viewer
from domain.ports import Change, Guard, Insert, Store
from domain.query import Eq, In, Range, Sort, all_of, any_of
from domain.services.base import books_of, charger, patch, stamp_new, still_in_books

#: The statuses OCPP 1.6 gives connector 0.
POINT_STATUSES = POINT_DOWN | {ConnectorStatus.AVAILABLE}
#: A connector occupied but not charging because the car is done: SuspendedEV (the car
#: stopped taking energy) and Finishing (stopped, not yet unplugged; counted only while
#: the transaction is open, as the span of a session bounds it). SuspendedEVSE is the
#: charger or its operator throttling, never the driver's doing, so never billed. Only
#: once the car has charged in the session (``idle_within``).
IDLE_STATUSES = (ConnectorStatus.SUSPENDED_EV, ConnectorStatus.FINISHING)
#: A connector's statuses while a transaction runs on it (OCPP 1.6, 4.9): its
#: StopTransaction ends them (``finishing``).
IN_TRANSACTION = (ConnectorStatus.CHARGING, ConnectorStatus.SUSPENDED_EV,
                  ConnectorStatus.SUSPENDED_EVSE)
#: Idle (and charging) stretches read per cpId for one batch of sessions (``idle_times``); a session
#: with more status changes than that is billed for the idle time of those read (fewer,
#: never more).
IDLE_STRETCHES_PER_BATCH = 1000


def effective_state(station: Station, status: ConnectorStatus, error_code: str
                    ) -> tuple[ConnectorStatus, str]:
    """A connector's state as its history records it: the charge point's own when that
    is down (Unavailable or Faulted on connector 0), else its own."""
    if station.status in POINT_DOWN:
        return cast(ConnectorStatus, station.status), station.error_code or "NoError"
    return status, error_code


def point_state(station: Station) -> tuple[ConnectorStatus | None, str]:
    """The charge point's own state (connector 0) as an interval records it beside the
    connector's: so fault reports tell the point's outage from the connector's faults."""
    return station.status, station.error_code or "NoError"


#: Whose books a record is in: (company_id, station_owner_id), as ``books_of``.
Books = tuple[str | None, str | None]


@dataclass(frozen=True, slots=True)
class Recorded:
    """A state report's part of the history (``record_state``): the ``changes`` to
    write, and the ``books`` of the interval its state is recorded in, which the report
    (its ``StatusEvent``) takes, so report and time are in one company's books.
    ``queued``: a report queued through an outage, its state recorded in the offline
    stretch it splits (``books`` that stretch's)."""

    changes: list[Change]
    books: Books
    queued: bool = False


async def next_interval(store: Store, station: Station, connector_id: int,
                        status: ConnectorStatus, error_code: str, online: bool,
                        at: datetime, actor: Viewer, *, now: datetime, known: bool = True,
                        ours: datetime | None = None, stored: GuardedBooks
                        ) -> list[Change]:
    """``record_state``'s changes, for writes that book nothing beside them (connects,
    disconnects, stops). ``stored``: the station's books as the write takes them, whose
    ``guard`` the write carries (a plug's first interval, as a status report's)."""
    return (await record_state(store, station, connector_id, status, error_code, online,
                               at, actor, now=now, known=known, ours=ours,
                               stored=stored)).changes


async def record_state(store: Store, station: Station, connector_id: int,
                       status: ConnectorStatus, error_code: str, online: bool,
                       at: datetime, actor: Viewer, *, now: datetime, known: bool = True,
                       ours: datetime | None = None, stored: GuardedBooks
                       ) -> Recorded:
    """Close the connector's open state interval at ``at`` and open the next one,
    unless nothing that analytics distinguishes changed. ``station`` is the one
    ``effective_state`` was given: its status is the charge point's during the stretch.
    ``known``: false from a disconnect recorded for the central system's own outage
    (``ConnectorInterval.known``). ``ours``: ``at`` on our clock (the service's), kept as
    the new interval's ``observed_at`` (a status report's or a stop's by the charger's
    tracked clock, ``ChargerClocks.ours_at``); without it (nothing of that clock seen by
    this process yet) the charger's clock is taken to be as far from ours as when the
    interval before began (``_observed``). ``now``: our clock's, which no
    ``observed_at`` passes.

    Its ``books``: those of the interval the state is recorded in from the report's
    time on: the one it opens or continues (the open interval's books, carried over:
    ``_books``; a repeat writes none and is the open interval's), or for a report
    queued through an outage the offline stretch it splits (``_offline_change``). So a
    report and its time are in one company's books by construction (review
    r27-analytics3: a report stamped just before a handover's cut but handled after it
    was booked to the old company, its time, which cannot start before the open
    interval, to the new). One store read, the open interval, as before; a plug with no
    open interval (its first report, or after ``removeConnector``) takes its station's
    books through ``stored`` (``GuardedBooks``: no read, the write guarded on them)."""
    current = await store.find_one(ConnectorInterval, all_of(
        Eq("cp_id", station.cp_id), Eq("connector_id", connector_id), Eq("end", None)))
    point_status, point_error_code = point_state(station)
    changes: list[Change] = []
    books = await _books(current, stored)
    recorded, queued = books, False
    if current is not None:
        if at < current.start:
            # A report queued through an outage: what the charger did while away, offline.
            offline, outage_books = await _offline_change(
                store, station, connector_id, status, error_code, at, actor, now, ours)
            changes += offline
            recorded, queued = outage_books or books, outage_books is not None
        if (current.status, current.error_code, current.online, current.point_status,
                current.point_error_code, current.known) == (
                    status, error_code, online, point_status, point_error_code, known):
            return Recorded(changes, recorded, queued)
        changes.append(_close(current, max(at, current.start), actor))
    start = max(at, current.start) if current else at
    company_id, station_owner_id = books
    changes.append(Insert(stamp_new(ConnectorInterval(
        station_id=station.id, cp_id=station.cp_id, connector_id=connector_id,
        status=status, error_code=error_code, online=online, point_status=point_status,
        point_error_code=point_error_code, known=known, start=start,
        observed_at=_observed(current, start, at, ours, now), company_id=company_id,
        station_owner_id=station_owner_id), actor, at)))
    return Recorded(changes, recorded, queued)


class GuardedBooks:
    """The books of a plug's first interval (none open to take them from, ``_books``):
    those of the station the write has (``books_of``), cached or just read, and once
    asked, the write's ``guard`` holding it to them (``still_in_books``). So no read of
    the station is needed for them: a copy not told of a handover fails the guard, and
    the write, taken again from the station as stored, is in the new books (session 29:
    a plug's first report and a stop's Finishing read the station again for them). A
    handover landing between the station's read and the write rolls over
    only open intervals, not a plug's first one, which kept the old books for good
    (review r27-analytics4): the guard fails it too, taken again (``Conflict``).
    Asked through ``books``, where a write takes its books (tests hold a handover
    there)."""

    def __init__(self, station: Station) -> None:
        self._station = station
        self._asked = False

    async def books(self) -> Books:
        self._asked = True
        return books_of(self._station)

    def guard(self) -> Guard | None:
        """The write's guard on the books taken, once they were (else None)."""
        return still_in_books(self._station) if self._asked else None


async def _books(before: ConnectorInterval | None, stored: GuardedBooks) -> Books:
    """Whose books an interval following ``before`` is in: ``before``'s, which a
    handover moved to the new books (``handed_over``), so a copy of the station cached
    from before it (another instance's, until it hears of it) books nothing to the old
    company. A connector's first (no interval open: its first report, or its first
    after ``removeConnector``): its station's, held by the write's guard
    (``GuardedBooks``): a cached copy not told of a handover no longer books the plug's
    whole history, every interval after copying it, to the old company (review
    r27-analytics3); it fails the write, taken again from the station as stored. A
    station removed meanwhile fails that guard too."""
    if before is not None:
        return before.company_id, before.station_owner_id
    return await stored.books()


async def late_books(store: Store, station: Station, connector_id: int, at: datetime,
                     stored: GuardedBooks) -> Books:
    """The books of a status report that records no state (one older than the state it
    has: history only), stamped ``at``: those of ``connector_id``'s state interval its
    stamp falls in on the charger's timeline (0: the charge point, any of its
    connectors'), so a report stamped before a handover but received after it stays in
    the former company's books (review r27-analytics4: the open interval's books gave
    the new company a fault of before it had the station). Stamped before all of that
    history: the open interval's books, else its station's (``_books``, guarded). One
    store read more than ``record_state``'s, only for such late reports."""
    plug = Eq("connector_id", connector_id) if connector_id else None
    where = all_of(Eq("cp_id", station.cp_id), Eq("station_id", station.id), plug)
    found = await store.find_all(ConnectorInterval, all_of(
        where, Range("start", lte=at), any_of(Eq("end", None), Range("end", gt=at))),
        (Sort("start", descending=True),), limit=1)
    if found:
        return found[0].company_id, found[0].station_owner_id
    current = await store.find_one(ConnectorInterval, all_of(where, Eq("end", None)))
    return await _books(current, stored)


async def handed_over(store: Store, station: Station, to: Station, actor: Viewer,
                      now: datetime) -> list[Change]:
    """A handover's part of the state history, for its write: every open interval of
    ``station`` ends at its charger's "now" (its start plus what our clock saw since
    ``observed_at``; our now where no offset is kept) and the same state goes on from
    there in ``to``'s books (``books_of``). So the history is the books' by when it
    reached us, on the charger's timeline: a charger's clock hours behind or ahead of
    ours moves no stretch into the other books (review r27: a cut at our instant
    compared with its stamps did). Guarded on each being still open: a report of its
    charger that closed one meanwhile fails the write (``Conflict``), which the edit
    runs again."""
    company_id, station_owner_id = books_of(to)
    changes: list[Change] = []
    for current in await store.find_all(ConnectorInterval, all_of(
            Eq("cp_id", station.cp_id), Eq("end", None), Eq("station_id", station.id)),
            limit=1000):
        if current.observed_at is None:
            at, observed = max(now, current.start), None
        else:
            at = max(current.start + (now - current.observed_at), current.start)
            observed = now
        changes += [patch(current, actor, only_if=("end", None), required=True, end=at),
                    Insert(stamp_new(replace(
                        current, id=new_id(), start=at, end=None, observed_at=observed,
                        company_id=company_id, station_owner_id=station_owner_id),
                        actor))]
    return changes


def left_in_books(station: Station) -> Guard:
    """A handover's ``Guard`` (``exists=False``): no state interval of ``station`` is
    open in the books it is handed over from (``books_of``) once the write is done. The
    handover closes every open one it read (``handed_over``) and opens its successor in
    the new books, so one found is a plug's first interval written in the old books
    after that read (a stop's Finishing, a first report, a connect, each guarded on the
    station still in those books, ``GuardedBooks.guard`` or a connect's
    ``patch_in_books``, which it still was). It fails
    the write (``Conflict``), which the edit runs again, reading it and rolling it over
    too (review r28-leftan: it stayed in the old books, and the plug's every later
    interval with it). Of the two writes, at least one sees the other's on either
    store (each writes before its guards are read) and is taken again."""
    company_id, owner_id = books_of(station)
    return Guard(ConnectorInterval, all_of(
        Eq("cp_id", station.cp_id), Eq("station_id", station.id), Eq("end", None),
        Eq("company_id", company_id), Eq("station_owner_id", owner_id)), exists=False)


def _observed(current: ConnectorInterval | None, start: datetime, at: datetime,
              ours: datetime | None, now: datetime) -> datetime | None:
    """The new interval's ``observed_at``: when its charger's clock read ``start``, on
    ours. Given ``ours`` (``at`` on our clock: a connect or disconnect, placed by
    ``ChargerClocks``), that less what ``start`` was moved past ``at``. Else the offset
    of the interval before (it is the same charger's clock; connects and the first
    timestamp of each connection, ``rebase_intervals``, set it): a report's own time
    cannot tell its clock from ours. None where nothing told it: the interval counts up
    to our now, as history from before ``observed_at`` does. Never after ``now``: an
    interval before placed by a clock since set back (another process's, or ours before
    a restart) holds ``start`` hours past ``at``, and observed in our future the new
    one counted nothing, the state it reports now unknown (review of e4bd937)."""
    if ours is not None:
        return min(ours + (start - at), now)
    if current is None or current.observed_at is None:
        return None
    return min(current.observed_at + (start - current.start), now)


async def _offline_change(store: Store, station: Station, connector_id: int,
                          status: ConnectorStatus, error_code: str, at: datetime,
                          actor: Viewer, now: datetime, ours: datetime | None
                          ) -> tuple[list[Change], Books | None]:
    """A report stamped ``at``, before the connector's open interval began, that falls
    inside an interval its disconnect recorded offline (``known``): the state changes
    there, offline, until that interval's end (a later queued report's, or the
    reconnect). Clamped to the reconnect instead, a fault the charger queued through
    the outage lasted no time in fault reports (review r3a F1); the time stays offline,
    so availability and idle fees (online only) count none of it. Intervals are on the
    charger's timeline, so this needs no clock this process knows: a reconnect to
    another instance, or after a restart, splits the outage the same way. Observed by
    ``ours``, else by the offline interval's own offset (``_observed``). With the changes,
    the books of the outage's stretch the report's state is recorded in (None: nothing
    split)."""
    found = await store.find_all(ConnectorInterval, all_of(
        Eq("cp_id", station.cp_id), Eq("connector_id", connector_id), Eq("online", False),
        Eq("known", True), Range("start", lte=at), Range("end", gt=at)), limit=1)
    if not found:
        return [], None
    outage = found[0]
    point_status, point_error_code = point_state(station)
    if (outage.status, outage.error_code, outage.point_status, outage.point_error_code) \
            == (status, error_code, point_status, point_error_code):
        return [], None
    return [patch(outage, actor, end=at), Insert(stamp_new(ConnectorInterval(
        station_id=station.id, cp_id=station.cp_id, connector_id=connector_id,
        status=status, error_code=error_code, online=False, point_status=point_status,
        point_error_code=point_error_code, known=True, start=at, end=outage.end,
        observed_at=_observed(outage, at, at, ours, now), company_id=outage.company_id,
        station_owner_id=outage.station_owner_id), actor, at))], (
            outage.company_id, outage.station_owner_id)


def _close(current: ConnectorInterval, at: datetime, actor: Viewer) -> Change:
    """Ends the open interval ``current`` at ``at``. An unknown one (the central system's
    outage) only while it is still open: ``known_offline`` may end it on another
    instance at the same moment, and a connection written over a read taken before that
    would leave two intervals open. The connect that loses reads again (``Conflict``:
    ``ChargingService.connect`` retries). A known one too: a handover ends it on
    another instance (``handed_over``), and a report written over a read taken before
    that would open a second interval, in the old books; the report is taken again
    (``ChargingService.status_notification``)."""
    return patch(current, actor, only_if=("end", None), required=True, end=at)


def known_offline(current: ConnectorInterval, at: datetime, actor: Viewer) -> list[Change]:
    """The open unknown interval ``current`` (the central system's outage) ends at ``at``
    (not before its start), and the connector is known offline from then on, in the
    same state otherwise: the service was up again at ``at`` and its charger did not
    come back (``InstanceService.settle_outages``). Only while ``current`` is still the
    open one: once its charger connected, or another instance settled it first, the
    write fails with ``Conflict`` and nothing is written twice."""
    start = max(at, current.start)
    return [_close(current, start, actor), Insert(stamp_new(ConnectorInterval(
        station_id=current.station_id, cp_id=current.cp_id,
        connector_id=current.connector_id, status=current.status,
        error_code=current.error_code, online=False, point_status=current.point_status,
        point_error_code=current.point_error_code, known=True, start=start,
        company_id=current.company_id, station_owner_id=current.station_owner_id), actor))]


async def finishing(store: Store, station: Station, connector: Connector, at: datetime,
                    actor: Viewer, ours: datetime | None, now: datetime,
                    stored: GuardedBooks) -> list[Change]:
    """The connector's state after its transaction's StopTransaction at ``at`` (charger
    timeline): still in the transaction's state (``IN_TRANSACTION``) and not reported
    since, it is Finishing from then on, as OCPP 1.6 has it (stopped, not yet free),
    until the charger reports otherwise. A charger that reboots after the stop (a Reset)
    reports nothing before it goes, and its connector read Charging through its absence
    and after its return until it reported again (QA s5: 10 s of charging for a 2 s
    session). Written only onto the state as read (``status_at``): a report that came
    meanwhile stands. Nothing for a connector in any other state. ``ours``: ``at`` on
    our clock, ``now`` our now, ``stored`` the station's books (``next_interval``)."""
    if connector.status not in IN_TRANSACTION or (
            connector.status_at is not None and connector.status_at > at):
        return []
    # The state as announced (no charger's text or code with it): a later report is
    # judged a change or a repeat against this, as subscribers saw it (review s17).
    update = patch(connector, actor, only_if=("status_at", connector.status_at),
                   required=True, status=ConnectorStatus.FINISHING, status_at=at,
                   info=None, vendor_error_code=None)
    return [update, *await next_interval(
        store, station, connector.connector_id,
        *effective_state(station, ConnectorStatus.FINISHING, connector.error_code),
        station.online, at, actor, now=now, ours=ours, stored=stored)]


async def rebase_intervals(store: Store, station: Station, at: datetime,
                           ours: datetime | None, now: datetime) -> None:
    """The charger's first timestamp ``at`` that shows its clock
    (``ChargerClocks.observe``: not a queued one) came after its connection opened an
    interval for every connector at "now" on our clock (nothing better was known).
    If its clock is behind ours, each open interval that starts after ``at`` is moved
    back to it, so that the charger's reports, of any connector, fall inside the
    intervals instead of being clamped to their start; never over an outage its
    disconnect recorded (``_move_start``). ``ours``: ``at`` on our clock
    (``ChargerClocks.ours_at``), by which the moved intervals are observed, never
    after ``now`` (ours). Once per connection (and process): a few store reads, never
    on every message."""
    actor = charger(station.cp_id)
    changes: list[Change] = []
    for current in await store.find_all(ConnectorInterval, all_of(
            Eq("cp_id", station.cp_id), Eq("end", None)), limit=100):
        if current.start > at:
            changes += await _move_start(store, current, at, ours, now, actor)
    if changes:
        await store.write(changes, [])


async def _move_start(store: Store, current: ConnectorInterval, to: datetime,
                      ours: datetime | None, now: datetime, actor: Viewer) -> list[Change]:
    """Start the open interval ``current`` at ``to`` and end the one before it there
    too: intervals stay contiguous and never overlap. Not before the previous one's
    start, which was placed on the charger's timeline (an earlier connection's). Never
    over an outage its disconnect recorded (``_outage_end``)."""
    before = await store.find_all(ConnectorInterval, all_of(
        Eq("cp_id", current.cp_id), Eq("connector_id", current.connector_id),
        Eq("end", current.start)), (Sort("start", descending=True),), limit=1)
    start = max(to, before[0].start) if before else to
    if start >= current.start or (before and start < _outage_end(before[0], current)):
        return []
    # Observed when the charger's clock read its new start. Not after our now: stopped
    # at the interval before, placed by a clock since set back (another process's, or
    # ours before a restart), that is hours ahead of ``to``, and the open interval
    # observed in our future counted nothing (the state it reports now read unknown).
    observed = current.observed_at if ours is None else min(ours + (start - to), now)
    changes: list[Change] = [patch(current, actor, start=start, observed_at=observed)]
    if before:
        changes.append(patch(before[0], actor, end=start))
    return changes


def _outage_end(before: ConnectorInterval, current: ConnectorInterval) -> datetime:
    """How far back ``current`` (opened by a reconnect) may move over ``before``: over
    an interval recorded offline (``known``), not more than ``BILLED_TIME_TOLERANCE``
    (the clock's noise, as ``ChargerClocks.queued`` has it) before the charger came
    back. A first timestamp stamped earlier is a report queued through the outage or a
    clock reset (1970), not the clock: moved back to it, the connection's online
    intervals took over the outage and counted it available, a session queued through
    it billed idle, and on another instance (or after a restart: the clock unknown
    there) the outage read unknown (review r3a F2-F4). Nothing moves then; its reports
    change the state offline (``_offline_change``). The charger came back, on its
    timeline, at the reconnect (``current.observed_at``, ours) less the clock's offset
    the disconnect recorded (``before``'s): a process that did not know a clock really
    behind placed the reconnect on ours, and that part of ``before`` may still go.
    Without both offsets, at ``current.start``."""
    if before.online or not before.known:
        return before.start
    if before.observed_at is None or current.observed_at is None:
        back = current.start
    else:
        back = current.observed_at - (before.observed_at - before.start)
    return back - BILLED_TIME_TOLERANCE


@dataclass(frozen=True, slots=True)
class IdleSpan:
    """A session's connector over ``start`` .. ``end`` (its start, and its end or the
    "now" of an estimate): whose idle time ``idle_times`` measures."""

    station_id: str
    cp_id: str
    connector_id: int
    start: datetime
    end: datetime

    @classmethod
    def of(cls, session: Session, end: datetime) -> IdleSpan:
        return cls(session.station_id, session.cp_id, session.connector_id,
                   session.start_time, end)


def idle_within(intervals: Iterable[ConnectorInterval], start: datetime, end: datetime
                ) -> timedelta:
    """How long, within ``start`` .. ``end``, the intervals spent idle: an idle status
    while the station was online (offline, its state is only the last one reported: no
    one can tell the car sat there), from the connector's first Charging within the
    span on. A car that has taken no energy yet is not done: SuspendedEV is also a car
    waiting for its departure timer (the cheap night hours a tariff's bands offer), and
    it was billed idle from the plug-in (QA s25: 5 minutes waiting, 8.00 billed for 3
    idle minutes at 1.00). An open interval lasts until ``end``."""
    within = list(intervals)
    charged = min((max(i.start, start) for i in within
                   if i.status is ConnectorStatus.CHARGING and i.start < end
                   and (i.end is None or i.end > start)), default=None)
    if charged is None:
        return timedelta(0)  # never charged in the span: nothing it was done with
    total = timedelta(0)
    for interval in within:
        if interval.status not in IDLE_STATUSES or not interval.online:
            continue
        stop = end if interval.end is None else min(interval.end, end)
        total += max(stop - max(interval.start, charged), timedelta(0))
    return total


async def idle_times(store: Store, spans: Sequence[IdleSpan]) -> list[timedelta]:
    """``idle_within`` each span's connector history: one store call for any number of
    spans (a page of sessions' estimates, or one close), grouped by cpId as the
    (cp_id, connector_id, end) index reads them. Intervals are on the charger's
    timeline, as sessions are."""
    if not spans:
        return []
    where = any_of(*(all_of(
        Eq("cp_id", span.cp_id), Eq("connector_id", span.connector_id),
        any_of(Eq("end", None), Range("end", gt=span.start)),
        Range("start", lt=span.end), Eq("station_id", span.station_id),
        # Idle online, and when it charged (offline too: it charged all the same).
        any_of(all_of(In("status", IDLE_STATUSES), Eq("online", True)),
               Eq("status", ConnectorStatus.CHARGING))) for span in dict.fromkeys(spans)))
    found = await store.find_grouped(ConnectorInterval, "cp_id", list({s.cp_id for s in spans}),
                                     where, (Sort("start"),), IDLE_STRETCHES_PER_BATCH)
    return [idle_within((i for i in found.get(span.cp_id, [])
                         if i.station_id == span.station_id
                         and i.connector_id == span.connector_id), span.start, span.end)
            for span in spans]
