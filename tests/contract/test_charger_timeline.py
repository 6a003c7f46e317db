"""Open records end at "now" on their charger's timeline, on every backend: utilization,
availability and fault time of a charger whose clock is hours behind ours, or never set
(1970), count the time that passed, not the gap between the two clocks (QA s20, time).
Sessions and state intervals carry their starts on the charger's clock; what analytics
read of its "now" is stored (``Session.created_at``, ``ConnectorInterval.observed_at``),
so any instance answers alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from domain import entities as d
from domain.policy import SYSTEM, Policy
from domain.ports import Store
from domain.query import ALL, Eq
from domain.services import ConnectorSpec, ServiceContext, Services
from domain.services.analytics import Scope, ShareRow
from domain.services.charging import BootInfo
from tests.helpers import FastHasher
from tests.support.history import Clock

NOW = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
TODAY = datetime(2026, 12, 5, tzinfo=UTC)
TOMORROW = TODAY + timedelta(days=1)
BEHIND = timedelta(hours=3)


class Charger:
    """One charger, its clock ``offset`` from ours (the services' clock, ``clock``)."""

    def __init__(self, services: Services, clock: Clock, cp_id: str,
                 offset: timedelta | datetime) -> None:
        self.services, self.clock, self.cp_id = services, clock, cp_id
        # A datetime: the clock read that when ours read NOW (a clock never set).
        self.offset = offset - NOW if isinstance(offset, datetime) else offset

    def time(self) -> datetime:
        return self.clock.now + self.offset

    def wait(self, seconds: float) -> None:
        self.clock.now += timedelta(seconds=seconds)

    async def status(self, connector: int, status: str, error: str = "NoError") -> None:
        await self.services.charging.status_notification(
            self.cp_id, connector, status, error, timestamp=self.time())

    async def charging(self) -> None:
        """Online, every connector Available, then a session on connector 1."""
        await self.services.charging.set_online(self.cp_id, True)
        for connector in (0, 1, 2):
            await self.status(connector, "Available")
        self.wait(2)
        await self.status(1, "Preparing")
        await self.services.charging.start_transaction(self.cp_id, 1, "TAG-1", 100,
                                                       self.time())
        await self.status(1, "Charging")


@pytest.fixture
async def world(store: Store) -> tuple[Services, Clock]:
    clock = Clock()
    clock.now = NOW
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher(),
                                       clock=clock))
    admin = await services.accounts.create_user(SYSTEM, email="a@x.de", name="a",
                                                password="password-1", role=d.Role.ADMIN)
    await services.fleet.issue_id_tag(SYSTEM, tag="TAG-1", user_id=admin.id)
    for cp_id in ("BEHIND", "NEVER-SET"):
        await services.stations.create_station(
            SYSTEM, cp_id=cp_id, name=cp_id,
            connectors=[ConnectorSpec(1), ConnectorSpec(2)])
    return services, clock


def usage(rows: list[ShareRow]) -> dict[int | None, tuple[float, float]]:
    return {r.connector_id: (r.first_seconds, r.second_seconds) for r in rows}


async def test_a_charger_behind_counts_the_time_that_passed(
        world: tuple[Services, Clock]) -> None:
    services = world[0]
    analytics, cp = services.analytics, Charger(*world, "BEHIND", -BEHIND)
    await cp.charging()
    cp.wait(20)
    # While the session is open: 20 s occupied and charging, not 3 h and 20 s.
    rows = await analytics.utilization(SYSTEM, Scope(cp_ids=("BEHIND",)), TODAY, TOMORROW,
                                       by_connector=True)
    assert usage(rows) == {1: (20.0, 20.0), 2: (0.0, 0.0)}
    await cp.status(2, "Faulted", "GroundFailure")
    cp.wait(30)
    faults = await analytics.fault_reports(SYSTEM, Scope(cp_ids=("BEHIND",)), TODAY,
                                           TOMORROW)
    assert [(f.connector_id, f.duration_seconds, f.open) for f in faults] == [
        (2, 30.0, True)]
    # The charger goes away; its known state history is the 52 s it had, and 9 s offline
    # since: its station was created 61 s ago (not 3 h and 61 s).
    await services.charging.set_online("BEHIND", False)
    cp.wait(9)
    rows = await analytics.availability(SYSTEM, Scope(cp_ids=("BEHIND",)), TODAY,
                                        TOMORROW, by_connector=True)
    assert {r.connector_id: r.second_seconds for r in rows} == {1: 61.0, 2: 61.0}
    # Usable: Available 52 s on connector 1 (occupied counts as usable), 20 s before the
    # fault on connector 2; nothing since it went away.
    assert {r.connector_id: r.first_seconds for r in rows} == {1: 52.0, 2: 22.0}


