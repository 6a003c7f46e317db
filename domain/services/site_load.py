"""Site load management, enforced: whenever what charges behind a site may have changed,
its power is shared again (``domain.load_sharing.allocate``) and every session whose
share changed is told it with a SetChargingProfile (a TxProfile for its transaction).

Triggers (``SiteLoad.request_site``/``request_station``): a StartTransaction answered
(``ChargingService.start_answered``, after the answer went out: a charger refuses a
TxProfile for a transaction it has not been told of), and what this process's services
publish (``ServiceContext.published``, so each event is handled once across instances):
a session ENDED (a stop, ``endSession``, a lost stop), a station's connection changing,
a station edited; and the site service's own edits (limit, unit, assignments). A charger
coming back (connected, or its BootNotification answered Accepted:
``ChargingService.boot_accepted``) is also told again the limits it holds
(``charger_back``): one that rebooted or lost its profile draws its rating otherwise,
while the site counts it at its share.

The sending never runs on a charger's handler path: requests only mark a site for a
recompute, done by a task per site (a request while it runs makes it run once more),
at most ``MAX_SITES_AT_ONCE`` at a time, each command bounded by the command timeout.
Commands go through ``CommandService.send`` as the system: audited as COMMANDs,
authorized, and relayed to the instance holding the charger with Redis.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from domain.command_rules import folded_key
from domain.entities import (
    DEFAULT_PHASES,
    SYSTEM_ACTOR,
    AuditAction,
    AuditEntry,
    ChargingRateUnit,
    ConfigurationKey,
    Connector,
    ConnectorStatus,
    LimitAnswer,
    Session,
    SessionState,
    Site,
    SiteAllocation,
    Station,
    min_session_kw,
)
from domain.errors import (
    ChargerBusy,
    ChargerCallError,
    ChargerNotSupported,
    ChargerOffline,
    ChargerRejected,
    ChargerTimeout,
    Conflict,
    DomainError,
)
from domain.events import (
    ConnectorStatusChanged,
    EventsDropped,
    SessionChanged,
    StationChanged,
    StationConnectionChanged,
)
from domain.load_sharing import (
    FALLBACK_PROFILE_ID,
    PROFILE_ID_BASE,
    STACK_LEVEL,
    Demand,
    allocate,
    floor_share,
    least_share,
    limit_in_unit,
    profile_id,
    tx_profile,
)
from domain.policy import SYSTEM, Viewer
from domain.ports import Change, Delete, Insert, Update
from domain.query import Eq, In, Range, Sort, all_of, any_of
from domain.services.base import Service, ServiceContext, changed, patch, stamp_new
from domain.services.charging import closed_without_stop
from domain.services.commands import (
    ALLOWED_UNITS_KEY,
    CommandOutcome,
    CommandService,
    units_named,
)
from domain.services.configuration import in_force
from domain.services.pending_starts import PENDING_START_WINDOW
from domain.services.site_fallbacks import SiteFallbacks
from domain.validation import MAX_CONNECTOR_ID, stored_id_tag

log = logging.getLogger("chargegraph.sites")

#: Connector states a charger reports once its transaction is over (OCPP 1.6: no
#: energy offered, and none offered again for it): a session ended without its stop
#: draws nothing there (``SiteLoad._ending``). Not Faulted: a fault may clear and the
#: transaction charge on at its old limit. Not Unavailable: it is also the state of a
#: connector that never reported one.
_NOT_DRAWING = frozenset({ConnectorStatus.AVAILABLE, ConnectorStatus.FINISHING,
                          ConnectorStatus.RESERVED})

#: Sites recomputed (and their chargers told) at once; others wait their turn.
MAX_SITES_AT_ONCE = 8
#: Station ids read at once when finding the sites events name.
RESOLVE_BATCH = 500
#: The most stations and active sessions a site's recompute reads.
MAX_PER_SITE = 1_000
#: Lifts remembered (``SiteLoad._left_behind``) before the memory starts afresh.
MAX_LIFTED_KEPT = 10_000

#: How long after seeing another instance's raise under way (or taking its own back) a
#: site is shared again: a range, drawn from, so two instances do not retry in step.
RETRY_AFTER_S = (0.2, 1.0)
#: The longest a recompute waits for its chargers' answers before going on (those that
#: come later have the site shared again): a silent charger held the next session's
#: limit back for the command timeout (30 s by default).
ANSWER_WAIT_S = 2.0
#: How long after its last answer a charger not under control is asked again (one that
#: refuses limits is asked once a minute, not at every start and stop on its site).
RETRY_LOOSE_S = 60.0
#: How long a charger that did not answer GetConfiguration is sent ``STACK_LEVEL``
#: before it is asked again.
LEVEL_UNKNOWN_FOR = timedelta(minutes=10)
#: How long a charger's stack level, once read, is used before it is read again.
LEVEL_KNOWN_FOR = timedelta(hours=1)
#: The configuration key saying the highest stack level a charger takes (OCPP 1.6).
MAX_STACK_LEVEL_KEY = "ChargeProfileMaxStackLevel"

_ANSWERS = {a.value: a for a in LimitAnswer}
#: Answers after which the charger surely kept the limit it had (it said no).
_REFUSED = frozenset({LimitAnswer.REJECTED, LimitAnswer.NOT_SUPPORTED})
#: A person's profile command answered so: the charger kept the profiles it had.
_KEPT = _REFUSED | {LimitAnswer.OFFLINE}
#: The purposes of a person's profile that the site's TxProfile at the same stack level
#: replaces, or is replaced by (OCPP 1.6, 3.13.2: same stackLevel and purpose; some
#: chargers go by the stack level alone).
_CLASHING = frozenset({"TxProfile", "TxDefaultProfile"})
#: The profile ids a site uses on its chargers: its fallback's and each connector's.
_OURS = range(FALLBACK_PROFILE_ID, profile_id(MAX_CONNECTOR_ID) + 1)
#: The most entries of people's profile commands to a station (``_PEOPLES_PROFILE_COMMANDS``,
#: two each: sent and answered) read to find an override set before a session came
#: under a site's control (``SiteLoad._overridden``), the latest first. The site's own
#: commands are not among them: they never push a person's override out.
MAX_COMMANDS_READ = 1_000
#: The commands that may set or lift a person's override of a session's limit: a
#: TxProfile set, a clear, or a remote start carrying one (OCPP 1.6, 5.11: the charger
#: applies it to the transaction it starts).
_PEOPLES_PROFILE_COMMANDS = ("SetChargingProfile", "ClearChargingProfile",
                             "RemoteStartTransaction")
#: A person's profile command recorded with these errors surely left the charger's
#: profiles as they were (refused, not connected, never sent); no error, no answer or an
#: unreadable one (or a CALLERROR: the audit does not tell NotSupported from others)
#: may have changed them.
_KEPT_CODES = frozenset({"CHARGER_REJECTED", "CHARGER_OFFLINE", "CHARGER_BUSY", "INVALID"})


def bound_after(before_kw: float, sent_kw: float, answer: LimitAnswer) -> float:
    """The most a charger may draw after it was sent ``sent_kw`` and answered
    ``answer``, ``before_kw`` the most before: the share it accepted; what it had, after
    a refusal; either, after silence or a broken answer (it may have taken it)."""
    if answer is LimitAnswer.ACCEPTED:
        return sent_kw
    if answer in _REFUSED:
        return before_kw
    return max(before_kw, sent_kw)


def stack_level_of(result: dict[str, Any]) -> int:
    """The stack level for a charger from its GetConfiguration answer:
    ``STACK_LEVEL``, or its ChargeProfileMaxStackLevel when that is lower."""
    for entry in result.get("configurationKey") or []:
        # Keys are compared without regard to case (OCPP CiString), as the units are.
        if isinstance(entry, dict) and folded_key(str(entry.get("key", ""))) \
                == folded_key(MAX_STACK_LEVEL_KEY):
            try:
                return max(0, min(STACK_LEVEL, int(str(entry.get("value", "")).strip())))
            except ValueError:
                break
    return STACK_LEVEL


def allowed_units_of(result: dict[str, Any]) -> frozenset[ChargingRateUnit]:
    """The units a charger takes limits in from its GetConfiguration answer
    (``ChargingScheduleAllowedChargingRateUnit``, words in any case); empty when it does
    not say, or names none known: then the site's own unit is sent."""
    for entry in result.get("configurationKey") or []:
        # Keys are compared without regard to case (OCPP CiString).
        if isinstance(entry, dict) and folded_key(str(entry.get("key", ""))) \
                == folded_key(ALLOWED_UNITS_KEY):
            # Read as the schedule check reads the stored key (``units_named``).
            return units_named(str(entry.get("value", "")))
    return frozenset()


