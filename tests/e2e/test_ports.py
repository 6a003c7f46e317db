"""The test servers' ports: held from the moment they are known (no free port closed and
bound again, which another process on a shared machine could take in between)."""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from ocpp_bridge.simulator import connected
from tests.e2e.conftest import running_service
from tests.helpers import loopback_socket
from tests.ocpp.conftest import STATION_PASSWORD


def test_a_loopback_socket_holds_its_port_and_refuses_connections() -> None:
    with loopback_socket() as held:
        port = held.getsockname()[1]
        with socket.socket() as other, pytest.raises(OSError) as taken:
            other.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE
        with pytest.raises(ConnectionRefusedError):  # bound, not listening
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


async def test_a_running_service_serves_where_it_says(tmp_path: Path) -> None:
    """GraphQL on the socket bound for it, OCPP on the port its server chose as it bound:
    the URLs and the settings yielded name them."""
    async with running_service(tmp_path) as service:
        ocpp_port = urlsplit(service.ocpp_url).port
        assert ocpp_port and ocpp_port == service.settings.ocpp_port
        assert urlsplit(service.http_url).port == service.settings.port
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{service.http_url}/healthz")).status_code == 200
        async with connected(service.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
            assert (await cp.boot()).status == "Accepted"
