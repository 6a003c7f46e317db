"""A crash loses no webhook delivery: a real `chargegraph` process, its receiver down, is
killed with SIGKILL (no handover) while the delivery waits for its retry; a second
process on the same SQLite file takes it over once the first one's lease has expired
and delivers it once, with the same ``X-ChargeGraph-Delivery``, body and signing
secret. A real charger over OCPP reports the status; the receiver listens on
127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.helpers import served_ports, wait_healthy
from tests.shell.test_process import clean_env, graphql, launch, stop

__all__ = ["launch"]  # the fixture, used by name

#: Short, so the second process takes over within the test's time.
LEASE_S = 2


class Receiver(ThreadingHTTPServer):
    """Records every POST; answers ``statuses`` in turn, then the last one again."""

    def __init__(self, *statuses: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
        status = self.server.statuses.pop(0) if len(self.server.statuses) > 1 \
            else self.server.statuses[0]
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(503, 200)  # down at first
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def signed_with(secret: str, headers: dict[str, str], body: bytes) -> bool:
    parts = dict(item.split("=", 1) for item in headers["x-chargegraph-signature"].split(","))
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def start(launch: list[subprocess.Popen[str]], tmp_path: Path, *args: str
          ) -> tuple[subprocess.Popen[str], str, int]:
    env = {**clean_env(tmp_path), "CHARGEGRAPH_WEBHOOKS_ALLOW_PRIVATE": "true",
           "CHARGEGRAPH_INSTANCE_LEASE_SECONDS": str(LEASE_S)}
    process = subprocess.Popen(
        [sys.executable, "-m", "chargegraph", *args, "--port", "0", "--ocpp-port", "0"],
        cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    launch.append(process)
    port, ocpp_port = served_ports(process)
    assert ocpp_port is not None
    url = f"http://127.0.0.1:{port}"
    wait_healthy(process, url, 60)
    return process, url, ocpp_port


def stored(database: Path) -> list[tuple[str, int, str | None]]:
    """The deliveries stored: delivery id, tries made, instance."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        return conn.execute('SELECT "delivery_id", "tries_made", "instance_id" '
                            'FROM "pending_delivery"').fetchall()


def until(condition: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition never held")


def test_a_delivery_waiting_when_the_instance_is_killed_arrives_once_from_the_next(
        launch: list[subprocess.Popen[str]], tmp_path: Path, receiver: Receiver) -> None:
    database = tmp_path / "data" / "svc.db"
    first, url, ocpp_port = start(launch, tmp_path, "demo", "--no-chargers")
    login = graphql(url, 'mutation { login(email: "admin@demo.chargegraph.dev", '
                         'password: "chargegraph-demo") { token } }').json()
    token = login["data"]["login"]["token"]
    created = graphql(url, 'mutation { createStation(input: {cpId: "CRASH-1", '
                           'name: "Crash"}) { errors { code } } }', token).json()
    assert created["data"]["createStation"]["errors"] == [], created
    hook = graphql(url, f'mutation {{ createWebhook(input: {{url: "{receiver.url}", '
                        'events: [CONNECTOR_STATUS_CHANGED]}) { secret errors { code } } }',
                   token).json()["data"]["createWebhook"]
    assert hook["errors"] == [], hook
    with connect(f"ws://127.0.0.1:{ocpp_port}/ocpp/CRASH-1", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                 open_timeout=10) as charger:
        for number, (action, payload) in enumerate([
                ("BootNotification", {"chargePointVendor": "Test",
                                      "chargePointModel": "Crash"}),
                ("StatusNotification", {"connectorId": 1, "status": "Available",
                                        "errorCode": "NoError"})]):
            charger.send(json.dumps([2, str(number), action, payload]))
            while json.loads(charger.recv(timeout=10))[:2] != [3, str(number)]:
                pass
        # The first try refused (503), the retry due in 10 s, its tries written.
        until(lambda: len(receiver.requests) == 1, 20)
        until(lambda: [t for _, t, _ in stored(database)] == [1], 10)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert first.returncode == -signal.SIGKILL
    [(delivery_id, _, owner)] = stored(database)
    assert owner is not None  # the killed instance's: nothing was handed over

    second, _, _ = start(launch, tmp_path, "serve")
    # Taken over once the killed instance's lease expired, the retry when it was due.
    until(lambda: len(receiver.requests) == 2, 40)
    until(lambda: stored(database) == [], 10)  # delivered: gone from the store
    time.sleep(1.5)
    stop(second)
    assert len(receiver.requests) == 2  # once: not posted again
    (first_headers, first_body), (headers, body) = receiver.requests
    assert headers["x-chargegraph-delivery"] == first_headers[
        "x-chargegraph-delivery"] == delivery_id
    assert body == first_body and json.loads(body)["data"]["status"] == "Available"
    assert signed_with(hook["secret"], headers, body)
    assert signed_with(hook["secret"], first_headers, first_body)
