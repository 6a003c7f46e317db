"""What the charging use cases cache for a connected charger, with two instances on one
database: instance A holds the charger, an operator works on instance B. A change made on
B reaches A's charger at its next message when B announces it on the bus, and within the
cache's expiry when the announcement is lost, however often the charger reports."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import domain.services.charger_cache as cache_module
from domain import entities as d
from domain.clock import utcnow
from domain.errors import ValidationError
from domain.events import EventsDropped
from domain.policy import SYSTEM, Policy, Viewer
from domain.query import Eq
from domain.services import ConnectorSpec, ServiceContext, Services
from domain.services.charger_cache import CACHE_TTL_S
from domain.services.charging import BootInfo
from domain.services.metering import MeterReading, SampledValue
from pubsub.memory import MemoryEventBus
from store.sqlite import SqliteStore
from tests.helpers import FastHasher


@dataclass
class Instances:
    a: Services  # holds the charger
    b: Services  # where operators work
    stores: list[SqliteStore]
    station: d.Station
    companies: list[d.Company]


class FakeMonotonic:
    """The cache's clock, moved by the test (``time.monotonic`` itself drives the loop)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr(cache_module, "time", types.SimpleNamespace(
        monotonic=fake.monotonic))
    return fake


async def _instances(path: Path, bus: MemoryEventBus | None) -> AsyncIterator[Instances]:
    stores = [SqliteStore(str(path)), SqliteStore(str(path))]
    for store in stores:
        await store.start()
    a, b = (Services(ServiceContext(store=s, policy=Policy(), hasher=FastHasher(), bus=bus))
            for s in stores)
    follower = None
    if bus is not None:
        follower = asyncio.create_task(a.charging.follow(
            bus.subscribe(cache_module.CACHED_TOPICS)))
    try:
        companies = [await b.accounts.create_company(SYSTEM, name=name)
                     for name in ("Volt GmbH", "Other AG")]
        station, _ = await b.stations.create_station(
            SYSTEM, cp_id="CP-1", name="One", company_id=companies[0].id,
            connectors=[ConnectorSpec(1, d.ConnectorType.CCS2, 150)])
        yield Instances(a, b, stores, station, companies)
    finally:
        if follower is not None:
            follower.cancel()
            await asyncio.wait([follower])
        for store in stores:
            await store.close()


@pytest.fixture
async def alone(tmp_path: Path) -> AsyncIterator[Instances]:
    """Two instances whose changes are announced nowhere (a lost event)."""
    async for instances in _instances(tmp_path / "shared.db", None):
        yield instances


@pytest.fixture
async def linked(tmp_path: Path) -> AsyncIterator[Instances]:
    """Two instances on one bus, as with Redis; A follows what is announced."""
    bus = MemoryEventBus()
    await bus.start()
    try:
        async for instances in _instances(tmp_path / "shared.db", bus):
            yield instances
    finally:
        await bus.close()


async def delivered() -> None:
    """Let A's follower take what the bus holds (delivery is in-process and at once)."""
    for _ in range(10):
        await asyncio.sleep(0)


def register(wh: int) -> list[MeterReading]:
    return [MeterReading(utcnow(), (SampledValue(str(wh), unit="Wh"),))]


async def boot(services: Services) -> d.Registration:
    return (await services.charging.boot("CP-1", BootInfo(vendor="V", model="M"))).status


async def reject_on_b(x: Instances) -> None:
    await x.b.stations.update_station(SYSTEM, x.station.id,
                                      registration=d.Registration.REJECTED)


REPORTS: dict[str, Callable[[Services], Awaitable[Any]]] = {
    "boot": boot,
    "connector 0": lambda s: s.charging.status_notification(
        "CP-1", 0, "Available", "NoError", timestamp=utcnow()),
    "firmware status": lambda s: s.charging.firmware_status("CP-1", "Idle"),
}


# ------------------------------------------------------------------ the expiry, unannounced
@pytest.mark.parametrize("report", REPORTS)
async def test_a_chargers_own_reports_do_not_keep_its_cached_station_alive(
        alone: Instances, clock: FakeMonotonic, report: str) -> None:
    """QA: a charger booting (or reporting connector 0) every 10 s was never told of
    its registration Rejected on another instance: each report cached its stale copy for
    another 30 s."""
    assert await boot(alone.a) is d.Registration.ACCEPTED  # cached from here on
    await reject_on_b(alone)
    for _ in range(3):  # within the expiry of the copy the first boot read
        clock.now += CACHE_TTL_S / 3 - 1
        await REPORTS[report](alone.a)
    clock.now += 4  # past it: read again, whatever the charger sent meanwhile
    assert await boot(alone.a) is d.Registration.REJECTED


