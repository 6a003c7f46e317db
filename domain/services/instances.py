"""Instance leases: which central-system instance holds which charger, and what becomes of
the chargers of one that dies.

Every instance running the OCPP server holds a lease (``InstanceLease``) that it renews a
few times per lease period, and a station records the instance holding its websocket
(``Station.connected_instance``). An instance that crashes (killed, its host lost) records
no disconnects. Its stations would stay online until their chargers connect again, and a
charger that went down with it never does. So every instance sweeps for expired leases of
others and records their stations offline: a disconnect dated when the connection was last
known to be there (the dead instance's last renewal, or the charger's last message after
it; ``charger_connections.Lost``), with its connection history and state intervals, and the live
map's event. A lease is deleted once none of its
stations is online any more.

An instance whose own lease lapsed (a long stall, the database out of reach) may have been
swept meanwhile although its chargers are still connected: ``renew`` says so, and the
instance records again those of its connections the store shows offline (``lost``).

The central system's own outage (an instance stopped or crashed) leaves its chargers'
state unknown (``ConnectorInterval.known`` false) until they connect again. One that has
not come back ``RECONNECT_GRACE`` after the service was up again is away on its own
account: from that moment on it is known offline (``settle_outages``), so the uptime KPI
counts its absence instead of leaving it unknown for ever.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from domain.entities import ConnectorInterval, InstanceLease, Station
from domain.errors import Conflict, NotFound, UniqueViolation
from domain.policy import SYSTEM
from domain.ports import Change, Delete, Insert
from domain.query import ALL, Eq, In, Range, all_of
from domain.services.base import Service, ServiceContext, patch, stamp_new
from domain.services.charger_connections import Lost
from domain.services.charging import ChargingService
from domain.services.intervals import known_offline

#: Stations of one dead instance recorded offline per sweep (the rest in the next one).
SWEEP_BATCH = 500
#: How long a charger cut off by the central system's own outage has, once the service
#: is up again, to connect again before it counts as offline from then on. Chargers
#: reconnect on their own schedule, with a backoff that grows while the server was
#: away (firmware commonly waits up to a few minutes between tries, and a whole fleet
#: reconnecting at once is spread out by it): one back within this was never away on
#: its own account, one still away after it is.
RECONNECT_GRACE = timedelta(minutes=5)
#: Unknown stretches settled per round (``settle_outages``; the rest in the next one).
SETTLE_BATCH = 500
#: Leases read to tell when the service was up (a deployment runs a handful).
LEASES_READ = 100
#: Reads and guarded writes of one renewal before its conflict is the caller's: two
#: parts of one instance renew its lease, a few times per lease period each.
RENEW_TRIES = 5


class InstanceService(Service):
    def __init__(self, ctx: ServiceContext, charging: ChargingService) -> None:
        super().__init__(ctx)
        self.charging = charging
        #: The parts of this process living by each of its leases (its OCPP server, its
        #: webhook delivery: ``hold``), which ``release`` leaves it to until the last.
        self._holders: dict[str, int] = {}

    async def renew(self, instance_id: str, host: str, lease: timedelta, *,
                    serves_chargers: bool = True) -> bool:
        """Extends the instance's lease to ``lease`` from now, never back: the OCPP server
        and the webhook delivery renew the same lease, and the dispatcher counts it live
        from its own last renewal (review r27-durable3: the server's renewal landing late,
        after the dispatcher's, wrote an older expiry under it). Each write holds only on
        the expiry as read, and keeps the later of the two; one that lost a race with
        another renewal (or a sweep) reads again. True when there was no valid lease
        (first start, or it lapsed and may have been swept): the caller then records its
        connections again. ``serves_chargers`` False: a lease held only for the
        instance's webhook deliveries (it runs no OCPP server); an OCPP server renewing
        the same lease makes it one that serves chargers."""
        for attempt in range(RENEW_TRIES):
            now = self.now()
            current = await self._lease(instance_id)
            if current is None:
                try:
                    await self.store.write([Insert(stamp_new(
                        InstanceLease(id=instance_id, host=host, started_at=now,
                                      expires_at=now + lease,
                                      serves_chargers=serves_chargers),
                        SYSTEM, now))], [])
                except UniqueViolation:
                    # The other part of this instance started it again meanwhile (both
                    # found it swept, review r27-durable5): renew that one.
                    if attempt == RENEW_TRIES - 1:
                        raise
                    continue
                return True
            updates: dict[str, Any] = {"expires_at": max(current.expires_at, now + lease)}
            if serves_chargers and not current.serves_chargers:
                updates["serves_chargers"] = True
            try:
                await self.store.write([patch(current, SYSTEM,
                                              only_if=("expires_at", current.expires_at),
                                              required=True, **updates)], [])
            except Conflict:
                # Renewed by the other part of this instance meanwhile (read again), or
                # swept (then gone: a new lease is started).
                if attempt == RENEW_TRIES - 1:
                    raise
                continue
            return current.expires_at <= now
        raise AssertionError("unreachable: the last try returns or raises")

    async def lost(self, connections: Mapping[str, int | None]
                   ) -> tuple[list[str], list[str]]:
        """Of ``connections`` (connected here, each with its connection number), those
        the store shows offline (swept while this instance's lease had lapsed: to be
        recorded again), and those it shows online under a higher number (the charger
        connected elsewhere since: this socket is stale, to be closed). The second is
        what the other instance's announcement tells at once; read here too because
        announcements are lost while the bus is away (QA s19: after a Redis outage a
        charger that moved kept a stale socket here, and commands sent through this
        instance went to it and timed out)."""
        offline: list[str] = []
        superseded: list[str] = []
        cp_ids = list(connections)
        for first in range(0, len(cp_ids), SWEEP_BATCH):
            chunk = cp_ids[first:first + SWEEP_BATCH]
            online = {s.cp_id: s for s in await self.store.find_all(
                Station, all_of(In("cp_id", tuple(chunk)), Eq("online", True)),
                limit=len(chunk))}
            for cp_id in chunk:
                station, mine = online.get(cp_id), connections[cp_id]
                if station is None:
                    offline.append(cp_id)
                elif mine is not None and station.connection is not None \
                        and station.connection > mine:
                    superseded.append(cp_id)
        return offline, superseded

    async def others_alive(self, instance_id: str) -> list[InstanceLease]:
        """The leases of other instances that have not expired: processes serving
        chargers on this database right now."""
        live = await self.store.find_all(InstanceLease, Range("expires_at", gte=self.now()),
                                         limit=100)
        return [lease for lease in live if lease.id != instance_id and lease.serves_chargers]

    def hold(self, instance_id: str) -> None:
        """One more part of this process lives by the lease (it shares one id): the
        lease stays until each has released it."""
        self._holders[instance_id] = self._holders.get(instance_id, 0) + 1

    async def release(self, instance_id: str) -> None:
        """At a clean stop, once every disconnect is recorded and every delivery handed
        over: the lease is of no more use, once the last part holding it lets it go (one
        that never called ``hold`` is the only one). Review r27: the OCPP server, which
        stops first, released the lease its webhook delivery still lived by, and
        another instance took over deliveries this one was still posting."""
        held = self._holders.get(instance_id, 0)
        if held > 1:
            self._holders[instance_id] = held - 1
            return
        self._holders.pop(instance_id, None)
        current = await self._lease(instance_id)
        if current is not None:
            with contextlib.suppress(NotFound):  # another instance swept it
                await self.store.write([Delete(current)], [])

    async def sweep(self, instance_id: str) -> list[str]:
        """Records offline the stations of every other instance whose lease has expired and
        returns their charge point ids."""
        swept: list[str] = []
        expired = await self.store.find_all(InstanceLease, Range("expires_at", lt=self.now()),
                                            limit=100)
        for lease in expired:
            if lease.id == instance_id:
                continue  # our own: ``renew`` finds it lapsed and records ours again
            held = all_of(Eq("connected_instance", lease.id), Eq("online", True))
            for station in await self.store.find_all(Station, held, limit=SWEEP_BATCH):
                if await self._disconnect(station, lease):
                    swept.append(station.cp_id)
            if not await self.store.find_all(Station, held, limit=1):
                # Only the lease as read, expired: its instance may have renewed it
                # since (its store answering again), and counts it live; deleted under
                # it, another instance would take over what it stores as its own
                # (review r27-durable3). Changed, or deleted by another sweep first:
                # left (a lapse again is the next sweep's).
                with contextlib.suppress(Conflict):
                    await self.store.write([Delete(
                        lease, only_if=("expires_at", lease.expires_at),
                        also_if=(("updated_at", lease.updated_at),))], [])
        return swept

    async def _lease(self, instance_id: str) -> InstanceLease | None:
        return (await self.store.get_many(InstanceLease, [instance_id]))[0]

    async def _disconnect(self, station: Station, lease: InstanceLease) -> bool:
        # Only the connection the dead instance held: a charger that has connected to
        # another instance since stays online (``ChargingService.disconnect``). Dated
        # when it was last known there, not at the sweep (``Lost``): the lease's last
        # renewal, or the charger's last message after it.
        at = await self.charging.disconnect(station.cp_id, number=station.connection,
                                            instance=lease.id, lost=Lost(lease.updated_at))
        return at is not None

    async def settle_outages(self, instance_id: str) -> list[str]:
        """Ends the central system's outage for chargers that did not come back: every
        open unknown interval (``ConnectorInterval.known`` false) of a station still
        offline ``RECONNECT_GRACE`` after the service was up again (``_up_again``) ends
        at that moment, and the connector is known offline from there
        (``intervals.known_offline``). Returns the charge point ids settled.

        Idempotent and safe with several instances: each station's write holds only
        while its intervals are still the open unknown ones, so a charger that connected
        meanwhile, or another instance settling them at the same moment, makes it fail
        (``Conflict``) and nothing is written twice."""
        now = self.now()
        due = now - RECONNECT_GRACE
        # Instances serving no chargers (GraphQL only) were no place to connect to.
        leases = [lease for lease in await self.store.find_all(
            InstanceLease, ALL, limit=LEASES_READ) if lease.serves_chargers]
        if not leases or min(lease.started_at for lease in leases) > due:
            return []  # no interval can be due yet: not even a read of them
        unknown = await self.store.find_all(ConnectorInterval, all_of(
            Eq("end", None), Eq("known", False), Range("start", lte=due)),
            limit=SETTLE_BATCH)
        by_station: dict[str, list[ConnectorInterval]] = {}
        for interval in unknown:
            by_station.setdefault(interval.station_id, []).append(interval)
        ids = sorted(by_station)
        settled: list[str] = []
        for station in await self.store.get_many(Station, ids):
            # Online: its connection is being written (or a stale read); leave it be.
            if station is None or station.online:
                continue
            changes: list[Change] = []
            for interval in by_station[station.id]:
                at = _up_again(interval.start, leases, instance_id, now)
                if at is not None and at <= due:
                    changes += known_offline(interval, at, SYSTEM)
            if not changes:
                continue
            try:
                await self.store.write(changes, [])
            except Conflict:
                continue  # its charger connected, or another instance settled it first
            settled.append(station.cp_id)
        return settled


def _up_again(start: datetime, leases: Sequence[InstanceLease], instance_id: str,
              now: datetime) -> datetime | None:
    """When the service was up again for an outage stretch that began at ``start``: the
    earliest moment from ``start`` on at which an instance was up. A lease shows its
    instance up from its start to its last renewal (our own: to now); one not renewed
    after ``start`` (its holder died with the outage, or before) shows nothing. So the
    stretch's own start when another instance was up all along (the charger could have
    connected there), the first instance's start after a restart. ``None``: no instance
    is known up since (not ours: ``renew`` runs first)."""
    return min((max(lease.started_at, start) for lease in leases
                if (now if lease.id == instance_id else lease.updated_at) > start),
               default=None)