async def test_a_clock_never_set_is_counted_on_arrival(world: tuple[Services, Clock]
                                                       ) -> None:
    """A charger whose clock was never set (1970) stamps no time at all: its reports,
    session and readings are dated on their arrival, so today saw its ten minutes, and
    1970 nothing (QA s26: they lived in 1970, today's utilization read none of the
    charging and its energy was counted in 1970 while its payment was today's)."""
    services = world[0]
    epoch = datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC)
    cp = Charger(*world, "NEVER-SET", epoch)
    await cp.charging()
    cp.wait(600)
    scope = Scope(cp_ids=("NEVER-SET",))
    rows = await services.analytics.utilization(SYSTEM, scope, TODAY, TOMORROW,
                                                by_connector=True)
    assert usage(rows)[1] == (600.0, 600.0)
    day = epoch.replace(second=0)
    rows = await services.analytics.utilization(SYSTEM, scope, day, day + timedelta(days=1),
                                                by_connector=True)
    assert usage(rows) == {1: (0.0, 0.0), 2: (0.0, 0.0)}
    [session] = await services.ctx.store.find_all(d.Session, ALL)
    assert session.start_time >= TODAY and session.start_clock_behind
    assert session.reported_start == epoch + timedelta(seconds=2)


async def test_a_clock_set_right_mid_connection_counts_from_its_new_time(
        world: tuple[Services, Clock]) -> None:
    """A charger on 1970 whose clock is set right while connected: the state it reports
    on the new clock is counted from then (its interval's now taken from the charger's
    tracked clock), not from the 1970 interval's offset, which put its now 56 years
    ahead of ours and counted nothing while it was open. The states it reported on the
    old clock stay in 1970."""
    services = world[0]
    cp = Charger(*world, "NEVER-SET", datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC))
    await cp.charging()
    cp.wait(60)
    cp.offset = timedelta(0)  # NTP came through
    await cp.status(2, "Faulted", "GroundFailure")
    cp.wait(30)
    faults = await services.analytics.fault_reports(
        SYSTEM, Scope(cp_ids=("NEVER-SET",)), TODAY, TOMORROW)
    assert [(f.connector_id, f.duration_seconds, f.open) for f in faults] == [
        (2, 30.0, True)]
    # Its clock moved 56 years forward: connector 1, Charging since 1970 on the
    # charger's timeline, is not observed again by the new clock (nothing is, after the
    # fact), and its charging does not take all of today so far (ten hours).
    rows = await services.analytics.utilization(SYSTEM, Scope(cp_ids=("NEVER-SET",)),
                                                TODAY, TOMORROW, by_connector=True)
    assert usage(rows)[1][1] <= 90


