"""The service as a user runs it: `chargegraph` processes on free loopback ports."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import free_port

PASSWORD = "a long admin password"


def env_for(tmp_path: Path, port: int, ocpp_port: int) -> dict[str, str]:
    return {**os.environ, "CHARGEGRAPH_DATABASE_URL": f"sqlite:///{tmp_path}/svc.db",
            "CHARGEGRAPH_PORT": str(port), "CHARGEGRAPH_OCPP_PORT": str(ocpp_port),
            "CHARGEGRAPH_LOG_LEVEL": "WARNING"}


async def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(900):  # bounded: 90 s, a start on a loaded machine
            assert process.poll() is None, "the service exited"
            try:
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("never healthy")


async def gql(url: str, query: str, variables: dict | None = None, token: str | None = None
              ) -> dict:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{url}/graphql", json={"query": query,
                                                             "variables": variables},
                                     headers=headers)
    body = response.json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


async def test_serve_charge_and_stop_gracefully(tmp_path: Path) -> None:
    port, ocpp_port = free_port(), free_port()
    env = env_for(tmp_path, port, ocpp_port)
    made = subprocess.run([sys.executable, "-m", "chargegraph", "create-user", "--email",
                           "admin@example.com", "--password", PASSWORD, "--role", "admin"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    service = subprocess.Popen([sys.executable, "-m", "chargegraph", "serve"], env=env,
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    simulator = None
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, service)
        token = (await gql(url, """mutation($p: String!) { login(email: "admin@example.com",
            password: $p) { token } }""", {"p": PASSWORD}))["login"]["token"]
        created = await gql(url, """mutation { createStation(input: {cpId: "SIM-0001",
            name: "Sim", password: "sim-station-pass",
            connectors: [{connectorId: 1}, {connectorId: 2}]}) { station { id }
            errors { code } } }""", token=token)
        assert created["createStation"]["errors"] == []
        simulator = subprocess.Popen(
            [sys.executable, "-m", "chargegraph", "simulate", "--url",
             f"ws://127.0.0.1:{ocpp_port}/ocpp", "--stations", "1", "--password",
             "sim-station-pass"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        query = '{ station(cpId: "SIM-0001") { online vendor connectors { status } } }'
        for _ in range(100):
            station = (await gql(url, query, token=token))["station"]
            if station["online"] and all(c["status"] == "AVAILABLE"
                                         for c in station["connectors"]):
                break
            await asyncio.sleep(0.1)
        assert station == {"online": True, "vendor": "ChargeGraph",
                           "connectors": [{"status": "AVAILABLE"}, {"status": "AVAILABLE"}]}
        simulator.send_signal(signal.SIGTERM)
        assert simulator.wait(timeout=15) == 0
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=20) == 0
    finally:
        for process in (simulator, service):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        if service.stdout is not None:
            service.stdout.close()
