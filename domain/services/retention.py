"""How long telemetry that grows without end is kept: meter samples and status reports.

Unset (``None``), everything is kept, as it always was. Set, the housekeeping sweep
deletes what is older, ``BATCH`` records per store write (each its own short transaction:
a charger's write waits at most one batch), on every instance as the other sweeps run
(a record another instance deleted first is passed over).

What stays whatever is set: sessions, payments and refunds (a bill and its receipt read
the session alone: ``pricing.receipt``), signed meter values (the record a customer may
be owed under calibration law), connector state intervals (utilization, availability and
fault time read them, not the reports), connection events and the audit log.

A session's samples go only once no correction can reprice it: it is closed by its own
StopTransaction (not open, not awaiting its stop, not closed without it: that stop, when
it comes, reads them, ``ChargingService._band_energy`` and ``_settled_samples``), and it
ended before the cut-off, so a session's curve is kept whole or not at all. Samples of
no session go by their own time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.entities import MeterSample, SessionState, StatusEvent
from domain.query import Eq, Filter, NotSub, Range, all_of, any_of
from domain.services.base import Service, ServiceContext, sweep_expired

#: Records deleted per store write.
BATCH = 500


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each kind is kept; ``None``: for good."""

    meter_samples: timedelta | None = None
    status_events: timedelta | None = None

    @property
    def prunes(self) -> bool:
        return self.meter_samples is not None or self.status_events is not None


def samples_prunable(before: datetime) -> Filter:
    """Meter samples stamped before ``before`` whose session can no longer change, or
    of no session."""
    changeable = any_of(Eq("state", SessionState.ACTIVE),
                        # Closed awaiting its stop (``charging.awaits_stop``).
                        Eq("stop_reason", None),
                        Eq("closed_without_stop", True),
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
        deleted = 0
        if self.keep.meter_samples is not None:
            deleted += await sweep_expired(
                self.store, MeterSample, samples_prunable(now - self.keep.meter_samples),
                "at", BATCH, oldest_by="at")
        if self.keep.status_events is not None:
            deleted += await sweep_expired(
                self.store, StatusEvent, Range("at", lt=now - self.keep.status_events),
                "at", BATCH, oldest_by="at")
        return deleted
