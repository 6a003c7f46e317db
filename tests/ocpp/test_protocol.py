"""Handshake, authentication, and protocol correctness on bad input (raw websockets)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ocpp.exceptions import PropertyConstraintViolationError, SecurityError
from ocpp.v16 import call
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from domain import entities as d
from domain.errors import ValidationError
from domain.policy import SYSTEM, Policy
from domain.ports import Insert
from domain.query import Eq, all_of
from domain.services import ServiceContext, Services
from domain.services.base import stamp_new
from graph.ids import to_global_id
from ocpp_bridge.simulator import basic_auth, connected, now
from store.sqlite import SqliteStore
from tests.helpers import FastHasher, soon
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
from tests.support.wire_bus import WireBus


async def raw(central: Central, cp_id: str = "CP-1", password: str | None = STATION_PASSWORD):
    headers = basic_auth(cp_id, password) if password else None
    return await connect(f"{central.url}/{cp_id}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                         additional_headers=headers)


async def exchange(ws, frame: str) -> list:
    await ws.send(frame)
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def boot_told(ws, uid: str = "b0") -> str:
    """The charger boots: the registration it is told, and acts on until its next
    (``Station.charger_registration``)."""
    answer = await exchange(ws, json.dumps([2, uid, "BootNotification", {
        "chargePointVendor": "V", "chargePointModel": "M"}]))
    return answer[2]["status"]


async def test_unknown_station_is_401_with_the_challenge(central: Central) -> None:
    """Not 404: that told a known cpId (401) from an unknown one (QA s26)."""
    with pytest.raises(InvalidStatus) as err:
        await raw(central, "NOPE")
    assert err.value.response.status_code == 401
    assert err.value.response.headers["WWW-Authenticate"].startswith("Basic realm=")


@pytest.mark.parametrize(("user", "password"), [("CP-1", "wrong-password"),
                                                ("OTHER", STATION_PASSWORD), (None, None)])
async def test_bad_credentials_are_401(central: Central, user, password) -> None:
    headers = basic_auth(user, password) if user else None
    with pytest.raises(InvalidStatus) as err:
        await connect(f"{central.url}/CP-1", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                      additional_headers=headers)
    assert err.value.response.status_code == 401
    assert "Basic" in err.value.response.headers["WWW-Authenticate"]


async def test_refusals_and_disconnects_say_why_in_the_log_once_a_minute(
        central: Central, caplog: pytest.LogCaptureFixture) -> None:
    """An operator must see why a charger does not connect; a retrying charger or a scan
    must not flood the log; credentials never appear."""
    import logging

    caplog.set_level(logging.INFO, "chargegraph.ocpp")
    for _ in range(3):
        with pytest.raises(InvalidStatus):
            await raw(central, "NOPE")
        with pytest.raises(InvalidStatus):
            await raw(central, "CP-1", "not-the-password")
    ws = await raw(central)
    await ws.close(1000, "going home")
    for _ in range(100):
        if "CP-1 disconnected" in caplog.text:
            break
        await asyncio.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if r.name == "chargegraph.ocpp"]
    refused = [line for line in lines if line.startswith("refused")]
    assert len(refused) == 2, refused
    assert "refused charge point 'NOPE' from 127.0.0.1: unknown charge point" in refused
    assert "refused charge point 'CP-1' from 127.0.0.1: wrong user name or password" in refused
    assert "CP-1 disconnected (close code 1000: 'going home')" in lines
    assert "not-the-password" not in caplog.text and STATION_PASSWORD not in caplog.text
    # Behind a trusted load balancer (127.0.0.1 by default) the charger's own address.
    with pytest.raises(InvalidStatus):
        await connect(f"{central.url}/NOPE-2", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                      additional_headers={"X-Forwarded-For": "203.0.113.7"})
    assert "refused charge point 'NOPE-2' from 203.0.113.7: unknown charge point" in [
        r.getMessage() for r in caplog.records]


async def test_wrong_passwords_are_checked_once_the_right_one_is_known_and_every_guess_counts(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """A guess repeated is checked again (the memory of refused guesses is gone: it told
    real cpIds from made-up ones, review r26-security4; repeats are held by the lockouts
    and the address's budget), and so is a wrong password once the right one was
    verified and its digest cached (session 30: refused from the digest without argon2,
    a connected station's guesses were answered sooner than a made-up id's while the
    hashing threads were busy). Only the right password is answered from the digest.
    Each guess counts towards the lockout (QA s22: the cached digest settled 2,700
    guesses a second with no count at all)."""
    checked: list[str] = []
    real = central.services.charging.password_ok

    def counting(station: d.Station, password: str | None) -> bool:
        checked.append(station.cp_id)
        return real(station, password)

    monkeypatch.setattr(central.services.charging, "password_ok", counting)

    async def attempt(password: str, source: str = "198.51.100.20") -> int:
        try:
            ws = await connect(f"{central.url}/CP-1", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                               additional_headers={**basic_auth("CP-1", password),
                                                   "X-Forwarded-For": source})
        except InvalidStatus as err:
            return err.response.status_code
        await ws.close()
        return 101

    for i in range(3):
        assert await attempt(f"wrong-password-{i}") == 401
    assert len(checked) == 3
    assert await attempt("wrong-password-0") == 401  # repeated: checked again …
    assert len(checked) == 4
    assert await attempt(STATION_PASSWORD, "198.51.100.1") == 101  # the charger, elsewhere
    assert len(checked) == 5
    assert await attempt("yet-another-guess") == 401  # the right one is known: checked
    assert len(checked) == 6
    # … and counted: five wrong ones from there, and the right password from there is
    # refused unchecked now.
    assert await attempt(STATION_PASSWORD) == 429
    assert await attempt(STATION_PASSWORD, "198.51.100.1") == 101  # cached: no argon2
    assert len(checked) == 6


async def test_a_flood_against_one_station_locks_nobody_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks of one station run one at a time and take at most one hashing thread, and
    one address has one check of a station in flight: a flood of guesses against CP-1
    from one address gets one check and 429s for the rest, CP-OPEN's first connection a
    thread at once, and CP-1's own charger (from its own address) gets in behind the one
    guess being checked, not behind the flood. Told by order (a guess's check holds its
    thread until CP-OPEN's has started), not by timings against whole checks (QA s29:
    0.6 s for a 0.2 s check; session 30: load-sensitive all the same)."""
    import threading

    central = await start_central(tmp_path / "flood.db")
    try:
        await seed(central)
        await central.services.stations.update_station(
            SYSTEM, central.stations["CP-OPEN"].id, password="other-password-1")
        real = central.services.charging.password_ok

        checked: list[str | None] = []
        open_checking = threading.Event()  # CP-OPEN's check has started
        overlapped: list[bool] = []  # per guess checked: CP-OPEN's started meanwhile

        def slow(station: d.Station, password: str | None) -> bool:
            checked.append(password)
            if password == "other-password-1":
                open_checking.set()
            elif password is not None and password.startswith("guess-"):
                # Holds its thread until CP-OPEN's check starts (bounded below the
                # handshake timeout, 10 s): a check waiting for this thread (behind the
                # flood's queue) leaves it waiting in vain.
                overlapped.append(open_checking.wait(5))
            return real(station, password)

        monkeypatch.setattr(central.services.charging, "password_ok", slow)

        async def attempt(cp_id: str, password: str, source: str = "127.0.0.1") -> int:
            try:
                ws = await connect(f"{central.url}/{cp_id}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                   additional_headers=basic_auth(cp_id, password),
                                   open_timeout=30, local_addr=(source, 0))
            except InvalidStatus as err:
                return err.response.status_code
            await ws.close()
            return 101

        # The flood comes from another loopback address (all of 127/8 is this host).
        flood = [asyncio.ensure_future(attempt("CP-1", f"guess-{i}-long", "127.0.0.2"))
                 for i in range(6)]
        await soon(lambda: bool(checked))  # the flood's guess is being checked
        assert await attempt("CP-OPEN", "other-password-1") == 101
        assert await attempt("CP-1", STATION_PASSWORD) == 101
        guesses_first = checked.index(STATION_PASSWORD) - ("other-password-1" in checked[
            :checked.index(STATION_PASSWORD)])
        assert guesses_first <= 1  # behind the one guess in flight, not the flood
        results = await asyncio.gather(*flood)
        assert sorted(results) == [401] + [429] * 5
        # CP-OPEN's check had a thread at once, beside the guess's, not after the flood.
        assert overlapped == [True], overlapped
    finally:
        await stop_central(central)


async def test_station_without_password_and_short_path(central: Central) -> None:
    url = central.url.removesuffix("/ocpp")
    async with connected(url, "CP-OPEN") as cp:
        assert (await cp.boot()).status == "Accepted"


async def test_subprotocol_required(central: Central) -> None:
    ws = await connect(f"{central.url}/CP-1", subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                       additional_headers=basic_auth("CP-1", STATION_PASSWORD))
    assert ws.subprotocol is None  # handshake completed without the header …
    with pytest.raises(ConnectionClosed) as err:
        await asyncio.wait_for(ws.recv(), 5)  # … and the connection closed at once
    assert err.value.rcvd is not None and err.value.rcvd.code == 1002


async def test_a_charger_without_the_subprotocol_is_logged_once_a_minute(
        central: Central, caplog: pytest.LogCaptureFixture) -> None:
    """QA (onboarding): closed 1002 with nothing in the log, while unknown cpIds and bad
    credentials are logged. Logged the same way, naming what the charger offered."""
    caplog.set_level(logging.INFO, "chargegraph.ocpp")

    async def closed(offered: list[str] | None) -> None:
        ws = await connect(f"{central.url}/CP-1", subprotocols=offered,  # type: ignore[arg-type]
                           additional_headers=basic_auth("CP-1", STATION_PASSWORD))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)

    for _ in range(3):  # a charger retrying: one line a minute
        await closed(["ocpp2.0.1"])
    await closed(None)
    refused = [r.getMessage() for r in caplog.records
               if r.name == "chargegraph.ocpp" and r.levelno == logging.INFO
               and r.getMessage().startswith("refused")]
    assert refused == [
        "refused charge point 'CP-1' from 127.0.0.1: it does not offer the subprotocol "
        "ocpp1.6 (offered: ocpp2.0.1)",
        "refused charge point 'CP-1' from 127.0.0.1: it does not offer the subprotocol "
        "ocpp1.6 (offered: none)"]


