"""A site charger's fallback across instances and in-flight commands (review s22): a
removal on one instance overtaken by another's fallback left it on the charger with
nothing recording it; an instance whose memory said the charger took it did not send it
again after another removed it; a removal asked for while a fallback was on its way was
dropped. Two ``SiteLoad`` instances on one real store, chargers scripted by profile id,
and the test says which instance hears what."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, cast

import pytest

from domain.clock import utcnow
from domain.entities import LimitAnswer, Session, Site, SiteAllocation, Station
from domain.errors import ChargerBusy, ChargerRejected, ChargerTimeout, Conflict
from domain.load_sharing import FALLBACK_PROFILE_ID, PROFILE_ID_BASE
from domain.policy import SYSTEM, Viewer
from domain.ports import Delete
from domain.query import Eq
from domain.services import site_fallbacks
from domain.services.commands import CommandOutcome, CommandService
from domain.services.site_load import SiteLoad
from tests.helpers import until
from tests.ocpp.conftest import Central


class Chargers:
    """What each charger holds, by profile id; one instance's fallbacks can be held on
    their way (``gate``)."""

    def __init__(self) -> None:
        self.held: dict[str, dict[int, str]] = {}
        self.gate: tuple[str, asyncio.Event] | None = None
        self.sets = 0
        self.cleared: list[tuple[str, int]] = []
        self.on_the_way = asyncio.Event()

    def of(self, instance: str) -> CommandService:
        chargers = self

        class Port:
            timeout = 5.0

            async def send(self, viewer: Viewer, cp_id: str, action: str,
                           payload: dict[str, Any]) -> CommandOutcome:
                return await chargers.answer(instance, cp_id, action, payload)

        return cast(CommandService, Port())

    async def answer(self, instance: str, cp_id: str, action: str,
                     payload: dict[str, Any]) -> CommandOutcome:
        outcome = CommandOutcome(command_id="c", action=action,
                                 station=cast(Station, None), status="Accepted")
        held = self.held.setdefault(cp_id, {})
        if action == "GetConfiguration":
            outcome.result = {"configurationKey": [
                {"key": "ChargeProfileMaxStackLevel", "value": "10", "readonly": True}]}
        elif action == "ClearChargingProfile":
            self.cleared.append((cp_id, payload["id"]))
            if held.pop(payload["id"], None) is None:
                outcome.status = "Unknown"
                outcome.error = ChargerRejected("Unknown")
        else:
            profile = payload["csChargingProfiles"]
            if self.gate is not None and self.gate[0] == instance:
                self.on_the_way.set()
                await self.gate[1].wait()
            held[profile["chargingProfileId"]] = profile["chargingProfilePurpose"]
            self.sets += 1
        return outcome


@pytest.fixture
async def world(central: Central) -> Any:
    """Instances A (the services' own) and B on one store, nobody hearing events by
    itself; CP-OPEN behind a site, online."""
    chargers = Chargers()
    services = central.services
    a = services.site_load
    a.commands = chargers.of("A")
    b = SiteLoad(services.ctx, chargers.of("B"))
    services.ctx.published.remove(a._heard)
    services.ctx.published.remove(b._heard)
    company = central.stations["CP-OPEN"].company_id
    assert company is not None
    site = await services.sites.create_site(SYSTEM, name="Depot", company_id=company,
                                            max_power_kw=30)
    station_id = central.stations["CP-OPEN"].id
    await services.sites.assign_station(SYSTEM, station_id, site.id)
    await services.charging.set_online("CP-OPEN", True)
    try:
        yield chargers, a, b, site, station_id
    finally:
        await b.close()


World = tuple[Chargers, SiteLoad, SiteLoad, Site, str]


async def stored(central: Central, station_id: str) -> Station:
    [station] = await central.store.get_many(Station, [station_id])
    assert station is not None
    return station


async def leave(central: Central, instance: SiteLoad, station_id: str) -> None:
    """The station leaves its site; ``instance`` hears its StationChanged."""
    await central.services.sites.assign_station(SYSTEM, station_id, None)
    instance.request_station(station_id)


async def test_a_removal_overtaken_by_another_instance_s_fallback_is_made_good(
        central: Central, world: World) -> None:
    chargers, a, b, site, station_id = world
    a.request_site(site.id)
    await a.settled()
    assert chargers.held["CP-OPEN"] == {FALLBACK_PROFILE_ID: "TxDefaultProfile"}
    # B's first run of the site sends it too, slowly (its memory is its own).
    chargers.gate = ("B", asyncio.Event())
    b.request_site(site.id)
    await asyncio.wait_for(chargers.on_the_way.wait(), 5)
    await leave(central, a, station_id)
    await a.settled()
    assert chargers.held["CP-OPEN"] == {}  # A removed it, and cleared the record
    assert (await stored(central, station_id)).site_fallback_kw is None
    chargers.gate[1].set()  # B's lands after the removal: B finds the station left
    await b.settled()
    await a.settled()
    assert chargers.held["CP-OPEN"] == {}
    assert (await stored(central, station_id)).site_fallback_kw is None


async def test_a_fallback_removed_elsewhere_is_sent_again_when_the_station_returns(
        central: Central, world: World) -> None:
    chargers, a, b, site, station_id = world
    b.request_site(site.id)
    await b.settled()
    await leave(central, a, station_id)
    await a.settled()
    assert chargers.held["CP-OPEN"] == {}
    # Back behind the site, heard by B, whose memory says the charger took it.
    central.services.sites.recompute = b.request_site
    await central.services.sites.assign_station(SYSTEM, station_id, site.id)
    b.request_station(station_id)
    await b.settled()
    assert chargers.held["CP-OPEN"] == {FALLBACK_PROFILE_ID: "TxDefaultProfile"}
    assert (await stored(central, station_id)).site_fallback_kw == 4.14


async def test_a_removal_asked_for_while_a_fallback_is_on_its_way_follows_it(
        central: Central, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback's look at the station once it landed was read just before the
    station left, and the removal asked for then found a task under way."""
    chargers, a, _, site, station_id = world
    a.request_site(site.id)
    await a.settled()
    a.charger_back(station_id)  # the charger came back: its fallback goes again
    store = central.store
    read = store.get_many
    looked, answer = asyncio.Event(), asyncio.Event()

    async def late(kind: Any, ids: Any, *more: Any) -> Any:
        found = await read(kind, ids, *more)
        task = asyncio.current_task()
        if kind is Station and task is not None \
                and task.get_name().startswith("site-fallback-"):
            looked.set()  # read: the station is still behind the site
            await answer.wait()
        return found

    monkeypatch.setattr(store, "get_many", late)
    await asyncio.wait_for(looked.wait(), 5)
    central.services.sites.recompute = a.request_site
    await leave(central, a, station_id)

    async def resolved() -> bool:  # found behind no site: its removal asked for
        return a._resolver is not None and a._resolver.done()

    await until(resolved)
    answer.set()
    await a.settled()
    monkeypatch.undo()
    assert (await stored(central, station_id)).site_id is None
    assert chargers.held["CP-OPEN"] == {}
    assert (await stored(central, station_id)).site_fallback_kw is None


async def test_a_run_that_read_the_station_before_its_fallback_was_recorded_sends_none(
        central: Central, world: World) -> None:
    """A run reads the site's stations, then shares (up to two seconds) and only then
    tells the fallbacks: a station read before this instance recorded the fallback it
    sent meanwhile looked like one holding none, and was sent it again."""
    chargers, a, _, site, station_id = world
    await a.settled()
    assert chargers.sets == 1  # the station's assignment had the site run
    now = await stored(central, station_id)
    assert now.site_fallback_kw == 4.14
    # The run's reading, older than the record.
    a.fallbacks.tell(site, [replace(now, site_fallback_kw=None)])
    await a.settled()
    assert chargers.sets == 1


async def test_a_station_leaving_every_site_lifts_limits_recorded_nowhere(
        central: Central, world: World) -> None:
    """Review s22: a share whose recording lost a race with the release of the site its
    station left was recorded nowhere, so when the station then left every site nobody
    lifted it, and the charger kept the limit. A station found behind no site while it
    still has a fallback lifts the limits of its sessions under way, recorded or not."""
    chargers, a, _, site, station_id = world
    charging = central.services.charging
    await charging.start_transaction("CP-OPEN", 1, "TAG-OK", 1000, utcnow())
    await charging.start_answered("CP-OPEN")
    await a.settled()
    assert PROFILE_ID_BASE + 1 in chargers.held["CP-OPEN"]
    for allocation in await central.store.find_all(SiteAllocation, Eq("site_id", site.id)):
        await central.store.write([Delete(allocation)], [])  # the record lost
    central.services.sites.recompute = a.request_site
    await leave(central, a, station_id)
    await a.settled()
    assert ("CP-OPEN", PROFILE_ID_BASE + 1) in chargers.cleared
    assert PROFILE_ID_BASE + 1 not in chargers.held["CP-OPEN"]
    assert chargers.held["CP-OPEN"] == {}


async def test_a_station_left_behind_is_lifted_once_however_often_it_is_heard(
        central: Central, world: World) -> None:
    """Review s22: while the charger refused the fallback's removal, every later event of
    the station lifted its sessions' limits again (a clear and a warning each time)."""
    chargers, a, _, _, station_id = world
    charging = central.services.charging
    await charging.start_transaction("CP-OPEN", 1, "TAG-OK", 1000, utcnow())
    await charging.start_answered("CP-OPEN")
    await a.settled()
    answer = chargers.answer

    async def keeping_the_fallback(instance: str, cp_id: str, action: str,
                                   payload: dict[str, Any]) -> CommandOutcome:
        if action == "ClearChargingProfile" and payload["id"] == FALLBACK_PROFILE_ID:
            refused = CommandOutcome(command_id="c", action=action,
                                     station=cast(Station, None), status="Rejected")
            refused.error = ChargerRejected("Rejected")
            return refused
        return await answer(instance, cp_id, action, payload)

    chargers.answer = keeping_the_fallback  # type: ignore[method-assign]
    central.services.sites.recompute = a.request_site
    await leave(central, a, station_id)
    await a.settled()
    for _ in range(4):  # further events of the station
        a.request_station(station_id)
        await a.settled()
    assert (await stored(central, station_id)).site_fallback_kw is not None
    assert chargers.cleared.count(("CP-OPEN", PROFILE_ID_BASE + 1)) == 1


async def test_a_station_that_joined_a_site_meanwhile_keeps_its_new_share(
        central: Central, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s22: the look at a station left behind read it behind no site, then it
    joined another site whose run told and recorded its share, and the lift cleared that
    share at the charger while the record still said ACCEPTED (never sent again)."""
    chargers, a, b, _, station_id = world
    charging = central.services.charging
    await charging.start_transaction("CP-OPEN", 1, "TAG-OK", 1000, utcnow())
    await charging.start_answered("CP-OPEN")
    await a.settled()
    company = central.stations["CP-OPEN"].company_id
    assert company is not None
    other = await central.services.sites.create_site(SYSTEM, name="Yard",
                                                     company_id=company, max_power_kw=30)
    store = central.store
    find_all = store.find_all
    paused, go = asyncio.Event(), asyncio.Event()

    async def pausing(kind: Any, *args: Any, **kwargs: Any) -> Any:
        found = await find_all(kind, *args, **kwargs)
        task = asyncio.current_task()
        if kind is Session and task is not None \
                and task.get_name() == "site-load-resolve" and not go.is_set():
            paused.set()  # the sessions of the stations behind no site read
            await go.wait()
        return found

    monkeypatch.setattr(store, "find_all", pausing)
    central.services.sites.recompute = lambda _: None  # the test says who runs what
    await leave(central, a, station_id)
    await asyncio.wait_for(paused.wait(), 5)
    await central.services.sites.assign_station(SYSTEM, station_id, other.id)
    b.request_site(other.id)
    await b.settled()
    assert PROFILE_ID_BASE + 1 in chargers.held["CP-OPEN"]  # the yard's share
    go.set()
    await a.settled()
    monkeypatch.undo()
    assert PROFILE_ID_BASE + 1 in chargers.held["CP-OPEN"]
    assert ("CP-OPEN", PROFILE_ID_BASE + 1) not in chargers.cleared
    [kept] = await store.find_all(SiteAllocation, Eq("station_id", station_id))
    assert kept.answer is LimitAnswer.ACCEPTED  # not forgotten either


async def test_a_fallback_that_did_not_land_is_asked_again_on_a_quiet_site(
        central: Central, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA s22 verify: a fallback that waited its turn at a busy charger (never sent), or
    was refused, was asked again only at a run of the site, and a quiet site has none:
    the charger held no fallback for minutes."""
    monkeypatch.setattr(site_fallbacks, "BUSY_AGAIN_S", 0.05)
    monkeypatch.setattr(site_fallbacks, "ASK_AGAIN_S", 0.1)
    chargers, a, _, _, station_id = world
    await a.settled()
    answer = chargers.answer
    failures = [ChargerBusy("busy"), ChargerTimeout("no answer")]

    async def failing_twice(instance: str, cp_id: str, action: str,
                            payload: dict[str, Any]) -> CommandOutcome:
        if action == "SetChargingProfile" and failures:
            failed = CommandOutcome(command_id="c", action=action,
                                    station=cast(Station, None))
            failed.error = failures.pop(0)
            return failed
        return await answer(instance, cp_id, action, payload)

    chargers.answer = failing_twice  # type: ignore[method-assign]
    chargers.held["CP-OPEN"].clear()  # the charger lost it (a reboot, say)
    a.charger_back(station_id)
    for _ in range(300):
        await a.settled()
        if FALLBACK_PROFILE_ID in chargers.held["CP-OPEN"]:
            break
        await asyncio.sleep(0.01)
    assert failures == []
    assert chargers.held["CP-OPEN"] == {FALLBACK_PROFILE_ID: "TxDefaultProfile"}


async def test_the_site_s_profile_ids_are_refused_on_a_station_in_no_site(
        central: Central, world: World) -> None:
    """QA s22 verify: accepted there, they were replaced by the site's own once the
    station joined one, and cleared when it left."""
    _, a, _, _, station_id = world
    await central.services.sites.assign_station(SYSTEM, station_id, None)
    station = await stored(central, station_id)
    assert station.site_id is None
    with pytest.raises(Conflict) as refused:
        await a.check_profile(station, {"connectorId": 1, "csChargingProfiles": {
            "chargingProfileId": PROFILE_ID_BASE + 1, "stackLevel": 5,
            "chargingProfilePurpose": "TxProfile"}})
    assert refused.value.field == "csChargingProfiles.chargingProfileId"
    await a.check_profile(station, {"connectorId": 1, "csChargingProfiles": {
        "chargingProfileId": PROFILE_ID_BASE - 1, "stackLevel": 5,
        "chargingProfilePurpose": "TxProfile"}})