def unit_to_send(site_unit: ChargingRateUnit, allowed: frozenset[ChargingRateUnit]
             ) -> ChargingRateUnit:
    """The unit a site's limit is sent to a charger in: the site's, unless the charger
    takes only the other (a charger that takes only ``Current`` refuses a limit in W,
    and a site in W never had it under control, holding its whole rating)."""
    if not allowed or site_unit in allowed:
        return site_unit
    return next(iter(allowed))


@dataclass(slots=True)
class _Seen:
    """A site as one reading found it: its active sessions, the stations of those
    online, their recorded shares and their connectors' ratings and phases."""

    sessions: list[Session]
    online: set[str]
    held: dict[str, SiteAllocation]
    ratings: dict[tuple[str, int], float | None]
    limit_kw: float
    #: The site's settings the shares were computed from.
    site: tuple[Any, ...]
    #: The site as read (``None``: removed).
    record: Site | None = None
    #: Each connector's phases (``None``: the site's).
    phases: dict[tuple[str, int], int | None] = field(default_factory=dict)
    #: Sessions whose charger came back online and has not taken its limit again yet:
    #: it may have lost the one it accepted (a reboot) and draw up to its rating.
    unsure: set[str] = field(default_factory=set)
    #: Sessions closed without their StopTransaction (an operator's endSession) whose
    #: charger, online, may still charge them: held at their bound (``_ending``).
    ending: list[Session] = field(default_factory=list)
    #: The site's stations.
    stations: list[Station] = field(default_factory=list)
    #: By cpId: the unit its limits are sent in, when known (``SiteLoad.unit_for``).
    units: dict[str, ChargingRateUnit] = field(default_factory=dict)
    #: By cpId: the units its charger takes as its stored configuration says, in force
    #: since its boot (``SiteLoad._stored_units``): read by whichever instance asked.
    allowed: dict[str, frozenset[ChargingRateUnit]] = field(default_factory=dict)

    @property
    def live(self) -> list[Session]:
        return [s for s in self.sessions if s.station_id in self.online]

    def rating(self, session: Session) -> float | None:
        return self.ratings.get((session.station_id, session.connector_id))

    def bound(self, session: Session) -> float:
        """The most the session's charger may draw: as recorded; never told anything,
        its connector's rating (the site's whole limit for a rating not known); back
        online and not told again yet (``unsure``), the higher of the two."""
        known = self.held.get(session.id)
        rating = self.rating(session)
        unlimited = self.limit_kw if rating is None else rating
        if known is None:
            return unlimited
        if session.id in self.unsure:
            return max(known.bound_kw, unlimited)
        return known.bound_kw

    def phases_of(self, session: Session) -> int:
        """The phases the session's limit in amperes is converted with: its connector's,
        else the site's."""
        phases = self.phases.get((session.station_id, session.connector_id))
        if phases is not None or self.record is None:
            return phases or DEFAULT_PHASES
        return self.record.phases

    def least_kw(self, session: Session) -> float:
        """The least the session may be sent but 0 (paused): with limits in amperes (the
        site's, or its charger's own: ``units``), 6 A on its connector's phases (IEC
        61851: a charger offers no less); in watts, 0."""
        if self.record is None or self.units.get(
                session.cp_id, self.record.unit) is not ChargingRateUnit.A:
            return 0.0
        return min_session_kw(self.record.voltage, self.phases_of(session))

    def demand(self, session: Session) -> Demand:
        return Demand(session.id, session.start_time, session.transaction_id,
                      self.rating(session), self.least_kw(session))

    def key(self, skip: set[str]) -> tuple[Any, ...]:
        """What a raise depends on, but for the sessions in ``skip``: the site's limits,
        which sessions charge, on which chargers online, and every other share."""
        return (self.site, frozenset(s.id for s in [*self.sessions, *self.ending]),
                frozenset(self.online),
                frozenset((a.session_id, a.answer, a.bound_kw, a.power_kw)
                          for a in self.held.values() if a.session_id not in skip))


def _clears_every_tx_profile(clear: dict[str, Any]) -> bool:
    """Whether a ClearChargingProfile removes every TxProfile on the connector it names
    (or on all): no id, no stack level, purpose TxProfile or none. A narrower clear may
    have left a person's override in place."""
    return clear.get("id") is None and clear.get("stackLevel") is None \
        and clear.get("chargingProfilePurpose") in (None, "TxProfile")


def _lifts(clear: dict[str, Any], session: Session) -> bool:
    """Whether a ClearChargingProfile (its request as the audit records it) removed a
    person's override of the session: every TxProfile on its connector
    (``_clears_every_tx_profile``, the rule ``_lift_overrides`` applies as it is sent)."""
    return _clears_every_tx_profile(clear) \
        and clear.get("connectorId") in (None, session.connector_id)


def _started_with(start: dict[str, Any], session: Session) -> Any:
    """The charging profile a RemoteStartTransaction (its request as the audit records
    it) gave the transaction it started, if that can be the session's: the same card,
    on its connector or on the one the charger picked (none named); else ``None``. Its
    answer may be recorded after the session (the StartTransaction can come first), so
    one is taken from ``PENDING_START_WINDOW`` before the session on."""
    tag = start.get("idTag")
    if not isinstance(tag, str) or stored_id_tag(tag) != session.id_tag \
            or start.get("connectorId") not in (None, session.connector_id):
        return None
    return start.get("chargingProfile")


