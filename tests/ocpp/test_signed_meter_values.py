"""Signed meter values (German calibration law, OCMF, other vendors' SignedData) through a
real websocket with the ``ocpp`` package's client as the charge point: every one of a
session is kept as sent, in MeterValues and in StopTransaction's transactionData, once
however often a frame repeats, and shown under the session to whoever sees it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ocpp.v16 import call

from domain import entities as d
from domain.query import Eq, Sort
from ocpp_bridge.simulator import SimulatedChargePoint, connected
from tests.contract.factories import OCMF
from tests.ocpp.conftest import STATION_PASSWORD, Central

#: An OCMF record a charger signs at the transaction's end.
OCMF_END = OCMF.replace('"PG":"T12345"', '"PG":"T12346"')


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def signed(data: str, context: str = "Sample.Periodic") -> dict[str, Any]:
    return {"value": data, "format": "SignedData", "context": context,
            "measurand": "Energy.Active.Import.Register", "location": "Outlet"}


class Charger:
    """A charger on connector 1 whose frames are a minute apart on its clock."""

    def __init__(self, cp: SimulatedChargePoint) -> None:
        self.cp = cp
        self.at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
        self.tx = 0

    async def start(self) -> None:
        answer = await self.cp.call(call.StartTransaction(
            connector_id=1, id_tag="TAG-OK", meter_start=1_000, timestamp=iso(self.at)))
        self.tx = answer.transaction_id

    def reading(self, *values: dict[str, Any]) -> dict[str, Any]:
        self.at += timedelta(minutes=1)
        return {"timestamp": iso(self.at), "sampledValue": list(values)}

    async def meter_values(self, reading: dict[str, Any], *,
                           with_transaction: bool = True) -> None:
        await self.cp.call(call.MeterValues(
            connector_id=1, transaction_id=self.tx if with_transaction else None,
            meter_value=[reading]))

    async def stop(self, meter_stop: int, *readings: dict[str, Any]) -> None:
        self.at += timedelta(minutes=1)
        await self.cp.call(call.StopTransaction(
            meter_stop=meter_stop, timestamp=iso(self.at), transaction_id=self.tx,
            transaction_data=list(readings) or None))


async def stored(central: Central, **equal: Any) -> list[d.SignedMeterValue]:
    from domain.query import all_of

    return await central.store.find_all(
        d.SignedMeterValue, all_of(*(Eq(k, v) for k, v in equal.items())), (Sort("at"),))


async def test_a_session_s_signed_values_are_kept_from_meter_values_and_its_stop(
        central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start()
        await charger.meter_values(charger.reading(
            {"value": "1000", "context": "Transaction.Begin"},
            signed(OCMF, "Transaction.Begin")))
        # transactionId left out: the session active on the connector, as for numbers.
        await charger.meter_values(charger.reading(signed("AAECAwQF")),
                                   with_transaction=False)
        await charger.stop(13_000, charger.reading(
            {"value": "13000", "context": "Transaction.End"},
            signed(OCMF_END, "Transaction.End")))
    session = await central.session(charger.tx)
    assert session is not None and session.state is d.SessionState.COMPLETED
    assert session.energy_wh == 12_000  # the signed values counted as no numbers
    values = await stored(central, session_id=session.id)
    assert [(v.context, v.encoding, v.data) for v in values] == [
        ("Transaction.Begin", d.SignedEncoding.OCMF, OCMF),
        ("Sample.Periodic", d.SignedEncoding.UNKNOWN, "AAECAwQF"),
        ("Transaction.End", d.SignedEncoding.OCMF, OCMF_END)]
    first = values[0]
    assert (first.station_id, first.cp_id, first.connector_id, first.transaction_id,
            first.measurand, first.location, first.phase, first.truncated) == (
        central.stations["CP-1"].id, "CP-1", 1, charger.tx,
        "Energy.Active.Import.Register", "Outlet", None, False)


async def test_a_repeated_frame_or_stop_writes_nothing_new(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start()
        reading = charger.reading(signed(OCMF, "Transaction.Begin"))
        await charger.meter_values(reading)
        await charger.meter_values(reading)  # its answer was lost: sent again
        end = charger.reading(signed(OCMF_END, "Transaction.End"))
        await charger.stop(2_000, end)
        charger.at -= timedelta(minutes=1)
        await charger.stop(2_000, end)  # the stop too
    session = await central.session(charger.tx)
    assert session is not None
    assert [v.context for v in await stored(central, session_id=session.id)] == [
        "Transaction.Begin", "Transaction.End"]


async def test_signed_values_of_an_unknown_transaction_are_kept_unlinked(
        central: Central) -> None:
    """As its numeric samples are: it may come before its StartTransaction."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        charger.tx = 424242
        await charger.meter_values(charger.reading(signed(OCMF)))
    [kept] = await stored(central, transaction_id=424242)
    assert kept.session_id is None and kept.data == OCMF and kept.cp_id == "CP-1"


