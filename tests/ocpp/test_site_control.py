"""Site load management keeps a site within its limit whatever its chargers answer
(QA and review, s16): what a charger may draw is held for it until it accepts a limit
(``SiteAllocation.bound_kw``), raises wait for every lower limit to be accepted, and two
instances sharing one site at once do not together raise past it.

The chargers here are scripted answers behind ``CommandService.send`` (accept, reject,
not supported, silent, or held until released), on a real store and real sessions;
``applied`` is what each charger then applies, the worst case for one that said nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any, cast

import pytest

from domain.clock import utcnow
from domain.entities import LimitAnswer, Session, Site, SiteAllocation, Station
from domain.errors import ChargerNotSupported, ChargerRejected, ChargerTimeout
from domain.load_sharing import FALLBACK_PROFILE_ID, PROFILE_ID_BASE
from domain.policy import SYSTEM, Viewer
from domain.ports import Delete, Update
from domain.query import Eq
from domain.services import site_load
from domain.services.commands import CommandOutcome, CommandService
from domain.services.site_load import SiteLoad
from tests.ocpp.conftest import Central


class Chargers:
    """Scripted answers to the site's commands, by (cpId, connectorId)."""

    timeout = 5.0

    def __init__(self) -> None:
        self.behaviour: dict[tuple[str, int], str] = {}
        self.applied: dict[tuple[str, int], float] = {}
        self.sent: list[tuple[str, int, float]] = []
        self.cleared: list[tuple[str, int]] = []
        self.asked_config: list[str] = []
        self.fallbacks: dict[str, float] = {}
        self.release = asyncio.Event()

    async def send(self, viewer: Viewer, cp_id: str, action: str, payload: dict[str, Any]
                   ) -> CommandOutcome:
        outcome = CommandOutcome(command_id="c", action=action,
                                 station=cast(Station, None))
        if action == "GetConfiguration":
            self.asked_config.append(cp_id)
            if self.behaviour.get((cp_id, 0)) == "no-config":
                outcome.error = ChargerNotSupported("NotImplemented")
                return outcome
            outcome.result = {"configurationKey": [
                {"key": "ChargeProfileMaxStackLevel", "value": "8", "readonly": True}],
                "unknownKey": [k for k in payload["key"]
                               if k != "ChargeProfileMaxStackLevel"] or None}
            return outcome
        if action == "ClearChargingProfile":  # the site's limit lifted: off this site
            self.cleared.append((cp_id, payload["id"]))
            if payload["id"] == FALLBACK_PROFILE_ID:
                self.fallbacks.pop(cp_id, None)
            else:
                self.applied = {p: kw for p, kw in self.applied.items() if p[0] != cp_id}
            outcome.status = "Accepted"
            return outcome
        assert action == "SetChargingProfile", action
        plug = (cp_id, payload["connectorId"])
        schedule = payload["csChargingProfiles"]["chargingSchedule"]
        limit = schedule["chargingSchedulePeriod"][0]["limit"]
        if payload["csChargingProfiles"]["chargingProfilePurpose"] == "TxDefaultProfile":
            self.fallbacks[cp_id] = limit  # the site's fallback: no session's limit
            outcome.status = "Accepted"
            return outcome
        self.sent.append((*plug, limit))
        match self.behaviour.get(plug, "accept"):
            case "reject":
                outcome.status = "Rejected"
                outcome.error = ChargerRejected("the charger answered Rejected")
                return outcome
            case "unsupported":
                outcome.error = ChargerNotSupported("NotSupported")
                return outcome
            case "silent":  # it took it, or not: the worst is the higher
                self.applied[plug] = max(self.applied.get(plug, limit), limit)
                outcome.error = ChargerTimeout("no answer")
                return outcome
            case "held":
                await self.release.wait()
        self.applied[plug] = limit
        outcome.status = "Accepted"
        return outcome

    def drawn(self, unlimited: dict[tuple[str, int], float]) -> float:
        """kW drawn at worst: the limit each applies, its rating where it has none."""
        plugs = set(self.applied) | set(unlimited)
        return sum(self.applied.get(p, unlimited.get(p, 0.0) * 1000) for p in plugs) / 1000


async def depot(central: Central, max_kw: float, **options: Any) -> Site:
    company = central.stations["CP-1"].company_id
    assert company is not None
    services = central.services
    site = await services.sites.create_site(SYSTEM, name="Depot", company_id=company,
                                            max_power_kw=max_kw, **options)
    for cp_id in ("CP-1", "CP-OPEN"):
        await services.sites.assign_station(SYSTEM, central.stations[cp_id].id, site.id)
        await services.charging.set_online(cp_id, True)
    return site


