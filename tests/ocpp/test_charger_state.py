"""What the service keeps of a charger's own state, end to end with the ``ocpp`` package's
charge point (``ocpp_bridge.simulator``) over a real websocket: the firmware rollout and
its statuses with their times (operators could not tell today's "Installed" from last
year's), and the charger's configuration as last known (``getConfiguration`` is live
only: an offline charger showed nothing)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from ocpp.routing import on
from ocpp.v16 import call
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action

from chargegraph.webhooks import event_data, payload
from domain import entities as d
from domain.events import CommandCompleted, MaintenanceStatusChanged
from domain.ocpp16 import DiagnosticsStatus, FirmwareStatus, member
from domain.policy import SYSTEM, Viewer
from domain.ports import Change, Delete, Store, Update
from domain.query import Eq, Sort, all_of
from domain.services.base import touch
from domain.services.commands import ANNOUNCE_ROUNDS, UNREADABLE_FILE_NAME, CommandService
from domain.services.configuration import MAX_KEYS, record_change, record_read
from domain.services.webhooks import webhook_event
from domain.wire import rfc3339
from ocpp_bridge import simulator
from ocpp_bridge.simulator import connected, now
from pubsub.memory import MemoryEventBus
from tests.helpers import until
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.ocpp.test_commands import run, settle

FIRMWARE = """{ station(cpId: "CP-1") { firmwareStatus firmwareStatusAt diagnosticsStatus
    diagnosticsStatusAt firmwareRollout { requestedAt location retrieveDate } } }"""
DIAGNOSTICS = """{ station(cpId: "CP-1") { diagnosticsStatus diagnosticsStatusAt
    diagnosticsRequest { requestedAt fileName } } }"""
CONFIGURATION = """{ station(cpId: "CP-1") { online configuration { key value readonly
    masked readAt changedAt rebootRequired } } }"""
KEPT = """{ station(cpId: "CP-1") { configurationTruncated configuration { key value } } }"""


@pytest.fixture
async def bus() -> AsyncIterator[MemoryEventBus]:
    events = MemoryEventBus()
    await events.start()
    yield events
    await events.close()


@pytest.fixture
async def central(tmp_path: Path, bus: MemoryEventBus) -> AsyncIterator[Central]:
    c = await start_central(tmp_path / "central.db", bus=bus)
    await seed(c)
    yield c
    await stop_central(c)


def when(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text)


def named(status: str) -> str:
    """A firmware or diagnostics status as OCPP spells it (``Uploaded``), as the API
    names it (``UPLOADED``)."""
    return (member(FirmwareStatus, status) or DiagnosticsStatus(status)).name


async def firmware(central: Central, as_user: str = "op") -> dict[str, Any]:
    return (await central.gql(FIRMWARE, as_user=as_user))["station"]  # type: ignore[no-any-return]


async def diagnostics(central: Central, as_user: str = "op") -> dict[str, Any]:
    return (await central.gql(DIAGNOSTICS, as_user=as_user))["station"]  # type: ignore[no-any-return]


async def next_maintenance(events: AsyncIterator[Any]) -> MaintenanceStatusChanged:
    got = await asyncio.wait_for(anext(events), 5)
    assert isinstance(got, MaintenanceStatusChanged)
    return got


async def test_a_firmware_rollout_reads_requested_then_the_chargers_statuses_with_times(
        central: Central, bus: MemoryEventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator rolled out firmware and read "Installed": last rollout's. An accepted
    updateFirmware now reads ``Requested`` (with the rollout: when, where from, without
    the URL's password, and when to fetch), each status after it carries its time, and
    subscriptions and webhooks say what the station reads (``requestedAt`` included)."""
    events = bus.subscribe(["maintenance"])
    base = {"cpId": "CP-1"}
    fetch = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            # Last year's rollout, installed: the simulator reports all its statuses.
            await run(central, "updateFirmware", {**base, "location": "https://fw/1.4",
                                                  "retrieveDate": now()}, "accepted")
            while (await next_maintenance(events)).status != "Installed":
                pass
            installed = await firmware(central)
            assert installed["firmwareStatus"] == "INSTALLED"
            # Today's rollout: the charger takes it and reports later, when we say.
            monkeypatch.setattr(simulator.SimulatedChargePoint, "_install_firmware",
                                _reports_nothing)
            answer = await run(central, "updateFirmware", {
                **base, "location": "https://fw:pw@fw.example.com/1.5.bin",
                "retrieveDate": fetch.isoformat()}, "accepted")
            assert answer == {**answer, "accepted": True, "errors": []}
            requested = await firmware(central)
            rollout = requested["firmwareRollout"]
            assert requested["firmwareStatus"] == "REQUESTED"
            assert rollout["location"] == "https://[hidden]@fw.example.com/1.5.bin"
            assert when(rollout["retrieveDate"]) == fetch
            assert when(requested["firmwareStatusAt"]) == when(rollout["requestedAt"]) \
                > when(installed["firmwareStatusAt"])
            announced = await next_maintenance(events)
            assert (announced.status, announced.at, announced.requested_at) == (
                "Requested", when(rollout["requestedAt"]), when(rollout["requestedAt"]))
            seen = [requested]
            for status in ("Downloading", "Installed"):
                await cp.call(call.FirmwareStatusNotification(status=status))
                seen.append(await firmware(central))
                event = await next_maintenance(events)
                assert (event.status, event.at, event.requested_at) == (
                    status, when(seen[-1]["firmwareStatusAt"]), when(rollout["requestedAt"]))
            assert [s["firmwareStatus"] for s in seen] == ["REQUESTED", "DOWNLOADING",
                                                           "INSTALLED"]
            times = [when(s["firmwareStatusAt"]) for s in seen]
            assert times == sorted(times) and len(set(times)) == 3
            assert all(s["firmwareRollout"] == rollout for s in seen)  # the same rollout
            await cp.call(call.DiagnosticsStatusNotification(status="Uploading"))
            diagnostics = await firmware(central)
            assert diagnostics["diagnosticsStatus"] == "UPLOADING"
            assert when(diagnostics["diagnosticsStatusAt"]) >= times[-1]
            uploading = await next_maintenance(events)
            assert (uploading.kind, uploading.at, uploading.requested_at) == (
                "DIAGNOSTICS", when(diagnostics["diagnosticsStatusAt"]), None)
    finally:
        await events.aclose()
    # A webhook delivery is the event: the same status, time (the body's) and rollout.
    assert webhook_event(event) is d.WebhookEvent.FIRMWARE_STATUS
    body = orjson.loads(payload("evt", "station.firmware_status", event.at,
                                event_data(event)))
    assert (body["at"], body["data"]["status"], body["data"]["requestedAt"]) == (
        rfc3339(event.at), "Installed", rollout["requestedAt"])
    hidden = await firmware(central, "driver")
    assert hidden == dict.fromkeys(hidden)  # staff only, as the firmware status itself


async def _reports_nothing(self: simulator.SimulatedChargePoint, *_: Any) -> None:
    """A charger that takes an update and reports on it later (the test sends them)."""


class _ReportsBeforeAnswering:
    """A charger whose first FirmwareStatusNotification of a rollout is handled before
    its answer to UpdateFirmware (the two race in the central system)."""

    def __init__(self, central: Central) -> None:
        self.central = central

    def is_connected(self, cp_id: str, newest: int | None = None) -> bool:
        return True  # its charger, reached through it

    async def call(self, cp_id: str, action: str, payload: dict[str, Any], timeout: float,
                   newest: int | None = None) -> dict[str, Any]:
        assert action == "UpdateFirmware"
        await self.central.services.charging.firmware_status(cp_id, "Downloading")
        return {}


async def test_a_firmware_report_that_beat_the_answer_is_not_overwritten(
        central: Central) -> None:
    """The charger's word on the rollout wins over our ``Requested``: a status that
    arrived before the accepted answer was handled stands, the rollout recorded beside it."""
    central.services.attach_gateway(_ReportsBeforeAnswering(central))  # type: ignore[arg-type]
    answer = await run(central, "updateFirmware", {
        "cpId": "CP-1", "location": "https://fw.example.com/2.0.bin",
        "retrieveDate": datetime.now(UTC).isoformat()}, "accepted")
    assert answer["accepted"] is True
    station = await firmware(central)
    assert station["firmwareStatus"] == "DOWNLOADING"
    assert station["firmwareRollout"]["location"] == "https://fw.example.com/2.0.bin"


class _NamesEachUpload(simulator.SimulatedChargePoint):
    """A charger that names each upload's file (diag-1.zip, diag-2.zip, ...) and reports
    on it when the test says."""

    uploads = 0

    @on(Action.get_diagnostics)
    def on_get_diagnostics(self, location: str, **options: Any) -> result.GetDiagnostics:
        self.uploads += 1
        return result.GetDiagnostics(file_name=f"diag-{self.uploads}.zip")


