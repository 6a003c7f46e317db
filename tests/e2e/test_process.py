"""The service as a user runs it: `chargegraph` processes on loopback ports they chose as
they bound them (``--port 0 --ocpp-port 0``, read from their log: ``served_ports``)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import communicate, served_ports, wait_healthy
from tests.shell.test_process import clean_env

PASSWORD = "a long admin password"


def serve(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], str, int]:
    """``chargegraph serve`` on ports of its choosing, once healthy: the process, its
    GraphQL URL and its OCPP port. No other process can take the ports before it binds
    them, as one chosen for it could be; its log (at INFO, as ``clean_env`` leaves it)
    names them. It blocks: a test whose event loop serves meanwhile (another instance)
    calls it in a thread."""
    process = subprocess.Popen(
        [sys.executable, "-m", "chargegraph", "serve", "--port", "0",
         "--ocpp-port", "0"], env=env, cwd=cwd, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        port, ocpp_port = served_ports(process)
        assert ocpp_port is not None
        url = f"http://127.0.0.1:{port}"
        wait_healthy(process, url)
    except BaseException:
        process.kill()
        communicate(process, 10)
        raise
    return process, url, ocpp_port


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
    env = clean_env(tmp_path)
    made = subprocess.run([sys.executable, "-m", "chargegraph", "create-user", "--email",
                           "admin@example.com", "--password", PASSWORD, "--role", "admin"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    service, url, ocpp_port = serve(env, tmp_path)
    simulator = None
    try:
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
        _, said = communicate(service, 20)  # reads its log to the end: no pipe fills
        assert service.returncode == 0, said
    finally:
        if simulator is not None and simulator.poll() is None:
            simulator.kill()
            simulator.wait()
        if service.poll() is None:
            service.kill()
            communicate(service, 10)
