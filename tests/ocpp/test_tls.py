"""Security profile 2: Basic auth over TLS (wss://) when a certificate is configured."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from chargegraph.settings import Settings
from chargegraph.tls import ocpp_ssl_context
from ocpp_bridge.server import OcppServer
from ocpp_bridge.simulator import SimulatedChargePoint, basic_auth
from tests.ocpp.conftest import STATION_PASSWORD, Central


def make_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_wss_with_basic_auth(central: Central, tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    context = ocpp_ssl_context(Settings(ocpp_tls_cert=cert, ocpp_tls_key=key))
    server = OcppServer(central.services.charging, central.gateway, "127.0.0.1", 0,
                        ssl_context=context)
    await server.start()
    try:
        client_ssl = ssl.create_default_context(cafile=str(cert))
        url = f"wss://127.0.0.1:{server.bound_port}/ocpp/CP-1"
        async with connect(url, subprotocols=["ocpp1.6"], ssl=client_ssl,  # type: ignore[list-item]
                           additional_headers=basic_auth("CP-1", STATION_PASSWORD)) as ws:
            cp = SimulatedChargePoint("CP-1", ws)
            import asyncio

            loop = asyncio.create_task(cp.start())
            try:
                assert (await cp.boot()).status == "Accepted"
            finally:
                loop.cancel()
        with pytest.raises(ssl.SSLError):  # a client that does not trust us never gets in
            await connect(url, subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                          ssl=ssl.create_default_context())
    finally:
        await server.stop()