async def test_auto_registration_makes_pending_station(tmp_path: Path) -> None:
    central = await start_central(tmp_path / "auto.db", auto_register=True)
    try:
        async with connected(central.url, "NEW-CP-9") as cp:
            assert (await cp.boot()).status == "Pending"
        station = await central.store.find_one(d.Station, Eq("cp_id", "NEW-CP-9"))
        assert station is not None and station.registration is d.Registration.PENDING
    finally:
        await stop_central(central)


async def test_a_charger_not_accepted_gets_security_errors_for_cards_and_sessions(
        central: Central) -> None:
    """Pending: the boot and state reports go through, nothing about cards, sessions or
    energy (a self-registered charger checked every card and opened sessions on them).
    Rejected: nothing but the boot. Accepted again: what it kept queued goes through."""
    station = central.stations["CP-OPEN"]
    stamp = now()
    start = json.dumps([2, "s1", "StartTransaction", {
        "connectorId": 1, "idTag": "TAG-OK", "meterStart": 0, "timestamp": stamp}])
    authorize = json.dumps([2, "a1", "Authorize", {"idTag": "TAG-OK"}])
    heartbeat = json.dumps([2, "h1", "Heartbeat", {}])
    status = json.dumps([2, "n1", "StatusNotification", {
        "connectorId": 1, "errorCode": "NoError", "status": "Available"}])
    boot = json.dumps([2, "b1", "BootNotification", {"chargePointVendor": "V",
                                                     "chargePointModel": "M"}])

    async def set_registration(registration: d.Registration) -> None:
        await central.services.stations.update_station(SYSTEM, station.id,
                                                       registration=registration)

    ws = await raw(central, "CP-OPEN", None)
    try:
        await set_registration(d.Registration.PENDING)
        # Told Pending at its boot: it acts as Pending (an earlier Accepted is not its
        # word any more, ``Station.charger_registration``).
        assert (await exchange(ws, boot))[2]["status"] == "Pending"
        for frame, uid in ((authorize, "a1"), (start, "s1")):
            answer = await exchange(ws, frame)
            assert answer[:3] == [4, uid, "SecurityError"], answer
        assert (await exchange(ws, heartbeat))[0] == 3
        assert (await exchange(ws, status))[0] == 3
        await set_registration(d.Registration.REJECTED)
        assert (await exchange(ws, boot))[2]["status"] == "Rejected"
        assert (await exchange(ws, heartbeat))[:3] == [4, "h1", "SecurityError"]
        assert await central.store.find_all(d.Session, Eq("cp_id", "CP-OPEN")) == []
        await set_registration(d.Registration.ACCEPTED)
        started = await exchange(ws, start)
        assert started[0] == 3 and started[2]["idTagInfo"]["status"] == "Accepted"
    finally:
        await ws.close()


SET_REGISTRATION = """mutation($id: ID!, $r: Registration!) {
    updateStation(input: {id: $id, registration: $r}) {
        station { registration } errors { field code } } }"""


async def test_a_station_made_pending_or_rejected_mid_session_still_closes_its_sessions(
        central: Central) -> None:
    """Review s25: the charger learns its registration at its next boot and acts on the
    one it was told (Accepted) meanwhile. Made Pending or Rejected mid-session (allowed),
    its station takes what the charger reports (StopTransaction, meter values, connector
    states, heartbeats), also the late stop of one flushed late (awaiting its stop):
    refused, the charger drops them after its retries and the session is never closed
    nor billed. What authorizes is withheld: no Authorize, and a start it makes anyway is
    recorded and billed but told Invalid, whatever the card. Booted again (told
    Rejected), it is refused all but its boot."""
    station_id = to_global_id("station", central.stations["CP-OPEN"].id)
    stamp = now()
    ws = await raw(central, "CP-OPEN", None)
    try:
        assert await boot_told(ws) == "Accepted"  # told Accepted, it acts so
        started = await exchange(ws, json.dumps([2, "s1", "StartTransaction", {
            "connectorId": 1, "idTag": "TAG-OK", "meterStart": 5000, "timestamp": stamp}]))
        live = started[2]["transactionId"]
        earlier = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
        flushed = await exchange(ws, json.dumps([2, "s2", "StartTransaction", {
            "connectorId": 1, "idTag": "TAG-OK", "meterStart": 0, "timestamp": earlier}]))
        late = flushed[2]["transactionId"]
        waiting = await central.session(late)
        assert waiting is not None and waiting.state is d.SessionState.COMPLETED \
            and waiting.stop_reason is None  # awaiting its stop
        for registration in ("PENDING", "REJECTED"):
            changed = await central.gql(SET_REGISTRATION, {"id": station_id,
                                                           "r": registration}, as_user="op")
            assert changed["updateStation"] == {"station": {"registration": registration},
                                                "errors": []}
        answer = await exchange(ws, json.dumps([2, "a1", "Authorize", {"idTag": "TAG-OK"}]))
        assert answer[:3] == [4, "a1", "SecurityError"], answer
        own = await exchange(ws, json.dumps([2, "s3", "StartTransaction", {
            "connectorId": 2, "idTag": "TAG-OTHER", "meterStart": 0, "timestamp": now()}]))
        assert own[0] == 3 and own[2]["idTagInfo"] == {"status": "Invalid"}, own
        assert (await exchange(ws, json.dumps([2, "m1", "MeterValues", {
            "connectorId": 1, "transactionId": live, "meterValue": [{
                "timestamp": now(), "sampledValue": [{"value": "6000"}]}]}])))[0] == 3
        assert (await exchange(ws, json.dumps([2, "n1", "StatusNotification", {
            "connectorId": 1, "errorCode": "NoError", "status": "Charging"}])))[0] == 3
        for uid, tx, meter_stop in (("t1", late, 4000), ("t2", live, 9000),
                                    ("t3", own[2]["transactionId"], 700)):
            stopped = await exchange(ws, json.dumps([2, uid, "StopTransaction", {
                "transactionId": tx, "meterStop": meter_stop, "timestamp": now(),
                "idTag": "TAG-OK"}]))
            assert stopped == [3, uid, {}], stopped  # no card's status either
            session = await central.session(tx)
            assert session is not None and session.state is d.SessionState.COMPLETED \
                and session.meter_stop_wh == meter_stop, session
        billed = await central.session(own[2]["transactionId"])
        assert billed is not None and billed.start_refused is None \
            and billed.energy_wh == 700, billed  # recorded and billed, as any other
        assert await central.store.find_one(d.Session, Eq("state", d.SessionState.ACTIVE)) \
            is None
        assert (await exchange(ws, json.dumps([2, "h1", "Heartbeat", {}])))[0] == 3
        booted = await exchange(ws, json.dumps([2, "b1", "BootNotification", {
            "chargePointVendor": "V", "chargePointModel": "M"}]))
        assert booted[2]["status"] == "Rejected"
        for uid, frame in (("h2", ["Heartbeat", {}]),
                           ("s4", ["StartTransaction", {"connectorId": 2,
                                                        "idTag": "TAG-OTHER",
                                                        "meterStart": 0,
                                                        "timestamp": now()}])):
            answer = await exchange(ws, json.dumps([2, uid, *frame]))
            assert answer[:3] == [4, uid, "SecurityError"], answer  # told Rejected now
    finally:
        await ws.close()


async def test_a_station_made_rejected_has_no_card_checked_through_a_stop(
        central: Central) -> None:
    """Review s25: a charger told Accepted whose station was made Rejected had its
    StopTransaction answered with the status of whatever idTag it named (Blocked,
    Invalid, Accepted) while its Authorize was refused: cards checked all the same. The
    stop is taken, its answer carries no idTagInfo (optional in 1.6)."""
    station_id = central.stations["CP-OPEN"].id
    ws = await raw(central, "CP-OPEN", None)
    try:
        assert await boot_told(ws) == "Accepted"  # told Accepted, it acts so
        started = await exchange(ws, json.dumps([2, "s1", "StartTransaction", {
            "connectorId": 1, "idTag": "TAG-OK", "meterStart": 0, "timestamp": now()}]))
        tx = started[2]["transactionId"]
        await central.services.stations.update_station(
            SYSTEM, station_id, registration=d.Registration.REJECTED)
        authorize = await exchange(ws, json.dumps([2, "a1", "Authorize",
                                                   {"idTag": "TAG-BLOCKED"}]))
        assert authorize[:3] == [4, "a1", "SecurityError"]  # refused as a card check
        stopped = await exchange(ws, json.dumps([2, "t1", "StopTransaction", {
            "transactionId": tx, "meterStop": 1000, "timestamp": now(),
            "idTag": "TAG-BLOCKED"}]))
        assert stopped == [3, "t1", {}], stopped
        session = await central.session(tx)
        assert session is not None and session.state is d.SessionState.COMPLETED
    finally:
        await ws.close()


