"""The wire log's last guard (``ocpp_bridge.log_masking``): a line that may carry a
secret configuration value is masked, or withheld when it cannot be masked for sure
(review s18: a CALLERROR echoing the refused request was logged at WARNING in clear)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from websockets.asyncio.client import connect

from ocpp_bridge.log_masking import masked_line
from ocpp_bridge.simulator import basic_auth
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_commands import run

SECRET = "hunter22-s3cret"


@pytest.mark.parametrize(("line", "shown"), [
    ('[2,"u1","ChangeConfiguration",{"key":"BackendPassword","value":"hunter22-s3cret"}]',
     '[2,"u1","ChangeConfiguration",{"key":"BackendPassword","value":"[hidden]"}]'),
    ('[3,"u",{"configuration\\u004bey":[{"key":"AuthorizationKey","readonly":false,'
     '"value":"hunter22-s3cret"}]}]',
     '[3,"u",{"configuration\\u004bey":[{"key":"AuthorizationKey","readonly":false,'
     '"value":"[hidden]"}]}]'),
    ("Received a CALLError: error_details={'request': {'key': 'BackendPassword', "
     "'value': 'hunter22-s3cret'}}",
     "Received a CALLError: error_details={'request': {'key': 'BackendPassword', "
     "'value': '[hidden]'}}"),
    # The rest: not masked for sure, so withheld.
    ('[3,"u",{"configurationKey":[{"key":"Authorization\\u004bey","value":"hunter22-s3cret"}]}]',
     None),
    ('[3,"u",{"configurationKey":[["AuthorizationKey","hunter22-s3cret"]]}]', None),
    ('[3,"u",{"configurationKey":[{"value":"hunter22-s3cret","key":"AuthorizationKey"}]}]',
     None),
    # No secret's name: as it came.
    ('[3,"u",{"configurationKey":[{"key":"HeartbeatInterval","readonly":false,'
     '"value":"300"}]}]', "same"),
])
def test_a_line_is_masked_or_withheld(line: str, shown: str | None) -> None:
    got = masked_line(line)
    assert SECRET not in got
    if shown == "same":
        assert got is line
    elif shown is None:
        assert got == f"<{len(line)} characters withheld: they may hold a secret " \
                      "configuration value>"
    else:
        assert got == shown


async def test_a_callerror_echoing_a_secret_is_logged_without_it(
        central: Central, caplog: pytest.LogCaptureFixture) -> None:
    """Many chargers put the refused request in a CALLERROR's details: the ``ocpp``
    package logs it at WARNING, on by default."""
    caplog.set_level(logging.WARNING)
    async with connect(f"{central.url}/CP-1", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                       additional_headers=basic_auth("CP-1", STATION_PASSWORD)) as ws:
        await ws.send(json.dumps([2, "b1", "BootNotification",
                                  {"chargePointVendor": "V", "chargePointModel": "M"}]))
        await ws.recv()

        async def charger() -> None:
            while True:
                frame = json.loads(await ws.recv())
                if frame[0] == 2 and frame[2] == "ChangeConfiguration":
                    await ws.send(json.dumps([4, frame[1], "PropertyConstraintViolation",
                                              "bad value", {"request": frame[3]}]))
                    return
                if frame[0] == 2:
                    await ws.send(json.dumps([3, frame[1], {}]))

        answering = asyncio.create_task(charger())
        refused = await run(central, "changeConfiguration",
                            {"cpId": "CP-1", "key": "BackendPassword", "value": SECRET})
        await answering
    assert refused["errors"], refused
    assert any("CALLError" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if SECRET in r.getMessage()]
