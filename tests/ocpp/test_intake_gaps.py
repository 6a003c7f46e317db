"""OCPP intake gaps (QA s28), end to end with the ``ocpp`` package's charge point
(``ocpp_bridge.simulator``) over a real websocket: a frame starting with a UTF-8 BOM, a
resend of a closed session's StartTransaction, what the audit keeps of a DataTransfer, an
updateFirmware left unanswered, and a charger connecting under its cpId in other case."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import call
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action
from websockets.exceptions import InvalidStatus

from domain import entities as d
from domain.command_rules import AUDIT_DATA_KEPT
from domain.policy import SYSTEM
from domain.ports import Update
from domain.query import ALL, Eq
from domain.services.base import books_of
from ocpp_bridge import simulator
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.ocpp.test_commands import run

BOM = "\ufeff"


class _SendsBom(simulator.SimulatedChargePoint):
    """A charger whose firmware writes each frame with a UTF-8 byte order mark first (as
    some .NET and Windows-based stacks do)."""

    async def _send(self, message: Any) -> None:
        await super()._send(BOM + message)


async def test_a_frame_starting_with_a_bom_is_read_as_the_json_after_it(
        central: Central) -> None:
    """The frame was refused as "not valid JSON" under uniqueId "-1": the charger never
    heard its boot answered (it waited out its timeout, over and over). It is read as the
    JSON after the mark, answered under its own uniqueId, and the connection stays up."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         response_timeout=3, charge_point=_SendsBom) as cp:
        boot = await cp.boot()
        assert boot.status == "Accepted"
        assert (await cp.call(call.Heartbeat())).current_time


async def test_a_resent_start_of_a_closed_session_gets_the_first_answers_id_tag_info(
        central: Central) -> None:
    """The first answer carried the card's expiryDate and parentIdTag; its resend, once
    the session was stopped, was told a bare Accepted, which a charger caches for good
    (no expiryDate: the card charges offline there after it is blocked) and files without
    its group. The resend is told what the first copy was."""
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    await central.services.fleet.update_id_tag(SYSTEM, central.tags["ok"].id,
                                                parent_tag="FLEET-A", expires_at=expires)
    start = call.StartTransaction(connector_id=1, id_tag="TAG-OK", meter_start=1000,
                                  timestamp=simulator.now())
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         response_timeout=5) as cp:
        await cp.boot()
        first = await cp.call(start)
        assert first.id_tag_info["status"] == "Accepted"
        assert first.id_tag_info["parent_id_tag"] == "FLEET-A"
        assert first.id_tag_info["expiry_date"]
        await cp.call(call.StopTransaction(meter_stop=2000, timestamp=simulator.now(),
                                           transaction_id=first.transaction_id))
        resent = await cp.call(start)
    assert resent.transaction_id == first.transaction_id
    assert resent.id_tag_info == first.id_tag_info


class _AnswersUpdateFirmwareLate(simulator.SimulatedChargePoint):
    """A charger that starts a rollout and answers UpdateFirmware after the central
    system's command timeout (a slow modem, a busy controller)."""

    @on(Action.update_firmware)
    async def on_update_firmware(self, location: str, retrieve_date: str, **options: Any
                                 ) -> result.UpdateFirmware:
        await asyncio.sleep(1.5)
        return result.UpdateFirmware()


FIRMWARE = """{ station(cpId: "CP-1") { firmwareStatus firmwareStatusAt
    firmwareRollout { requestedAt location retrieveDate } } }"""


async def test_an_unanswered_update_firmware_is_recorded_for_its_reports_to_settle(
        tmp_path: Path) -> None:
    """An updateFirmware the charger did not answer in time recorded no rollout: the
    station showed no firmware status at all while the charger downloaded it, and its
    Downloading came as news of nothing. The rollout is recorded as sent and unanswered
    (``Unanswered``), and the charger's next FirmwareStatusNotification settles it."""
    central = await start_central(tmp_path / "central.db", command_timeout=1)
    await seed(central)
    fetch = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    try:
        async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                             charge_point=_AnswersUpdateFirmwareLate) as cp:
            await cp.boot()
            answer = await run(central, "updateFirmware", {
                "cpId": "CP-1", "location": "https://fw:pw@fw.example.com/2.0.bin",
                "retrieveDate": fetch.isoformat()}, "accepted errors { code }")
            assert answer["accepted"] is False
            assert [e["code"] for e in answer["errors"]] == ["CHARGER_TIMEOUT"]
            unanswered = (await central.gql(FIRMWARE, as_user="op"))["station"]
            rollout = unanswered["firmwareRollout"]
            assert unanswered["firmwareStatus"] == "UNANSWERED"
            assert rollout["location"] == "https://[hidden]@fw.example.com/2.0.bin"
            assert datetime.fromisoformat(rollout["retrieveDate"]) == fetch
            await cp.call(call.FirmwareStatusNotification(status="Downloading"))
            settled = (await central.gql(FIRMWARE, as_user="op"))["station"]
            assert settled["firmwareStatus"] == "DOWNLOADING"
            assert settled["firmwareRollout"] == rollout
    finally:
        await stop_central(central)