async def test_a_station_made_rejected_has_its_connector_reported_after_its_stop(
        central: Central) -> None:
    """Review s25: a Rejected station's StatusNotification was taken only while a
    session was open there. The stop closes the session and marks its connector
    Finishing; the charger's next report (Available, the plug taken out) was refused, the
    connector left Finishing, its occupancy growing, until the charger's next boot. Its
    reports are judged by the registration it was told (Accepted) until then."""
    station_id = central.stations["CP-OPEN"].id
    ws = await raw(central, "CP-OPEN", None)
    try:
        assert await boot_told(ws) == "Accepted"  # told Accepted, it acts so
        started = await exchange(ws, json.dumps([2, "s1", "StartTransaction", {
            "connectorId": 1, "idTag": "TAG-OK", "meterStart": 0, "timestamp": now()}]))
        tx = started[2]["transactionId"]
        charging = await exchange(ws, json.dumps([2, "n0", "StatusNotification", {
            "connectorId": 1, "errorCode": "NoError", "status": "Charging"}]))
        assert charging[0] == 3
        await central.services.stations.update_station(
            SYSTEM, station_id, registration=d.Registration.REJECTED)
        stopped = await exchange(ws, json.dumps([2, "t1", "StopTransaction", {
            "transactionId": tx, "meterStop": 1000, "timestamp": now()}]))
        assert stopped[0] == 3
        available = await exchange(ws, json.dumps([2, "n1", "StatusNotification", {
            "connectorId": 1, "errorCode": "NoError", "status": "Available"}]))
        connector = await central.store.find_one(d.Connector, all_of(
            Eq("station_id", station_id), Eq("connector_id", 1)))
        assert connector is not None
        assert available[0] == 3 and connector.status is d.ConnectorStatus.AVAILABLE, (
            available, connector.status)
    finally:
        await ws.close()


async def test_a_charger_told_rejected_at_its_reboot_still_closes_its_recorded_session(
        central: Central) -> None:
    """QA s32: a station made Rejected mid-session whose charger rebooted (told Rejected)
    had its queued StopTransaction refused with a SecurityError; the session stayed
    ACTIVE for good, its card ConcurrentTx everywhere, until staff ended it. A charger
    that passed its password check still closes what is on record for its station: the
    stop and the readings of a transaction stored there, and its connectors' states.
    Nothing else: no card checked, no start, no heartbeat, no readings of no transaction
    or of another station's."""
    station_id = to_global_id("station", central.stations["CP-1"].id)
    async with connected(central.url, "CP-OPEN") as other:
        assert (await other.boot()).status == "Accepted"
        elsewhere = (await other.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OTHER", meter_start=0, timestamp=now()),
            suppress=False)).transaction_id
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            assert (await cp.boot()).status == "Accepted"
            tx = (await cp.call(call.StartTransaction(
                connector_id=1, id_tag="TAG-OK", meter_start=1000, timestamp=now()),
                suppress=False)).transaction_id
            changed = await central.gql(SET_REGISTRATION, {"id": station_id, "r": "REJECTED"},
                                        as_user="op")
            assert changed["updateStation"]["errors"] == []
        charging = central.services.charging
        assert (await charging.authorize_start("CP-OPEN", "TAG-OK")).status == "ConcurrentTx"
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            assert (await cp.boot()).status == "Rejected"  # rebooted: told Rejected
            reading = [{"timestamp": now(), "sampledValue": [{"value": "1500"}]}]
            for refused in (call.Authorize(id_tag="TAG-OK"), call.Heartbeat(),
                            call.StartTransaction(connector_id=2, id_tag="TAG-OK",
                                                  meter_start=0, timestamp=now()),
                            call.MeterValues(connector_id=1, meter_value=reading),
                            call.MeterValues(connector_id=1, transaction_id=tx + 1000,
                                             meter_value=reading),
                            call.StopTransaction(transaction_id=elsewhere, meter_stop=10,
                                                 timestamp=now())):
                with pytest.raises(SecurityError):
                    await cp.call(refused, suppress=False)
            await cp.call(call.MeterValues(connector_id=1, transaction_id=tx,
                                           meter_value=reading), suppress=False)
            await cp.call(call.StopTransaction(transaction_id=tx, meter_stop=3000,
                                               timestamp=now(), reason="PowerLoss"),
                          suppress=False)
            await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                                  status="Available"), suppress=False)
        session = await central.session(tx)
        assert session is not None and session.state is d.SessionState.COMPLETED \
            and session.meter_stop_wh == 3000, session
        left = await central.session(elsewhere)
        assert left is not None and left.state is d.SessionState.ACTIVE  # not CP-1's to stop
        connector = await central.store.find_one(d.Connector, all_of(
            Eq("station_id", central.stations["CP-1"].id), Eq("connector_id", 1)))
        assert connector is not None and connector.status is d.ConnectorStatus.AVAILABLE
        # Its card free again, to start anywhere.
        assert (await charging.authorize_start("CP-OPEN", "TAG-OK")).status == "Accepted"


END_SESSION = """mutation($id: ID!) { endSession(input: {id: $id}) { errors { code } } }"""


async def test_a_charger_told_rejected_closes_only_what_is_open_on_record(
        central: Central) -> None:
    """Review r32-a: a charger told Rejected had stored 50 MeterValues naming a session
    already COMPLETED, on a connector it never used (3), and had StatusNotifications for
    connectors 5 and 9 create FAULTED connectors. What is on record for it is a session
    still ACTIVE (readings on its own connector, its stop), or one closed without its
    stop (the stop, which corrects that close); its state reports only for the station's
    own connectors. A resend of its stop once taken is answered as any repeat is
    (review r32-d), writing nothing; another stop of it is refused."""
    station = central.stations["CP-1"]
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        assert (await cp.boot()).status == "Accepted"
        tx = (await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=1000, timestamp=now()),
            suppress=False)).transaction_id
        lost = (await cp.call(call.StartTransaction(
            connector_id=2, id_tag="TAG-OTHER", meter_start=0, timestamp=now()),
            suppress=False)).transaction_id
    record = await central.session(lost)
    assert record is not None
    ended = await central.gql(END_SESSION, {"id": to_global_id("session", record.id)},
                              as_user="op")
    assert ended["endSession"]["errors"] == []  # closed without its stop
    changed = await central.gql(SET_REGISTRATION, {
        "id": to_global_id("station", station.id), "r": "REJECTED"}, as_user="op")
    assert changed["updateStation"]["errors"] == []

    def reading(wh: int) -> list[dict]:
        return [{"timestamp": now(), "sampledValue": [{"value": str(wh)}]}]

    async def stored(transaction_id: int) -> int:
        return len(await central.store.find_all(
            d.MeterSample, Eq("transaction_id", transaction_id), limit=1000))

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        assert (await cp.boot()).status == "Rejected"
        refused = [call.MeterValues(connector_id=3, transaction_id=tx,
                                    meter_value=reading(1500)),  # not its connector
                   call.MeterValues(connector_id=2, transaction_id=lost,
                                    meter_value=reading(900)),  # closed: readings no more
                   *(call.StatusNotification(connector_id=plug, error_code="OtherError",
                                             status="Faulted") for plug in (5, 9))]
        for frame in refused:
            with pytest.raises(SecurityError):
                await cp.call(frame, suppress=False)
        await cp.call(call.MeterValues(connector_id=1, transaction_id=tx,
                                       meter_value=reading(1500)), suppress=False)
        await cp.call(call.StopTransaction(transaction_id=lost, meter_stop=2000,
                                           timestamp=now()), suppress=False)
        stop = call.StopTransaction(transaction_id=tx, meter_stop=3000, timestamp=now())
        await cp.call(stop, suppress=False)
        kept = await stored(tx)
        taken = await central.session(tx)
        for wh in range(3100, 3150):  # the session is closed: nothing more is its
            with pytest.raises(SecurityError):
                await cp.call(call.MeterValues(connector_id=1, transaction_id=tx,
                                               meter_value=reading(wh)), suppress=False)
        with pytest.raises(SecurityError):  # its stop taken, once
            await cp.call(call.StopTransaction(transaction_id=tx, meter_stop=4000,
                                               timestamp=now()), suppress=False)
        # Its resend (the answer lost) is answered as a repeat, writing nothing (review
        # r32-d: refused, where an admitted charger's repeat is answered).
        assert (await cp.call(stop, suppress=False)).id_tag_info is None
        assert await central.session(tx) == taken
        for plug in (0, 1):  # the station's own: the point and a connector it has
            await cp.call(call.StatusNotification(connector_id=plug, error_code="NoError",
                                                  status="Available"), suppress=False)
    assert await stored(tx) == kept
    closed = await central.session(tx)
    assert closed is not None and closed.meter_stop_wh == 3000, closed
    corrected = await central.session(lost)
    assert corrected is not None and corrected.meter_stop_wh == 2000 \
        and not corrected.closed_without_stop, corrected
    plugs = await central.store.find_all(d.Connector, Eq("station_id", station.id))
    assert sorted(p.connector_id for p in plugs) == [1, 2]
    [first] = [p for p in plugs if p.connector_id == 1]
    assert first.status is d.ConnectorStatus.AVAILABLE


