"""What chargers tell us (OCPP 1.6 charger-initiated actions), as domain operations.

The OCPP bridge translates frames into these calls and the answers back into frames; all
rules live here: who may charge, how a transaction opens and closes, what energy and cost
are, what counts as a fault. Charger-caused changes are audited with the actor
``ocpp:<cp_id>``; telemetry (status, meter values, connectivity) goes to its own history
entities (StatusEvent, MeterSample, ConnectionEvent) instead of the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import random
from bisect import bisect_right
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial, wraps
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar, cast

from domain import validation as v
from domain.availability import connectors_held
from domain.clock import as_utc
from domain.entities import (
    BILLED_TIME_TOLERANCE,
    LIVE_RESERVATION_STATES,
    Connector,
    ConnectorStatus,
    ConnectorType,
    IdTag,
    IdTagStatus,
    MeterAnomaly,
    MeterSample,
    Payment,
    PendingStart,
    Registration,
    Reservation,
    ReservationState,
    Session,
    SessionState,
    Station,
    StatusEvent,
    Tariff,
    User,
    Vehicle,
    issued_id,
)
from domain.errors import Conflict, Forbidden, NotFound, ValidationError
from domain.events import (
    ConnectorStatusChanged,
    DomainEvent,
    EventsDropped,
    FaultReported,
    SessionChanged,
)
from domain.faults import is_fault
from domain.ids import stable_id
from domain.keyed_locks import KeyedLocks
from domain.policy import Viewer, live_reservations, refuse_unless_staff
from domain.ports import Change, Guard, Insert, InsertIfAbsent, Update
from domain.pricing import billed_idle_seconds, session_cost_minor
from domain.query import Eq, Filter, In, Range, Sort, all_of, any_of
from domain.registration import CLOSES_RECORDED, STATE_REPORTS, admits
from domain.services import known_addresses
from domain.services.background import Background
from domain.services.base import (
    ServiceContext,
    books_of,
    charger,
    holding_card,
    keeps_outcome,
    keeps_requested,
    maintenance_event,
    not_erased,
    owned_by,
    patch,
    reservation_changed,
    reserved_for_card,
    stamp_new,
    still_active,
    still_in_books,
    touch,
)
from domain.services.batching import GroupCommitter
from domain.services.charger_cache import CACHED_TOPICS, ChargerCache
from domain.services.charger_clocks import (
    MAX_CLOCK_AHEAD,
    NEVER_SET_BEFORE,
    ChargerClocks,
    ticked_through,
)
from domain.services.charger_connections import (
    MAX_OPEN_PER_CONNECTOR,
    RECORD_ATTEMPTS,
    REGISTRATION_WINDOW,
    REGISTRATIONS_PER_ADDRESS,
    ChargerConnections,
)
from domain.services.charger_sign_ins import KNOWN_FOR, ChargerSignInLimits, ChargerSignIns
from domain.services.commands import CANCEL_CLAIM_S
from domain.services.edits import edit, retried
from domain.services.fleet import IN_GARAGE
from domain.services.intervals import (
    POINT_STATUSES,
    Books,
    GuardedBooks,
    IdleSpan,
    effective_state,
    finishing,
    idle_times,
    late_books,
    rebase_intervals,
    record_state,
)
from domain.services.live_updates import LatestUpdates
from domain.services.metering import (
    ENERGY_REGISTER,
    MAX_BELIEVABLE_KW,
    MeterReading,
    RegisterCount,
    UnreadableValues,
    added_wh,
    believed,
    closing_sample,
    cut_at_next_start,
    final_soc,
    late_share,
    live_patch,
    meters_intervals,
    not_credited,
    register_count,
    register_readings,
    samples_of,
    signed_values_of,
    sound,
    to_wh,
)
from domain.services.payments import UNCOLLECTED, payment_changed, reprice_change, repriced
from domain.services.pending_starts import (
    GIVEN_UP,
    abandoned,
    live_pending_starts,
    settle,
    started_by,
)
from domain.services.reboot_checks import (
    FREE_AFTER_RESTORE,
    RebootChecks,
)
from domain.services.stations import connector_in_range
from domain.services.tariffs import TariffService
from domain.services.throttle import RollingLimit
from domain.tariff_bands import session_split
from domain.wire import rfc3339

log = logging.getLogger("chargegraph.charging")

#: How stale a station's ``last_seen`` may grow while its charger sends messages other
#: than Heartbeat (``ChargingService.seen``).
LAST_SEEN_EVERY = timedelta(minutes=1)
#: How often ``endSession`` reads a session again that changed under it before it gives up.
END_ATTEMPTS = 3
#: How often a StartTransaction (a resend's answer too) reads again whose write met a
#: change (another start of its card: ``ChargingService._card_free``) before it gives up.
START_ATTEMPTS = 3
#: The most a start (or a disconnect, a stop's Finishing: ``RECORD_ATTEMPTS``) waits before
#: its n-th read again, times n (``pause_to_retry``: the one pause, the one constant).
START_RETRY_PAUSE = timedelta(milliseconds=50)

#: Stored samples whose increments a late reading moved (``_late_shares``): each as read
#: and as it is to be written, by id.
Shares = dict[str, tuple[MeterSample, MeterSample]]


def given_up(shares: Shares, actor: Viewer) -> list[Change]:
    """The updates of ``shares``, each only while the sample still has the increment it
    was read with: two instances moving a share of the same sample (the same late frame
    twice, two late frames at once) must not both move it, nor a stop's trim (``Conflict``:
    the loser reads again)."""
    return [patch(old, actor, only_if=("delta_wh", old.delta_wh), required=True,
                  delta_wh=new.delta_wh) for old, new in shares.values()]


#: Stored increments a stop may take an excess back from (newest first); what is left
#: beyond them is taken back by a negative closing sample.
MAX_TRIMMED_SAMPLES = 1000
#: Stored increments a frame's late readings may take their shares from (oldest first,
#: from the earliest of them): one read for any number of them.
MAX_LATE_SAMPLES = 1000

#: How far a believed meterStop may lie below the transaction's own highest reading
#: before the session is flagged ``STOP_BELOW_READINGS``: readings sent in whole kWh are
#: up to 500 Wh off.
STOP_BELOW_READINGS_SLACK_WH = 500

#: Sessions closed without their stop whose charger still metered them, noted so that is
#: logged once per session (``ChargingService._still_metered``), and contradicting repeated
#: stops (``_contradicting_repeat``); each set forgotten past this many.
MAX_NOTED_CLOSES = 1000


def first_noted(noted: set[Any], key: Any) -> bool:
    """Whether ``key`` is new to ``noted`` (added now): what is logged once per key and
    process. Bounded: past ``MAX_NOTED_CLOSES`` it starts over, at worst one more line
    each."""
    if key in noted:
        return False
    if len(noted) >= MAX_NOTED_CLOSES:
        noted.clear()
    noted.add(key)
    return True

#: How soon a StartTransaction whose answer was lost may be sent again with a timestamp of
#: its own (the charger stamps the resend) and still be taken for the same start: the
#: time a charger waits for an answer before it resends (commonly 30 s), with room.
START_RETRY_WINDOW = timedelta(seconds=60)

#: How much higher a resent StartTransaction's meterStart may be than its first copy's
#: (the meter read again for the resend, QA s20 verify: 2 Wh opened a second session).
RESEND_METER_SLACK_WH = 100

#: How soon a copy of a StartTransaction stamped far in our future may follow the first
#: (a charger retrying an unanswered CALL) and still be taken for the same start.
GLITCH_RETRY_WINDOW = timedelta(minutes=5)

#: The stamps of a charger clock never set that does not tick at all, stuck at its
#: default (README: "a clock never set reads 1970 or 2000"): the epoch and the common RTC
#: default. Such a charger repeats its stamp at every start (``_StartIdentity.matches``).
STUCK_CLOCK_STAMPS: tuple[datetime, ...] = (datetime(1970, 1, 1, tzinfo=UTC),
                                            datetime(2000, 1, 1, tzinfo=UTC))


def lost_end(session: Session, booted: datetime | None, cap: datetime) -> datetime:
    """Where a session whose StopTransaction was lost ended, on its own timeline: at its
    charger's first reboot since the session was recorded (``booted``: the callers pass
    ``Session.first_boot_at`` when it has one; our clock, moved onto the session's: its
    start is the charger's; QA s33: at the last of several, the time between them
    billed), else at ``cap`` (the
    next start on its connector); never after ``cap`` and never before its last
    reading up to it (a start flushed late from the charger's queue arrived after it
    began, and that delay is no clock offset; a reading stamped past ``cap`` is a clock
    glitch). Closed at the next start, it was billed the time until then, a reboot and
    all, with a per-minute price or an idle fee."""
    end = cap
    if booted is not None and session.created_at < booted:
        end = min(end, session.start_time + max(booted - session.created_at, timedelta(0)))
    read = [t for t in (session.meter_at, session.power_at, session.soc_at)
            if t is not None and t <= cap]
    return max([end, *read])


def last_known(session: Session, restored: datetime) -> datetime:
    """Where a session a restore brought back open (``Session.open_at_restore``) and
    its connector then reported free ended, on its own timeline: at its last reading
    (its start when none), readings stamped past the restore (``restored``, on our
    clock or moved onto the session's, whichever is later: a start sent late from a
    charger's queue looks like a clock behind) being clock glitches. It ended somewhere
    between that reading and the restore, which may be days later; a per-minute price or
    an idle fee must not bill those days."""
    cap = max(restored,
              session.start_time + max(restored - session.created_at, timedelta(0)))
    read = [t for t in (session.meter_at, session.power_at, session.soc_at)
            if t is not None and t <= cap]
    return max([session.start_time, *read])


def unheard_since_restore(session: Session) -> bool:
    """Whether a restore brought ``session`` back open (``Session.open_at_restore``) and
    no MeterValues named it since: its charger may have ended it any time after its last
    reading, and a close without its stop ends it there (``last_known``), not at the
    next start on its connector, hours or days later, all of it billed by a per-minute
    price or an idle fee (restore QA s27)."""
    return session.open_at_restore is not None and (
        session.named_at is None or session.named_at < session.open_at_restore)


def end_without_stop(session: Session, booted: datetime | None, cap: datetime
                     ) -> datetime:
    """Where ``session``, closed without its StopTransaction, ended: the one rule for
    every such close (the reboot's check, the restore's, a newer start on its
    connector, an operator's ``endSession`` by default). A session a restore brought
    back open and not heard of since (``unheard_since_restore``) ended at its last
    reading (``last_known``), whatever closes it: its charger ended it at some point
    between that reading and the restore, and a later end (its charger's reboot after
    the restore, the next start, now) bills the hours between with a per-minute price or
    an idle fee (review r27-restore: the reboot's check, run first, closed it at the
    boot). Any other ends by ``lost_end`` (``booted``, ``cap`` as there)."""
    if unheard_since_restore(session):
        return last_known(session, cast(datetime, session.open_at_restore))
    return lost_end(session, booted, cap)


class _StartIdentity(NamedTuple):
    """What makes two StartTransactions the same start: a charger's retry repeats its tag,
    time and meter. ``glitch``: the time it sent was unbelievable and replaced by the
    arrival, which a retry does not repeat, so an open session with the same tag and meter
    is this start."""

    tag: str
    start: datetime
    meter_start: int
    glitch: bool
    #: The start shows its charger's clock behind ours (``Session.start_clock_behind``).
    clock_behind: bool = False
    #: The timestamp it carried when that was a clock never set (``NEVER_SET_BEFORE``),
    #: replaced by its arrival: a resend repeats it (``Session.reported_start``).
    reported: datetime | None = None
    #: Its charger's last boot as we know it (``Station.booted_at``) when it arrived.
    booted: datetime | None = None
    #: Queued offline and replayed on reconnecting (``ChargerClocks.replayed``): it
    #: charged before it could be told anything, and only sessions of its card begun
    #: by its time held the card then (``holding_card``'s ``begun_by``).
    replayed: bool = False

    @property
    def begun_by(self) -> datetime | None:
        """The bound on the start of the card's sessions that make it ``ConcurrentTx``
        (``holding_card``): its own time for a replayed start, none for a live one."""
        return self.start if self.replayed else None

    def matches(self, session: Session, now: datetime) -> bool:
        """``session`` is this start, written by an earlier copy. For a glitching start,
        only a copy recorded moments ago: an open session of the same card and meter from
        long before (many chargers send meterStart 0) is another transaction, whose stop
        was lost. A start stamped by a clock never set (``reported``) is the session that
        carried the same stamp (``Session.reported_start``; a session recorded before
        migration 65 kept it as its start) and meterStart. A stamp that ticks: that
        session whether still open or closed by its own stop, recorded in whatever boot
        of its charger: a resend after a reconnect or a reboot (reviews r26-robust2,
        r26-robust4), a queue replayed whole after its stop, after a power cut too
        (reviews r26-robust3, r26-robust4: a phantom opened, its replayed stop billed the
        charge twice). A ticking clock restarted at a boot repeats an earlier stamp only
        if exactly as many seconds passed, with the same meterStart: that rare new charge
        is taken for the old one (the limit left, docs/architecture.md). A stuck stamp
        (``STUCK_CLOCK_STAMPS``: a clock that does not tick) only its session still open
        and recorded since the charger's last boot (``booted``): such a charger repeats
        its stamp at every start, and its meter, counting from 0 per transaction, every
        figure (reviews s26, r26-robust4); its queue replayed after its stop opens a
        phantom, priced nothing (``ChargingService._replayed``)."""
        if (session.id_tag, session.meter_start_wh) != (self.tag, self.meter_start):
            return False
        if self.reported is not None:
            if session.start_as_reported != self.reported:
                return False
            if self.stuck:
                return session.state is SessionState.ACTIVE and self.since_boot(session)
            return not session.closed_without_stop
        if self.glitch:
            return now - session.created_at <= GLITCH_RETRY_WINDOW
        return session.start_time == self.start

    @property
    def stuck(self) -> bool:
        """Stamped by a clock never set that does not tick (``STUCK_CLOCK_STAMPS``)."""
        return self.reported in STUCK_CLOCK_STAMPS

    def since_boot(self, session: Session) -> bool:
        """``session`` was recorded since its charger's last boot (``booted``, our clock,
        as ``created_at``; any, for a charger never seen booting)."""
        return self.booted is None or session.created_at >= self.booted

    def may_resend(self, session: Session, now: datetime) -> bool:
        """``session`` may be this start's first copy, sent again with a new timestamp
        (its answer lost: QA s20, the resend 2 s later opened a second session and the
        first was billed its session fee): same card, a meterStart no lower and at most
        ``RESEND_METER_SLACK_WH`` higher (a charger that reads its meter again for the
        resend), stamped no later than this one and within ``START_RETRY_WINDOW`` of
        it, and recorded moments ago on our clock. The caller checks that nothing
        metered since proves it a transaction of its own (``ChargingService._its_own``):
        whichever of the two the charger holds,
        nothing was charged under the other (what its meter moved in between is the
        same plug-in's, billed from the first copy's meterStart)."""
        if self.glitch or session.id_tag != self.tag or not (
                0 <= self.meter_start - session.meter_start_wh <= RESEND_METER_SLACK_WH):
            return False
        if not timedelta(0) <= self.start - session.start_time <= START_RETRY_WINDOW:
            return False
        return now - session.created_at <= START_RETRY_WINDOW

    def started_by(self, now: datetime) -> datetime:
        """When the start happened, as far as a reservation's expiry is judged: its own
        timestamp when believable (a start queued offline carries when the charger let
        the card in), never later than ``now``; ``now`` for a glitch, whose time is only
        a guess, and for a charger whose clock is behind ours (one never set reads 1970:
        by its stamp a reservation expired hours ago was still live, review s19)."""
        return now if self.glitch or self.clock_behind else min(self.start, now)

    def flushed_before(self, session: Session) -> bool:
        """This start is an older transaction the charger flushed late, before the open
        ``session`` began: earlier by the clock, and not later by the meter (a register
        only grows). A start earlier by the clock but later by the meter is newer (the
        charger's clock stepped back): it closes ``session`` as one whose stop was lost.
        Where the meter cannot tell (chargers that count every transaction from 0), the
        clock decides: a live session is not closed by a flushed one."""
        return session.start_time > self.start and session.meter_start_wh >= self.meter_start


def started_as_reported(stamp: datetime) -> Filter:
    """Sessions whose StartTransaction carried ``stamp`` (``Session.start_as_reported``,
    as a store filter)."""
    return any_of(Eq("reported_start", stamp),
                  all_of(Eq("reported_start", None), Eq("start_time", stamp)))


def ended_as_reported(stamp: datetime) -> Filter:
    """Sessions whose StopTransaction carried ``stamp`` (``Session.end_as_reported``, as a
    store filter)."""
    return any_of(Eq("reported_end", stamp),
                  all_of(Eq("reported_end", None), Eq("end_time", stamp)))


def awaits_stop(session: Session) -> bool:
    """A transaction the charger flushed late, after a newer one had started on its
    connector: ended before that one began, its stop still to come."""
    return session.state is SessionState.COMPLETED and session.stop_reason is None


#: The stop reason of a session closed without its StopTransaction (as lost, or by an
#: operator's endSession): OCPP's catch-all.
CLOSED_WITHOUT_STOP = "Other"


def closed_without_stop(session: Session) -> bool:
    """A session the CSMS closed without its StopTransaction: as lost (a newer start on
    its connector, ``_open_session``; the grace after its charger's reboot,
    ``_close_lost_at_reboot``) or by an operator (``end_session``), as those closes
    record it (``Session.closed_without_stop``). Its stop, should it come after all,
    corrects the close. Not inferred from a null meterStop and the reason
    ``CLOSED_WITHOUT_STOP`` those closes write: a charger's stop with meterStop -1 (no
    register, recorded null) and reason ``Other`` reads so too, and its resend was taken
    for a correction (review r26)."""
    return session.state is SessionState.COMPLETED and session.closed_without_stop


def updated_payments(changes: Sequence[tuple[Change, Any]]) -> list[Payment]:
    """The payments ``changes`` update (a correction's reprice or void), as written.
    Only a correction of a close updates one (``_repriced_payment``: a late stop's, or a
    newer start's cut, ``_lost_cut_by_start``): the other closes close an ACTIVE session
    or one awaiting its stop, and open a payment."""
    return [cast(Payment, change.record) for change, _ in changes
            if isinstance(change, Update) and isinstance(change.record, Payment)]


def stoppable(session: Session) -> bool:
    """Whether a StopTransaction closes (or corrects) ``session``: open, awaiting its
    stop, or closed without it. Otherwise the stop is a repeated one."""
    return session.state is SessionState.ACTIVE or awaits_stop(session) \
        or closed_without_stop(session)


def stop_register(meter_stop: int) -> int | None:
    """What a StopTransaction's meterStop reads as a register, as its session records
    it (``Session.meter_stop_wh``): none for a number no register can show (-1 from
    firmware whose meter did not answer, one beyond any meter)."""
    return meter_stop if 0 <= meter_stop <= v.MAX_READING else None


def _unknown(cp_id: str) -> ValidationError:
    """What a charger whose station does not exist (any more) is told; its handler hangs
    up on it (``field`` ``cpId``, ``NOT_FOUND``)."""
    return ValidationError(f"unknown charge point {cp_id}", field="cpId", code="NOT_FOUND")


P = ParamSpec("P")
T = TypeVar("T")


def _station_must_exist(
        method: Callable[Concatenate[ChargingService, str, P], Coroutine[Any, Any, T]]
) -> Callable[Concatenate[ChargingService, str, P], Coroutine[Any, Any, T]]:
    """For charger messages that write the station: one removed while its copy was
    cached (a removal on another instance whose event was lost, or raced the message)
    fails the write with the store's "no such station: <id>". The charger is told
    instead that its charge point is unknown (no internal id), and hung up on."""
    @wraps(method)
    async def checked(self: ChargingService, cp_id: str, /, *args: P.args,
                      **kwargs: P.kwargs) -> T:
        try:
            return await method(self, cp_id, *args, **kwargs)
        except NotFound:
            self.cache.drop_station(cp_id)
            if await self.station(cp_id) is None:
                raise _unknown(cp_id) from None
            raise
    return checked


@dataclass(frozen=True, slots=True)
class IdTagInfo:
    status: str  # OCPP AuthorizationStatus spelling: Accepted, Blocked, Expired, Invalid, …
    expiry_date: datetime | None = None
    parent_id_tag: str | None = None


#: What the charger of a station not Accepted is told of the card its StartTransaction
#: names, whatever the card (``_told``).
WITHHELD = IdTagInfo("Invalid")


def recorded_answer(session: Session) -> IdTagInfo:
    """What ``session``'s start was answered, as recorded (``Session.start_refused``, else
    Accepted), its status alone: what a copy of a refused start is told when its card is
    another holder's now (``ChargingService._recorded_answer`` tells the rest)."""
    return IdTagInfo(session.start_refused or "Accepted")


def _refused_for_the_plug(session: Session) -> bool:
    """Whether ``session``'s start was refused because its plug was reserved for another
    card (``ChargingService._plug_reservations``): told Invalid while its card was on
    record (its holder recorded), which a card's status alone never tells (Invalid is
    for a card we do not hold, ``_card_answer``). A resend of it is answered so again:
    judged on the card alone it was told Accepted and billed."""
    return session.start_refused == "Invalid" and session.user_id is not None


def _recorded_as_replay(session: Session) -> bool:
    """Whether ``session``'s start was judged one replayed from an offline queue
    (``_StartIdentity.replayed``), as the session records it: it arrived (``created_at``)
    more than ``BILLED_TIME_TOLERANCE`` after its time, its charger's clock not behind
    ours (``start_clock_behind``)."""
    return not session.start_clock_behind \
        and session.created_at - session.start_time > BILLED_TIME_TOLERANCE


def barred_by(card: IdTag | None, owner: User | None, at: datetime) -> bool:
    """Whether ``card`` was already refused at ``at`` as its record tells: its expiry
    passed by then, or its status (BLOCKED, EXPIRED) set by then, its last change
    (``updated_at``) no later: every edit stamps it, so one edited since cannot tell and
    is taken as barred since. A start replayed from an offline queue of a card barred
    before it charged (a stolen card used on a charger offline) is refused as a live one
    is, unbilled; of one barred since, billed (review r32-a). So too a card whose
    ``owner`` was deactivated by then (an erasure too), which blocks it at the charger
    (``IdTag.charger_status``) and leaves the card's record as it was: told by the
    owner's record the same way, the deactivation its last change (session 33: billed).
    An owner gone cannot tell when: barred since."""
    if card is None:
        return False
    if card.expires_at is not None and card.expires_at <= at:
        return True
    if owner is not None and not owner.active and owner.updated_at <= at:
        return True
    return card.status is not IdTagStatus.ACCEPTED and card.updated_at <= at


def _admitted(station: Station, action: str) -> bool:
    """Whether ``station``'s charger may send ``action`` by its registrations
    (``domain.registration.admits``), as cached for its messages; refused so, only what
    is open on record for it is taken (``ChargingService._on_record``)."""
    return admits(station.registration, action, station.charger_registration)


def _told(station: Station, info: IdTagInfo) -> IdTagInfo:
    """What the charger is told of its start's card (``info``: the card's status, which
    the session is recorded and billed by, ``ChargingService._answered``). A station
    not Accepted now authorizes nothing: a charger still acting on an earlier Accepted
    (told its registration at its next boot) may start on its own (its local list or
    cache, after its Authorize was refused), and that session is recorded, stopped and
    billed as any other; but its answer is ``WITHHELD`` whatever the card, so no card is
    checked through a start (Invalid: a charger stops the transaction), as none is
    through Authorize (``registration.NEW_AUTHORIZATIONS``) or a stop."""
    return info if station.registration is Registration.ACCEPTED else WITHHELD


@dataclass(frozen=True, slots=True)
class BootInfo:
    vendor: str
    model: str
    serial: str | None = None
    firmware: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: It answers a TriggerMessage of ours: the charger did not restart, so its boot time
    #: stays (what waits for a restart, a configuration change, still waits).
    triggered: bool = False


#: How long a charger may cache an Accepted authorization unless set
#: (``Settings.auth_cache_hours``).
DEFAULT_AUTH_CACHE = timedelta(hours=24)
#: The longest a charger whose station is not Accepted waits before booting again.
RETRY_BOOT_S = 60


class _Reported(NamedTuple):
    """A connector's (or, for connector 0, the station's) state as a StatusNotification
    states it: what a report must change to be announced."""

    status: ConnectorStatus | None
    error_code: str
    info: str | None
    vendor_error_code: str | None

    @classmethod
    def of_connector(cls, connector: Connector) -> _Reported:
        return cls(connector.status, connector.error_code, connector.info,
                   connector.vendor_error_code)

    @classmethod
    def of_point(cls, station: Station) -> _Reported:
        return cls(station.status, station.error_code or "NoError", station.info,
                   station.vendor_error_code)

    @property
    def fault(self) -> tuple[str, str | None] | None:
        """The fault it states (``domain.faults``), told apart by its codes: a new
        errorCode or vendorErrorCode is a new fault, a status change within one is not
        (GroundFailure while Charging, then Faulted); ``None``: no fault."""
        if not is_fault(self.status, self.error_code):
            return None
        return self.error_code, self.vendor_error_code


@dataclass(frozen=True, slots=True)
class BootResult:
    status: Registration
    interval: int
    current_time: datetime


class ChargingService(ChargerConnections):
    def __init__(self, ctx: ServiceContext, *, heartbeat_interval: int = 300,
                 auto_register: bool = False,
                 registrations_per_hour: int = REGISTRATIONS_PER_ADDRESS,
                 auth_cache: timedelta = DEFAULT_AUTH_CACHE,
                 sign_in_limits: ChargerSignInLimits = ChargerSignInLimits()) -> None:
        super().__init__(ctx)
        #: Chargers' failed password checks, which lock guessers out (the OCPP server
        #: asks before it checks a password and counts what it checked).
        self.sign_ins = ChargerSignIns(ctx.clock, sign_in_limits)
        #: Stations auto-registered per charger address in any hour
        #: (``CHARGEGRAPH_AUTO_REGISTER_PER_HOUR``; a limit of 0: none).
        self.registrations = RollingLimit(
            ctx.clock, limit=registrations_per_hour, window=REGISTRATION_WINDOW,
            name="charger_registrations")
        #: One registration of a cpId at a time here (``station_for_connection``).
        self.registering = KeyedLocks()
        #: How long a charger may cache an Accepted answer (``_cached_until``).
        self.auth_cache = auth_cache
        self.heartbeat_interval = heartbeat_interval
        self.auto_register = auto_register
        self.tariffs = TariffService(ctx)
        self.telemetry = GroupCommitter(ctx.store)
        self.cache = ChargerCache()
        self.clocks = ChargerClocks(self.now)
        self.unreadable = UnreadableValues()
        self.reboot_checks = RebootChecks(self._close_lost_at_reboot)
        #: The same grace for sessions a restore brought back open
        #: (``Session.open_at_restore``), keyed by the restore's time.
        self.restore_checks = RebootChecks(self._close_open_at_restore,
                                           lost_at="the restore")
        #: Where such sessions are open: station id → connector → the restore's time
        #: (``load_restored``, at start-up; a connector left with none is dropped).
        self.restored_open: dict[str, dict[int, datetime]] = {}
        #: Asks a charger connecting with such sessions for its connectors' status
        #: (``Services`` wires in ``CommandService.ask_for_status``), in the background.
        self.on_restored_connect: Callable[[Station], Awaitable[None]] | None = None
        self.asking = Background()
        #: Known charger addresses being written to the store (``charger_passed``).
        self.keeping_known = Background()
        self.session_updates = LatestUpdates(self.publish)
        #: Sessions whose metering after their close without a stop was logged.
        self._metered_after_close: set[str] = set()
        #: Sessions' contradicting repeated stops logged, with what differs.
        self._contradictions: set[tuple[str, str]] = set()
        ctx.committed.append(self.cache.forget)
        #: Called with the station's id once a StartTransaction's answer went out
        #: (``start_answered``): the site's load management tells the new session its
        #: share, which the charger can take only once it knows the transaction.
        self.on_start_answered: list[Callable[[str], None]] = []
        #: Called with the station's id once a BootNotification was answered Accepted
        #: (``boot_accepted``): a charger that rebooted may have lost the site's limit
        #: it was charging under, and it is sent again.
        self.on_boot_accepted: list[Callable[[str], None]] = []
        #: Told each event ``follow`` hears (any instance's), after the cache dropped
        #: what it names: what other services keep of a charger on this instance
        #: (``SiteLoad.followed``: the stack level and units it read). ``follow`` runs on
        #: every instance, one serving the API alone too, started by the wiring.
        self.on_followed: list[Callable[[DomainEvent | EventsDropped], None]] = []
        #: Set by the OCPP server: records again the connection it holds for a charger
        #: whose station a message found recorded offline (``_still_connected``).
        self.still_connected: Callable[[str], Awaitable[None]] | None = None
        #: A fraction in [0, 1) drawn for each pause before a write tried again reads
        #: again (``pause_to_retry``); each instance draws its own.
        self.retry_jitter: Callable[[], float] = random.random

    # ------------------------------------------------------------- plumbing
    async def _clock_report(self, station: Station, charger_time: datetime) -> None:
        """``ChargerClocks.observe``; and on the charger's first timestamp that shows its
        clock, whichever message carries it, moves onto its timeline the intervals its
        connection opened on ours, observed when its clock read it (never after our
        now). A queued one (``ChargerClocks.queued``) moves nothing: the outage stays
        as its disconnect recorded it, offline."""
        cp_id = station.cp_id
        if self.clocks.observe(cp_id, charger_time):
            await rebase_intervals(self.store, station, charger_time,
                                   self.clocks.ours_at(cp_id, charger_time), self.now())

    #: What ``follow`` listens to.
    CACHED_TOPICS = CACHED_TOPICS

    async def follow(self, events: AsyncIterator[DomainEvent | EventsDropped]) -> None:
        """Drop what another instance changed as soon as it announces it (``events``: a
        subscription to ``CACHED_TOPICS``), so the charger this instance holds meets the
        change at its next message, not up to ``CACHE_TTL_S`` later: a registration
        Rejected or a station handed to another company on another instance, a session
        ended there (``endSession``: its meter values must not go on adding energy), a
        station removed there. Then ``on_followed``."""
        async for event in events:
            self.cache.drop(event)
            for listener in self.on_followed:
                try:
                    listener(event)
                except Exception:  # one listener's fault stops no other, nor the cache
                    log.exception("a listener of followed %s events failed",
                                  type(event).__name__)

    async def _rated_kw(self, station: Station, connector_id: int) -> float:
        """The connector's rating (``MAX_BELIEVABLE_KW`` when not known), cached as
        stations are: read once per ``CACHE_TTL_S``, not on every meter value."""
        rated = self.cache.rating(station.id, connector_id)
        if rated is not None:
            return rated
        found, unknown = await self._connector(station, connector_id)
        rated = found.max_kw if not unknown and found.max_kw else MAX_BELIEVABLE_KW
        self.cache.keep_rating(station.id, connector_id, rated)
        return rated

    async def _require_station(self, cp_id: str, *, fresh: bool = False) -> Station:
        """The charger's station, cached for its frequent messages; ``fresh``: read from
        the store whatever is cached."""
        cached = None if fresh else self.cache.station(cp_id)
        if cached is not None:
            return cached
        station = await self.station(cp_id)
        if station is None:
            raise _unknown(cp_id)
        self.cache.remember(station)
        return station

    async def admits(self, cp_id: str, action: str, transaction_id: object = None,
                     connector_id: object = None, meter_stop: object = None) -> bool:
        """Whether the charger may send ``action`` now (``domain.registration``): by the
        registration its last boot was answered with, which it acts on, or its station's
        as it is now (for a new authorization, that one alone), as cached for its other
        messages. Refused so, a frame naming what is open on record for it is still
        taken (``_on_record``: ``transaction_id``, ``connector_id`` and ``meter_stop`` as
        the frame has them). No store read for a refused frame beyond the cached
        station's, but the one record it names."""
        station = await self._require_station(cp_id)
        if _admitted(station, action):
            return True
        return await self._on_record(station, action, transaction_id, connector_id,
                                     meter_stop)

    async def _on_record(self, station: Station, action: str, transaction_id: object,
                         connector_id: object, meter_stop: object = None) -> bool:
        """Whether a frame of a charger not admitted names what is open on record for it:
        a state report, a connector its station has (0: the point itself), never a new
        one; a stop, its session still ACTIVE or closed without its stop (which the stop
        corrects), or stopped by it already and the same meterStop (a resend, its answer
        lost: answered ``{}`` as an admitted charger's repeat is, ``stop_transaction``,
        writing nothing; review r32-d: refused, the charger kept resending a stop that
        was taken); readings, its session still ACTIVE, on that session's connector.
        Review r32-a: told Rejected, a charger had 50 readings of a COMPLETED session
        stored on a connector it never used, and its reports created FAULTED connectors
        5 and 9."""
        if action in STATE_REPORTS:
            return isinstance(connector_id, int) and (
                connector_id == 0 or await self.store.find_one(Connector, all_of(
                    Eq("station_id", station.id), Eq("connector_id", connector_id)))
                is not None)
        if action not in CLOSES_RECORDED or not isinstance(transaction_id, int):
            return False
        session = await self._transaction(station.cp_id, transaction_id)
        if session is None:
            return False
        if action == "StopTransaction":
            # Not ``stoppable``: one flushed late (``awaits_stop``) is not taken so.
            return session.state is SessionState.ACTIVE or closed_without_stop(session) or (
                not stoppable(session) and isinstance(meter_stop, int)
                and stop_register(meter_stop) == session.meter_stop_wh)
        return session.state is SessionState.ACTIVE and session.connector_id == connector_id

    async def password_changed(self, cp_id: str, signed_in_with: str | None, *,
                               fresh: bool = False) -> bool:
        """Whether the station was given a new password since its charger's connection
        signed in against ``signed_in_with`` (the station's password hash then; ``None``:
        none): that connection is shut out (``StationService.update_station``, README's
        "Shutting out a charger"). A password cleared shuts nothing out. From the station
        as cached for the charger's messages (an edit drops it on every instance), a
        change it shows confirmed as stored (a copy read before the edit may have been
        cached after its drop: the connection that signed in with the new password since
        was shut out as if it held the old one, review s26); only then, so a message
        costs no read. ``fresh``: as stored at once."""
        station = await self._require_station(cp_id, fresh=fresh)
        if not _other_password(station, signed_in_with):
            return False
        if not fresh:
            station = await self._require_station(cp_id, fresh=True)
        return _other_password(station, signed_in_with)

    # ------------------------------------------------------------- boot and heartbeat
    @_station_must_exist
    async def boot(self, cp_id: str, info: BootInfo) -> BootResult:
        # Read as stored, not cached: the answer is the charger's registration, and a
        # Rejected set on another instance an instant ago must not wait for its
        # announcement to arrive here (QA s21: 2 boots in 60 Accepted). Boots are rare.
        station = await self._require_station(cp_id, fresh=True)
        await self._still_connected(station)
        now = self.now()
        details: dict[str, Any] = {
            "vendor": v.shown_text(info.vendor), "model": v.shown_text(info.model),
            "serial": v.shown_text(info.serial), "firmware": v.shown_text(info.firmware)}
        actor = charger(cp_id)
        # Our clock, as sessions' created_at; stored, for a restart of ours. A triggered
        # boot is no restart: the last one stays. The first on a connection is dated when
        # the connection opened (``ChargerClocks.boot_at``): what the charger answered
        # on it before this boot was recorded is in force since the boot.
        booted = station.booted_at if info.triggered else self.clocks.boot_at(cp_id, now)
        self.clocks.told_time(cp_id)  # the answer's currentTime sets its clock
        # What the charger is told, and acts on until its next boot (a triggered one's
        # answer too): its reports are judged by it (``domain.registration``).
        told = station.registration
        if any(getattr(station, k) != val for k, val in details.items()):
            update = patch(station, actor, last_seen=now, booted_at=booted,
                           charger_registration=told, **details)
            await self.commit(actor, [(update, station)])
        else:
            update = touch(station, last_seen=now, booted_at=booted,
                           charger_registration=told)
            await self.store.write([update], [])
        self.cache.patched(station, cast(Station, update.record))
        if booted is not None and not info.triggered:
            try:
                await self._mark_first_boot(station, booted)
            except Exception:  # the boot stands, recorded: an error would have the charger
                # send it again, dated later. Unmarked, a lost session ends at its
                # station's latest boot instead (``lost_end``'s ``booted``).
                log.warning("%s: marking the sessions open across its boot failed", cp_id,
                            exc_info=True)
        # A boot (no trigger's) settles no remote start sent before it: they stop holding
        # their card and plug (``pending_starts.holds``, by ``booted_at``), and one the
        # charger still carries out still gets its car (review s25).
        return BootResult(station.registration, self.boot_interval(station), now)

    async def _mark_first_boot(self, station: Station, booted: datetime) -> None:
        """The boot at ``booted`` is the first (``Session.first_boot_at``) of each session
        open on the station from before it with none since it was recorded or last named
        by a MeterValues (its charger had it after that boot): the boot that lost it if
        its stop never comes. A later boot leaves it, so it ends there whichever boot's
        check closes it (QA s33). Telemetry (``touch``: no version, no audit, a MeterValues
        meanwhile not refused), each guarded on the value read: two boots racing, the
        first written stays."""
        open_ = await self.store.find_all(Session, all_of(
            Eq("station_id", station.id), Eq("state", SessionState.ACTIVE),
            Range("created_at", lt=booted)),
            limit=MAX_OPEN_PER_CONNECTOR * v.MAX_CONNECTOR_ID)
        marks: list[Change] = [
            replace(touch(s, first_boot_at=booted), only_if=("first_boot_at", s.first_boot_at))
            for s in open_ if s.first_boot_at is None or (
                s.first_boot_at < booted and s.named_at is not None
                and s.named_at >= s.first_boot_at)]
        if marks:
            await self.store.write(marks, [])

    def boot_interval(self, station: Station) -> int:
        """The interval a boot is answered with. For an Accepted station, its heartbeat
        interval: the one its charger accepted last (``Station.heartbeat_interval``,
        within the global one's bounds, ``v.heartbeat_interval``), else the global one.
        OCPP 1.6 chargers adopt the answer's interval, so the global one would undo an
        operator's ChangeConfiguration at every reboot (QA ops s6). For a station not
        accepted (yet), OCPP 1.6 (4.2) makes it the wait before the charger's next
        BootNotification: at most ``RETRY_BOOT_S``, so a station an operator accepts is
        charging within a minute even when the charger misses the nudge
        (``StationService.on_accepted``) or, Rejected, may not answer it, not after a
        heartbeat interval of up to a day."""
        interval = station.heartbeat_interval or self.heartbeat_interval
        if station.registration is Registration.ACCEPTED:
            return interval
        return min(interval, RETRY_BOOT_S)

    @_station_must_exist
    async def heartbeat(self, cp_id: str) -> datetime:
        station = await self._require_station(cp_id)
        await self._still_connected(station)
        now = self.now()
        update = touch(station, last_seen=now)
        await self.telemetry.write([update])
        self.cache.patched(station, cast(Station, update.record))
        return now

    async def seen(self, cp_id: str) -> None:
        """A message came from the charger: its station's ``last_seen`` is kept within
        ``LAST_SEEN_EVERY`` of it, from the station as cached for its messages (one write
        a minute at most; none for a station not cached yet: the message that caches it
        reads it). OCPP-J chargers may send no Heartbeat while other messages flow, and a
        charging station looked silent for as long as it charged."""
        station = self.cache.station(cp_id)
        if station is None:
            return
        now = self.now()
        if station.last_seen is not None and now - station.last_seen < LAST_SEEN_EVERY:
            return
        update = touch(station, last_seen=now)
        await self.telemetry.write([update])
        self.cache.patched(station, cast(Station, update.record))

    # ------------------------------------------------------------- authorization
    async def authorize(self, cp_id: str, id_tag: str) -> IdTagInfo:
        """The card's status for a charger's Authorize (and a stop's idTagInfo): never
        ``ConcurrentTx``, which OCPP 1.6 (7.2, AuthorizationStatus) makes "only relevant
        for a StartTransaction.req". A card charging elsewhere was answered it, and a
        charger that authorizes the card presented to end a session (its own, or a group
        member's by parentIdTag) refused it: the driver could not stop with their card
        (QA s26). Whether the card may start a second transaction is the start's
        question (``authorize_start``)."""
        return await self._card_answer(id_tag, None)

    async def authorize_start(self, cp_id: str, id_tag: str,
                              exclude_sessions: Collection[str] = (), *,
                              before: int | None = None,
                              card: tuple[IdTag | None] | None = None,
                              at: datetime | None = None,
                              begun_by: datetime | None = None) -> IdTagInfo:
        """The card's status for a StartTransaction: as ``authorize``, and
        ``ConcurrentTx`` while another transaction holds it (``holding_card``: open, its
        start not refused). ``exclude_sessions``: open sessions that do not hold the card
        (the one this very start opened, those it closes); ``before``: only open sessions
        of earlier transactions hold it (a resent start's view of its first copy).
        ``card``: the card as the caller read it by the tag (``(None,)``: none on record),
        judged as read, not read again: the session written is the decision's (review
        r27-accounts3: a card issued between two reads was Accepted, the session written
        of no one's). ``at``: the moment the expiryDate counts from (``_cached_until``),
        now by default. ``begun_by``: a replayed start's time, only sessions begun by
        then hold the card (``holding_card``)."""
        return await self._card_answer(id_tag, (exclude_sessions, before, begun_by), card,
                                       at)

    async def _card_answer(self, id_tag: str,
                           start: tuple[Collection[str], int | None, datetime | None] | None,
                           card: tuple[IdTag | None] | None = None,
                           at: datetime | None = None) -> IdTagInfo:
        """The card's idTagInfo; ``start``: a start's (``authorize_start``) sessions
        left out and transaction bound, ``None`` for an Authorize (no ConcurrentTx);
        ``card``: the card already read, else it is read here."""
        [tag] = card if card is not None else [
            await self.store.find_one(IdTag, Eq("tag", id_tag.strip().upper()))]
        if tag is None:
            return IdTagInfo("Invalid")
        user = (await self.store.get_many(User, [tag.user_id]))[0]
        status = tag.charger_status(user, self.now())
        if status is IdTagStatus.BLOCKED:
            return IdTagInfo("Blocked", tag.expires_at)
        if status is IdTagStatus.EXPIRED:
            return IdTagInfo("Expired", tag.expires_at)
        expiry = self._cached_until(tag, at)
        if start is not None:
            exclude_sessions, before, begun_by = start
            busy = await self.store.find_all(
                Session, all_of(holding_card(tag.tag, begun_by),
                                Range("transaction_id", lt=before)
                                if before is not None else None),
                limit=len(exclude_sessions) + 1)
            if any(s.id not in exclude_sessions for s in busy):
                return IdTagInfo("ConcurrentTx", expiry, tag.parent_tag)
        return IdTagInfo("Accepted", expiry, tag.parent_tag)

    def _cached_until(self, tag: IdTag, at: datetime | None = None) -> datetime:
        """The expiryDate an answer carries: how long a charger may keep it in its
        authorization cache. Without one a charger keeps an Accepted card for good and
        lets it charge offline after it was blocked; so the card's own expiry if sooner,
        else ``auth_cache`` from ``at`` (now by default; a start's: its session's
        ``created_at``, which its resends are answered from, ``_recorded_answer``)."""
        bound = (self.now() if at is None else at) + self.auth_cache
        return bound if tag.expires_at is None else min(tag.expires_at, bound)

    async def _recorded_answer(self, session: Session) -> IdTagInfo:
        """What a copy of the start of ``session``, closed, is told: what its first copy
        was, never judged again (``recorded_answer``'s status), with the idTagInfo that
        answer carried, from its holder's card: the expiryDate counted from the
        session's ``created_at`` as the first answer's was (``_open_session``) and the
        card's parentIdTag for Accepted and ConcurrentTx, the card's expiry for Blocked
        and Expired. Told a bare Accepted (QA s28), a charger cached the card for good,
        and charged it offline after it was blocked, and filed it without its group. A
        card removed since, or another holder's now, tells nothing but the status: its
        fields are no longer this session's card's."""
        info = recorded_answer(session)
        if info.status == "Invalid":
            return info
        card = await self.store.find_one(IdTag, all_of(
            Eq("tag", session.id_tag), Eq("user_id", session.user_id)))
        if card is None:
            return info
        if info.status in ("Blocked", "Expired"):
            return IdTagInfo(info.status, card.expires_at)
        return IdTagInfo(info.status, self._cached_until(card, session.created_at),
                         card.parent_tag)

    # ------------------------------------------------------------- connectors
    async def check_connector_id(self, cp_id: str, connector_id: int, *,
                                 allow_zero: bool = False) -> None:
        """Refuse connector ids the charger cannot have: above its highest registered
        connector and the cap up to which reports register new ones."""
        low = 0 if allow_zero else 1
        if connector_id < low:
            raise ValidationError(f"connectorId must be ≥ {low}", field="connectorId",
                                  code="OUT_OF_RANGE")
        await connector_in_range(self.store, await self._require_station(cp_id), connector_id,
                                 reported=True)

    async def _connector(self, station: Station, connector_id: int
                         ) -> tuple[Connector, bool]:
        """The connector, or a new one for a station reporting a plug we did not know."""
        found = await self.store.find_one(
            Connector, all_of(Eq("station_id", station.id), Eq("connector_id", connector_id)))
        if found is not None:
            return found, False
        new = stamp_new(Connector(station_id=station.id, cp_id=station.cp_id,
                                  connector_id=connector_id, type=ConnectorType.OTHER),
                        charger(station.cp_id))
        return new, True

    @_station_must_exist
    async def status_notification(self, cp_id: str, connector_id: int, status: str,
                                  error_code: str, *, info: str | None = None,
                                  timestamp: datetime | None = None,
                                  vendor_error_code: str | None = None) -> None:
        """A StatusNotification, taken again from its reads when its write met a change
        made since (``Conflict`` CHANGED): a handover on another instance that ended the
        state interval it read (``intervals.handed_over``), its station then read from
        the store, not the cache. Its books are those of the state interval its state is
        recorded in (``intervals.record_state``: the one it opens or continues), never
        the cached station's: report and time in one company's books."""
        tries = 0

        async def report() -> None:
            nonlocal tries
            tries += 1
            await self._status_notification(
                cp_id, connector_id, status, error_code, info=info, timestamp=timestamp,
                vendor_error_code=vendor_error_code, fresh=tries > 1)
        await retried(report)

    async def _status_notification(self, cp_id: str, connector_id: int, status: str,
                                   error_code: str, *, info: str | None,
                                   timestamp: datetime | None,
                                   vendor_error_code: str | None, fresh: bool) -> None:
        reported = v.instant(as_utc(timestamp), "timestamp") if timestamp else None
        info, vendor_error_code = v.shown_text(info), v.shown_text(vendor_error_code)
        station = await self._require_station(cp_id, fresh=fresh)
        # The state changes at the report's timestamp; one we cannot believe (far in our
        # future: a clock glitch) is taken as made on arrival, so the next sane report
        # wins. Its history (the StatusEvent) keeps the timestamp as reported.
        if reported is not None and self.clocks.believable(reported):
            await self._clock_report(station, reported)
            at = reported
        else:
            at = self.clocks.charger_now(cp_id)
        reported = reported if reported is not None else at
        actor = charger(cp_id)
        new_status = ConnectorStatus(status)
        # The report goes in the books of the state interval its state is recorded in
        # (``record_state``), whatever this instance's cached station says: a report
        # that raced a handover is taken again (its write meets the interval the
        # handover ended). None yet: it records no state (``late_books``: the books of
        # the interval its stamp falls in).
        books: Books | None = None
        # The books of a plug's first interval (none open to take them from), and of
        # connector 0's own report: those of the station it has, read from no store, as
        # the write is guarded on them (``GuardedBooks.guard``): a cached copy not told
        # of a handover fails it, and the report is taken again ``fresh``.
        stored = GuardedBooks(station)
        telemetry: list[Change] = []
        audited: list[tuple[Change, Any]] = []
        connector: Connector | None = None
        reported_station: Station | None = None
        stated = _Reported(new_status, error_code, info, vendor_error_code)
        previous: _Reported | None  # the state before it; None: a plug we did not know
        # Since when the connector has been reported Preparing (the write of the report
        # that began it: a repeat keeps the stamps): a remote start it was taken for may
        # end with this report (``abandoned``).
        preparing_since: datetime | None = None
        if connector_id == 0:
            # The charge point as a whole (its main controller): Unavailable or Faulted
            # here means none of its connectors can charge, whatever they report. OCPP
            # allows no other status here; a charger mirroring its one connector's
            # (Charging) says its controller works: Available (history keeps the report).
            new_status = new_status if new_status in POINT_STATUSES \
                else ConnectorStatus.AVAILABLE
            stated = stated._replace(status=new_status)
            previous = _Reported.of_point(station)
            if station.status_at is None or at >= station.status_at \
                    or not self.clocks.believable(station.status_at):
                update = patch(station, actor, status=new_status, error_code=error_code,
                               info=info, vendor_error_code=vendor_error_code, status_at=at)
                reported_station = cast(Station, update.record)
                telemetry.append(update)
                # Its connectors' state history follows: a whole-point outage is time
                # none of them could charge (availability, faults).
                for plug in await self.store.find_all(
                        Connector, Eq("station_id", station.id), limit=100):
                    recorded = await record_state(self.store,
                        reported_station, plug.connector_id,
                        *effective_state(reported_station, plug.status, plug.error_code),
                        station.online, at, actor, now=self.now(),
                        ours=self.clocks.ours_at(cp_id, at), stored=stored)
                    telemetry += recorded.changes
                    if recorded.queued:  # in the outage's books, with its time there
                        books = books or recorded.books
                # The point's report is the station's own: in its books as stored (and
                # written only while it is in them, ``GuardedBooks.guard``), not those of
                # whichever plug's interval was read first, which the plugs need not
                # share (a chain left in the former books). One queued through an
                # outage: those of the offline stretch its state splits, as a plug's.
                books = books or await stored.books()
        else:
            current, is_new = await self._connector(station, connector_id)
            previous = None if is_new else _Reported.of_connector(current)
            if not is_new and current.status is ConnectorStatus.PREPARING:
                preparing_since = current.updated_at
            # A state stamped in our future (kept before glitches were recognized) yields.
            if current.status_at is None or at >= current.status_at \
                    or not self.clocks.believable(current.status_at):
                # A repeat of the state (after a reconnect, every few minutes) is no
                # change to the connector: its stamps stay when the state began, which
                # ``preparing_since`` reads (review r3b: a repeated Preparing from before
                # a remote start made it look taken for the start, which the next
                # Available settled). Its time moves: later reports are judged by it.
                update = touch(current, status_at=at) if stated == previous else patch(
                    current, actor, status=new_status, error_code=error_code, info=info,
                    vendor_error_code=vendor_error_code, status_at=at)
                connector = cast(Connector, update.record)
                if is_new:  # a plug we did not know: a record change worth auditing
                    audited.append((Insert(connector), None))
                else:
                    telemetry.append(update)
                recorded = await record_state(self.store,
                    station, connector_id, *effective_state(station, new_status, error_code),
                    station.online, at, actor, now=self.now(),
                    ours=self.clocks.ours_at(cp_id, at), stored=stored)
                telemetry += recorded.changes
                books = recorded.books
            # else: an older report arriving late is history, not the current state
        company_id, station_owner_id = books if books is not None else await late_books(
            self.store, station, connector_id, at, stored)
        event = StatusEvent(id=stable_id(reported, cp_id, connector_id, reported.isoformat(),
                                         status, error_code),
                            station_id=station.id, cp_id=cp_id, connector_id=connector_id,
                            status=ConnectorStatus(status), error_code=error_code,
                            info=info, vendor_error_code=vendor_error_code, at=reported,
                            company_id=company_id, station_owner_id=station_owner_id)
        telemetry.insert(0, InsertIfAbsent(stamp_new(event, actor, reported)))
        # A plug new here is written only while its station is there: a removal on
        # another instance between this report's read and its write left a connector of
        # no station, its state interval open for good (review s21). A plug's first
        # interval only while its station is in the books it took (``GuardedBooks.guard``):
        # a handover meanwhile rolled over no interval of it (review r27-analytics4).
        # The books' guard names the station, so it holds its being there too: a new
        # plug, whose first interval always takes them, is written on that one alone
        # (one read of the station on MongoDB, not two).
        in_books = stored.guard()
        guards = [in_books] if in_books is not None \
            else [Guard(Station, Eq("id", station.id))] if audited else []
        try:
            await self.commit(actor, audited, unaudited=telemetry, guards=guards)
        except Conflict:
            await self._still_registered(cp_id)  # gone: an unknown charge point
            raise
        if reported_station is not None:
            self.cache.patched(station, reported_station)
        await self._announce_report(station, connector_id, at, connector, stated, previous,
                                    updated=connector is not None
                                    or reported_station is not None)
        if connector is not None and new_status is ConnectorStatus.AVAILABLE \
                and station.booted_at is not None:
            self.reboot_checks.schedule(station.cp_id, connector_id, station.booted_at)
        if connector is not None and new_status in FREE_AFTER_RESTORE:
            self._arm_restore_check(station, connector_id)
        if connector is not None and preparing_since is not None and new_status in GIVEN_UP:
            await self._start_given_up(station, connector_id, preparing_since)

    async def _start_given_up(self, station: Station, connector_id: int,
                              preparing_since: datetime) -> None:
        """Settles the remote starts the charger gave up on ``connector_id``, which left
        the Preparing it was in since ``preparing_since`` without a StartTransaction
        (``abandoned``): their card and plug are free at once, not held for the rest of
        their window. Read only on such a report (a car unplugged before charging, a
        start given up), by the station's live pending starts."""
        live = await self.store.find_all(PendingStart, all_of(
            Eq("station_id", station.id), Eq("connector_id", connector_id),
            live_pending_starts(self.now())), limit=5)
        ended = abandoned(live, connector_id, preparing_since)
        if ended:
            actor = charger(station.cp_id)
            now = self.now()
            await self.commit(actor, [], unaudited=[settle(p, actor, now) for p in ended])

    async def _announce_report(self, station: Station, connector_id: int, at: datetime,
                               connector: Connector | None, stated: _Reported,
                               previous: _Reported | None, *, updated: bool) -> None:
        """Publishes what a status report changed (``updated``: it is the current state
        now, not a late one). ``ConnectorStatusChanged`` only when the state changed: a
        charger repeats its state after each (re)connect and many report it again every
        few minutes, and every repeat was an event and a webhook delivery saying nothing
        new (QA ops s4: 90 webhooks for a flapping charger). The first report after a
        reconnect is no exception: what clients show is still right, and the station's
        coming back is announced on its own (``StationConnectionChanged``). The history
        (``StatusEvent``) keeps every report. ``FaultReported`` when it states a fault
        (``domain.faults``) the state before it did not, late or not, as before."""
        if updated and stated != previous \
                and not await self._left_to_reservation_end(connector, stated, previous):
            await self.publish(ConnectorStatusChanged(
                **owned_by(station), at=at,
                connector_record_id=connector.id if connector is not None else None,
                connector_id=connector_id, status=str(stated.status),
                error_code=stated.error_code, info=stated.info,
                vendor_error_code=stated.vendor_error_code))
        fault = stated.fault
        if fault is not None and fault != (previous.fault if previous is not None else None):
            await self.publish(FaultReported(
                **owned_by(station), at=at, connector_id=connector_id,
                error_code=stated.error_code, status=str(stated.status), info=stated.info,
                vendor_error_code=stated.vendor_error_code))

    async def _left_to_reservation_end(self, connector: Connector | None,
                                       stated: _Reported, previous: _Reported | None
                                       ) -> bool:
        """Whether a plug's Reserved turning Available is left for its reservation's end
        to announce: the charger answering a cancel of a reservation still live here,
        its answer not recorded yet (``Reservation.cancel_sending_since``, marked by the
        cancel's send, ``CommandService._cancel_marked``; lapsed after
        ``CANCEL_CLAIM_S``), no session holding the plug. That end (``Service.publish``
        of the reservation's ``ReservationChanged``, on whichever instance records it)
        tells the plug Available and free, once; announced here too it read Available
        and not free just before (QA s32: a cancel's answer is recorded after the
        charger's report of it). A charger that let a reservation go with no cancel
        sent (a reboot, its own clock) is announced at once (review r32-e: held back,
        the map showed the plug RESERVED until the reservation's end, while queries
        said AVAILABLE). A read that fails announces it."""
        if connector is None or previous is None \
                or previous.status is not ConnectorStatus.RESERVED \
                or stated.status is not ConnectorStatus.AVAILABLE:
            return False
        now = self.now()
        try:
            reserved = await self.store.find_one(Reservation, all_of(
                Eq("station_id", connector.station_id),
                In("connector_id", (connector.connector_id, 0)), live_reservations(now),
                Range("cancel_sending_since",
                      gte=now - timedelta(seconds=CANCEL_CLAIM_S))))
            held = reserved is not None and await self.store.find_one(
                Connector, all_of(Eq("id", connector.id), connectors_held())) is not None
        except Exception:
            log.exception("reading whether connector %s is reserved failed", connector.id)
            return False
        return reserved is not None and not held

    async def _close_lost_at_reboot(self, cp_id: str, connector_id: int, booted: datetime
                                    ) -> None:
        """After the reboot's grace (``RebootChecks``): a session open on the connector,
        recorded before the reboot, lost its StopTransaction with the reboot, and is
        closed as a lost stop is (energy as metered, reason ``Other``), ending at the
        reboot. Left open, it held its driver's card everywhere (``ConcurrentTx``) until
        an operator ended it. A stop the charger sends later still corrects the close
        (``closed_without_stop``). Each ends at its first boot since it was recorded
        (``Session.first_boot_at``), whichever boot this check is for: a boot since this
        one moves neither the end nor this check (``RebootChecks.schedule``; QA s33: a
        charger booting again within the grace kept the session open, a later boot's
        check closed it at that boot). One whose first boot is later than this one (its
        charger still had it after this boot) is that boot's check's to close."""
        station = await self.station(cp_id)
        if station is None:
            return  # removed
        # By when we recorded it (``created_at``), on our clock as the boot time is: a
        # session's start is on the charger's clock, which may be behind ours by any
        # amount (a session begun after the boot would read as begun before it).
        lost = await self.store.find_all(Session, all_of(
            Eq("cp_id", station.cp_id), Eq("connector_id", connector_id),
            Eq("state", SessionState.ACTIVE), Range("created_at", lt=booted)),
            limit=MAX_OPEN_PER_CONNECTOR)
        for session in lost:
            first = session.first_boot_at or booted
            if first <= booted:
                await self._close_if_lost(station, session, first)

    def charger_passed(self, station: Station, password_hash: str, address: str) -> None:
        """The station's charger passed the password check from ``address``
        (``ChargerSignIns.succeeded``). When that is news (a new pair, or one last told a
        day ago or more), the pair is kept in the store too, in the background, for the
        instances that start later (``known_addresses``; ``load_known_addresses``)."""
        pair = self.sign_ins.succeeded(station.cp_id, password_hash, address)
        if pair is not None:
            self.keeping_known.run(
                known_addresses.keep(self.store, station.id, pair, self.now(),
                                     self.sign_ins.known.forget),
                "chargegraph-known-address",
                f"{station.cp_id}: storing where its charger passed from failed (known "
                "on the instances running, not on one starting)")

    async def load_known_addresses(self) -> None:
        """Learns, at start-up, where stations' chargers passed the password check from
        within ``KNOWN_FOR`` (on any instance, before this one started): a charger moved
        here after its instance went is known at its address, as on the instances that
        were running (``OcppServer._known_check``). Read once, a page at a time, never
        on a handshake."""
        async for page in known_addresses.stored(self.store, self.now() - KNOWN_FOR):
            self.sign_ins.known.load(page)

    async def sweep_known_addresses(self) -> int:
        """Deletes the stored pairs that last passed ``KNOWN_FOR`` ago or longer."""
        return await known_addresses.sweep(self.store, self.now() - KNOWN_FOR)

    async def load_restored(self) -> None:
        """Learns, at start-up, where sessions a restore brought back open
        (``Session.open_at_restore``) are still open (``restored_open``): a restore
        happens only with every instance stopped, so what a process starts with is all
        there will be. One read at the start, so that a status report, the hottest path
        there is, decides without reading (review r27-restore: one more read per
        Available or Preparing report, on databases never restored too)."""
        found = await self.store.find_all(Session, all_of(
            Eq("state", SessionState.ACTIVE),
            Range("open_at_restore", gte=datetime(1970, 1, 1, tzinfo=UTC))),
            limit=100_000)
        restored: dict[str, dict[int, datetime]] = {}
        for session in found:
            at = cast(datetime, session.open_at_restore)
            plugs = restored.setdefault(session.station_id, {})
            plugs[session.connector_id] = max(at, plugs.get(session.connector_id, at))
        self.restored_open = restored
        if restored:
            log.info("%d session(s) open at the restore, on %d station(s): each is "
                     "closed at its last reading once its connector is reported free",
                     len(found), len(restored))

    def _arm_restore_check(self, station: Station, connector_id: int, *,
                           reported_at: datetime | None = None,
                           now: datetime | None = None) -> None:
        """A connector reported free (``FREE_AFTER_RESTORE``) where a session a restore
        brought back is open (``restored_open``): its charger ended it after the backup
        was taken, its StopTransaction gone with the database replaced. Closed as lost
        after the reboot's grace (its stop, if queued, comes first), unless a MeterValues
        names it meanwhile. Decided from memory: no read on a status report; the check
        reads when its grace is over, in the background, where a failing read is logged
        and left to the next report or connection (``RebootChecks``)."""
        restored = self.restored_open.get(station.id, {}).get(connector_id)
        if restored is not None:
            self.restore_checks.schedule(station.cp_id, connector_id, restored,
                                         reported_at=reported_at, now=now)

    async def _close_open_at_restore(self, cp_id: str, connector_id: int,
                                     restored: datetime) -> None:
        """After the grace (``_arm_restore_check``): what is still open on the connector
        from a restore at or before ``restored`` is closed as a lost stop is (reason
        ``Other``, energy as metered), ending at its last reading (``end_without_stop``):
        when it ended between the backup and the restore is not known, and the time up
        to the restore (hours, days) was not charging to bill. A stop its charger sends
        later still corrects the close (``closed_without_stop``). A connector left with
        none such is forgotten (``restored_open``)."""
        station = await self.station(cp_id)
        if station is None:
            return
        open_ = await self.store.find_all(Session, all_of(
            Eq("station_id", station.id), Eq("state", SessionState.ACTIVE),
            Eq("connector_id", connector_id), Range("open_at_restore", lte=restored)),
            limit=MAX_OPEN_PER_CONNECTOR)
        kept = False
        for session in open_:
            kept |= not await self._close_if_lost(
                station, session, cast(datetime, session.open_at_restore))
        if not kept:
            plugs = self.restored_open.get(station.id, {})
            if plugs.get(connector_id) == restored:
                del plugs[connector_id]
            if not plugs:
                self.restored_open.pop(station.id, None)

    async def _close_if_lost(self, station: Station, session: Session, booted: datetime
                             ) -> bool:
        """Closes ``session`` as lost at the boot at ``booted``, unless a MeterValues
        named it since (``Session.named_at``): a charger that sent a BootNotification
        without losing anything (a periodic one, a controller restart) and goes on
        metering the transaction still has it (QA s20: closed after 2 minutes while
        its meter values kept coming, its energy frozen and its card free elsewhere).
        Written only onto the session as read: a frame naming it meanwhile makes it read
        again and decide anew. It ends at the boot, or at its last reading when a restore
        brought it back open and it was not heard of since (``end_without_stop``).
        Whether it is closed now (here or meanwhile); false: its charger still meters
        it."""
        actor = charger(station.cp_id)
        for _ in range(END_ATTEMPTS):
            if session.state is not SessionState.ACTIVE:
                return True  # stopped or closed meanwhile
            if session.named_at is not None and session.named_at >= booted:
                return False  # its charger still meters it
            end = end_without_stop(session, booted, booted + MAX_CLOCK_AHEAD)
            closed, changes = await self._close(station, session, None, end,
                                                CLOSED_WITHOUT_STOP, actor,
                                                unchanged_since=session.updated_at)
            try:
                await self.commit(actor, changes)
            except Conflict:
                # Written meanwhile: its stop or an operator closed it, or a frame
                # named or metered it. Read again.
                again = await self.store.get_many(Session, [session.id])
                if again[0] is None:
                    return True
                session = again[0]
                continue
            await self._announce_end(station, closed)
            return True
        log.warning("%s: transaction %s kept changing while its reboot's check closed it; "
                    "left open (its stop or an operator's endSession ends it)",
                    station.cp_id, session.transaction_id)
        return False

    # ------------------------------------------------------------- transactions
    async def start_transaction(self, cp_id: str, connector_id: int, id_tag: str,
                                meter_start: int, timestamp: datetime,
                                reservation_id: int | None = None) -> tuple[int, IdTagInfo]:
        """Opens a session and returns its transaction id. A repeated message (same
        connector, tag, time and meter) returns the same id; a transaction started while
        the charger was offline arrives late and is accepted as it is."""
        v.meter_register(meter_start, "meterStart")
        start = v.instant(as_utc(timestamp), "timestamp")
        # Read as stored, not cached: whether the charger is told its card's status is
        # the station's registration now (``_told``), and a Pending or Rejected set on
        # another instance must not wait for its announcement. Starts are rare.
        station = await self._require_station(cp_id, fresh=True)
        # A start stamped far in our future (a clock glitch: 2099) would date the session
        # there, out of every list and day it belongs to: it started on arrival, as an
        # unbelievable stop or status report is taken. Its retries then carry the same
        # glitch but no longer the same start: they are told apart by tag and meter.
        # So is one stamped before any OCPP 1.6 charger existed (a clock never set: 1970):
        # dated there, the session lasted 56 years, or its energy and its count went
        # into 1970's analytics while its payment went into today's (QA s26). Its
        # stamp is kept (``Session.reported_start``), which a resend repeats.
        reported = start if start < NEVER_SET_BEFORE else None
        glitch = not self.clocks.believable(start)
        if glitch:
            start = self.clocks.charger_now(cp_id)
        if reported is not None:
            log.warning("%s: StartTransaction stamped %s, before any OCPP 1.6 charger's "
                        "time (its clock is not set): the session is dated on its arrival, "
                        "%s", cp_id, rfc3339(reported), rfc3339(start))
        # Asked before the start is observed: a queue flushed first on a connection
        # sets the charger's clock (``ChargerClocks.queued``).
        replayed = not glitch and reported is None and self.clocks.replayed(cp_id, start)
        await self._clock_report(station, start)
        presented = id_tag.strip().upper()  # authorized as presented, as Authorize does
        tag = v.stored_id_tag(id_tag)
        company_id, station_owner_id = books_of(station)
        behind = reported is not None \
            or self.clocks.behind_at(cp_id, start, station.created_at)
        identity = _StartIdentity(tag, start, meter_start, glitch, behind, reported,
                                  station.booted_at, replayed and not behind)
        for attempt in range(1, START_ATTEMPTS + 1):
            # A clock never set: its copy of the same stamp, open or closed by its stop
            # (open and since the last boot only, for a stuck stamp); another glitch:
            # its open copy; else the copy stamped the same.
            same = await self.store.find_one(Session, all_of(
                Eq("cp_id", cp_id), Eq("connector_id", connector_id), Eq("id_tag", tag),
                self._never_set_copies(identity) if reported is not None
                else Eq("state", SessionState.ACTIVE) if glitch else Eq("start_time", start),
                Eq("meter_start_wh", meter_start)))
            if same is not None and identity.matches(same, self.now()):
                if same.state is not SessionState.ACTIVE:
                    # Closed: answered as it was, never judged again nor rewritten (review
                    # r26-robust4: a paid session's card blocked since was recorded
                    # start_refused, its charge read as refused).
                    return same.transaction_id, _told(station,
                                                      await self._recorded_answer(same))
                info = await self._resent(station, same, presented, identity)
                return same.transaction_id, _told(station, info)
            # Whether the plug was free before the session takes it: a charger going
            # from Available straight to StartTransaction says nothing the map hears.
            were_free = await self.plugs_free(station.id, connector_id)
            try:
                opened = await self._open_session(
                    station, connector_id, presented, identity, reservation_id, company_id,
                    station_owner_id)
            except Conflict:
                # Another socket's copy of this very start (a charger retrying on a second
                # connection, to another instance) or a stop won the race for the
                # connector: read again, once, and answer as the winner's copy. Or the
                # station (its connector) was removed meanwhile, on another instance
                # maybe: the write's guards refused it whole, and its charger is told
                # what any charger of an unknown charge point is (it is hung up on). Or
                # another start of the same card took it meanwhile (``_open_session``'s
                # card guard): read again, this one is told ConcurrentTx. Or, on
                # MongoDB, two starts of the card met each other's write in flight and
                # both were rolled back: each reads again after a pause of its own
                # (``pause_to_retry``), so they no longer meet.
                station = await self._still_registered(cp_id)
                company_id, station_owner_id = books_of(station)
                identity = identity._replace(booted=station.booted_at)
                if attempt == START_ATTEMPTS:
                    raise
                await self.pause_to_retry(attempt)
                continue
            if isinstance(opened, Session):  # the copy committed while we waited
                info = await self._resent(station, opened, presented, identity)
                return opened.transaction_id, _told(station, info)
            session, ended, used, repriced, info = opened
            break
        for now in await self.landed([used] if used is not None else []):
            await self.publish(reservation_changed(now, station))  # if its guard held
        self.cache.remember(session)
        for old in ended:
            await self._announce_end(station, old)
        # A lost session's close corrected by this start (``_lost_cut_by_start``): the
        # payment it repriced or voided, as a stop's correction announces it.
        for payment in repriced:
            await self.publish(payment_changed(payment, reprice_change(payment)))
        await self.publish(self._session_event(station, session, "STARTED"))
        if were_free:  # else taken before, and taken still: nothing changed
            await self.plugs_held(owned_by(station), connector_id, were_free)
        return session.transaction_id, _told(station, info)

    @staticmethod
    def _never_set_copies(identity: _StartIdentity) -> Filter:
        """Where the copies of a start stamped by a clock never set are looked for
        (``_StartIdentity.matches``, which has the last word): open ones recorded since
        the last boot for a stuck stamp, else open or closed by their stop. Only for a
        start so stamped (``reported`` set)."""
        stamp = identity.reported
        assert stamp is not None
        return all_of(
            Eq("state", SessionState.ACTIVE) if identity.stuck
            else Eq("closed_without_stop", False),
            started_as_reported(stamp),
            Range("created_at", gte=identity.booted)
            if identity.stuck and identity.booted is not None else None)

    async def pause_to_retry(self, attempt: int) -> None:
        """The pause before a start's write that met a change is tried again: random, up
        to ``START_RETRY_PAUSE`` times ``attempt``; the one pause of a charger's records
        (a disconnect's and a stop's Finishing too: ``retried``'s ``pause``), an
        auto-registration's and ``createStation``'s (``StationService.pause_to_retry``,
        wired by ``Services``). MongoDB's
        guard is no lock (``Guard``): two starts of one card on two instances, each
        writing its session and then reading for another, can each meet the other's
        write in flight, both be rolled back, read again together and meet again; in
        step, all their attempts failed, both chargers answered an error and no session
        written (review r26-tx2). Each waiting its own random while, one writes before
        the other reads, and the other is told ConcurrentTx. SQLite's guard is part of
        the write: a start that met one reads a session that stays, and is told at once
        after the pause."""
        await asyncio.sleep(self.retry_jitter() * attempt
                            * START_RETRY_PAUSE.total_seconds())

    async def _still_registered(self, cp_id: str) -> Station:
        """The station as stored now (not as cached), or ``_unknown`` when it is gone."""
        self.cache.drop_station(cp_id)
        return await self._require_station(cp_id)

    async def start_answered(self, cp_id: str) -> None:
        """The charger has been told its StartTransaction's answer (the OCPP bridge calls
        this after writing it): what waits for the transaction to be known at the charger
        (``on_start_answered``) may now address it."""
        await self._tell_listeners(cp_id, self.on_start_answered, "answered start")

    async def boot_accepted(self, cp_id: str) -> None:
        """The charger has been told its BootNotification was Accepted (the OCPP bridge
        calls this after writing the answer): it may now be addressed as a booted
        charger (``on_boot_accepted``)."""
        await self._tell_listeners(cp_id, self.on_boot_accepted, "accepted boot")

    async def _tell_listeners(self, cp_id: str, listeners: list[Callable[[str], None]],
                              what: str) -> None:
        station = await self._require_station(cp_id)
        for listener in listeners:
            try:
                listener(station.id)
            except Exception:  # the message stands, answered; the next trigger recomputes
                log.exception("a listener of %s's %s failed", cp_id, what)

    async def _resent(self, station: Station, session: Session, presented: str,
                      identity: _StartIdentity) -> IdTagInfo:
        """The answer to a start whose session a copy of it wrote (``session``): judged as
        its first copy was. One accepted then is held up only by earlier transactions
        still holding the card: a later one of the same card (tapped on another connector
        while this answer was lost, told ConcurrentTx) must not make the resend
        ConcurrentTx too, the charger stopping the very transaction it was charging,
        recorded as refused and billed nothing (QA s26). One refused then stays refused
        while any other session holds the card (the one accepted in its place may have
        drawn a higher id, ``_open_session``), and is accepted once none does: its write
        then takes the card only while no other session holds it (``_card_free``). One
        whose write met another session of the card reads again (after a pause,
        ``pause_to_retry``) before it is answered: on MongoDB the other may have met
        this write as well and been rolled back, and the card be free (review r26-tx2:
        it was told ConcurrentTx at once, the charger stopping what it charged while no
        session held the card). Told ConcurrentTx when its last attempt still met one.
        One refused whose card as read now is not the one it was judged on (another
        holder's: a tag refused Invalid issued since, or issued again to another
        driver) is answered as recorded at once, that card not judged at all, whatever
        its status: Accepted, its write's guard (``_answered``) could never hold, and it
        was tried three times and told ConcurrentTx while no transaction held the card
        (review r27-accounts3); else the charger was told another driver's card's
        status, Blocked for an Invalid start (review r27-accounts4). So is one refused
        because its plug was reserved for another card (``_refused_for_the_plug``):
        judged on its card alone, it was told Accepted. One refused for another reason
        (ConcurrentTx, Blocked) on a plug that a live reservation holds for another card
        (``_plug_reservations``, judged as its first copy was) is told Invalid where its
        card alone would accept it, its refusal kept as recorded (review r33: the first
        copy's check turned only an Accepted into Invalid, and a resend after the card's
        other session stopped was Accepted, billed, on the reserved plug).
        One whose card is on record no more is judged (Invalid): no one else's status
        is told. ``identity.replayed``: the copy came from an offline queue
        (``_StartIdentity.replayed``, the clocks' verdict now). A copy of one recorded
        Accepted (billed) is judged a replayed start when either the clocks say so now
        or its session does (``_recorded_as_replay``: it arrived long after its time,
        its clock not behind):
        its first copy may have been judged late by a verdict neither records, the
        charger's clock known then (a clock 3 min ahead, a start 4 min old on it), or one
        another process knows not; its resend, judged live by the other, was told
        ConcurrentTx because of a session of the card begun after it, the session
        rewritten refused and billed nothing (reviews r32-a, r32-d). A replayed start's
        refusal never sticks (``_refusal``), so either verdict keeps a billed session
        billed. A copy of one recorded refused is judged replayed only when both say so:
        its refusal stands until its card is free."""
        recorded = _recorded_as_replay(session)
        replayed = (identity.replayed or recorded) if session.start_refused is None \
            else identity.replayed and recorded
        for attempt in range(1, START_ATTEMPTS + 1):
            card = await self.store.find_one(IdTag, Eq("tag", presented))
            if session.start_refused is not None and card is not None and (
                    card.user_id != session.user_id or _refused_for_the_plug(session)):
                return recorded_answer(session)
            info = await self.authorize_start(
                station.cp_id, presented, (session.id,),
                before=session.transaction_id if session.start_refused is None else None,
                card=(card,), begun_by=session.start_time if replayed else None)
            if info.status == "Accepted" and session.start_refused is not None \
                    and not replayed and (await self._plug_reservations(
                        station, session.connector_id, presented, card,
                        identity._replace(replayed=False), keeps=False))[1] is not None:
                info = IdTagInfo("Invalid")  # as a first copy's live start (``_open_session``)
            answered = await self._answered(station, session, info, replayed, card)
            if answered is not None:
                return answered[1]
            if attempt < START_ATTEMPTS:
                await self.pause_to_retry(attempt)
            # As it stands now: its stop, an operator's endSession or its holder's
            # erasure may have closed it meanwhile, and a closed one is answered as
            # recorded, as any copy of a closed session's start is; after the last
            # attempt too (review r27-accounts2: one refused Blocked, closed as its
            # last write was tried, was told ConcurrentTx).
            [fresh] = await self.store.get_many(Session, [session.id])
            session = fresh or session
            if session.state is not SessionState.ACTIVE:
                return await self._recorded_answer(session)
        return IdTagInfo("ConcurrentTx", info.expiry_date, info.parent_id_tag)

    async def _refusal(self, station: Station, session: Session, info: IdTagInfo,
                       replayed: bool, card: IdTag | None) -> str | None:
        """What ``session.start_refused`` becomes when its start is answered ``info``
        (``_answered``) on ``card`` as read; ``replayed``: the start came from an offline
        queue (``_StartIdentity.replayed``): it charged before it could be told, and is
        billed whatever it is told now, unless its card was already barred at its time
        (``barred_by``; its owner read here, only for such a start)."""
        if info.status == "Accepted":
            return None
        if session.start_refused is not None:
            return session.start_refused  # refused again (a retry): the refusal stands
        if not replayed:
            return info.status
        # ``replayed`` excludes a clock known behind ours (``_StartIdentity``,
        # ``_recorded_as_replay``: ``start_clock_behind``), whose live start is stamped
        # hours ago; for a resend of a start recorded Accepted, only from both verdicts
        # (``_resent``), which keeps it billed.
        [owner] = [None] if card is None else await self.store.get_many(User, [card.user_id])
        late = not barred_by(card, owner, session.start_time)
        if late:
            log.info("%s: transaction %s, queued offline, is told %s now and billed: it "
                     "charged before it could be told", station.cp_id,
                     session.transaction_id, info.status)
        return None if late else info.status

    async def _answered(self, station: Station, session: Session, info: IdTagInfo,
                        replayed: bool, card: IdTag | None = None
                        ) -> tuple[Session, IdTagInfo] | None:
        """Records on ``session`` the answer its start got when it refused a start the
        charger could still act on (``Session.start_refused``: priced by no tariff): its
        card's status (``info``), also where the charger was told ``WITHHELD`` (a
        station not Accepted now: a valid card's session it started anyway is billed), and
        clears it when a retry of that start was told Accepted (the charger charges on
        that answer). A start its charger sent long after its timestamp (flushed from an
        offline queue) charged before it was asked: billed whatever it is told now (its
        card expired since, or is busy elsewhere by then). Written only when it changes:
        an accepted start writes nothing more. A refused session accepted now takes the
        card: only while no other session holds it (``_card_free``), else nothing is
        written and ``None`` returned (``_resent`` reads again).

        Written only onto the session as judged: still open and refused (or accepted) as
        read. Cleared only while its holder is not erased (``not_erased``) and its card
        is still on record: an erasure, or an operator's endSession, closing the refused
        session (or a removal of the card) between the judgement and this write left a
        COMPLETED session made an accepted one, the charger told Accepted for a card
        that was gone, and its stop billed to the erased account (review r27-accounts).
        Accepted onto the card as judged (``card``, the one ``info`` was given on): only
        while it is unchanged (its ``updated_at``) and, live, its holder still active, as
        a first start's is; guarded on
        its tag and holder alone, a block landing between the judgement and the write
        was told Accepted, a billed session holding a blocked card (review r28).
        When a guard trips nothing is written and ``None`` returned: ``_resent`` reads
        again, and answers a closed session as recorded (refused)."""
        refused = await self._refusal(station, session, info, replayed, card)
        if refused == session.start_refused:
            return session, info
        if session.state is not SessionState.ACTIVE:
            return None  # closed since it was read: answered as recorded (``_resent``)
        actor = charger(station.cp_id)
        change = replace(patch(session, actor, only_if=("state", SessionState.ACTIVE),
                               required=True, start_refused=refused),
                         also_if=(("start_refused", session.start_refused),))
        guards: list[Guard] = []
        if refused is None:  # it takes the card
            guards.append(self._card_free(session, replayed))
            # Its card still on record, and still its holder's: the tag text alone let
            # a removed tag issued again to another driver accept the resend against
            # their card, billed to the first (review r27-accounts2). The session keeps
            # no card id (the holder stands in for it): a tag issued again to the same
            # driver is theirs, and accepts it.
            guards.append(Guard(IdTag, all_of(Eq("tag", session.id_tag),
                                              Eq("user_id", session.user_id))))
            if card is not None:
                guards.append(self._card_unchanged(card))
            if session.user_id is not None:
                # Live, its holder still active as judged, as a first start's
                # (``_open_session``); a replay judged by the deactivation's time.
                guards.append(not_erased(session.user_id) if replayed
                              else still_active(session.user_id))
        try:
            await self.commit(actor, [(change, session)], guards=guards)
        except Conflict:
            return None
        return cast(Session, change.record), info

    @staticmethod
    def _card_free(session: Session, replayed: bool) -> Guard:
        """The guard of a write that makes ``session`` hold its card (``holding_card``):
        no other session holds it, as the store stands with the write. Two starts of one
        card at once (two chargers, two instances) each judged the card before the
        other's session was written, and both were Accepted (review r26): the write of
        the second to land fails, and its start reads again and is told ConcurrentTx.
        SQLite checks it inside the write; MongoDB after its own write (each side writes
        first and reads second: at least one of two meets the other, ``Guard``).
        ``replayed``: a start from an offline queue, judged by the sessions begun by its
        time (``holding_card``)."""
        others = any_of(Range("transaction_id", lt=session.transaction_id),
                        Range("transaction_id", gt=session.transaction_id))
        begun_by = session.start_time if replayed else None
        return Guard(Session, all_of(holding_card(session.id_tag, begun_by), others),
                     exists=False)

    @staticmethod
    def _card_unchanged(card: IdTag) -> Guard:
        """The guard of a write judged on ``card`` as read: it still stands as it was (its
        ``updated_at``), neither removed nor edited (blocked, expired) meanwhile."""
        return Guard(IdTag, all_of(Eq("id", card.id), Eq("updated_at", card.updated_at)))

    async def _open_session(self, station: Station, connector_id: int, presented: str,
                            identity: _StartIdentity, reservation_id: int | None,
                            company_id: str | None, station_owner_id: str | None
                            ) -> Session | tuple[Session, list[Session], Reservation | None,
                                                 list[Payment], IdTagInfo]:
        """Writes a new session, closing those its connector still has open from before
        it (their stops were lost) and using its reservation; or returns the open session
        if it is this very start, committed by another socket while the transaction id was
        drawn. A session open since later than this start, by clock and meter, stays
        open: this is an older transaction the charger flushed late, written as ended and
        awaiting its stop (``COMPLETED`` without a stop reason, ``awaits_stop``), which
        follows it. Its card is judged on the store as read just before the write
        (``authorize_start``), the answer recorded with it (``_answered``), and an
        Accepted one written only while no other session holds the card (``_card_free``):
        of two starts of one card at once the one written second is told ConcurrentTx,
        whatever the timing, on any instance. The sessions this start closes (their stops
        were lost) hold the card no longer: never ConcurrentTx because of them."""
        cp_id = station.cp_id
        tag, start, meter_start = identity.tag, identity.start, identity.meter_start
        id_tag_record = await self.store.find_one(IdTag, Eq("tag", presented))
        # The remote start this one carries out, if any: its car (a driver's choice) is
        # the session's, and it holds the card and plug no longer (``PendingStart``).
        pending = started_by(await self.store.find_all(PendingStart, all_of(
            Eq("id_tag", tag), Eq("cp_id", cp_id), live_pending_starts(self.now())),
            limit=5), connector_id, station)
        actor = charger(cp_id)
        # One we never issued (``issued_id``) is unknown, as any other we do not hold.
        reservation = None if reservation_id is None or not issued_id(reservation_id) \
            else await self.store.find_one(Reservation, all_of(
                Eq("station_id", station.id), Eq("reservation_id", reservation_id)))
        if reservation is not None and (
                reservation.state_at(identity.started_by(self.now())) is ReservationState.EXPIRED
                or not await self._reserved_for(reservation, connector_id, presented,
                                                id_tag_record)):
            # Another card's, or another connector's: it goes on holding the plug for
            # whom it was made, and the session is not its (1.6, 5.13). Past its expiry
            # when the start happened (``_StartIdentity.started_by``: a start queued
            # offline before the expiry and flushed after it used it in time) it is
            # over: it stays EXPIRED, not USED by a start its charger let through late.
            reservation_id, reservation = None, None
        held = None
        if reservation is None or reservation.connector_id != connector_id:
            kept, held = await self._plug_reservations(
                station, connector_id, presented, id_tag_record, identity,
                keeps=reservation is None)
            if reservation is None:
                reservation = kept
                reservation_id = kept.reservation_id if kept else None
        if reservation is not None and reservation.connector_id == connector_id:
            held = None  # its card's reservation of this very plug: none other holds it
        if held is not None:
            # The plug was another card's (1.6, 5.13): this start takes up none of its
            # card's reservations (one on connector 0 waits for a free plug).
            reservation_id, reservation = None, None
        plug, is_new = await self._connector(station, connector_id)
        session = stamp_new(Session(
            transaction_id=await self.store.next_sequence("transaction"),
            station_id=station.id, cp_id=cp_id, connector_id=connector_id, id_tag=tag,
            start_time=start, meter_start_wh=meter_start,
            user_id=id_tag_record.user_id if id_tag_record else None,
            vehicle_id=await self._car_started(pending, id_tag_record),
            reservation_id=reservation_id, company_id=company_id,
            station_owner_id=station_owner_id,
            # The plug it was started on is priced (a DC tariff), not the one the
            # connector is edited to later; none for a plug not on record.
            connector_type=None if is_new else plug.type,
            start_clock_behind=identity.clock_behind, reported_start=identity.reported,
        ), actor, self.now())  # on the service's clock, as every "now" it is compared with
        changes: list[tuple[Change, Any]] = []
        if is_new:
            # A plug we did not know (within the cap reports may register): recorded as a
            # status report would, so the session has a connector on the map and in lists.
            changes.append((Insert(plug), None))
        open_here = await self.store.find_all(Session, all_of(
            Eq("cp_id", cp_id), Eq("connector_id", connector_id),
            Eq("state", SessionState.ACTIVE)), limit=MAX_OPEN_PER_CONNECTOR)
        now = self.now()
        for other in open_here:
            if identity.matches(other, now) or (identity.may_resend(other, now)
                                                 and not await self._its_own(other)):
                return other
        ended: list[Session] = []
        newer = [s for s in open_here if identity.flushed_before(s)]
        if newer:
            # Over before the open session began, so not active (a connector charges one
            # at a time): it waits for its stop, which prices it as any other.
            session = replace(session, state=SessionState.COMPLETED, end_time=start)
        # A session open on this connector since before this start lost its
        # StopTransaction: closed first, so the connector never has two active sessions.
        samples: list[Change] = []
        for stale in (s for s in open_here if s not in newer):
            closed, closing, settled = await self._closed_by_start(station, stale, identity)
            changes += closing
            samples += settled
            ended.append(closed)
        if not open_here:
            cut, closing, settled = await self._lost_cut_by_start(station, connector_id,
                                                                  identity)
            changes += closing
            samples += settled
            ended += [] if cut is None else [cut]
        used = None
        if reservation is not None and reservation.state in LIVE_RESERVATION_STATES:
            # From the state read: a cancel or a removal that ended it meanwhile
            # stands (the session starts anyway, as the charger decided).
            use = patch(reservation, actor, only_if=("state", reservation.state),
                        state=ReservationState.USED)
            used = cast(Reservation, use.record)
            changes.append((use, reservation))
        elif held is not None and identity.replayed \
                and held.state_at(self.now()) is not ReservationState.EXPIRED:
            # Replayed from an offline queue: the plug was taken, charged and billed
            # before anyone could refuse it; the reservation can no longer be used, and
            # left live it would keep its driver from reserving elsewhere until it
            # expired. Cancelled, its driver told (``reservationChanged``). One past its
            # expiry by now is over already: left to the expiry sweep to store EXPIRED
            # (review r33: it was CANCELLED, its driver told a cancellation).
            log.info("%s: transaction stamped %s, replayed from the offline queue, took "
                     "connector %s reserved for another card; reservation %s cancelled",
                     cp_id, rfc3339(start), connector_id, held.reservation_id)
            end = patch(held, actor, only_if=("state", held.state),
                        state=ReservationState.CANCELLED)
            used = cast(Reservation, end.record)
            changes.append((end, held))
        # Judged on the card as read above, the one the session is written with (its
        # holder, its car): read again here, a card issued in between was Accepted onto
        # a session of no one's, which its removal did not see (review r27-accounts3).
        # Its expiryDate counted from the session's own moment: a resend once it is
        # closed is told the same (``_recorded_answer``).
        info = await self.authorize_start(cp_id, presented, [o.id for o in ended],
                                          card=(id_tag_record,), at=session.created_at,
                                          begun_by=identity.begun_by)
        if held is not None and not identity.replayed and info.status == "Accepted":
            info = IdTagInfo("Invalid")  # a live start the charger can still call off
        session = replace(session, start_refused=await self._refusal(
            station, session, info, identity.replayed, id_tag_record))
        accepted = info.status == "Accepted" and session.state is SessionState.ACTIVE
        # Its holder still active, as judged, for a live one Accepted: a deactivation
        # leaves the card's record as it was, so the card's guard below does not see one
        # landing between the read and this write (session 33: answered Accepted). A
        # replayed start is judged by the deactivation's time (``barred_by``), read
        # again it may still be Accepted: not guarded so, or it would trip again.
        guards = self._start_guards(station, plug, is_new, id_tag_record,
                                    active=accepted and not identity.replayed)
        if id_tag_record is None:
            # None on record as read: a card issued meanwhile fails the write, and the
            # start reads again and is judged on it.
            guards.append(Guard(IdTag, Eq("tag", presented), exists=False))
        elif accepted:
            guards.append(self._card_free(session, identity.replayed))
            # Accepted on the card read: only while it is still on record, unchanged
            # (its ``updated_at``). A removal landing between that read and this write
            # left an ACTIVE session billed on a card that was gone (review
            # r27-accounts2), a block (or an expiry moved into the past) one holding a
            # blocked card, the charger told Accepted (review r27-accounts4); refused,
            # the start reads again and is judged on the card as it is now. The
            # removal is guarded the other way (``FleetService._remove_id_tag``: no
            # session holding the card).
            guards.append(self._card_unchanged(id_tag_record))
        changes.append((Insert(session), None))
        consumed = [settle(pending, actor, now)] if pending is not None else []
        await self.commit(actor, changes, unaudited=[*samples, *consumed], guards=guards)
        return session, ended, used, updated_payments(changes), info

    @staticmethod
    def _start_guards(station: Station, plug: Connector, is_new: bool,
                      card: IdTag | None, *, active: bool) -> list[Guard]:
        """A session is written only while its station, and the connector it was read
        with, are there: ``station`` may be a cached copy, and a removal on another
        instance may land between the reads and this write (QA s21: a session ACTIVE on
        a station that no longer existed held its card for good). The removal is
        guarded the other way (``stations.not_charging``). A plug new here is inserted
        by the write itself (its unique rule refuses a second). A session of a card's
        holder only while they are not erased: an erasure landing after the card was
        read left an ACTIVE session on the erased account (review s22); refused, the
        start reads again, finds the card gone and is a session of no one's. The
        erasure is guarded the other way (no ACTIVE session of theirs). ``active``: and
        while they are still active (``still_active``, which includes the former). And
        only while
        the station is still in the books the session is written to (``books_of``): a
        handover landing between the start's read and this write left a session that
        began on the new company's station in the books of the company that had left
        it, priced by its tariff (QA s26); refused, the start reads the station again
        and books it to the company that has it."""
        guards = [still_in_books(station)]
        if not is_new:
            guards.append(Guard(Connector, Eq("id", plug.id)))
        if card is not None:
            guards.append(still_active(card.user_id) if active else not_erased(card.user_id))
        return guards

    async def _car_started(self, pending: PendingStart | None, card: IdTag | None
                           ) -> str | None:
        """The car a new session is booked to: the one its remote start was for
        (``pending``) while it is still the card holder's and kept, else the card's car.
        The car may have been removed or handed over since the start was sent (review of
        1c05ebe: the session was booked to a removed car, or to another driver's)."""
        if pending is not None and pending.vehicle_id and card is not None \
                and card.user_id is not None:
            kept = await self.store.find_one(Vehicle, all_of(
                Eq("id", pending.vehicle_id), Eq("owner_id", card.user_id), IN_GARAGE))
            if kept is not None:
                return kept.id
        return card.vehicle_id if card is not None else None

    async def _closed_by_start(self, station: Station, stale: Session,
                               identity: _StartIdentity
                               ) -> tuple[Session, list[tuple[Change, Any]], list[Change]]:
        """``stale``, open on the connector since before the newer start ``identity``,
        closed as one whose StopTransaction was lost: the closed session, its changes,
        and the samples the close writes or lowers (unaudited, as a stop's are). When
        that start's meterStart lies below its readings on the same register
        (``metering.cut_at_next_start``), it ends there: its increments above it are
        taken back as a stop's are (``_settled_close``) and it is flagged
        ``NEXT_START_BELOW_READINGS`` (QA s21: billed to its last reading, the newer
        from its meterStart, the energy between twice)."""
        actor = charger(station.cp_id)
        # At its charger's first boot since it was recorded, else at the latest boot.
        end = end_without_stop(stale, stale.first_boot_at or station.booted_at,
                               min(identity.start, self.now()))
        register = cut_at_next_start(stale, identity.meter_start,
                                     await self._own_register(stale))
        if register is None:
            closed, changes = await self._close(station, stale, None, end,
                                                CLOSED_WITHOUT_STOP, actor)
            return closed, changes, []
        return await self._cut_close(station, stale, register, end)

    async def _cut_close(self, station: Station, session: Session, register: int,
                         end: datetime
                         ) -> tuple[Session, list[tuple[Change, Any]], list[Change]]:
        """``session`` closed (or its close without a stop corrected) at ``register``, a
        newer start's meterStart below its readings (``metering.cut_at_next_start``):
        its increments above it taken back as a stop's are (``_settled_close``), flagged
        ``NEXT_START_BELOW_READINGS``."""
        energy = register - session.meter_start_wh
        log.warning("%s: transaction %s, closed without its stop, read %s Wh, above the "
                    "meterStart %s Wh of a newer start on its connector: billed up to it "
                    "(%s Wh, not %s), the rest being the newer transaction's; flagged for "
                    "review", session.cp_id, session.transaction_id,
                    session.meter_start_wh + session.energy_wh, register, energy,
                    session.energy_wh)
        samples, trimmed = await self._settled_close(
            station, session, [], energy, register, max(end, session.start_time))
        closed, changes = await self._close(
            station, session, None, end, CLOSED_WITHOUT_STOP, charger(station.cp_id),
            energy_wh=energy,
            metered=[*samples, *(cast(MeterSample, u.record) for u in trimmed)],
            meter={"meter_anomaly": MeterAnomaly.NEXT_START_BELOW_READINGS})
        return closed, changes, [*trimmed, *(InsertIfAbsent(s) for s in samples)]

    async def _lost_cut_by_start(self, station: Station, connector_id: int,
                                 identity: _StartIdentity
                                 ) -> tuple[Session | None, list[tuple[Change, Any]],
                                            list[Change]]:
        """The cut of ``_closed_by_start`` for the connector's last session when it was
        closed without its stop before this start came (a reboot check, an operator's
        ``endSession``): its close is corrected at the newer meterStart, keeping its
        end (review s21: closed at reboot first, it kept its full readings and the
        energy between was billed twice)."""
        # Of this station: a cpId given to a new station after the old one was removed
        # starts with none (review s21: the old station's session was repriced by the
        # new one's tariff).
        found = await self.store.find_all(Session, all_of(
            Eq("station_id", station.id), Eq("connector_id", connector_id)),
            sort=[Sort("start_time", descending=True)], limit=1)
        last = found[0] if found else None
        if last is None or last.state is not SessionState.COMPLETED \
                or not closed_without_stop(last) or last.end_time is None \
                or last.start_time > identity.start \
                or last.meter_anomaly is MeterAnomaly.NEXT_START_BELOW_READINGS:
            return None, [], []
        register = cut_at_next_start(last, identity.meter_start,
                                     await self._own_register(last))
        if register is None:
            return None, [], []
        return await self._cut_close(station, last, register, last.end_time)

    async def _own_register(self, session: Session) -> float | None:
        """The session's latest energy register reading (Wh) that named its transaction,
        ``None`` when none did (``metering.cut_at_next_start``)."""
        latest = await self.store.find_all(MeterSample, all_of(
            Eq("session_id", session.id), Eq("transaction_id", session.transaction_id),
            Eq("measurand", ENERGY_REGISTER), Eq("phase", None)),
            sort=[Sort("at", descending=True)], limit=1)
        return to_wh(latest[0].value, latest[0].unit) if latest else None

    async def _its_own(self, session: Session) -> bool:
        """Whether what was metered since ``session`` opened proves it a transaction of
        its own, no first copy of a start resent: a sample naming its transactionId (the
        charger had its answer; a reading that moved nothing, a signed-off
        Transaction.Begin, is one). A reading without a transactionId (clock-aligned on
        the connector) meters the session open there, but is the plug-in's whichever
        copy the charger holds, and proves nothing (QA s21: it opened a second session,
        its fee billed twice and the first closed as lost), whatever energy it shows: the
        resend's meterStart, within ``RESEND_METER_SLACK_WH`` of the first's, says the
        register stood there when the start was made, before those readings (review
        s21: a DC charger's +400 Wh split the start again). Nor do the power and State
        of Charge such readings set on the session."""
        return await self.store.find_one(MeterSample, all_of(
            Eq("session_id", session.id),
            Eq("transaction_id", session.transaction_id))) is not None

    async def _plug_reservations(self, station: Station, connector_id: int,
                                 presented: str, card: IdTag | None,
                                 identity: _StartIdentity, *, keeps: bool
                                 ) -> tuple[Reservation | None, Reservation | None]:
        """What the live reservations of this start's connector and of the station's
        connector 0 are to it, read once and each judged once (``reserved_for_card``):
        the one it keeps, and the one holding its plug for another card.

        Kept (asked only when ``keeps``): live now, for its card or group, its own
        connector's before connector 0's; the start keeps it though it names none. OCPP
        1.6 has the charger name it (``reservationId``), but chargers that start a
        reserved connector by a remote start or a tap leave it out; the reservation
        stayed ACTIVE through the session, and its driver could reserve nothing else
        until it expired.

        Held: live at the start's time (``_StartIdentity.started_by``), of this very
        connector, for another card: neither its id nor of its group. A live start on it
        is told Invalid, refused and billed nothing (OCPP 1.6, 5.13: the plug is held
        for that card; QA s33: another card was Accepted there, and the reservation
        stayed ACTIVE on a plug charging another session). One on connector 0 holds no
        connector in particular: any free one serves another card. A replayed start
        counts only one made by its time."""
        now = self.now()
        at = identity.started_by(now)  # never after now: those live now are among them
        found = await self.store.find_all(Reservation, all_of(
            Eq("station_id", station.id), In("connector_id", (connector_id, 0)),
            live_reservations(at)), limit=20)
        kept: Reservation | None = None
        held: Reservation | None = None
        for reservation in sorted(found, key=lambda r: r.connector_id, reverse=True):
            may_keep = keeps and kept is None \
                and reservation.state_at(now) is not ReservationState.EXPIRED
            may_hold = held is None and reservation.connector_id == connector_id \
                and (not identity.replayed or reservation.created_at <= at)
            if not (may_keep or may_hold):
                continue  # judged for nothing: its IdTag not read
            if await reserved_for_card(self.store, reservation, presented, card):
                kept = reservation if may_keep else kept
            elif may_hold:
                held = reservation
        return kept, held

    async def _reserved_for(self, reservation: Reservation, connector_id: int,
                            presented: str, card: IdTag | None) -> bool:
        """Whether this start is the one ``reservation`` waits for (OCPP 1.6, 5.13): on
        its connector (any, for connector 0), by its card, or by one whose parentIdTag is
        the reserved id or the reserved card's. A charger may send the reservation's id
        with any start on the station; only this one ends it."""
        if reservation.connector_id not in (0, connector_id):
            return False
        return await reserved_for_card(self.store, reservation, presented, card)

    async def meter_values(self, cp_id: str, connector_id: int, transaction_id: int | None,
                           readings: list[MeterReading]) -> None:
        """Keeps every numeric sample and every signed meter value (also for transactions
        we do not know: they may arrive before their StartTransaction) and updates the
        session's live energy."""
        try:
            await self._meter_values(cp_id, connector_id, transaction_id, readings)
        except Conflict as exc:
            if exc.code != "CHANGED":
                raise
            # The session was ended (endSession, here or on another instance) after this
            # frame read it: written again onto the session as it is now, its samples are
            # history adding nothing, as a repeated stop's are.
            if transaction_id is not None:
                self.cache.drop_session(transaction_id)
            await self._meter_values(cp_id, connector_id, transaction_id, readings,
                                     cached=False)

    async def _meter_values(self, cp_id: str, connector_id: int, transaction_id: int | None,
                            readings: list[MeterReading], *, cached: bool = True) -> None:
        station = await self._require_station(cp_id)
        session = None
        named = transaction_id is not None
        if transaction_id is not None and not issued_id(transaction_id):
            # A transaction we never issued: unknown, its samples kept unlinked with no
            # transaction id (there is none of ours to keep), not looked up.
            transaction_id = None
        if transaction_id is not None:
            session = self.cache.session(transaction_id) if cached else None
            if session is None:
                session = await self.store.find_one(Session,
                                                    Eq("transaction_id", transaction_id))
                if session is not None:
                    self.cache.remember(session)  # read afresh: cached from here on
            if session is not None and session.cp_id != cp_id:
                session = None  # another charger's transaction id: keep samples unlinked
        elif connector_id > 0 and not named:
            # transactionId is optional: chargers leave it out of clock-aligned samples.
            # They are the session's on that connector all the same (its live energy, its
            # hours in the trends), not a lump added at its stop.
            newest = await self.store.find_all(Session, all_of(
                Eq("cp_id", cp_id), Eq("connector_id", connector_id),
                Eq("state", SessionState.ACTIVE)), (Sort("start_time", descending=True),),
                limit=1)
            session = newest[0] if newest else None
        rated_kw = await self._rated_kw(station, connector_id) if session is not None \
            else MAX_BELIEVABLE_KW
        register_moved = meters_intervals(readings) and session is not None \
            and session.state is SessionState.ACTIVE and await self._register_moved(session)
        def read(sent: list[MeterReading]
                 ) -> tuple[list[MeterReading], RegisterCount | None, list[MeterSample]]:
            count = register_count(session, rated_kw, register_moved)
            kept = believed(sent, self.clocks.believable, self.now(),
                            session.start_time if session is not None else None)
            return kept, count, samples_of(station, connector_id, transaction_id, session,
                                           kept, count)
        try:
            readings, count, samples = read(readings)
        except (ValidationError, ValueError, OverflowError):
            # A value or a timestamp no meter writes: left out, the rest of the frame kept
            # (``UnreadableValues``; refused when nothing is left), counted afresh. Only
            # then: a clean frame is read once, on the hot path.
            readings, count, samples = read(self.unreadable.kept(cp_id, readings))
        if readings:
            # After ``_samples`` checked every timestamp: a refused frame must not move it.
            # As sent: a stamp beyond belief is ignored there, where our own clock put
            # in its place would be taken for the charger's (review s17).
            await self._clock_report(station, max(as_utc(r.sent_at) for r in readings))
        # Signed meter values (OCMF…) are no numbers: records of their own, in the same
        # group commit as the samples.
        signed = signed_values_of(station, connector_id, transaction_id, session, readings)
        # What the frame adds, before its late readings take their shares: those are
        # moved from stored samples, not added.
        added = added_wh(samples)
        shares = await self._late_shares(session, samples, count) \
            if session is not None and count is not None and count.late else {}
        changes: list[Change] = [InsertIfAbsent(s) for s in (*samples, *signed)]
        changes += given_up(shares, charger(cp_id))
        updated = None
        if transaction_id is not None and session is not None:
            self._still_metered(session, transaction_id)
        if session is not None and session.state is SessionState.ACTIVE:
            live = live_patch(session, readings, added, charger(cp_id),
                              self.clocks.believable, count,
                              named_at=self._named_since_boot(station, session)
                              if transaction_id is not None else None)
            if live is not None:
                changes.append(live)
                updated = cast(Session, live.record)
        if shares and session is not None:
            # A late frame (rare): on its own, not in the group commit, guarded as a
            # whole: increments moved onto a session closed meanwhile would no longer add
            # up to its billed energy (``Conflict``: read again, it moves nothing).
            await self.store.write(changes, [], [Guard(Session, all_of(
                Eq("id", session.id), Eq("state", SessionState.ACTIVE)))])
        else:
            await self.telemetry.write(changes)
        if session is not None and session.state is SessionState.ACTIVE:
            self.cache.patched(session, updated or session)
        if updated is not None:
            await self.session_updates.offer(
                updated.id, cp_id, partial(self._session_event, station, updated, "UPDATED"))

    def _named_since_boot(self, station: Station, session: Session) -> datetime | None:
        """"Now", when a frame naming ``session`` is the first to since its charger's
        latest boot and the session was recorded before that boot: its charger still has
        the transaction, which the reboot's check must not close as lost
        (``Session.named_at``). ``None`` otherwise, so this costs a write once per boot,
        not one per frame. The frame's arrival decides, not its readings' timestamps:
        on a clock set at the boot (BootNotification's currentTime) a charger running a
        few minutes ahead stamps its live readings before what it sent earlier, and
        neither the charger's tracked clock nor a restarted process tells them from
        readings queued before the boot (review s20, which reverted such a rule). The
        price: a charger that lost the transaction and flushes queued meter values of it
        after its boot, without its StopTransaction, keeps it open until its stop or an
        operator's endSession."""
        booted = station.booted_at
        # Likewise since the restore that brought it back open: its charger still has
        # it (``_close_open_at_restore``).
        doubted = [t for t in (booted if booted is not None and session.created_at < booted
                               else None, session.open_at_restore) if t is not None]
        if not doubted:
            return None  # no boot nor restore since it was recorded: nothing to close
        if session.named_at is not None and session.named_at >= max(doubted):
            return None  # named since then already
        return self.now()

    def _still_metered(self, session: Session, transaction_id: int) -> None:
        """A frame naming a transaction closed without its stop (as lost at a reboot,
        by a newer start or by an operator) while its charger still meters it: its
        samples are kept as the session's history, adding nothing to its energy (its
        stop, when it comes, corrects the close with the real meterStop). Logged once
        per session and process, so an operator learns the close was wrong instead of
        the frames vanishing silently."""
        if not closed_without_stop(session) \
                or not first_noted(self._metered_after_close, session.id):
            return
        log.warning("%s: transaction %s, closed without its stop by %s, is still metered "
                    "by its charger: its meter values are kept as history, adding "
                    "nothing until its StopTransaction corrects the close; end it at the "
                    "charger or check the close", session.cp_id, transaction_id,
                    session.updated_by)

    async def stop_transaction(self, cp_id: str, transaction_id: int, meter_stop: int,
                               timestamp: datetime, *, reason: str | None = None,
                               id_tag: str | None = None,
                               readings: list[MeterReading] | None = None
                               ) -> IdTagInfo | None:
        """Closes the session, prices it with the tariff in force at its start and opens a
        PENDING payment. A repeated stop changes nothing. The stop of a session closed
        without it (``closed_without_stop``: as lost, or by an operator) corrects that
        close (``_stop``)."""
        # No v.meter_register here: a meterStop no register can read (-1 from firmware
        # whose meter did not answer, a number beyond any meter) is no reason to refuse
        # the stop, which left the session ACTIVE and its driver's card held once the
        # charger gave up resending it (QA s26). ``_stop`` bills it as one below its
        # start: what was metered, flagged.
        end = v.instant(as_utc(timestamp), "timestamp")
        station = await self._require_station(cp_id)
        readings = sound(readings or [], cp_id, transaction_id)
        # A station not Accepted (now) has no card checked, by its stop either: the
        # answer leaves idTagInfo out (optional in 1.6), as for a stop without an idTag.
        info = await self.authorize(cp_id, id_tag) \
            if id_tag and station.registration is Registration.ACCEPTED else None
        session = await self._transaction(cp_id, transaction_id)
        readings = believed(readings, self.clocks.believable, self.now(),
                            session.start_time if session is not None else None)
        if session is not None and not stoppable(session) \
                and not _admitted(station, "StopTransaction"):
            # A charger not admitted resending a stop already taken (``_on_record``):
            # answered as a repeat, but its readings are a completed session's, which
            # it may not send (its MeterValues of one are refused): none kept (session
            # 33: a resend's new transactionData was stored). An admitted charger's are
            # kept as history, as its MeterValues of a completed session are.
            readings = []
        # What its records keep: none for an id we never issued (``issued_id``).
        kept_id = transaction_id if issued_id(transaction_id) else None
        # The stop's signed meter values (its transactionData: the record of the whole
        # transaction a customer is handed) are evidence as sent, whatever the close
        # makes of the numbers: written first, on their own, idempotent if it is sent
        # again.
        await self.telemetry.write([InsertIfAbsent(s) for s in signed_values_of(
            station, session.connector_id if session else 0, kept_id, session,
            readings)])
        for _ in range(END_ATTEMPTS):
            if session is None or not stoppable(session):
                # A repeated stop; a replayed queue's, naming the transaction first told,
                # closes the phantom its replayed start opened (``_replayed``).
                phantom = None if session is None \
                    else await self._phantom_of(session, meter_stop, end)
                if phantom is None:
                    break
                session = phantom
            try:
                closed, repriced_payments = await self._stop(
                    station, session, meter_stop, end, reason, readings)
            except Conflict:
                # Changed meanwhile: closed by its other copy (answered as a repeated
                # stop), by an operator's endSession (corrected, as any close without
                # its stop), or written by a meter value: read again.
                session = await self._transaction(cp_id, transaction_id)
                continue
            await self._announce_end(station, closed)
            # After the session's corrected figures: the payment they repriced or voided.
            for payment in repriced_payments:
                await self.publish(payment_changed(payment, reprice_change(payment)))
            await self._finish_connector(station, closed)
            return info
        if session is None:
            # Nothing here to close: its start never reached this service, or the
            # database was restored from a backup taken before it (ops QA s23: such a
            # stop was answered and forgotten without a word). Said where operators
            # look; its meter values are kept below, as any unknown transaction's.
            log.warning("%s: StopTransaction of transaction %s, unknown here (its start "
                        "was lost, or the database restored from an older backup), "
                        "not recorded: meterStop %s Wh at %s, idTag %s", cp_id,
                        transaction_id, meter_stop, end.isoformat(), id_tag)
        elif not stoppable(session):
            self._contradicting_repeat(session, meter_stop, end)
        # A repeated stop (or one whose session kept changing under it): its meter values
        # are kept as history, adding no energy (no increments) to a session closed.
        kept = samples_of(station, session.connector_id if session else 0, kept_id,
                          session, readings)
        if kept:
            await self.store.write([InsertIfAbsent(s) for s in kept], [])
        return info

    def _contradicting_repeat(self, session: Session, meter_stop: int, stamp: datetime
                              ) -> None:
        """A repeated StopTransaction of ``session``, stopped already, whose meterStop or
        timestamp differ from its recorded stop's is answered and changes nothing, as any
        repeat: said where operators look, so the contradiction is seen rather than
        dropped (ops QA s32: a resend of 99999 Wh against the 8481 billed, silent). An
        identical repeat (a lost answer) stays quiet. The meterStop as recorded (none for
        one no register can read, ``_stop``); the timestamp only where the recorded end
        is the stop's own: one stamped in our future or before its start, or on a clock
        behind ours at the start, was ended elsewhere (``_stop``, ``billed_end``). Each
        contradiction said once per session and process (``first_noted``)."""
        differs = []
        if stop_register(meter_stop) != session.meter_stop_wh:
            differs.append(f"meterStop {meter_stop} Wh, recorded {session.meter_stop_wh}")
        end_kept = session.reported_end is not None or (
            self.clocks.believable(stamp) and stamp >= session.start_time
            and not session.start_clock_behind)
        if end_kept and stamp != session.end_as_reported:
            recorded = session.end_as_reported
            differs.append(f"timestamp {stamp.isoformat()}, recorded "
                           f"{recorded.isoformat() if recorded else None}")
        # Once per session and contradiction: a charger resends an unanswered stop
        # verbatim, every few seconds until it is answered as it expects (review r32-e:
        # a line each time).
        if differs and first_noted(self._contradictions, (session.id, "; ".join(differs))):
            log.warning("%s: a repeated StopTransaction of transaction %s, stopped "
                        "already, differs from its recorded stop (%s): ignored, the "
                        "session kept as recorded; check the charger", session.cp_id,
                        session.transaction_id, "; ".join(differs))

    async def _phantom_of(self, session: Session, meter_stop: int, stamp: datetime
                          ) -> Session | None:
        """The phantom a replayed queue left open when its stop names the transaction
        first told (``session``, closed by that very stop: the same meterStop and
        timestamp, ``Session.reported_end``): an ACTIVE session recorded after it on its
        connector that repeats its card, stamp (a clock never set) and meterStart, and
        metered nothing. Its stop closes it, priced nothing (``_replayed``): it held the
        card and read as occupancy until the next start on its connector."""
        stamp_start = session.reported_start
        if stamp_start is None or session.closed_without_stop \
                or session.stop_reason is None or session.meter_stop_wh != meter_stop \
                or session.end_as_reported != stamp:
            return None
        return await self.store.find_one(Session, all_of(
            Eq("cp_id", session.cp_id), Eq("connector_id", session.connector_id),
            Eq("id_tag", session.id_tag), Eq("meter_start_wh", session.meter_start_wh),
            Eq("state", SessionState.ACTIVE), Eq("reported_start", stamp_start),
            Eq("energy_wh", 0), Range("created_at", gt=session.created_at)))

    async def _finish_connector(self, station: Station, closed: Session) -> None:
        """After a StopTransaction: its connector, still charging as far as its state
        goes, is Finishing from the stop on (``intervals.finishing``), so charging time
        ends with the session. Not when another transaction is open on the connector
        (this stop was flushed late: the state is that one's), nor when the charger
        reported the connector meanwhile. A write that met a change made since is read
        and tried again (``RECORD_ATTEMPTS``): a report of the connector meanwhile then
        stands (``finishing`` writes nothing), while a state interval ended by another
        change (a disconnect, a handover, a report of connector 0) is no reason to
        leave the connector Charging (review r27-analytics2)."""
        if closed.end_time is None:
            return
        end_time = closed.end_time
        tries = 0

        async def mark() -> Connector | None:
            """One read and write; the connector marked Finishing, or ``None``."""
            nonlocal station, tries
            tries += 1
            if tries > 1:
                found = await self.station(station.cp_id)  # as stored: online, books
                if found is None or found.id != station.id:
                    return None
                station = found
            connector = await self.store.find_one(Connector, all_of(
                Eq("station_id", station.id), Eq("connector_id", closed.connector_id)))
            if connector is None:
                return None
            if await self.store.find_one(Session, all_of(
                    Eq("cp_id", station.cp_id), Eq("connector_id", closed.connector_id),
                    Eq("state", SessionState.ACTIVE))) is not None:
                return None
            # A plug's first interval (none open to end) in the books of the station the
            # stop has, and written only while the station is in them
            # (``GuardedBooks.guard``), as for a status report: a handover meanwhile
            # rolled over no interval of it (review r27-analytics4), and a cached copy
            # not told of one fails it too, read again on the next try.
            stored = GuardedBooks(station)
            changes = await finishing(self.store, station, connector, end_time,
                                      charger(station.cp_id),
                                      self.clocks.ours_at(station.cp_id, end_time),
                                      self.now(), stored)
            if not changes:
                return None  # reported meanwhile: the charger's own word stands
            in_books = stored.guard()
            await self.store.write(changes, [], [in_books] if in_books is not None else [])
            return connector

        try:
            # ``retried``'s loop (any Conflict, paused as a disconnect is), not a copy.
            connector = await retried(mark, RECORD_ATTEMPTS, codes=None,
                                      pause=self.pause_to_retry)
        except Conflict:
            # The stop stands (written and answered); only its Finishing is not.
            log.warning("%s: connector %s left in its transaction's state after its "
                        "stop: changed on every try", station.cp_id, closed.connector_id)
            return
        if connector is not None:
            await self.publish(ConnectorStatusChanged(
                **owned_by(station), at=end_time, connector_record_id=connector.id,
                connector_id=connector.connector_id,
                status=ConnectorStatus.FINISHING.value, error_code=connector.error_code,
                info=None))

    async def _register_moved(self, session: Session) -> bool:
        """Whether a register reading moved ``session``'s count (``RegisterCount.
        registered``): the reading that last moved it (``meter_at``) was a register's,
        as no interval counts after one. Told by its samples from there (one read on the
        (session, at) index), so no column records it; none for a count never moved."""
        if session.meter_at is None:
            return False
        return await self.store.find_one(MeterSample, all_of(
            Eq("session_id", session.id), Eq("measurand", ENERGY_REGISTER),
            # Placed as ``samples_of`` places it: never before the session's start.
            Range("at", gte=max(session.meter_at, session.start_time)),
            Range("delta_wh", gt=0))) is not None

    async def _transaction(self, cp_id: str, transaction_id: int) -> Session | None:
        """The charger's session of ``transaction_id`` (another charger's is none, and so
        is an id we never issued, not looked up)."""
        if not issued_id(transaction_id):
            return None
        session = await self.store.find_one(Session, Eq("transaction_id", transaction_id))
        return session if session is not None and session.cp_id == cp_id else None

    async def _stop(self, station: Station, session: Session, meter_stop: int,
                    end: datetime, reason: str | None, readings: list[MeterReading]
                    ) -> tuple[Session, list[Payment]]:
        """Closes ``session`` by its StopTransaction, or corrects its close without one
        (``closed_without_stop``) by the same rules: the stop's meterStop, time and
        reason, its energy, priced again. Committed; ``Conflict`` when the session changed
        since it was read. With the closed session, the payment the correction repriced
        or voided (``_repriced_payment``), as written, for the caller to announce."""
        cp_id = station.cp_id
        stamp = end  # as the stop carried it (``Session.reported_end``)
        rated_kw = await self._rated_kw(station, session.connector_id)
        # Read only when it tells (``_register_moved``): for interval readings here, or
        # for a meterStop below the count (below); a stop above it bills itself either way.
        register_moved = await self._register_moved(session) \
            if meters_intervals(readings) else None
        count = register_count(session, rated_kw, bool(register_moved))
        samples = samples_of(station, session.connector_id, session.transaction_id,
                             session, readings, count)
        added = added_wh(samples)  # as for a frame: its late readings' shares are moved
        shares = await self._late_shares(session, samples, count) \
            if count is not None and count.late else {}
        actor = charger(cp_id)
        if not self.clocks.believable(end) or end < session.start_time:
            # A clock glitch (a stop stamped 2150) must not bill decades, nor a clock
            # reset mid-session (a stop stamped 1970, before its start) bill nothing of
            # its time (QA s20: 70 s at 1.00/min billed 0, occupancy 0): the session ends
            # at "now" on its own timeline, as an operator's endSession would end it. One
            # closed without its stop already ended (by a newer start, an operator, a
            # reboot's check): its late stop keeps that end, not "now", however late it
            # comes (review s20: 6 h billed for a 10-minute session).
            end = session.end_time if closed_without_stop(session) \
                and session.end_time is not None else self._timeline_now(session)
        # The charger's clock as tracked before this stop's own stamp moves it: one
        # stamped long before it was queued (``ticked_through``).
        charger_clock = self.clocks.known_now(cp_id)
        await self._clock_report(station, end)
        # meterStop is the transaction's own final register (what the charger signs and
        # bills by), so it decides the energy, counted across a rollover or reset of the
        # meter as the readings are (below meterStart, it may be one); a reading above
        # it (a glitch, a late frame of another kind) was counted live and is taken back
        # by the closing sample, which makes the samples add up to the billed energy.
        if count is None:  # closed or flushed late, awaiting its stop: no readings counted
            count = RegisterCount(session, rated_kw, bool(register_moved))
        metered = session.energy_wh + added
        read_high = count.high  # what its readings counted up to
        # What it reads as a register; none (recorded as no meterStop) for a number no
        # register can show: never counted as a reset or a rollover.
        register = stop_register(meter_stop)
        # Counted by intervals alone (no register read): the count is their sum, no
        # register, so a meterStop below it is judged from meterStart (not as a drop, a
        # reset), and one that did not move, as such meters send it, bills the sum
        # unflagged (review r32-a: 0/0 flagged RESET, 5,000/5,000 IMPLAUSIBLE_STOP).
        below = register is not None and register + count.offset < read_high \
            and metered > 0 and not count.registered
        if below and register_moved is None:
            register_moved = await self._register_moved(session)
        by_intervals = below and not register_moved
        if by_intervals:
            count.high = session.meter_start_wh
        final = count.counted(register, end, final=True) if register is not None else None
        meter = count.fields()
        unread = final == session.meter_start_wh and metered > 0 \
            and not closed_without_stop(session)
        if by_intervals and final == session.meter_start_wh:
            energy = metered
        elif final is None or final < session.meter_start_wh or unread:
            # A glitching final register (0xFFFFFFFF: more than the connector could
            # deliver; -1 or beyond any meter: no register at all; below meterStart:
            # less than nothing, with no rollover or reset to explain it; meterStart
            # itself, though its readings, the stop's own among them, moved: a register
            # the charger did not read at the stop; not so for a stop correcting a close
            # made without it, whose word on what was delivered the billing lead asked
            # to be final) must bill neither megawatt-hours nor nothing: the session is
            # billed what it believably metered, as a lost stop would be, and flagged for
            # review (QA s17: a stop below its start billed 0 without a trace; s20: one
            # that did not move billed 0 though its Transaction.End read 1.2 kWh more;
            # s26: a meterStop of -1 refused the stop, the session left ACTIVE). A stop
            # that moved decides, below a reading too (the reading may be the glitch).
            energy = metered
            log.warning("%s: meterStop %s Wh of transaction %s (meterStart %s Wh) is not "
                        "believable; billing the %s Wh metered", cp_id, meter_stop,
                        session.transaction_id, session.meter_start_wh, energy)
            meter["meter_anomaly"] = MeterAnomaly.IMPLAUSIBLE_STOP
        else:
            energy = final - session.meter_start_wh
            if count.anomaly is None \
                    and read_high - final > STOP_BELOW_READINGS_SLACK_WH:
                # The stop decides (a reading above it may be the glitch), but an
                # operator is shown that the transaction's own readings said more
                # (QA s20, verify: 0.001 kWh billed after readings of 1.2, no flag).
                # A late stop correcting a close too: the flag changes no bill.
                meter["meter_anomaly"] = MeterAnomaly.STOP_BELOW_READINGS
        # At the stop, on the session's timeline: a stop stamped before the start (a
        # clock reset) must not put the session's last energy before it began.
        samples, trimmed = await self._settled_close(
            station, session, samples, energy,
            session.meter_start_wh + energy if register is None else register,
            max(end, session.start_time), shares)
        if closed_without_stop(session):
            log.info("%s: the stop of transaction %s, closed without it (%s Wh, ended %s), "
                     "corrects its close: %s Wh, ended %s", cp_id, session.transaction_id,
                     session.energy_wh, session.end_time, energy, end)
        closed, changes = await self._close(
            station, session, register, end, reason or "Local", actor, energy_wh=energy,
            awaited=awaits_stop(session), stopped=True, readings=readings,
            metered=[*samples, *(cast(MeterSample, u.record) for u in trimmed)],
            meter=meter, stop_stamp=stamp, charger_clock=charger_clock)
        # The samples' changes first: closed by its stop and ended before a retention's
        # cut-off (a stop sent weeks late), the session's samples may go as soon as its
        # close lands, which on MongoDB is before the rest of the write: a sweep landing
        # in between deleted a sample the write then lowered, failing it (review r32-g).
        await self.commit(actor, changes,
                          first=[*trimmed, *(InsertIfAbsent(s) for s in samples)])
        return closed, updated_payments(changes)

    async def end_session(self, viewer: Viewer, session_id: str,
                          end_time: datetime | None = None,
                          checks: v.Checks | None = None) -> Session:
        """Closes an ACTIVE session its charger will never stop (it lost the transaction,
        or went away for good), as a lost StopTransaction is closed: with the energy last
        metered, priced, a payment opened, reason ``Other``, audited under the operator.
        For the station's operators and admins; the charger is not asked. It stands in
        for a stop that was not expected to come: one the charger sends later after all
        corrects the close as it corrects a lost one (``closed_without_stop``), its
        meterStop being what the charger metered and signed."""
        # Drivers keep no books: refused as who they are, whatever id they sent.
        refuse_unless_staff(viewer, "end sessions", checks)
        session = await self.visible(viewer, Session, session_id)
        # Whoever keeps its books ends it: after a station changed hands mid-session, the
        # operator who will bill the session, not the one who runs the station now.
        if not self.policy.keeps_books(viewer, session):
            raise Forbidden("only the operators who keep a session's books end it")
        station = (await self._stations_of([session]))[0]
        for attempt in range(1, END_ATTEMPTS + 1):
            awaited = awaits_stop(session)  # flushed late, its stop never came: billed too
            if session.state is not SessionState.ACTIVE and not awaited:
                raise ValidationError("the session has ended", field="id",
                                      code="INVALID_STATE")
            now = self._timeline_now(session)
            # One awaiting its stop ended before the newer session began: by default, as
            # recorded (at its start; no later time is known). One a restore brought back
            # open and not heard of since: at its last reading, as every close without
            # its stop ends it (``end_without_stop``), not now, days after it may be.
            # Any other now, not at a boot since it began (``Session.first_boot_at``): a
            # boot marks every session open across it, one its charger kept and reported
            # Charging too (review r33).
            default = session.end_time if awaited and session.end_time is not None \
                else min(end_without_stop(session, None, now), now)
            end = default if end_time is None else v.instant(end_time, "endTime")
            if not session.start_time <= end <= now:
                raise ValidationError("between the session's start and now",
                                      field="endTime", code="OUT_OF_RANGE")
            # Only onto the session as read: a meter value that grew its energy meanwhile
            # (its charger is still sending) would otherwise be billed short of what its
            # samples add up to; its stop, or another operator, ends it otherwise.
            closed, changes = await self._close(station, session, None, end,
                                                CLOSED_WITHOUT_STOP, viewer,
                                                unchanged_since=session.updated_at)
            try:
                await self.commit(viewer, changes)
                break
            except Conflict as exc:
                if attempt == END_ATTEMPTS:
                    raise Conflict("the session keeps changing (its charger is still "
                                   "metering): try again, or stop it remotely",
                                   field="id", code="CHANGED") from exc
                session = await self.visible(viewer, Session, session_id)  # read again
        await self._announce_end(station, closed)
        return closed

    async def _stations_of(self, sessions: Sequence[Session]) -> list[Station]:
        """The station of each of ``sessions``, as it is now; for one removed while a
        start raced its removal, one standing in for it: the session must still be ended
        and billed (its company's tariff), or it would hold its driver's card."""
        stations = await self.store.get_many(Station, [s.station_id for s in sessions])
        return [station or Station(id=session.station_id, cp_id=session.cp_id,
                                   name=session.cp_id, company_id=session.company_id,
                                   owner_id=session.station_owner_id)
                for session, station in zip(sessions, stations, strict=True)]

    async def refused_closes(self, viewer: Viewer, sessions: Sequence[Session]
                             ) -> tuple[list[tuple[Station, Session]],
                                        list[tuple[Change, Any]]]:
        """The closes of open ``sessions`` refused at their start (``start_refused``)
        whose chargers never stopped them, for a write of the caller's (an erasure: such
        a session holds no card or car and bills nothing, and it kept its person's
        account from being erased until an operator ended it). Each is closed as
        ``end_session`` closes one, now on its timeline, audited under ``viewer``, written
        only while it is still open and refused as read (``Conflict`` CHANGED: read them
        again): not onto the session unchanged, as ``end_session`` writes, since a refused
        session bills nothing, and a charger still sending MeterValues for it moved it
        before every write, the erasure refused CHANGED for good (review r27-accounts);
        the energy it closes with may miss the last sample. Not onto one a resent start
        has made accepted meanwhile (``_answered``, guarded the other way): that one is
        being charged to the person, and the erasure reads again and waits for it. Its
        stop, should it come after all, corrects the close (``closed_without_stop``).
        The closed sessions with their stations, for ``announce_closed`` once committed,
        and the changes to commit."""
        closed: list[tuple[Station, Session]] = []
        changes: list[tuple[Change, Any]] = []
        for station, session in zip(await self._stations_of(sessions), sessions,
                                    strict=True):
            if session.state is not SessionState.ACTIVE or session.start_refused is None:
                raise ValueError(f"session {session.id} is not open and refused")
            done, writes = await self._close(station, session, None,
                                             self._timeline_now(session),
                                             CLOSED_WITHOUT_STOP, viewer)
            [(close, before), *rest] = writes
            assert isinstance(close, Update) and close.only_if == (
                "state", SessionState.ACTIVE)
            close = replace(close, also_if=(("start_refused", session.start_refused),))
            closed.append((station, done))
            changes += [(close, before), *rest]
        return closed, changes

    async def announce_closed(self, station: Station, closed: Session) -> None:
        """What follows a committed close of ``refused_closes`` (``_announce_end``)."""
        await self._announce_end(station, closed)

    def _timeline_now(self, session: Session) -> datetime:
        """"Now" on the session's timeline (``Session.now_on_timeline``, the rule the
        graph's running cost estimate uses too)."""
        return session.now_on_timeline(self.now())

    async def _close(self, station: Station, session: Session, meter_stop: int | None,
                     end: datetime, reason: str, actor: Viewer, *,
                     energy_wh: int | None = None, awaited: bool = False,
                     stopped: bool = False, unchanged_since: datetime | None = None,
                     readings: Sequence[MeterReading] = (),
                     metered: Sequence[MeterSample] = (),
                     meter: dict[str, Any] | None = None,
                     stop_stamp: datetime | None = None,
                     charger_clock: datetime | None = None
                     ) -> tuple[Session, list[tuple[Change, Any]]]:
        """The closed session, and its write with the payment it opens (the changes to
        commit). ``energy_wh``: the session's energy
        at its close (default: as last metered). ``stopped``: closed by its
        StopTransaction, else by the CSMS without it (``closed_without_stop``). Written
        only onto a session still ACTIVE
        (``awaited``: still awaiting its stop): of a charger's StopTransaction and an
        operator's endSession racing, one closes it, and the other fails with ``Conflict``
        (``CHANGED``) instead of closing it twice. ``unchanged_since``: written only onto
        the session as it was read, last updated then (any change since moves it). A
        session closed without its stop (``closed_without_stop``) is closed again by it,
        corrected: written only onto that close as read, its payment re-priced
        (``_repriced_payment``) instead of a second one opened.
        ``readings``: the stop's own (its transactionData): a State of Charge there is the
        session's last. ``metered``: samples of the session written with the close (the
        stop's, its closing sample, stored ones whose increments it lowers), which
        time-of-day prices count over the stored ones. ``meter``: its register's count as
        the stop left it (``RegisterCount.fields``: a rollover or reset it showed is
        flagged). ``stop_stamp``: the timestamp its StopTransaction carried (``stopped``),
        kept for a session of a clock never set (``Session.reported_end``);
        ``charger_clock``: what its charger's clock read when the stop arrived
        (``ChargerClocks.known_now``, ``ticked_through``). A replay of an
        earlier session (``_replayed``) is priced nothing and flagged ``REPLAYED``."""
        read = session  # as read: what the close is written onto
        if stopped and stop_stamp is not None \
                and ticked_through(session, stop_stamp, station.created_at, charger_clock):
            # Not behind ours after all: a queue replayed, its stamps believed for its
            # times, end, tariff and energy alike (recorded so by the close).
            session = replace(session, start_clock_behind=False)
        # No close ends before its start, so no duration anywhere comes out negative (a
        # stop stamped before it was moved to "now" on the timeline already, ``_stop``);
        # one stamped by a clock set right since a start far behind ours ends when our
        # clock saw it end.
        billed_end = session.billed_end(end, self.now())
        if billed_end < end:
            log.warning("%s: transaction %s lasted %s by its charger's clock, %s by ours "
                        "(the charger's clock jumped): billing %s", session.cp_id,
                        session.transaction_id, end - session.start_time,
                        billed_end - session.start_time, billed_end - session.start_time)
        end = billed_end
        energy = session.energy_wh if energy_wh is None else energy_wh
        # The tariff of whoever keeps the session's books, in force at its start: a
        # station handed to another company mid-session is still priced as agreed.
        replay = await self._replayed(session, energy, meter_stop, stop_stamp, stopped)
        tariff = await self.tariffs.tariff_at(station, session.priced_at,
                                              company_id=session.company_id,
                                              connector_type=session.connector_type
                                              ) if session.billable and not replay else None
        if replay:
            meter = {**(meter or {}), "meter_anomaly": MeterAnomaly.REPLAYED}
        kept_end = {"reported_end": stop_stamp} \
            if stopped and session.reported_start is not None else {}
        cost = idle = band_wh = None
        if tariff is not None:
            idle = await self._idle_seconds(tariff, session, end)
            band_wh = await self._band_energy(tariff, session, energy, metered, end)
            cost = session_cost_minor(tariff, energy, session.start_time, end,
                                      timedelta(seconds=idle or 0), band_wh)
        guard: tuple[str, Any] = ("stop_reason", None) if awaited \
            else ("state", SessionState.ACTIVE)
        correcting = closed_without_stop(session)
        if correcting:
            # Its stop came after a close without it: written only onto that close as
            # read, so of two copies of the stop one corrects it and the other is told
            # (``Conflict``), as two closes are.
            unchanged_since = session.updated_at
        if unchanged_since is not None:  # nothing written to it since it was read
            guard = ("updated_at", unchanged_since)
        close = patch(session, actor, only_if=guard, required=True,
                      state=SessionState.COMPLETED, end_time=end, meter_stop_wh=meter_stop,
                      energy_wh=energy, power_w=None, stop_reason=reason,
                      closed_without_stop=not stopped, cost_minor=cost,
                      currency=tariff.currency if tariff else None, idle_seconds=idle,
                      band_energy_wh=band_wh,
                      # What its live readings showed is kept: its receipt is priced alike.
                      start_clock_behind=session.clock_behind,
                      **final_soc(session, readings, self.clocks.believable),
                      **kept_end, **(meter or {}))
        payment = None
        # Nothing to collect (no energy and no fees): no payment for anyone to settle.
        if tariff is not None and cost is not None and cost > 0:
            # On the service's clock: its ``created_at`` is the invoice date revenue is
            # booked on, compared with the windows reports ask for.
            payment = stamp_new(Payment(session_id=session.id, station_id=station.id,
                                        cp_id=session.cp_id,
                                        connector_id=session.connector_id,
                                        user_id=session.user_id,
                                        vehicle_id=session.vehicle_id, amount_minor=cost,
                                        currency=tariff.currency,
                                        company_id=session.company_id,
                                        station_owner_id=session.station_owner_id),
                                actor, self.now())
        changes: list[tuple[Change, Any]] = [(close, read)]
        if correcting:
            changes += await self._repriced_payment(session, payment, cost or 0, actor)
        elif payment is not None:
            changes.append((Insert(payment), None))
        return cast(Session, close.record), changes

    async def _replayed(self, session: Session, energy: int, meter_stop: int | None,
                        stop_stamp: datetime | None, stopped: bool) -> bool:
        """``session``, of a start stamped by a clock never set, is a replayed queue's
        phantom: it repeated every figure (connector, card, stamp, meterStart) of an
        earlier session its own StopTransaction closed. A queue replayed whole after its
        stop that ``_StartIdentity.matches`` could not give its session (a stuck stamp,
        ``STUCK_CLOCK_STAMPS``: its next charge repeats every figure, so only an open
        session is matched). Closed by its stop (``stopped``): that stop repeats the
        earlier one's meterStop and timestamp (``Session.reported_end``) too, whichever
        transaction id it names (``_replayed_stop``; review r26-robust4: the phantom, closed by
        the replayed stop, billed the charge a second time). Closed without it (by the
        next start on its connector, a reboot's check): having metered nothing. It is
        priced nothing, neither session fee nor time, and flagged ``REPLAYED``. A real
        charge of such a charger is priced as any, unless it ends with the very same
        meterStop as the earlier one (the limit left, docs/architecture.md)."""
        stamp = session.reported_start
        if stamp is None:
            return False
        if stopped:
            if meter_stop is None or stop_stamp is None:
                return False
            stop: Filter | None = all_of(Eq("meter_stop_wh", meter_stop),
                                         ended_as_reported(stop_stamp))
        elif energy:
            return False
        else:
            stop = None
        earlier = await self.store.find_one(Session, all_of(
            Eq("cp_id", session.cp_id), Eq("connector_id", session.connector_id),
            Eq("id_tag", session.id_tag), Eq("meter_start_wh", session.meter_start_wh),
            Eq("state", SessionState.COMPLETED), Eq("closed_without_stop", False),
            started_as_reported(stamp),
            Range("created_at", lt=session.created_at), stop))
        if earlier is None or earlier.stop_reason is None:  # awaiting its stop: none yet
            return False
        log.warning("%s: transaction %s repeated transaction %s (started %s by a clock "
                    "never set, meterStart %s Wh) %s after its stop: a replayed queue's "
                    "phantom, priced nothing", session.cp_id, session.transaction_id,
                    earlier.transaction_id, rfc3339(stamp), session.meter_start_wh,
                    "and its stop" if stopped else "closed without its stop, metering "
                    "nothing,")
        return True

    async def _repriced_payment(self, session: Session, fresh: Payment | None, cost: int,
                                actor: Viewer) -> list[tuple[Change, Any]]:
        """The payment of a session whose close is corrected (``closed_without_stop``),
        at its corrected ``cost``: ``fresh`` (what a close would open) if it has none
        yet; its PENDING or FAILED one (no money moved) at the new amount
        (``payments.repriced``), VOIDED at 0. One whose money moved (CAPTURED,
        REFUNDED) keeps it: an operator settles the difference, which the session's
        cost beside the payment's amount shows and the log says."""
        payment = await self.store.find_one(Payment, Eq("session_id", session.id))
        if payment is None:
            return [] if fresh is None else [(Insert(fresh), None)]
        currency = fresh.currency if fresh is not None else payment.currency
        # Unchanged, but an uncollected payment of 0 (a PENDING one written before such
        # payments were voided) is voided now rather than left waiting for a capture.
        if (payment.amount_minor, payment.currency) == (cost, currency) and (
                cost > 0 or payment.status not in UNCOLLECTED):
            return []
        update = repriced(payment, cost, currency, actor)
        if update is None:
            log.warning("%s: transaction %s was corrected by its late stop to %s %s minor "
                        "units, but its payment %s is %s at %s: its amount is kept (what "
                        "was collected or settled is not rewritten); settle the "
                        "difference by hand", session.cp_id,
                        session.transaction_id, cost, currency, payment.id,
                        payment.status.value, payment.amount_minor)
            return []
        return [(update, payment)]

    async def _idle_seconds(self, tariff: Tariff, session: Session, end: datetime
                            ) -> int | None:
        """Whole seconds the session's connector sat idle until ``end``, billed by its
        idle fee (kept on the session, so its receipt is this computation again); None,
        and no store read on the close path, when its tariff bills no idle time."""
        if not tariff.bills_idle:
            return None
        idle, = await idle_times(self.store, [IdleSpan.of(session, end)])
        return billed_idle_seconds(idle)

    async def _band_energy(self, tariff: Tariff, session: Session, energy: int,
                           metered: Sequence[MeterSample], end: datetime
                           ) -> list[int] | None:
        """The session's ``energy`` split by the tariff's time-of-day bands, from its
        energy register readings (stored, overlaid by ``metered``: what the close
        writes); None, and no store read, for a tariff without bands."""
        if not tariff.energy_bands:
            return None
        stored = await register_readings(self.store, [session.id])
        samples = {s.id: s for s in stored.get(session.id, [])}
        samples.update((s.id, s) for s in metered if s.delta_wh is not None)
        return session_split(tariff, session, energy,
                             [(s.at, s.delta_wh or 0) for s in samples.values()], end)

    # ------------------------------------------------------------- station-level reports
    async def firmware_status(self, cp_id: str, status: str) -> None:
        await self._station_report(cp_id, "FIRMWARE", status)

    async def diagnostics_status(self, cp_id: str, status: str) -> None:
        await self._station_report(cp_id, "DIAGNOSTICS", status)

    @_station_must_exist
    async def _station_report(self, cp_id: str, kind: str, status: str) -> None:
        """Stores the status with when it came (``firmware_status_at``), and announces
        both as stored: the event's ``at`` is the station's time, its ``requested_at``
        the rollout or upload the station records (a status belongs to the last one).
        A report that is no news of a ``Requested`` one (``keeps_requested``: a firmware
        Idle before the download is due, the late end of the upload before) leaves it
        ``Requested``, and an Idle after the end of a rollout or upload leaves that end
        (``keeps_outcome``); neither is announced: the station reads what it did. Judged on the
        station as stored, not as cached, and written only onto that version
        (``edits.edit``; read again and judged again when another write came between):
        a request answered on another instance an instant ago is what the report is news
        of or not, before its ``StationChanged`` reaches this one (QA)."""
        actor = charger(cp_id)
        field = "firmware_status" if kind == "FIRMWARE" else "diagnostics_status"

        async def report() -> tuple[Station, dict[str, Any], datetime]:
            # Fresh: these reports are rare, and what they are news of may have been
            # recorded on another instance (the operator's) since this one cached it.
            station = await self._require_station(cp_id, fresh=True)
            now = self.now()
            values: dict[str, Any] = {field: status, f"{field}_at": now}
            if keeps_outcome(station, kind, status):
                return station, {}, now  # the end says it: done, so idle
            if keeps_requested(station, kind, status, now):
                if kind == "FIRMWARE":
                    return station, {}, now  # the rollout's date says when it is due
                # The one before ended: the next end is this upload's.
                values = {"diagnostics_previous_uploading": False}
            update = edit(station, actor, **values)
            await self.commit(actor, [(update, station)])
            self.cache.patched(station, cast(Station, update.record))
            return station, values, now

        station, values, now = await retried(report)
        if field in values:
            await self.publish(maintenance_event(station, kind, status, now))
        else:
            log.info("%s reported %s %s while the station reads %s: not news of it, the "
                     "station still reads %s", cp_id, kind.lower(), status,
                     getattr(station, field), getattr(station, field))

    async def data_transfer(self, cp_id: str, vendor_id: str, message_id: str | None,
                            data: str | None) -> tuple[str, str | None]:
        """Vendor-specific messages. We define none of our own yet, so every vendor is
        unknown (the answer OCPP 1.6 prescribes). The OCPP bridge logs the message for
        operators, masked as its wire log is: free text of the charger's may hold a URL
        with its password (QA s26: logged here whole, at INFO)."""
        await self._require_station(cp_id)
        return "UnknownVendorId", None

    # ------------------------------------------------------------- helpers
    async def _settled_close(self, station: Station, session: Session,
                             samples: list[MeterSample], energy: int, register: int,
                             end: datetime, shares: Shares | None = None
                             ) -> tuple[list[MeterSample], list[Change]]:
        """The samples a close at ``energy`` writes: ``samples`` (a stop's own) and the
        closing one with what they still miss (``closing_sample``: reading ``register``
        at ``end``); and the updates of stored ones whose increments it lowers
        (``_settled_samples``) or late readings of the stop moved (``shares``). So the
        session's increments add up to its energy, for a stop and for a close at a newer
        start's meterStart alike."""
        samples, trimmed, stored_wh = await self._settled_samples(
            session, samples, energy, shares or {})
        closing = closing_sample(station, session, samples, stored_wh, energy, register,
                                 end)
        return [*samples, closing] if closing is not None else samples, trimmed

    async def _settled_samples(self, session: Session, samples: list[MeterSample],
                               energy: int, shares: Shares
                               ) -> tuple[list[MeterSample], list[Change], int]:
        """When the session's readings went above its final ``energy`` (a glitch below
        the believable ceiling, a reading of another kind), the excess is taken back from
        the newest increments, where it was added: the stop frame's ``samples`` and the
        stored ones (as the stop's late readings left them: ``shares``). So the hours of
        the trends never go below zero, as a negative closing sample at the stop would
        make them. Returns the frame's samples, the stored ones' updates (the shares'
        among them) and what the stored ones add up to then."""
        actor = charger(session.cp_id)
        stored_wh = session.energy_wh + sum(
            (new.delta_wh or 0) - (old.delta_wh or 0) for old, new in shares.values())
        excess = stored_wh + added_wh(samples) - energy
        if excess <= 0:
            return samples, given_up(shares, actor), stored_wh
        stored = await self.store.find_all(MeterSample, all_of(
            Eq("session_id", session.id), Range("delta_wh", gt=0)),
            (Sort("at", descending=True),), limit=MAX_TRIMMED_SAMPLES)
        stored = [shares[s.id][1] if s.id in shares else s for s in stored]
        frame = sorted((s for s in samples if s.delta_wh), key=lambda s: s.at, reverse=True)
        kept = {id(s): s for s in samples}
        shares = dict(shares)
        updates: list[Change] = []
        for sample in sorted([*frame, *stored], key=lambda s: s.at, reverse=True):
            if excess <= 0:
                break
            delta = sample.delta_wh or 0
            cut = min(delta, excess)
            excess -= cut
            if id(sample) in kept:
                kept[id(sample)] = replace(sample, delta_wh=delta - cut)
            else:
                # Guarded as a share is, from the increment it was read with.
                read = shares.pop(sample.id, (sample, sample))[0]
                updates.append(patch(read, actor, only_if=("delta_wh", read.delta_wh),
                                     required=True, delta_wh=delta - cut))
                stored_wh -= cut
        return [kept[id(s)] for s in samples], [*updates, *given_up(shares, actor)], \
            stored_wh

    async def _late_shares(self, session: Session, samples: list[MeterSample],
                           count: RegisterCount) -> Shares:
        """Gives each late reading of the frame (``count.late``: stamped before the
        reading that last moved the count, lower than it) its share of the energy: what
        the register counted from the reading before it up to it, which the first sample
        stamped after it with an increment (the frame's or a stored one) was credited
        with and gives up (``metering.late_share``). So the energy lands in the hour it
        was delivered in, and the session's increments add up to what they did (QA: a
        queued reading flushed after a live one added 0, the live one had it all). The
        frame's samples are changed in place; returned, the stored samples changed, each
        as read and as it is to be written (``given_up``). Store reads only for a frame
        with a late reading, two whatever their number (a third at most): whether they
        are stored already (the same frame resent: a reading stored without its share,
        its next sample not stored yet then, takes it now; one stored with it takes
        nothing again), and the samples with an increment stamped from the earliest one
        not stored with it on (``MAX_LATE_SAMPLES``). A reading whose register was
        credited at or after its time (a stop's ``transactionData`` repeating the live
        readings in kWh or another context: ``metering.credited_readings``) needs none,
        and is set aside before the window is chosen: when the one read from it was
        full, the window is read once more from the earliest late reading left (review:
        a repeat of the session's first reading filled it before a late one was
        reached)."""
        shares: Shares = {}
        stored_late = {s.id: s for s in await self.store.find_all(MeterSample, In(
            "id", tuple(samples[late.position].id for late in count.late)))}
        lates = [late for late in count.late if not stored_late.get(
            samples[late.position].id, samples[late.position]).delta_wh]
        if not lates:
            return shares  # each stored with its share already
        since = min(samples[late.position].at for late in lates)
        stored = await self._late_window(session, since)
        lates = not_credited(lates, samples, stored)
        if not lates:
            return shares  # each that reading again
        start = min(samples[late.position].at for late in lates)
        if start > since and len(stored) == MAX_LATE_SAMPLES:
            # The window was read from a reading credited already and may end before
            # the late readings needing a share: read it from the earliest of them (one
            # read more, only then). Readings credited past its end are found there.
            stored = await self._late_window(session, start)
            lates = not_credited(lates, samples, stored)
        stamped = [s.at for s in stored]
        # More may follow the last one read: past it, which sample comes first after a
        # reading is unknown, so it takes nothing (as before shares were moved).
        full = len(stored) == MAX_LATE_SAMPLES
        # The frame's samples with an increment, by time (then position): the first after
        # a late reading is found by bisection. Each late reading read all the frame's
        # samples: a 4 MiB frame's 36,600, thousands of them late, held the event loop for
        # a minute (session 29). A giver whose increment was all given since is passed
        # over; a late reading given its share is no giver to those after it, which are
        # stamped at or after it (``count.late`` is in time order).
        givers = sorted((s.at, i) for i, s in enumerate(samples) if (s.delta_wh or 0) > 0)
        giver_times = [at for at, _ in givers]
        for late in lates:
            sample = samples[late.position]
            after: list[tuple[int | None, MeterSample]] = []
            next_giver = bisect_right(giver_times, sample.at)
            while next_giver < len(givers) \
                    and not (samples[givers[next_giver][1]].delta_wh or 0) > 0:
                next_giver += 1
            if next_giver < len(givers):
                position = givers[next_giver][1]
                after.append((position, samples[position]))
            first = bisect_right(stamped, sample.at)
            if first < len(stored):
                found = stored[first]
                after.append((None, shares[found.id][1] if found.id in shares else found))
            elif full:
                continue
            if not after:
                continue
            index, giver = min(after, key=lambda pair: pair[1].at)
            share = late_share(late, giver)
            if not share:
                continue
            given = replace(giver, delta_wh=(giver.delta_wh or 0) - share)
            if index is not None:
                samples[index] = given
            else:
                shares[giver.id] = (shares.get(giver.id, (giver,))[0], given)
            taken = replace(sample, delta_wh=share)
            if sample.id in stored_late:
                shares[sample.id] = (stored_late[sample.id], taken)
            else:
                samples[late.position] = taken
        return shares

    async def _late_window(self, session: Session, since: datetime) -> list[MeterSample]:
        """The session's samples with an increment stamped at or after ``since``, oldest
        first (the first after a late reading is the first of those after it), up to
        ``MAX_LATE_SAMPLES``: where a frame's late readings take their shares from."""
        return await self.store.find_all(MeterSample, all_of(
            Eq("session_id", session.id), Range("at", gte=since),
            Range("delta_wh", gt=0)), (Sort("at"),), limit=MAX_LATE_SAMPLES)

    async def _announce_end(self, station: Station, closed: Session) -> None:
        """After a close committed: no held live update goes out after it, the cache
        forgets the session, and ENDED is announced (its last event). Its plug, free
        now, is announced so (``plugs_held``): a charger reporting Available before its
        StopTransaction was heard not free, the session still holding it (review r3b)."""
        await self.session_updates.end(closed.id)
        self.cache.remember(closed)
        await self.publish(self._session_event(station, closed, "ENDED"))
        await self.plugs_held(owned_by(station), closed.connector_id)

    def _session_event(self, station: Station, session: Session, change: str
                       ) -> SessionChanged:
        # Seen by whoever keeps the session's books (as its reads are), not by whoever
        # runs the station now: a station handed over mid-session leaves the session's
        # live updates with the operator who will bill it.
        return SessionChanged(
            station_id=station.id, cp_id=station.cp_id, company_id=session.company_id,
            owner_id=session.station_owner_id, at=session.updated_at, change=change,
            session_id=session.id, transaction_id=session.transaction_id,
            connector_id=session.connector_id, user_id=session.user_id,
            vehicle_id=session.vehicle_id, energy_wh=session.energy_wh,
            power_w=session.power_w, state=session.state.value,
            cost_minor=session.cost_minor, currency=session.currency,
        )


def _other_password(station: Station, signed_in_with: str | None) -> bool:
    """Whether ``station`` has a password, and not the one hashed ``signed_in_with``."""
    return station.auth_password_hash is not None \
        and station.auth_password_hash != signed_in_with