async def test_an_epoch_stamp_matches_only_its_open_copy(
        world: tuple[Services, Clock]) -> None:
    """On either store: a start stamped at the epoch itself (a clock that does not tick)
    is its open copy (its answer lost), however long ago it was recorded, and a row
    written before migration 65 (the stamp kept as its start) is matched by its start; a
    session closed (by its stop, or as lost at a reboot) is never matched: the same
    figures are a new transaction."""
    from domain.services.base import patch

    services, clock = world
    charging, store = services.charging, services.ctx.store
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    await charging.set_online("NEVER-SET", True)
    first, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 100, epoch)
    clock.now += timedelta(seconds=20)
    assert (await charging.start_transaction("NEVER-SET", 1, "TAG-1", 100, epoch))[0] \
        == first
    [session] = await store.find_all(d.Session, ALL)
    await store.write([patch(session, SYSTEM, reported_start=None, start_time=epoch)], [])
    clock.now += timedelta(hours=2)
    assert (await charging.start_transaction("NEVER-SET", 1, "TAG-1", 100, epoch))[0] \
        == first
    await charging.stop_transaction("NEVER-SET", first, 100, epoch)
    second, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 100, epoch)
    assert second != first
    # Closed as lost, as a reboot's check closes what was open before it.
    [open_] = await store.find_all(d.Session, Eq("transaction_id", second))
    await store.write([patch(open_, SYSTEM, state=d.SessionState.COMPLETED,
                             closed_without_stop=True, end_time=open_.start_time,
                             stop_reason="Reboot")], [])
    clock.now += timedelta(minutes=10)
    third, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 100, epoch)
    assert third not in (first, second)
    assert await store.count(d.Session, ALL) == 3


async def test_a_never_set_resend_after_a_reconnect_minutes_later_is_matched(
        world: tuple[Services, Clock]) -> None:
    """Review r26-robust2: a clock never set still ticks from 1970: its StartTransaction,
    stamped 1970-01-01T02:13:07, is recorded, its answer lost as the link dropped; the
    charger, offline ten minutes, replays its queue: the very same start. Only copies
    recorded within GLITCH_RETRY_WINDOW were looked at: a second session opened and the
    driver's real charge was closed as lost."""
    services, clock = world
    charging, store = services.charging, services.ctx.store
    stamp = datetime(1970, 1, 1, 2, 13, 7, tzinfo=UTC)
    await charging.set_online("NEVER-SET", True)
    first, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 1000, stamp)
    await charging.set_online("NEVER-SET", False)
    clock.now += timedelta(minutes=10)
    await charging.set_online("NEVER-SET", True)
    again, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 1000, stamp)
    assert again == first
    [session] = await store.find_all(d.Session, ALL)
    assert session.state is d.SessionState.ACTIVE


async def test_a_per_transaction_meter_restarting_soon_after_a_stop_is_a_new_transaction(
        world: tuple[Services, Clock]) -> None:
    """Review r26-robust2: a charger stamping the epoch at every start, its meter counting
    per transaction (meterStart 0 each time): a 30 s charge of 150 Wh stopped, the same
    card starts again 20 s later with every figure the same. The closed session, recorded
    within START_RETRY_WINDOW and its meter moved, was taken for a resend: the new start
    was told its id, no session opened and the next charge was billed nowhere."""
    services, clock = world
    charging, store = services.charging, services.ctx.store
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    await charging.set_online("NEVER-SET", True)
    first, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 0, epoch)
    clock.now += timedelta(seconds=30)
    await charging.stop_transaction("NEVER-SET", first, 150, epoch)
    clock.now += timedelta(seconds=20)
    second, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 0, epoch)
    assert second != first
    assert await store.count(d.Session, ALL) == 2


async def _tariff(services: Services) -> None:
    station = await services.ctx.store.find_one(d.Station, Eq("cp_id", "NEVER-SET"))
    assert station is not None
    await services.tariffs.set_tariff(
        SYSTEM, station_id=station.id, price_per_kwh=Decimal("0.30"),
        price_per_minute=Decimal("0.10"), session_fee=Decimal("1.00"), currency="EUR",
        valid_from=NOW - timedelta(days=30))


async def _charged_then_replayed(services: Services, clock: Clock, stamp: datetime,
                                 stop_names_the_replay: bool = True) -> int:
    """A 30-minute 5 kWh charge of a clock never set, stopped; a minute later its queue
    replayed whole: the start (told an id), then the stop, which names the id the charger
    was told for the replayed start (a queue filled in as it is sent) or else the one
    first told (a queue that kept the stop as it was). The id the replay was told."""
    charging = services.charging
    await charging.set_online("NEVER-SET", True)
    real, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 1000, stamp)
    clock.now += timedelta(minutes=30)
    await charging.stop_transaction("NEVER-SET", real, 6000, stamp + timedelta(minutes=30))
    clock.now += timedelta(minutes=1)
    again, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 1000, stamp)
    await charging.stop_transaction("NEVER-SET", again if stop_names_the_replay else real,
                                    6000, stamp + timedelta(minutes=30))
    return again