def _int(value: Any) -> int:
    """A stack level as recorded; 0 for one that is no number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def answer_of(outcome: CommandOutcome) -> LimitAnswer:
    """What a SetChargingProfile's outcome says about the session's control."""
    error = outcome.error
    if error is None:
        return LimitAnswer.ACCEPTED
    if isinstance(error, ChargerRejected):
        return _ANSWERS.get(outcome.status or "", LimitAnswer.REJECTED)
    if isinstance(error, ChargerTimeout):
        return LimitAnswer.TIMEOUT
    if isinstance(error, ChargerOffline):
        return LimitAnswer.OFFLINE
    if isinstance(error, ChargerNotSupported):  # NotSupported, NotImplemented: it said no
        return LimitAnswer.NOT_SUPPORTED
    return LimitAnswer.ERROR  # another CALLERROR (InternalError…), an unreadable answer


class SiteLoad(Service):
    def __init__(self, ctx: ServiceContext, commands: CommandService) -> None:
        super().__init__(ctx)
        self.commands = commands
        self._stations: set[str] = set()
        self._resolver: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._slots = asyncio.Semaphore(MAX_SITES_AT_ONCE)
        self._closed = False
        #: Limits sent and not answered yet, by session (``_send``).
        self._inflight: dict[str, asyncio.Task[LimitAnswer]] = {}
        #: Each charger's stack level for site limits, while it stays connected (and
        #: until when, for one that did not say: ``LEVEL_UNKNOWN_FOR``).
        self._levels: dict[str, tuple[int, datetime | None]] = {}
        #: The units each charger said it takes limits in, read with its stack level
        #: (``allowed_units_of``; none known: the site's unit is sent).
        self._units: dict[str, frozenset[ChargingRateUnit]] = {}
        #: Chargers found to take one configuration key per GetConfiguration, while they
        #: stay connected: asked each key alone at once (``_read_keys``).
        self._one_key: set[str] = set()
        #: By cpId: the connection of its charger this instance's services last
        #: announced (``_heard``): a ``followed`` announcement of another is elsewhere.
        self._connections: dict[str, int | None] = {}
        #: Sites to share again later (``_later``), by site.
        self._timers: dict[str, asyncio.TimerHandle] = {}
        #: Stations whose charger came back online (``charger_back``) until their site
        #: is found; then, by site, until its next recompute tells their sessions again.
        self._back_stations: set[str] = set()
        self._back: dict[str, set[str]] = {}
        #: By site: sessions owed their limit again whose last one was still in flight
        #: (``_defer``), told once it has been answered.
        self._owed: dict[str, set[str]] = {}
        #: (station, transaction) whose limit was lifted already (``_lift``), not lifted
        #: again by ``_left_behind``.
        self._lifted: set[tuple[str, int]] = set()
        #: Each charger's fallback for new sessions (a TxDefaultProfile).
        self.fallbacks = SiteFallbacks(ctx.store, self._command, self._stack_level,
                                       self._unit_of, self.now, self.charger_back,
                                       self.request_station)
        ctx.published.append(self._heard)

    # ------------------------------------------------------------- triggers
    def _heard(self, event: Any) -> None:
        """A published event that may change what charges behind a site (a start is
        taken after its answer instead: ``start_answered``)."""
        if isinstance(event, SessionChanged) and event.change != "ENDED":
            return
        if isinstance(event, ConnectorStatusChanged):
            # A state that offers no energy: a session ended without its stop no longer
            # draws (``_ending``).
            if event.status in _NOT_DRAWING and event.station_id is not None:
                self.request_station(event.station_id)
            return
        if isinstance(event, StationConnectionChanged):
            self._connections[event.cp_id] = event.connection
            self._forget(event.cp_id)  # read again: it may be another charger
            if event.station_id is not None:
                self.fallbacks.forget(event.station_id)
            if event.online and event.station_id is not None:
                self.charger_back(event.station_id)
                return
        if isinstance(event, SessionChanged | StationConnectionChanged | StationChanged) \
                and event.station_id is not None:
            self.request_station(event.station_id)

    def _forget(self, cp_id: str) -> None:
        """Forgets what was read of the charger (its stack level, its units, one key at
        a time): read again before its next limit."""
        self._levels.pop(cp_id, None)
        self._units.pop(cp_id, None)
        self._one_key.discard(cp_id)

    def followed(self, event: Any) -> None:
        """An event announced between instances (``ChargingService.follow``, any
        instance's): the charger connected or went on another instance (a connection
        newer than the last this instance's services announced, ``_connections``) is
        forgotten here too (``_forget``). This instance had read its level and units
        (a site limit or a fallback sent through the instance holding it) and kept them
        up to ``LEVEL_KNOWN_FOR``: a reconnect (new firmware, another charger) went unseen.
        Events lost between instances may have been such: all is forgotten. Told on
        every instance, serving chargers or the API alone, by its one subscription the
        wiring starts (QA s30: an API-only instance had none and kept them for their
        hour, review r27-smart3)."""
        if isinstance(event, EventsDropped):
            self._levels.clear()
            self._units.clear()
            self._one_key.clear()
        elif isinstance(event, StationConnectionChanged):
            mine = self._connections.get(event.cp_id)
            # Newer than the last this instance announced (connection numbers grow
            # across instances); its own, delivered back, are not read again.
            if mine is None or event.connection is None or event.connection > mine:
                self._forget(event.cp_id)

    def charger_back(self, station_id: str) -> None:
        """The station's charger came back online (connected, or its boot accepted):
        recompute its site, telling its sessions their limits again even if unchanged.
        The same profile id replaces what the charger holds, so telling it twice is
        harmless, and one that rebooted or lost its profile would draw its rating."""
        if self._closed:
            return
        self.fallbacks.forget(station_id)
        self._back_stations.add(station_id)
        self.request_station(station_id)

    def request_station(self, station_id: str) -> None:
        """Recompute the site of ``station_id`` (if it has one), soon."""
        if self._closed:
            return
        self._stations.add(station_id)
        if self._resolver is None or self._resolver.done():
            self._resolver = asyncio.create_task(self._resolve(), name="site-load-resolve")

    def request_site(self, site_id: str) -> None:
        """Recompute ``site_id`` soon: now, or once more after the run under way."""
        if self._closed:
            return
        if site_id in self._running:
            self._again.add(site_id)
            return
        self._running[site_id] = asyncio.create_task(self._run(site_id),
                                                     name=f"site-load-{site_id}")

    async def _resolve(self) -> None:
        while self._stations:
            batch = [self._stations.pop()
                     for _ in range(min(RESOLVE_BATCH, len(self._stations)))]
            # Taken with the batch (a station on no site must not stay marked for good).
            back = self._back_stations.intersection(batch)
            self._back_stations -= back
            try:
                stations = await self.store.get_many(Station, batch)
            except Exception:
                log.exception("finding the sites of %d stations failed", len(batch))
                continue
            for station in stations:
                if station is not None and station.site_id is not None:
                    if station.id in back:
                        self._back.setdefault(station.site_id, set()).add(station.id)
                    self.request_site(station.site_id)
                elif station is not None:  # behind no site: no fallback of ours stays
                    self.fallbacks.clear(station)
            await self._left_behind([st for st in stations if st is not None])

    async def _left_behind(self, stations: Sequence[Station]) -> None:
        """For stations behind no site now that were lately (their fallback not removed
        yet): forgets the shares still recorded for them, whichever site recorded them,
        and lifts the limit of each of their sessions under way, recorded or not. A
        share whose recording lost a race with the release of the site its station left
        was recorded nowhere, and no site's run would have lifted it (review s22: a
        station moved from one site to another and then out of every site kept the
        second site's limit). A clear of a profile the charger does not hold is answered
        Unknown, harmlessly. The others cost nothing."""
        left = [st for st in stations
                if st.site_id is None and st.site_fallback_kw is not None]
        if not left:
            return
        try:
            recorded = await self.store.find_all(SiteAllocation, In(
                "station_id", tuple(st.id for st in left)), limit=MAX_PER_SITE)
            sessions = await self._active([st for st in left if st.online])
            # Read again last: a station that joined a site meanwhile is that site's now,
            # and its share must not be lifted nor its record forgotten (review s22).
            still = {st.id for st in await self.store.get_many(
                Station, [st.id for st in left]) if st is not None and st.site_id is None}
            gone = [a for a in recorded if a.station_id in still]
            if gone:
                await self.store.write([Delete(a) for a in gone], [])
            # Once per session: a fallback whose removal the charger refuses keeps its
            # station here at every later event (review s22: a clear, and a warning,
            # each time).
            await self._lift_once([s for s in sessions if s.station_id in still])
        except Exception:
            log.exception("releasing the limits of %d stations behind no site failed",
                          len(left))

    async def _run(self, site_id: str) -> None:
        try:
            while True:
                self._again.discard(site_id)
                try:
                    async with self._slots:
                        await self.recompute(site_id)
                except Exception:  # the next trigger tries again
                    log.exception("sharing the power of site %s failed", site_id)
                if site_id not in self._again or self._closed:
                    break
        finally:
            self._running.pop(site_id, None)

    async def settled(self) -> None:
        """Waits until no recompute is asked for or running (tests, shutdown)."""
        while True:
            waiting = [*self._running.values(), *self._inflight.values(),
                       *self.fallbacks.under_way()]
            if self._resolver is not None and not self._resolver.done():
                waiting.append(self._resolver)
            if not waiting:
                return
            await asyncio.wait(waiting)

    async def close(self) -> None:
        """Stops: nothing more is asked, what runs is cancelled (a command under way is
        audited as unanswered by ``CommandService``)."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = [*self._running.values(), *self._inflight.values()]
        if self._resolver is not None:
            tasks.append(self._resolver)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.fallbacks.close()

    # ------------------------------------------------------------- people's profiles
    async def check_profile(self, station: Station, payload: dict[str, Any]) -> None:
        """Before a person's SetChargingProfile (``CommandService.profile_watch``): a
        TxProfile at the site's own stack level on a connector the site limits now
        (connector 0: any of the station's), or a TxDefaultProfile at that level on any
        of the site's chargers (each holds the site's fallback), is refused, ``IN_USE``
        on ``csChargingProfiles.stackLevel``. At a charger following OCPP 1.6 it replaces
        the site's profile (same stackLevel and purpose), and the site's next share
        replaces it in turn: either way one of the two limits is lost without a word
        (QA s21: 22 kW on a site sharing 20). A lower level is allowed (the site's limit
        wins), and a higher one is a deliberate override (``profile_commanded``)."""
        profile = payload.get("csChargingProfiles")
        if not isinstance(profile, dict):
            return
        if profile.get("chargingProfileId") in _OURS:
            # It would replace the site's fallback or a session's limit, and be replaced
            # by them in turn (QA s22 verify: accepted, then silently gone); on a station
            # in no site too, which may join one (and its leaving clears them).
            raise Conflict("this charging profile id is what sites set on their chargers: "
                           f"use one below {PROFILE_ID_BASE}",
                           field="csChargingProfiles.chargingProfileId", code="IN_USE")
        if station.site_id is None or profile.get("chargingProfilePurpose") not in _CLASHING:
            return
        # The site's fallback (a TxDefaultProfile at its level) is on every charger of
        # it, sessions or not (``site_fallbacks``).
        if profile.get("chargingProfilePurpose") == "TxProfile" \
                and not await self._limited(station, payload.get("connectorId")):
            return
        level = await self._stack_level(station.cp_id)
        if profile.get("stackLevel") == level:
            raise Conflict(f"stack level {level} is this site's own limit on this charger: "
                           "the two profiles would replace each other; use a lower level "
                           "(the site's limit wins) or, to override the site, a higher one",
                           field="csChargingProfiles.stackLevel", code="IN_USE")

    async def check_remote_start(self, station: Station, payload: dict[str, Any]) -> None:
        """Before a person's RemoteStartTransaction (``CommandService.profile_watch``):
        one carrying a charging profile on a station in a site is refused, ``IN_USE`` on
        ``chargingProfile``. Its transaction does not exist yet, so the site can neither
        count it as overridden nor keep the profile from replacing, or being replaced
        by, its own limit (review s21: 15 + 22 kW drawn on a 30 kW site). Start it
        without one; a SetChargingProfile for the transaction then is watched."""
        if station.site_id is not None and payload.get("chargingProfile") is not None:
            raise Conflict("this station's power is shared by its site, which sets each "
                           "transaction's limit: start it without a charging profile, "
                           "then set one for the transaction if it must differ",
                           field="chargingProfile", code="IN_USE")

    async def profile_commanded(self, outcome: CommandOutcome, payload: dict[str, Any]
                                ) -> None:
        """After a person's Set/ClearChargingProfile on a station in a site, unless the
        charger surely kept what it had (refused, not connected): the site asserts its
        limits again, as for a charger back online (``charger_back``: told again, held
        at its rating until it takes them). A clear may have removed the site's profile
        (QA s21: a clear of every profile, of its id or of every TxProfile was Accepted
        and the charger drew its rating, 32 kW on a 20 kW site, while the site said
        ACCEPTED). A TxProfile above the site's level overrides it: that session is
        held at its connector's rating (``OVERRIDDEN``) so the others' shares keep the
        sum within the limit; a clear of every TxProfile on its connector ends that."""
        station = outcome.station
        if self._closed or answer_of(outcome) in _KEPT:
            return
        if station.site_id is None:
            # Read again: a station that joined a site while the command was on its way
            # was shared before its answer was recorded (``_overridden_already`` read
            # none), and the override would go unseen.
            [now] = await self.store.get_many(Station, [station.id])
            if now is None or now.site_id is None:
                return
            station = now
        try:
            if outcome.action == "SetChargingProfile":
                await self._override(station, payload)
            else:
                await self._lift_overrides(station, payload)
        finally:  # whatever became of the marks, the limits are told again
            self.charger_back(station.id)

    async def _override(self, station: Station, payload: dict[str, Any]) -> None:
        """Marks the session a TxProfile above the site's level now governs
        ``OVERRIDDEN``, held at its connector's rating (the site's limit, not known)."""
        profile = payload["csChargingProfiles"]
        if profile.get("chargingProfilePurpose") != "TxProfile":
            return  # a TxProfile wins over any TxDefaultProfile whatever its level
        sessions = await self._limited(station, payload.get("connectorId"))
        if station.site_id is None or not sessions or int(profile.get("stackLevel", 0)) \
                <= await self._stack_level(station.cp_id):
            return
        [site] = await self.store.get_many(Site, [station.site_id])
        if site is None:
            return
        plugs = await self._connectors([station])
        for session in sessions:
            [held] = await self.store.get_many(SiteAllocation, [session.id])
            plug = plugs.get((session.station_id, session.connector_id))
            rating = None if plug is None else plug.max_kw
            bound_kw = max(site.max_power_kw if rating is None else rating,
                           0.0 if held is None else held.bound_kw)
            # The limit last sent stays with the unit it was sent in (amperes to a
            # charger taking only those), not the site's (review r27: "28.9 W").
            await self._record(site, held, session, 0.0 if held is None else held.power_kw,
                               None if held is None else held.limit,
                               LimitAnswer.OVERRIDDEN, bound_kw,
                               None if held is None else held.unit)

    async def _lift_overrides(self, station: Station, payload: dict[str, Any]) -> None:
        """A clear of every TxProfile on a connector (no id, no stack level, purpose
        TxProfile or none) removed a person's override there: its session is taken
        back under the site's control (told its limit with the others). Any narrower
        clear may have left the override: the session stays held at its rating."""
        if not _clears_every_tx_profile(payload):
            return
        connector = payload.get("connectorId")
        sessions = [s for s in await self._limited(station, None)
                    if connector is None or s.connector_id == connector]
        marked = [a for a in await self.store.get_many(
            SiteAllocation, [s.id for s in sessions])
                  if a is not None and a.answer is LimitAnswer.OVERRIDDEN]
        await self.store.write([Update(changed(a, SYSTEM, answer=None),
                                       fields=frozenset({"answer"}),
                                       only_if=("answer", LimitAnswer.OVERRIDDEN))
                                for a in marked], [])

    async def _overridden_already(self, site: Site, seen: _Seen) -> None:
        """Marks ``OVERRIDDEN`` (held at its connector's rating, as ``_override`` does)
        each session coming under the site's control (online, no share recorded, none on
        its way) that a person's TxProfile above the site's level governs already: set
        while its station was in no site, or in another site, which forgets its shares
        when the station leaves (QA sites s3: such a session was counted ACCEPTED at its
        share while it drew the operator's 22 kW, 37 kW on a 30 kW site). Found in the
        station's command records (``_overridden``)."""
        new = [s for s in seen.live if s.id not in seen.held and s.id not in self._inflight]
        marked = [s for s in new if await self._overridden(s)]
        if not marked:
            return
        for session in marked:
            rating = seen.rating(session)
            await self._record(site, None, session, 0.0, None, LimitAnswer.OVERRIDDEN,
                               site.max_power_kw if rating is None else rating)
        seen.held.update((a.session_id, a) for a in await self.store.get_many(
            SiteAllocation, [s.id for s in marked]) if a is not None)

    async def _overridden(self, session: Session) -> bool:
        """Whether a person's TxProfile above the charger's site level may govern the
        session now: set for it by a SetChargingProfile since the session was recorded,
        or carried by the remote start that began it (``_started_with``), and the latest
        of those and of the clears that lift one (``_lifts``) is such a profile. Read
        from the station's command records (the audit log's ``COMMAND`` entries with
        their answers), whatever site the station was in when it was sent: a site only
        hears of a person's profile commands to its own stations (``profile_commanded``).
        Only people's profile commands are read, chosen in the query (review r4: the
        latest 1000 entries of every kind, the site's own shares to the station's other
        connectors among them, left a person's override behind 500 later commands)."""
        entries = await self.store.find_all(AuditEntry, all_of(
            Eq("entity_id", session.station_id), Eq("action", AuditAction.COMMAND),
            In("command", _PEOPLES_PROFILE_COMMANDS),
            # Not the site's: the actor is not SYSTEM's (the query has no "not equal").
            any_of(Range("actor", lt=SYSTEM_ACTOR), Range("actor", gt=SYSTEM_ACTOR)),
            # A remote start is sent before the session is recorded, within its window.
            Range("at", gte=session.created_at - PENDING_START_WINDOW)),
            sort=[Sort("at", descending=True)], limit=MAX_COMMANDS_READ)
        level: int | None = None
        for entry in entries:
            after = entry.after or {}
            request = after.get("request")
            if entry.entity != "station" or entry.actor == SYSTEM_ACTOR \
                    or after.get("stage") != "ANSWERED" or not isinstance(request, dict) \
                    or after.get("error") in _KEPT_CODES:
                continue
            if entry.command == "RemoteStartTransaction":
                profile = _started_with(request, session)
                if profile is not None and await self._began_another(entry, session):
                    continue
            elif entry.at < session.created_at:
                continue  # before the session: not for its transaction
            elif entry.command == "ClearChargingProfile":
                if after.get("error") is None and _lifts(request, session):
                    return False
                continue
            else:
                profile = request.get("csChargingProfiles")
                if request.get("connectorId") != session.connector_id \
                        or not isinstance(profile, dict) \
                        or profile.get("transactionId") not in (None, session.transaction_id):
                    continue
            if not isinstance(profile, dict) \
                    or profile.get("chargingProfilePurpose") != "TxProfile":
                continue
            if level is None:
                level = await self._stack_level(session.cp_id)
            if _int(profile.get("stackLevel")) > level:
                return True
        return False

    async def _began_another(self, start: AuditEntry, session: Session) -> bool:
        """Whether the remote start whose answer ``start`` records began another session
        of the card at the station, recorded after that answer and before ``session``: a
        profile given in a RemoteStartTransaction governs the transaction it began only
        (OCPP 1.6 5.11; review s24: the same card's next, local, session within the
        window was held as overridden, and the site stopped limiting it). A start whose
        StartTransaction came before its answer was recorded is not found so, and such a
        later session is still held: more than it needs, never over the site's limit."""
        return await self.store.find_one(Session, all_of(
            Eq("station_id", session.station_id), Eq("id_tag", session.id_tag),
            Range("created_at", gte=start.at, lt=session.created_at))) is not None

    async def _limited(self, station: Station, connector_id: Any) -> list[Session]:
        """The station's ACTIVE sessions the site limits, on ``connector_id`` (0 or
        none: all of them)."""
        return [s for s in await self._active([station])
                if not connector_id or s.connector_id == connector_id]

    # ------------------------------------------------------------- the recompute
    async def recompute(self, site_id: str) -> None:
        """Shares the site's power among the sessions charging behind it now and tells
        each charger whose share changed.

        What the site holds first: for each session whose charger is offline, not
        under control (its last limit refused or unanswered, or one being raised by
        another instance) or being told a limit now, the most it may draw
        (``SiteAllocation.bound_kw``: what it accepted last; its connector's rating
        before any). The sessions under control, and new ones, share the rest. Lower
        limits go first, and a new session's first one is no more than what nobody
        holds yet (it charges unlimited until told, and the others have not lowered
        yet); the raises only once all of those were accepted (a refusal or silence
        changes what the site must hold: it is shared again instead), and only after
        ``_claim`` (another instance may be sharing the site at the same time). A run
        waits for its chargers' answers ``ANSWER_WAIT_S`` at most: a silent one is
        left to answer in the background (the site is shared again when it does), so it
        never holds the next session's limit back for the command timeout. Sessions not
        under control are asked again in the background, for no more than what the site
        holds for them.

        A session whose charger came back online (``charger_back``) is told its limit
        again with the lower ones, changed or not (or, not under control, asked again at
        once), for no more than it accepted last: it is no raise, and a higher share
        follows in the next run as any raise. Until the charger takes it, the site holds
        what it may draw without it (``_Seen.unsure``): a refusal or silence leaves it
        held at its rating. One whose last limit is still in flight (or being raised by
        another instance) is told once that has been answered (``_defer``)."""
        [site] = await self.store.get_many(Site, [site_id])
        seen = await self._read(site_id, site)
        try:
            if site is not None:
                await self._overridden_already(site, seen)
            await self._share(site_id, site, seen)
        finally:
            # After the shares: a charger takes one command at a time, and a session's
            # limit must not wait behind the fallback (a silent charger's for the
            # command timeout).
            if site is not None:
                self.fallbacks.tell(site, seen.stations)

    async def _share(self, site_id: str, site: Site | None, seen: _Seen) -> None:
        """``recompute``'s sharing of what it read (``seen``)."""
        again = self._came_back(site_id, seen)
        if site is None or not seen.sessions:
            return
        live, held, bound = seen.live, seen.held, seen.bound
        busy = set(self._inflight)
        for session in live:
            if session.id in busy:
                # Its limit is on its way (this site's run, or the run of a site its
                # station just left): shared again once it lands, or the share it needs
                # here waits for the next trigger (review s22: a station moved to
                # another site mid-answer was never told the new site's share).
                self._inflight[session.id].add_done_callback(self._again_for(site.id))
        controlled = [s for s in live if s.id not in busy and (
            s.id not in held or held[s.id].answer is LimitAnswer.ACCEPTED)]
        under = {s.id for s in controlled}  # by id: a Session compares all its fields
        loose = [s for s in live if s.id not in under]
        # A person's higher TxProfile governs these: held at their rating, not asked.
        overridden = {s.id for s in loose
                      if s.id in held and held[s.id].answer is LimitAnswer.OVERRIDDEN}
        # An offline charger goes on applying what it has (OCPP 1.6 keeps a TxProfile
        # for its transaction, and it charges offline): held back, as a loose one's.
        offline = sum(bound(s) for s in seen.sessions if s.station_id not in seen.online)
        # Ended here but not yet at the charger: it still draws what it may (``_ending``).
        offline += sum(bound(s) for s in seen.ending)
        shares = allocate(site.max_power_kw, site.min_power_kw,
                          [seen.demand(s) for s in controlled],
                          offline + sum(bound(s) for s in loose))
        due = [(s, shares[s.id]) for s in controlled if s.id not in again
               and self._due(site, held.get(s.id), shares[s.id], seen.phases_of(s),
                             seen.units.get(s.cp_id, site.unit))]
        lower = [(s, kw) for s, kw in due if s.id not in held or kw < bound(s)]
        higher = [(s, kw) for s, kw in due if s.id in held and kw >= bound(s)]
        # Told again: what it accepted last at most (a raise goes only after its claim).
        resent = [(s, min(shares[s.id], held[s.id].bound_kw))
                  for s in controlled if s.id in again]
        drawn = offline + sum(bound(s) for s in live)  # at most, before anyone lowers
        first = {s.id: self._first_limit(site, seen, s, kw, drawn)
                 for s, kw in lower if s.id not in held}
        sent = [self._send(site, seen, held.get(s.id), s, first.get(s.id, kw), bound(s))
                for s, kw in [*lower, *resent]]
        if not await self._all_accepted(site.id, sent):
            self._again.add(site.id)  # shared again with what the site must now hold
        elif any(first[s.id] < kw for s, kw in lower if s.id in first) \
                or any(kw < shares[s.id] for s, kw in resent):
            self._again.add(site.id)  # the others lowered: these get the rest
        elif higher and await self._claim(site, seen, higher,
                                          told={s.id for s, _ in [*lower, *resent]}) \
                and not await self._all_accepted(site.id, [
                    self._send(site, seen, held[s.id], s, kw, bound(s))
                    for s, kw in higher]):
            # A refused raise leaves the session loose at what it had: shared again now,
            # so the next run holds that for it, gives the rest to the others and asks
            # it again in a while (``RETRY_LOOSE_S``). Left alone, the power it refused
            # went unused and it was never asked again (QA s21).
            self._again.add(site.id)
        under_way = {s.id for s in loose
                     if s.id not in busy and self._under_way(held[s.id])}
        if under_way:
            self._later(site.id)  # another instance's raise: shared again once it lands
        fair = allocate(site.max_power_kw, site.min_power_kw,
                        [seen.demand(s) for s in live], offline)
        for session in loose:
            if session.id in under_way or session.id in busy or session.id in overridden:
                continue
            told = held[session.id].limit_sent_at
            # Back online: asked at once (it may have lost what it had), not in a while.
            wait = 0.0 if told is None or session.id in again else \
                RETRY_LOOSE_S - (self.now() - told).total_seconds()
            if wait > 0:  # asked moments ago: again in a while, not at every recompute
                self._later(site.id, wait)
            else:
                self._retry(site, seen, held[session.id], session,
                            min(fair[session.id], bound(session)), bound(session))

    def _again_for(self, site_id: str) -> Callable[[asyncio.Task[LimitAnswer]], None]:
        """A done callback sharing ``site_id`` again."""
        def again(_: asyncio.Task[LimitAnswer]) -> None:
            self.request_site(site_id)
        return again

    def _came_back(self, site_id: str, seen: _Seen) -> set[str]:
        """The sessions to tell their limit again now, their charger being back online
        (``charger_back``; those it owed since, ``_defer``): ACTIVE, online, holding a
        share. Marks them ``unsure`` in ``seen``. One whose charger went away again is
        forgotten (its next connection marks it again); one with a limit still in
        flight, here or raised by another instance, waits for its answer."""
        marked = self._back.pop(site_id, set())
        owed = self._owed.pop(site_id, set())
        seen.unsure = {s.id for s in seen.live if s.id in seen.held
                       and seen.held[s.id].answer is not LimitAnswer.OVERRIDDEN
                       and (s.id in owed or s.station_id in marked)}
        waiting = {sid for sid in seen.unsure
                   if sid in self._inflight or self._under_way(seen.held[sid])}
        self._defer(site_id, waiting)
        return seen.unsure - waiting

    def _defer(self, site_id: str, waiting: set[str]) -> None:
        """Owes ``waiting`` their limit again, for the site's run once their limit in
        flight has been answered (that one may have gone to the lost connection, or
        been accepted just before the charger rebooted)."""
        if not waiting:
            return
        self._owed.setdefault(site_id, set()).update(waiting)
        for session_id in waiting:
            task = self._inflight.get(session_id)
            if task is None:  # another instance's raise: its claim lapses or it lands
                self._later(site_id)
            else:
                task.add_done_callback(lambda _: self.request_site(site_id))

    @staticmethod
    def _first_limit(site: Site, seen: _Seen, session: Session, share: float,
                     drawn: float) -> float:
        """A new session's first limit: its share, but no more than what the others
        may not draw now (``drawn`` all of them together, this one at its rating), and 0
        rather than less than the least it could charge at."""
        headroom = site.max_power_kw - (drawn - seen.bound(session))
        least = least_share(seen.demand(session), site.min_power_kw)
        kw = max(0.0, min(share, floor_share(headroom, least)))
        return kw if kw >= least - 1e-9 else 0.0

    def _send(self, site: Site, seen: _Seen, held: SiteAllocation | None, session: Session,
              power_kw: float, bound_kw: float) -> asyncio.Task[LimitAnswer]:
        """Tells the session its limit in a task of its own, in flight (``_inflight``)
        until the charger answers: meanwhile the site holds what it may draw and asks it
        nothing more."""
        async def tell() -> LimitAnswer:
            try:
                return await self._tell(site, seen, held, session, power_kw, bound_kw)
            finally:
                self._inflight.pop(session.id, None)

        task = asyncio.create_task(tell(), name=f"site-load-limit-{session.id}")
        self._inflight[session.id] = task
        return task

    async def _all_accepted(self, site_id: str, sent: Sequence[asyncio.Task[LimitAnswer]]
                            ) -> bool:
        """Waits (``ANSWER_WAIT_S`` at most) for the chargers' answers: whether every one
        accepted. One still unanswered goes on in the background and has the site shared
        again once it answers."""
        if not sent:
            return True
        done, waiting = await asyncio.wait(sent, timeout=ANSWER_WAIT_S)
        for task in waiting:
            task.add_done_callback(lambda _: self.request_site(site_id))
        return not waiting and all(
            not t.cancelled() and t.exception() is None
            and t.result() is LimitAnswer.ACCEPTED for t in done)

    def _under_way(self, allocation: SiteAllocation) -> bool:
        """A raise being sent now: PENDING, recorded less than the longest a command
        takes ago (waiting its turn, then its answer). One older was left by an instance
        that stopped meanwhile: asked again like any not under control."""
        if allocation.answer is not LimitAnswer.PENDING:
            return False
        return self.now() - allocation.updated_at < timedelta(
            seconds=3 * self.commands.timeout)

    async def _read(self, site_id: str, site: Site | None) -> _Seen:
        """The site's active sessions and their shares as stored now (forgetting the
        shares of sessions no longer charging behind it: all of them, for a site
        removed)."""
        stations = [] if site is None else await self.store.find_all(
            Station, Eq("site_id", site.id), limit=MAX_PER_SITE)
        sessions = await self._active(stations)
        ids = {s.id for s in sessions}
        recorded = await self.store.find_all(SiteAllocation, Eq("site_id", site_id),
                                             limit=MAX_PER_SITE)
        ending = await self._ending(stations, sessions,
                                    [a for a in recorded if a.session_id not in ids])
        ids |= {s.id for s in ending}
        await self._release([a for a in recorded if a.session_id not in ids])
        # By session (an allocation's id is its session's): one recorded under the site
        # a station just left moves with it.
        held = {a.session_id: a for a in await self.store.get_many(
            SiteAllocation, list(ids)) if a is not None}
        plugs = await self._connectors(stations) if sessions else {}
        ratings = {key: plug.max_kw for key, plug in plugs.items()}
        limit = site.max_power_kw if site is not None else 0.0
        settings = () if site is None else (site.max_power_kw, site.min_power_kw,
                                            site.unit, site.voltage, site.phases)
        allowed = await self._stored_units(stations) if sessions else {}
        return _Seen(sessions, {st.id for st in stations if st.online}, held, ratings,
                     limit, settings, record=site,
                     phases={key: plug.phases for key, plug in plugs.items()},
                     ending=ending, stations=stations, allowed=allowed,
                     units={} if site is None else {
                         st.cp_id: self.unit_for(st.cp_id, site.unit, allowed.get(st.cp_id))
                         for st in stations})

    async def _stored_units(self, stations: Sequence[Station]
                            ) -> dict[str, frozenset[ChargingRateUnit]]:
        """By cpId, the units each station's charger takes as its stored configuration
        says (``ConfigurationKey``, in force since its last boot: written by every
        GetConfiguration answer, the site's own read on whichever instance made it, an
        operator's ``getConfiguration``). Each instance shares a site with the same
        least per session so: one that had not read a charger itself took its least as
        0 (limits in W), lowered another session to make room, then paused the charger
        taking only amperes, and the power went unused (review r27). One query per run
        of a site with sessions; none on a charger's handler path."""
        found = await self.store.find_all(ConfigurationKey, all_of(
            In("station_id", tuple(st.id for st in stations)),
            Eq("folded_key", folded_key(ALLOWED_UNITS_KEY))), limit=len(stations))
        booted = {st.id: st.booted_at for st in stations}
        units: dict[str, frozenset[ChargingRateUnit]] = {}
        for known in found:
            value = in_force(known, booted.get(known.station_id))
            if value is not None:
                units[known.cp_id] = units_named(value)
        return units

    async def _ending(self, stations: Sequence[Station], active: Sequence[Session],
                      gone: Sequence[SiteAllocation]) -> list[Session]:
        """Of the sessions with a share recorded and no longer ACTIVE (``gone``), those
        closed without their StopTransaction (an operator's ``endSession``) whose
        charger may still charge them: its station online, the connector not reporting
        a state that offers no energy (``_NOT_DRAWING``), no newer session on it. Their
        share is kept and held (QA s21: freed at once, while the charger drew its old
        limit until its stop, 40 kW on 30); their stop, the station going offline or the
        connector in such a state release it (review s21: Finishing held it for hours,
        capping the others)."""
        online = {st.id for st in stations if st.online}
        candidates = [a.session_id for a in gone if a.station_id in online]
        if not candidates:
            return []
        plugs = {(s.station_id, s.connector_id) for s in active}
        ended = [s for s in await self.store.get_many(Session, candidates)
                 if s is not None and closed_without_stop(s)
                 and (s.station_id, s.connector_id) not in plugs]
        if not ended:
            return []
        connectors = await self.store.find_all(Connector, In(
            "station_id", tuple({s.station_id for s in ended})), limit=MAX_PER_SITE * 10)
        free = {(c.station_id, c.connector_id) for c in connectors
                if c.status in _NOT_DRAWING}
        return [s for s in ended if (s.station_id, s.connector_id) not in free]

    async def _claim(self, site: Site, seen: _Seen,
                     raises: Sequence[tuple[Session, float]], told: set[str]) -> bool:
        """Before raising: records each raise as PENDING with what its charger may then
        draw (the new share), and reads the site again. Unchanged but for these, the
        raises may go: another instance sharing the site from then on holds them back.
        Otherwise (another instance changed a share or a session started or ended since
        this run read the site) they are taken back and the site is shared again soon:
        two instances raising from one reading could together pass the site's limit."""
        # Each onto the answer this run read: an operator's override recorded since
        # (``profile_commanded`` runs outside the site's run) must not be marked PENDING
        # and then answered ACCEPTED at the share (review s21: 37 kW on 30). Refused
        # whole, the raises wait for the next run, which reads the override.
        intents = [Update(changed(seen.held[s.id], SYSTEM, answer=LimitAnswer.PENDING,
                                  bound_kw=max(kw, seen.bound(s))),
                          fields=frozenset({"answer", "bound_kw"}),
                          only_if=("answer", seen.held[s.id].answer), required=True)
                   for s, kw in raises]
        try:
            await self.store.write(list(intents), [])
        except Conflict:
            self._later(site.id)
            return False
        [now] = await self.store.get_many(Site, [site.id])
        again = await self._read(site.id, now)
        mine = {s.id for s, _ in raises} | told  # ours: raised now, lowered before
        if now is not None and again.key(skip=mine) == seen.key(skip=mine):
            return True
        await self.store.write([Update(changed(seen.held[s.id], SYSTEM,
                                               answer=seen.held[s.id].answer,
                                               bound_kw=seen.held[s.id].bound_kw),
                                       fields=frozenset({"answer", "bound_kw"}),
                                       only_if=("answer", LimitAnswer.PENDING))
                                for s, _ in raises], [])
        self._later(site.id)
        return False

    def _later(self, site_id: str, delay: float | None = None) -> None:
        """Shares the site again after ``delay`` s, or in a moment (jittered: two
        instances that took their raises back do not try again in step). One timer per
        site, the soonest asked for."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + (random.uniform(*RETRY_AFTER_S) if delay is None else delay)
        timer = self._timers.get(site_id)
        if timer is not None and not timer.cancelled() and timer.when() <= due:
            return
        if timer is not None:
            timer.cancel()

        def fire() -> None:
            self._timers.pop(site_id, None)
            self.request_site(site_id)

        self._timers[site_id] = loop.call_at(due, fire)

    def _retry(self, site: Site, seen: _Seen, held: SiteAllocation, session: Session,
               power_kw: float, bound_kw: float) -> None:
        """Asks a charger not under control again, in the background (``_send``; it may
        draw ``bound_kw`` until it answers). Accepted, the site is shared again with it
        under control."""
        if session.id in self._inflight or self._closed:
            return
        task = self._send(site, seen, held, session, power_kw, bound_kw)
        task.add_done_callback(
            lambda t: self.request_site(site.id) if not t.cancelled()
            and t.exception() is None and t.result() is LimitAnswer.ACCEPTED else None)

    async def _active(self, stations: Sequence[Station]) -> list[Session]:
        if not stations:
            return []
        return await self.store.find_all(Session, all_of(
            In("station_id", tuple(st.id for st in stations)),
            Eq("state", SessionState.ACTIVE)), limit=MAX_PER_SITE)

    async def _connectors(self, stations: Sequence[Station]
                          ) -> dict[tuple[str, int], Connector]:
        connectors = await self.store.find_all(Connector, In(
            "station_id", tuple(st.id for st in stations)), limit=MAX_PER_SITE * 10)
        return {(c.station_id, c.connector_id): c for c in connectors}

    @staticmethod
    def _due(site: Site, held: SiteAllocation | None, power_kw: float, phases: int,
             unit: ChargingRateUnit) -> bool:
        """Whether a session under control must be told: its share (as sent, in
        ``unit``, the one its charger takes: ``unit_for``, on its connector's
        ``phases``) changed."""
        if held is None or held.unit != unit:
            return True
        return held.limit != limit_in_unit(power_kw, unit, site.voltage, phases)

    async def _release(self, gone: Sequence[SiteAllocation]) -> None:
        """Forgets the shares of sessions no longer charging behind the site. One still
        charging on a station that left every site is also told its limit is lifted
        (ClearChargingProfile of ChargeGraph's profile id): it kept charging at its last
        share, however low, until its transaction ended. One whose station joined
        another site is not: that site's share replaces the profile (same id), and a
        clear landing after it would lift the new site's limit."""
        if not gone:
            return
        await self.store.write([Delete(a) for a in gone], [])
        sessions = {s.id: s for s in await self.store.get_many(
            Session, [a.session_id for a in gone]) if s is not None}
        still = [a for a in gone if a.session_id in sessions
                 and sessions[a.session_id].state is SessionState.ACTIVE]
        if not still:
            return
        stations = {st.id: st for st in await self.store.get_many(
            Station, list({a.station_id for a in still})) if st is not None}
        await self._lift_once([a for a in still if a.station_id in stations
                               and stations[a.station_id].site_id is None])

    async def _lift_once(self, limited: Sequence[SiteAllocation | Session]) -> None:
        """Lifts each limit not lifted yet (by this instance): a station left behind is
        looked at by every later event of it (``_left_behind``), and its old site's run
        releases it too."""
        if len(self._lifted) > MAX_LIFTED_KEPT:
            self._lifted.clear()
        todo = [a for a in limited if (a.station_id, a.transaction_id) not in self._lifted]
        self._lifted.update((a.station_id, a.transaction_id) for a in todo)
        await asyncio.gather(*(self._lift(a) for a in todo))

    async def _lift(self, allocation: SiteAllocation | Session) -> None:
        try:
            outcome = await self.commands.send(
                SYSTEM, allocation.cp_id, "ClearChargingProfile",
                {"id": profile_id(allocation.connector_id)})
        except DomainError as exc:
            log.info("the limit of transaction %d was not lifted: %s",
                     allocation.transaction_id, exc.message)
            return
        if outcome.error is not None:
            log.warning("%s answered %s to lifting the site limit of transaction %d",
                        allocation.cp_id, answer_of(outcome).value,
                        allocation.transaction_id)

    async def _tell(self, site: Site, seen: _Seen, held: SiteAllocation | None,
                    session: Session, power_kw: float, bound_kw: float) -> LimitAnswer:
        """Sends the session's share and records it with the charger's answer and what
        the charger may draw after it (``bound_kw`` before). In amperes, converted with
        its connector's phases (``_Seen.phases_of``), and never between 0 and 6 A: a
        limit held below that (a loose session asked again for what it may draw) is
        raised to 6 A when its connector is rated no more (it draws its rating, which
        the site holds), else sent as 0, paused."""
        phases = seen.phases_of(session)
        # A limit told again is one to lift again once its station leaves every site.
        self._lifted.discard((session.station_id, session.transaction_id))
        level = await self._stack_level(session.cp_id)
        # Known once the level was read (else as stored, ``_Seen.allowed``).
        unit = self.unit_for(session.cp_id, site.unit, seen.allowed.get(session.cp_id))
        seen.units[session.cp_id] = unit
        least = seen.least_kw(session)
        if 0 < power_kw < least - 1e-9:
            rating = seen.rating(session)
            power_kw = least if rating is not None and rating <= least else 0.0
        limit = limit_in_unit(power_kw, unit, site.voltage, phases)
        payload = tx_profile(session.connector_id, session.transaction_id, limit,
                             unit, phases, level)
        try:
            outcome = await self.commands.send(SYSTEM, session.cp_id, "SetChargingProfile",
                                               payload)
            answer = answer_of(outcome)
        except DomainError as exc:  # refused before sending (the session ended meanwhile)
            log.info("site %s: limit for transaction %d not sent: %s", site.id,
                     session.transaction_id, exc.message)
            answer = LimitAnswer.ERROR
        else:
            if isinstance(outcome.error, ChargerBusy):
                # Never sent (the charger was busy with other commands till it timed
                # out): nothing changed at the charger, so nothing is recorded, and the
                # site is shared again in a moment rather than held loose for
                # ``RETRY_LOOSE_S`` (a fallback at a silent charger's connection held a
                # new session's first limit back a minute).
                log.info("site %s: limit for transaction %d not sent, %s was busy",
                         site.id, session.transaction_id, session.cp_id)
                self._later(site.id)
                return LimitAnswer.ERROR
        if answer is not LimitAnswer.ACCEPTED:
            log.warning("site %s: %s answered %s to its limit for transaction %d",
                        site.id, session.cp_id, answer.value, session.transaction_id)
        await self._record(site, held, session, power_kw, limit, answer,
                           bound_after(bound_kw, power_kw, answer), unit)
        return answer

    async def _command(self, viewer: Viewer, cp_id: str, action: str,
                       payload: dict[str, Any]) -> CommandOutcome:
        """``self.commands.send`` as it is at the call (tests script the chargers by
        replacing ``commands``; the fallbacks' commands must go the same way)."""
        return await self.commands.send(viewer, cp_id, action, payload)

    def unit_for(self, cp_id: str, site_unit: ChargingRateUnit,
                 stored: frozenset[ChargingRateUnit] | None = None) -> ChargingRateUnit:
        """The unit the charger is sent its site's limits in (``unit_to_send``), as far as
        its last GetConfiguration answer to this instance on this connection said
        (``_stack_level`` reads it); before then as its ``stored`` configuration says
        (``_stored_units``: another instance's read); the site's when neither does."""
        allowed = self._units.get(cp_id)
        if allowed is None:
            allowed = stored or frozenset()
        return unit_to_send(site_unit, allowed)

    async def _unit_of(self, station: Station, site_unit: ChargingRateUnit
                       ) -> ChargingRateUnit:
        """``unit_for`` the station's charger from the same sources as its sessions'
        limits (``_Seen.allowed``): read here, else its stored configuration. The
        fallback took the site's unit whenever this instance had not read the units
        itself (review r27: its read failed, or another instance made it)."""
        if station.cp_id in self._units:
            return self.unit_for(station.cp_id, site_unit)
        stored = await self._stored_units([station])
        return self.unit_for(station.cp_id, site_unit, stored.get(station.cp_id))

    async def _stack_level(self, cp_id: str) -> int:
        """The stack level of the charger's site limits: ``STACK_LEVEL``, or the highest
        it takes (its ChargeProfileMaxStackLevel) when that is lower: a charger holding
        to the key refuses a profile above it. Read once per connection (forgotten when
        it connects or goes), with the units it takes (``_units``); a charger that does
        not say is sent ``STACK_LEVEL``."""
        known = self._levels.get(cp_id)
        if known is not None and (known[1] is None or known[1] > self.now()):
            return known[0]
        try:
            result = await self._read_keys(cp_id)
        except DomainError:
            return STACK_LEVEL
        if result is None:
            # Not asked again before every limit (QA s16: twice the traffic and the
            # audit entries, and a silent charger's timeout each time): for a while.
            self._levels[cp_id] = (STACK_LEVEL, self.now() + LEVEL_UNKNOWN_FOR)
            return STACK_LEVEL
        level = stack_level_of(result)
        if ALLOWED_UNITS_KEY not in result.get("unread", ()):
            self._units[cp_id] = allowed_units_of(result)
            # Read again in a while even so: a reconnect (new firmware, another key) is
            # heard only by the instance holding the charger.
            self._levels[cp_id] = (level, self.now() + LEVEL_KNOWN_FOR)
        else:
            # Its units not read (the read of that key alone failed, not NotSupported
            # nor NotImplemented: those say it has no such key): not taken for "it
            # takes any" (review r27: limits in W to a charger its stored keys say
            # takes only Current, refused for an hour); the last known on this
            # connection stay, else the stored ones (``unit_for``), and both keys are
            # read again in a while, not an hour.
            self._levels[cp_id] = (level, self.now() + LEVEL_UNKNOWN_FOR)
        return level

    async def _read_keys(self, cp_id: str) -> dict[str, Any] | None:
        """The charger's answer for ``MAX_STACK_LEVEL_KEY`` and ``ALLOWED_UNITS_KEY``
        (their entries together, as one GetConfiguration answer, and under ``unread``
        the units key when its read failed: that says nothing of it; a NotSupported or
        NotImplemented to it alone, as an unknownKey, says it is not configured: the
        site's unit is sent, read again in ``LEVEL_KNOWN_FOR``); ``None`` when it
        gave none for the level. Both in one GetConfiguration; a key the answer neither gives
        nor calls unknown, or both after any CALLERROR to the two (NotSupported and
        NotImplemented too, as the list limits' read: review r27, a charger taking one
        key per request refused the two with NotImplemented and was sent level 90,
        refusing every limit), are asked each alone, the level first. A charger found
        to take one key at a time is asked so from then on, on this connection
        (``_one_key``): not three GetConfigurations at each read."""
        keys = [MAX_STACK_LEVEL_KEY, ALLOWED_UNITS_KEY]
        entries: list[Any] = []
        unread: list[str] = []
        if cp_id in self._one_key:
            missing = keys
        else:
            outcome = await self._configuration(cp_id, keys)
            if outcome.error is not None and not isinstance(outcome.error, ChargerCallError):
                return None  # no answer (a timeout, offline): nothing to ask alone
            said = set() if outcome.error is not None else {
                folded_key(str(k)) for k in outcome.result.get("unknownKey") or ()}
            entries = [] if outcome.error is not None else [
                e for e in outcome.result.get("configurationKey") or ()
                if isinstance(e, dict)]
            said |= {folded_key(str(e.get("key", ""))) for e in entries}
            missing = [k for k in keys if folded_key(k) not in said]
        for key in missing:
            alone = await self._configuration(cp_id, [key])
            if alone.error is not None:
                if key == MAX_STACK_LEVEL_KEY:
                    return None  # the level not known: its units are not asked
                if not isinstance(alone.error, ChargerNotSupported):
                    unread.append(key)  # not known: as before the read (``_stack_level``)
                # NotSupported/NotImplemented to the key alone: the charger has no such
                # key (as the list limits' read takes it), and says so at every read:
                # read as unknownKey, not configured (review r27-smart3: taken for a
                # failed read, both keys were read again every 10 minutes for ever).
                continue
            given = [e for e in alone.result.get("configurationKey") or ()
                     if isinstance(e, dict)]
            if any(folded_key(str(e.get("key", ""))) == folded_key(key) for e in given):
                self._one_key.add(cp_id)  # refused or left out with the other, given alone
            entries.extend(given)
        return {"configurationKey": entries, "unread": unread}

    async def _configuration(self, cp_id: str, keys: list[str]) -> CommandOutcome:
        return await self.commands.send(SYSTEM, cp_id, "GetConfiguration", {"key": keys})

    async def _record(self, site: Site, held: SiteAllocation | None, session: Session,
                      power_kw: float, limit: float | None, answer: LimitAnswer,
                      bound_kw: float, unit: ChargingRateUnit | None = None) -> None:
        """``unit``: the one ``limit`` was sent in (the site's when not given)."""
        values: dict[str, Any] = {
            "site_id": site.id, "company_id": site.company_id, "power_kw": power_kw,
            "bound_kw": bound_kw, "limit": limit, "unit": unit or site.unit,
            "limit_sent_at": self.now(), "answer": answer}
        change: Change
        if held is None:
            change = Insert(stamp_new(SiteAllocation(
                id=session.id, session_id=session.id, station_id=session.station_id,
                cp_id=session.cp_id, connector_id=session.connector_id,
                transaction_id=session.transaction_id, **values), SYSTEM))
        else:
            # As it is now, and onto that answer: an operator's override recorded while
            # the limit was in flight (OVERRIDDEN) must not be taken back by the
            # charger's answer to the site's limit, which would count the session at
            # its share again while it draws what the operator set (review s21: 37 kW
            # on a 30 kW site). Refused, the next run reads what is there.
            [current] = await self.store.get_many(SiteAllocation, [held.id])
            if answer is LimitAnswer.OVERRIDDEN:
                # An override is recorded whatever the site's limit in flight does
                # (review s21: guarded too, it lost to that limit's answer: 37 kW on 30).
                change = Update(changed(current or held, SYSTEM, **values))
            elif current is not None and current.answer is LimitAnswer.OVERRIDDEN:
                log.info("site %s: transaction %d was overridden while its limit was on "
                         "its way; its answer is not recorded", site.id,
                         session.transaction_id)
                return
            else:
                current = current or held
                change = patch(current, SYSTEM, only_if=("answer", current.answer),
                               required=True, **values)
        try:
            await self.store.write([change], [])
        except DomainError as exc:
            [now] = await self.store.get_many(SiteAllocation, [session.id]) \
                if answer is LimitAnswer.OVERRIDDEN and held is None else [None]
            if now is not None:
                # The first limit's answer recorded the share while the override was
                # read as none (review s21): the override is written over it.
                await self._record(site, now, session, power_kw, limit, answer, bound_kw,
                                   unit)
                return
            # Recorded meanwhile by another instance (Conflict), or forgotten since (its
            # session ended, or the site its station left released it: NotFound): a run
            # in a moment reads what is there. Left to the next trigger, a share the
            # charger holds could stay unrecorded, and never be lifted when its station
            # left every site (review s22, a station moved between sites).
            log.info("site %s: the share of transaction %d was not recorded: %s",
                     site.id, session.transaction_id, exc.message)
            self._later(site.id)