AUDIT = """{ auditLog(first: 50, filter: {entity: "station"}) {
    nodes { action after } } }"""


async def test_the_audit_keeps_a_bounded_start_of_a_data_transfers_data(
        central: Central) -> None:
    """A dataTransfer's ``data`` (up to the API's 1 MB body) was kept whole in both of its
    audit entries, for good, read by every operator and in every audit export. The
    charger gets it whole; the audit keeps its start (``AUDIT_DATA_KEPT`` characters),
    its length and digest (what support matches a charger's log against), and the
    vendorId and messageId whole."""
    data = "cfg;" + "0123456789abcdef" * 12_500  # 200,004 characters
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        answer = await run(central, "dataTransfer", {
            "cpId": "CP-1", "vendorId": simulator.VENDOR, "messageId": "SetCfg",
            "data": data}, "status errors { code }")
        assert (answer["status"], answer["errors"]) == ("ACCEPTED", [])
        assert cp.received[-1] == ("DataTransfer", {"vendor_id": simulator.VENDOR,
                                                    "data": data})
    nodes = (await central.gql(AUDIT, as_user="op"))["auditLog"]["nodes"]
    kept = [n["after"] for n in nodes if n["action"] == "COMMAND"
            and n["after"]["command"] == "DataTransfer"]
    assert [k["stage"] for k in kept] == ["ANSWERED", "SENT"]
    for entry in kept:
        request = entry["request"]
        assert request["vendorId"] == simulator.VENDOR
        assert request["messageId"] == "SetCfg"
        assert request["data"] == data[:AUDIT_DATA_KEPT]
        assert request["dataLength"] == len(data)
        assert request["dataSha256"] == hashlib.sha256(data.encode()).hexdigest()
    # The charger's reply (this one echoes the data): kept in the ANSWERED entry, bounded
    # alike (QA s33: only its status was).
    assert "answer" not in kept[1]
    assert kept[0]["answer"] == {"status": "Accepted", "data": data[:AUDIT_DATA_KEPT],
                                 "dataLength": len(data),
                                 "dataSha256": hashlib.sha256(data.encode()).hexdigest()}
    # As written: the entries themselves are bounded, not only what is read of them.
    stored = await central.store.find_all(d.AuditEntry, Eq("command", "DataTransfer"))
    assert len(stored) == 2
    assert all(len(str(e.after)) < 3 * AUDIT_DATA_KEPT for e in stored)
    assert all(e.after is not None and e.after["request"]["data"] == data[:AUDIT_DATA_KEPT]
               for e in stored)