async def test_a_boot_is_answered_by_the_registration_as_stored(alone: Instances) -> None:
    """A boot right after a Rejected set on another instance, its announcement not (yet)
    delivered: the answer is Rejected, not the cached Accepted (QA s21)."""
    for _ in range(2):  # the first writes the charger's details (and drops its copy)
        assert await boot(alone.a) is d.Registration.ACCEPTED
    assert alone.a.charging.cache.station("CP-1") is not None
    await reject_on_b(alone)
    assert await boot(alone.a) is d.Registration.REJECTED


async def test_a_station_removed_unannounced_is_an_unknown_charge_point(
        alone: Instances) -> None:
    """Its cached copy still answers the charger, but the write fails: the charger is
    told its charge point is unknown (and hung up on), not "no such station: <id>"."""
    await boot(alone.a)
    await alone.b.stations.remove_station(SYSTEM, alone.station.id)
    for message in (alone.a.charging.heartbeat("CP-1"), boot(alone.a)):
        with pytest.raises(ValidationError) as raised:
            await message
        assert (raised.value.field, raised.value.code) == ("cpId", "NOT_FOUND")
        assert raised.value.message == "unknown charge point CP-1"
        assert alone.station.id not in raised.value.message


# ------------------------------------------------------------------ announced on the bus
async def test_a_start_on_a_stale_copy_of_a_pending_station_is_told_no_card(
        alone: Instances, clock: FakeMonotonic) -> None:
    """Review s25: B makes the station Pending (no session yet); A, holding the charger,
    still has its cached Accepted copy (the announcement lost). The charger, told
    Accepted at its boot, acts as Accepted until its next: its StartTransaction is taken
    (recorded, then stopped and billed), but answered as the station is now, read as
    stored: no card's status (Invalid, whatever the card), not Accepted from the stale
    copy. Its meter values and stop are taken; booted again (told Pending), it may start
    no more."""
    a = alone.a
    driver = await alone.b.accounts.create_user(
        SYSTEM, email="d@example.com", password="password-123", name="D",
        role=d.Role.DRIVER)
    await alone.b.fleet.issue_id_tag(Viewer.of(driver), tag="TAG-A")
    for _ in range(2):  # the first writes the charger's details (and drops its copy)
        assert await boot(a) is d.Registration.ACCEPTED
    assert a.charging.cache.station("CP-1") is not None
    await alone.b.stations.update_station(SYSTEM, alone.station.id,
                                          registration=d.Registration.PENDING)
    assert await a.charging.admits("CP-1", "StartTransaction")  # told Accepted at boot
    tx, info = await a.charging.start_transaction("CP-1", 1, "TAG-A", 0, utcnow())
    assert info.status == "Invalid"  # the card is valid: not said
    clock.now += CACHE_TTL_S + 1
    assert not await a.charging.admits("CP-1", "Authorize")  # a card check: Pending now
    for action in ("MeterValues", "StopTransaction", "StatusNotification"):
        assert await a.charging.admits("CP-1", action)  # the charger's own registration
    await a.charging.meter_values("CP-1", 1, tx, register(1000))
    assert await a.charging.stop_transaction("CP-1", tx, 4000, utcnow(),
                                             id_tag="TAG-A") is None  # no card status
    session = await a.charging.store.find_one(d.Session, Eq("transaction_id", tx))
    assert session is not None and session.state is d.SessionState.COMPLETED \
        and session.start_refused is None and session.energy_wh == 4000, session
    assert await boot(a) is d.Registration.PENDING
    assert not await a.charging.admits("CP-1", "StartTransaction")


async def test_a_registration_rejected_elsewhere_reaches_the_charger_at_once(
        linked: Instances) -> None:
    assert await boot(linked.a) is d.Registration.ACCEPTED
    await reject_on_b(linked)
    await delivered()
    assert await boot(linked.a) is d.Registration.REJECTED


async def test_a_write_that_ends_after_an_edit_does_not_bring_back_the_copy_before_it(
        linked: Instances) -> None:
    """Review s26: a charger's write queued when the station was edited elsewhere ended
    after the edit's announcement dropped the cached copy and a message had read the
    station again, and put its copy, patched from the one read before the edit, back in
    the cache: the charger's next messages were judged by the station as it was (here
    Accepted: a Pending station's charger had its cards checked; a new password: the
    connection that signed in with it was shut out). Only the copy a write patched is
    replaced by its result."""
    a = linked.a.charging
    assert await boot(linked.a) is d.Registration.ACCEPTED  # cached
    held, release = asyncio.Event(), asyncio.Event()
    write = a.telemetry.write

    async def slow_write(changes: Any) -> None:
        a.telemetry.write = write  # type: ignore[method-assign]
        held.set()
        await release.wait()
        await write(changes)

    a.telemetry.write = slow_write  # type: ignore[method-assign]
    heartbeat = asyncio.create_task(a.heartbeat("CP-1"))  # its copy read: Accepted
    await asyncio.wait_for(held.wait(), 5)
    await linked.b.stations.update_station(SYSTEM, linked.station.id,
                                           registration=d.Registration.PENDING)
    await delivered()
    assert not await a.admits("CP-1", "Authorize")  # read again: Pending
    release.set()
    await heartbeat
    assert not await a.admits("CP-1", "Authorize")