async def test_a_charger_told_rejected_resending_a_taken_stop_stores_no_new_readings(
        central: Central) -> None:
    """Session 33: a charger told Rejected resent its stop once taken (the same
    meterStop, answered as a repeat) with new transactionData, and its readings, plain
    and signed, were stored on the completed session: readings it could not send as
    MeterValues (refused for a completed session). The resend stores nothing; the
    stop's own readings, sent while its session was open, stay."""
    station = central.stations["CP-1"]
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        assert (await cp.boot()).status == "Accepted"
        tx = (await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=1000, timestamp=now()),
            suppress=False)).transaction_id
    changed = await central.gql(SET_REGISTRATION, {
        "id": to_global_id("station", station.id), "r": "REJECTED"}, as_user="op")
    assert changed["updateStation"]["errors"] == []

    def data(wh: int, signed: str) -> list[dict]:
        return [{"timestamp": now(), "sampledValue": [
            {"value": str(wh), "context": "Transaction.End"},
            {"value": signed, "format": "SignedData", "context": "Transaction.End"}]}]

    async def kept() -> tuple[int, int]:
        return (len(await central.store.find_all(
                    d.MeterSample, Eq("transaction_id", tx), limit=100)),
                len(await central.store.find_all(
                    d.SignedMeterValue, Eq("transaction_id", tx), limit=100)))

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        assert (await cp.boot()).status == "Rejected"
        stamp = now()
        await cp.call(call.StopTransaction(transaction_id=tx, meter_stop=3000,
                                           timestamp=stamp,
                                           transaction_data=data(3000, "OCMF|stop")),
                      suppress=False)
        taken, before = await central.session(tx), await kept()
        assert before == (1, 1)
        for wh in (3100, 3200):  # resent, its answer lost, with readings it never had
            resent = await cp.call(call.StopTransaction(
                transaction_id=tx, meter_stop=3000, timestamp=stamp,
                transaction_data=data(wh, f"OCMF|{wh}")), suppress=False)
            assert resent.id_tag_info is None
    assert await kept() == before
    assert await central.session(tx) == taken


NEW_PASSWORD = "a-brand-new-password-9"


async def closed_code(ws) -> int | None:
    """The code the central system closed ``ws`` with (it is to close it unasked)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


async def test_a_new_password_shuts_out_a_compromised_charger_at_once(
        tmp_path: Path) -> None:
    """Review s25: a compromised charger (told Accepted at its boot) the operator wants
    shut out, its station made REJECTED and given a new password: its open connection
    stayed, judged by neither change, and its StartTransaction on a driver's card opened
    an ACTIVE session (billed as the charger reports, ConcurrentTx for the card
    elsewhere), which kept the station from being removed (IN_USE). A new password,
    set on any instance, closes the connection that signed in with the old one on the
    instance holding it, at once; the old password signs in no more, and the station
    can be removed."""
    bus = WireBus()  # between instances, as Redis carries events
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    other = SqliteStore(str(tmp_path / "central.db"))  # another instance, GraphQL only
    await other.start()
    try:
        await seed(central)
        elsewhere = Services(ServiceContext(store=other, policy=Policy(),
                                            hasher=FastHasher(), bus=bus))
        station_id = central.stations["CP-1"].id
        ws = await raw(central, "CP-1", STATION_PASSWORD)
        try:
            assert await boot_told(ws) == "Accepted"
            await elsewhere.stations.update_station(
                SYSTEM, station_id, registration=d.Registration.REJECTED,
                password=NEW_PASSWORD)
            assert await closed_code(ws) == 1008  # unasked, before it sends anything
            with pytest.raises(ConnectionClosed):
                await exchange(ws, json.dumps([2, "s1", "StartTransaction", {
                    "connectorId": 1, "idTag": "TAG-OK", "meterStart": 0,
                    "timestamp": now()}]))
        finally:
            await ws.close()
        with pytest.raises(InvalidStatus) as refused:
            await raw(central, "CP-1", STATION_PASSWORD)
        assert refused.value.response.status_code == 401
        for _ in range(50):  # its close recorded as any disconnect
            stored = await central.store.find_one(d.Station, Eq("id", station_id))
            if stored is not None and not stored.online:
                break
            await asyncio.sleep(0.05)
        assert stored is not None and not stored.online
        assert await central.store.find_all(d.Session, Eq("cp_id", "CP-1")) == []
        await elsewhere.stations.remove_station(SYSTEM, station_id)
    finally:
        await other.close()
        await stop_central(central)
        await bus.close()


async def test_a_connection_signed_in_before_a_new_password_is_refused_at_its_next_message(
        central: Central) -> None:
    """The announcement of a new password may miss the instance holding the charger (its
    event bus away), or land while the connection still signs in with the old one: its
    next message meets the station's new password, is refused, and the connection
    closed. One that signed in with the new password stays."""
    station_id = central.stations["CP-1"].id
    stations = central.services.stations
    ws = await raw(central, "CP-1", STATION_PASSWORD)
    try:
        assert await boot_told(ws) == "Accepted"
        # Announced nowhere (this central has no event bus): as if the event were lost.
        await stations.update_station(SYSTEM, station_id, password=NEW_PASSWORD)
        answer = await exchange(ws, json.dumps([2, "h1", "Heartbeat", {}]))
        assert answer[:3] == [4, "h1", "SecurityError"], answer
        assert await closed_code(ws) == 1008
    finally:
        await ws.close()
    ws = await raw(central, "CP-1", NEW_PASSWORD)
    try:
        assert await boot_told(ws) == "Accepted"
        assert (await exchange(ws, json.dumps([2, "h2", "Heartbeat", {}])))[0] == 3
    finally:
        await ws.close()


async def close_code_within(ws, seconds: float) -> int | str | None:
    """The code the central system closed ``ws`` with within ``seconds``, else "open"."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), seconds)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    except TimeoutError:
        return "open"


async def test_a_connection_that_signed_in_as_the_password_changed_is_closed_at_once(
        tmp_path: Path) -> None:
    """Review s26: a connection whose handshake passed with the old password while the
    new one landed (before its handler became the gateway's: its number drawn, its turn
    waited, its connection recorded) was missed by ``StationPasswordChanged`` and never
    checked again once it was the station's: a silent compromised charger stayed
    connected, its station online, and received the operator's commands. Once it is the
    station's connection, it is checked against the password as stored, and closed
    (1008) unasked (README, "Shutting out a charger": "closed at once")."""
    bus = WireBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    try:
        await seed(central)
        station_id = central.stations["CP-1"].id
        charging = central.services.charging
        original = charging.draw_connection

        async def password_changes_meanwhile() -> int:
            charging.draw_connection = original  # type: ignore[method-assign]
            await central.services.stations.update_station(SYSTEM, station_id,
                                                           password=NEW_PASSWORD)
            await asyncio.sleep(0.3)  # the announcement heard and acted on
            return await original()

        charging.draw_connection = password_changes_meanwhile  # type: ignore[method-assign]
        ws = await raw(central, "CP-1", STATION_PASSWORD)  # the old password: let in
        try:
            code = await close_code_within(ws, 3.0)
            delivered = None
            if code == "open":
                # What an operator sends the station now goes to this connection.
                command = asyncio.create_task(central.services.commands.send(
                    SYSTEM, "CP-1", "UnlockConnector", {"connectorId": 1}))
                delivered = json.loads(await asyncio.wait_for(ws.recv(), 5))
                command.cancel()
            assert code == 1008, (
                f"the connection signed in with the old password is still {code} 3 s "
                f"after the new password; an operator's command reached it: {delivered}")
        finally:
            await ws.close()
        for _ in range(50):  # its close recorded as any disconnect
            stored = await central.store.find_one(d.Station, Eq("id", station_id))
            if stored is not None and not stored.online:
                break
            await asyncio.sleep(0.05)
        assert stored is not None and not stored.online
    finally:
        await stop_central(central)
        await bus.close()


async def test_a_connection_with_the_new_password_is_not_shut_out_by_an_older_write(
        tmp_path: Path) -> None:
    """Review s26: the old connection's message in flight when the password changed (its
    heartbeat's write queued) put its copy of the station, read before the change, back
    into the cache when its write ended, over the copy read since: the connection that
    signed in with the new password meanwhile was refused (SecurityError) and closed
    1008 at its next message, as if it held the old one. A charger's write replaces the
    cached station only if that is the very copy it patched."""
    bus = WireBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    try:
        await seed(central)
        station_id = central.stations["CP-1"].id
        charging = central.services.charging
        old = await raw(central, "CP-1", STATION_PASSWORD)
        assert await boot_told(old) == "Accepted"

        held, release, written = asyncio.Event(), asyncio.Event(), asyncio.Event()
        write = charging.telemetry.write

        async def slow_write(changes):  # one store write that takes a while
            charging.telemetry.write = write  # type: ignore[method-assign]
            held.set()
            await release.wait()
            await write(changes)
            # Its caller patches the cache as this returns, before the test hears it.
            written.set()

        charging.telemetry.write = slow_write  # type: ignore[method-assign]
        before = charging.cache.station("CP-1")
        assert before is not None  # the copy its heartbeat patches
        stale = before.auth_password_hash
        await old.send(json.dumps([2, "h0", "Heartbeat", {}]))  # in flight
        await asyncio.wait_for(held.wait(), 5)
        await central.services.stations.update_station(SYSTEM, station_id,
                                                       password=NEW_PASSWORD)
        assert await close_code_within(old, 10) == 1008  # the old connection shut out
        new = await raw(central, "CP-1", NEW_PASSWORD)
        try:
            assert await boot_told(new, "b1") == "Accepted"
            release.set()  # the old connection's write ends
            await asyncio.wait_for(written.wait(), 10)
            # Its copy, read before the change, is not put back (else only the check's
            # read as stored, below, kept the new connection in: the cache's own rule
            # went untested).
            cached = charging.cache.station("CP-1")
            assert cached is None or cached.auth_password_hash != stale, "put back"
            answer = await exchange(new, json.dumps([2, "h1", "Heartbeat", {}]))
            assert answer[0] == 3, (
                f"the connection signed in with the new password was refused: {answer}")
        finally:
            await new.close()
            await old.close()
    finally:
        await stop_central(central)
        await bus.close()


