"""The wire log's last guard (``ocpp_bridge.log_masking``): a line that may carry a
secret configuration value is masked, or withheld when it cannot be masked for sure
(review s18: a CALLERROR echoing the refused request was logged at WARNING in clear)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from domain import entities as d
from domain.command_rules import without_credentials
from domain.query import Eq
from domain.services.commands import masked
from ocpp_bridge.handler import logged_frame
from ocpp_bridge.log_masking import masked_line
from ocpp_bridge.simulator import basic_auth
from tests.ocpp.conftest import STATION_PASSWORD, Central, seed, start_central, stop_central
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
    # A URL's credentials, in any line, whatever holds it (review s25): a CALLERROR's
    # description and echoed details, slashes JSON-escaped, a password holding '/'.
    ('[4,"u","GenericError","cannot upload to https://h.example.com/up?sv=1&sig=hunter22-s3cret",'
     '{"request":{"location":"ftp://diag:hunter22-s3cret@h.example.com/up"}}]',
     '[4,"u","GenericError","cannot upload to https://h.example.com/up?sv=[hidden]&sig=[hidden]",'
     '{"request":{"location":"ftp://[hidden]@h.example.com/up"}}]'),
    ("Received a CALLError: error_details={'request': {'location': "
     "'https:\\/\\/h.example.com\\/up?sig=hunter22-s3cret'}}>",
     "Received a CALLError: error_details={'request': {'location': "
     "'https://h.example.com/up?sig=[hidden]'}}>"),
    ("sent ftp://diag:hunter22/s3cret@h.example.com/up", "sent ftp://[hidden]@h.example.com/up"),
    # No URL credentials, no secret's name: as it came.
    ('[2,"u1","UpdateFirmware",{"location":"https://fw.example.com/1.6.bin",'
     '"retrieveDate":"2026-01-01T00:00:00Z"}]', "same"),
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


#: An Azure SAS URL's signature, as chargers are handed one to upload diagnostics to.
SIGNATURE = "c2VjcmV0c2lnbmF0dXJl"
UPLOAD = f"https://diag.blob.core.windows.net/up/CP-1.zip?sv=2024-01-01&sp=cw&sig={SIGNATURE}"


async def test_a_callerror_repeating_a_signed_url_is_logged_without_its_signature(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A charger refusing getDiagnostics with a CALLERROR that names the URL it could
    not use (its description) and echoes the request (its details): neither the
    package's WARNING line nor the INFO wire log of the frame (which names no action,
    so was never read again) holds the signature, nor does the audit (review s25)."""
    central = await start_central(tmp_path / "c.db", command_timeout=2)
    await seed(central)
    ws = await connect(f"{central.url}/CP-1", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                       additional_headers=basic_auth("CP-1", STATION_PASSWORD))

    async def refuse() -> None:
        async for raw in ws:
            frame = json.loads(raw)
            if frame[0] == 2:
                await ws.send(json.dumps([
                    4, frame[1], "GenericError", f"cannot upload to {frame[3]['location']}",
                    {"request": frame[3]}]))

    task = asyncio.create_task(refuse())
    try:
        caplog.set_level(logging.WARNING)
        caplog.set_level(logging.INFO, logger="chargegraph.ocpp.wire")
        answer = await run(central, "getDiagnostics", {"cpId": "CP-1", "location": UPLOAD},
                           "fileName")
        assert answer["errors"], answer
        lines = [r.getMessage() for r in caplog.records]
        assert any("CALLError" in line for line in lines), lines
        assert any("receive" in line and "GenericError" in line for line in lines), lines
        assert not [line for line in lines if SIGNATURE in line]
        audit = await central.store.find_all(d.AuditEntry, Eq("action", d.AuditAction.COMMAND))
        assert not [a.after for a in audit if SIGNATURE in repr(a.after)]
    finally:
        task.cancel()
        await ws.close()
        await stop_central(central)


#: A Google Cloud Storage V4 signed URL with its X-Goog-Credential written unencoded (a
#: service account's e-mail and scope): ``command_rules._url`` accepts it, the charger
#: needs it whole.
GCS_SIGNED = ("https://storage.googleapis.com/bkt/fw.bin?X-Goog-Algorithm=GOOG4-RSA-SHA256"
              "&X-Goog-Credential=fw-signer@acme-prod.iam.gserviceaccount.com/20261206/auto/"
              "storage/goog4_request&X-Goog-Date=20261206T020000Z&X-Goog-Expires=3600"
              "&X-Goog-SignedHeaders=host&X-Goog-Signature=5ecre7deadbeef")


@pytest.mark.parametrize(("url", "shown"), [
    # An '@' in the query string ends no user information (review s25: the credential's
    # domain was taken for the host, the '?' hidden with the "user information", and
    # X-Goog-Signature shown whole).
    (GCS_SIGNED, "https://storage.googleapis.com/bkt/fw.bin?X-Goog-Algorithm=[hidden]"
                 "&X-Goog-Credential=[hidden]&X-Goog-Date=[hidden]&X-Goog-Expires=[hidden]"
                 "&X-Goog-SignedHeaders=[hidden]&X-Goog-Signature=[hidden]"),
    ("https://tok@h.example.com/up?cred=a@b.example.com/x&sig=5ecre7deadbeef",
     "https://[hidden]@h.example.com/up?cred=[hidden]&sig=[hidden]"),
    # A password may hold '#', '/' and '?' (and '@'): hidden up to the '@' before the host.
    ("ftp://diag:p#ss@files.example.com/up", "ftp://[hidden]@files.example.com/up"),
    ("ftp://diag:12/34@files.example.com/up", "ftp://[hidden]@files.example.com/up"),
    ("ftp://diag:5ecre7?x@files.example.com/up?sig=1",
     "ftp://[hidden]@files.example.com/up?sig=[hidden]"),
    ("ftp://me@corp.example:p@ss/1@files.example.com/up", "ftp://[hidden]@files.example.com/up"),
    # Both readings fit (a host and a port, then a query; or a password holding '?'):
    # hidden whole after the scheme rather than show a query value or a password.
    ("ftp://diag:12?x=5ecre7deadbeef@files.example.com/up", "ftp://[hidden]"),
    ("https://u:pw@h.example.com/up?cred=a@b.example.com/x&sig=5ecre7deadbeef", "https://[hidden]"),
])
def test_a_url_is_shown_without_its_user_information_and_query_values(
        url: str, shown: str) -> None:
    """The audit (``commands.masked``), the station's rollout and the wire log show a
    URL as ``without_credentials`` does; shown so, it is shown as it is."""
    assert without_credentials(url) == shown
    assert without_credentials(shown) == shown
    assert masked("UpdateFirmware", {"location": url})["location"] == shown
    frame = (f'[2,"1","UpdateFirmware",{{"location":"{url}",'
             '"retrieveDate":"2026-12-06T03:00:00Z"}]')
    logged = logged_frame(frame)
    assert "5ecre7" not in logged and "p#ss" not in logged and "12/34" not in logged
    assert shown in logged.replace("\\/", "/")
