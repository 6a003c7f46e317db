"""What chargers report shows as GraphQL enums (DESIGN §6: enumerations, OCPP's included,
in SCREAMING_SNAKE_CASE): error codes, stop reasons, firmware and diagnostics statuses,
and a meter sample's unit, phase and context. The enums hold every value of the OCPP 1.6
schemas, and a stored value outside them reads as the documented fallback, not an
error (design audit s30: these were plain strings in OCPP's spelling)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

import ocpp
import pytest

from domain import entities as d
from domain import ocpp16
from domain.ports import Insert, Update
from domain.services import Services
from graph.ids import to_global_id
from tests.graph.conftest import Api
from tests.graph.world import World

SCHEMAS = os.path.join(os.path.dirname(ocpp.__file__), "v16", "schemas")
SAMPLED = ("MeterValues", "meterValue", "sampledValue")
#: ChargeGraph's own values, beside OCPP's (``entities.FIRMWARE_REQUESTED`` …).
OURS = {ocpp16.FirmwareStatus: {d.FIRMWARE_REQUESTED, d.FIRMWARE_UNANSWERED},
        ocpp16.DiagnosticsStatus: {d.DIAGNOSTICS_REQUESTED}}


def schema_enum(action: str, *path: str) -> set[str]:
    with open(os.path.join(SCHEMAS, f"{action}.json"), encoding="utf-8") as handle:
        node: Any = json.load(handle)
    for step in path:
        node = node["properties"][step]
        node = node.get("items", node)
    return set(node["enum"])


@pytest.mark.parametrize(("enum", "action", "path"), [
    (ocpp16.ChargePointErrorCode, "StatusNotification", ("errorCode",)),
    (ocpp16.Reason, "StopTransaction", ("reason",)),
    (ocpp16.FirmwareStatus, "FirmwareStatusNotification", ("status",)),
    (ocpp16.DiagnosticsStatus, "DiagnosticsStatusNotification", ("status",)),
    (ocpp16.UnitOfMeasure, SAMPLED[0], (*SAMPLED[1:], "unit")),
    (ocpp16.Phase, SAMPLED[0], (*SAMPLED[1:], "phase")),
    (ocpp16.ReadingContext, SAMPLED[0], (*SAMPLED[1:], "context")),
    (ocpp16.Location, SAMPLED[0], (*SAMPLED[1:], "location")),
])
def test_each_enum_reads_every_value_the_1_6_schema_lets_in(
        enum: type[StrEnum], action: str, path: tuple[str, ...]) -> None:
    values = schema_enum(action, *path)
    assert {ocpp16.member(enum, v) for v in values} == set(enum) - {
        enum(v) for v in OURS.get(enum, set())}
    assert {m.value for m in enum} - values == OURS.get(enum, set())
    assert all(m.name == m.name.upper() for m in enum)


T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

QUERY = """query($st: ID!, $c1: ID!, $c2: ID!, $s1: ID!, $s2: ID!) {
  st: node(id: $st) { ... on Station { errorCode firmwareStatus diagnosticsStatus
    connectors { statusHistory(first: 5) { nodes { errorCode } } } } }
  c1: node(id: $c1) { ... on Connector { errorCode } }
  c2: node(id: $c2) { ... on Connector { errorCode } }
  s1: node(id: $s1) { ... on Session { stopReason
    meterValues(first: 5) { nodes { unit phase context } } } }
  s2: node(id: $s2) { ... on Session { stopReason } } }"""


async def test_reported_values_read_as_names_and_strangers_as_the_fallback(
        api: Api, services: Services, world: World) -> None:
    station = world.stations["A-001"]
    c1, c2 = world.connectors["A-001"]
    s1, s2 = world.sessions["s1"], world.sessions["s2"]

    def sample(minute: int, unit: str, phase: str, context: str) -> d.MeterSample:
        return d.MeterSample(session_id=s1.id, cp_id=s1.cp_id, connector_id=1,
                             station_id=s1.station_id, at=T0.replace(minute=minute),
                             measurand="Temperature", value=21.5, unit=unit, phase=phase,
                             context=context)

    await services.ctx.store.write([
        Update(replace(station, error_code="OverVoltage", firmware_status="Requested",
                       diagnostics_status="Garbled")),
        Update(replace(c1, error_code="GroundFailure")),
        Update(replace(c2, error_code="SomethingNew")),  # no OCPP 1.6 code
        Update(replace(s1, stop_reason="EVDisconnected")),
        Update(replace(s2, stop_reason="Rebooted")),  # no OCPP 1.6 reason
        Insert(sample(0, "Celcius", "L1-N", "Trigger")),  # the 1.6 schema's misspelling
        Insert(sample(1, "kwh", "L9", "Sample.Random")),  # none of them OCPP's
        Insert(d.StatusEvent(station_id=station.id, cp_id="A-001", connector_id=1,
                             company_id=station.company_id,
                             status=d.ConnectorStatus.FAULTED, error_code="WeakSignal",
                             at=T0)),
    ], [])
    ids = {"st": to_global_id("station", station.id), "c1": to_global_id("connector", c1.id),
           "c2": to_global_id("connector", c2.id), "s1": to_global_id("session", s1.id),
           "s2": to_global_id("session", s2.id)}
    data = await api.gql(QUERY, ids, as_user=world.users["admin"].id)
    assert data["st"] == {
        "errorCode": "OVER_VOLTAGE", "firmwareStatus": "REQUESTED",
        "diagnosticsStatus": None,
        "connectors": [{"statusHistory": {"nodes": [{"errorCode": "WEAK_SIGNAL"}]}},
                       {"statusHistory": {"nodes": []}}]}
    assert (data["c1"], data["c2"]) == ({"errorCode": "GROUND_FAILURE"},
                                        {"errorCode": "OTHER_ERROR"})
    assert data["s1"] == {"stopReason": "EV_DISCONNECTED", "meterValues": {"nodes": [
        {"unit": "CELSIUS", "phase": "L1_N", "context": "TRIGGER"},
        {"unit": None, "phase": None, "context": "OTHER"}]}}
    assert data["s2"] == {"stopReason": "OTHER"}


def test_a_value_that_cannot_be_looked_up_reads_as_the_fallback() -> None:
    """Review s30: a list (a MongoDB document written by hand) raised TypeError from the
    lookup, before the fallback could be had."""
    assert ocpp16.member(ocpp16.Phase, cast(Any, ["L1"])) is None
    assert ocpp16.member(ocpp16.ReadingContext, cast(Any, {"x": 1}),
                         ocpp16.ReadingContext.OTHER) is ocpp16.ReadingContext.OTHER
    assert ocpp16.member(ocpp16.UnitOfMeasure, "Celcius") is ocpp16.UnitOfMeasure.CELSIUS


async def test_a_measurand_outside_ocpp_reads_null_not_a_failed_page(
        api: Api, services: Services, world: World) -> None:
    """Review s30: ``Measurand(stored)`` raised for a measurand OCPP has not, and the
    whole page of samples or signed values failed; it has no catch-all, so null."""
    s1 = world.sessions["s1"]
    where: dict[str, Any] = {"session_id": s1.id, "cp_id": s1.cp_id, "connector_id": 1,
             "station_id": s1.station_id}
    await services.ctx.store.write([
        Insert(d.MeterSample(**where, at=T0, measurand="Voltage", value=230.0)),
        Insert(d.MeterSample(**where, at=T0.replace(minute=1), measurand="Energy.Odd",
                             value=1.0)),
        Insert(d.SignedMeterValue(**where, at=T0, measurand="Energy.Odd",
                                  encoding=d.SignedEncoding.OCMF, data="OCMF|{}|{}",
                                  data_length=10)),
    ], [])
    data = await api.gql("""query($s: ID!) { node(id: $s) { ... on Session {
      meterValues(first: 5) { nodes { measurand } }
      signedMeterValues(first: 5) { nodes { measurand } } } } }""",
                         {"s": to_global_id("session", s1.id)},
                         as_user=world.users["admin"].id)
    assert data["node"] == {
        "meterValues": {"nodes": [{"measurand": "VOLTAGE"}, {"measurand": None}]},
        "signedMeterValues": {"nodes": [{"measurand": None}]}}