def scripted(central: Central) -> Chargers:
    chargers = Chargers()
    central.services.site_load.commands = cast(CommandService, chargers)
    return chargers


async def start(central: Central, cp_id: str, connector: int, tag: str) -> int:
    charging = central.services.charging
    tx, info = await charging.start_transaction(cp_id, connector, tag, 1000, utcnow())
    assert tx > 0, info  # an unknown card (TAG-X) is answered Invalid: it runs all the same
    await charging.start_answered(cp_id)
    await central.services.site_load.settled()
    return tx


async def shares(central: Central, site: Site) -> dict[int, tuple[float, float, str]]:
    return {a.transaction_id: (a.power_kw, a.bound_kw, a.answer.value if a.answer else "")
            for a in await central.store.find_all(SiteAllocation, Eq("site_id", site.id))}


async def test_a_lower_limit_not_accepted_holds_the_raises_back(central: Central) -> None:
    """QA D1: the chargers took 12 + 6 + 0 on a 12 kW site: a silent charger's lower
    limit went unanswered and the raise was sent anyway."""
    chargers = scripted(central)
    site = await depot(central, 12, min_power_kw=5)
    for cp_id, connector, tag in (("CP-1", 2, "TAG-OK"), ("CP-OPEN", 2, "TAG-OTHER"),
                                  ("CP-OPEN", 1, "TAG-X")):
        await start(central, cp_id, connector, tag)
    assert chargers.applied == {("CP-1", 2): 6000.0, ("CP-OPEN", 2): 6000.0,
                                ("CP-OPEN", 1): 0.0}
    chargers.behaviour[("CP-OPEN", 2)] = "silent"
    before = len(chargers.sent)
    await central.services.sites.update_site(SYSTEM, site.id, min_power_kw=7)
    await central.services.site_load.settled()
    assert chargers.drawn({}) <= 12, chargers.applied
    assert ("CP-1", 2, 12000.0) not in chargers.sent[before:]


async def test_what_a_charger_may_draw_is_held_while_it_is_not_under_control(
        central: Central) -> None:
    """QA D2 and D3: a charger that lost its connection before answering a lower limit,
    and chargers that refuse limits, were counted at the share sent (or an equal share)
    while they drew their rating: 37 kW on 30, 57 on 40."""
    chargers = scripted(central)
    site = await depot(central, 40)
    chargers.behaviour[("CP-OPEN", 1)] = "reject"
    chargers.behaviour[("CP-OPEN", 2)] = "unsupported"
    await start(central, "CP-1", 2, "TAG-OK")
    await start(central, "CP-OPEN", 1, "TAG-OTHER")
    await start(central, "CP-OPEN", 2, "TAG-X")
    held = await shares(central, site)
    # CP-OPEN's two plugs (150 kW, 22 kW) hold all of the site: CP-1's is paused.
    assert sorted(bound for _, bound, _ in held.values()) == [0.0, 22.0, 150.0]
    unlimited = {("CP-OPEN", 1): 150.0, ("CP-OPEN", 2): 22.0}
    assert chargers.applied[("CP-1", 2)] == 0.0
    assert not any(kw for _, kw, answer in held.values() if answer == "Accepted")
    assert chargers.drawn({}) == 0.0 and sum(unlimited.values()) > 40  # beyond us


async def test_a_charger_gone_before_answering_is_held_at_the_higher_limit(
        central: Central) -> None:
    chargers = scripted(central)
    site = await depot(central, 30)
    tx1 = await start(central, "CP-1", 2, "TAG-OK")
    assert (await shares(central, site))[tx1][:2] == (22.0, 22.0)
    chargers.behaviour[("CP-1", 2)] = "silent"
    tx2 = await start(central, "CP-OPEN", 2, "TAG-OTHER")
    assert (await shares(central, site))[tx1][1] == 22.0  # 15 sent, 22 may still apply
    await central.services.charging.set_online("CP-1", False)
    await central.services.site_load.settled()
    tx3 = await start(central, "CP-OPEN", 1, "TAG-X")
    now = await shares(central, site)
    assert now[tx2][0] + now[tx3][0] <= 30 - 22, now
    assert chargers.drawn({}) <= 30


