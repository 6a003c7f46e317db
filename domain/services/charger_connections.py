"""How chargers' connections are recorded: which connection is a station's (the number the
store draws per connection), its connect and disconnect with their history, intervals and
events, a crashed process's connections recorded lost, and the HTTP Basic check a
connecting charger passes. ``ChargingService`` is this plus what chargers say once
connected (``domain/services/charging.py``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from domain import validation as v
from domain.entities import (
    ConnectionEvent,
    Connector,
    InstanceLease,
    Registration,
    Session,
    SessionState,
    Station,
)
from domain.errors import Conflict, TooManyRequests, ValidationError
from domain.events import (
    StationConnectionChanged,
)
from domain.keyed_locks import KeyedLocks
from domain.ports import Change, Insert
from domain.query import Eq, In, Range, all_of
from domain.services.background import Background
from domain.services.base import (
    Service,
    books_of,
    charger,
    committed,
    no_case_twin,
    owned_by,
    patch_in_books,
    stamp_new,
)
from domain.services.charger_cache import ChargerCache
from domain.services.charger_clocks import ChargerClocks
from domain.services.charger_sign_ins import ChargerSignIns, address_key
from domain.services.edits import retried
from domain.services.intervals import (
    GuardedBooks,
    effective_state,
    next_interval,
)
from domain.services.live_updates import LatestUpdates
from domain.services.reboot_checks import (
    RebootChecks,
    reported_available_since,
    reported_free_since,
)
from domain.services.throttle import RollingLimit

log = logging.getLogger("chargegraph.charging")

#: Sessions read when a start closes those its connector left open: more than one only
#: while an older transaction flushed late awaits its stop.
MAX_OPEN_PER_CONNECTOR = 10


#: Stations auto-registered from one charger address within any ``REGISTRATION_WINDOW``
#: by default (``CHARGEGRAPH_AUTO_REGISTER_PER_HOUR``): a depot commissioning its
#: chargers behind one address registers a few dozen; a scan of made-up cpIds is
#: stopped after these (``station_for_connection``). A fleet moved over from behind one
#: NAT or carrier address needs it raised, or lifted (0).
REGISTRATIONS_PER_ADDRESS = 50
REGISTRATION_WINDOW = timedelta(hours=1)

#: How many times a disconnect is read and written again when its write met a change
#: made since that leaves its connection the station's (``disconnect``); it pauses
#: before each (``pause_to_retry``, random: two instances in step part).
RECORD_ATTEMPTS = 5

#: How many times an auto-registration is read and written again when its insert met
#: neither the twin it was guarded against nor its own station standing (MongoDB: two
#: inserts in step each see the other's before it rolls back, ``_register``).
REGISTER_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection as ``ChargingService.connect`` recorded it: when, its number, and
    whether it is the station's newest (a newer one recorded first: not written)."""

    at: datetime
    number: int
    newest: bool = True


@dataclass(frozen=True, slots=True)
class Lost:
    """A connection lost with the process that held it (killed, its host gone), which
    recorded no disconnect: found by a later start (``reset_connections``) or by another
    instance's sweep. Its disconnect is dated when the connection was last known to be
    there, not when it is found (the outage is no online time): when the charger was
    last heard (``Station.last_seen``), or ``alive_until``, the holder's last sign of
    life (its lease's last renewal), if later: while that process lived, its websocket
    pings would have closed a connection whose charger had gone."""

    alive_until: datetime | None = None