async def test_an_accepted_diagnostics_request_reads_requested_until_the_charger_reports(
        central: Central, bus: MemoryEventBus) -> None:
    """QA: after an upload reported Uploaded, a second getDiagnostics the charger accepted
    left the station reading that "Uploaded" with its time, and the file name it answered
    was kept nowhere. Now the station reads ``Requested`` from the answer, with the
    request (when, the file), until the charger reports; subscriptions and webhooks say
    so, and each status carries the request it follows (``requestedAt``)."""
    events = bus.subscribe(["maintenance"])
    base = {"cpId": "CP-1", "location": "https://diag.example.com/up"}
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                             charge_point=_NamesEachUpload) as cp:
            await cp.boot()
            await run(central, "getDiagnostics", base, "fileName")
            assert (await next_maintenance(events)).status == "Requested"
            for status in ("Uploading", "Uploaded"):
                await cp.call(call.DiagnosticsStatusNotification(status=status))
                assert (await next_maintenance(events)).status == status
            uploaded = await diagnostics(central)
            assert uploaded["diagnosticsStatus"] == "UPLOADED"
            second = await run(central, "getDiagnostics", base, "fileName errors { code }")
            assert second == {**second, "fileName": "diag-2.zip", "errors": []}
            requested = await diagnostics(central)
            request = requested["diagnosticsRequest"]
            assert requested["diagnosticsStatus"] == "REQUESTED"
            assert request["fileName"] == "diag-2.zip"
            assert when(requested["diagnosticsStatusAt"]) == when(request["requestedAt"]) \
                > when(uploaded["diagnosticsStatusAt"])
            announced = await next_maintenance(events)
            assert (announced.kind, announced.status, announced.at, announced.requested_at) \
                == ("DIAGNOSTICS", "Requested", when(request["requestedAt"]),
                    when(request["requestedAt"]))
            await cp.call(call.DiagnosticsStatusNotification(status="Uploading"))
            uploading = await diagnostics(central)
            assert uploading["diagnosticsStatus"] == "UPLOADING"
            assert uploading["diagnosticsRequest"] == request  # the same request
            event = await next_maintenance(events)
            assert (event.status, event.at, event.requested_at) == (
                "Uploading", when(uploading["diagnosticsStatusAt"]),
                when(request["requestedAt"]))
    finally:
        await events.aclose()
    assert webhook_event(announced) is d.WebhookEvent.DIAGNOSTICS_STATUS
    body = orjson.loads(payload("evt", "station.diagnostics_status", announced.at,
                                event_data(announced)))
    assert (body["at"], body["data"]["status"], body["data"]["requestedAt"]) == (
        request["requestedAt"], "Requested", request["requestedAt"])
    hidden = await diagnostics(central, "driver")
    assert hidden == dict.fromkeys(hidden)  # staff only, as the status itself


async def test_the_late_end_of_the_upload_before_is_not_the_new_ones(
        central: Central, bus: MemoryEventBus) -> None:
    """A DiagnosticsStatusNotification names no file. An upload requested while the one
    before was still Uploading reads ``Requested`` through that one's Uploaded (its end,
    late: not announced); the charger's next report is the new upload's, an end too."""
    events = bus.subscribe(["maintenance"])
    base = {"cpId": "CP-1", "location": "https://diag.example.com/up"}
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                             charge_point=_NamesEachUpload) as cp:
            await cp.boot()
            await run(central, "getDiagnostics", base, "fileName")
            await cp.call(call.DiagnosticsStatusNotification(status="Uploading"))
            await run(central, "getDiagnostics", base, "fileName")
            requested = await diagnostics(central)
            assert requested["diagnosticsStatus"] == "REQUESTED"
            await cp.call(call.DiagnosticsStatusNotification(status="Uploaded"))  # diag-1's
            assert await diagnostics(central) == requested
            # diag-2's: its upload server could not be reached.
            await cp.call(call.DiagnosticsStatusNotification(status="UploadFailed"))
            assert (await diagnostics(central))["diagnosticsStatus"] == "UPLOAD_FAILED"
            seen = [(await next_maintenance(events)).status for _ in range(4)]
    finally:
        await events.aclose()
    assert seen == ["Requested", "Uploading", "Requested", "UploadFailed"]


async def test_an_idle_before_the_download_is_due_leaves_the_rollout_requested(
        central: Central, bus: MemoryEventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA: a charger's FirmwareStatusNotification Idle (answering a TriggerMessage before
    the rollout's retrieveDate) replaced ``Requested``, so a scheduled rollout read Idle.
    Before the date it is no news: the station still reads ``Requested`` (and its time),
    nothing is announced, and the charger's progress moves it on. From the date on, an
    Idle is news (the download did not begin) and is shown."""
    monkeypatch.setattr(simulator.SimulatedChargePoint, "_install_firmware", _reports_nothing)
    events = bus.subscribe(["maintenance"])
    now = datetime.now(UTC)
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            await run(central, "updateFirmware", {
                "cpId": "CP-1", "location": "https://fw.example.com/2.0.bin",
                "retrieveDate": (now + timedelta(hours=3)).isoformat()}, "accepted")
            requested = await firmware(central)
            assert requested["firmwareStatus"] == "REQUESTED"
            await cp.call(call.FirmwareStatusNotification(status="Idle"))
            assert await firmware(central) == requested
            await cp.call(call.FirmwareStatusNotification(status="Downloading"))
            assert (await firmware(central))["firmwareStatus"] == "DOWNLOADING"
            # Due at once (a past retrieveDate): an Idle says the download did not begin.
            await run(central, "updateFirmware", {
                "cpId": "CP-1", "location": "https://fw.example.com/2.1.bin",
                "retrieveDate": (now - timedelta(minutes=1)).isoformat()}, "accepted")
            await cp.call(call.FirmwareStatusNotification(status="Idle"))
            idle = await firmware(central)
            assert idle["firmwareStatus"] == "IDLE"
            # Not before the request: the same millisecond on a busy machine (the Idle is
            # stamped on the charger's timeline, whose offset is measured in milliseconds).
            assert when(idle["firmwareStatusAt"]) >= when(idle["firmwareRollout"]["requestedAt"])
            seen = [(await next_maintenance(events)).status for _ in range(4)]
    finally:
        await events.aclose()
    assert seen == ["Requested", "Downloading", "Requested", "Idle"]


@pytest.mark.parametrize(("kind", "ends"), [
    ("FIRMWARE", ("Installed", "InstallationFailed", "DownloadFailed")),
    ("DIAGNOSTICS", ("Uploaded", "UploadFailed")),
])
async def test_a_triggered_idle_leaves_the_end_of_the_last_rollout_or_upload(
        central: Central, bus: MemoryEventBus, kind: str, ends: tuple[str, ...]) -> None:
    """QA s27: an operator triggering a Firmware/DiagnosticsStatusNotification (OCPP 1.6
    has the charger answer Idle when it is doing nothing) lost the outcome of the last
    rollout or upload: an InstallationFailed, an Installed, an Uploaded read Idle from
    then on, with the trigger's time, and was announced as Idle, so a fleet refreshed
    this way showed no failed install any more. An Idle after an end is no news (the
    charger is idle because it is done): the end stays, with its time, nothing is
    announced. After a status that is no end (Downloading) an Idle is news (the charger
    dropped the download) and is shown."""
    field = "firmwareStatus" if kind == "FIRMWARE" else "diagnosticsStatus"
    requested = "FIRMWARE_STATUS_NOTIFICATION" if kind == "FIRMWARE" \
        else "DIAGNOSTICS_STATUS_NOTIFICATION"
    notification = call.FirmwareStatusNotification if kind == "FIRMWARE" \
        else call.DiagnosticsStatusNotification
    under_way = "Downloading" if kind == "FIRMWARE" else "Uploading"
    events = bus.subscribe(["maintenance"])
    seen: list[str] = []
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            for end in ends:
                await cp.call(notification(status=end))
                ended = await firmware(central)
                assert ended[field] == named(end)
                seen.append((await next_maintenance(events)).status)
                # The simulator answers the trigger with an Idle, as OCPP 1.6 has it.
                answer = await run(central, "triggerMessage", {
                    "cpId": "CP-1", "requestedMessage": requested}, "status")
                assert answer["status"] == "ACCEPTED"
                await settle()
                await cp.call(notification(status="Idle"))  # the same, to be sure it came
                assert await firmware(central) == ended
            await cp.call(notification(status=under_way))
            await cp.call(notification(status="Idle"))
            assert (await firmware(central))[field] == "IDLE"
            seen += [(await next_maintenance(events)).status for _ in range(2)]
    finally:
        await events.aclose()
    assert seen == [*ends, under_way, "Idle"]


class _NamesItsFileWithControls(simulator.SimulatedChargePoint):
    """A charger whose diagnostics file name carries an escape code and a line break."""

    @on(Action.get_diagnostics)
    def on_get_diagnostics(self, location: str, **options: Any) -> result.GetDiagnostics:
        return result.GetDiagnostics(file_name="diag\x1b[31m-7\n.zip")


async def test_a_diagnostics_file_name_is_shown_as_other_charger_text(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA s27: the file name a charger answers a GetDiagnostics with was kept and shown
    as sent, escape codes and line breaks included, where every other text a charger
    reports (vendor, model, firmware, status info) is shown without them
    (``validation.shown_text``): a dashboard listing requests printed the charger's
    terminal codes. The answer, the station's request and the audit read it alike."""
    monkeypatch.setattr(simulator.SimulatedChargePoint, "_upload_diagnostics",
                        _reports_nothing)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         charge_point=_NamesItsFileWithControls) as cp:
        await cp.boot()
        answer = await run(central, "getDiagnostics", {
            "cpId": "CP-1", "location": "https://diag.example.com/up"}, "fileName errors { code }")
    assert answer == {**answer, "fileName": "diag[31m-7 .zip", "errors": []}
    station = await diagnostics(central)
    assert station["diagnosticsRequest"]["fileName"] == "diag[31m-7 .zip"