async def test_a_never_set_queue_replayed_after_its_stop_finds_its_session(
        world: tuple[Services, Clock]) -> None:
    """Review r26-robust3: a clock never set still ticks within a boot, so a start
    repeating a stamp of this boot is that transaction, closed by its stop or not. The
    queue replayed whole after its stop opened a phantom session, which the replayed
    stop (naming the id the replayed start was told) closed and billed the 5 kWh
    charge a second time. Now the replayed start is told the closed session's id, its
    stop changes nothing, and the charge is billed once; the next charge is billed as
    any."""
    services, clock = world
    charging, store = services.charging, services.ctx.store
    await _tariff(services)
    stamp = datetime(1970, 1, 1, 0, 42, tzinfo=UTC)
    again = await _charged_then_replayed(services, clock, stamp)
    [real] = await store.find_all(d.Session, ALL)
    assert again == real.transaction_id
    clock.now += timedelta(hours=3)
    following, _ = await charging.start_transaction(
        "NEVER-SET", 1, "TAG-1", 6000, stamp + timedelta(hours=3))
    clock.now += timedelta(minutes=10)
    await charging.stop_transaction("NEVER-SET", following, 8000,
                                    stamp + timedelta(hours=3, minutes=10))
    by_tx = {s.transaction_id: s for s in await store.find_all(d.Session, ALL)}
    assert set(by_tx) == {real.transaction_id, following}
    paid = [(p.session_id, p.amount_minor) for p in await store.find_all(d.Payment, ALL)]
    assert sorted(paid) == sorted([(real.id, 100 + 150 + 300),  # fee, 5 kWh, 30 minutes
                                   (by_tx[following].id, 100 + 60 + 100)])


async def test_a_never_set_queue_replayed_after_its_stop_holds_no_card(
        world: tuple[Services, Clock]) -> None:
    """Review r26-robust3: the replay's phantom held the driver's card: at another
    charger two hours later the driver was told ConcurrentTx (the charger refuses the
    charge) until someone started on the phantom's connector or its charger rebooted."""
    services, clock = world
    charging = services.charging
    await _charged_then_replayed(services, clock, datetime(1970, 1, 1, 0, 42, tzinfo=UTC),
                                 stop_names_the_replay=False)
    clock.now += timedelta(hours=2)
    await charging.set_online("BEHIND", True)
    _, told = await charging.start_transaction("BEHIND", 1, "TAG-1", 0, clock.now)
    assert told.status == "Accepted", told


async def test_a_never_set_queue_replayed_after_its_stop_occupies_nothing(
        world: tuple[Services, Clock]) -> None:
    """Review r26-robust3: a 30-minute charge, its queue replayed a minute after its
    stop, the connector then idle three hours until the next start: utilization read the
    connector occupied 3 h 30 (the phantom's hours), and the overview an active session
    all that time."""
    services, clock = world
    charging = services.charging
    stamp = datetime(1970, 1, 1, 0, 42, tzinfo=UTC)
    await _charged_then_replayed(services, clock, stamp, stop_names_the_replay=False)
    clock.now += timedelta(hours=3)
    scope = Scope(cp_ids=("NEVER-SET",))
    overview = await services.analytics.overview(SYSTEM, scope)
    await charging.start_transaction("NEVER-SET", 1, "TAG-1", 6000,
                                     stamp + timedelta(hours=3))
    clock.now += timedelta(minutes=1)
    rows = await services.analytics.utilization(SYSTEM, scope, TODAY, TOMORROW,
                                                by_connector=True)
    occupied = usage(rows)[1][0]
    assert occupied <= 32 * 60, f"occupied {occupied / 3600:.1f} h"
    assert overview.active_sessions == 0


