"""Stations (charge points) and their connectors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from domain import validation as v
from domain.entities import (
    LIVE_RESERVATION_STATES,
    Company,
    Connector,
    ConnectorInterval,
    ConnectorStatus,
    ConnectorType,
    Registration,
    Reservation,
    ReservationState,
    Role,
    Session,
    SessionState,
    Station,
    Tariff,
    User,
)
from domain.errors import Conflict, Forbidden, UniqueViolation, ValidationError
from domain.events import (
    ConnectorStatusChanged,
    StationChanged,
    StationConnectionChanged,
    StationPasswordChanged,
    StationRemoved,
    StationSightChanged,
)
from domain.policy import SYSTEM, Viewer, refuse_unless_staff
from domain.ports import Change, Delete, Guard, Insert, Store
from domain.query import Eq, Filter, In, NotSub, Range, Sort, all_of
from domain.services import known_addresses
from domain.services.background import Background
from domain.services.base import (
    UNSET,
    Service,
    ServiceContext,
    books_of,
    committed,
    no_case_twin,
    not_erased,
    owned_by,
    pages,
    patch,
    reservation_changed,
    stamp_new,
)
from domain.services.configuration import forget_configuration
from domain.services.edits import edit, removal, retried
from domain.services.intervals import handed_over, left_in_books
from domain.services.offline_notices import forget_outages
from domain.services.tariffs import open_at, removal_end
from domain.services.withdrawal import forget_local_list

log = logging.getLogger("chargegraph.services")

#: The highest connector id a charger may report, and so register, beyond those the
#: station has (chargers report their connectors one by one: 1, then 2, ...); also the
#: cap for commands while the station has none registered.
MAX_UNREGISTERED_CONNECTORS = 10
MIN_STATION_PASSWORD = 8
MAX_STATION_PASSWORD = 40  # OCPP 1.6 security whitepaper: AuthorizationKey up to 40 chars
#: A station's unended prices a handover reads at once (it reads them all, page by page).
PRICES_AT_ONCE = 500


async def connector_in_range(store: Store, station: Station, connector_id: int, *,
                             reported: bool = False) -> None:
    """Refuse connector ids the station cannot have. A command may address its
    registered connectors (any up to the cap while it has none); what the charger
    ``reported`` may also name a connector not registered yet, up to the cap."""
    known = await store.find_all(Connector, Eq("station_id", station.id), limit=100)
    own = max((c.connector_id for c in known), default=None)
    # The cap bounds what a charger reports beyond the station's own connectors, and
    # commands while it has none: the message says so, not that it is the station's
    # (QA s32: "exceeds this station's 10" was said of a station of 2 connectors).
    if own is not None and (own >= MAX_UNREGISTERED_CONNECTORS or not reported):
        highest, limit = own, f"this station's highest, {own}"
    else:
        highest = MAX_UNREGISTERED_CONNECTORS
        limit = f"{highest}, the highest number a connector not registered may have"
    if connector_id > highest:
        raise ValidationError(f"connectorId {connector_id} exceeds {limit}",
                              field="connectorId", code="OUT_OF_RANGE")


@dataclass(frozen=True, slots=True)
class ConnectorSpec:
    connector_id: int
    type: ConnectorType = ConnectorType.TYPE2
    max_kw: float | None = None
    #: The phases it charges on; ``None``: its site's (``Connector.phases``).
    phases: int | None = None


def connector_phases(value: Any, field: str = "phases") -> int | None:
    """A connector's phases: 1, 2 or 3, or ``None`` (its site's)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value not in (1, 2, 3):
        raise ValidationError("1, 2 or 3 (null: the site's)", field=field,
                              code="OUT_OF_RANGE")
    return value


def _station_password(value: str, field: str = "password") -> str:
    # The codes user passwords and every other text field use for their bounds.
    if len(value) < MIN_STATION_PASSWORD:
        raise ValidationError(f"at least {MIN_STATION_PASSWORD} characters", field=field,
                              code="TOO_SHORT")
    if len(value) > MAX_STATION_PASSWORD:
        raise ValidationError(f"at most {MAX_STATION_PASSWORD} characters", field=field,
                              code="TOO_LONG")
    if not value.isascii() or not value.isprintable():
        raise ValidationError("printable ASCII only", field=field)
    return value


def _connector_spec(spec: ConnectorSpec, prefix: str = "", seen: set[int] | None = None
                    ) -> None:
    """A connector's number (one of ``seen`` so far is a DUPLICATE) and power, each
    reported (``prefix``: where the spec is in its input, ``connectors.1.``)."""
    checks = v.Checks()
    checks(v.connector_id, spec.connector_id, f"{prefix}connectorId")
    if seen is not None and not checks.failed(f"{prefix}connectorId"):
        checks(_unique, spec.connector_id, seen, f"{prefix}connectorId")
    checks(v.positive, spec.max_kw, f"{prefix}maxKw", max_value=1000)
    checks(connector_phases, spec.phases, f"{prefix}phases")
    checks.done()


def _connector_specs(specs: list[ConnectorSpec]) -> None:
    """A new station's connectors: each one's fields, and their numbers unique (the
    second use of a number is the one at fault)."""
    checks = v.Checks()
    seen: set[int] = set()
    for index, spec in enumerate(specs):
        checks(_connector_spec, spec, f"connectors.{index}.", seen)
    checks.done()


def _unique(number: int, seen: set[int], field: str) -> None:
    if number in seen:
        raise ValidationError("connector ids must be unique", field=field, code="DUPLICATE")
    seen.add(number)