class _NamesItsFileInvisibly(simulator.SimulatedChargePoint):
    """A charger whose diagnostics file name is an escape code and a zero-width space."""

    @on(Action.get_diagnostics)
    def on_get_diagnostics(self, location: str, **options: Any) -> result.GetDiagnostics:
        return result.GetDiagnostics(file_name="\x1b\u200b")


async def test_a_diagnostics_file_name_of_hidden_characters_is_still_a_file(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r27: a file name with nothing left once shown as charger text became null,
    "nothing to upload", and no request was recorded, though the charger accepted and
    uploads. It reads as U+FFFD (``UNREADABLE_FILE_NAME``): the request is recorded."""
    monkeypatch.setattr(simulator.SimulatedChargePoint, "_upload_diagnostics",
                        _reports_nothing)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         charge_point=_NamesItsFileInvisibly) as cp:
        await cp.boot()
        answer = await run(central, "getDiagnostics", {
            "cpId": "CP-1", "location": "https://diag.example.com/up"}, "fileName errors { code }")
    assert answer == {**answer, "fileName": UNREADABLE_FILE_NAME, "errors": []}
    station = await diagnostics(central)
    assert station["diagnosticsStatus"] == "REQUESTED"
    assert station["diagnosticsRequest"]["fileName"] == UNREADABLE_FILE_NAME


class _ReportsFirst:
    """A charger whose ``kind`` notification of ``status`` (each of them, in order) is
    handled before its ``answer`` to the command (the two race in the central system);
    ``pause`` seconds before each report and before the answer, so each has a later
    time."""

    def __init__(self, central: Central, kind: str, status: str | list[str],
                 answer: dict[str, Any], pause: float = 0.0) -> None:
        self.central, self.kind, self.answer = central, kind, answer
        self.statuses = [status] if isinstance(status, str) else status
        self.pause = pause

    def is_connected(self, cp_id: str, newest: int | None = None) -> bool:
        return True  # its charger, reached through it

    async def call(self, cp_id: str, action: str, payload: dict[str, Any], timeout: float,
                   newest: int | None = None) -> dict[str, Any]:
        charging = self.central.services.charging
        report = charging.firmware_status if self.kind == "FIRMWARE" \
            else charging.diagnostics_status
        for status in self.statuses:
            await asyncio.sleep(self.pause)
            await report(cp_id, status)
        await asyncio.sleep(self.pause)
        return self.answer


@pytest.mark.parametrize(("before", "racing", "shown"), [
    ("Uploading", "Uploaded", "Requested"),  # the upload before's end: not this one's
    ("Uploading", "UploadFailed", "Requested"),
    ("Uploaded", "Uploading", "Uploading"),  # the charger began the new one at once
    (None, "UploadFailed", "UploadFailed"),
])
async def test_a_diagnostics_report_that_beat_the_answer(
        central: Central, before: str | None, racing: str, shown: str) -> None:
    """A report handled before the answer stands when it is the new upload's, as a
    firmware one does; the end of an upload that was still Uploading is not: the
    station reads ``Requested``. The request is recorded either way."""
    if before is not None:
        await central.services.charging.diagnostics_status("CP-1", before)
    central.services.attach_gateway(_ReportsFirst(  # type: ignore[arg-type]
        central, "DIAGNOSTICS", racing, {"fileName": "diag.zip"}))
    answer = await run(central, "getDiagnostics", {
        "cpId": "CP-1", "location": "https://diag.example.com/up"}, "fileName")
    assert answer["fileName"] == "diag.zip"
    station = await diagnostics(central)
    assert station["diagnosticsStatus"] == named(shown)
    assert station["diagnosticsRequest"]["fileName"] == "diag.zip"


@pytest.mark.parametrize(("due", "shown"), [(timedelta(hours=3), "Requested"),
                                            (-timedelta(minutes=1), "Idle")])
async def test_an_idle_that_beat_the_answer(central: Central, due: timedelta, shown: str
                                            ) -> None:
    """An Idle handled before the UpdateFirmware's answer is no news of a rollout not
    due yet either: ``Requested`` is written over it. Once due, it stands."""
    central.services.attach_gateway(_ReportsFirst(  # type: ignore[arg-type]
        central, "FIRMWARE", "Idle", {}))
    answer = await run(central, "updateFirmware", {
        "cpId": "CP-1", "location": "https://fw.example.com/2.0.bin",
        "retrieveDate": (datetime.now(UTC) + due).isoformat()}, "accepted")
    assert answer["accepted"] is True
    station = await firmware(central)
    assert station["firmwareStatus"] == named(shown)
    assert station["firmwareRollout"]["location"] == "https://fw.example.com/2.0.bin"


async def _drained(events: AsyncIterator[Any]) -> list[MaintenanceStatusChanged]:
    """The maintenance events told until none comes for a while."""
    got: list[MaintenanceStatusChanged] = []
    while True:
        try:
            e = await asyncio.wait_for(anext(events), 0.3)
        except TimeoutError:
            return got
        assert isinstance(e, MaintenanceStatusChanged)
        got.append(e)


@pytest.mark.parametrize(("kind", "raced", "command", "answer"), [
    ("FIRMWARE", ["Downloading", "Downloaded"], "updateFirmware", {}),
    ("DIAGNOSTICS", ["Uploading", "Uploaded"], "getDiagnostics", {"fileName": "d.zip"}),
])
async def test_reports_that_beat_the_answer_are_told_once_each_as_they_came(
        central: Central, bus: MemoryEventBus, kind: str, raced: list[str], command: str,
        answer: dict[str, Any]) -> None:
    """Review r27: a request dated from the report that raced its answer, and that
    report told again as the request's, claimed only the last of two (a quick download,
    a small upload): the first read as older than its own request and was never told
    with it, while the docs said every such report was. OCPP 1.6 reports name no
    request, and one sent before the answer is as likely the last request's end (see
    ``test_the_last_rollouts_end_racing_a_new_answer_stays_the_last_rollouts``), so
    none is claimed: each is told once, in order, when it came, with the request before
    it; the request is dated from its answer, after them."""
    inputs: dict[str, Any] = {"cpId": "CP-1", "location": "https://x.example.com/f"}
    if kind == "FIRMWARE":
        inputs["retrieveDate"] = datetime.now(UTC).isoformat()
    request, field = ("firmwareRollout", "firmware") if kind == "FIRMWARE" \
        else ("diagnosticsRequest", "diagnostics")
    query = f"""{{ station(cpId: "CP-1") {{ {field}Status {field}StatusAt
        {request} {{ requestedAt }} }} }}"""
    events = bus.subscribe(["maintenance"])
    try:
        central.services.attach_gateway(_ReportsFirst(  # type: ignore[arg-type]
            central, kind, raced, answer, pause=0.005))
        got = await run(central, command, inputs, "errors { code }")
        assert got["errors"] == []
        told = await _drained(events)
    finally:
        await events.aclose()
    station = (await central.gql(query, as_user="op"))["station"]
    asked = when(station[request]["requestedAt"])
    assert [e.status for e in told] == raced
    assert all(e.at < asked and e.requested_at is None for e in told), (told, asked)
    assert station[f"{field}Status"] == named(raced[-1])
    assert when(station[f"{field}StatusAt"]) < asked


async def test_the_last_rollouts_end_racing_a_new_answer_stays_the_last_rollouts(
        central: Central, bus: MemoryEventBus) -> None:
    """Review r27: rollout A is Installing; the operator sends rollout B, due in three
    hours, and A's Installed is handled before B's answer. Dated from that report and
    told again as B's, it read B installed three hours before the charger even fetched
    it, and the charger's triggered Idle (B is not due) was dropped as "no news after
    an end", so nothing corrected it. B is dated from its answer: the Installed is A's
    (before ``requestedAt``), told once, as A's; and an Idle after an end from before
    the request the station records is news, shown as B's."""
    charging = central.services.charging
    now = datetime.now(UTC).replace(microsecond=0)
    inputs = {"cpId": "CP-1", "location": "https://fw.example.com/a.bin",
              "retrieveDate": now.isoformat()}
    central.services.attach_gateway(_ReportsFirst(  # type: ignore[arg-type]
        central, "FIRMWARE", [], {}))
    assert (await run(central, "updateFirmware", inputs, "errors { code }"))["errors"] == []
    a_asked = when((await firmware(central))["firmwareRollout"]["requestedAt"])
    await asyncio.sleep(0.005)
    await charging.firmware_status("CP-1", "Installing")  # rollout A, nearly done
    events = bus.subscribe(["maintenance"])
    try:
        central.services.attach_gateway(_ReportsFirst(  # type: ignore[arg-type]
            central, "FIRMWARE", "Installed", {}, pause=0.005))
        got = await run(central, "updateFirmware", {
            **inputs, "location": "https://fw.example.com/b.bin",
            "retrieveDate": (now + timedelta(hours=3)).isoformat()}, "errors { code }")
        assert got["errors"] == []
        await asyncio.sleep(0.005)
        await charging.firmware_status("CP-1", "Idle")  # a triggered refresh: B not due
        told = await _drained(events)
    finally:
        await events.aclose()
    station = await firmware(central)
    asked = when(station["firmwareRollout"]["requestedAt"])
    assert station["firmwareRollout"]["location"] == "https://fw.example.com/b.bin"
    assert [(e.status, e.requested_at) for e in told] == [
        ("Installed", a_asked), ("Idle", asked)]
    assert station["firmwareStatus"] == "IDLE"
    assert when(station["firmwareStatusAt"]) >= asked


