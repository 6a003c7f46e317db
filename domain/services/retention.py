"""How long telemetry that grows without end is kept: meter samples, status reports and
connection events.

Unset (``None``), everything is kept, as it always was. Set, the housekeeping sweep
deletes what is older, ``BATCH`` records per store write (each its own short transaction:
a charger's write waits at most one batch), on every instance as the other sweeps run
(a record another instance deleted first is passed over).

What stays whatever is set: sessions, payments and refunds (a bill and its receipt read
the session alone: ``pricing.receipt``), signed meter values (the record a customer may
be owed under calibration law), connector state intervals (utilization, availability and
fault time read them, not the reports) and the audit log.

A session's samples go only once no correction is expected to reprice it: it is closed by
its own StopTransaction (not open, not awaiting its stop: that stop, when it comes, reads
them, ``ChargingService._band_energy`` and ``_settled_samples``), and it ended before the
cut-off, so a session's curve is kept whole or not at all. One closed without its stop
(``charging.closed_without_stop``: as lost, or by an operator) is corrected by that stop
however late it comes (no bound: a charger's queue may be sent weeks later), so its
samples wait ``LATE_STOP_MARGIN`` longer past the cut-off, counted from when the close
was written; else they were kept for good when the stop never came. Samples of no
session go by their own time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.entities import ConnectionEvent, MeterSample, Session, SessionState, StatusEvent
from domain.query import Eq, Filter, NotSub, Range, all_of, any_of
from domain.services.base import Service, ServiceContext, sweep_expired
from domain.services.charging import closed_without_stop, stoppable

#: Records deleted per store write.
BATCH = 500
#: How much longer than the retention the samples of a session closed without its stop
#: are kept for that stop to correct it: a stop is accepted however late it comes (there
#: is no bound to follow), and a charger's offline queue is sent days, at worst weeks,
#: later. One later still corrects the close by its meterStop; a time-of-day tariff then
#: prices the energy its deleted samples placed at its start's price.
LATE_STOP_MARGIN = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each kind is kept; ``None``: for good."""

    meter_samples: timedelta | None = None
    status_events: timedelta | None = None
    connection_events: timedelta | None = None

    @property
    def prunes(self) -> bool:
        return any(keep is not None for keep in (
            self.meter_samples, self.status_events, self.connection_events))


def keeps_samples(session: Session, before: datetime) -> bool:
    """Whether ``session`` keeps its samples with ``before`` the cut-off: its stop may
    still come and change it (``charging.stoppable``), unless it was closed without it
    longer than ``LATE_STOP_MARGIN`` before the cut-off; or it ended since the cut-off.
    The rule; ``samples_prunable`` says it again as a store filter (the sweep cannot
    read each session into Python), a table test holding the two together.

    A close without its stop counts from the later of its end and its last write
    (``updated_at``, which only moves later: keeping longer is safe): a lost session's
    end is the next start's time or its last reading (``lost_end``, ``last_known``),
    weeks maybe before the close was written, and its samples went at the next sweep
    with no margin at all (review r33-a)."""
    end = session.end_time
    if end is not None and end >= before:
        return True
    if closed_without_stop(session):
        margin = before - LATE_STOP_MARGIN
        return session.updated_at >= margin or (end is not None and end >= margin)
    return stoppable(session)


def samples_prunable(before: datetime) -> Filter:
    """Meter samples stamped before ``before`` whose session does not keep them
    (``keeps_samples``), or of no session."""
    # ``keeps_samples`` as a filter: ``stoppable``'s open and awaiting its stop
    # (``charging.awaits_stop``), closed without it (``charging.closed_without_stop``)
    # within the margin of its end or its last write, or ended since the cut-off.
    margin = before - LATE_STOP_MARGIN
    changeable = any_of(Eq("state", SessionState.ACTIVE),
                        all_of(Eq("stop_reason", None), Eq("closed_without_stop", False)),
                        all_of(Eq("closed_without_stop", True),
                               any_of(Range("end_time", gte=margin),
                                      Range("updated_at", gte=margin))),
                        Range("end_time", gte=before))
    # Joined on the session's own id: a correlated check, each sample looking up its
    # own session by its key. Uncorrelated, SQLite built the set of every changeable
    # session once per batch, by a scan of the whole session table (those ended since
    # the cut-off and those closed without their stop: a set that only grows; review
    # r32-g).
    return all_of(Range("at", lt=before),
                  NotSub("session_id", "session", changeable,
                         joined=(("session_id", "id"),)))


class RetentionService(Service):
    def __init__(self, ctx: ServiceContext, keep: Retention = Retention()) -> None:
        super().__init__(ctx)
        self.keep = keep

    async def sweep(self) -> int:
        """Deletes what is past its retention; how many records."""
        now = self.now()
        keep = self.keep
        # Each kind by its own ``at`` index (migration 86 gave connection events theirs).
        expired: list[tuple[type[MeterSample | StatusEvent | ConnectionEvent], Filter]] = []
        if keep.meter_samples is not None:
            expired.append((MeterSample, samples_prunable(now - keep.meter_samples)))
        for events, kept in ((StatusEvent, keep.status_events),
                             (ConnectionEvent, keep.connection_events)):
            if kept is not None:
                expired.append((events, Range("at", lt=now - kept)))
        deleted = 0
        for kind, filter_ in expired:
            deleted += await sweep_expired(self.store, kind, filter_, "at", BATCH,
                                           oldest_by="at")
        return deleted