async def test_a_signed_value_beyond_the_bound_is_kept_cut_and_the_stop_accepted(
        central: Central) -> None:
    too_long = OCMF + "0" * d.MAX_SIGNED_DATA
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start()
        await charger.stop(3_000, charger.reading(signed(too_long, "Transaction.End")))
    session = await central.session(charger.tx)
    assert session is not None and session.state is d.SessionState.COMPLETED
    [kept] = await stored(central, session_id=session.id)
    assert kept.truncated and kept.data == too_long[:d.MAX_SIGNED_DATA]
    assert kept.data_length == len(too_long)


SIGNED_QUERY = """query($after: String) { sessions(first: 5) { nodes { transactionId
  signedMeterValues(first: 2, after: $after) { totalCount
    pageInfo { hasNextPage endCursor }
    nodes { at context measurand encoding data truncated dataLength
      ocmf { version meterSerial pagination signatureAlgorithm
        readings { time timeStatus transaction value unit identification status } } } } } } }"""


async def signed_shown(central: Central, as_user: str | None, tx: int,
                       after: str | None = None) -> dict[str, Any] | None:
    data = await central.gql(SIGNED_QUERY, {"after": after}, as_user=as_user)
    assert "errors" not in data, data
    found = [s for s in (data["sessions"] or {"nodes": []})["nodes"]
             if s["transactionId"] == tx]
    return found[0]["signedMeterValues"] if found else None


async def test_the_session_shows_its_signed_values_oldest_first_with_ocmf_read_out(
        central: Central) -> None:
    malformed = 'OCMF|{"FV":"1.0","RD":[{"RV":1}]|{"SD":"00"}'  # the payload's brace lost
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start()
        await charger.meter_values(charger.reading(signed(OCMF, "Transaction.Begin")))
        await charger.meter_values(charger.reading(signed(malformed)))
        await charger.stop(13_000, charger.reading(signed("AAECAwQF", "Transaction.End")))
    first = await signed_shown(central, "driver", charger.tx)
    assert first is not None and first["totalCount"] == 3
    assert first["pageInfo"]["hasNextPage"]
    begin, broken = first["nodes"]
    assert (begin["context"], begin["measurand"], begin["encoding"], begin["data"],
            begin["truncated"], begin["dataLength"]) == (
        "TRANSACTION_BEGIN", "ENERGY_ACTIVE_IMPORT_REGISTER", "OCMF", OCMF, False,
        len(OCMF))
    assert begin["ocmf"] == {
        "version": "1.0", "meterSerial": "BQ27400330016", "pagination": "T12345",
        "signatureAlgorithm": "ECDSA-secp256r1-SHA256",
        "readings": [
            {"time": "2018-07-24T11:22:04.000Z", "timeStatus": "S", "transaction": "B",
             "value": "2935.6", "unit": "kWh", "identification": "1-b:1.8.0",
             "status": "G"},
            {"time": "2018-07-24T12:02:11.250Z", "timeStatus": "S",
             "transaction": "E", "value": "2947.05", "unit": "kWh",
             "identification": "1-b:1.8.0", "status": "G"}]}
    # Not well-formed: shown as sent, its reading null, the query answered.
    assert (broken["encoding"], broken["data"], broken["ocmf"]) == ("OCMF", malformed, None)
    rest = await signed_shown(central, "driver", charger.tx,
                              after=first["pageInfo"]["endCursor"])
    assert rest is not None and not rest["pageInfo"]["hasNextPage"]
    [end] = rest["nodes"]
    assert (end["context"], end["encoding"], end["ocmf"]) == (
        "TRANSACTION_END", "UNKNOWN", None)


async def test_signed_values_are_seen_by_whoever_sees_the_session(central: Central) -> None:
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        charger = Charger(cp)
        await charger.start()
        await charger.stop(2_000, charger.reading(signed(OCMF_END, "Transaction.End")))
    for who in ("driver", "op", "admin"):
        shown = await signed_shown(central, who, charger.tx)
        assert shown is not None and shown["totalCount"] == 1, who
    for stranger in ("driver2", "op_other", None):
        assert await signed_shown(central, stranger, charger.tx) is None, stranger