class ChargerConnections(Service):
    """The connection half of ``ChargingService`` (which sets these in its ``__init__``)."""

    auto_register: bool
    cache: ChargerCache
    clocks: ChargerClocks
    reboot_checks: RebootChecks
    restore_checks: RebootChecks
    restored_open: dict[str, dict[int, datetime]]
    on_restored_connect: Callable[[Station], Awaitable[None]] | None
    asking: Background
    session_updates: LatestUpdates
    sign_ins: ChargerSignIns
    #: Stations auto-registered per charger address (``station_for_connection``).
    registrations: RollingLimit
    #: One registration of a cpId at a time on this instance (``station_for_connection``).
    registering: KeyedLocks
    #: Set by the OCPP server: records again the connection it holds for a charger
    #: whose station a message found recorded offline (``_still_connected``).
    still_connected: Callable[[str], Awaitable[None]] | None
    #: A fraction in [0, 1) drawn for each pause before a write is tried again.
    retry_jitter: Callable[[], float]
    #: The pause before a write that met a change is read and tried again: one for a
    #: start's and a disconnect's (``ChargingService.pause_to_retry``, random, up to
    #: ``START_RETRY_PAUSE`` times the attempt), not a copy of it here.
    pause_to_retry: Callable[[int], Awaitable[None]]

    async def station(self, cp_id: str) -> Station | None:
        return await self.store.find_one(Station, Eq("cp_id", cp_id))

    async def station_whatever_case(self, cp_id: str) -> Station | None:
        """The station of ``cp_id`` as OCPP 1.6 has a charge point's identity, a
        CiString: whatever its case (``Station.cp_id_key``; QA s28: a charger set up as
        ``cp-001`` for the station ``CP-001`` was refused as unknown, or registered as a
        second station). The one stored so exactly first: stations stored before cpIds
        were one whatever their case may differ only in it, and each keeps its charger.
        Of several such, none spelt so: ``None``, as an unknown cpId (which one is meant
        cannot be told, and a charger is never given another's station)."""
        return _one_of(await self._stations_whatever_case(cp_id))

    async def _stations_whatever_case(self, cp_id: str) -> list[Station]:
        """``station_whatever_case``'s reads: the station spelt so alone, else up to two
        of the cpId in any case (two: which one is meant cannot be told)."""
        station = await self.station(cp_id)
        if station is not None:
            return [station]
        return await self.store.find_all(Station, Eq("cp_id_key", v.cp_id_key(cp_id)),
                                         limit=2)

    async def station_for_connection(self, cp_id: str, address: str = "") -> Station | None:
        """The station a connecting charger claims to be; with auto-registration on, an
        unknown one is registered as Pending (an operator accepts it later), at most
        ``registrations.limit`` in any hour from one ``address`` (the charger's; 0: no
        limit), then ``TooManyRequests``: each is a station stored for good, and a scan
        of made-up ids from one address stored one per handshake, unlimited (QA s26).
        Only stations stored count (review s26): a registration is counted as it starts
        (those at once meet the limit too) and given back when the insert fails. Two
        handshakes of one new cpId at once: the second finds the first's station
        (review s26: its insert refused, the handshake answered 500): here, it waits for
        the first's registration and looks for the station then (review r26-security2:
        with the first using the address's last registration, the second met the limit,
        429); on another instance, whose lock does not hold it up, its insert is refused
        (the cpId's unique index, or the guard against a station of it in any case:
        ``_register``) and the station read again. Found whatever the case of ``cp_id``
        (``station_whatever_case``): the charger then connects as the station's cpId as
        stored. Auto-registration on or off, the station found is read as committed
        (``base.committed``): ``None`` for one whose insert rolled back, ``Conflict``
        CHANGED for one whose insert is still in flight after the store's wait."""
        if not self.auto_register:
            # No handshake writes a station, but one found may be an operator's
            # createStation still in flight on MongoDB, which its rollback takes away:
            # read as committed (``base.committed``; a station stored long since, or any
            # on SQLite, is not read again), else the charger was signed in as a station
            # never stored (session 29).
            return await committed(self.store, await self.station_whatever_case(cp_id),
                                   self.now())
        # Looked for under the cpId's lock, whatever its case, and only there: a look
        # before it found another handshake's registration still in flight here (on
        # MongoDB, reads see it) and gave that station to its charger without waiting
        # for it to commit: one rolled back (its twin's on another instance in step)
        # signed the charger in as a station never stored (three registrations of one
        # charger at once). And an unknown cpId was read for twice.
        async with self.registering.one_at_a_time(v.cp_id_key(cp_id)):
            return await self._register(cp_id, address)

    async def _register(self, cp_id: str, address: str) -> Station | None:
        """``station_for_connection`` with auto-registration, one of a cpId at a time here
        (the lock is this instance's). Its insert is guarded against another station of
        the cpId whatever its case (``no_case_twin``; review r28-leftocpp: two spellings
        at two instances at once registered two stations differing only in case): one
        another instance registered meanwhile fails it, and is read again and given to
        this charger. Where the read finds none (on MongoDB two inserts in step may each
        fail on the other's before it rolls back), read and tried again, after a random
        pause (``pause_to_retry``), up to ``REGISTER_ATTEMPTS`` times. Every station
        this finds is read as committed (``base.committed``): on MongoDB such a read may
        find another's insert still in flight, which its rollback then takes away
        (review r28-batch: two spellings at two instances, both rolled back, and the
        one finishing first signed its charger in as the other's station, never stored)."""
        return await retried(lambda: self._register_once(cp_id, address),
                             REGISTER_ATTEMPTS, pause=self.pause_to_retry)

    async def _register_once(self, cp_id: str, address: str) -> Station | None:
        """One attempt of ``_register``: its one look for the station (two reads for an
        unknown cpId, one for a station spelt so), then the limit, then the insert."""
        # The handshake this one waited behind may have stored it, or another instance.
        found = await self._stations_whatever_case(cp_id)
        station = await committed(self.store, _one_of(found), self.now())
        if station is not None:
            return station
        if len(found) > 1:
            # Stations that differ only in case have it, none spelt so: which one it is
            # cannot be told (``station_whatever_case``), and a third is not made.
            return None
        try:
            v.cp_id(cp_id)
        except ValidationError:
            return None
        client = address_key(address)
        limited = self.registrations.limit > 0
        if limited:
            # Right after the look, no read between: a station registered by then (by
            # another instance too) was found and its charger let in whatever the limit.
            wait = self.registrations.refused_for(client)
            if wait is not None:
                raise TooManyRequests(f"{self.registrations.limit} new charge points from "
                                      "this address within the hour: not registered",
                                      retry_after=wait)
            self.registrations.take(client)  # in the step that tested the limit
        actor = charger(cp_id)
        station = stamp_new(Station(cp_id=cp_id, name=cp_id,
                                    registration=Registration.PENDING), actor)
        try:
            await self.commit(actor, [(Insert(station), None)],
                              guards=[no_case_twin(station)])
        except Exception as exc:
            if limited:
                self.registrations.give_back(client)  # no station stored
            if isinstance(exc, Conflict):
                # Registered meanwhile whatever the case (another handshake of the same
                # charger, here or on another instance: its cpId taken, UniqueViolation,
                # or the guard, CHANGED): that station is this one, once committed (one
                # rolled back meanwhile: none, and the registration is tried again).
                registered = await committed(self.store, await self.station_whatever_case(cp_id),
                                             self.now())
                if registered is not None:
                    return registered
            raise
        return station

    def password_ok(self, station: Station, password: str | None) -> bool:
        """HTTP Basic password check (OCPP security profiles 1 and 2). A station without a
        password (profile 0, the operator's choice) accepts any connection. Synchronous
        argon2: ``station_password_ok`` runs it on the chargers' hashing threads."""
        if station.auth_password_hash is None:
            return True
        return password is not None and self.ctx.hasher.verify(station.auth_password_hash,
                                                               password)

    async def station_password_ok(self, station: Station, password: str | None) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.ctx.charger_hashing, self.password_ok,
                                          station, password)

    async def unmatchable_password_hash(self) -> str:
        """A password hash no password matches (the hash of a random secret, forgotten),
        made by the same hasher with the same parameters as the stations' and on the
        chargers' hashing threads: what a cpId with no station is checked against
        (``OcppServer._decoy``), so its check costs what a station's does."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.ctx.charger_hashing, self.ctx.hasher.hash,
                                          secrets.token_urlsafe(32))

    async def reset_connections(self, alive: Collection[str] = ()) -> None:
        """At start-up no charger is connected yet: a station still marked online lost its
        connection with the previous process (it crashed). Record that disconnect properly
        (flag, connection history, state intervals), dated when the connection was last
        known to be there (``Lost``), so availability does not count the outage as online
        time. Stations held by one of the ``alive`` instances (another process on this
        database whose lease is live) are that one's, and stay as they are."""
        stale = [station for station in await self.store.find_all(
            Station, Eq("online", True), limit=100_000)
            if station.connected_instance not in alive]
        holder_ids = sorted({s.connected_instance for s in stale if s.connected_instance})
        leases = dict(zip(holder_ids, await self.store.get_many(InstanceLease, holder_ids),
                          strict=True))
        for station in stale:
            lease = leases.get(station.connected_instance or "")
            await self.disconnect(station.cp_id,
                                  lost=Lost(lease.updated_at if lease is not None else None))

    async def set_online(self, cp_id: str, online: bool, *, instance: str | None = None
                         ) -> datetime | None:
        """Records a connect (a new connection, ``connect``) or a disconnect of whichever
        connection is recorded (``disconnect``, unguarded), with no socket behind it:
        for tests and tools that stage a charger's presence (the OCPP server calls
        ``connect`` with the number its socket drew, start-up ``disconnect``). Returns
        its time, ``None`` when nothing was recorded."""
        if online:
            connected = await self.connect(cp_id, instance=instance)
            return connected.at if connected is not None and connected.newest else None
        return await self.disconnect(cp_id)

    async def draw_connection(self) -> int:
        """A number for a charger's new connection (``connect``), drawn by the store: of
        two connections of one charger, here or on other instances, the one drawn later
        is the newer. The OCPP server draws it as the socket arrives, before the socket
        waits its turn behind the charger's other arrivals on that instance: drawn after
        the wait, an arrival queued behind a slow one was numbered after the charger's
        newer socket on another instance and recorded as the newest."""
        return await self.store.next_sequence("connection")

    async def connect(self, cp_id: str, *, instance: str | None = None,
                      number: int | None = None, again: bool = False,
                      station_id: str | None = None) -> Connected | None:
        """Records a connection of the charger, held by ``instance``; ``None`` for an
        unknown charger, or for a station of ``cp_id`` other than ``station_id`` (the one
        its handshake signed it in as: a station removed and created again under the
        cpId since is not that charger's, session 30). Each connection gets a number the store draws
        (``draw_connection``), so that of two connections (two instances at one moment,
        clocks seconds apart) the newer one is the higher: the station keeps the newest
        (``Station.connection``), and one that finds a newer one recorded is not written
        (``Connected.newest`` False: its socket is to be closed). ``number``: the one
        drawn when the connection arrived; drawn now when not given. ``again``: record
        connection ``number`` again (its record was written offline while it stayed
        connected: a sweep while this instance's lease had lapsed), only while it is
        still the station's newest."""
        if number is None:
            if again:
                raise ValueError("recording a connection again needs its number")
            number = await self.draw_connection()
        while True:
            station = await self.station(cp_id)
            if station is None or (station_id is not None and station.id != station_id):
                return None
            current = station.connection
            if (current is not None and current > number) or (again and current != number):
                return Connected(self.now(), number, newest=False)
            if again and station.online and station.connected_instance == instance:
                return Connected(station.last_seen or self.now(), number)  # nothing lost
            try:
                # Compare-and-set: a connection another instance recorded meanwhile is
                # read and weighed again, never overwritten blindly.
                at = await self._record_connection(station, True, instance=instance,
                                                   number=number, guard=("connection",
                                                                         current))
            except Conflict:
                continue
            self.clocks.connected(cp_id, at)
            try:
                await self._resume_reboot_checks(station)
            except Exception:  # optional: the connection stands (review s17); a read blip
                # here must not refuse the charger. The next connect arms it again.
                log.warning("%s: arming its reboot checks again failed", cp_id,
                            exc_info=True)
            try:
                await self._resume_restore_checks(station)
            except Exception:  # likewise: the next connect or status report arms them
                log.warning("%s: arming its restore checks again failed", cp_id,
                            exc_info=True)
            return Connected(at, number)

    async def _resume_reboot_checks(self, station: Station) -> None:
        """Arms again the reboot checks (``RebootChecks``) that the station's stored state
        calls for and this process does not hold: a connector reported Available since
        the charger's last boot with a session still open there from before it. Its
        check was pending in a process that stopped (a restart within the grace), and
        the charger, connected again, will not report the connector again. Called by
        the instance that holds the charger's connection; the close is guarded (only a
        session still ACTIVE), so another instance's check racing it closes nothing
        twice."""
        booted = station.booted_at
        if booted is None:
            return
        actor = charger(station.cp_id).actor
        reported = [plug for plug in await self.store.find_all(
            Connector, Eq("station_id", station.id), limit=100)
            if reported_available_since(plug, booted, actor)]
        if not reported:
            return
        lost = await self.store.find_all(Session, all_of(
            Eq("cp_id", station.cp_id),
            In("connector_id", tuple(plug.connector_id for plug in reported)),
            Eq("state", SessionState.ACTIVE), Range("created_at", lt=booted)),
            limit=MAX_OPEN_PER_CONNECTOR * len(reported))
        now = self.now()
        for plug in reported:
            if any(s.connector_id == plug.connector_id for s in lost):
                self.reboot_checks.schedule(station.cp_id, plug.connector_id, booted,
                                            reported_at=plug.updated_at, now=now)

    async def _resume_restore_checks(self, station: Station) -> None:
        """For a charger with sessions a restore brought back open (``restored_open``,
        in memory: a normal connection reads nothing more): arms again the restore's
        checks of the connectors it reported free since the restore, for what is left of
        the grace (review r27-restore: the check, pending in a process restarted within
        the grace, was lost, and the session stayed open for ever), and asks it for its
        connectors' status (``on_restored_connect``, TriggerMessage StatusNotification,
        in the background): a charger connecting again reports nothing by itself, and
        one whose connector was free in the backup already moved no stamp reporting it
        again."""
        restored = self.restored_open.get(station.id)
        if not restored:
            return
        actor = charger(station.cp_id).actor
        now = self.now()
        for plug in await self.store.find_all(Connector, Eq("station_id", station.id),
                                              limit=100):
            at = restored.get(plug.connector_id)
            if at is not None and reported_free_since(plug, at, actor):
                self.restore_checks.schedule(station.cp_id, plug.connector_id, at,
                                             reported_at=plug.updated_at, now=now)
        if self.on_restored_connect is not None:
            self.asking.run(self.on_restored_connect(station),
                            f"status-after-restore-{station.cp_id}",
                            f"asking charger {station.cp_id} for its status failed")

    async def disconnect(self, cp_id: str, *, number: int | None = None,
                         instance: str | None = None, lost: Lost | None = None,
                         stopping: bool = False, heard: bool = True,
                         last_heard: datetime | None = None) -> datetime | None:
        """Records that the charger's connection ``number`` (held by ``instance``) closed;
        returns the time, or ``None`` when nothing was recorded: it is not the station's
        connection any more (the charger connected again, here or to another instance,
        whose connection this one cannot see), or the station is offline already. A
        connection without a number (recorded before numbers existed) is judged by the
        instance holding it; neither given, the station goes offline whatever holds it.
        ``lost``: the connection was lost with a process that died (``Lost``), and the
        disconnect is dated then, not now. ``stopping``: the instance holding it is
        stopping and closed it. Either is the central system's outage, not the
        charger's leaving: until the charger connects again its state is unknown
        (``ConnectorInterval.known``), not offline. ``heard`` false: the charger sent no
        close frame (the socket died, or it stopped answering pings), so it was last
        heard at ``last_heard`` (its last frame), not at the close found now."""
        await self.session_updates.flush(cp_id)  # no frame of it will publish what it held
        guard: tuple[str, Any] | None = None
        if number is not None:
            guard = ("connection", number)
        elif instance is not None:
            guard = ("connected_instance", instance)
        async def record() -> datetime | None:
            station = await self.station(cp_id)
            if station is None or not station.online:
                return None
            if guard is not None and getattr(station, guard[0]) != guard[1]:
                return None  # a newer connection was recorded
            return await self._record_connection(
                station, False, guard=guard, outage=stopping or lost is not None,
                at=None if lost is None else self._lost_at(station, lost),
                heard=heard, last_heard=_later(station.last_seen, last_heard))

        # A Conflict: something changed since the read: a newer connection (the
        # station's guard), or a state interval the write closes, ended meanwhile by the
        # charger's last status report handled beside its close, or by a handover
        # (``intervals._close``). Read again (any Conflict, ``codes=None``): only the
        # first stops the disconnect (review r27-analytics2: taken for a newer
        # connection, every such race left the station online until its charger came
        # back). ``retried``'s loop, not a copy of it.
        return await retried(record, RECORD_ATTEMPTS, codes=None, pause=self.pause_to_retry)

    def _lost_at(self, station: Station, lost: Lost) -> datetime:
        """When a connection lost with its process was last known to be there (``Lost``):
        never after now, and never before the charger was last heard."""
        now = self.now()
        known = [t for t in (station.last_seen, lost.alive_until) if t is not None]
        return min(max(known), now) if known else now

    async def _record_connection(self, station: Station, online: bool, *,
                                 instance: str | None = None, number: int | None = None,
                                 guard: tuple[str, Any] | None = None,
                                 at: datetime | None = None, outage: bool = False,
                                 heard: bool = True, last_heard: datetime | None = None
                                 ) -> datetime:
        """Writes the connect or disconnect (flag, connection history, state intervals;
        only while ``guard`` holds, else ``Conflict``) and announces it. ``at``: a
        disconnect found after the fact (``Lost``), dated when the connection was last
        known to be there. ``outage``: a disconnect of the central system's own doing:
        the state after it is unknown, and the charger was not heard closing it, so
        ``last_seen`` stays. ``heard`` false: a close the charger did not send; it was last
        heard at ``last_heard`` (``last_seen`` then, not now; unknown: as it was)."""
        cp_id = station.cp_id
        now = self.now()
        when = now if at is None else at
        actor = charger(cp_id)
        # In the books of the station as read from the store, and written only while it
        # is still in them (``patch_in_books``): a handover since fails the write and it
        # is read again. Its open state intervals alone (``intervals._close``) did not
        # tell: a handover rolls over only open intervals, and a plug's first one (a
        # station's first connect, a plug added while online) and a station of no plug
        # have none, so the connection and the plug's whole history stayed the former
        # company's (as a status report's first interval, review r27-analytics4).
        company_id, station_owner_id = books_of(station)
        stored = GuardedBooks(station)  # its books only: ``patch_in_books`` guards them
        event = ConnectionEvent(station_id=station.id, cp_id=cp_id, online=online, at=when,
                                server_outage=outage, company_id=company_id,
                                station_owner_id=station_owner_id)
        fields: dict[str, Any] = {"online": online,
                                  "connected_instance": instance if online else None}
        if not outage and (heard or last_heard is not None):
            fields["last_seen"] = now if heard else last_heard
        if online:
            fields["connection"] = number
        # The books are held by the station's own update (``patch_in_books``: one
        # condition on the row it writes, no guard read beside it), written last: on
        # MongoDB (no transaction) it checks them once the intervals are written, as a
        # guard read after them did, so of it and a handover's write (``left_in_books``)
        # at least one sees the other.
        update = patch_in_books(station, actor, held=guard, **fields)
        changes: list[Change] = [Insert(stamp_new(event, actor, now))]
        for connector in await self.store.find_all(Connector, Eq("station_id", station.id),
                                                   limit=100):
            changes += await next_interval(self.store,
                station, connector.connector_id,
                *effective_state(station, connector.status, connector.error_code), online,
                self.clocks.charger_time(cp_id, when), actor, now=now, known=not outage,
                ours=when, stored=stored)
        await self.store.write([*changes, update], [])
        self.cache.patched(station, cast(Station, update.record))
        await self.publish(StationConnectionChanged(
            **owned_by(station), online=online, at=when, connection=station.connection
            if number is None else number))
        return when

    async def _still_connected(self, station: Station) -> None:
        """A message from the charger came over a live connection: if its station is
        recorded offline meanwhile, the OCPP server holding the connection records it
        again (``still_connected``), as far as it is still the station's newest."""
        if not station.online and self.still_connected is not None:
            await self.still_connected(station.cp_id)
            self.cache.drop_station(station.cp_id)  # read what it recorded


def _one_of(found: list[Station]) -> Station | None:
    """The station ``_stations_whatever_case`` found; ``None`` for none, or for several
    (logged: the operator renames all but one)."""
    if len(found) > 1:
        log.warning("a charger connected under a cpId no station has, which stations %s "
                    "have in other case: refused as unknown; rename all but one",
                    ", ".join(sorted(s.cp_id for s in found)))
        return None
    return found[0] if found else None


def _later(known: datetime | None, heard: datetime | None) -> datetime | None:
    """The later of two times a charger was last heard, either unknown (``None``)."""
    times = [t for t in (known, heard) if t is not None]
    return max(times) if times else None
