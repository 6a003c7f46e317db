"""What a command meets when its charger fails it, and frames at the size limit: a socket
dropped while a command waits, answers too malformed to read, a StopTransaction carrying
a long session's meter values. Raw websocket chargers against a real central system.

A command that must fail "at once" runs with a 30 s command timeout (and 30 s for the
charger's answer) and is given a few seconds: waiting for the timeout fails the test."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from domain import entities as d
from domain.errors import Conflict, StoreOutcomeUnknown
from domain.policy import SYSTEM
from domain.ports import Insert
from domain.query import ALL, Eq
from domain.services.commands import CommandOutcome
from ocpp_bridge.server import MAX_MESSAGE
from ocpp_bridge.simulator import basic_auth, connected
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central

#: Long enough that a command failing only at its timeout fails the test.
LONG_TIMEOUT = 30.0
#: How long a command that fails at once may take.
AT_ONCE = 5.0


@pytest.fixture(params=["direct", "relayed"])
async def slow_central(request: pytest.FixtureRequest, tmp_path: Path
                       ) -> AsyncIterator[Central]:
    """A central system whose commands wait ``LONG_TIMEOUT`` for an answer, sent directly
    and relayed as from another instance."""
    c = await start_central(tmp_path / "central.db", command_timeout=LONG_TIMEOUT,
                            relayed=request.param == "relayed")
    # Read per connection: chargers connecting from now on get 30 s to answer too.
    c.server.response_timeout = LONG_TIMEOUT
    await seed(c)
    yield c
    await stop_central(c)


async def charger(central: Central, cp_id: str = "CP-1") -> ClientConnection:
    return await connect(f"{central.url}/{cp_id}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                         additional_headers=basic_auth(cp_id, STATION_PASSWORD),
                         max_size=None)


async def receive(ws: ClientConnection) -> list[Any]:
    frame = json.loads(await asyncio.wait_for(ws.recv(), AT_ONCE))
    assert isinstance(frame, list)
    return frame


def command(central: Central, action: str = "ClearCache",
            payload: dict[str, Any] | None = None) -> asyncio.Task[CommandOutcome]:
    return asyncio.create_task(central.services.commands.send(SYSTEM, "CP-1", action,
                                                              payload or {}))


async def outcome_code(task: asyncio.Task[CommandOutcome]) -> str | None:
    """The error code the command ends with, within ``AT_ONCE`` seconds."""
    outcome = await asyncio.wait_for(task, AT_ONCE)
    return outcome.error.code if outcome.error is not None else None


async def still_answered_normally(ws: ClientConnection) -> None:
    """The charger got no CALLERROR for what it sent before: the next frame it receives
    is the answer to a Heartbeat, and the connection is still up."""
    await ws.send('[2, "hb-after", "Heartbeat", {}]')
    reply = await receive(ws)
    assert reply[:2] == [3, "hb-after"], reply


# ----------------------------------------------------------------- dropped sockets
@pytest.mark.parametrize("how", ["close", "abort"])
async def test_a_socket_dropped_mid_command_ends_it_at_once(
        slow_central: Central, how: str) -> None:
    """A closing handshake, or the TCP connection simply gone, ends the commands at once.
    The one the charger got may have been carried out (QA: a ReserveNow so answered was
    REJECTED while the charger held the plug): unanswered, CHARGER_TIMEOUT, its outcome
    unknown. The one queued behind it was never sent: CHARGER_OFFLINE."""
    ws = await charger(slow_central)
    first = command(slow_central, "ClearCache")
    request = await receive(ws)
    assert request[:3] == [2, request[1], "ClearCache"]
    second = command(slow_central, "Reset", {"type": "Soft"})  # waits behind the first
    await asyncio.sleep(0.1)  # lets it reach the charger's queue (not needed to pass)
    if how == "close":
        await ws.close()
    else:
        ws.transport.abort()
    assert await outcome_code(first) == "CHARGER_TIMEOUT"
    error = first.result().error
    assert error is not None and error.message == ("the charger went offline after "
                                                   "receiving the command; its outcome is "
                                                   "unknown")
    assert await outcome_code(second) == "CHARGER_OFFLINE"
    assert await outcome_code(command(slow_central)) == "CHARGER_OFFLINE"


async def test_a_reservation_sent_before_the_socket_dropped_stays_pending(
        slow_central: Central) -> None:
    """QA (t18): the charger got ReserveNow and its socket dropped before it answered.
    It may hold the plug: PENDING (cancellable; the connector stays reserved), not
    REJECTED."""
    soon = datetime.now(UTC) + timedelta(hours=1)
    ws = await charger(slow_central)
    reserve = command(slow_central, "ReserveNow", {"connectorId": 1, "idTag": "TAG-OK",
                                                   "expiryDate": soon})
    request = await receive(ws)
    assert request[2] == "ReserveNow"
    ws.transport.abort()
    outcome = await asyncio.wait_for(reserve, AT_ONCE)
    assert outcome.error is not None and outcome.error.code == "CHARGER_TIMEOUT"
    assert outcome.reservation is not None
    assert outcome.reservation.state is d.ReservationState.PENDING
    with pytest.raises(Conflict) as clash:  # the connector stays held
        await slow_central.services.commands.send(
            SYSTEM, "CP-1", "ReserveNow", {"connectorId": 1, "idTag": "TAG-OTHER",
                                           "expiryDate": soon})
    assert (clash.value.field, clash.value.code) == ("connectorId", "IN_USE")


# ----------------------------------------------------------------- malformed answers
MALFORMED_ANSWERS = [
    '[3, "{uid}"]',  # a CALLRESULT without its payload
    '[3, "{uid}", {{}}, "more"]',  # one element too many
    '[4, "{uid}", "InternalError", "boom"]',  # a CALLERROR without its details
    '[4, "{uid}"]',
    '[3, "{uid}", {{',  # broken JSON that still reads as a CALLRESULT for this call
    '[4 , "{uid}", "Intern',
]


@pytest.mark.parametrize("answer", MALFORMED_ANSWERS)
async def test_a_malformed_answer_is_charger_error_at_once_and_not_answered(
        slow_central: Central, answer: str) -> None:
    ws = await charger(slow_central)
    try:
        pending = command(slow_central)
        request = await receive(ws)
        await ws.send(answer.format(uid=request[1]))
        assert await outcome_code(pending) == "CHARGER_ERROR"
        outcome = pending.result()
        assert outcome.error is not None and "malformed" in outcome.error.message
        await still_answered_normally(ws)
        # The next command is sent and answered as usual.
        following = command(slow_central)
        request = await receive(ws)
        await ws.send(json.dumps([3, request[1], {"status": "Accepted"}]))
        assert await outcome_code(following) is None
        assert following.result().status == "Accepted"
    finally:
        await ws.close()


async def test_answers_that_match_no_command_are_ignored_not_answered(
        slow_central: Central) -> None:
    """Malformed or not, a CALLRESULT or CALLERROR never gets a CALLERROR back (OCPP-J
    answers CALLs only), and one for another call leaves the pending command waiting for
    its own answer."""
    ws = await charger(slow_central)
    try:
        for stray in ('[3, "nobody-asked"]', '[4, "nobody-asked", "GenericError"]',
                      '[3, 17, {}]', '[4]', '[3, "nobody-asked", {}]', '[3, "cut", {'):
            await ws.send(stray)
        await still_answered_normally(ws)
        pending = command(slow_central)
        request = await receive(ws)
        await ws.send('[3, "not-this-call"]')
        await ws.send('[4, "not-this-call", "GenericError", "x", {}, 5')
        await ws.send(json.dumps([3, request[1], {"status": "Accepted"}]))
        assert await outcome_code(pending) is None
        assert pending.result().status == "Accepted"
        await still_answered_normally(ws)
    finally:
        await ws.close()


# ----------------------------------------------------------------- frame size
def stop_transaction_frame(transaction_id: int, start: datetime, minutes: int) -> str:
    """A StopTransaction whose transactionData holds ``minutes`` one-minute samples of five
    measurands (about 620 bytes a minute), ending with the session."""
    def at(minute: int) -> str:
        return (start + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")

    data = [{"timestamp": at(m), "sampledValue": [
        {"value": str(m * 50), "context": "Sample.Periodic",
         "measurand": "Energy.Active.Import.Register", "unit": "Wh", "location": "Outlet"},
        {"value": "3000", "context": "Sample.Periodic", "measurand": "Power.Active.Import",
         "unit": "W", "location": "Outlet"},
        {"value": "13.0", "context": "Sample.Periodic", "measurand": "Current.Import",
         "unit": "A", "phase": "L1"},
        {"value": "230.0", "context": "Sample.Periodic", "measurand": "Voltage", "unit": "V",
         "phase": "L1-N"},
        {"value": "40", "context": "Sample.Periodic", "measurand": "SoC", "unit": "Percent",
         "location": "EV"}]} for m in range(1, minutes + 1)]
    return json.dumps([2, "stop-1", "StopTransaction", {
        "transactionId": transaction_id, "meterStop": minutes * 50, "timestamp": at(minutes),
        "transactionData": data}])


async def start_session(ws: ClientConnection, start: datetime) -> int:
    await ws.send(json.dumps([2, "start-1", "StartTransaction", {
        "connectorId": 1, "idTag": "TAG-OK", "meterStart": 0,
        "timestamp": start.strftime("%Y-%m-%dT%H:%M:%SZ")}]))
    reply = await receive(ws)
    assert reply[0] == 3, reply
    transaction_id = reply[2]["transactionId"]
    assert isinstance(transaction_id, int)
    return transaction_id


async def test_a_megabyte_stop_transaction_closes_its_session(central: Central) -> None:
    """28 hours of one-minute samples of five measurands: about 1 MB in one frame."""
    minutes = 28 * 60
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes + 1)
    ws = await charger(central)
    try:
        transaction_id = await start_session(ws, start)
        frame = stop_transaction_frame(transaction_id, start, minutes)
        assert 1_000_000 < len(frame) < 1_200_000
        await ws.send(frame)
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert reply[:2] == [3, "stop-1"], reply
    finally:
        await ws.close()
    session = await central.session(transaction_id)
    assert session is not None and session.state is d.SessionState.COMPLETED
    assert session.energy_wh == minutes * 50


async def test_a_frame_just_beyond_the_limit_closes_the_socket_with_1009(
        central: Central) -> None:
    """The limit still holds: a frame a few samples beyond it is refused unread."""
    minutes = MAX_MESSAGE // 620 + 10  # about 620 bytes a minute
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes)
    ws = await charger(central)
    transaction_id = await start_session(ws, start)
    frame = stop_transaction_frame(transaction_id, start, minutes)
    assert MAX_MESSAGE < len(frame) < MAX_MESSAGE + 64 * 1024
    await ws.send(frame)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    session = await central.session(transaction_id)
    assert session is not None and session.state is d.SessionState.ACTIVE


async def test_one_start_sent_twice_at_once_opens_one_session(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """A charger retrying a StartTransaction on a second socket: both copies get the one
    transaction, and no copy closes the other as a lost stop (a phantom session fee).
    Both copies looked for themselves before either was written (as on two instances)."""
    from domain.clock import utcnow

    both_looked = asyncio.Barrier(2)
    next_sequence = central.store.next_sequence

    async def after_both_looked(name: str) -> int:
        await asyncio.wait_for(both_looked.wait(), 5)
        return await next_sequence(name)

    monkeypatch.setattr(central.store, "next_sequence", after_both_looked)
    at = utcnow()
    answers = await asyncio.gather(*(
        central.services.charging.start_transaction("CP-1", 1, "TAG-OK", 1000, at)
        for _ in range(2)))
    assert len({tx for tx, _ in answers}) == 1, answers
    sessions = await central.store.find_all(d.Session, Eq("cp_id", "CP-1"))
    assert [(s.state, s.stop_reason) for s in sessions] == [(d.SessionState.ACTIVE, None)]
    assert await central.store.count(d.Payment, ALL) == 0


async def test_a_stop_and_an_end_session_racing_close_the_session_once(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """The charger's stop read the session while it was still open; an operator ended it
    before the stop wrote: the stop, failing to close it, reads it again and corrects
    the operator's close (as any stop after a close without it): one close each, no
    second payment, and increments that add up to what is billed."""
    from domain.clock import utcnow
    from domain.policy import Viewer

    charging = central.services.charging
    tx, _ = await charging.start_transaction("CP-1", 1, "TAG-OK", 1000, utcnow())
    session = await central.session(tx)
    assert session is not None
    find_one = central.store.find_one

    async def operator_ends_meanwhile(kind: Any, where: Any) -> Any:
        found = await find_one(kind, where)
        if kind is d.Session and found is not None and found.state is d.SessionState.ACTIVE:
            monkeypatch.setattr(central.store, "find_one", find_one)
            await charging.end_session(Viewer.of(central.users["op"]), session.id)
        return found

    monkeypatch.setattr(central.store, "find_one", operator_ends_meanwhile)
    await charging.stop_transaction("CP-1", tx, 9000, utcnow(), reason="EVDisconnected")
    done = await central.session(tx)
    assert done is not None and done.state is d.SessionState.COMPLETED
    assert (done.stop_reason, done.meter_stop_wh, done.energy_wh) == (
        "EVDisconnected", 9000, 8000)
    assert await central.store.count(d.Payment, Eq("session_id", session.id)) == 1
    # Its increments add up to what was billed.
    samples = await central.store.find_all(d.MeterSample, Eq("session_id", session.id))
    assert sum(s.delta_wh or 0 for s in samples) == done.energy_wh


async def test_a_connection_the_store_cannot_record_is_closed_to_try_again_later(
        central: Central, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A full disk while a charger connects: it is told to come back (1013), in one log
    line, not dropped by an unhandled error with a traceback."""
    import logging

    from domain.errors import StoreUnavailable
    from tests.ocpp.test_protocol import raw

    async def cannot_write(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("the store cannot write now", reason="database or disk is full")

    monkeypatch.setattr(central.services.charging, "connect", cannot_write)
    caplog.set_level(logging.INFO)
    ws = await raw(central)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1013
    assert "the store cannot write now (database or disk is full)" in caplog.text
    assert "Traceback" not in caplog.text and not any(
        r.levelno >= logging.ERROR for r in caplog.records)


async def test_a_start_whose_write_outcome_is_unknown_is_one_session_when_resent(
        central: Central, monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 30: a store write whose outcome is unknown (MongoDB's
    ``StoreOutcomeUnknown``, its session's insert standing) is answered a CALLERROR, as
    any store failure; nothing here writes it again, and the charger's resend of the
    transaction message is its first copy's transaction (``_StartIdentity``), not a
    second session."""
    real_write = central.store.write
    lost: list[str] = []

    async def answer_lost(changes: Any, *rest: Any) -> None:
        await real_write(changes, *rest)
        if not lost and any(isinstance(c, Insert) and isinstance(c.record, d.Session)
                            for c in changes):
            lost.append("start")
            raise StoreOutcomeUnknown("the database stopped answering", reason="timed out")

    monkeypatch.setattr(central.store, "write", answer_lost)
    stamp = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    start = call.StartTransaction(connector_id=1, id_tag="TAG-OK", meter_start=1_000,
                                  timestamp=stamp)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        assert await cp.call(start) is None  # a CALLERROR: the ocpp package says None
        assert lost == ["start"]
        again = await cp.call(start)  # the charger's resend of the same message
    sessions = await central.store.find_all(d.Session, ALL)
    assert [s.transaction_id for s in sessions] == [again.transaction_id]