async def test_no_status_is_told_after_a_newer_one(
        central: Central, bus: MemoryEventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r27: the report that raced the answer was told again only once the
    request recorded beside it had landed (``landed`` read back): a newer report
    handled meanwhile (here; on another instance, any time before the repeat crossed
    the bus) was told first and the stale one after it, so a subscriber or webhook
    consumer keeping the last status showed Downloading while the station read
    Downloaded. Nothing is told again: the last told is what the station reads."""
    charging = central.services.charging
    original = CommandService.landed

    async def landed(self: Any, written: Any) -> Any:
        got = await original(self, written)
        rec = written[0] if written else None
        if got and getattr(rec, "firmware_status", None) == "Downloading" \
                and getattr(rec, "firmware_requested_at", None) is not None:
            await charging.firmware_status("CP-1", "Downloaded")  # the charger goes on
        return got

    monkeypatch.setattr(CommandService, "landed", landed)
    events = bus.subscribe(["maintenance"])
    try:
        central.services.attach_gateway(_ReportsFirst(  # type: ignore[arg-type]
            central, "FIRMWARE", "Downloading", {}, pause=0.005))
        got = await run(central, "updateFirmware", {
            "cpId": "CP-1", "location": "https://fw.example.com/b.bin",
            "retrieveDate": datetime.now(UTC).isoformat()}, "errors { code }")
        assert got["errors"] == []
        told = await _drained(events)
    finally:
        await events.aclose()
    station = await firmware(central)
    assert station["firmwareStatus"] == "DOWNLOADED"
    assert [e.status for e in told] == ["Downloading", "Downloaded"]


class _EndsFirstOnce:
    """A charger naming each upload's file (diag-1.zip, ...) whose ``report_first``, when
    set, is handled before its next answer (the two race in the central system)."""

    def __init__(self, central: Central) -> None:
        self.central, self.uploads = central, 0
        self.report_first: str | None = None

    def is_connected(self, cp_id: str, newest: int | None = None) -> bool:
        return True  # its charger, reached through it

    async def call(self, cp_id: str, action: str, payload: dict[str, Any], timeout: float,
                   newest: int | None = None) -> dict[str, Any]:
        if self.report_first is not None:
            report, self.report_first = self.report_first, None
            await self.central.services.charging.diagnostics_status(cp_id, report)
        self.uploads += 1
        return {"fileName": f"diag-{self.uploads}.zip"}


async def test_the_upload_befores_end_between_sending_and_the_answer_is_not_undone(
        central: Central, bus: MemoryEventBus) -> None:
    """Review of b9b76ee: upload 0 Uploading, diag-1 accepted (the flag set), diag-2
    sent; upload 0's Uploaded, handled before diag-2's answer, cleared the flag, and the
    answer wrote it back from the station read before sending. diag-2's own end (it
    failed at once: no Uploading) was then taken for upload 0's: the station read
    Requested for good and nothing was announced. The flag is decided on the station as
    stored when the answer is written."""
    charger = _EndsFirstOnce(central)
    central.services.attach_gateway(charger)  # type: ignore[arg-type]
    events = bus.subscribe(["maintenance"])
    up = {"cpId": "CP-1", "location": "https://diag.example.com/up"}
    try:
        await central.services.charging.diagnostics_status("CP-1", "Uploading")  # upload 0
        await run(central, "getDiagnostics", up, "fileName")  # diag-1, while 0 uploads
        charger.report_first = "Uploaded"  # upload 0's end, handled before the answer
        await run(central, "getDiagnostics", up, "fileName")  # diag-2
        requested = await diagnostics(central)
        assert (requested["diagnosticsStatus"], requested["diagnosticsRequest"]["fileName"]
                ) == ("REQUESTED", "diag-2.zip")
        # diag-2's upload server could not be reached: its end is news.
        await central.services.charging.diagnostics_status("CP-1", "UploadFailed")
        assert (await diagnostics(central))["diagnosticsStatus"] == "UPLOAD_FAILED"
        seen = [(await next_maintenance(events)).status for _ in range(4)]
    finally:
        await events.aclose()
    assert seen == ["Uploading", "Requested", "Requested", "UploadFailed"]


@pytest.mark.parametrize("kind", ["FIRMWARE", "DIAGNOSTICS"])
async def test_a_request_is_announced_whatever_was_written_to_the_station_after_it(
        central: Central, bus: MemoryEventBus, monkeypatch: pytest.MonkeyPatch, kind: str
        ) -> None:
    """Review of b9b76ee: whether ``Requested`` landed was asked of the station's stamps;
    another write after it (here the charger's StatusNotification for connector 0,
    handled meanwhile) made the answer no, and the accepted request was never announced.
    It is announced when the station holds the request's ``Requested``."""
    from domain.services.commands import CommandService

    monkeypatch.setattr(simulator.SimulatedChargePoint, "_install_firmware", _reports_nothing)
    landed = CommandService.landed
    events = bus.subscribe(["maintenance"])
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                             charge_point=_NamesEachUpload) as cp:
            await cp.boot()

            async def written_after(self: CommandService, written: Any) -> Any:
                await cp.call(call.StatusNotification(connector_id=0, error_code="NoError",
                                                      status="Available"))
                return await landed(self, written)

            monkeypatch.setattr(CommandService, "landed", written_after)
            if kind == "FIRMWARE":
                await run(central, "updateFirmware", {
                    "cpId": "CP-1", "location": "https://fw.example.com/2.0.bin",
                    "retrieveDate": datetime.now(UTC).isoformat()}, "accepted")
                shown = (await firmware(central))["firmwareStatus"]
            else:
                await run(central, "getDiagnostics", {
                    "cpId": "CP-1", "location": "https://diag.example.com/up"}, "fileName")
                shown = (await diagnostics(central))["diagnosticsStatus"]
            assert shown == "REQUESTED"
            announced = await next_maintenance(events)
    finally:
        await events.aclose()
    assert (announced.kind, announced.status) == (kind, "Requested")


@pytest.mark.parametrize(("kind", "report"), [("FIRMWARE", "Downloading"),
                                              ("DIAGNOSTICS", "Uploading")])
async def test_a_report_landing_before_the_requested_write_leaves_no_entry_of_it(
        central: Central, monkeypatch: pytest.MonkeyPatch, kind: str, report: str) -> None:
    """QA (firmware_phantom): a charger reports Downloading (Uploading) right after it
    accepts, and the report was written after the answer's ``Requested`` was decided on
    the station as read and before that was written: the guarded write was skipped,
    its audit entry written anyway (``Installed → Requested`` of a station that never
    read Requested; the charger's entry after it began from another version). The
    station's entries chain: one of the charger's report, then one of the operator's
    recording the request beside it, and nothing announces a ``Requested``."""
    monkeypatch.setattr(simulator.SimulatedChargePoint, "_install_firmware", _reports_nothing)
    monkeypatch.setattr(simulator.SimulatedChargePoint, "_upload_diagnostics",
                        _reports_nothing)
    field = "firmware_status" if kind == "FIRMWARE" else "diagnostics_status"
    commit = CommandService.commit
    published: list[Any] = []
    central.services.commands.ctx.published.append(published.append)
    station_id = central.stations["CP-1"].id
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        raced: list[bool] = []

        async def report_first(self: CommandService, viewer: Viewer,
                               changes: Any, *args: Any, **kwargs: Any) -> None:
            if not raced and any(getattr(c.record, field, None) == "Requested"
                                 for c, _ in changes):
                raced.append(True)  # decided; the charger's report is written first
                notification = call.FirmwareStatusNotification(status=report) \
                    if kind == "FIRMWARE" else call.DiagnosticsStatusNotification(status=report)
                await cp.call(notification)
            await commit(self, viewer, changes, *args, **kwargs)

        monkeypatch.setattr(CommandService, "commit", report_first)
        if kind == "FIRMWARE":
            await run(central, "updateFirmware", {
                "cpId": "CP-1", "location": "https://fw.example.com/2.0.bin",
                "retrieveDate": datetime.now(UTC).isoformat()}, "accepted")
        else:
            await run(central, "getDiagnostics", {
                "cpId": "CP-1", "location": "https://diag.example.com/up"}, "fileName")
    assert raced
    [stored] = await central.store.get_many(d.Station, [station_id])
    assert stored is not None and getattr(stored, field) == report
    assert (stored.firmware_location if kind == "FIRMWARE"
            else stored.diagnostics_file_name) is not None  # the request, beside it
    entries = await central.store.find_all(d.AuditEntry, all_of(
        Eq("entity_id", station_id), Eq("action", d.AuditAction.UPDATE)),
        [Sort("at"), Sort("id")])
    changed = [e for e in entries if e.before is not None and e.after is not None
               and e.before.get(field) != e.after.get(field)]
    assert [(e.actor, e.after[field]) for e in changed] == [  # type: ignore[index]
        ("ocpp:CP-1", report)]
    assert entries[-1].actor == central.users["op"].id
    assert entries[-1].after == {**entries[-1].after, field: report}  # type: ignore[dict-item]
    for previous, entry in itertools.pairwise(entries):
        assert entry.before == previous.after
    # The last entry is the station's version stored (telemetry since is no version).
    assert entries[-1].after["updated_at"] == rfc3339(stored.updated_at)  # type: ignore[index]
    assert [e.status for e in published if isinstance(e, MaintenanceStatusChanged)] == [
        report]


@pytest.mark.parametrize(("kind", "reports"), [("FIRMWARE", ("Downloading", "Downloaded")),
                                               ("DIAGNOSTICS", ("Uploading", "Uploaded"))])
