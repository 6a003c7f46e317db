"""The simulated charger behaves as a real OCPP 1.6J one, against the real server over
real websockets (QA s28): it charges as its plugs are rated (a DC plug tapering as the
car's battery fills, the SoC reported), a session ends when the car is full, connector 0
is reported at boot, and commands are obeyed with their status sequences."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from ocpp.v16 import call

from domain import entities as d
from domain.query import Eq, all_of
from ocpp_bridge.simulator import (
    STANDARD_CONFIGURATION,
    Plug,
    SimulatedChargePoint,
    SimulatorConfig,
    connected,
)
from ocpp_bridge.simulator_state import ChargerStates
from tests.helpers import soon, until
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_commands import run

#: CP-1 as the tests' seed has it: a 150 kW CCS2 plug and a 22 kW Type 2.
CP1 = (Plug("DC", 150_000), Plug("AC", 22_000))


class Recording(SimulatedChargePoint):
    """Keeps what it sends: the status sequences are what a map shows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[Any] = []

    async def call(self, payload: Any, *args: Any, **kwargs: Any) -> Any:
        self.sent.append(payload)
        return await super().call(payload, *args, **kwargs)

    def statuses(self, connector_id: int) -> list[str]:
        return [p.status for p in self.sent if isinstance(p, call.StatusNotification)
                and p.connector_id == connector_id]


async def closed(central: Central, transaction_id: int | None) -> d.Session:
    """The session of ``transaction_id`` once the central system has closed it."""
    async def done() -> bool:
        found = await central.session(transaction_id or 0)
        return found is not None and found.state is d.SessionState.COMPLETED

    await until(done, attempts=200, step=0.05)
    found = await central.session(transaction_id or 0)
    assert found is not None
    return found


async def stored(central: Central, connector_id: int, status: d.ConnectorStatus) -> None:
    """Waits (bounded, 10 s) until the central system has recorded CP-1's
    ``connector_id`` as ``status``."""
    async def heard() -> bool:
        station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        assert station is not None
        connector = await central.store.find_one(d.Connector, all_of(
            Eq("station_id", station.id), Eq("connector_id", connector_id)))
        return connector is not None and connector.status is status

    await until(heard, attempts=200, step=0.05)


@asynccontextmanager
async def booted(central: Central, config: SimulatorConfig,
                 states: ChargerStates | None = None) -> AsyncIterator[Recording]:
    """CP-1 (``Recording``) connected, booted and its connectors reported (``states``:
    where it keeps what it is told, and starts from)."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD, config=config,
                         charge_point=Recording, states=states) as cp:
        assert isinstance(cp, Recording)
        await cp.boot()
        await cp.report_all()
        yield cp


@asynccontextmanager
async def charging_on_1(central: Central, firmware_step_s: float
                        ) -> AsyncIterator[tuple[Recording, int | None]]:
    """CP-1 (``Recording``, a fast meter) booted, its connectors reported, charging on
    plug 1 by a remote start: the charger and its transaction."""
    config = SimulatorConfig(plugs=CP1, meter_interval_s=0.05, firmware_step_s=firmware_step_s)
    async with booted(central, config) as cp:
        yield cp, await remotely_started(central, cp)


async def remotely_started(central: Central, cp: SimulatedChargePoint) -> int | None:
    """The transaction of a remote start on CP-1's connector 1, once its charger has it."""
    assert await remote_start(central, 1) == "ACCEPTED"
    await soon(lambda: cp.connectors[1].transaction_id is not None)
    return cp.connectors[1].transaction_id


async def remote_start(central: Central, connector_id: int) -> str:
    answer = await central.gql(
        'mutation($c: Int!) { remoteStartTransaction(input: {cpId: "CP-1", '
        'connectorId: $c, idTag: "TAG-OK"}) { status errors { code message } } }',
        {"c": connector_id}, as_user="driver")
    started = answer["remoteStartTransaction"]
    return str(started["status"] or started["errors"])