async def test_a_stuck_stamp_repeated_after_a_boot_is_a_new_transaction(
        world: tuple[Services, Clock]) -> None:
    """Review r26-robust3: a charger whose clock is stuck at its default (the epoch, or
    2000-01-01: ``STUCK_CLOCK_STAMPS``), its meter counting from 0 per transaction, no
    persistent queue. Power cut mid-charge: it boots, the car still plugged (Preparing,
    not Available: no reboot check closes the open session), and its StopTransaction is
    never sent. The card presented again ten minutes later makes a new transaction with
    the very figures of the open one: taken for a resend, the two charges were one
    session. A stuck stamp matches only an open session recorded since the last boot:
    the new charge opens a session and closes the old one as lost. (Until review
    r26-robust4 so for a ticking stamp too; now a ticking stamp repeated after a boot is
    the same transaction, ``test_a_ticking_start_resent_after_a_power_cut_is_its_session``.)"""
    services, clock = world
    charging, store = services.charging, services.ctx.store
    for stamp, connector in ((datetime(1970, 1, 1, tzinfo=UTC), 1),
                             (datetime(2000, 1, 1, tzinfo=UTC), 2)):
        await charging.set_online("NEVER-SET", True)
        first, _ = await charging.start_transaction("NEVER-SET", connector, "TAG-1", 0,
                                                    stamp)
        clock.now += timedelta(minutes=40)
        await charging.set_online("NEVER-SET", False)  # the power cut
        clock.now += timedelta(minutes=5)
        await charging.set_online("NEVER-SET", True)
        await charging.boot("NEVER-SET", BootInfo(vendor="v", model="m"))
        await charging.status_notification("NEVER-SET", connector, "Preparing", "NoError",
                                           timestamp=stamp)
        clock.now += timedelta(minutes=10)
        again, _ = await charging.start_transaction("NEVER-SET", connector, "TAG-1", 0,
                                                    stamp)
        assert again != first, "a new charge told the open session's id"
        by_tx = {s.transaction_id: s for s in await store.find_all(d.Session, ALL)}
        assert by_tx[first].state is d.SessionState.COMPLETED
        assert by_tx[first].closed_without_stop
        assert by_tx[again].state is d.SessionState.ACTIVE
        await charging.stop_transaction("NEVER-SET", again, 500, stamp)


@pytest.mark.parametrize("replayed_stop", ["names the first id", "lost"])
async def test_an_epoch_queue_replayed_after_its_stop_closes_a_phantom_priced_nothing(
        world: tuple[Services, Clock], replayed_stop: str) -> None:
    """The limit left (docs/architecture.md): a charger stamping the epoch itself at
    every start (a clock that does not tick) cannot tell its queue replayed after its
    stop from the same card's next charge (review s26: its meter counting from 0 per
    transaction, every figure repeats), so only its open session is matched and the
    replayed start opens a phantom session. Its replayed stop naming the id first told
    repeats that session's meterStop and timestamp: it closes the phantom at once
    (review r26-robust4; it stayed open, holding the card, until the next start), priced
    nothing and flagged REPLAYED. A replay whose stop never comes leaves the phantom to
    the next start on the connector, which closes it as lost: priced nothing and
    flagged too. The real charge and the next are billed as any."""
    services, clock = world
    charging, store = services.charging, services.ctx.store
    await _tariff(services)
    stamp = datetime(1970, 1, 1, tzinfo=UTC)
    await charging.set_online("NEVER-SET", True)
    real, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 1000, stamp)
    clock.now += timedelta(minutes=30)
    await charging.stop_transaction("NEVER-SET", real, 6000, stamp)
    clock.now += timedelta(minutes=1)
    # The queue replayed whole: its start, then its stop (already recorded).
    phantom, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 1000, stamp)
    assert phantom != real
    if replayed_stop == "names the first id":
        await charging.stop_transaction("NEVER-SET", real, 6000, stamp)
        [closed] = await store.find_all(d.Session, Eq("transaction_id", phantom))
        assert closed.state is d.SessionState.COMPLETED
        assert not closed.closed_without_stop
    clock.now += timedelta(hours=3)
    following, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 6000, stamp)
    clock.now += timedelta(minutes=10)
    await charging.stop_transaction("NEVER-SET", following, 8000, stamp)
    by_tx = {s.transaction_id: s for s in await store.find_all(d.Session, ALL)}
    assert by_tx[phantom].state is d.SessionState.COMPLETED
    assert by_tx[phantom].closed_without_stop is (replayed_stop == "lost")
    assert by_tx[phantom].meter_anomaly is d.MeterAnomaly.REPLAYED
    assert not by_tx[phantom].cost_minor
    paid = {p.session_id: p.amount_minor for p in await store.find_all(d.Payment, ALL)}
    assert by_tx[phantom].id not in paid
    assert paid[by_tx[real].id] == 100 + 150 + 300  # fee, 5 kWh, 30 minutes
    assert paid[by_tx[following].id] == 100 + 60 + 100
    assert by_tx[real].meter_anomaly is None and by_tx[following].meter_anomaly is None