async def test_a_report_landing_before_the_request_is_recorded_beside_one_chains(
        central: Central, monkeypatch: pytest.MonkeyPatch, kind: str,
        reports: tuple[str, str]) -> None:
    """Review r2: the charger's first report lands before the answer's ``Requested``
    (above), and its second between ``_announce_requested``'s read of the station and
    its write recording the request beside the first. That write was guarded on the
    request time only, so it landed on the second report's version with the stamps and
    images of the read before it: the operator's entry ended in the first report, the
    charger's next began from the version before the operator's, and the station's
    ``updated_at`` went back. Pins: it is written onto the version read only, and read
    and written again on the newer one, so the entries chain and the last is the
    station as stored."""
    monkeypatch.setattr(simulator.SimulatedChargePoint, "_install_firmware", _reports_nothing)
    monkeypatch.setattr(simulator.SimulatedChargePoint, "_upload_diagnostics",
                        _reports_nothing)
    field = "firmware_status" if kind == "FIRMWARE" else "diagnostics_status"
    beside = "firmware_location" if kind == "FIRMWARE" else "diagnostics_file_name"
    commit = CommandService.commit
    station_id = central.stations["CP-1"].id

    def notification(status: str) -> Any:
        return call.FirmwareStatusNotification(status=status) if kind == "FIRMWARE" \
            else call.DiagnosticsStatusNotification(status=status)

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        sent: list[str] = []

        async def reports_between(self: CommandService, viewer: Viewer,
                                  changes: Any, *args: Any, **kwargs: Any) -> None:
            records = [c.record for c, _ in changes]
            if not sent and any(getattr(r, field, None) == "Requested" for r in records):
                sent.append(reports[0])  # lands before the Requested write
                await cp.call(notification(reports[0]))
            elif sent == [reports[0]] and any(getattr(r, field, None) == reports[0]
                                              and getattr(r, beside, None)
                                              for r in records):
                sent.append(reports[1])  # lands before the request recorded beside
                await cp.call(notification(reports[1]))
            await commit(self, viewer, changes, *args, **kwargs)

        monkeypatch.setattr(CommandService, "commit", reports_between)
        if kind == "FIRMWARE":
            await run(central, "updateFirmware", {
                "cpId": "CP-1", "location": "https://fw.example.com/2.0.bin",
                "retrieveDate": datetime.now(UTC).isoformat()}, "accepted")
        else:
            await run(central, "getDiagnostics", {
                "cpId": "CP-1", "location": "https://diag.example.com/up"}, "fileName")
    assert sent == list(reports)
    [stored] = await central.store.get_many(d.Station, [station_id])
    assert stored is not None and getattr(stored, field) == reports[1]
    assert getattr(stored, beside) is not None  # the request, beside the reports
    entries = await central.store.find_all(d.AuditEntry, all_of(
        Eq("entity_id", station_id), Eq("action", d.AuditAction.UPDATE)),
        [Sort("at"), Sort("id")])
    for previous, entry in itertools.pairwise(entries):
        assert entry.before == previous.after
    last = entries[-1]
    assert last.actor == central.users["op"].id  # recorded onto the second report
    assert last.after is not None and last.after[field] == reports[1]
    assert last.after["updated_at"] == rfc3339(stored.updated_at)  # never went back