async def test_a_dc_plug_charges_at_its_rating_and_tapers_as_the_battery_fills(
        central: Central) -> None:
    """QA s28: every plug drew 60-100 % of 22 kW, the demo's 150 kW CCS2 plugs too, flat
    to the end, and an AC plug reported a SoC no AC charger can know."""
    config = SimulatorConfig(plugs=CP1, arrival_soc=(30, 30))
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         config=config) as cp:
        await cp.boot()
        cp.plug_in(1)
        tx, status = await cp.start_transaction(1, "TAG-OK")
        assert status == "Accepted"
        powers, socs = [], []
        for _ in range(200):  # a minute a step, until the car is full
            powers.append(cp.drawn_w(1))
            if not await cp.charging_step(1, 60):
                break
            socs.append(cp.connectors[1].soc)
        assert powers[0] == 150_000  # its rating at 30 %
        assert powers == sorted(powers, reverse=True) and powers[-2] < 20_000  # tapered
        assert socs == sorted(socs) and cp.connectors[1].soc == 100
        assert cp.connectors[1].status == "SuspendedEV"  # full: it draws no more
        await cp.stop_transaction(1)
    done = await central.session(tx)
    assert done is not None
    samples = await central.store.find_all(d.MeterSample, Eq("session_id", done.id))
    reported = sorted(float(s.value) for s in samples if s.measurand == "SoC")
    assert reported[0] > 30 and reported[-1] == 100


async def test_an_ac_plug_gives_what_the_car_takes_up_to_its_rating_and_no_soc(
        central: Central) -> None:
    config = SimulatorConfig(plugs=(Plug("AC", 11_000), Plug("AC", 11_000)))
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         config=config) as cp:
        await cp.boot()
        cp.plug_in(1)
        tx, _ = await cp.start_transaction(1, "TAG-OK")
        assert 7_400 <= cp.drawn_w(1) <= 11_000
        await cp.charging_step(1, 600)
        await cp.stop_transaction(1)
    done = await central.session(tx)
    assert done is not None
    samples = await central.store.find_all(d.MeterSample, Eq("session_id", done.id))
    assert samples and "SoC" not in {s.measurand for s in samples}


async def test_a_remotely_started_session_ends_when_the_car_is_full(
        central: Central) -> None:
    """QA s28: a remote start went on for ever once the car was full, drawing nothing,
    the plug Charging on the map: it now reports SuspendedEV, then its driver ends it
    (Finishing, StopTransaction, Available)."""
    config = SimulatorConfig(plugs=CP1, meter_interval_s=0.05)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD, config=config,
                         charge_point=Recording) as cp:
        assert isinstance(cp, Recording)
        await cp.boot()
        tx = await remotely_started(central, cp)
        cp.connectors[1].soc = 100.0  # the car is full
        done = await closed(central, tx)
        # Available follows the StopTransaction's answer, so it may still be on its way.
        await soon(lambda: cp.statuses(1)[-1:] == ["Available"])
        assert cp.statuses(1)[-3:] == ["SuspendedEV", "Finishing", "Available"]
    assert done.stop_reason == "Local"