# Review r26-robust4: never-set clocks across a boot, closed sessions matched, stuck
# stamps other than the epoch.
TICKING = datetime(1970, 1, 1, 0, 42, tzinfo=UTC)  # a clock never set, ticking


async def _booted(services: Services) -> None:
    charging = services.charging
    await charging.set_online("NEVER-SET", True)
    await charging.boot("NEVER-SET", BootInfo(vendor="v", model="m"))


async def test_a_ticking_queue_replayed_after_a_power_cut_is_billed_once(
        world: tuple[Services, Clock]) -> None:
    """Review r26-robust4: the charge (start, stop) was delivered, the power went before
    the charger persisted the answers, and on boot it replays its queue: the start, then
    the stop filled with the id that start is told. A ticking stamp matches its session
    whatever boot it was recorded in: the replayed start is told the closed session's
    id, its stop changes nothing (the phantom it opened, matched only since the last
    boot, was billed the 30-minute charge a second time)."""
    services, clock = world
    charging, store = services.charging, services.ctx.store
    await _tariff(services)
    await _booted(services)
    clock.now += timedelta(minutes=1)
    real, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 1000, TICKING)
    clock.now += timedelta(minutes=30)
    await charging.stop_transaction("NEVER-SET", real, 6000, TICKING + timedelta(minutes=30))
    clock.now += timedelta(minutes=1)
    await charging.set_online("NEVER-SET", False)  # the power cut
    clock.now += timedelta(minutes=2)
    await _booted(services)
    again, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 1000, TICKING)
    assert again == real, "a phantom opened"
    await charging.stop_transaction("NEVER-SET", again, 6000, TICKING + timedelta(minutes=30))
    paid = [p.amount_minor for p in await store.find_all(d.Payment, ALL)]
    assert paid == [100 + 150 + 300], f"one 5 kWh charge paid {paid}"
    assert await store.count(d.Session, ALL) == 1


async def test_a_ticking_start_resent_after_a_power_cut_is_its_session(
        world: tuple[Services, Clock]) -> None:
    """Review r26-robust4: the start was recorded but its answer lost in a power cut;
    on boot the charger resends it from its queue (same ticking stamp, card,
    meterStart), then stops that transaction. The resend is its session, recorded before
    the boot (not matched, a second session opened and closed the first as lost, billed
    its session fee and minutes on top)."""
    services, clock = world
    charging, store = services.charging, services.ctx.store
    await _tariff(services)
    await _booted(services)
    clock.now += timedelta(minutes=1)
    first, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 1000, TICKING)
    clock.now += timedelta(seconds=5)
    await charging.set_online("NEVER-SET", False)  # the power cut, the answer lost
    clock.now += timedelta(minutes=2)
    await _booted(services)
    again, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 1000, TICKING)
    clock.now += timedelta(seconds=5)
    await charging.stop_transaction("NEVER-SET", again, 1000, TICKING + timedelta(seconds=10),
                                    )
    by_id = {s.id: s for s in await store.find_all(d.Session, ALL)}
    paid = [(by_id[p.session_id].transaction_id, p.amount_minor)
            for p in await store.find_all(d.Payment, ALL) if p.amount_minor]
    assert first == again or len(paid) <= 1, f"one start paid {paid}"


