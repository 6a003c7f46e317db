"""Site load management, enforced: whenever what charges behind a site may have changed,
its power is shared again (``domain.load_sharing.allocate``) and every session whose
share changed is told it with a SetChargingProfile (a TxProfile for its transaction).

Triggers (``SiteLoad.request_site``/``request_station``): a StartTransaction answered
(``ChargingService.start_answered``, after the answer went out: a charger refuses a
TxProfile for a transaction it has not been told of), and what this process's services
publish (``ServiceContext.published``, so each event is handled once across instances):
a session ENDED (a stop, ``endSession``, a lost stop), a station's connection changing,
a station edited; and the site service's own edits (limit, unit, assignments).

The sending never runs on a charger's handler path: requests only mark a site for a
recompute, done by a task per site (a request while it runs makes it run once more),
at most ``MAX_SITES_AT_ONCE`` at a time, each command bounded by the command timeout.
Commands go through ``CommandService.send`` as the system: audited as COMMANDs,
authorized, and relayed to the instance holding the charger with Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from domain.entities import (
    Connector,
    LimitAnswer,
    Session,
    SessionState,
    Site,
    SiteAllocation,
    Station,
)
from domain.errors import (
    ChargerOffline,
    ChargerRejected,
    ChargerTimeout,
    Conflict,
    DomainError,
)
from domain.events import SessionChanged, StationChanged, StationConnectionChanged
from domain.load_sharing import Demand, allocate, limit_in_unit, profile_id, tx_profile
from domain.policy import SYSTEM
from domain.ports import Change, Delete, Insert, Update
from domain.query import Eq, In, all_of
from domain.services.base import Service, ServiceContext, changed, stamp_new
from domain.services.commands import CommandOutcome, CommandService

log = logging.getLogger("chargegraph.sites")

#: Sites recomputed (and their chargers told) at once; others wait their turn.
MAX_SITES_AT_ONCE = 8
#: Station ids read at once when finding the sites events name.
RESOLVE_BATCH = 500
#: The most stations and active sessions a site's recompute reads.
MAX_PER_SITE = 1_000

_ANSWERS = {a.value: a for a in LimitAnswer}


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
    return LimitAnswer.ERROR


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
        ctx.published.append(self._heard)

    # ------------------------------------------------------------- triggers
    def _heard(self, event: Any) -> None:
        """A published event that may change what charges behind a site (a start is
        taken after its answer instead: ``start_answered``)."""
        if isinstance(event, SessionChanged) and event.change != "ENDED":
            return
        if isinstance(event, SessionChanged | StationConnectionChanged | StationChanged) \
                and event.station_id is not None:
            self.request_station(event.station_id)

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
            try:
                stations = await self.store.get_many(Station, batch)
            except Exception:
                log.exception("finding the sites of %d stations failed", len(batch))
                continue
            for station in stations:
                if station is not None and station.site_id is not None:
                    self.request_site(station.site_id)

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
            waiting = [*self._running.values()]
            if self._resolver is not None and not self._resolver.done():
                waiting.append(self._resolver)
            if not waiting:
                return
            await asyncio.wait(waiting)

    async def close(self) -> None:
        """Stops: nothing more is asked, what runs is cancelled (a command under way is
        audited as unanswered by ``CommandService``)."""
        self._closed = True
        tasks = [*self._running.values()]
        if self._resolver is not None:
            tasks.append(self._resolver)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------- the recompute
    async def recompute(self, site_id: str) -> None:
        """Shares the site's power among the sessions charging behind it now and tells
        each charger whose share changed (or whose last limit it did not accept)."""
        [site] = await self.store.get_many(Site, [site_id])
        stations = [] if site is None else await self.store.find_all(
            Station, Eq("site_id", site_id), limit=MAX_PER_SITE)
        sessions = await self._active(stations)
        charging_ids = [s.id for s in sessions]
        await self._release([a for a in await self.store.find_all(
            SiteAllocation, Eq("site_id", site_id), limit=MAX_PER_SITE)
            if a.session_id not in set(charging_ids)])
        if site is None or not sessions:
            return
        # By session (an allocation's id is its session's): one recorded under the site
        # a station just left moves with it.
        held = {a.session_id: a for a in await self.store.get_many(
            SiteAllocation, charging_ids) if a is not None}
        online = {st.id for st in stations if st.online}
        # An offline charger goes on applying the last limit it was sent (OCPP 1.6 keeps
        # a TxProfile for its transaction): what it holds is not shared out.
        reserved = sum(held[s.id].power_kw for s in sessions
                       if s.station_id not in online and s.id in held)
        charging = [s for s in sessions if s.station_id in online]
        ratings = await self._ratings(stations)
        shares = allocate(site.max_power_kw, site.min_power_kw, [
            Demand(s.id, s.start_time, s.transaction_id,
                   ratings.get((s.station_id, s.connector_id))) for s in charging],
            reserved)
        due = [(s, shares[s.id]) for s in charging
               if self._due(site, held.get(s.id), shares[s.id])]
        # Lower limits first (and new sessions, which charge unlimited until told), then
        # the raises: the site stays within its limit while the chargers are told.
        lowering = {s.id for s, kw in due if s.id not in held or kw < held[s.id].power_kw}
        lower = [(s, kw) for s, kw in due if s.id in lowering]
        higher = [(s, kw) for s, kw in due if s.id not in lowering]
        for group in (lower, higher):
            await asyncio.gather(*(self._tell(site, held.get(s.id), s, kw)
                                   for s, kw in group))

    async def _active(self, stations: Sequence[Station]) -> list[Session]:
        if not stations:
            return []
        return await self.store.find_all(Session, all_of(
            In("station_id", tuple(st.id for st in stations)),
            Eq("state", SessionState.ACTIVE)), limit=MAX_PER_SITE)

    async def _ratings(self, stations: Sequence[Station]
                       ) -> dict[tuple[str, int], float | None]:
        connectors = await self.store.find_all(Connector, In(
            "station_id", tuple(st.id for st in stations)), limit=MAX_PER_SITE * 10)
        return {(c.station_id, c.connector_id): c.max_kw for c in connectors}

    @staticmethod
    def _due(site: Site, held: SiteAllocation | None, power_kw: float) -> bool:
        """Whether the charger must be told: its share (as sent, in the site's unit)
        changed, or it did not accept the last one (it is not under control)."""
        if held is None or held.answer is not LimitAnswer.ACCEPTED or held.unit != site.unit:
            return True
        return held.limit != limit_in_unit(power_kw, site.unit, site.voltage, site.phases)

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
        await asyncio.gather(*(self._lift(a) for a in still
                               if a.station_id in stations
                               and stations[a.station_id].site_id is None))

    async def _lift(self, allocation: SiteAllocation) -> None:
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

    async def _tell(self, site: Site, held: SiteAllocation | None, session: Session,
                    power_kw: float) -> None:
        """Sends the session's share and records it with the charger's answer."""
        limit = limit_in_unit(power_kw, site.unit, site.voltage, site.phases)
        payload = tx_profile(session.connector_id, session.transaction_id, limit,
                             site.unit, site.phases)
        try:
            outcome = await self.commands.send(SYSTEM, session.cp_id, "SetChargingProfile",
                                               payload)
            answer = answer_of(outcome)
        except DomainError as exc:  # refused before sending (the session ended meanwhile)
            log.info("site %s: limit for transaction %d not sent: %s", site.id,
                     session.transaction_id, exc.message)
            answer = LimitAnswer.ERROR
        if answer is not LimitAnswer.ACCEPTED:
            log.warning("site %s: %s answered %s to its limit for transaction %d",
                        site.id, session.cp_id, answer.value, session.transaction_id)
        await self._record(site, held, session, power_kw, limit, answer)

    async def _record(self, site: Site, held: SiteAllocation | None, session: Session,
                      power_kw: float, limit: float, answer: LimitAnswer) -> None:
        values: dict[str, Any] = {
            "site_id": site.id, "company_id": site.company_id, "power_kw": power_kw,
            "limit": limit, "unit": site.unit, "limit_sent_at": self.now(),
            "answer": answer}
        change: Change
        if held is None:
            change = Insert(stamp_new(SiteAllocation(
                id=session.id, session_id=session.id, station_id=session.station_id,
                cp_id=session.cp_id, connector_id=session.connector_id,
                transaction_id=session.transaction_id, **values), SYSTEM))
        else:
            change = Update(changed(held, SYSTEM, **values))
        try:
            await self.store.write([change], [])
        except Conflict:  # another instance recorded it meanwhile; the next run reads it
            log.info("site %s: the share of transaction %d was recorded meanwhile",
                     site.id, session.transaction_id)