def may_own(role: Role) -> bool:
    """Owners run their stations (commands, tariffs, history): an operator or an admin,
    never a driver, whose scope would not even show the station's sessions. Asked when
    a station is given an owner and when its owner's role changes
    (``AccountService.update_user``)."""
    return role is not Role.DRIVER


def _may_own(owner: User) -> None:
    if not may_own(owner.role):
        raise ValidationError("a driver cannot own a station; make them an operator",
                              field="ownerId", code="INVALID")
    if owner.erased_at is not None:
        # Nobody runs it for them (they never sign in again), and an erasure refuses
        # an owner of stations (review s22: one could be handed stations afterwards).
        raise Conflict("the account was erased", field="ownerId", code="INVALID_STATE")


#: The roles ``may_own`` allows, as a filter's values.
OWNER_ROLES = tuple(role for role in Role if may_own(role))


def owner_still(owner: User, viewer: Viewer) -> Guard:
    """The write naming ``owner`` a station's owner holds only while they are what it was
    checked against: a role that may own stations, not erased, and for an operator's
    write still of the operator's company. Read before, a demotion on another instance landing
    between the read and the write left a driver owning a station (QA s21); the
    demotion is guarded the other way (``AccountService.update_user``)."""
    where = all_of(Eq("id", owner.id), In("role", OWNER_ROLES), Eq("erased_at", None),
                   *([Eq("company_id", viewer.company_id)] if viewer.is_operator else []))
    return Guard(User, where)


#: What closes open sessions refused at their start in a write of the caller's, and
#: what announces each close once committed (``ChargingService.refused_closes``,
#: ``announce_closed``).
RefusedCloses = Callable[[Viewer, Sequence[Session]],
                         Awaitable[tuple[list[tuple[Station, Session]],
                                         list[tuple[Change, Any]]]]]


def not_charging(where: Filter) -> Guard:
    """A removal holds only while no session is active ``where``, as the store stands
    with its write (the refused ones it read closed by it, ``_refuse_if_charging``):
    checked by a read first (for the user's IN_USE), a start on another instance
    could still land before the removal's write and leave a session charging on a
    station that no longer exists (QA s21); the start is guarded the other way
    (``ChargingService._open_session``)."""
    return Guard(Session, all_of(where, Eq("state", SessionState.ACTIVE)), exists=False)


#: The open sessions a removal reads at most ``where`` it removes: more refuses it (IN_USE).
OPEN_AT_ONCE = 100

#: How many times ``create_station`` writes its station when a write met neither a twin
#: nor anything else standing, pausing before each next one (``StationService.
#: pause_to_retry``: random, two instances in step part).
CREATE_ATTEMPTS = 3


def _same_cp_id() -> UniqueViolation:
    """A station of the cpId being created, whatever its case, exists already."""
    return UniqueViolation("a station with this cpId exists (cpIds are one whatever their "
                           "case, as OCPP has them)", field="cpId")


