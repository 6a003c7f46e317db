"""What an operator tells a simulated charger survives a restart of the simulator, as it
survives a real charger's reboot (OCPP 1.6: availability 5.2, local list 3.5,
configuration 5.3): kept in its state file (``simulate --state``, the demo's beside its
database). QA s30: restarted, an inoperative connector reported Available again, and the
server's record of it disagreed with the charger."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from ocpp_bridge.simulator import SimulatedChargePoint, SimulatorConfig
from ocpp_bridge.simulator_state import ChargerStates
from tests.ocpp.conftest import Central
from tests.ocpp.test_commands import run
from tests.ocpp.test_simulated_charger import (
    CP1,
    booted,
    remote_start,
    remotely_started,
    stored,
)

BASE = {"cpId": "CP-1"}
CONFIG = SimulatorConfig(plugs=CP1, meter_interval_s=0.05)
LIST = [{"idTag": "TAG-OK", "idTagInfo": {"status": "ACCEPTED"}}]


async def test_what_an_operator_told_a_charger_is_kept_across_its_restart(
        central: Central, tmp_path: Path) -> None:
    path = tmp_path / "chargers.json"
    async with booted(central, CONFIG, ChargerStates(path)):
        told = [
            await run(central, "changeAvailability",
                      {**BASE, "connectorId": 2, "type": "INOPERATIVE"}),
            await run(central, "changeConfiguration",
                      {**BASE, "key": "HeartbeatInterval", "value": "120"}),
            await run(central, "changeConfiguration",
                      {**BASE, "key": "WebSocketPingInterval", "value": "30"}),
            await run(central, "sendLocalList", {**BASE, "listVersion": 4,
                                                 "updateType": "FULL",
                                                 "localAuthorizationList": LIST})]
        assert [t["status"] for t in told] == [
            "ACCEPTED", "ACCEPTED", "REBOOT_REQUIRED", "ACCEPTED"], told
        await stored(central, 2, d.ConnectorStatus.UNAVAILABLE)
    # Switched off and on: the simulator starts again from its file.
    async with booted(central, CONFIG, ChargerStates(path)) as cp:
        assert (cp.statuses(0), cp.statuses(1), cp.statuses(2)) == (
            ["Available"], ["Available"], ["Unavailable"])
        assert "INVALID_STATE" in await remote_start(central, 2)
        assert cp.on_remote_start("TAG-OK", connector_id=2).status == "Rejected"
        keys = await run(central, "getConfiguration",
                         {**BASE, "key": ["HeartbeatInterval", "WebSocketPingInterval"]},
                         "configurationKey { key value }")
        assert keys["configurationKey"] == [{"key": "HeartbeatInterval", "value": "120"},
                                            {"key": "WebSocketPingInterval", "value": "30"}]
        assert cp.in_force("WebSocketPingInterval") == "30"  # rebooted since
        version = await run(central, "getLocalListVersion", BASE, "listVersion")
        assert version["listVersion"] == 4
        assert cp.local_list == {"TAG-OK": {"status": "Accepted"}}
        await stored(central, 2, d.ConnectorStatus.UNAVAILABLE)


async def test_a_scheduled_change_is_kept_as_made_and_operative_again_is_kept_too(
        central: Central, tmp_path: Path) -> None:
    """The charger inoperative while a plug charges answers Scheduled; switched off before
    the transaction ended, it ends with the reboot: the charger starts Unavailable."""
    path = tmp_path / "chargers.json"
    async with booted(central, CONFIG, ChargerStates(path)) as cp:
        await remotely_started(central, cp)
        answer = await run(central, "changeAvailability",
                           {**BASE, "connectorId": 0, "type": "INOPERATIVE"})
        assert answer["status"] == "SCHEDULED"
        assert cp.available and cp.connectors[1].available  # charging on
    async with booted(central, CONFIG, ChargerStates(path)) as cp:
        assert [cp.statuses(i) for i in (0, 1, 2)] == [["Unavailable"]] * 3
        # (The server still has the transaction it was not told the end of.)
        assert cp.on_remote_start("TAG-OTHER", connector_id=1).status == "Rejected"
        answer = await run(central, "changeAvailability",
                           {**BASE, "connectorId": 0, "type": "OPERATIVE"})
        assert answer["status"] == "ACCEPTED"
    async with booted(central, CONFIG, ChargerStates(path)) as cp:
        assert [cp.statuses(i) for i in (0, 1, 2)] == [["Available"]] * 3


async def test_the_file_is_written_whole_and_a_missing_one_is_a_fresh_charger(
        tmp_path: Path) -> None:
    path = tmp_path / "chargers.json"
    cp = SimulatedChargePoint("CP-X", None, states=ChargerStates(path))
    assert cp.kept()["connectors"] == {"1": {"available": True}, "2": {"available": True}}
    assert not path.exists()  # told nothing: nothing written
    assert cp.on_change_availability(1, "Inoperative").status == "Accepted"
    assert cp.on_change_configuration("ConnectionTimeOut", "90").status == "Accepted"
    assert cp.on_change_configuration("Bogus", "1").status == "NotSupported"
    kept = json.loads(path.read_text())
    assert kept["CP-X"]["connectors"]["1"] == {"available": False}
    assert kept["CP-X"]["configuration"] == {"ConnectionTimeOut": "90"}
    assert os.listdir(tmp_path) == ["chargers.json"]  # no temporary left
    other = SimulatedChargePoint("CP-Y", None, states=ChargerStates(path))
    assert other.connectors[1].available  # another charger's is not its own


@pytest.mark.parametrize("content", [
    "{not json", "\xff\xfe", "[1, 2]",
    json.dumps({"CP-X": {"available": "false"}}),  # not a boolean: no half state
    json.dumps({"CP-X": {"connectors": {"one": {"available": False}}}}),
    json.dumps({"CP-X": {"local_list_version": "v2"}})])
async def test_an_unreadable_file_is_logged_and_ignored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str) -> None:
    path = tmp_path / "chargers.json"
    path.write_bytes(content.encode("latin-1"))
    with caplog.at_level(logging.WARNING, "chargegraph.simulator"):
        cp = SimulatedChargePoint("CP-X", None, states=ChargerStates(path))
    assert "ignoring" in caplog.text
    assert cp.available and cp.connectors[1].available and cp.local_list_version == 0
    assert cp.on_change_availability(2, "Inoperative").status == "Accepted"
    assert json.loads(path.read_text())["CP-X"]["connectors"]["2"] == {"available": False}


def test_kept_values_are_taken_as_a_change_would_be(tmp_path: Path) -> None:
    """A value the charger would refuse now (readonly, unknown, of the wrong kind) is not
    taken from the file; what a kept key governs follows it (the sampling interval)."""
    path = tmp_path / "chargers.json"
    kept: dict[str, Any] = {"configuration": {
        "MeterValueSampleInterval": "7", "NumberOfConnectors": "9", "Bogus": "x",
        "HeartbeatInterval": "soon"}, "firmware": "2.1.0"}
    path.write_text(json.dumps({"CP-X": kept}))
    cp = SimulatedChargePoint("CP-X", None, SimulatorConfig(connectors=3),
                              states=ChargerStates(path))
    assert cp.config.meter_interval_s == 7 and cp.config.firmware == "2.1.0"
    assert cp.configuration["NumberOfConnectors"][0] == "3"
    assert cp.configuration["HeartbeatInterval"][0] == "300"
    assert "Bogus" not in cp.configuration


def test_a_fresh_start_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "chargers.json"
    path.write_text(json.dumps({"CP-X": {"available": False}}))
    cp = SimulatedChargePoint("CP-X", None, states=ChargerStates(path, fresh=True))
    assert cp.available and not path.exists()