async def test_a_replay_matched_to_a_paid_session_is_answered_as_recorded(
        world: tuple[Services, Clock]) -> None:
    """Review r26-robust4: the charge is stopped and paid; the card is then blocked
    (lost) and the charger replays its queue. The replayed start matched to the closed
    session is answered as that session's start was (Accepted), never judged again nor
    rewritten (``_answered`` wrote ``start_refused="Blocked"`` on the paid session,
    which then read as a start the driver was refused)."""
    services, clock = world
    charging, store = services.charging, services.ctx.store
    await _tariff(services)
    await _booted(services)
    clock.now += timedelta(minutes=1)
    real, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 1000, TICKING)
    clock.now += timedelta(minutes=30)
    await charging.stop_transaction("NEVER-SET", real, 6000, TICKING + timedelta(minutes=30))
    tag = await store.find_one(d.IdTag, Eq("tag", "TAG-1"))
    assert tag is not None
    await services.fleet.update_id_tag(SYSTEM, tag.id, status=d.IdTagStatus.BLOCKED)
    clock.now += timedelta(minutes=1)
    again, told = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 1000, TICKING)
    assert again == real
    assert told.status == "Accepted"
    [session] = await store.find_all(d.Session, ALL)
    [payment] = await store.find_all(d.Payment, ALL)
    assert session.start_refused is None and session.billable, \
        f"paid {payment.amount_minor}, now recorded refused {session.start_refused}"


async def test_an_epoch_queue_replayed_after_its_stop_naming_the_phantom_is_billed_once(
        world: tuple[Services, Clock]) -> None:
    """Review r26-robust4: a charger stamping the epoch itself: the replayed start opens
    a phantom (a stuck stamp matches only an open session), and the replayed stop,
    filled with the id that start was told, repeats the real charge's meterStop and
    timestamp: the phantom is a duplicate, priced nothing and flagged REPLAYED (it was
    billed the charge a second time)."""
    services, clock = world
    charging, store = services.charging, services.ctx.store
    await _tariff(services)
    await _booted(services)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    clock.now += timedelta(minutes=1)
    real, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 1000, epoch)
    clock.now += timedelta(minutes=30)
    await charging.stop_transaction("NEVER-SET", real, 6000, epoch)
    clock.now += timedelta(minutes=1)
    again, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 1000, epoch)
    await charging.stop_transaction("NEVER-SET", again, 6000, epoch)
    paid = [p.amount_minor for p in await store.find_all(d.Payment, ALL)]
    assert paid == [100 + 150 + 300], f"one 5 kWh charge paid {paid}"
    [phantom] = await store.find_all(d.Session, Eq("transaction_id", again))
    assert phantom.meter_anomaly is d.MeterAnomaly.REPLAYED


async def test_a_clock_stuck_at_2000_starts_a_new_session_each_charge(
        world: tuple[Services, Clock]) -> None:
    """Review r26-robust4 (README: "a clock never set reads 1970 or 2000"): a charger
    stamping the RTC default 2000-01-01T00:00:00Z at every start (a clock that does not
    tick, its meter counting from 0 per transaction) charges the same card twice in one
    boot. A stuck stamp matches only an open session: the second charge is a session of
    its own, billed (told the first's id, its 8 kWh were billed nowhere)."""
    services, clock = world
    charging, store = services.charging, services.ctx.store
    await _tariff(services)
    await _booted(services)
    stuck = datetime(2000, 1, 1, tzinfo=UTC)
    clock.now += timedelta(minutes=1)
    first, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 0, stuck)
    clock.now += timedelta(minutes=30)
    await charging.stop_transaction("NEVER-SET", first, 5000, stuck)
    clock.now += timedelta(hours=2)
    second, _ = await charging.start_transaction("NEVER-SET", 1, "TAG-1", 0, stuck)
    clock.now += timedelta(minutes=40)
    await charging.stop_transaction("NEVER-SET", second, 8000, stuck)
    paid = sorted(p.amount_minor for p in await store.find_all(d.Payment, ALL))
    assert second != first, f"a new charge told the closed session's id; paid {paid}"
    assert paid == sorted([100 + 150 + 300, 100 + 240 + 400])  # 5 kWh 30 min, 8 kWh 40