async def test_a_connection_with_the_new_password_is_not_shut_out_by_an_older_read(
        tmp_path: Path) -> None:
    """Review s26: the per-message check reads the station as cached, and a read of the
    old connection's, begun before the password changed and ended after, caches the
    station as it was: the connection that signed in with the new password meanwhile
    met the old password's hash at its next message, and was shut out. A difference
    seen in the cached copy is confirmed as stored before anything is refused."""
    bus = WireBus()
    await bus.start()
    central = await start_central(tmp_path / "central.db", bus=bus)
    try:
        await seed(central)
        station_id = central.stations["CP-1"].id
        charging = central.services.charging
        old = await raw(central, "CP-1", STATION_PASSWORD)
        assert await boot_told(old) == "Accepted"
        charging.cache.drop_station("CP-1")  # its copy expired: the next message reads
        held, release, read_over = asyncio.Event(), asyncio.Event(), asyncio.Event()
        read = charging.station

        async def slow_read(cp_id: str) -> d.Station | None:  # a read that takes a while
            charging.station = read  # type: ignore[method-assign]
            station = await read(cp_id)
            held.set()
            await release.wait()
            # Its caller caches it as this returns, before the test hears it.
            read_over.set()
            return station

        charging.station = slow_read  # type: ignore[method-assign]
        await old.send(json.dumps([2, "h0", "Heartbeat", {}]))  # its station read
        await asyncio.wait_for(held.wait(), 5)
        await central.services.stations.update_station(SYSTEM, station_id,
                                                       password=NEW_PASSWORD)
        assert await close_code_within(old, 10) == 1008  # the old connection shut out
        new = await raw(central, "CP-1", NEW_PASSWORD)
        try:
            assert await boot_told(new, "b1") == "Accepted"
            release.set()  # the old read ends, and is cached
            await asyncio.wait_for(read_over.wait(), 10)
            answer = await exchange(new, json.dumps([2, "h1", "Heartbeat", {}]))
            assert answer[0] == 3, (
                f"the connection signed in with the new password was refused: {answer}")
            assert await close_code_within(old, 1) == 1008
        finally:
            await new.close()
            await old.close()
    finally:
        await stop_central(central)
        await bus.close()

async def test_a_station_made_rejected_before_its_charger_ever_booted_refuses_its_start(
        central: Central) -> None:
    """Review s25: an ``updateStation`` before any boot kept the old registration as what
    the charger was told, so a station created Accepted and made REJECTED before its
    charger ever connected counted as told Accepted: its charger, sending a
    StartTransaction without booting, opened a session on a driver's card. Never booted
    (``booted_at`` None), it was told nothing and is judged by the registration as it
    is."""
    station = central.stations["CP-OPEN"]
    assert station.booted_at is None
    await central.services.stations.update_station(
        SYSTEM, station.id, registration=d.Registration.REJECTED)
    ws = await raw(central, "CP-OPEN", None)
    try:
        started = await exchange(ws, json.dumps([2, "s1", "StartTransaction", {
            "connectorId": 1, "idTag": "TAG-OK", "meterStart": 0, "timestamp": now()}]))
        sessions = await central.store.find_all(d.Session, Eq("cp_id", "CP-OPEN"))
        assert started[:3] == [4, "s1", "SecurityError"] and sessions == [], (
            started, [(s.id_tag, s.state) for s in sessions])
        assert await boot_told(ws) == "Rejected"
    finally:
        await ws.close()


async def test_a_start_written_after_a_pending_update_is_still_stopped(
        central: Central) -> None:
    """Review s25: whichever lands first, the operator's Pending or the start admitted
    on the Accepted station it read, the session the start opens is stopped and billed
    (refusing the update while a session was active held only when the start was
    written first)."""
    charging = central.services.charging
    station_id = to_global_id("station", central.stations["CP-OPEN"].id)
    original = charging._open_session
    answers: list[dict] = []

    async def update_lands_meanwhile(*args, **kwargs):
        # The operator's update runs while the start is between its reads and its write.
        answers.append(await central.gql(SET_REGISTRATION, {"id": station_id,
                                                            "r": "PENDING"}, as_user="op"))
        return await original(*args, **kwargs)

    charging._open_session = update_lands_meanwhile  # type: ignore[method-assign]
    ws = await raw(central, "CP-OPEN", None)
    try:
        assert await boot_told(ws) == "Accepted"  # told Accepted, it acts so
        started = await exchange(ws, json.dumps([2, "s1", "StartTransaction", {
            "connectorId": 1, "idTag": "TAG-OK", "meterStart": 0, "timestamp": now()}]))
        charging._open_session = original  # type: ignore[method-assign]
        assert answers and answers[0]["updateStation"]["errors"] == [], answers
        tx = started[2]["transactionId"]
        stopped = await exchange(ws, json.dumps([2, "t1", "StopTransaction", {
            "transactionId": tx, "meterStop": 5000, "timestamp": now()}]))
        session = await central.session(tx)
        assert stopped[0] == 3 and session is not None \
            and session.state is d.SessionState.COMPLETED, (stopped, session and session.state)
    finally:
        await ws.close()


async def test_fields_a_vendor_adds_are_left_out_unless_strict(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A BootNotification with a field of the vendor's own was refused
    (FormationViolation) and the charger never booted; now the field is left out and
    logged once. ``strict_schema`` keeps the 1.6 schemas' letter."""
    boot = [2, "b1", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M",
                                          "vendorTelemetry": {"x": 1}}]
    meter = [2, "m1", "MeterValues", {"connectorId": 1, "meterValue": [{
        "timestamp": now(), "sampledValue": [{"value": "1200", "vendorQuality": "good"}]}]}]
    for strict in (False, True):
        central = await start_central(tmp_path / f"strict-{strict}.db", strict_schema=strict)
        await seed(central)
        ws = await raw(central, "CP-OPEN", None)
        try:
            with caplog.at_level(logging.INFO, logger="chargegraph.ocpp"):
                booted = await exchange(ws, json.dumps(boot))
                metered = await exchange(ws, json.dumps(meter))
                await exchange(ws, json.dumps(boot))  # told once per connection
            if strict:
                assert booted[:3] == [4, "b1", "FormationViolation"], booted
                assert metered[:3] == [4, "m1", "FormationViolation"], metered
            else:
                assert booted[0] == 3 and booted[2]["status"] == "Accepted", booted
                assert metered[0] == 3, metered
                assert caplog.text.count("BootNotification carries vendorTelemetry") == 1
                assert "meterValue[0].sampledValue[0].vendorQuality" in caplog.text
        finally:
            await ws.close()
            await stop_central(central)


