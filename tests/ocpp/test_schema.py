"""The bridge's schema compiler agrees with fastjsonschema on the OCPP 1.6 schemas: same
verdict and same broken rule (which picks the 1.6 error code) for valid payloads and for
many mutations of them."""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Iterator
from typing import Any

import fastjsonschema
import ocpp
import pytest

from ocpp_bridge import frames
from ocpp_bridge.handler import ACTIONS
from ocpp_bridge.schema import SchemaError, compile_schema

SCHEMAS = os.path.join(os.path.dirname(ocpp.__file__), "v16", "schemas")
DATE_TIME = frames._DATE_TIME.pattern

VALID: dict[str, dict[str, Any]] = {
    "Authorize": {"idTag": "TAG-1"},
    "BootNotification": {"chargePointVendor": "V", "chargePointModel": "M",
                         "chargePointSerialNumber": "S1", "firmwareVersion": "1.0",
                         "iccid": "", "meterType": "AC"},
    "DataTransfer": {"vendorId": "acme", "messageId": "m", "data": "x"},
    "DiagnosticsStatusNotification": {"status": "Uploaded"},
    "FirmwareStatusNotification": {"status": "Installed"},
    "Heartbeat": {},
    "MeterValues": {"connectorId": 1, "transactionId": 7, "meterValue": [
        {"timestamp": "2026-11-24T21:00:00.123Z", "sampledValue": [
            {"value": "1234", "measurand": "Energy.Active.Import.Register", "unit": "Wh",
             "context": "Sample.Periodic", "location": "Outlet", "format": "Raw"},
            {"value": "16", "measurand": "Current.Import", "phase": "L1", "unit": "A"}]}]},
    "StartTransaction": {"connectorId": 1, "idTag": "TAG-1", "meterStart": 0,
                         "timestamp": "2026-11-24T21:00:00Z", "reservationId": 3},
    "StatusNotification": {"connectorId": 0, "errorCode": "NoError", "status": "Available",
                           "info": "ok", "timestamp": "2026-11-24T21:00:00+01:00",
                           "vendorId": "v", "vendorErrorCode": "E1"},
    "StopTransaction": {"meterStop": 10, "timestamp": "2026-11-24T22:00:00Z",
                        "transactionId": 7, "reason": "Local", "idTag": "TAG-1",
                        "transactionData": [{"timestamp": "2026-11-24T21:30:00Z",
                                             "sampledValue": [{"value": "5"}]}]},
}

ODD_VALUES: list[Any] = [None, True, 0, 1, 2.0, 2.5, -1, "", "x" * 600, "Wh", "L1",
                         "2026-11-24T21:00:00Z", "yesterday", [], [{}], {}, {"value": "1"}]


def load(action: str, suffix: str = "") -> dict[str, Any]:
    with open(os.path.join(SCHEMAS, f"{action}{suffix}.json"), encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    schema.pop("$schema", None)
    return schema


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from paths(inner, (*prefix, index))


def mutations(payload: dict[str, Any], rng: random.Random) -> Iterator[Any]:
    yield from (copy.deepcopy(odd) for odd in ODD_VALUES)  # not even an object
    for path in list(paths(payload)):
        for odd in ODD_VALUES:
            if not path:
                continue
            mutated = copy.deepcopy(payload)
            target = mutated
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = copy.deepcopy(odd)
            yield mutated
        if path and isinstance(path[-1], str):
            dropped = copy.deepcopy(payload)
            target = dropped
            for step in path[:-1]:
                target = target[step]
            del target[path[-1]]
            yield dropped
    extra = copy.deepcopy(payload)
    extra[f"unexpected{rng.randrange(100)}"] = 1
    yield extra


def verdict_fast(validator: Any, payload: Any) -> str | None:
    try:
        validator(payload)
    except fastjsonschema.JsonSchemaValueException as error:
        return str(error.rule)
    return None


def verdict_ours(validator: Any, payload: Any) -> str | None:
    try:
        validator(payload)
    except SchemaError as error:
        return error.rule
    return None


@pytest.mark.parametrize("action", sorted(frames.CHARGER_ACTIONS))
def test_same_verdict_and_rule_as_fastjsonschema(action: str) -> None:
    schema = load(action)
    reference = fastjsonschema.compile(schema, formats={"date-time": DATE_TIME})
    ours = compile_schema(schema, {"date-time": DATE_TIME})
    rng = random.Random(action)
    payload = VALID[action]
    assert verdict_ours(ours, payload) is None and verdict_fast(reference, payload) is None
    checked = 0
    for mutated in mutations(payload, rng):
        assert verdict_ours(ours, mutated) == verdict_fast(reference, mutated), mutated
        checked += 1
    assert checked > 5


def test_every_shipped_1_6_schema_compiles() -> None:
    names = [n.removesuffix(".json") for n in os.listdir(SCHEMAS) if n.endswith(".json")]
    assert len(names) > 50
    for name in names:
        compile_schema(load(name), {"date-time": DATE_TIME})


def test_errors_name_the_path() -> None:
    check = compile_schema(load("MeterValues"), {"date-time": DATE_TIME})
    bad = copy.deepcopy(VALID["MeterValues"])
    bad["meterValue"][0]["sampledValue"][1]["unit"] = "furlongs"
    with pytest.raises(SchemaError) as caught:
        check(bad)
    assert caught.value.rule == "enum"
    assert caught.value.path == "data.meterValue[0].sampledValue[1].unit"


def test_unknown_keywords_are_refused() -> None:
    with pytest.raises(ValueError):
        compile_schema({"type": "string", "pattern": "^a"})


def test_every_served_action_has_a_handler() -> None:
    assert frozenset(ACTIONS) == frames.CHARGER_ACTIONS


def test_a_frame_that_is_no_json_says_why() -> None:
    """A number beyond a double read as plain "not valid JSON" (QA s18); answered under
    the call's own id all the same."""
    with pytest.raises(frames.FrameError) as caught:
        frames.parse('[2, "u18", "Heartbeat", {"x": ' + "9" * 400 + "}]")
    assert caught.value.unique_id == "u18"
    assert "number is infinity" in str(caught.value)
