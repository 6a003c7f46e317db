"""Ids a charger sends that we can never have issued, through a real websocket with the
``ocpp`` package's client as the charge point: a transactionId or reservationId of 2**63
or more reached the store, whose integers end there, and the message was answered with an
InternalError the charger retries, its queue blocked behind it (QA). Such an id is
unknown, as a small one we do not know is."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from ocpp.routing import on
from ocpp.v16 import call
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action

from domain import entities as d
from domain.entities import MAX_ISSUED_ID
from domain.query import Eq
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_commands import run

#: Beyond SQLite's and BSON's integers, at their edge, and just past the ids we issue.
NEVER_ISSUED = [2**64 + 1, 2**63, MAX_ISSUED_ID + 1]


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("tx", NEVER_ISSUED)
async def test_a_transaction_id_we_never_issued_is_an_unknown_transaction(
        central: Central, tx: int, caplog: pytest.LogCaptureFixture) -> None:
    """Its MeterValues is kept unlinked (not on the session open on its connector) and
    its StopTransaction acknowledged, as an unknown transaction's; nothing fails."""
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    with caplog.at_level(logging.WARNING):
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            open_tx = (await cp.call(call.StartTransaction(
                connector_id=1, id_tag="TAG-OK", meter_start=1_000,
                timestamp=iso(at)))).transaction_id
            await cp.call(call.MeterValues(
                connector_id=1, transaction_id=tx, meter_value=[{
                    "timestamp": iso(at + timedelta(seconds=5)),
                    "sampledValue": [{"value": "1500"}]}]), suppress=False)
            stopped = await cp.call(call.StopTransaction(
                meter_stop=2_000, timestamp=iso(at + timedelta(seconds=10)),
                transaction_id=tx, id_tag="TAG-OK", transaction_data=[{
                    "timestamp": iso(at + timedelta(seconds=10)),
                    "sampledValue": [{"value": "2000"}]}]), suppress=False)
    assert stopped.id_tag_info["status"] == "Accepted"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("unknown here" in r.getMessage() for r in caplog.records)
    session = await central.session(open_tx)
    assert session is not None and session.state is d.SessionState.ACTIVE
    assert session.energy_wh == 0  # the other transaction's readings are not its own
    samples = await central.store.find_all(d.MeterSample, Eq("cp_id", "CP-1"), limit=50)
    assert sorted(s.value for s in samples) == [1_500, 2_000]
    assert all(s.session_id is None and s.transaction_id is None for s in samples)


async def test_a_reservation_id_we_never_issued_is_an_unknown_reservation(
        central: Central) -> None:
    """The start is accepted as one naming a reservation we do not hold."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        started = await cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=1_000,
            timestamp=iso(datetime.now(UTC)), reservation_id=2**64 + 1), suppress=False)
    assert started.id_tag_info["status"] == "Accepted"
    session = await central.session(started.transaction_id)
    assert session is not None and session.reservation_id is None


class HugeListVersion(SimulatedChargePoint):
    """Answers GetLocalListVersion with a version no 1.6 integer holds."""

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self) -> result.GetLocalListVersion:
        return result.GetLocalListVersion(list_version=2**63)


async def test_an_answer_with_an_integer_beyond_ocpps_is_a_charger_error(
        central: Central, caplog: pytest.LogCaptureFixture) -> None:
    """A GetLocalListVersion answered with listVersion 2**63: the command fails as one
    whose answer cannot be read, in words, instead of failing the request's GraphQL Int
    (32-bit) or whatever stores or relays it."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD,
                         charge_point=HugeListVersion) as cp:
        await cp.boot()
        with caplog.at_level(logging.ERROR):
            answer = await run(central, "getLocalListVersion", {"cpId": "CP-1"},
                               "listVersion")
    assert answer["listVersion"] is None
    [error] = answer["errors"]
    assert error["code"] == "CHARGER_ERROR" and "listVersion" in error["message"], error
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