async def test_a_station_reports_connector_0_at_boot(central: Central) -> None:
    """QA s28: the simulated chargers reported their connectors only, so every demo
    station's own status (``Station.status``) stayed null."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()

        async def reported() -> bool:
            station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
            return station is not None and station.status is not None

        await until(reported)
    station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    assert station is not None and station.status is d.ConnectorStatus.AVAILABLE


async def test_an_inoperative_connector_takes_no_start_and_a_scheduled_change_happens(
        central: Central) -> None:
    """QA s28: ChangeAvailability Inoperative while charging answered Scheduled and never
    changed anything; and a connector made Unavailable still took a remote start."""
    config = SimulatorConfig(plugs=CP1, meter_interval_s=0.05)
    async with booted(central, config) as cp:
        base = {"cpId": "CP-1"}
        answer = await run(central, "changeAvailability",
                           {**base, "connectorId": 2, "type": "INOPERATIVE"})
        assert answer["status"] == "ACCEPTED"
        await soon(lambda: cp.connectors[2].status == "Unavailable")
        await stored(central, 2, d.ConnectorStatus.UNAVAILABLE)  # sent is not yet heard
        # The server refuses it itself; another central system may not: the charger does.
        assert "INVALID_STATE" in await remote_start(central, 2)
        assert cp.on_remote_start("TAG-OK", connector_id=2).status == "Rejected"
        assert cp.connectors[2].transaction_id is None

        assert await remote_start(central, 1) == "ACCEPTED"
        await soon(lambda: cp.connectors[1].transaction_id is not None)
        answer = await run(central, "changeAvailability",
                           {**base, "connectorId": 1, "type": "INOPERATIVE"})
        assert answer["status"] == "SCHEDULED"
        tx = cp.connectors[1].transaction_id
        await run(central, "remoteStopTransaction", {**base, "transactionId": tx})
        await closed(central, tx)
        await soon(lambda: cp.connectors[1].status == "Unavailable")
        assert cp.statuses(1)[-2:] == ["Finishing", "Unavailable"]
        answer = await run(central, "changeAvailability",
                           {**base, "connectorId": 1, "type": "OPERATIVE"})
        assert answer["status"] == "ACCEPTED"
        await soon(lambda: cp.connectors[1].status == "Available")


async def test_reset_unlock_and_firmware_end_sessions_and_reboot_as_a_charger_does(
        central: Central) -> None:
    """QA s28: a hard reset ended sessions as SoftReset; an unlock left the car charging
    on a released cable; a firmware update stopped at Installed without the reboot, the
    station still naming its old firmware."""
    config = SimulatorConfig(plugs=CP1, meter_interval_s=0.05, firmware_step_s=0)
    async with booted(central, config) as cp:
        base = {"cpId": "CP-1"}
        reasons = []
        for command, extra in (("reset", {"type": "HARD"}),
                               ("unlockConnector", {"connectorId": 1})):
            assert await remote_start(central, 1) == "ACCEPTED"
            await soon(lambda: cp.connectors[1].transaction_id is not None)
            tx = cp.connectors[1].transaction_id
            await run(central, command, {**base, **extra})
            await soon(lambda: cp.connectors[1].transaction_id is None)
            reasons.append((await closed(central, tx)).stop_reason)
            await soon(lambda: cp.connectors[1].status == "Available")
            await asyncio.sleep(0.1)
        assert reasons == ["HardReset", "UnlockCommand"]

        boots = sum(isinstance(p, call.BootNotification) for p in cp.sent)
        answer = await run(central, "updateFirmware", {
            **base, "location": "https://fw.example.com/simcharger-2.1.0.bin",
            "retrieveDate": datetime.now(UTC).isoformat()}, "accepted")
        assert answer["accepted"] is True

        async def rebooted() -> bool:
            station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
            return station is not None and station.firmware == "2.1.0"

        await until(rebooted, attempts=200, step=0.05)
        firmware = [p.status for p in cp.sent
                    if isinstance(p, call.FirmwareStatusNotification)]
        assert firmware == ["Downloading", "Downloaded", "Installing", "Installed"]
        assert sum(isinstance(p, call.BootNotification) for p in cp.sent) == boots + 1


def test_an_integer_key_takes_ascii_digits_only_and_a_refused_value_is_not_stored(
        ) -> None:
    """Review r28-sim: ``str.isdigit`` takes "²" (and other Unicode digits): the value
    was stored, then ``int`` failed the handler (an InternalError to the central system,
    GetConfiguration showing HeartbeatInterval "²")."""
    cp = SimulatedChargePoint("CP-X", None)
    for key in ("HeartbeatInterval", "MeterValueSampleInterval", "ConnectionTimeOut"):
        before = cp.configuration[key]
        for value in ("²", "٣", "１٠", "-5", "1.5", ""):
            assert cp.on_change_configuration(key, value).status == "Rejected", (key, value)
            assert cp.configuration[key] == before
    assert cp.heartbeat_interval == 300
    assert cp.on_change_configuration("HeartbeatInterval", "120").status == "Accepted"
    assert cp.heartbeat_interval == 120


async def test_a_changed_meter_value_sample_interval_is_what_sessions_sample_at(
        central: Central) -> None:
    """Review r28-sim: ChangeConfiguration MeterValueSampleInterval was Accepted, and the
    charger went on sampling at its old interval (10 s here)."""
    config = SimulatorConfig(plugs=CP1, meter_interval_s=10)
    async with booted(central, config) as cp:
        answer = await run(central, "changeConfiguration",
                           {"cpId": "CP-1", "key": "MeterValueSampleInterval", "value": "1"})
        assert answer["status"] == "ACCEPTED"
        assert await remote_start(central, 1) == "ACCEPTED"
        await soon(lambda: cp.connectors[1].transaction_id is not None)
        await asyncio.sleep(3.5)
        samples = [p for p in cp.sent if isinstance(p, call.MeterValues)]
        assert len(samples) >= 2, f"{len(samples)} MeterValues in 3.5 s at a 1 s interval"


async def test_inoperative_while_a_remote_start_is_under_way_is_scheduled_for_its_end(
        central: Central) -> None:
    """Review r28-sim: a ChangeAvailability Inoperative between an accepted remote start
    and its StartTransaction was answered Accepted, and the transaction then ran on the
    connector just said to be inoperative. A start under way makes the plug busy: the
    change is Scheduled, and made once that session ends."""
    config = SimulatorConfig(plugs=CP1, meter_interval_s=0.05)
    async with booted(central, config) as cp:
        assert cp.on_remote_start("TAG-OK", connector_id=1).status == "Accepted"
        cp.after_remote_start("TAG-OK")
        assert cp.on_change_availability(1, "Inoperative").status == "Scheduled"
        # Nor does a second start take the plug meanwhile.
        assert cp.on_remote_start("TAG-OK", connector_id=1).status == "Rejected"
        await soon(lambda: cp.connectors[1].transaction_id is not None)
        tx = cp.connectors[1].transaction_id
        assert cp.connectors[1].available
        await run(central, "remoteStopTransaction", {"cpId": "CP-1", "transactionId": tx})
        await closed(central, tx)
        await soon(lambda: cp.connectors[1].status == "Unavailable")
        assert cp.statuses(1)[-2:] == ["Finishing", "Unavailable"]
        assert cp.on_remote_start("TAG-OK", connector_id=1).status == "Rejected"


async def test_a_downloaded_firmware_takes_no_new_start_and_cuts_no_session_short(
        central: Central) -> None:
    """Review r28-sim: the charger waited for its sessions to end once, before
    Installing, then took remote starts while installing, and its reboot ended them
    (reason Reboot). From the download on it refuses new starts, installs once none
    runs, reboots, and takes starts again."""
    async with charging_on_1(central, firmware_step_s=0.3) as (cp, tx):
        await run(central, "updateFirmware", {
            "cpId": "CP-1", "location": "https://fw.example.com/simcharger-2.1.0.bin",
            "retrieveDate": datetime.now(UTC).isoformat()}, "accepted")

        def firmware() -> list[str]:
            return [p.status for p in cp.sent
                    if isinstance(p, call.FirmwareStatusNotification)]

        await soon(lambda: cp.firmware_pending)  # downloaded
        # (The server refuses TAG-OK itself now: charging on connector 1.)
        assert cp.on_remote_start("TAG-OTHER", connector_id=2).status == "Rejected"
        await asyncio.sleep(0.5)
        assert firmware() == ["Downloading", "Downloaded"], "installing while charging"
        await run(central, "remoteStopTransaction", {"cpId": "CP-1", "transactionId": tx})
        assert (await closed(central, tx)).stop_reason == "Remote"

        async def rebooted() -> bool:
            station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
            return station is not None and station.firmware == "2.1.0"

        await until(rebooted, attempts=200, step=0.05)
        assert firmware() == ["Downloading", "Downloaded", "Installing", "Installed"]
        await soon(lambda: not cp.firmware_pending)
        assert await remote_start(central, 2) == "ACCEPTED"


async def test_a_later_update_firmware_replaces_one_still_waiting(central: Central) -> None:
    """Review r28-sim: each UpdateFirmware ran on, none replacing a pending one: an
    operator who scheduled 2.0.0 for later and then sent 2.1.0 for now got 2.1.0, then a
    second reboot downgrading the charger to 2.0.0."""
    config = SimulatorConfig(plugs=CP1, meter_interval_s=0.05, firmware_step_s=0)
    async with booted(central, config) as cp:
        boots = sum(isinstance(p, call.BootNotification) for p in cp.sent)
        later = datetime.now(UTC) + timedelta(seconds=1)
        await run(central, "updateFirmware", {
            "cpId": "CP-1", "location": "https://fw.example.com/simcharger-2.0.0.bin",
            "retrieveDate": later.isoformat()}, "accepted")
        await run(central, "updateFirmware", {
            "cpId": "CP-1", "location": "https://fw.example.com/simcharger-2.1.0.bin",
            "retrieveDate": datetime.now(UTC).isoformat()}, "accepted")

        async def firmware_is(version: str) -> bool:
            station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
            return station is not None and station.firmware == version

        await until(lambda: firmware_is("2.1.0"), attempts=100, step=0.05)
        await asyncio.sleep(1.5)
        assert cp.config.firmware == "2.1.0", f"rebooted again into {cp.config.firmware}"
        assert sum(isinstance(p, call.BootNotification) for p in cp.sent) == boots + 1


async def test_the_key_set_says_what_the_charger_does() -> None:
    """Review r28-sim: a LocalAuthListManagement charger names its list limits, and
    ReserveConnectorZeroSupported said false while a ReserveNow for connector 0 was
    taken (it holds the first free connector)."""
    cp = SimulatedChargePoint("CP-X", None)
    keys = {k["key"]: k for k in cp.on_get_configuration().configuration_key}
    assert keys["LocalAuthListMaxLength"]["readonly"] is True
    assert keys["SendLocalListMaxLength"]["readonly"] is True
    assert keys["ReserveConnectorZeroSupported"]["value"] == "true"
    expires = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert cp.on_reserve_now(0, expires, "TAG-OK", 7).status == "Accepted"
    assert cp.connectors[1].reservation_id == 7
    await cp.stop_follow_ups()


def measurands_sent(cp: Recording, connector_id: int) -> list[list[str]]:
    """The measurands of each MeterValues the charger sent for ``connector_id``."""
    return [[v["measurand"] for v in p.meter_value[0]["sampledValue"]] for p in cp.sent
            if isinstance(p, call.MeterValues) and p.connector_id == connector_id]


async def test_meter_values_carry_what_meter_values_sampled_data_lists(
        central: Central) -> None:
    """MeterValuesSampledData was reported and its change Accepted, yet every MeterValues
    carried all five measurands. They carry those the key lists, in its order (SoC on
    the DC plug only), from the next sample on; a measurand the charger does not meter
    is Rejected, nothing stored."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         config=SimulatorConfig(plugs=CP1), charge_point=Recording) as cp:
        assert isinstance(cp, Recording)
        await cp.boot()
        key = "MeterValuesSampledData"
        for value in ("Energy.Active.Import.Register,Frequency", "Temperature"):
            refused = await run(central, "changeConfiguration",
                                {"cpId": "CP-1", "key": key, "value": value})
            assert refused["status"] == "REJECTED", (value, refused)
        assert cp.configuration[key] == STANDARD_CONFIGURATION[key]
        # Its other lists of measurands likewise.
        assert cp.on_change_configuration("StopTxnSampledData", "Frequency").status \
            == "Rejected"
        changed = await run(central, "changeConfiguration", {
            "cpId": "CP-1", "key": key, "value": "SoC, Energy.Active.Import.Register"})
        assert changed["status"] == "ACCEPTED", changed
        txs = []
        for connector_id in (1, 2):  # DC, AC
            cp.plug_in(connector_id)
            tx, status = await cp.start_transaction(connector_id, ("TAG-OK", "TAG-OTHER")[
                connector_id - 1])
            assert status == "Accepted"
            txs.append(tx)
            await cp.charging_step(connector_id, 60)
        assert measurands_sent(cp, 1) == [["SoC", "Energy.Active.Import.Register"]]
        assert measurands_sent(cp, 2) == [["Energy.Active.Import.Register"]]  # no SoC on AC
        cp.on_change_configuration(key, "Power.Active.Import")
        await cp.charging_step(1, 60)
        assert measurands_sent(cp, 1)[-1] == ["Power.Active.Import"]
        for connector_id in (1, 2):
            await cp.stop_transaction(connector_id)
    done = await central.session(txs[0])
    assert done is not None
    samples = await central.store.find_all(d.MeterSample, Eq("session_id", done.id))
    assert {s.measurand for s in samples} >= {"SoC", "Power.Active.Import"}
    assert not {s.measurand for s in samples} & {"Voltage", "Current.Import"}