async def test_a_station_handed_over_elsewhere_books_the_next_session_to_its_new_company(
        linked: Instances) -> None:
    """QA: a session 50 s after a handover on B went to the old company's books."""
    await linked.a.charging.status_notification("CP-1", 0, "Available", "NoError",
                                                timestamp=utcnow())
    new = linked.companies[1]
    await linked.b.stations.update_station(SYSTEM, linked.station.id, company_id=new.id)
    await delivered()
    tx, _ = await linked.a.charging.start_transaction("CP-1", 1, "TAG", 0, utcnow())
    session = await linked.stores[1].find_one(d.Session, Eq("transaction_id", tx))
    assert session is not None and session.company_id == new.id


async def test_a_session_ended_elsewhere_gets_no_more_energy_from_its_charger(
        linked: Instances) -> None:
    """QA: after endSession on B, A's meter values from its cached session added
    increments: the energy trend counted 500 Wh of a 250 Wh session."""
    charging = linked.a.charging
    tx, _ = await charging.start_transaction("CP-1", 1, "TAG", 1_000,
                                             utcnow() - timedelta(minutes=5))
    await charging.meter_values("CP-1", 1, tx, register(1_250))  # cached from here on
    session = await linked.stores[1].find_one(d.Session, Eq("transaction_id", tx))
    assert session is not None
    ended = await linked.b.charging.end_session(SYSTEM, session.id)
    assert ended.energy_wh == 250
    await delivered()
    await charging.meter_values("CP-1", 1, tx, register(1_500))
    samples = await linked.stores[0].find_all(d.MeterSample, Eq("session_id", session.id))
    assert len(samples) == 2
    assert sum(s.delta_wh or 0 for s in samples) == ended.energy_wh


async def test_a_station_removed_elsewhere_is_unknown_at_the_chargers_next_message(
        linked: Instances) -> None:
    await boot(linked.a)
    await linked.b.stations.remove_station(SYSTEM, linked.station.id)
    await delivered()
    with pytest.raises(ValidationError) as raised:
        await linked.a.charging.heartbeat("CP-1")
    assert (raised.value.field, raised.value.code) == ("cpId", "NOT_FOUND")


async def test_a_connector_rating_changed_elsewhere_is_read_again(linked: Instances) -> None:
    charging = linked.a.charging
    assert await charging._rated_kw(linked.station, 1) == 150
    [connector] = await linked.stores[1].find_all(d.Connector,
                                                  Eq("station_id", linked.station.id))
    await linked.b.stations.update_connector(SYSTEM, connector.id, max_kw=22)
    await delivered()
    assert await charging._rated_kw(linked.station, 1) == 22


async def test_events_lost_drop_everything_cached(alone: Instances) -> None:
    """An interrupted bus (Redis away) may have lost any of those announcements."""
    assert await boot(alone.a) is d.Registration.ACCEPTED
    await reject_on_b(alone)
    alone.a.charging.cache.drop(EventsDropped(0, interrupted=True))
    assert await boot(alone.a) is d.Registration.REJECTED