async def test_optional_fields_sent_as_null_read_as_absent_unless_strict(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Firmware whose serializer writes ``null`` for an optional field it has no value
    for had its boot refused (TypeConstraintViolation: it never charged), its starts
    (``"reservationId": null``) and its meter values refused, and a stop's
    ``"reason": null`` read as Other. A null is no value: left out as absent (logged
    once per field and connection), a required field's null still refused;
    ``strict_schema`` keeps the 1.6 schemas' letter."""
    for strict in (False, True):
        central = await start_central(tmp_path / f"strict-{strict}.db", strict_schema=strict)
        await seed(central)
        ws = await raw(central)

        async def call(uid: str, action: str, payload: dict, ws=ws) -> list:
            return await exchange(ws, json.dumps([2, uid, action, payload]))

        try:
            with caplog.at_level(logging.WARNING, logger="chargegraph.ocpp"):
                booted = await call("b1", "BootNotification", {
                    "chargePointVendor": "V", "chargePointModel": "M",
                    "chargePointSerialNumber": None, "firmwareVersion": None})
                started = await call("s1", "StartTransaction", {
                    "connectorId": 1, "idTag": "TAG-OK", "meterStart": 100,
                    "timestamp": now(), "reservationId": None})
                if strict:
                    assert booted[:3] == [4, "b1", "TypeConstraintViolation"], booted
                    assert started[:3] == [4, "s1", "TypeConstraintViolation"], started
                    continue
                assert booted[0] == 3 and booted[2]["status"] == "Accepted", booted
                assert started[0] == 3, started
                assert started[2]["idTagInfo"]["status"] == "Accepted", started
                tx = started[2]["transactionId"]
                metered = await call("m1", "MeterValues", {
                    "connectorId": 1, "transactionId": tx, "meterValue": [{
                        "timestamp": now(), "sampledValue": [
                            {"value": "400", "unit": None, "context": None}]}]})
                assert metered[:3] == [3, "m1", {}], metered
                status = await call("n1", "StatusNotification", {
                    "connectorId": 1, "status": "Charging", "errorCode": "NoError",
                    "timestamp": None, "info": None})
                assert status[:3] == [3, "n1", {}], status
                stopped = await call("e1", "StopTransaction", {
                    "transactionId": tx, "meterStop": 600, "timestamp": now(),
                    "idTag": None, "reason": None, "transactionData": None})
                assert stopped[:3] == [3, "e1", {}], stopped
                # A required field's null is still the charger's to correct.
                refused = await call("a1", "Authorize", {"idTag": None})
                assert refused[:3] == [4, "a1", "TypeConstraintViolation"], refused
                session = await central.session(tx)
                assert session is not None and session.state is d.SessionState.COMPLETED
                assert session.stop_reason == "Local"  # absent: OCPP 1.6's default
                samples = await central.store.find_all(d.MeterSample,
                                                       Eq("transaction_id", tx))
                assert 400.0 in [s.value for s in samples]
        finally:
            await ws.close()
            await stop_central(central)
        assert caplog.text.count("reservationId is null") == 1
        assert "meterValue[0].sampledValue[0].unit is null" in caplog.text


async def test_a_stop_with_a_secondary_field_out_of_schema_is_kept(
        central: Central, caplog: pytest.LogCaptureFixture) -> None:
    """A StopTransaction with a 21-character idTag, a reason outside the enumeration or a
    sampled value in "kwh" was refused whole: the session stayed ACTIVE and its card
    answered ConcurrentTx everywhere (QA s20). Now the bad field is left out (the reason
    read as Other, the sampled value dropped), logged once per rule and connection; its
    core (transactionId, meterStop, timestamp) is still checked."""
    ws = await raw(central)

    async def call(uid: str, action: str, payload: dict) -> list:
        return await exchange(ws, json.dumps([2, uid, action, payload]))

    async def start(uid: str, connector: int) -> int:
        answer = await call(uid, "StartTransaction", {
            "connectorId": connector, "idTag": "TAG-OK", "meterStart": 100,
            "timestamp": now()})
        return answer[2]["transactionId"]

    def stop(tx: int, **extra: object) -> dict:
        return {"transactionId": tx, "meterStop": 600, "timestamp": now(), **extra}

    sample = {"timestamp": now(), "sampledValue": [
        {"value": "0.7", "unit": "kwh", "measurand": "Energy.Active.Import.Register"},
        {"value": "31", "unit": "Celsius", "measurand": "Temperature"}]}
    try:
        with caplog.at_level(logging.WARNING, logger="chargegraph.ocpp"):
            long_tag = await start("s1", 1)
            answer = await call("e1", "StopTransaction",
                                stop(long_tag, idTag="ABCDEFGHIJKLMNOPQRSTU"))
            assert answer[:3] == [3, "e1", {}], answer  # no idTagInfo for no idTag
            odd_reason = await start("s2", 1)
            answer = await call("e2", "StopTransaction", stop(odd_reason,
                                                              reason="EVDisconnect"))
            assert answer[0] == 3, answer
            kwh = await start("s3", 1)
            answer = await call("e3", "StopTransaction", stop(kwh, transactionData=[sample]))
            assert answer[0] == 3, answer
            again = await start("s4", 1)  # the same unit again: not logged again
            await call("e4", "StopTransaction", stop(again, transactionData=[sample]))
            # The core is still checked, and refused with the 1.6 code.
            open_one = await start("s5", 2)
            for uid, payload, code in (
                    ("c1", stop(open_one, transactionId=str(open_one)),
                     "TypeConstraintViolation"),
                    ("c2", {"transactionId": open_one, "timestamp": now(),
                            "reason": "EVDisconnect"}, "OccurenceConstraintViolation"),
                    ("c3", stop(open_one, timestamp="soon"), "TypeConstraintViolation")):
                answer = await call(uid, "StopTransaction", payload)
                assert answer[:3] == [4, uid, code], answer
    finally:
        await ws.close()
    for tx in (long_tag, odd_reason, kwh, again):
        session = await central.session(tx)
        assert session is not None and session.state is d.SessionState.COMPLETED, tx
        assert session.meter_stop_wh == 600
    assert (await central.session(odd_reason)).stop_reason == "Other"  # type: ignore[union-attr]
    assert (await central.session(open_one)).state is d.SessionState.ACTIVE  # type: ignore[union-attr]
    kept = await central.store.find_all(d.MeterSample, Eq("transaction_id", kwh))
    # The temperature beside it kept; the register is the stop's closing sample only.
    assert sorted((s.measurand, s.value) for s in kept) == [
        ("Energy.Active.Import.Register", 600.0), ("Temperature", 31.0)]
    assert caplog.text.count("idTag must be shorter than or equal to 20") == 1
    assert caplog.text.count("reason must be one of") == 1
    assert caplog.text.count("sampledValue[0].unit must be one of") == 1


async def test_meter_values_and_status_reports_lose_only_the_bad_field(
        central: Central) -> None:
    """A MeterValues frame is kept without a sampled value the schema refuses (and
    refused when none would be left); a status report without an ``info`` or vendor code
    longer than 1.6 allows. Other actions keep the schema's letter: a start with a
    21-character idTag is still refused."""
    ws = await raw(central)

    async def call(uid: str, action: str, payload: dict) -> list:
        return await exchange(ws, json.dumps([2, uid, action, payload]))

    def reading(*values: dict) -> dict:
        return {"connectorId": 1, "meterValue": [{"timestamp": now(),
                                                  "sampledValue": list(values)}]}

    try:
        kept = await call("m1", "MeterValues", reading({"value": "1200"},
                                                       {"value": "7", "unit": "kwh"}))
        assert kept[0] == 3, kept
        refused = await call("m2", "MeterValues", reading({"value": "7", "unit": "kwh"}))
        assert refused[:3] == [4, "m2", "PropertyConstraintViolation"], refused
        status = await call("n1", "StatusNotification", {
            "connectorId": 2, "status": "Faulted", "errorCode": "OtherError",
            "info": "contactor welded, see service manual section 12.4.7 (rev B)",
            "vendorErrorCode": "E" * 51})
        assert status[0] == 3, status
        start = await call("s1", "StartTransaction", {
            "connectorId": 1, "idTag": "ABCDEFGHIJKLMNOPQRSTU", "meterStart": 0,
            "timestamp": now()})
        assert start[:3] == [4, "s1", "TypeConstraintViolation"], start
    finally:
        await ws.close()
    samples = await central.store.find_all(d.MeterSample, Eq("cp_id", "CP-1"))
    assert [s.value for s in samples] == [1200.0]
    faulted = [c for c in await central.store.find_all(d.Connector, Eq("cp_id", "CP-1"))
               if c.connector_id == 2]
    assert faulted[0].status is d.ConnectorStatus.FAULTED
    assert faulted[0].info is None and faulted[0].vendor_error_code is None


async def test_sampled_values_sent_as_numbers_are_read_as_their_text(
        central: Central, caplog: pytest.LogCaptureFixture) -> None:
    """A charger writing its readings as JSON numbers ("value": 1200.5) had every
    MeterValues frame refused (each sampled value left out, nothing left: the session's
    live energy never moved) and its stop's readings dropped. A number is the same
    reading as its text: read so, logged once per connection; a value of another kind
    is still left out."""
    ws = await raw(central)

    async def call(uid: str, action: str, payload: dict) -> list:
        return await exchange(ws, json.dumps([2, uid, action, payload]))

    energy = "Energy.Active.Import.Register"
    try:
        with caplog.at_level(logging.WARNING, logger="chargegraph.ocpp"):
            started = await call("s1", "StartTransaction", {
                "connectorId": 1, "idTag": "TAG-OK", "meterStart": 1000,
                "timestamp": now()})
            tx = started[2]["transactionId"]
            metered = await call("m1", "MeterValues", {
                "connectorId": 1, "transactionId": tx, "meterValue": [{
                    "timestamp": now(), "sampledValue": [
                        {"value": 1500, "measurand": energy, "unit": "Wh"},
                        {"value": 7.4, "measurand": "Power.Active.Import", "unit": "kW"},
                        {"value": {"odd": 1}, "measurand": "Temperature"}]}]})
            assert metered[:3] == [3, "m1", {}], metered
            live = await central.session(tx)
            assert live is not None and live.energy_wh == 500
            stopped = await call("e1", "StopTransaction", {
                "transactionId": tx, "meterStop": 1800, "timestamp": now(),
                "transactionData": [{"timestamp": now(), "sampledValue": [
                    {"value": 31, "measurand": "Temperature", "unit": "Celsius"}]}]})
            assert stopped[:3] == [3, "e1", {}], stopped
    finally:
        await ws.close()
    kept = await central.store.find_all(d.MeterSample, Eq("transaction_id", tx))
    values = sorted((s.measurand, s.value) for s in kept)
    assert ("Power.Active.Import", 7.4) in values and ("Temperature", 31.0) in values
    assert (energy, 1500.0) in values
    assert caplog.text.count("sampledValue[0].value must be string") == 2  # once each


async def test_strict_schema_mends_nothing(tmp_path: Path) -> None:
    """``CHARGEGRAPH_OCPP_STRICT_SCHEMA``: the 1.6 schemas' letter, for testing a
    charger: a stop with a reason outside the enumeration is refused."""
    central = await start_central(tmp_path / "strict.db", strict_schema=True)
    await seed(central)
    ws = await raw(central)
    try:
        answer = await exchange(ws, json.dumps([2, "e1", "StopTransaction", {
            "transactionId": 1, "meterStop": 5, "timestamp": now(),
            "reason": "EVDisconnect"}]))
        assert answer[:3] == [4, "e1", "PropertyConstraintViolation"], answer
    finally:
        await ws.close()
        await stop_central(central)


async def test_a_charger_registers_its_connectors_one_by_one(tmp_path: Path) -> None:
    """A station with no connectors (auto-registered, or created without them) learns
    them from the charger's reports, in the order chargers send them; commands may only
    address those it has."""
    central = await start_central(tmp_path / "auto.db", auto_register=True)
    try:
        async with connected(central.url, "NEW-CP-2") as cp:
            await cp.boot()
            for connector_id in (0, 1, 2, 3):
                await cp.call(call.StatusNotification(connector_id=connector_id,
                                                      error_code="NoError",
                                                      status="Available"))
            station = await central.store.find_one(d.Station, Eq("cp_id", "NEW-CP-2"))
            assert station is not None
            await central.services.stations.update_station(
                SYSTEM, station.id, registration=d.Registration.ACCEPTED)
            transaction, _ = await cp.start_transaction(2, "ANY-TAG")
            assert transaction > 0
            registered = await central.store.find_all(d.Connector,
                                                      Eq("station_id", station.id))
            assert sorted(c.connector_id for c in registered) == [1, 2, 3]
            with pytest.raises(ValidationError) as refused:
                await central.services.commands.send(SYSTEM, "NEW-CP-2", "UnlockConnector",
                                                     {"connectorId": 4})
            assert (refused.value.field, refused.value.code) == ("connectorId",
                                                                 "OUT_OF_RANGE")
    finally:
        await stop_central(central)


BAD_FRAMES = [
    ("not json at all", "FormationViolation"),
    ('{"an": "object"}', "FormationViolation"),
    ('[2, "u1", "Heartbeat"', "FormationViolation"),  # truncated
    ('[2, "u2", "Heartbeat"]', "FormationViolation"),  # missing payload
    ('[2, "u3", "Heartbeat", []]', "FormationViolation"),  # payload not an object
    ('[7, "u4", "Heartbeat", {}]', "FormationViolation"),  # unknown message type
    ('[2, "u5", "FlyToTheMoon", {}]', "NotImplemented"),
    ('[2, "u6", "SecurityEventNotification", {"type": "x", "timestamp": "2026-01-01T00:00:00Z"}]',
     "NotSupported"),
    ('[2, "u7", "BootNotification", {"chargePointVendor": "v"}]',
     "OccurenceConstraintViolation"),
    ('[2, "u8", "StatusNotification", {"connectorId": "1", "errorCode": "NoError", '
     '"status": "Available"}]', "TypeConstraintViolation"),
    ('[2, "u9", "StatusNotification", {"connectorId": 1, "errorCode": "Oops", '
     '"status": "Available"}]', "PropertyConstraintViolation"),
    ('[2, "u11", "Authorize", {"idTag": "123456789012345678901"}]',
     "TypeConstraintViolation"),
    ('[2, "u12", "StatusNotification", {"connectorId": 11, "errorCode": "NoError", '
     '"status": "Available"}]', "PropertyConstraintViolation"),  # beyond what registers
    ('[2, "u13", "StartTransaction", {"connectorId": 1, "idTag": "TAG-OK", "meterStart": 0, '
     '"timestamp": "yesterday"}]', "TypeConstraintViolation"),
    *[(frame, "PropertyConstraintViolation") for frame in [
        # registers beyond any meter, or negative
        '[2, "r1", "StartTransaction", {"connectorId": 1, "idTag": "TAG-OK", '
        '"meterStart": 10000000000000000, "timestamp": "2026-01-01T00:00:00Z"}]',
        '[2, "r2", "StartTransaction", {"connectorId": 1, "idTag": "TAG-OK", '
        '"meterStart": -5, "timestamp": "2026-01-01T00:00:00Z"}]',
        # (not a StopTransaction's meterStop: taken, billed what was metered,
        # test_meter_anomalies.py)
        # instants overflowing in UTC, or outside 1970..2199
        '[2, "t1", "StartTransaction", {"connectorId": 1, "idTag": "TAG-OK", '
        '"meterStart": 0, "timestamp": "0001-01-01T00:00:00+01:00"}]',
        '[2, "t2", "StartTransaction", {"connectorId": 1, "idTag": "TAG-OK", '
        '"meterStart": 0, "timestamp": "9999-12-31T23:59:59-01:00"}]',
        '[2, "t3", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", '
        '"status": "Available", "timestamp": "1969-12-31T23:59:59Z"}]',
        '[2, "t4", "StopTransaction", {"transactionId": 1, "meterStop": 5, '
        '"timestamp": "2200-01-01T00:00:00Z"}]',
        # sampled values that are not finite numbers of a sane size, nothing else in
        # their frame (beside a readable one, they are left out and the frame kept)
        *[json.dumps([2, f"v{i}", "MeterValues", {"connectorId": 1, "meterValue": [{
            "timestamp": "2026-01-01T00:00:00Z",
            "sampledValue": [{"value": value}]}]}])
          for i, value in enumerate(["NaN", "1e309", "-inf", "-1e308",
                                     # numbers Python reads but no meter writes (ASCII
                                     # blanks around one are left out: " 5" is 5)
                                     "1_000", "\u00a05", "\u0661\u0662", "12\u2028"])],
        '[2, "v9", "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": '
        '"0001-01-01T00:00:00Z", "sampledValue": [{"value": "1"}]}]}]',
        '[2, "v10", "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": '
        '"2250-01-01T00:00:00Z", "sampledValue": [{"value": "1"}]}]}]',
    ]],
]


async def test_a_call_that_is_not_json_is_refused_under_its_own_id(central: Central) -> None:
    """A lone surrogate escaped in a payload (no JSON text the spec allows) was answered
    under "-1": the charger could not tell which call failed."""
    ws = await raw(central)
    try:
        reply = await exchange(ws, '[2, "call-7", "Authorize", {"idTag": "\\ud800"}]')
        assert reply[:3] == [4, "call-7", "FormationViolation"], reply
        reply = await exchange(ws, "not json at all")
        assert reply[:3] == [4, "-1", "FormationViolation"], reply
    finally:
        await ws.close()


async def test_bad_frames_get_callerror_and_connection_stays(central: Central) -> None:
    ws = await raw(central)
    try:
        for frame, code in BAD_FRAMES:
            reply = await exchange(ws, frame)
            assert reply[0] == 4 and reply[2] == code, (frame, reply)
            assert isinstance(reply[3], str) and isinstance(reply[4], dict)
        ok = await exchange(ws, '[2, "fine", "Heartbeat", {}]')
        assert ok[0] == 3 and ok[1] == "fine" and ok[2]["currentTime"].endswith("Z")
    finally:
        await ws.close()
    # Refused frames left nothing behind: not the good value beside a bad one either.
    for kind in (d.Session, d.MeterSample, d.StatusEvent):
        assert await central.store.count(kind, Eq("cp_id", "CP-1")) == 0, kind
    # Nor did they move the charger's clock (what timestamps of later reports go by).
    assert central.services.charging.clocks.charger_now("CP-1").year < 2200


async def test_values_out_of_range_are_told_with_their_field_and_limit(
        central: Central) -> None:
    """QA s32: a meterStart of -5 was told "must be within 0..1000000000000", without the
    field a schema error names; a StartTransaction on connector 99 of a station of 2 was
    told it "exceeds this station's 10", the cap on connectors not registered yet, not
    the station's count. A command names the station's own highest."""
    def start(**given: object) -> call.StartTransaction:
        fields: dict = {"connector_id": 1, "id_tag": "TAG-OK", "meter_start": 0,
                        "timestamp": now(), **given}
        return call.StartTransaction(**fields)

    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        assert (await cp.boot()).status == "Accepted"
        for frame, told in (
                (start(connector_id=99), "connectorId 99 exceeds 10, the highest number a "
                                         "connector not registered may have"),
                (start(meter_start=-5), "meterStart: must be within 0..1000000000000"),
                (call.StatusNotification(connector_id=1, error_code="NoError",
                                         status="Available", timestamp="1969-12-31T23:59:59Z"),
                 "timestamp: must be within 1970..2199")):
            with pytest.raises(PropertyConstraintViolationError) as refused:
                await cp.call(frame, suppress=False)
            assert refused.value.description == told, frame
    with pytest.raises(ValidationError) as refused_command:
        await central.services.commands.send(SYSTEM, "CP-1", "UnlockConnector",
                                             {"connectorId": 3})
    assert refused_command.value.message == "connectorId 3 exceeds this station's highest, 2"


async def test_sane_edge_values_are_kept(central: Central) -> None:
    """An unset charger clock (the Unix epoch), a register beyond 32 bits and exported
    power (a negative sample) are real reports, not errors."""
    ws = await raw(central)

    async def call(action: str, payload: dict) -> list:
        return await exchange(ws, json.dumps([2, action, action, payload]))

    try:
        start = await call("StartTransaction", {
            "connectorId": 1, "idTag": "TAG-OK", "meterStart": 5_000_000_000,
            "timestamp": "1970-01-01T00:00:00Z"})
        assert start[0] == 3, start
        tx = start[2]["transactionId"]
        values = await call("MeterValues", {
            "connectorId": 1, "transactionId": tx, "meterValue": [{
                "timestamp": "1970-01-01T00:10:00Z", "sampledValue": [{
                    "value": "-7400", "measurand": "Power.Active.Import", "unit": "W"}]}]})
        assert values[0] == 3, values
        stop = {"transactionId": tx, "meterStop": 5_000_001_000}
        refused = await call("StopTransaction", {**stop, "timestamp": "1969-12-31T23:59:59Z"})
        assert refused[0] == 4 and refused[2] == "PropertyConstraintViolation", refused
        stopped = await call("StopTransaction", {**stop, "timestamp": "1970-01-01T00:20:00Z"})
        assert stopped[0] == 3, stopped
    finally:
        await ws.close()
    session = await central.session(tx)
    assert session is not None and session.meter_start_wh == 5_000_000_000
    assert session.energy_wh == 1000 and session.end_time is not None
    samples = await central.store.find_all(d.MeterSample, Eq("transaction_id", tx))
    assert -7400.0 in [sample.value for sample in samples]


async def test_whole_numbers_written_as_decimals_are_read_as_integers(central: Central
                                                                      ) -> None:
    """JSON has one number type: ``1.0`` where OCPP wants an integer is that integer."""
    ws = await raw(central)

    async def call(action: str, payload: dict) -> list:
        return await exchange(ws, json.dumps([2, action, action, payload]))

    try:
        status = await call("StatusNotification", {"connectorId": 1.0, "errorCode": "NoError",
                                                   "status": "Preparing"})
        assert status[0] == 3, status
        start = await call("StartTransaction", {"connectorId": 1.0, "idTag": "TAG-OK",
                                                "meterStart": 1000.0, "timestamp": now()})
        assert start[0] == 3, start
        tx = start[2]["transactionId"]
        values = await call("MeterValues", {
            "connectorId": 1.0, "transactionId": float(tx), "meterValue": [{
                "timestamp": now(), "sampledValue": [{"value": "1500"}]}]})
        assert values[0] == 3, values
        stopped = await call("StopTransaction", {"transactionId": float(tx),
                                                 "meterStop": 3000.0, "timestamp": now()})
        assert stopped[0] == 3, stopped
        fraction = await call("StopTransaction", {"transactionId": tx, "meterStop": 3000.5,
                                                  "timestamp": now()})
        assert fraction[0] == 4 and fraction[2] == "TypeConstraintViolation", fraction
    finally:
        await ws.close()
    session = await central.session(tx)
    assert session is not None and session.state is d.SessionState.COMPLETED
    assert (session.meter_start_wh, session.energy_wh) == (1000, 2000)


async def test_callerror_keeps_unique_id(central: Central) -> None:
    ws = await raw(central)
    try:
        reply = await exchange(ws, '[2, "abc-123", "Nope", {}]')
        assert reply[:3] == [4, "abc-123", "NotImplemented"]
    finally:
        await ws.close()


async def test_a_unique_id_longer_than_36_characters_is_answered_under_itself(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A charger writing its uniqueIds as braced GUIDs (38 characters) had every CALL
    refused, its boot too (it never charged), and refused under the id cut to 36
    characters: it could not match the CALLERROR to its call and waited out its
    timeout. Now it is answered under its own id; strict, refused under it."""
    long_id = "{0f8fad5b-d9cb-469f-a165-70867728950e}"
    for strict in (False, True):
        central = await start_central(tmp_path / f"strict-{strict}.db", strict_schema=strict)
        await seed(central)
        ws = await raw(central)
        try:
            with caplog.at_level(logging.WARNING, logger="chargegraph.ocpp"):
                booted = await exchange(ws, json.dumps([2, long_id, "BootNotification", {
                    "chargePointVendor": "V", "chargePointModel": "M"}]))
                beat = await exchange(ws, json.dumps([2, long_id + "x", "Heartbeat", {}]))
            if strict:
                assert booted[:3] == [4, long_id, "FormationViolation"], booted
                assert beat[:3] == [4, long_id + "x", "FormationViolation"], beat
            else:
                assert booted[:2] == [3, long_id], booted
                assert booted[2]["status"] == "Accepted", booted
                assert beat[:2] == [3, long_id + "x"], beat
                assert caplog.text.count("longer than OCPP-J's 36 characters") == 1
        finally:
            await ws.close()
            await stop_central(central)


async def test_second_connection_replaces_first(central: Central) -> None:
    first = await raw(central)
    second = await raw(central)
    try:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(first.recv(), 5)
        reply = await exchange(second, '[2, "h", "Heartbeat", {}]')
        assert reply[0] == 3
        assert central.gateway.connected() == ["CP-1"]
        station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        assert station is not None and station.online  # the old socket's close is ignored
    finally:
        await second.close()


async def test_restart_loses_no_session(tmp_path: Path) -> None:
    path = tmp_path / "restart.db"
    central = await start_central(path)
    await seed(central)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        cp.connectors[1].meter_wh = 1_000
        tx, _ = await cp.start_transaction(1, "TAG-OK")
    await stop_central(central)

    central = await start_central(path)  # a new process on the same database
    try:
        session = await central.session(tx)
        assert session is not None and session.state is d.SessionState.ACTIVE
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            cp.connectors[1].transaction_id = tx
            cp.connectors[1].meter_wh = 8_000
            cp.connectors[1].id_tag = "TAG-OK"
            await cp.stop_transaction(1)
        done = await central.session(tx)
        assert done is not None and done.state is d.SessionState.COMPLETED
        assert done.energy_wh == 7_000
    finally:
        await stop_central(central)


async def test_timestamps_without_zone_are_read_as_utc(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        tx, _ = await cp.start_transaction(1, "TAG-OK", timestamp="2026-03-01T10:00:00")
    session = await central.session(tx)
    assert session is not None and session.start_time.isoformat() == "2026-03-01T10:00:00+00:00"
    assert now().endswith("Z")


async def test_start_up_closes_connections_a_crash_left_open(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    central = await start_central(path)
    await seed(central)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.status(1, "Available")
        # The process dies here: no disconnect is ever recorded.
        await central.store.close()
        await central.server.stop()
    central = await start_central(path)
    try:
        station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        assert station is not None and not station.online
        events = await central.store.find_all(d.ConnectionEvent, Eq("cp_id", "CP-1"))
        assert [e.online for e in sorted(events, key=lambda e: e.at)] == [True, False]
        open_intervals = await central.store.find_all(
            d.ConnectorInterval, Eq("cp_id", "CP-1"))
        current = [i for i in open_intervals if i.end is None]
        assert all(not i.online for i in current) and current
    finally:
        await stop_central(central)


async def test_an_identity_with_a_colon_is_no_new_station_nor_one_with_a_password(
        central: Central) -> None:
    """QA (s16): "AB:1" was created with a password its charger could never sign in with
    (Basic auth's user name ends at the first colon). New identities leave ':' out; a
    station stored with one before still connects without a password, and is not given
    one."""
    with pytest.raises(ValidationError) as refused:
        await central.services.stations.create_station(SYSTEM, cp_id="AB:1", name="colon")
    assert (refused.value.field, refused.value.code) == ("cpId", "INVALID")
    older = d.Station(cp_id="OLD:1", name="stored before", company_id=None)
    await central.store.write([Insert(stamp_new(older, SYSTEM))], [])
    async with connected(central.url, "OLD:1") as cp:
        assert (await cp.boot()).status == "Accepted"
    with pytest.raises(ValidationError) as no_password:
        await central.services.stations.update_station(SYSTEM, older.id,
                                                       password="long-enough-pw")
    assert (no_password.value.field, no_password.value.code) == ("password", "INVALID")


async def test_the_base_path_and_dot_segments_are_no_new_station_s_identity(
        central: Central) -> None:
    """Brief x33-secfix: "ocpp" (the bare /ocpp connected as it), "." and ".." (which URL
    clients rewrite) were taken by createStation. A station stored with one before still
    connects."""
    for cp_id in ("ocpp", "OCPP", ".", ".."):
        with pytest.raises(ValidationError) as refused:
            await central.services.stations.create_station(SYSTEM, cp_id=cp_id, name="x")
        assert (refused.value.field, refused.value.code) == ("cpId", "INVALID"), cp_id
    older = d.Station(cp_id="ocpp", name="stored before", company_id=None)
    await central.store.write([Insert(stamp_new(older, SYSTEM))], [])
    async with connected(central.url, "ocpp") as cp:
        assert (await cp.boot()).status == "Accepted"


@pytest.mark.parametrize("stamp", ["2026-02-30T10:00:00Z", "0001-01-01T00:30:00+01:00",
                                   "2026-13-01T10:00:00Z"])
async def test_a_reading_dated_on_no_real_instant_is_left_out_not_the_stop(
        central: Central, stamp: str) -> None:
    """Review s20: a reading whose timestamp fits the schema's pattern but is no instant
    (February 30th, month 13, before year 1 in UTC) refused the whole StopTransaction,
    leaving its session ACTIVE; and a MeterValues lost the good readings beside it. It
    is left out as one the schema refuses; a MeterValues with nothing else is refused."""
    ws = await raw(central)
    try:
        started = await exchange(ws, json.dumps([2, "s1", "StartTransaction", {
            "connectorId": 1, "idTag": "TAG-OK", "meterStart": 100, "timestamp": now()}]))
        tx = started[2]["transactionId"]
        bad = {"timestamp": stamp, "sampledValue": [{"value": "31",
                                                     "measurand": "Temperature"}]}
        good = {"timestamp": now(), "sampledValue": [{"value": "400"}]}
        kept = await exchange(ws, json.dumps([2, "m1", "MeterValues", {
            "connectorId": 1, "transactionId": tx, "meterValue": [good, bad]}]))
        assert kept[0] == 3, kept
        alone = await exchange(ws, json.dumps([2, "m2", "MeterValues", {
            "connectorId": 1, "transactionId": tx, "meterValue": [bad]}]))
        assert alone[0] == 4, alone
        stopped = await exchange(ws, json.dumps([2, "e1", "StopTransaction", {
            "transactionId": tx, "meterStop": 600, "timestamp": now(),
            "transactionData": [{"timestamp": now(), "sampledValue": [{"value": "600"}]},
                                bad]}]))
        assert stopped[0] == 3, stopped
    finally:
        await ws.close()
    session = await central.session(tx)
    assert session is not None and session.state is d.SessionState.COMPLETED
    assert session.energy_wh == 500