async def test_a_local_list_over_the_chargers_limits_fails_and_changes_nothing(
        central: Central) -> None:
    """LocalAuthListMaxLength was reported and not held to: a list leaving the charger
    more tags than that was taken. OCPP 1.6 (5.15, 9.1): Failed, its list and version
    as they were; as is one longer than SendLocalListMaxLength. An operator whose list
    the central system cannot judge (the charger's list not recorded there) reads the
    charger's FAILED."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        cp.configuration["LocalAuthListMaxLength"] = ("3", True)
        cp.configuration["SendLocalListMaxLength"] = ("2", True)

        def entries(*tags: str) -> list[dict[str, Any]]:
            return [{"id_tag": t, "id_tag_info": {"status": "Accepted"}} for t in tags]

        assert cp.on_send_local_list(1, "Full", entries("A1", "A2")).status == "Accepted"
        held = dict(cp.local_list)
        for version, update, tags in ((2, "Full", ("B1", "B2", "B3")),  # too long
                                      (2, "Differential", ("A3", "A4"))):  # 4 tags
            answer = cp.on_send_local_list(version, update, entries(*tags))
            assert answer.status == "Failed", (update, tags)
            assert (cp.local_list, cp.local_list_version) == (held, 1)
        # Replacing or removing keeps it within: taken.
        assert cp.on_send_local_list(2, "Differential", entries("A2", "A3")).status \
            == "Accepted"
        assert sorted(cp.local_list) == ["A1", "A2", "A3"]

        await cp.boot()
        one_more = {"input": {"cpId": "CP-1", "listVersion": 3,
                              "updateType": "DIFFERENTIAL", "localAuthorizationList": [
                                  {"idTag": "A4", "idTagInfo": {"status": "ACCEPTED"}}]}}
        answer = await central.gql(
            'mutation($input: SendLocalListInput!) { sendLocalList(input: $input) { '
            'status errors { code message } } }', one_more, as_user="op")
        assert answer["sendLocalList"] == {"status": "FAILED", "errors": [{
            "code": "CHARGER_REJECTED", "message": "the charger answered Failed"}]}, answer
        assert sorted(cp.local_list) == ["A1", "A2", "A3"] and cp.local_list_version == 2


async def test_a_downloaded_firmware_takes_no_reservation(central: Central) -> None:
    """It refused starts from the download on, but accepted a ReserveNow, whose driver's
    start it would then refuse: Rejected as that start, until it has rebooted."""
    async with charging_on_1(central, firmware_step_s=0) as (cp, tx):
        cp.on_update_firmware("https://fw.example.com/simcharger-2.1.0.bin",
                              datetime.now(UTC).isoformat())
        await soon(lambda: cp.firmware_pending)  # downloaded, waiting for the car
        expires = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        for connector_id in (2, 0):
            answer = cp.on_reserve_now(connector_id, expires, "TAG-OTHER", 8)
            assert answer.status == "Rejected", connector_id
        assert cp.connectors[2].reservation_id is None
        await run(central, "remoteStopTransaction", {"cpId": "CP-1", "transactionId": tx})
        await closed(central, tx)
        await soon(lambda: not cp.firmware_pending)  # rebooted
        assert cp.on_reserve_now(2, expires, "TAG-OTHER", 9).status == "Accepted"
        await cp.stop_follow_ups()