class StationService(Service):
    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        #: What accepting a station that was Pending or Rejected sets off (``Services``
        #: wires in a TriggerMessage(BootNotification) to its charger, if connected): run
        #: in the background, so the update never waits on a charger.
        self.on_accepted: Callable[[Station], Awaitable[None]] | None = None
        #: Asked to share a site's power again when a station leaves it here (handed to
        #: another company); ``Services`` wires in ``SiteLoad.request_site``.
        self.on_site_left: Callable[[str], None] | None = None
        #: Cancels live reservations at their chargers before what they hold is removed
        #: (``Services`` wires in ``Withdrawal.cancel_reservations``): cancelled here
        #: only, the charger kept the plug reserved for the old card until it expired.
        self.cancel_at_chargers: Callable[[Viewer, Filter], Awaitable[None]] | None = None
        #: Closes, in a removal's write, the sessions refused at their start
        #: (``start_refused``) left open on what it removes, and announces each close
        #: after it (``Services`` wires in ``ChargingService.refused_closes`` and
        #: ``announce_closed``): such a session charges nothing, yet a charger that never
        #: stops it kept its station from being removed for good (review r27-accounts).
        #: Without them (a bare service) it refuses the removal as an accepted one does.
        self.close_refused: RefusedCloses | None = None
        self.announce_closed: Callable[[Station, Session], Awaitable[None]] | None = None
        #: Told the digests of a removed station's known charger addresses as they are
        #: deleted (``Services`` wires in ``KnownAddresses.forget``: dropped from every
        #: instance's memory too). A bare service deletes them only.
        self.forget_known: Callable[[list[str]], None] | None = None
        self._nudging = Background()

    async def create_station(self, viewer: Viewer, *, cp_id: str, name: str,
                             company_id: str | None = None, owner_id: str | None = None,
                             lat: float | None = None, lon: float | None = None,
                             address: str | None = None,
                             connectors: list[ConnectorSpec] | None = None,
                             password: str | None = None, checks: v.Checks | None = None
                             ) -> tuple[Station, list[Connector]]:
        """A station and its connectors in one write. Operators create stations for their
        own company (owned by themselves unless they name a colleague). Every invalid
        field is reported at once (with the caller's ``checks``), before the company and
        owner are looked up."""
        refuse_unless_staff(viewer, "create stations")
        checks = checks or v.Checks()
        cp_id = checks(v.cp_id, cp_id)
        name = checks(v.name, name)
        checks(v.coordinates, lat, lon)
        address = checks(v.optional_text, address, "location.address", 500)
        specs = connectors or []
        checks(_connector_specs, specs)
        if password is not None:
            password = checks(_station_password, password)
        checks.done()
        if viewer.is_operator:
            company_id = company_id or viewer.company_id
            owner_id = owner_id or viewer.user_id
        if company_id is not None:
            await self.visible(viewer, Company, company_id, field="companyId")
        if viewer.is_operator and company_id != viewer.company_id:
            raise Forbidden("operators create stations for their own company",
                            field="companyId")
        guards = []
        if owner_id is not None:
            owner = await self.visible(viewer, User, owner_id, field="ownerId")
            if viewer.is_operator and owner.id != viewer.user_id \
                    and owner.company_id != viewer.company_id:
                raise Forbidden("the owner must work for your company", field="ownerId")
            _may_own(owner)
            # The operator themselves may be of no company (then their own is none).
            guards.append(owner_still(owner, viewer) if owner.id != viewer.user_id
                          else Guard(User, all_of(Eq("id", owner.id),
                                                  In("role", OWNER_ROLES))))
            guards.append(not_erased(owner.id))
        station = stamp_new(
            Station(
                cp_id=cp_id,
                name=name,
                company_id=company_id,
                owner_id=owner_id,
                lat=lat,
                lon=lon,
                address=address,
                # Only ``None`` means "no password": an empty one is refused, not taken
                # as none (QA s17: a form's blank field left the charger open to anyone).
                auth_password_hash=await self.hash_password(password)
                if password is not None
                else None,
            ),
            viewer,
        )
        created = [stamp_new(self._connector(station, spec), viewer) for spec in specs]
        changes: list[tuple[Change, Any]] = [(Insert(station), None)]
        changes += [(Insert(c), None) for c in created]
        # A cpId is one whatever its case (``Station.cp_id_key``): a charger set up as
        # ``cp-001`` connects as station ``CP-001``, so no second station may be it. Not
        # a unique index (stations stored before may differ only in case): read first,
        # and guarded in the write against one created meanwhile (``no_case_twin``).
        same = Eq("cp_id_key", station.cp_id_key)

        async def twin() -> Station | None:
            # As committed: on MongoDB a read sees another create's insert in flight,
            # which may yet roll back (QA s29 mongo: refused DUPLICATE against it).
            return await committed(self.store, await self.store.find_one(Station, same),
                                   self.now())

        async def create() -> None:
            if await twin() is not None:
                raise _same_cp_id()
            try:
                await self.commit(viewer, changes,
                                  guards=[*guards, no_case_twin(station)])
            except Conflict as exc:
                if await twin() is not None:
                    raise _same_cp_id() from None
                if exc.code == "DUPLICATE":
                    # The unique index met a twin's insert that rolled back since: no
                    # station has the cpId, so the create is tried again.
                    raise Conflict("the station changed meanwhile", field="id",
                                   code="CHANGED") from exc
                raise

        # Refused with no twin standing: on MongoDB the guard is read after the write
        # (``Guard``), so two twins created in step may each be refused on the other's
        # write in flight and both rolled back (review r28-leftocpp: neither created).
        # Read and written again, after a random pause: of two such, at least one finds
        # no twin in its read after its own rollback, and so one is created.
        await retried(create, CREATE_ATTEMPTS, pause=self.pause_to_retry)
        return station, created

    @staticmethod
    def _connector(station: Station, spec: ConnectorSpec) -> Connector:
        """A connector of ``station`` as ``spec`` says (checked: ``_connector_spec``)."""
        return Connector(
            station_id=station.id,
            cp_id=station.cp_id,
            connector_id=spec.connector_id,
            type=spec.type,
            max_kw=spec.max_kw,
            phases=spec.phases,
        )

    async def managed_station(self, viewer: Viewer, station_id: str, field: str = "id"
                              ) -> Station:
        station = await self.visible(viewer, Station, station_id, field=field)
        if not self.policy.may_manage_station(viewer, station):
            raise Forbidden("you may not change this station", field=field)
        return station

    async def update_station(self, viewer: Viewer, station_id: str, *, name: Any = UNSET,
                             lat: Any = UNSET, lon: Any = UNSET, address: Any = UNSET,
                             company_id: Any = UNSET, owner_id: Any = UNSET,
                             password: Any = UNSET, registration: Any = UNSET,
                             heartbeat_interval: Any = UNSET,
                             checks: v.Checks | None = None) -> Station:
        """``heartbeat_interval``: what its charger's boots are answered with from now on
        (``Station.heartbeat_interval``; a ChangeConfiguration it accepts sets it too);
        ``None``: the global one again. The charger takes it at its next boot. The
        fields given are checked together (with the caller's ``checks``) before the
        station is read."""
        refuse_unless_staff(viewer, "change stations")
        checks = checks or v.Checks()
        name = name if name is UNSET else checks(v.name, name)
        if lat is not UNSET and lon is not UNSET:  # else judged with the stored one
            checks(v.coordinates, lat, lon)
        address = address if address is UNSET \
            else checks(v.optional_text, address, "location.address", 500)
        if password not in (UNSET, None):
            password = checks(_station_password, password)
        registration = checks(v.present, registration, "registration",
                              "registration cannot be empty")
        if heartbeat_interval not in (UNSET, None):
            heartbeat_interval = checks(v.heartbeat_interval, heartbeat_interval,
                                        "heartbeatInterval")
        checks.done()
        # Hashed before the station is read: the record written below is the one read,
        # and a charger's connect landing during a slow hash must not be overwritten.
        password_hash = password if password in (UNSET, None) \
            else await self.hash_password(password)
        given = {"name": name, "lat": lat, "lon": lon, "address": address,
                 "company_id": company_id, "owner_id": owner_id,
                 "auth_password_hash": password_hash, "registration": registration,
                 "heartbeat_interval": heartbeat_interval}
        station, updated, number = await retried(
            lambda: self._edit_station(viewer, station_id, given))
        await self._changed(updated)
        if password_hash not in (UNSET, None):
            # Its charger's connection, signed in with the old password, is closed by
            # whichever instance holds it; it cannot sign in again without the new one.
            # How a compromised charger is shut out (review s25: made Rejected and given
            # a new password, it stayed connected, acting Accepted, opening sessions on
            # drivers' cards, and its station could not be removed while they ran).
            await self.publish(StationPasswordChanged(**owned_by(updated)))
        if updated.sight != station.sight:
            await self._announce_sight(station, updated, number)
        if updated.registration is Registration.ACCEPTED \
                and station.registration is not Registration.ACCEPTED:
            self._nudge(updated)
        if station.site_id is not None and updated.site_id is None \
                and self.on_site_left is not None:
            self.on_site_left(station.site_id)  # its sessions' shares go to the others
        return updated

    async def _edit_station(self, viewer: Viewer, station_id: str, given: dict[str, Any]
                            ) -> tuple[Station, Station, int | None]:
        """``update_station``'s read, checks and write (``retried``): the station as read
        and as written (its ``sight`` one more when the edit changes who sees it), and
        the number the build before would have given a change of who sees it
        (``StationSightChanged.sight``)."""
        station = await self.managed_station(viewer, station_id)
        company_id, owner_id = given["company_id"], given["owner_id"]
        if given["auth_password_hash"] not in (UNSET, None) and ":" in station.cp_id:
            raise ValidationError("a charger whose identity has a ':' cannot sign in with a "
                                  "password (HTTP Basic auth)", field="password",
                                  code="INVALID")
        if company_id is not UNSET:
            if not viewer.is_admin:
                raise Forbidden("only admins move stations between companies",
                                field="companyId")
            if company_id is not None:
                await self.visible(viewer, Company, company_id, field="companyId")
        guards = []
        # Made Pending or Rejected mid-session, the station's session runs on: its charger
        # learns the registration at its next boot, and what it reports is judged by the
        # one it was told (``Station.charger_registration``, ``domain.registration``).
        # Refusing the change while a session was active (QA s25) held only if the start
        # was written first: one admitted on a cached Accepted copy (up to
        # ``CACHE_TTL_S`` on another instance) and written after it was left unstoppable
        # (review s25). A charger that booted before migration 60 (nothing kept) and
        # not since acts on the registration changed from; one that never booted was
        # told nothing, and is judged by the registration as it is (review s25: a
        # station made Rejected before its charger ever connected counted as told
        # Accepted, and its StartTransaction without a boot opened a session).
        told: Any = UNSET
        if given["registration"] not in (UNSET, station.registration) \
                and station.charger_registration is None and station.booted_at is not None:
            told = station.registration
        if owner_id not in (UNSET, None):
            owner = await self.visible(viewer, User, owner_id, field="ownerId")
            if viewer.is_operator and owner.company_id != viewer.company_id:
                raise Forbidden("the owner must work for your company", field="ownerId")
            _may_own(owner)
            guards.append(owner_still(owner, viewer))
        lat, lon = given["lat"], given["lon"]
        if lat is UNSET or lon is UNSET:
            v.coordinates(station.lat if lat is UNSET else lat,
                          station.lon if lon is UNSET else lon)
        fields = {**given, "charger_registration": told,
                  # A station joins only its own company's site: handed to another
                  # company, it leaves the old company's site (whose limit it charged under).
                  "site_id": None if company_id not in (UNSET, station.company_id) else UNSET}
        update = edit(station, viewer, **fields)
        if _sight_of(station) != _sight_of(cast(Station, update.record)):
            # Who sees it changes: its version moves on, in this write, which holds only
            # on the station as read (``edit``): of two edits the later has the higher,
            # and every event carries the version its read found (``owned_by``), so no
            # feed takes an older ownership for a newer one, whatever it heard or lost
            # (review s25: A->B and B->C published in the other order left B holding
            # C's station; review s26: a handover heard, the next one lost, outranked
            # every fresh read for good).
            # Guarded on the version read as well (``updated_at`` moves on with every
            # edit, but one written by MongoDB's milliseconds is a weak witness): no two
            # edits write one version.
            update = edit(station, viewer, **fields, sight=station.sight + 1,
                          also_if=(("sight", station.sight),))
            # For instances of the build before, during a rolling upgrade: it orders
            # handovers by a number of the whole store, drawn between the read and the
            # write (this build never reads it: ``StationSightChanged.sight``).
            number = await self.store.next_sequence("station_sight")
        else:
            number = None
        updated = cast(Station, update.record)
        changes: list[tuple[Change, Any]] = [(update, station)]
        history: list[Change] = []
        if books_of(updated) != books_of(station):
            # Its state history goes on in the new books from now, on its charger's
            # timeline (review r27): the old company keeps what it ran, the new one reads
            # its own only.
            history = await handed_over(self.store, station, updated, viewer, self.now())
            # None left open in the old books: a plug's first interval opened there
            # after that read fails the write, and it runs again (rolling it over).
            guards.append(left_in_books(station))
            now = self.now()
            ended, since = await self._end_station_prices(viewer, station, now)
            changes += ended
            # None left unended by the write but those it ends: one set meanwhile fails
            # it, and it runs again (one set before a later version, ending there, cut
            # the version in force: that edit fails the write instead). Not only open
            # ones: one set meanwhile before a later version read here ends where that
            # one begins, and the write calling that one off left it pricing the new
            # company's sessions (review s31). Those it ends are left out by id: one
            # ended just after a session received later by our clock ends after our now.
            guards.append(Guard(Tariff, all_of(
                _unended_prices(station, now),
                NotSub("id", Tariff.kind, In("id", tuple(p.id for _, p in ended)))
                if ended else None), exists=False))
            if since is not None:
                # A session received meanwhile may be priced by a price ended before it.
                guards.append(Guard(Session, all_of(
                    Eq("station_id", station.id), Range("created_at", gte=since)),
                    exists=False))
        await self.commit(viewer, changes, unaudited=history, guards=guards)
        return station, updated, number

    async def _end_station_prices(self, viewer: Viewer, station: Station, now: datetime
                                  ) -> tuple[list[tuple[Change, Any]], datetime | None]:
        """The removal of every price set on ``station`` itself that is not ended yet (in
        force, or set to begin later), for a handover to another company's (or owner's)
        books, in its write: a station's tariff wins over its company's, so the price
        its former company set went on pricing the new company's sessions there, at a
        price and in a currency it never chose (QA s26). Removed as ``removeTariff``
        removes one (``tariffs.removal_end``, one rule for both): one set to begin later
        that priced no session is deleted (ended, it ended before it began, review s26);
        any other ends now, or just after the latest session of the station if that one
        was received later by our clock (an instance ahead of ours priced it). Sessions
        started before keep what they started with (``Tariff.removed_by``); the new
        company's own prices apply from then on, and it sets the station's own again if
        it wants one. Each is audited, by whoever moved the station. All of them, a page
        at a time: a cap left the rest unended, and the guard on none being left failed
        every retry (review s26). With the instant from which no session of the station
        may be received before the write (``None``: no price). ``now``: the read's
        instant."""
        last = await self.store.find_all(
            Session, Eq("station_id", station.id), (Sort("created_at", descending=True),),
            limit=1)
        last_priced = last[0].created_at if last else None
        changes: list[tuple[Change, Any]] = []
        since: datetime | None = None
        async for page in pages(self.store, Tariff, _unended_prices(station, now), PRICES_AT_ONCE):
            for price in page:
                until, guarded = removal_end(price, now, last_priced)
                changes.append((removal(price) if until is None
                                else edit(price, viewer, valid_until=until), price))
                since = guarded if since is None else min(since, guarded)
        return changes, since

    def _nudge(self, station: Station) -> None:
        """A charger told Pending or Rejected waits out its boot interval before it boots
        again and learns it was accepted; until then it will not charge. Asked to boot now
        instead."""
        if self.on_accepted is None:
            return
        # The acceptance stands if this fails: the charger boots again within a minute.
        self._nudging.run(self.on_accepted(station), f"accepted-{station.cp_id}",
                          f"asking charger {station.cp_id} to boot again failed")

    async def settled(self) -> None:
        """Waits for what acceptances set off in the background (tests, shutdown)."""
        await self._nudging.settled()

    async def remove_station(self, viewer: Viewer, station_id: str,
                             checks: v.Checks | None = None) -> Station:
        """Removes the station and its connectors in one write, and what is known of its
        charger's configuration and local list; then its outages' webhook notices
        (nothing would end them). Its sessions, payments, history and tariffs stay for the
        books (a session's ``tariff`` is the one that priced it, not the company's that
        would have stood in); refused while a session is charging on it, and one refused
        at its start left open there is closed by the removal (``close_refused``). Its
        live reservations are cancelled at the charger first."""
        refuse_unless_staff(viewer, "remove stations", checks)
        asked: list[bool] = []  # the chargers are asked once, whatever runs again
        station, connectors, cancelled, closed = await retried(
            lambda: self._remove_station(viewer, station_id, asked))
        await self._announce_closed(closed)
        await self._announce(cancelled, station)
        await self._hang_up_charger(station, connectors)
        # After the removal's write, not in it: a connection may close a notice meanwhile,
        # and a deletion missing its row would refuse the whole removal. Best effort, and
        # last: the removal stands, and its charger was told to go, whatever happens
        # here (a notice left is closed by the next sweep: its station is gone).
        try:
            await forget_outages(self.store, station.id)
        except Exception:
            log.exception("%s: removed; its offline notices are left to the sweep",
                          station.cp_id)
        # Its local list after the write too, for the same reason: a list answer
        # recorded meanwhile (a push, an operator's list) may delete an entry first.
        try:
            await self.store.write(await forget_local_list(self.store, station), [])
        except Exception:
            log.exception("%s: removed; its local-list records are left behind",
                          station.cp_id)
        # Where its charger passed the password check from: the station's, gone with it,
        # from the store and every instance's memory (a pair left is deleted by the
        # sweep, 30 days after it last passed).
        try:
            await known_addresses.forget(self.store, station.id, self.forget_known)
        except Exception:
            log.exception("%s: removed; its charger's known addresses are left to the "
                          "sweep", station.cp_id)
        return station

    async def _remove_station(self, viewer: Viewer, station_id: str, asked: list[bool]
                              ) -> tuple[Station, list[Connector], list[Reservation],
                                         list[tuple[Station, Session]]]:
        """``remove_station``'s read, checks and write (``retried``: a start that beat the
        write is then refused as IN_USE by the check): the station, the connectors it
        removed with it, the reservations it cancelled and the refused sessions it
        closed. ``asked``: whether its chargers were asked to cancel already."""
        station = await self.managed_station(viewer, station_id)
        await self._refuse_if_charging(Eq("station_id", station.id))
        await self._cancel_at_chargers(Eq("station_id", station.id),
                                       Eq("station_id", station.id), asked)
        connectors = await self.store.find_all(Connector, Eq("station_id", station.id))
        changes: list[tuple[Change, Any]] = [(Delete(c), c) for c in connectors]
        closes: list[tuple[Change, Any]] = []
        closed = await self._refused_closed(Eq("station_id", station.id), closes)
        cancelled = await self._cancel_reservations(Eq("station_id", station.id), closes)
        # Only as it was read: whether it is announced offline is decided from the
        # station as deleted (``_hang_up_charger``). Its charger connecting during the
        # cancels' round trips (up to 30 s each) was announced online, then hung up on
        # with no disconnect recorded or announced (review s25): the write fails, and
        # runs again on the station online.
        # And only on the ownership the remover's rights were checked on (``Station.sight``,
        # and its company and owner, which an instance of the build before the version
        # changes without it): a handover landing meanwhile fails the write, and it runs
        # again on a fresh read, its rights checked again (an operator whose company
        # handed the station away is told NOT_FOUND). Guarded on ``online`` only, it
        # deleted the station another company had by then, an operator's removal
        # included, and announced its removal with the old company's ownership and the
        # version the handover had written, so later events went to the company that
        # had handed it away (review r26-handover3).
        changes.append((Delete(station, only_if=("online", station.online),
                               also_if=(("sight", station.sight),
                                        ("company_id", station.company_id),
                                        ("owner_id", station.owner_id))), station))
        history = await self._end_state_history(
            viewer, all_of(Eq("cp_id", station.cp_id), Eq("station_id", station.id)))
        # Unaudited as it was written: control state, each command audited as itself.
        await self.commit(viewer, changes, unaudited=[
            *history, *await forget_configuration(self.store, station)],
            # A connector added on another instance meanwhile would be left behind,
            # of no station: the write fails, and runs again with it.
            guards=[not_charging(Eq("station_id", station.id)),
                    Guard(Connector, Eq("station_id", station.id), exists=False)],
            by_system=closes)
        return station, connectors, cancelled, closed

    async def _cancel_at_chargers(self, held: Filter, charging: Filter, asked: list[bool]
                                  ) -> None:
        """The live reservations ``held`` cancelled at their chargers first (those not
        answered are cancelled by the removal's own write). Then whether a session is
        ``charging`` is asked again: a start during those round trips (the holder at the
        plug, most likely) would otherwise have its station or connector removed under
        it, and its session never close (review s20). Once per removal (``asked``): a
        removal run again (``retried``) sent every unanswered cancel again, up to 30 s
        each (review s21). Sent, and the reservations so cancelled written, by the
        system because of the removal, as its own write cancels the rest
        (``_cancel_reservations``; review r27-accounts3)."""
        if self.cancel_at_chargers is not None and not asked:
            asked.append(True)
            await self.cancel_at_chargers(SYSTEM, held)
            await self._refuse_if_charging(charging)

    async def _cancel_reservations(self, where: Any, closes: list[tuple[Change, Any]]
                                   ) -> list[Reservation]:
        """Adds to ``closes`` the cancelling of the live reservations ``where`` (on what is
        being removed): left live, one would keep its driver from reserving elsewhere,
        and the plug (a cpId or connector id used again) from being reserved, until it
        expired. Guarded: one the charger ended meanwhile stays as it is. Cancelled by
        the system because of the removal (``commit``'s ``by_system``), as the refused
        sessions it closes are (``_refused_closed``): a station handed over keeps its
        reservations in the old company's books, whose log named the new company's
        operator cancelling them (review r27-accounts3)."""
        live = await self.store.find_all(
            Reservation, all_of(where, In("state", LIVE_RESERVATION_STATES)), limit=1000)
        cancelled = []
        for reservation in live:
            update = patch(reservation, SYSTEM, only_if=("state", reservation.state),
                           state=ReservationState.CANCELLED)
            closes.append((update, reservation))
            cancelled.append(cast(Reservation, update.record))
        return cancelled

    async def _announce(self, cancelled: list[Reservation], station: Station | None
                        ) -> None:
        """Announces those the write did cancel (its guard skips one the charger used or
        ended meanwhile)."""
        for now in await self.landed(cancelled):
            await self.publish(reservation_changed(now, station))

    async def _changed(self, station: Station | None) -> None:
        """Every instance drops its cached copy of the station now (the one holding its
        charger would otherwise answer from it, a registration or a company it no longer
        has, until the cache expires)."""
        if station is not None:
            await self.publish(StationChanged(**owned_by(station)))

    async def _announce_sight(self, before: Station, after: Station, number: int | None
                              ) -> None:
        """When an edit changed who may see the station (its company, its owner, its
        registration on or off the map), live maps hear of it (``StationSightChanged``):
        those who lost sight of it are told it offline, those who gained it its
        connection. Without it the old company's map went on showing a station handed
        away, online with its plugs available now, and every driver's map a station no
        longer accepted, until they queried again (QA s25).

        The connection is read now, not taken from the edit's read: a disconnect landing
        after that read was announced to the new company first, then contradicted by
        "joined, online" (review s25). One landing after this read is announced after
        it, or, published on another instance, may reach a map first: the event carries
        the connection it read, and a map's feed tells the newer state instead
        (``domain.services.live``). ``after.sight`` orders the edits (``_edit_station``);
        ``number`` is the build before's order of them, for its instances.

        Best effort, as ``publish``: the edit has committed, so a store that fails this
        read (a failover) does not answer it as failed, nor skip what follows it
        (``update_station``: the nudge, the site's shares). The connection is then the
        edit's read's, which a connection event that reached a map first still
        outranks (review s25)."""
        was, now = owned_by(before), owned_by(after)
        try:
            [current] = await self.store.get_many(Station, [after.id])
        except Exception:
            log.warning("station %s: reading its connection to announce its handover "
                        "failed; announced as the edit read it", after.id, exc_info=True)
            current = after
        online = current is not None and current.online
        connection = current.connection if current is not None else after.connection
        for joined in (False, True):
            await self.publish(StationSightChanged(
                **now, joined=joined, online=online and joined, at=self.now(),
                was_company_id=was["company_id"], was_owner_id=was["owner_id"],
                was_on_map=was["on_map"], connection=connection, sight=number))

    async def _connector_changed(self, connector: Connector) -> None:
        """``_changed`` for an edit of a connector (its rating is cached with the
        station)."""
        [station] = await self.store.get_many(Station, [connector.station_id])
        await self._changed(station)

    async def _hang_up_charger(self, station: Station, connectors: list[Connector]
                               ) -> None:
        """Whichever instance holds the removed station's charger closes its socket now
        (had this been lost, the charger's next message still meets the missing station).
        Live maps (README: subscribe, query, apply the events) are told the station
        offline and its plugs UNAVAILABLE, as ``removeConnector`` tells one
        (``_announce_gone``), whose records read null from then on: told nothing, they
        went on showing the removed station, online with its plugs available now when
        its charger was (its close finds no station to record or announce a disconnect
        for; QA s25), its plugs as last reported when it was offline (QA s30). Carrying
        the station's ownership as deleted, they reach whoever saw it, and nobody else.
        One offline already is told so (``removed_offline``): not a disconnect, no
        webhook. ``station`` is as deleted (the delete is guarded on its ``online``,
        ``_remove_station``): not as read before the cancels' round trips (review s25)."""
        await self.publish(StationConnectionChanged(
            **owned_by(station), online=False, at=self.now(),
            connection=station.connection, removed_offline=not station.online))
        for connector in connectors:
            await self._announce_gone(station, connector)
        # Last, the last change of who sees it (``Station.sight``): what arrives of it
        # later is older, whatever it read, and a map's event of it told to nobody
        # (``SightOrder``), these above included had they come after it.
        await self.publish(StationRemoved(**{**owned_by(station),
                                             "version": station.sight + 1}))

    async def _end_state_history(self, viewer: Viewer, where: Any) -> list[Change]:
        """Ends, now, the open state intervals ``where`` (of what is being removed): left
        open, a removed connector's state would go on for ever, its fault open and
        growing in every fault report. Telemetry (history of its own), so not audited;
        guarded, so one the charger closed meanwhile keeps its end."""
        now = self.now()
        return [patch(interval, viewer, only_if=("end", None), end=max(now, interval.start))
                for interval in await self.store.find_all(
                    ConnectorInterval, all_of(where, Eq("end", None)), limit=1000)]

    async def _refuse_if_charging(self, where: Any) -> list[Session]:
        """Refuses a removal (IN_USE) while a session is charging ``where``: open and
        accepted at its start. The open ones refused at their start (``start_refused``:
        told ConcurrentTx or Blocked, their chargers cut the energy) charge nothing and
        are returned, for the removal's write to close (``close_refused``); without it
        they refuse it too."""
        open_ = await self.store.find_all(
            Session, all_of(where, Eq("state", SessionState.ACTIVE)), limit=OPEN_AT_ONCE)
        refused = [s for s in open_ if s.start_refused is not None] \
            if self.close_refused is not None else []
        if len(refused) < len(open_) or len(open_) == OPEN_AT_ONCE:
            raise Conflict("a charging session is active", field="id", code="IN_USE")
        return refused

    async def _refused_closed(self, where: Any, closes: list[tuple[Change, Any]]
                              ) -> list[tuple[Station, Session]]:
        """Adds to ``closes`` the closes of the refused sessions open ``where`` (as read
        now, after the cancels' round trips), refusing the removal while one charging is;
        the closed sessions with their stations, for ``_announce_closed``. Closed by the
        system because of the removal, not as the remover's act (``commit``'s
        ``by_system``): a station handed over mid-session leaves its sessions in the old
        company's books, which the new company's operator removing it may not see nor
        end (``endSession``); audited under them, the old company's books named another
        company's operator closing its session (review r27-accounts2). Closed all the
        same: a removed station can never stop it, and it bills nothing. ENDED is
        announced to the session's books, as any close."""
        refused = await self._refuse_if_charging(where)
        if not refused or self.close_refused is None:
            return []
        closed, writes = await self.close_refused(SYSTEM, refused)
        closes += writes
        return closed

    async def _announce_closed(self, closed: Sequence[tuple[Station, Session]]) -> None:
        if self.announce_closed is not None:
            for station, session in closed:
                await self.announce_closed(station, session)

    # ---------------------------------------------------------------- connectors
    async def add_connector(self, viewer: Viewer, station_id: str, spec: ConnectorSpec,
                            checks: v.Checks | None = None) -> Connector:
        """The plug's number and power are checked together (with the caller's
        ``checks``) before the station is read."""
        refuse_unless_staff(viewer, "add connectors")
        checks = checks or v.Checks()
        checks(_connector_spec, spec)
        checks.done()
        station = await self.managed_station(viewer, station_id, field="stationId")
        connector = stamp_new(self._connector(station, spec), viewer)
        try:
            # Removed on another instance meanwhile, the station would leave it behind.
            await self.commit(viewer, [(Insert(connector), None)],
                              guards=[Guard(Station, Eq("id", station.id))])
        except UniqueViolation as exc:
            raise UniqueViolation("this station has that connector already",
                                  field="connectorId") from exc
        await self._changed(station)
        return connector

    async def managed_connector(self, viewer: Viewer, connector_id: str) -> Connector:
        connector = await self.visible(viewer, Connector, connector_id)
        await self.managed_station(viewer, connector.station_id)
        return connector

    async def update_connector(self, viewer: Viewer, connector_id: str, *, type: Any = UNSET,
                               max_kw: Any = UNSET, phases: Any = UNSET,
                               checks: v.Checks | None = None) -> Connector:
        """The fields given are checked together (with the caller's ``checks``) before
        the connector is read."""
        refuse_unless_staff(viewer, "change connectors")
        checks = checks or v.Checks()
        type = checks(v.present, type, "type", "type cannot be empty")
        if max_kw is not UNSET:
            max_kw = checks(v.positive, max_kw, "maxKw", max_value=1000)
        if phases is not UNSET:
            phases = checks(connector_phases, phases)
        checks.done()

        async def once() -> Connector:
            connector = await self.managed_connector(viewer, connector_id)
            update = edit(connector, viewer, type=type, max_kw=max_kw, phases=phases)
            await self.commit(viewer, [(update, connector)])
            return cast(Connector, update.record)

        updated = await retried(once)
        await self._connector_changed(updated)
        return updated

    async def remove_connector(self, viewer: Viewer, connector_id: str,
                               checks: v.Checks | None = None) -> Connector:
        refuse_unless_staff(viewer, "remove connectors", checks)
        asked: list[bool] = []
        connector, cancelled, closed = await retried(
            lambda: self._remove_connector(viewer, connector_id, asked))
        await self._announce_closed(closed)
        [station] = await self.store.get_many(Station, [connector.station_id])
        if cancelled:
            await self._announce(cancelled, station)
        await self._changed(station)
        if station is not None:
            await self._announce_gone(station, connector)
        return connector

    async def _announce_gone(self, station: Station, connector: Connector) -> None:
        """A plug removed is announced UNAVAILABLE (and not free) to the live map, its
        record gone (the event's ``connector`` reads null), as a removed station is
        announced offline: told nothing, every driver's map kept offering it, AVAILABLE
        and free, until it queried again (QA s25).

        Dated when the plug's last reported state began (``status_at``, the charger's
        clock; never reported: when it was made), not now: a map takes an event as
        stale when it is older than the ``statusAt`` it holds, and the charger's next
        report, which makes the plug again (``ChargingService.status_notification``),
        is dated by the charger's clock, often before our now. Dated now, the removal
        outranked it, and the map kept the plug UNAVAILABLE though it reads AVAILABLE
        (review s25). Not older than what the map holds for the plug: it is applied."""
        at = connector.status_at if connector.status_at is not None else connector.created_at
        await self.publish(ConnectorStatusChanged(
            **owned_by(station), at=at, connector_record_id=connector.id,
            connector_id=connector.connector_id,
            status=ConnectorStatus.UNAVAILABLE.value, free=False))

    async def _remove_connector(self, viewer: Viewer, connector_id: str, asked: list[bool]
                                ) -> tuple[Connector, list[Reservation],
                                           list[tuple[Station, Session]]]:
        """``remove_connector``'s read, checks and write (``retried``, as
        ``_remove_station``)."""
        connector = await self.managed_connector(viewer, connector_id)
        charging = all_of(Eq("cp_id", connector.cp_id),
                          Eq("connector_id", connector.connector_id))
        await self._refuse_if_charging(charging)
        held = all_of(Eq("station_id", connector.station_id),
                      Eq("connector_id", connector.connector_id))
        await self._cancel_at_chargers(held, charging, asked)
        changes: list[tuple[Change, Any]] = []
        closes: list[tuple[Change, Any]] = []
        closed = await self._refused_closed(charging, closes)
        cancelled = await self._cancel_reservations(held, closes)
        changes.append((Delete(connector), connector))
        await self.commit(viewer, changes, unaudited=await self._end_state_history(
            viewer, all_of(Eq("cp_id", connector.cp_id),
                           Eq("connector_id", connector.connector_id),
                           Eq("station_id", connector.station_id))),
            guards=[not_charging(charging)], by_system=closes)
        return connector, cancelled, closed


def _unended_prices(station: Station, now: datetime) -> Filter:
    """The prices set on ``station`` itself that are not ended by ``now``
    (``Tariff.valid_until``: one in force until a later version's start is not)."""
    return all_of(Eq("station_id", station.id), open_at(now))


def _sight_of(station: Station) -> tuple[Any, ...]:
    """What decides who sees a station (``Policy.sees_event``): an edit changing it is
    announced to live maps (``StationService._announce_sight``), and moves its version on
    (``Station.sight``)."""
    owned = owned_by(station)
    return owned["company_id"], owned["owner_id"], owned["on_map"]