async def test_a_chargers_configuration_is_shown_while_it_is_offline(
        central: Central, bus: MemoryEventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """``getConfiguration`` was live only: with the charger offline an operator saw
    nothing. Every answer is kept (readonly flag, value, when read), and so is every
    change the charger took (Accepted: the value; RebootRequired: until it boots again);
    a key the charger says it does not know is forgotten. Secrets are never kept nor
    shown (AuthorizationKey, a vendor's password). Drivers and other companies see none
    of it."""
    commands = bus.subscribe(["command"])
    base = {"cpId": "CP-1"}
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            # A charger that reads its password back, and a vendor's secret key.
            cp.configuration["AuthorizationKey"] = ("0123456789abcdef", False)
            cp.configuration["BackendPassword"] = ("hunter22", False)
            live = await run(central, "getConfiguration", base,
                             "configurationKey { key value masked readAt } unknownKey")
            by_key = {k["key"]: k for k in live["configurationKey"]}
            assert by_key["AuthorizationKey"] == {**by_key["AuthorizationKey"],
                                                  "value": None, "masked": True}
            assert by_key["BackendPassword"]["value"] is None
            assert by_key["HeartbeatInterval"] == {**by_key["HeartbeatInterval"],
                                                   "value": "300", "masked": False}
            completed = await _completed(commands, "GetConfiguration")
            assert "0123456789abcdef" not in str(completed.result)
            assert "hunter22" not in str(completed.result)
            # Changes it took: one now, one from its next boot; a refusal is not kept.
            monkeypatch.setattr(simulator, "REBOOT_KEYS", frozenset({"WebSocketPingInterval"}))
            for key, value, status in (("HeartbeatInterval", "900", "ACCEPTED"),
                                       ("WebSocketPingInterval", "30", "REBOOT_REQUIRED"),
                                       ("NumberOfConnectors", "9", "REJECTED")):
                changed = await run(central, "changeConfiguration",
                                    {**base, "key": key, "value": value})
                assert changed["status"] == status
            del cp.configuration["LocalAuthListEnabled"]  # gone with a firmware update
            forgot = await run(central, "getConfiguration",
                               {**base, "key": ["LocalAuthListEnabled"]}, "unknownKey")
            assert forgot["unknownKey"] == ["LocalAuthListEnabled"]
        await until(lambda: _offline(central))
        offline = (await central.gql(CONFIGURATION, as_user="op"))["station"]
        assert offline["online"] is False
        shown = {k["key"]: k for k in offline["configuration"]}
        assert list(shown) == sorted(shown, key=str.lower)  # by key, whatever its case
        assert "LocalAuthListEnabled" not in shown
        heartbeat, ping = shown["HeartbeatInterval"], shown["WebSocketPingInterval"]
        assert (heartbeat["value"], heartbeat["rebootRequired"]) == ("900", False)
        assert (ping["value"], ping["rebootRequired"]) == ("30", True)
        assert when(heartbeat["changedAt"]) > when(heartbeat["readAt"])
        assert shown["NumberOfConnectors"] == {**shown["NumberOfConnectors"], "value": "2",
                                               "readonly": True, "changedAt": None}
        assert shown["MeterValueSampleInterval"]["readAt"] == by_key[
            "MeterValueSampleInterval"]["readAt"]
        for secret in ("AuthorizationKey", "BackendPassword"):
            assert shown[secret] == {**shown[secret], "value": None, "masked": True}
        stored = await central.store.find_all(d.ConfigurationKey, Eq("cp_id", "CP-1"))
        assert "0123456789abcdef" not in str(stored) and "hunter22" not in str(stored)
        # Visibility: as the station's private view.
        assert (await central.gql(CONFIGURATION, as_user="admin"))["station"][
            "configuration"] == offline["configuration"]
        assert (await central.gql(CONFIGURATION, as_user="driver"))["station"][
            "configuration"] == []
        assert (await central.gql(CONFIGURATION, as_user="op_other"))["station"] is None
        # Its next boot applied the change that waited for it.
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            rebooted = (await central.gql(CONFIGURATION, as_user="op"))["station"]
        assert {k["key"]: k["rebootRequired"] for k in rebooted["configuration"]}[
            "WebSocketPingInterval"] is False
    finally:
        await commands.aclose()


#: Secret keys as vendors name them (QA s23: the first three were shown and audited in
#: clear), each with its value.
VENDOR_SECRETS = {"MqttPwd": "mqtt-hunter2", "ApiToken": "tok-8f2a9c", "WifiPSK": "psk-wifi-77",
                  "Modem_Passphrase": "modem-pass-1", "CloudApiKey": "api-key-0x1f",
                  "TlsPrivateKey": "-----BEGIN-PK-----", "MQTT_PASSWORD": "mqtt-pass-2",
                  "BackendCredentials": "cred-user:pw", "OcppSecret": "ocpp-secret-9"}
#: Standard OCPP 1.6 keys (core, smart charging, local list, security whitepaper, ISO
#: 15118): none holds a secret but AuthorizationKey, and all are what operators read.
STANDARD_KEYS = (
    "AllowOfflineTxForUnknownId", "AuthorizationCacheEnabled", "AuthorizeRemoteTxRequests",
    "BlinkRepeat", "ClockAlignedDataInterval", "ConnectionTimeOut", "ConnectorPhaseRotation",
    "GetConfigurationMaxKeys", "HeartbeatInterval", "LightIntensity",
    "LocalAuthorizeOffline", "LocalPreAuthorize", "MaxEnergyOnInvalidId",
    "MeterValuesAlignedData", "MeterValuesSampledData", "MeterValueSampleInterval",
    "MinimumStatusDuration", "NumberOfConnectors", "ResetRetries",
    "StopTransactionOnEVSideDisconnect", "StopTransactionOnInvalidId", "StopTxnAlignedData",
    "StopTxnSampledData", "SupportedFeatureProfiles", "TransactionMessageAttempts",
    "TransactionMessageRetryInterval", "UnlockConnectorOnEVSideDisconnect",
    "WebSocketPingInterval", "LocalAuthListEnabled", "LocalAuthListMaxLength",
    "SendLocalListMaxLength", "ReserveConnectorZeroSupported", "ChargeProfileMaxStackLevel",
    "ChargingScheduleAllowedChargingRateUnit", "ChargingScheduleMaxPeriods",
    "ConnectorSwitch3to1PhaseSupported", "MaxChargingProfilesInstalled",
    "AdditionalRootCertificateCheck", "CertificateSignedMaxChainSize",
    "CertificateStoreMaxLength", "CpoName", "SecurityProfile",
    "CentralContractValidationAllowed", "CertSigningWaitMinimum", "CertSigningRepeatTimes",
    "ContractValidationOffline", "ISO15118PnCEnabled")


def test_vendor_secret_keys_are_secret_and_standard_keys_are_not() -> None:
    from domain.command_rules import is_secret_key

    assert [k for k in (*VENDOR_SECRETS, "AuthorizationKey", "BackendPassword", "GsmPin",
                        "wifi_psk", "AUTH_TOKEN", "CloudCredentials")
            if not is_secret_key(k)] == []
    assert [k for k in STANDARD_KEYS if is_secret_key(k)] == []
    # Review s23: settings about secrets, and words that only spell "psk" across them,
    # were hidden (their parts matched anywhere in the name).
    assert [k for k in ("IdTokenType", "RfidTokenFormat", "TokenReaderEnabled",
                        "UseHttpsKeepAlive", "LampsKeepOnMinutes", "MaxAmpsKw",
                        "CredentialsRequired", "PwdComplexityEnabled")
            if is_secret_key(k)] == []


async def test_vendor_secret_keys_are_never_shown_audited_nor_announced(
        central: Central, bus: MemoryEventBus, caplog: pytest.LogCaptureFixture) -> None:
    """QA s23: MqttPwd, ApiToken and WifiPSK were shown in clear in getConfiguration,
    Station.configuration (masked false) and the audit of a ChangeConfiguration: only
    names with password, passwd, secret or authorizationkey were secrets. Every standard
    OCPP 1.6 key is still shown. A key kept in clear before it counted as a secret is
    masked too."""
    from domain.ports import Insert
    from domain.services.base import stamp_new

    caplog.set_level(logging.DEBUG, logger="chargegraph.ocpp.wire")
    commands = bus.subscribe(["command"])
    base = {"cpId": "CP-1"}
    station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    assert station is not None
    # As an older version kept it: not a secret then, its value in clear.
    await central.store.write([Insert(stamp_new(d.ConfigurationKey(
        station_id=station.id, cp_id="CP-1", key="OldVendorPwd", value="kept-in-clear"),
        SYSTEM))], [])
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            for key, value in VENDOR_SECRETS.items():
                cp.configuration[key] = (value, False)
            for key in STANDARD_KEYS:
                cp.configuration.setdefault(key, (f"{key}-value", False))
            live = await run(central, "getConfiguration", base,
                             "configurationKey { key value masked }")
            got = {k["key"]: (k["value"], k["masked"]) for k in live["configurationKey"]}
            assert {k: got[k] for k in VENDOR_SECRETS} == {
                k: (None, True) for k in VENDOR_SECRETS}
            assert {k: got[k] for k in STANDARD_KEYS} == {
                k: (cp.configuration[k][0], False) for k in STANDARD_KEYS}
            completed = await _completed(commands, "GetConfiguration")
            announced = str(completed.result) + payload(
                "evt", "command.completed", completed.at, event_data(completed)).decode()
            assert [v for v in VENDOR_SECRETS.values() if v in announced] == []
            assert "HeartbeatInterval-value" in announced or "300" in announced
            for key, value in (("MqttPwd", "new-mqtt-pw"), ("WifiPSK", "new-wifi-psk")):
                changed = await run(central, "changeConfiguration",
                                    {**base, "key": key, "value": value})
                assert changed == {**changed, "status": "ACCEPTED", "errors": []}
                assert cp.configuration[key] == (value, False)  # the charger has it whole
                completed = await _completed(commands, "ChangeConfiguration")
        offline = (await central.gql(CONFIGURATION, as_user="op"))["station"]
        shown = {k["key"]: (k["value"], k["masked"]) for k in offline["configuration"]}
        assert {k: shown[k] for k in (*VENDOR_SECRETS, "OldVendorPwd")} == {
            k: (None, True) for k in (*VENDOR_SECRETS, "OldVendorPwd")}
        assert {k: shown[k][1] for k in STANDARD_KEYS} == dict.fromkeys(STANDARD_KEYS, False)
        assert shown["HeartbeatInterval"][0] is not None
        secrets = [*VENDOR_SECRETS.values(), "new-mqtt-pw", "new-wifi-psk"]
        stored = str(await central.store.find_all(d.ConfigurationKey, Eq("cp_id", "CP-1")))
        assert [v for v in secrets if v in stored] == []
        audit = await central.store.find_all(d.AuditEntry, Eq("action", d.AuditAction.COMMAND))
        requests = [a.after["request"] for a in audit
                    if a.after and a.after["request"].get("key") in ("MqttPwd", "WifiPSK")]
        assert len(requests) == 4 and {r["value"] for r in requests} == {"[hidden]"}
        assert [v for v in secrets if v in str([a.after for a in audit])] == []
        logged = str([r.getMessage() for r in caplog.records])
        assert [v for v in secrets if v in logged] == []
    finally:
        await commands.aclose()


async def test_a_change_waiting_for_its_reboot_is_not_lost_to_a_read(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA s22: after a change answered RebootRequired, a read (the charger answering the
    value still in force) replaced the value set and kept the pending flag on the old
    one; after the boot the old value read as the one in force, while the charger ran
    the new one. A read of another value leaves a change waiting for its boot as it is
    (whole reads too); a read giving the value set is recorded and the key still waits
    (only a boot says it is in force); a second change replaces the first, a refusal
    does not; after the boot the value set is shown, and a read after it decides."""
    monkeypatch.setattr(simulator, "REBOOT_KEYS", frozenset({"WebSocketPingInterval"}))
    base, key = {"cpId": "CP-1"}, "WebSocketPingInterval"

    async def shown() -> dict[str, Any]:
        station = (await central.gql(CONFIGURATION, as_user="op"))["station"]
        return {k["key"]: k for k in station["configuration"]}[key]  # type: ignore[no-any-return]

    async def change(value: str, status: str) -> None:
        answer = await run(central, "changeConfiguration", {**base, "key": key,
                                                            "value": value})
        assert answer["status"] == status, answer

    async def read(in_force: str, keys: list[str] | None) -> None:
        cp.configuration[key] = (in_force, False)  # what the charger runs now
        answer = await run(central, "getConfiguration", {**base, "key": keys},
                           "configurationKey { key value }")
        assert {k["key"]: k["value"] for k in answer["configurationKey"]}[key] == in_force

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await read("60", [key])
        await change("120", "REBOOT_REQUIRED")
        pending = await shown()
        assert (pending["value"], pending["rebootRequired"]) == ("120", True)
        for keys in ([key], None):  # the value in force until the boot, of one key or all
            await read("60", keys)
            assert await shown() == pending
        await read("120", [key])  # a charger reporting the value it stored
        stored = await shown()
        assert (stored["value"], stored["rebootRequired"]) == ("120", True)
        assert when(stored["readAt"]) > when(stored["changedAt"])
        await change("150", "REBOOT_REQUIRED")  # a second change before the boot
        cp.configuration[key] = ("60", True)  # the charger refuses the next one
        await change("90", "REJECTED")
        await read("60", None)
        again = await shown()
        assert (again["value"], again["rebootRequired"]) == ("150", True)
        await cp.boot()
        booted = await shown()
        assert (booted["value"], booted["rebootRequired"]) == ("150", False)
        await read("60", [key])  # it did not take it after all: a read after the boot
        assert (await shown())["value"] == "60"


async def test_a_key_is_one_whatever_its_case_and_leaves_with_its_station(
        central: Central) -> None:
    """OCPP keys are CiStrings: a change spelled otherwise than the charger's answer is
    the same key. A removed station's configuration goes with it (its cpId may be given
    to a new station, whose charger is another)."""
    station = central.stations["CP-1"]
    store = central.store
    for key, value in (("HeartbeatInterval", "300"), ("heartbeatinterval", "600")):
        now = datetime.now(UTC)
        await record_change(store, station, key, value, "Accepted", SYSTEM, now,
                            sent_at=now)
    [kept] = await store.find_all(d.ConfigurationKey, Eq("station_id", station.id))
    assert (kept.key, kept.value) == ("HeartbeatInterval", "600")
    await central.services.stations.remove_station(Viewer.of(central.users["admin"]),
                                                   station.id)
    assert await store.find_all(d.ConfigurationKey, Eq("station_id", station.id)) == []


async def test_a_charger_with_more_keys_than_kept_keeps_the_first_and_says_so(
        central: Central) -> None:
    """QA s18: a charger answering with more than MAX_KEYS keys had them all stored,
    Station.configuration showed 2,000 with no sign of the others, and its next answer was
    not recorded at all (the keys past the 2,000 read back were inserted again: a unique
    violation lost the whole read, the mutation still without errors). The first
    MAX_KEYS by key are kept, every answer updates them, and ``configurationTruncated``
    says keys are left out until a read of every key fits."""
    base = {"cpId": "CP-1"}
    vendor = [f"Vendor.Key{i:05d}" for i in range(MAX_KEYS + 100)]

    async def read(suffix: str, key: list[str] | None = None) -> None:
        for name in vendor:
            if name in cp.configuration:
                cp.configuration[name] = (f"{name}-{suffix}", False)
        answer = await run(central, "getConfiguration", {**base, "key": key},
                           "configurationKey { key }")
        assert answer["errors"] == []

    async def shown() -> tuple[bool, dict[str, str]]:
        station = (await central.gql(KEPT, as_user="op"))["station"]
        return station["configurationTruncated"], {
            k["key"]: k["value"] for k in station["configuration"]}

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        cp.configuration.update(dict.fromkeys(vendor, ("", False)))
        everything = sorted(cp.configuration, key=str.lower)
        await read("first")
        truncated, first = await shown()
        assert truncated is True
        assert list(first) == everything[:MAX_KEYS]  # by key: WebSocketPingInterval is out
        assert first["Vendor.Key00000"] == "Vendor.Key00000-first"
        stored = await central.store.count(d.ConfigurationKey, Eq("cp_id", "CP-1"))
        assert stored == MAX_KEYS
        # The next answer, with other values, is recorded: every kept key updated.
        await read("second")
        truncated, second = await shown()
        assert truncated is True and list(second) == list(first)
        assert all(value.endswith("-second") for key, value in second.items()
                   if key.startswith("Vendor."))
        # A read of some keys says nothing of the others: still cut off.
        await read("third", ["HeartbeatInterval"])
        assert (await shown())[0] is True
        # A change of a key past the cap is not kept; one of a kept key is.
        for key in ("WebSocketPingInterval", "HeartbeatInterval"):
            changed = await run(central, "changeConfiguration",
                                {**base, "key": key, "value": "45"})
            assert changed["errors"] == []
        truncated, changed_keys = await shown()
        assert truncated is True and list(changed_keys) == list(first)
        assert changed_keys["HeartbeatInterval"] == "45"
        # Fewer keys after a firmware update: a read of every key that fits clears it.
        for name in set(cp.configuration) - set(first):
            del cp.configuration[name]
        await read("fourth")
        truncated, fits = await shown()
        assert truncated is False and list(fits) == list(first)
        assert await central.store.count(d.ConfigurationKey, Eq("cp_id", "CP-1")) \
            == MAX_KEYS
    hidden = (await central.gql(KEPT, as_user="driver"))["station"]
    assert hidden == {"configurationTruncated": None, "configuration": []}


class _AnotherWriteFirst:
    """The store, where another write deletes ``victim`` just before this one's first."""

    def __init__(self, store: Store, victim: d.ConfigurationKey) -> None:
        self.store, self.victim = store, victim

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def write(self, changes: list[Change], audit: list[d.AuditEntry]) -> None:
        victim, self.victim = self.victim, None  # type: ignore[assignment]
        if victim is not None:
            await self.store.write([Delete(victim)], [])
        await self.store.write(changes, audit)


async def test_a_key_deleted_meanwhile_does_not_lose_the_read(central: Central) -> None:
    """Two answers recorded at once: one deletes a key the other updates (past the cap,
    or unknown to the charger). The later write is not lost whole: it reads the
    station's keys again."""
    station, store = central.stations["CP-1"], central.store

    def answer(*values: str) -> dict[str, Any]:
        return {"configurationKey": [{"key": key, "readonly": False, "value": value}
                                     for key, value in zip(("A", "B"), values, strict=True)]}

    await record_read(store, station, answer("1", "2"), SYSTEM, datetime.now(UTC),
                      whole=True)
    [a] = await store.find_all(d.ConfigurationKey, Eq("key", "A"))
    racing = cast(Store, _AnotherWriteFirst(store, a))
    await record_read(racing, station, answer("10", "20"), SYSTEM, datetime.now(UTC),
                      whole=True)
    kept = await store.find_all(d.ConfigurationKey, Eq("station_id", station.id))
    assert {k.key: k.value for k in kept} == {"A": "10", "B": "20"}


class _ChangeFirst:
    """The store, where a change of a key (``record_change``) lands just before a read's
    first write, after the read took the keys the station held; answered at
    ``answered`` (now by default), recorded late (another instance's)."""

    def __init__(self, store: Store, station: d.Station, key: str, value: str,
                 status: str = "RebootRequired", answered: datetime | None = None) -> None:
        self.store, self.station, self.pending = store, station, (key, value)
        self.status, self.answered = status, answered

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def write(self, changes: list[Change], audit: list[d.AuditEntry]) -> None:
        pending, self.pending = self.pending, None  # type: ignore[assignment]
        if pending is not None:
            answered = self.answered or datetime.now(UTC)
            await record_change(self.store, self.station, *pending, self.status,
                                SYSTEM, answered, sent_at=answered)
        await self.store.write(changes, audit)


async def test_a_boot_the_service_triggered_is_no_restart(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA s22 verify: a TriggerMessage for a BootNotification (the charger sends one
    without restarting) ended a change's wait for its reboot, and a read after it put
    the old value back as the one in force. A boot answering our trigger keeps the
    charger's last boot time; the next one, unasked, is a restart."""
    monkeypatch.setattr(simulator, "REBOOT_KEYS", frozenset({"WebSocketPingInterval"}))
    base, key = {"cpId": "CP-1"}, "WebSocketPingInterval"
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        [first] = await central.store.get_many(d.Station, [central.stations["CP-1"].id])
        assert first is not None and first.booted_at is not None
        changed = await run(central, "changeConfiguration", {**base, "key": key,
                                                             "value": "120"})
        assert changed["status"] == "REBOOT_REQUIRED"
        triggered = await run(central, "triggerMessage",
                              {**base, "requestedMessage": "BOOT_NOTIFICATION"})
        assert triggered["status"] == "ACCEPTED", triggered

        async def rebooted() -> bool:
            [now] = await central.store.get_many(d.Station, [first.id])
            return now is not None and now.last_seen is not None \
                and now.last_seen > first.booted_at  # type: ignore[operator]

        await until(rebooted)
        await settle()
        [after] = await central.store.get_many(d.Station, [first.id])
        assert after is not None and after.booted_at == first.booted_at
        cp.configuration[key] = ("60", False)  # what it runs until it restarts
        await run(central, "getConfiguration", {**base, "key": [key]},
                  "configurationKey { key value }")
        station = (await central.gql(CONFIGURATION, as_user="op"))["station"]
        shown = {k["key"]: k for k in station["configuration"]}[key]
        assert (shown["value"], shown["rebootRequired"]) == ("120", True)
        await cp.boot()  # unasked: a restart
        [last] = await central.store.get_many(d.Station, [first.id])
        assert last is not None and last.booted_at is not None \
            and last.booted_at > first.booted_at


async def test_a_read_does_not_overwrite_a_change_recorded_meanwhile(central: Central
                                                                       ) -> None:
    """A read answered with the value in force, recorded while a change answered
    RebootRequired lands between the read taking the station's keys and writing them:
    its old value landed on the change's pending flag, the QA s22 defect by a race."""
    station, store = central.stations["CP-1"], central.store
    answer = {"configurationKey": [{"key": "WebSocketPingInterval", "readonly": False,
                                    "value": "60"}]}
    await record_read(store, station, answer, SYSTEM, datetime.now(UTC), whole=False)
    racing = cast(Store, _ChangeFirst(store, station, "WebSocketPingInterval", "120"))
    await record_read(racing, station, answer, SYSTEM, datetime.now(UTC), whole=False)
    [kept] = await store.find_all(d.ConfigurationKey, Eq("station_id", station.id))
    assert (kept.value, kept.reboot_required) == ("120", True)


async def test_a_read_does_not_overwrite_an_accepted_change_recorded_after_it(
        central: Central) -> None:
    """Review s22: the read, made again on the keys as they are after meeting the change,
    wrote its older value over a change the charger accepted after answering it."""
    station, store = central.stations["CP-1"], central.store
    answer = {"configurationKey": [{"key": "WebSocketPingInterval", "readonly": False,
                                    "value": "60"}]}
    read_at = datetime.now(UTC)
    await record_read(store, station, answer, SYSTEM, read_at, whole=False)
    racing = cast(Store, _ChangeFirst(store, station, "WebSocketPingInterval", "120",
                                      "Accepted"))
    await record_read(racing, station, answer, SYSTEM, read_at, whole=False)
    [kept] = await store.find_all(d.ConfigurationKey, Eq("station_id", station.id))
    assert (kept.value, kept.reboot_required) == ("120", False)


async def test_a_change_recorded_meanwhile_is_the_value_a_reboot_required_one_keeps_in_force(
        central: Central) -> None:
    """Two instances record two changes of a key at once: an Accepted 5 -> 4, answered
    before the RebootRequired 4 -> 3 was sent, lands between the RebootRequired taking
    the key and writing it. The value in force until the boot is 4 (the Accepted one
    took effect at once), not the 5 it read (review s26: the write was not guarded, and
    a list limit kept a stale one)."""
    station, store = central.stations["CP-1"], central.store
    key = "LocalAuthListMaxLength"
    sent = datetime.now(UTC)
    answer = {"configurationKey": [{"key": key, "readonly": False, "value": "5"}]}
    await record_read(store, station, answer, SYSTEM, sent - timedelta(seconds=1),
                      whole=False)
    racing = cast(Store, _ChangeFirst(store, station, key, "4", "Accepted",
                                      answered=sent - timedelta(milliseconds=100)))
    await record_change(racing, station, key, "3", "RebootRequired", SYSTEM,
                        sent + timedelta(milliseconds=100), sent_at=sent)
    [kept] = await store.find_all(d.ConfigurationKey, Eq("station_id", station.id))
    assert (kept.value, kept.reboot_required, kept.value_in_force) == ("3", True, "4")


class _ReadFirst:
    """The store, where a GetConfiguration of a key answered after the charger took a
    change of it (giving the value set, as many chargers and the simulator do) is
    recorded just before the change's first write."""

    def __init__(self, store: Store, station: d.Station, key: str, value: str) -> None:
        self.store, self.station, self.pending = store, station, (key, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def write(self, changes: list[Change], audit: list[d.AuditEntry]) -> None:
        pending, self.pending = self.pending, None  # type: ignore[assignment]
        if pending is not None:
            key, value = pending
            answer = {"configurationKey": [{"key": key, "readonly": False,
                                            "value": value}]}
            await record_read(self.store, self.station, answer, SYSTEM, datetime.now(UTC),
                              whole=False)
        await self.store.write(changes, audit)


async def test_a_read_recorded_meanwhile_is_not_the_value_a_reboot_required_change_keeps(
        central: Central) -> None:
    """A RebootRequired 5 -> 2 of a key read as 5 (the read before the change): another
    request's read of it, answered after the charger took the change, gives 2 (the value
    set) and lands between the change taking the key and writing it. The charger runs
    with 5 until its boot (review r26: the change's write, guarded on any write, was
    made again on the read, and kept 2 as the value in force)."""
    station, store = central.stations["CP-1"], central.store
    key = "LocalAuthListMaxLength"
    answer = {"configurationKey": [{"key": key, "readonly": False, "value": "5"}]}
    sent = datetime.now(UTC)
    await record_read(store, station, answer, SYSTEM, sent - timedelta(seconds=1),
                      whole=False)
    racing = cast(Store, _ReadFirst(store, station, key, "2"))
    await record_change(racing, station, key, "2", "RebootRequired", SYSTEM,
                        datetime.now(UTC), sent_at=sent)
    [kept] = await store.find_all(d.ConfigurationKey, Eq("station_id", station.id))
    assert (kept.value, kept.reboot_required, kept.value_in_force) == ("2", True, "5")


async def test_a_read_recorded_meanwhile_is_not_kept_in_force_for_a_key_not_stored_yet(
        central: Central) -> None:
    """As the test above, but the key was not stored before the change: its read before
    the change failed (slow for its ``PRE_READ_SHARE``, or skipped while the charger is
    known not to answer), so the value in force is not known. Another request's read,
    answered after the charger took the RebootRequired 5 -> 2, gives 2 (the value set)
    and lands between the change taking the keys and writing: the change's Insert meets
    it (a unique violation) and is judged again on it. The value in force stays not
    known until the boot, and lists are not judged by it (review r26: 2 was kept in
    force, and lists of 3..5 the charger takes were refused)."""
    station, store = central.stations["CP-1"], central.store
    key = "LocalAuthListMaxLength"
    sent = datetime.now(UTC)
    racing = cast(Store, _ReadFirst(store, station, key, "2"))
    await record_change(racing, station, key, "2", "RebootRequired", SYSTEM,
                        datetime.now(UTC), sent_at=sent)
    [kept] = await store.find_all(d.ConfigurationKey, Eq("station_id", station.id))
    assert (kept.value, kept.reboot_required, kept.value_in_force) == ("2", True, None)
    limits = await central.services.commands.list_limits(station)
    assert limits.holds is None, limits


@pytest.mark.parametrize("read_after_ms", [50, 150])  # before the change's answer, after
async def test_a_read_recorded_after_the_send_before_the_change_is_not_kept_in_force(
        central: Central, read_after_ms: int) -> None:
    """A read answered after a RebootRequired 5 -> 2 was sent (the charger may have
    taken it: the read gives 2, the value set) is recorded just before the change's
    record starts, not inside it: it is never the value in force, whether it was
    answered before the change's answer or after (review r26: 2 was kept in force)."""
    station, store = central.stations["CP-1"], central.store
    key = "LocalAuthListMaxLength"
    sent = datetime.now(UTC)
    answer = {"configurationKey": [{"key": key, "readonly": False, "value": "2"}]}
    await record_read(store, station, answer, SYSTEM,
                      sent + timedelta(milliseconds=read_after_ms), whole=False)
    await record_change(store, station, key, "2", "RebootRequired", SYSTEM,
                        sent + timedelta(milliseconds=100), sent_at=sent)
    [kept] = await store.find_all(d.ConfigurationKey, Eq("station_id", station.id))
    assert (kept.value, kept.reboot_required, kept.value_in_force) == ("2", True, None)


async def test_a_read_answered_after_a_boot_decides_whatever_the_station_sent_with(
        central: Central) -> None:
    """The station a read was sent with may predate a boot its answer came after: the
    boot is read as stored, so the answer (the value in force after it) is recorded."""
    station, store = central.stations["CP-1"], central.store  # as seeded: never booted
    now = datetime.now(UTC)
    await record_change(store, station, "WebSocketPingInterval", "120", "RebootRequired",
                        SYSTEM, now, sent_at=now)
    [current] = await store.get_many(d.Station, [station.id])
    assert current is not None
    await store.write([touch(current, booted_at=datetime.now(UTC))], [])
    answer = {"configurationKey": [{"key": "WebSocketPingInterval", "readonly": False,
                                    "value": "60"}]}
    await record_read(store, station, answer, SYSTEM, datetime.now(UTC), whole=False)
    [kept] = await store.find_all(d.ConfigurationKey, Eq("station_id", station.id))
    assert kept.value == "60"


async def _completed(events: AsyncIterator[Any], action: str) -> CommandCompleted:
    while True:
        got = await asyncio.wait_for(anext(events), 5)
        if isinstance(got, CommandCompleted) and got.action == action:
            return got


async def _offline(central: Central) -> bool:
    station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    return station is not None and not station.online


# Requested recorded while other writes race it (``_announce_requested``, review s23):
# the loop ends, and an older request's answer never overwrites a newer one's.
RACE_NOW = datetime.now(UTC).isoformat()


class _AcceptingCharger:
    """Accepts every command; ``before_answer`` runs while the answer is on its way."""

    def __init__(self) -> None:
        self.before_answer: Callable[[], Awaitable[None]] | None = None

    def is_connected(self, cp_id: str, newest: int | None = None) -> bool:
        return True

    def connected(self) -> list[str]:
        return []

    async def call(self, cp_id: str, action: str, payload: dict[str, Any],
                   timeout: float, newest: int | None = None) -> dict[str, Any]:
        hook, self.before_answer = self.before_answer, None
        if hook is not None:
            await hook()
        return {}


def _status0(central: Central, status: str = "Available") -> Callable[[], Awaitable[None]]:
    async def report() -> None:  # the charger's StatusNotification for connector 0
        await central.services.charging.status_notification("CP-1", 0, status, "NoError")
    return report


@pytest.mark.parametrize("status_before_answer", [True, False])
async def test_an_older_request_does_not_overwrite_the_newer_one(
        central: Central, bus: MemoryEventBus, monkeypatch: pytest.MonkeyPatch,
        status_before_answer: bool) -> None:
    """A (fw/A) is answered; B (fw/B), sent after it, is recorded first (with or without
    a connector-0 report moving the station before A's answer). A's loop takes B's
    Requested for a charger's report: it wrote A's rollout over B's, which the charger
    acts on; only onto the request it was sent after now."""
    charger = _AcceptingCharger()
    central.services.attach_gateway(charger)  # type: ignore[arg-type]
    landed = CommandService.landed
    armed = True

    async def b_meanwhile(self: CommandService, written: Any) -> Any:
        nonlocal armed
        if armed:
            armed = False
            await run(central, "updateFirmware", {"cpId": "CP-1",
                                                  "location": "https://fw.example.com/B",
                                                  "retrieveDate": RACE_NOW},
                      "accepted")
        return await landed(self, written)

    monkeypatch.setattr(CommandService, "landed", b_meanwhile)
    if status_before_answer:
        charger.before_answer = _status0(central)
    await run(central, "updateFirmware", {"cpId": "CP-1",
                                          "location": "https://fw.example.com/A",
                                          "retrieveDate": RACE_NOW},
              "accepted")
    shown = await firmware(central)
    assert shown["firmwareRollout"]["location"] == "https://fw.example.com/B", shown


async def test_announce_requested_gives_up_after_a_few_rounds(
        central: Central, bus: MemoryEventBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another write lands between each read and write of the Requested (a connector-0
    StatusNotification before each): the loop had no end, and the mutation never
    answered; it gives up after ``ANNOUNCE_ROUNDS``."""
    charger = _AcceptingCharger()
    central.services.attach_gateway(charger)  # type: ignore[arg-type]
    commit = CommandService.commit
    rounds = 0

    async def raced(self: CommandService, viewer: Any, changes: Any, *args: Any,
                    **kwargs: Any) -> Any:
        nonlocal rounds
        guarded = [c for c, _ in changes if isinstance(c, Update)
                   and isinstance(c.record, d.Station) and c.only_if
                   and c.only_if[0] == "updated_at" and not c.required]
        if guarded and rounds < 200:
            rounds += 1
            await _status0(central, "Unavailable" if rounds % 2 else "Available")()
        return await commit(self, viewer, changes, *args, **kwargs)

    monkeypatch.setattr(CommandService, "commit", raced)
    await run(central, "updateFirmware", {"cpId": "CP-1",
                                          "location": "https://fw.example.com/A",
                                          "retrieveDate": RACE_NOW},
              "accepted")
    assert rounds == 1 + ANNOUNCE_ROUNDS, f"{rounds} write attempts"