async def test_two_instances_sharing_one_site_do_not_raise_past_its_limit(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s16: instance B raised S2 to the whole site after S1 stopped, its command
    slow; instance A, seeing S2 still at half, gave a new S3 the other half; B's raise
    landed: 33 kW on 22. A raise is now recorded (PENDING, at the new share) and the site
    read again before it is sent, and A holds S2 at it."""
    chargers = scripted(central)
    site = await depot(central, 22)
    services = central.services
    tx1 = await start(central, "CP-1", 2, "TAG-OK")
    await start(central, "CP-OPEN", 2, "TAG-OTHER")
    assert chargers.applied == {("CP-1", 2): 11000.0, ("CP-OPEN", 2): 11000.0}
    other = SiteLoad(services.ctx, cast(CommandService, chargers))  # instance B
    try:
        chargers.behaviour[("CP-OPEN", 2)] = "held"
        # B hears the stop (it published it); A does not.
        monkeypatch.setattr(services.site_load, "request_station", lambda _: None)
        await services.charging.stop_transaction("CP-1", tx1, 2000, utcnow())
        chargers.applied.pop(("CP-1", 2))  # its transaction is over
        monkeypatch.undo()
        for _ in range(500):
            if ("CP-OPEN", 2, 22000.0) in chargers.sent:
                break
            await asyncio.sleep(0.01)
        assert ("CP-OPEN", 2, 22000.0) in chargers.sent  # B's raise, on its way
        tx3 = await start(central, "CP-1", 1, "TAG-X")  # instance A, meanwhile
        assert chargers.applied[("CP-1", 1)] == 0.0  # S2 held at what B sends it
        chargers.release.set()
        await other.settled()
        assert chargers.drawn({}) <= 22, chargers.applied
        for _ in range(300):  # A shares the site again once B's raise has landed
            await services.site_load.settled()
            if (await shares(central, site))[tx3][0] == 11.0:
                break
            await asyncio.sleep(0.01)
        assert (await shares(central, site))[tx3][0] == 11.0
        assert chargers.applied == {("CP-OPEN", 2): 11000.0, ("CP-1", 1): 11000.0}
    finally:
        await other.close()


async def test_a_station_handed_to_another_company_frees_its_share(
        central: Central) -> None:
    """QA D7 and review: the site it left was not shared again; its other sessions kept
    their cut shares and the old company read a share of a station no longer its."""
    chargers = scripted(central)
    site = await depot(central, 30)
    await start(central, "CP-1", 2, "TAG-OK")
    tx2 = await start(central, "CP-OPEN", 2, "TAG-OTHER")
    other = await central.services.accounts.create_company(SYSTEM, name="Elsewhere")
    await central.services.stations.update_station(SYSTEM, central.stations["CP-1"].id,
                                                   company_id=other.id)
    await central.services.site_load.settled()
    assert await shares(central, site) == {tx2: (22.0, 22.0, "Accepted")}
    assert ("CP-OPEN", 2, 22000.0) in chargers.sent
    # Its session's limit lifted and its fallback removed: it is no site's now.
    assert sorted(chargers.cleared) == [("CP-1", FALLBACK_PROFILE_ID),
                                        ("CP-1", PROFILE_ID_BASE + 2)]
    assert [st.cp_id for st in await central.store.find_all(
        Station, Eq("site_id", site.id))] == ["CP-OPEN"]
    assert LimitAnswer.PENDING not in {a.answer for a in await central.store.find_all(
        SiteAllocation, Eq("site_id", site.id))}


async def test_a_silent_charger_does_not_hold_the_next_sessions_limit_back(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-check (s16): a charger that never answered its first limit held the next
    session's first limit back for the command timeout (66 kW on 40 meanwhile). A run
    waits ANSWER_WAIT_S at most; the silent one is held at its rating meanwhile."""
    monkeypatch.setattr(site_load, "ANSWER_WAIT_S", 0.1)
    chargers = scripted(central)
    await depot(central, 40)
    chargers.behaviour[("CP-OPEN", 2)] = "held"  # never answers (until released)
    charging = central.services.charging
    await charging.start_transaction("CP-OPEN", 2, "TAG-OTHER", 1000, utcnow())
    await charging.start_answered("CP-OPEN")
    for _ in range(100):
        if ("CP-OPEN", 2, 22000.0) in chargers.sent:
            break
        await asyncio.sleep(0.01)
    await charging.start_transaction("CP-1", 2, "TAG-OK", 1000, utcnow())
    await charging.start_answered("CP-1")
    for _ in range(200):  # long before any command timeout (5 s here)
        if ("CP-1", 2) in chargers.applied:
            break
        await asyncio.sleep(0.01)
    # What the silent one may draw (its 22 kW connector) is held: CP-1 gets the rest.
    assert chargers.applied[("CP-1", 2)] == 18000.0
    chargers.release.set()
    await central.services.site_load.settled()


async def test_a_new_sessions_first_limit_is_what_the_others_do_not_hold(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-check (s16): a new session was told its whole share while the one already
    charging had not yet lowered to make room: 22 + 15 = 37 kW on 30 until it did."""
    monkeypatch.setattr(site_load, "ANSWER_WAIT_S", 0.1)
    chargers = scripted(central)
    site = await depot(central, 30)
    await start(central, "CP-1", 2, "TAG-OK")
    assert chargers.applied == {("CP-1", 2): 22000.0}
    chargers.behaviour[("CP-1", 2)] = "held"  # slow to take its lower limit
    charging = central.services.charging
    tx2, _ = await charging.start_transaction("CP-OPEN", 2, "TAG-OTHER", 1000, utcnow())
    await charging.start_answered("CP-OPEN")
    for _ in range(100):
        if ("CP-OPEN", 2) in chargers.applied:
            break
        await asyncio.sleep(0.01)
    assert chargers.applied[("CP-OPEN", 2)] == 8000.0  # 30 less CP-1's 22
    assert chargers.drawn({}) <= 30
    chargers.release.set()
    for _ in range(300):
        await central.services.site_load.settled()
        if chargers.applied.get(("CP-OPEN", 2)) == 15000.0:
            break
        await asyncio.sleep(0.01)
    assert chargers.applied == {("CP-1", 2): 15000.0, ("CP-OPEN", 2): 15000.0}
    assert (await shares(central, site))[tx2][:2] == (15.0, 15.0)


async def test_a_charger_that_does_not_say_its_stack_level_is_not_asked_each_time(
        central: Central) -> None:
    chargers = scripted(central)
    site = await depot(central, 40)
    chargers.behaviour[("CP-1", 0)] = "no-config"
    await start(central, "CP-1", 2, "TAG-OK")
    for limit in (30, 20, 25):
        await central.services.sites.update_site(SYSTEM, site.id, max_power_kw=limit)
        await central.services.site_load.settled()
    # Its CALLERROR to the two keys has the level asked alone (it may take one key at a
    # time), once: not again at each edit. CP-OPEN's: for its fallback.
    assert chargers.asked_config.count("CP-1") == 2
    # Each charger took the site's fallback once (the scripted chargers see it too).
    assert chargers.fallbacks == {"CP-1": 4140.0, "CP-OPEN": 4140.0}
    # 30 kW leaves its 22 kW plug as it was: nothing sent.
    assert [kw for cp, _, kw in chargers.sent if cp == "CP-1"] == [22000.0, 20000.0, 22000.0]


async def test_a_removed_sites_shares_are_forgotten(central: Central) -> None:
    """Review s16: sharing a removed site again read nothing, so shares left behind (a
    recompute that failed) stayed for good."""
    scripted(central)
    site = await depot(central, 30)
    await start(central, "CP-1", 2, "TAG-OK")
    assert len(await shares(central, site)) == 1
    await central.store.write([Delete(site)], [])  # as removeSite, its stations aside
    central.services.site_load.request_site(site.id)
    await central.services.site_load.settled()
    assert await shares(central, site) == {}


async def recomputed(load: SiteLoad) -> None:
    """Waits until the recomputes asked for have run (``settled`` would also wait for
    the limits in flight, which a held charger does not answer)."""
    for _ in range(500):
        resolving = load._resolver is not None and not load._resolver.done()
        if not resolving and not load._running:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the recomputes never ended")


async def test_a_charger_back_online_is_told_its_limit_again(central: Central) -> None:
    """A charger that comes back (connects, or its boot is accepted) with a session
    under the site's control is told its limit again, though its share did not change:
    it may have rebooted and lost it. Nothing is sent while it is offline, and its
    share stays held for it."""
    chargers = scripted(central)
    site = await depot(central, 40)
    services = central.services
    tx1 = await start(central, "CP-1", 2, "TAG-OK")
    tx2 = await start(central, "CP-OPEN", 1, "TAG-OTHER")
    before = len(chargers.sent)
    await services.charging.set_online("CP-1", False)
    await services.site_load.settled()
    assert chargers.sent[before:] == []
    assert await shares(central, site) == {tx1: (20.0, 20.0, "Accepted"),
                                           tx2: (20.0, 20.0, "Accepted")}
    chargers.applied.pop(("CP-1", 2))  # lost with a reboot: it draws its 22 kW
    await services.charging.set_online("CP-1", True)
    await services.site_load.settled()
    assert chargers.sent[before:] == [("CP-1", 2, 20000.0)]
    await services.charging.boot_accepted("CP-1")
    await services.site_load.settled()
    assert chargers.sent[before:] == [("CP-1", 2, 20000.0)] * 2
    assert chargers.applied == {("CP-1", 2): 20000.0, ("CP-OPEN", 1): 20000.0}
    assert await shares(central, site) == {tx1: (20.0, 20.0, "Accepted"),
                                           tx2: (20.0, 20.0, "Accepted")}
    # A charger on no site coming back leaves nothing behind.
    await services.sites.assign_station(SYSTEM, central.stations["CP-OPEN"].id, None)
    await services.charging.boot_accepted("CP-OPEN")
    await services.site_load.settled()
    load = services.site_load
    assert (load._back_stations, load._back, load._owed) == (set(), {}, {})


async def test_a_charger_back_online_refusing_its_limit_is_held_at_its_rating(
        central: Central) -> None:
    """It may have lost the limit it accepted: refused, the site holds its rating."""
    chargers = scripted(central)
    site = await depot(central, 40)
    services = central.services
    tx1 = await start(central, "CP-1", 2, "TAG-OK")
    tx2 = await start(central, "CP-OPEN", 1, "TAG-OTHER")
    await services.charging.set_online("CP-1", False)
    chargers.applied.pop(("CP-1", 2))
    chargers.behaviour[("CP-1", 2)] = "reject"
    await services.charging.set_online("CP-1", True)
    await services.site_load.settled()
    assert await shares(central, site) == {tx1: (20.0, 22.0, "Rejected"),
                                           tx2: (18.0, 18.0, "Accepted")}
    assert chargers.drawn({("CP-1", 2): 22.0}) <= 40


async def test_a_charger_not_under_control_is_asked_again_at_once_when_back(
        central: Central) -> None:
    """One that refused its limit is asked again once a minute (``RETRY_LOOSE_S``), not
    at every recompute; back online, it is asked at once."""
    chargers = scripted(central)
    site = await depot(central, 40)
    services = central.services
    chargers.behaviour[("CP-1", 2)] = "reject"
    tx1 = await start(central, "CP-1", 2, "TAG-OK")
    assert await shares(central, site) == {tx1: (22.0, 22.0, "Rejected")}
    chargers.behaviour.pop(("CP-1", 2))
    await services.charging.set_online("CP-1", False)
    await services.charging.set_online("CP-1", True)
    await services.site_load.settled()
    assert chargers.sent == [("CP-1", 2, 22000.0)] * 2
    assert await shares(central, site) == {tx1: (22.0, 22.0, "Accepted")}


async def test_a_charger_back_online_with_its_limit_in_flight_is_told_once_answered(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing more is sent while its last limit is unanswered; once it is, the
    charger is told again (that one may have been taken just before it rebooted)."""
    monkeypatch.setattr(site_load, "ANSWER_WAIT_S", 0.1)
    chargers = scripted(central)
    site = await depot(central, 40)
    services = central.services
    tx1 = await start(central, "CP-1", 2, "TAG-OK")
    await start(central, "CP-OPEN", 1, "TAG-OTHER")
    chargers.behaviour[("CP-1", 2)] = "held"
    await services.sites.update_site(SYSTEM, site.id, max_power_kw=30)
    await recomputed(services.site_load)
    services.site_load.charger_back(central.stations["CP-1"].id)
    await recomputed(services.site_load)
    one = [kw for cp, _, kw in chargers.sent if cp == "CP-1"]
    assert one == [22000.0, 20000.0, 15000.0]  # the last unanswered: nothing more
    chargers.release.set()
    await services.site_load.settled()
    one = [kw for cp, _, kw in chargers.sent if cp == "CP-1"]
    assert one == [22000.0, 20000.0, 15000.0, 15000.0]
    assert (await shares(central, site))[tx1] == (15.0, 15.0, "Accepted")
    assert services.site_load._owed == {}


async def test_a_refused_raise_is_asked_again_later(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA s21: a raise answered Rejected (or NotSupported, a CALLERROR) left the power it
    freed unused, and the charger was never asked again. It is now loose like any
    refusal: asked again after ``RETRY_LOOSE_S`` and, accepting, raised."""
    monkeypatch.setattr(site_load, "RETRY_LOOSE_S", 0.05)
    chargers = scripted(central)
    site = await depot(central, 30)
    tx1 = await start(central, "CP-1", 2, "TAG-OK")
    tx2 = await start(central, "CP-OPEN", 2, "TAG-OTHER")
    assert chargers.applied == {("CP-1", 2): 15000.0, ("CP-OPEN", 2): 15000.0}
    chargers.behaviour[("CP-OPEN", 2)] = "reject"
    await central.services.charging.stop_transaction("CP-1", tx1, 2000, utcnow())
    chargers.applied.pop(("CP-1", 2))
    await central.services.site_load.settled()
    assert (await shares(central, site))[tx2] == (22.0, 15.0, "Rejected")
    chargers.behaviour.pop(("CP-OPEN", 2))  # it takes limits again
    for _ in range(300):
        await central.services.site_load.settled()
        if chargers.applied[("CP-OPEN", 2)] == 22000.0:
            break
        await asyncio.sleep(0.01)
    assert chargers.applied == {("CP-OPEN", 2): 22000.0}
    assert (await shares(central, site))[tx2] == (22.0, 22.0, "Accepted")


async def test_a_session_ended_by_an_operator_is_held_until_its_charger_stops(
        central: Central) -> None:
    """QA s21: endSession on a session its charger (online) still charged freed its
    share at once, and the other session was raised while the charger kept drawing its
    old limit until its StopTransaction: 40 kW on 30. Held until the stop comes."""
    chargers = scripted(central)
    site = await depot(central, 30)
    tx1 = await start(central, "CP-1", 2, "TAG-OK")
    tx2 = await start(central, "CP-OPEN", 2, "TAG-OTHER")
    assert chargers.applied == {("CP-1", 2): 15000.0, ("CP-OPEN", 2): 15000.0}
    [session] = await central.store.find_all(Session, Eq("transaction_id", tx1))
    await central.services.charging.end_session(SYSTEM, session.id)
    await central.services.site_load.settled()
    assert chargers.applied == {("CP-1", 2): 15000.0, ("CP-OPEN", 2): 15000.0}
    assert (await shares(central, site))[tx1] == (15.0, 15.0, "Accepted")
    # Its stop arrives: the share is released and the other session raised.
    await central.services.charging.stop_transaction("CP-1", tx1, 2000, utcnow())
    chargers.applied.pop(("CP-1", 2))
    await central.services.site_load.settled()
    assert chargers.applied == {("CP-OPEN", 2): 22000.0}
    assert await shares(central, site) == {tx2: (22.0, 22.0, "Accepted")}


def _override(tx: int, level: int, limit_w: float) -> dict[str, Any]:
    return {"connectorId": 2, "csChargingProfiles": {
        "chargingProfileId": 5, "transactionId": tx, "stackLevel": level,
        "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
        "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": limit_w}]}}}


OVERRIDING = "operator-override"


async def _overridden_while(central: Central, station: Station, session: Session,
                            reads: Any) -> SiteAllocation | None:
    """An operator's override of ``session`` (level 9, 22 kW, above the site's) run in a
    task named ``OVERRIDING``, the store's ``get_many`` replaced by ``reads(original)``
    meanwhile; the session's allocation once the site settled."""
    store = central.store
    original = store.get_many
    store.get_many = reads(original)  # type: ignore[method-assign]
    outcome = CommandOutcome(command_id="op", action="SetChargingProfile", station=station)
    try:
        await asyncio.create_task(central.services.site_load.profile_commanded(
            outcome, _override(session.transaction_id, 9, 22_000)), name=OVERRIDING)
    finally:
        store.get_many = original  # type: ignore[method-assign]
    await central.services.site_load.settled()
    [held] = await store.get_many(SiteAllocation, [session.id])
    return held


async def _answer_landed(chargers: Any, original: Any, session_id: str,
                         landed: Callable[[SiteAllocation | None], bool]) -> None:
    """The held charger answers now; back once the share it records is ``landed``."""
    chargers.release.set()
    for _ in range(300):
        [now] = await original(SiteAllocation, [session_id])
        if landed(now):
            return
        await asyncio.sleep(0.01)


def _overriding() -> bool:
    task = asyncio.current_task()
    return task is not None and task.get_name() == OVERRIDING


async def test_an_override_landing_while_the_site_s_limit_is_in_flight_stands(
        central: Central) -> None:
    """Review s21: the answer to the site's limit, in flight when an operator's override
    was recorded, wrote Accepted over OVERRIDDEN: the session counted at its share again,
    the other was raised, and the site drew 15 + 22 kW on 30."""
    chargers = scripted(central)
    load = central.services.site_load
    await depot(central, 30)
    await start(central, "CP-1", 2, "TAG-OK")
    tx2 = await start(central, "CP-OPEN", 2, "TAG-OTHER")
    [session] = await central.store.find_all(Session, Eq("transaction_id", tx2))
    [station] = await central.store.find_all(Station, Eq("cp_id", "CP-OPEN"))
    chargers.behaviour[("CP-OPEN", 2)] = "held"  # its limit told again, answered late
    load.charger_back(station.id)
    for _ in range(200):
        if session.id in load._inflight:
            break
        await asyncio.sleep(0.01)
    assert session.id in load._inflight
    outcome = CommandOutcome(command_id="op", action="SetChargingProfile", station=station)
    await load.profile_commanded(outcome, _override(tx2, 9, 22_000))
    chargers.release.set()
    await load.settled()
    [held] = await central.store.get_many(SiteAllocation, [session.id])
    assert held is not None and held.answer is LimitAnswer.OVERRIDDEN
    assert chargers.applied[("CP-1", 2)] / 1000 + 22.0 <= 30


async def test_a_session_ended_by_an_operator_is_released_when_its_charger_finishes(
        central: Central) -> None:
    """Review s21: the hold of a session closed by endSession outlived its transaction at
    the charger: Finishing kept it (as Unavailable would), capping the other session for
    as long as the car stayed plugged in."""
    scripted(central)  # the chargers answer their limits
    site = await depot(central, 30)
    tx1 = await start(central, "CP-1", 2, "TAG-OK")
    tx2 = await start(central, "CP-OPEN", 2, "TAG-OTHER")
    [session] = await central.store.find_all(Session, Eq("transaction_id", tx1))
    await central.services.charging.end_session(SYSTEM, session.id)
    await central.services.charging.status_notification("CP-1", 2, "Finishing", "NoError",
                                                        timestamp=utcnow())
    await central.services.site_load.settled()
    assert await shares(central, site) == {tx2: (22.0, 22.0, "Accepted")}


async def test_an_override_whose_write_the_raise_s_answer_overtakes_is_recorded(
        central: Central) -> None:
    """Review s21 (rev-e): the override was written guarded like a limit's answer; the
    raise in flight answered between its read and its write, and the override was lost
    (the session counted at its share while it drew the operator's 22 kW)."""
    chargers = scripted(central)
    await depot(central, 30)
    tx1 = await start(central, "CP-1", 2, "TAG-OK")
    tx2 = await start(central, "CP-OPEN", 2, "TAG-OTHER")
    [session] = await central.store.find_all(Session, Eq("transaction_id", tx2))
    [station] = await central.store.find_all(Station, Eq("cp_id", "CP-OPEN"))
    chargers.behaviour[("CP-OPEN", 2)] = "held"  # the raise is answered late
    await central.services.charging.stop_transaction("CP-1", tx1, 2000, utcnow())
    for _ in range(300):
        [pending] = await central.store.get_many(SiteAllocation, [session.id])
        if pending is not None and pending.answer is LimitAnswer.PENDING:
            break
        await asyncio.sleep(0.01)
    def answered_meanwhile(original: Any) -> Any:
        reads = 0

        async def get_many(kind: Any, ids: Any, *args: Any) -> Any:
            nonlocal reads
            found = await original(kind, ids, *args)
            if kind is SiteAllocation and _overriding():
                reads += 1
                if reads == 2:  # the override's own read: now the raise's answer lands
                    await _answer_landed(chargers, original, session.id, lambda now: (
                        now is not None and now.answer is not LimitAnswer.PENDING))
            return found
        return get_many

    held = await _overridden_while(central, station, session, answered_meanwhile)
    assert held is not None and held.answer is LimitAnswer.OVERRIDDEN


async def test_a_raise_claimed_after_an_override_leaves_it_standing(
        central: Central) -> None:
    """Review s21 (rev-f): a raise's PENDING claim, written over an override recorded
    since the run read the site, erased it: the raise was answered ACCEPTED at the share
    while the charger kept the operator's 22 kW."""
    scripted(central)
    load = central.services.site_load
    await depot(central, 30)
    tx1 = await start(central, "CP-1", 2, "TAG-OK")
    tx2 = await start(central, "CP-OPEN", 2, "TAG-OTHER")
    [session] = await central.store.find_all(Session, Eq("transaction_id", tx2))
    [station] = await central.store.find_all(Station, Eq("cp_id", "CP-OPEN"))
    store = central.store
    original = store.write
    overridden: list[bool] = []

    async def override_before_the_claim(changes: Any, audit: Any, *args: Any) -> Any:
        claims = [c for c in changes if isinstance(c, Update) and c.record.id == session.id
                  and c.fields == frozenset({"answer", "bound_kw"})
                  and cast(SiteAllocation, c.record).answer is LimitAnswer.PENDING]
        if claims and not overridden:
            overridden.append(True)
            outcome = CommandOutcome(command_id="op", action="SetChargingProfile",
                                     station=station)
            await load.profile_commanded(outcome, _override(tx2, 9, 22_000))
        return await original(changes, audit, *args)

    store.write = override_before_the_claim  # type: ignore[method-assign,assignment]
    await central.services.charging.stop_transaction("CP-1", tx1, 2000, utcnow())
    await load.settled()
    store.write = original  # type: ignore[method-assign]
    assert overridden
    [held] = await central.store.get_many(SiteAllocation, [session.id])
    assert held is not None and held.answer is LimitAnswer.OVERRIDDEN


async def test_an_override_of_a_session_awaiting_its_first_limit_is_recorded(
        central: Central) -> None:
    """Review s21 (rev-f): no share was recorded yet (its first limit in flight), the
    override's insert met the one the first limit's answer made, and was dropped."""
    chargers = scripted(central)
    load = central.services.site_load
    charging = central.services.charging
    await depot(central, 30)
    await start(central, "CP-1", 2, "TAG-OK")
    chargers.behaviour[("CP-OPEN", 2)] = "held"  # its first limit is answered late
    tx2, _ = await charging.start_transaction("CP-OPEN", 2, "TAG-OTHER", 1000, utcnow())
    await charging.start_answered("CP-OPEN")
    [session] = await central.store.find_all(Session, Eq("transaction_id", tx2))
    [station] = await central.store.find_all(Station, Eq("cp_id", "CP-OPEN"))
    for _ in range(300):
        if session.id in load._inflight:
            break
        await asyncio.sleep(0.01)
    def answered_after_the_read(original: Any) -> Any:
        answered: list[bool] = []

        async def get_many(kind: Any, ids: Any, *args: Any) -> Any:
            found = await original(kind, ids, *args)
            if kind is SiteAllocation and _overriding() and not answered:
                answered.append(True)  # it read no share: now the first limit lands
                await _answer_landed(chargers, original, session.id,
                                     lambda now: now is not None)
            return found
        return get_many

    held = await _overridden_while(central, station, session, answered_after_the_read)
    assert held is not None and held.answer is LimitAnswer.OVERRIDDEN


async def test_an_override_sent_before_its_station_joined_and_answered_after_is_seen(
        central: Central) -> None:
    """QA sites s3: an operator's override sent to a station in no site, answered once
    the station had joined one (whose first run found no answer recorded, and shared it
    as under control): its station, as read when it was sent, was in no site, and the
    answer was not watched. Its station is read again: OVERRIDDEN."""
    scripted(central)
    load = central.services.site_load
    await depot(central, 30)
    await start(central, "CP-1", 2, "TAG-OK")
    tx2 = await start(central, "CP-OPEN", 2, "TAG-OTHER")
    [session] = await central.store.find_all(Session, Eq("transaction_id", tx2))
    [station] = await central.store.find_all(Station, Eq("cp_id", "CP-OPEN"))
    before = dataclasses.replace(station, site_id=None)  # as the command read it
    outcome = CommandOutcome(command_id="op", action="SetChargingProfile", station=before)
    await load.profile_commanded(outcome, _override(tx2, 9, 22_000))
    await load.settled()
    [held] = await central.store.get_many(SiteAllocation, [session.id])
    assert held is not None and held.answer is LimitAnswer.OVERRIDDEN
