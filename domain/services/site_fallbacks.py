"""A site charger's fallback: what a new session draws before the site's share for it
arrives, and while the charger cannot reach ChargeGraph.

A site tells each session its share with a TxProfile for its transaction, which can
only be sent once the charger was told the transaction (``ChargingService
.start_answered``). Until it lands the session drew its connector's rating: two starts at
once drew 44 kW on a 30 kW site (QA s21), and a session started while the charger was
cut off from ChargeGraph drew it for hours. So each charger behind a site holds a
TxDefaultProfile of ours (``load_sharing.fallback_profile``, on connector 0 at the
site's stack level): the site's least per session (``Site.min_power_kw``, 6 A on each
phase unless set), which every new transaction on it draws until its own TxProfile
overrules it (OCPP 1.6, 3.13.2).

Sent by ``SiteLoad`` at each run of the site, after the shares, to each of its chargers
online that has not taken the current one on this connection (``tell``), forgotten when
a charger connects or comes back (``forget``: a reboot may lose it), asked again after a
refusal at a later run, not at every one. What was sent is written on the station before
it goes (``Station.site_fallback_kw``: the charger may hold it), so whichever instance
finds the station behind no site any more, now or when its charger next connects,
removes it (``clear``); and the instance that sent one looks at the station again once
it landed, removing it itself if the station left meanwhile (a removal on another
instance may have landed before it, and cleared the record).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from domain.entities import MIN_CURRENT_A, ChargingRateUnit, Site, Station
from domain.errors import (
    ChargerBusy,
    ChargerNotSupported,
    ChargerOffline,
    ChargerRejected,
    DomainError,
)
from domain.load_sharing import FALLBACK_PROFILE_ID, fallback_profile, limit_in_unit
from domain.policy import SYSTEM, Viewer
from domain.ports import Store, Update
from domain.services.base import touch
from domain.services.commands import CommandOutcome

log = logging.getLogger("chargegraph.sites")

#: How long after a charger refused its fallback (or did not answer) it is asked again,
#: at the site's next run after that: not at every start and stop on the site.
ASK_AGAIN_S = 60.0
#: Fallbacks and removals sent at once (a site's first run on an instance tells each of
#: its chargers); the others wait their turn.
MAX_AT_ONCE = 16
#: How long after a fallback that waited its turn at a busy charger, never sent, it is
#: asked again.
BUSY_AGAIN_S = 2.0

Send = Callable[[Viewer, str, str, dict[str, Any]], Awaitable[CommandOutcome]]


def fallback_in(site: Site, unit: ChargingRateUnit) -> float:
    """The site's fallback (its ``min_power_kw``) as sent in ``unit``, the one its
    charger takes: in amperes never below 6 A on the site's phases (IEC 61851: no AC
    charger offers less). A site in W may set its minimum below that (1 kW: 1.4 A on
    three 230 V phases; review r27), which a charger taking only amperes cannot charge
    at. Raised to 6 A, not sent as 0: the fallback is the least a session charges at,
    never 0, which would start nothing while ChargeGraph is unreachable (the choice
    the fallback is built on); the site counts a session on such a charger at 6 A at
    least anyway (``Demand.least_kw``), and a new one at its rating until it took its
    share."""
    limit = limit_in_unit(site.min_power_kw, unit, site.voltage, site.phases)
    return max(limit, MIN_CURRENT_A) if unit is ChargingRateUnit.A else limit


@dataclass(frozen=True, slots=True)
class _Told:
    """A fallback sent to a charger on its current connection: which, and its answer."""

    site_id: str
    limit: float
    unit: str
    phases: int
    accepted: bool
    at: datetime

    @property
    def key(self) -> tuple[str, float, str, int]:
        return (self.site_id, self.limit, self.unit, self.phases)


class SiteFallbacks:
    def __init__(self, store: Store, send: Send, stack_level: Callable[[str], Awaitable[int]],
                 unit_for: Callable[[Station, ChargingRateUnit],
                                    Awaitable[ChargingRateUnit]],
                 now: Callable[[], datetime], look_again: Callable[[str], None],
                 run_again: Callable[[str], None]) -> None:
        """``send``: how commands go (``CommandService.send``); ``unit_for``: the unit a
        charger takes its site's limits in, as for its sessions' limits: read with its
        stack level, else as its stored configuration says (``SiteLoad._unit_of``);
        ``look_again``: has a station's site found again and its fallback sent or
        removed, as for a charger back (``SiteLoad.charger_back``); ``run_again``: has
        its site run again (``SiteLoad.request_station``)."""
        self.store = store
        self.send = send
        self.now = now
        self._stack_level = stack_level
        self._unit_for = unit_for
        self._look_again = look_again
        self._run_again = run_again
        #: By station: the timer asking again for a fallback that did not land.
        self._timers: dict[str, asyncio.TimerHandle] = {}
        #: By station: the fallback its charger was sent on this connection.
        self._told: dict[str, _Told] = {}
        #: By station: a fallback or its removal under way (one at a time per charger).
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: Stations whose removal was asked for while a task of theirs ran: looked at
        #: again once it ends.
        self._pending: set[str] = set()
        self._slots = asyncio.Semaphore(MAX_AT_ONCE)
        self._closed = False

    def forget(self, station_id: str) -> None:
        """The station's charger connected or came back: it may have lost its fallback
        (a reboot), or be another charger; the next run of its site sends it again."""
        self._told.pop(station_id, None)

    def tell(self, site: Site, stations: list[Station]) -> None:
        """Sends the site's fallback, in the background, to each of its chargers online
        that was not sent it on this connection (or refused it ``ASK_AGAIN_S`` ago), or
        whose record says it holds none of this value: another instance may have
        removed it since this one sent it."""
        limit = limit_in_unit(site.min_power_kw, site.unit, site.voltage, site.phases)
        key = (site.id, limit, site.unit.value, site.phases)
        for station in stations:
            if not station.online or station.id in self._tasks or self._closed:
                continue
            told = self._told.get(station.id)
            sent = told is not None and told.key == key and (
                told.accepted or (self.now() - told.at).total_seconds() < ASK_AGAIN_S)
            if sent and station.site_fallback_kw == site.min_power_kw:
                continue
            # Sent, but the record read says otherwise: it may predate the record this
            # instance wrote (the run read it before), so it is read again first.
            self._start(station.id, self._send(site, station, limit, look_first=sent))

    def clear(self, station: Station) -> None:
        """Removes the fallback a station's charger may hold (``site_fallback_kw``) now
        that the station is behind no site, in the background (after a task of its
        still running). Kept (an unanswered or offline charger) it is tried again when
        the charger next connects."""
        if not station.online or station.site_fallback_kw is None or self._closed:
            return
        if station.id in self._tasks:
            self._pending.add(station.id)
            return
        self._start(station.id, self._remove(station, station.site_fallback_kw))

    def under_way(self) -> list[asyncio.Task[None]]:
        """The fallbacks and removals being sent now (``SiteLoad.settled``)."""
        return list(self._tasks.values())

    async def close(self) -> None:
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, station_id: str, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                async with self._slots:
                    await work
            except DomainError as exc:  # the store refused: the next run tries again
                log.info("the site fallback of station %s: %s", station_id, exc.message)
            except Exception:
                log.exception("the site fallback of station %s failed", station_id)
            finally:
                self._tasks.pop(station_id, None)
                if station_id in self._pending and not self._closed:
                    self._pending.discard(station_id)
                    self._look_again(station_id)

        self._tasks[station_id] = asyncio.create_task(run(),
                                                      name=f"site-fallback-{station_id}")

    async def _send(self, site: Site, station: Station, limit: float, *,
                    look_first: bool = False) -> None:
        if look_first:
            [now] = await self.store.get_many(Station, [station.id])
            if now is None or now.site_fallback_kw == site.min_power_kw:
                return
            station = now
        level = await self._stack_level(station.cp_id)
        # A charger taking limits only in the other unit refuses the site's own.
        # (``_Told`` keeps the site's ``limit``: ``tell`` compares it with the site's.)
        unit = await self._unit_for(station, site.unit)
        sent = limit if unit is site.unit else fallback_in(site, unit)
        if station.site_fallback_kw != site.min_power_kw:
            # Before it goes: once sent, the charger may hold it, and it must be found
            # to be removed whichever instance sees the station leave the site.
            await self.store.write([touch(station, site_fallback_kw=site.min_power_kw)], [])
        told = _Told(site.id, limit, site.unit.value, site.phases, False, self.now())
        try:
            outcome = await self.send(SYSTEM, station.cp_id, "SetChargingProfile",
                                      fallback_profile(sent, unit, site.phases, level))
        except DomainError as exc:  # not sent (gone offline, its registration refused)
            log.info("site %s: fallback for %s not sent: %s", site.id, station.cp_id,
                     exc.message)
            self._told[station.id] = told  # asked again in a while, not at every run
            return
        accepted = outcome.error is None
        if isinstance(outcome.error, ChargerBusy):
            # Never sent: asked again in a moment, whatever else happens on the site.
            self._ask_again(station.id, BUSY_AGAIN_S)
            return
        if not accepted and not isinstance(outcome.error, ChargerOffline):
            # The error's words say what the charger answered ("... answered
            # SetChargingProfile with InternalError", "the charger answered Rejected").
            log.warning("site %s: fallback for %s refused: %s", site.id, station.cp_id,
                        outcome.error)
            # A quiet site runs on no event (QA s22 verify: a charger busy at the time
            # held no fallback for minutes): asked again once the while is over.
            self._ask_again(station.id, ASK_AGAIN_S + 1)
        self._told[station.id] = replace(told, accepted=accepted)
        [now] = await self.store.get_many(Station, [station.id])
        if now is None or now.site_id == site.id:
            return
        self._told.pop(station.id, None)
        if now.site_id is None:
            # It left the site while the fallback was on its way, and a removal by
            # another instance may have landed before it (and cleared the record, so
            # nobody else would remove it): removed here.
            await self._remove(now, site.min_power_kw)
        else:
            self._look_again(station.id)  # the new site's own replaces it (same id)

    def _ask_again(self, station_id: str, delay: float) -> None:
        """Has the station's site run again in ``delay`` s (one timer per station)."""
        if self._closed or station_id in self._timers:
            return

        def fire() -> None:
            self._timers.pop(station_id, None)
            self._run_again(station_id)

        self._timers[station_id] = asyncio.get_running_loop().call_later(delay, fire)

    async def _remove(self, station: Station, held_kw: float) -> None:
        try:
            outcome = await self.send(SYSTEM, station.cp_id, "ClearChargingProfile",
                                      {"id": FALLBACK_PROFILE_ID})
        except DomainError as exc:
            log.info("the site fallback of %s was not removed: %s", station.cp_id,
                     exc.message)
            return
        error = outcome.error
        # Accepted: removed; Unknown: it held none; NotSupported: it takes no profiles.
        if error is not None and not isinstance(error, ChargerNotSupported) and not (
                isinstance(error, ChargerRejected) and outcome.status == "Unknown"):
            log.warning("%s answered %s to removing its site fallback", station.cp_id,
                        outcome.status or error)
            return
        self._told.pop(station.id, None)
        [now] = await self.store.get_many(Station, [station.id])
        if now is None:
            return
        if now.site_fallback_kw is not None:
            # Only onto what is there: a site joined meanwhile writes its own first.
            await self.store.write([Update(replace(now, site_fallback_kw=None),
                                           fields=frozenset({"site_fallback_kw"}),
                                           only_if=("site_fallback_kw", held_kw))], [])
        if now.site_id is not None:
            self._look_again(station.id)  # joined a site meanwhile: its fallback again