# ------------------------------------------------------------------ maintenance reports
class Answers:
    """The charger's answer to B's command (B's gateway: the operator works there)."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer

    def is_connected(self, cp_id: str, newest: int | None = None) -> bool:
        return True  # its charger reachable through it

    async def call(self, cp_id: str, action: str, payload: dict[str, Any], timeout: float,
                   newest: int | None = None) -> dict[str, Any]:
        return self.answer


async def stored(x: Instances) -> d.Station:
    station = await x.stores[0].find_one(d.Station, Eq("cp_id", "CP-1"))
    assert station is not None
    return station


async def firmware_requested_on_b(x: Instances) -> None:
    """B records a rollout due in 3 h while A holds the station cached from before."""
    await x.a.charging.firmware_status("CP-1", "Installed")
    assert await x.a.charging.admits("CP-1", "Heartbeat")  # A caches the station
    x.b.attach_gateway(Answers({}))  # type: ignore[arg-type]
    outcome = await x.b.commands.send(SYSTEM, "CP-1", "UpdateFirmware", {
        "location": "https://fw.example.com/2.0.bin",
        "retrieveDate": utcnow() + timedelta(hours=3)})
    assert outcome.error is None
    assert (await stored(x)).firmware_status == "Requested"


async def diagnostics_requested_on_b(x: Instances) -> None:
    """B records an upload accepted while the one before was Uploading (A cached that)."""
    await x.a.charging.diagnostics_status("CP-1", "Uploading")
    assert await x.a.charging.admits("CP-1", "Heartbeat")  # A caches the station
    x.b.attach_gateway(Answers({"fileName": "diag-2.zip"}))  # type: ignore[arg-type]
    outcome = await x.b.commands.send(SYSTEM, "CP-1", "GetDiagnostics",
                                      {"location": "https://diag.example.com/up"})
    assert outcome.error is None
    requested = await stored(x)
    assert (requested.diagnostics_status, requested.diagnostics_previous_uploading) == (
        "Requested", True)


async def test_a_firmware_idle_before_the_download_is_due_is_judged_as_stored(
        alone: Instances) -> None:
    """Review of b9b76ee: A judged the charger's Idle against its cached station (from
    before B recorded the rollout, its StationChanged not arrived), so a rollout not due
    for 3 h read Idle. Judged on the station as stored, it still reads Requested."""
    await firmware_requested_on_b(alone)
    await alone.a.charging.firmware_status("CP-1", "Idle")  # answering a TriggerMessage
    assert (await stored(alone)).firmware_status == "Requested"


async def test_the_late_end_of_the_upload_before_is_judged_as_stored(
        alone: Instances) -> None:
    """The upload before's Uploaded, judged on A's cached Uploading, was stored as the
    new upload's end; judged as stored it is the one before's: the flag is cleared, and
    the new upload's own end is shown."""
    await diagnostics_requested_on_b(alone)
    requested = await stored(alone)
    await alone.a.charging.diagnostics_status("CP-1", "Uploaded")  # the one before's
    after = await stored(alone)
    assert (after.diagnostics_status, after.diagnostics_status_at,
            after.diagnostics_previous_uploading) == (
        "Requested", requested.diagnostics_status_at, False)
    await alone.a.charging.diagnostics_status("CP-1", "UploadFailed")  # the new one's
    assert (await stored(alone)).diagnostics_status == "UploadFailed"


@pytest.mark.parametrize("kind", ["FIRMWARE", "DIAGNOSTICS"])
async def test_a_report_handled_before_the_announcement_arrives_is_judged_as_stored(
        linked: Instances, kind: str) -> None:
    """With the bus too (in-process: no latency at all), a report A handles before its
    follower took B's StationChanged is not judged on the copy it had."""
    if kind == "FIRMWARE":
        await firmware_requested_on_b(linked)
        await linked.a.charging.firmware_status("CP-1", "Idle")
        assert (await stored(linked)).firmware_status == "Requested"
    else:
        await diagnostics_requested_on_b(linked)
        await linked.a.charging.diagnostics_status("CP-1", "Uploaded")
        assert (await stored(linked)).diagnostics_status == "Requested"


@pytest.mark.parametrize(("kind", "before", "report"), [
    ("FIRMWARE", "Installed", "Idle"), ("DIAGNOSTICS", "Uploading", "Uploaded")])
async def test_a_request_recorded_between_a_reports_read_and_its_write_is_not_overwritten(
        alone: Instances, monkeypatch: pytest.MonkeyPatch, kind: str, before: str,
        report: str) -> None:
    """A judges a report on the station as it read it; B's request landing between that
    read and A's write makes A read and judge again: a firmware Idle before the rollout
    is due, or the end of the upload under way when the next was accepted, leaves the
    new request Requested."""
    charging = alone.a.charging
    reports = charging.firmware_status if kind == "FIRMWARE" else charging.diagnostics_status
    await reports("CP-1", before)
    read = charging._require_station
    answers = [Answers({}) if kind == "FIRMWARE" else Answers({"fileName": "diag-2.zip"})]

    async def answered_meanwhile(cp_id: str, *, fresh: bool = False) -> d.Station:
        station = await read(cp_id, fresh=fresh)
        if fresh and answers:  # the report's read, before its write
            alone.b.attach_gateway(answers.pop())  # type: ignore[arg-type]
            outcome = await alone.b.commands.send(
                SYSTEM, "CP-1", "UpdateFirmware" if kind == "FIRMWARE" else "GetDiagnostics",
                {"location": "https://example.com/x", "retrieveDate": utcnow() + timedelta(
                    hours=3)} if kind == "FIRMWARE" else {"location": "https://example.com/x"})
            assert outcome.error is None
        return station

    monkeypatch.setattr(charging, "_require_station", answered_meanwhile)
    await reports("CP-1", report)
    station = await stored(alone)
    shown = station.firmware_status if kind == "FIRMWARE" else station.diagnostics_status
    assert (shown, station.diagnostics_previous_uploading) == ("Requested", False)