async def test_a_data_transfers_short_reply_is_kept_whole_in_its_answered_entry(
        central: Central) -> None:
    """QA s33: the charger's reply ``data`` was not in the audit, only its status."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        answer = await run(central, "dataTransfer", {
            "cpId": "CP-1", "vendorId": simulator.VENDOR, "data": "ping:7"},
            "status data errors { code }")
        assert (answer["status"], answer["data"]) == ("ACCEPTED", "ping:7")
    nodes = (await central.gql(AUDIT, as_user="op"))["auditLog"]["nodes"]
    [answered] = [n["after"] for n in nodes if n["action"] == "COMMAND"
                  and n["after"]["stage"] == "ANSWERED"]
    assert answered["answer"] == {"status": "Accepted", "data": "ping:7"}


async def test_an_older_audit_entry_of_a_data_transfer_is_read_bounded(
        central: Central) -> None:
    """Entries written whole before QA s28 are read as a new one is written."""
    station = central.stations["CP-1"]
    company_id, owner_id = books_of(station)
    data = "x" * (AUDIT_DATA_KEPT + 1)
    await central.store.write([], [d.AuditEntry(
        entity="station", entity_id=station.id, action=d.AuditAction.COMMAND,
        command="DataTransfer", actor="user:op", created_by="user:op",
        updated_by="user:op", company_id=company_id, station_owner_id=owner_id,
        after={"command": "DataTransfer", "commandId": "c1", "stage": "SENT",
               "request": {"vendorId": "V", "data": data}, "status": None,
               "error": None})])
    nodes = (await central.gql(AUDIT, as_user="op"))["auditLog"]["nodes"]
    [request] = [n["after"]["request"] for n in nodes if n["action"] == "COMMAND"]
    assert request == {"vendorId": "V", "data": data[:AUDIT_DATA_KEPT],
                       "dataLength": len(data),
                       "dataSha256": hashlib.sha256(data.encode()).hexdigest()}


async def test_a_charger_connecting_under_its_cp_id_in_other_case_is_its_station(
        central: Central) -> None:
    """OCPP 1.6 has a charge point's identity a CiString (case-insensitive), and
    installers type it as they read it off a label: a charger set up as ``cp-1`` for the
    station ``CP-1`` was refused 401 "unknown charge point" (with auto-registration, a
    second, Pending station was made). It is the station ``CP-1``, its messages booked
    there; and no station can be created whose cpId differs from another's only in
    case."""
    async with connected(central.url, "cp-1", password=STATION_PASSWORD,
                         response_timeout=5) as cp:
        assert (await cp.boot()).status == "Accepted"
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                              status="Preparing"))
        start = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=0, timestamp=simulator.now()))
        assert start.id_tag_info["status"] == "Accepted"
    session = await central.session(start.transaction_id)
    assert session is not None and session.cp_id == "CP-1"
    assert session.station_id == central.stations["CP-1"].id
    created = await central.gql("""mutation { createStation(input: {cpId: "cp-1",
        name: "again"}) { station { id } errors { field code } } }""", as_user="admin")
    assert created["createStation"] == {"station": None, "errors": [
        {"field": "cpId", "code": "DUPLICATE"}]}


async def test_stations_stored_differing_only_in_case_each_keep_their_charger(
        central: Central) -> None:
    """Two stations stored before cpIds were one whatever their case (``CP-1`` and
    ``cp-1``): each charger connecting under its own cpId is its own station's, and one
    connecting under a third spelling, which could be either, is refused as unknown
    rather than given one of them."""
    twin, _ = await central.services.stations.create_station(
        SYSTEM, cp_id="cp-twin", name="twin")
    # As migration 78 leaves such a pair: each with its own cpId's key.
    await central.store.write([Update(replace(twin, cp_id="cp-1", cp_id_key="cp-1"),
                                      frozenset({"cp_id", "cp_id_key"}))], [])
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        assert (await cp.boot()).status == "Accepted"
    async with connected(central.url, "cp-1") as cp:
        assert (await cp.boot()).status == "Accepted"
    [first, second] = [await central.store.find_one(d.Station, Eq("id", s))
                       for s in (central.stations["CP-1"].id, twin.id)]
    assert first is not None and second is not None
    assert first.booted_at is not None and second.booted_at is not None
    with pytest.raises(InvalidStatus) as refused:
        async with connected(central.url, "Cp-1", password=STATION_PASSWORD):
            pass
    assert refused.value.response.status_code == 401


async def test_auto_registration_makes_no_station_one_whatever_the_case_of_another(
        tmp_path: Path) -> None:
    """With auto-registration, ``cp-1`` for the station ``CP-1`` registered a second,
    Pending station, and two spellings of a new charger two. Each is the one station;
    a spelling of case twins stored before registers no third."""
    central = await start_central(tmp_path / "central.db", auto_register=True)
    await seed(central)
    try:
        async with connected(central.url, "cp-1", password=STATION_PASSWORD) as cp:
            assert (await cp.boot()).status == "Accepted"
        for spelling in ("new-9", "NEW-9"):
            async with connected(central.url, spelling) as cp:
                assert (await cp.boot()).status == "Pending"
        twin, _ = await central.services.stations.create_station(
            SYSTEM, cp_id="cp-twin", name="twin")
        await central.store.write([Update(replace(twin, cp_id="cp-open", cp_id_key="cp-open"),
                                          frozenset({"cp_id", "cp_id_key"}))], [])
        with pytest.raises(InvalidStatus):
            async with connected(central.url, "Cp-Open"):
                pass
        stations = await central.store.find_all(d.Station, ALL)
        assert sorted(s.cp_id for s in stations) == ["CP-1", "CP-OPEN", "cp-open", "new-9"]
    finally:
        await stop_central(central)


async def test_two_instances_register_one_station_whatever_the_case(tmp_path: Path) -> None:
    """Two spellings of one new charger's cpId arriving at two instances at once (a
    charger behind a load balancer retrying with its cpId spelt as its installer typed it
    in two places) registered two stations differing only in case: the one-at-a-time is
    per instance, and the insert was guarded by nothing but the case-sensitive unique
    index on cp_id. One station is registered; the other handshake is given it."""
    a = await start_central(tmp_path / "central.db", auto_register=True)
    await seed(a)
    b = await start_central(tmp_path / "central.db", auto_register=True)
    barrier = asyncio.Barrier(2)
    for central in (a, b):
        service = central.services.charging
        commit = service.commit

        async def in_step(actor: Any, changes: Any, *args: Any, commit: Any = commit,
                          **kwargs: Any) -> Any:
            if any(isinstance(getattr(c, "record", None), d.Station) for c, _ in changes):
                # Both instances have looked for the cpId before either writes: what two
                # handshakes arriving at the same moment on two instances do.
                await asyncio.wait_for(barrier.wait(), 2)
            return await commit(actor, changes, *args, **kwargs)

        service.commit = in_step  # type: ignore[method-assign,assignment]
    try:
        got = await asyncio.gather(
            a.services.charging.station_for_connection("new-9", "10.0.0.1"),
            b.services.charging.station_for_connection("NEW-9", "10.0.0.2"),
            return_exceptions=True)
        assert not [g for g in got if isinstance(g, BaseException)], got
        stations = await a.store.find_all(d.Station, ALL)
        twins = sorted(s.cp_id for s in stations if s.cp_id.lower() == "new-9")
        assert len(twins) == 1, twins
        # Each handshake is given that station.
        assert [s.id if isinstance(s, d.Station) else s for s in got] == \
            [stations[[s.cp_id for s in stations].index(twins[0])].id] * 2
    finally:
        await stop_central(b)
        await stop_central(a)
