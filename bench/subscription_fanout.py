"""Subscription fan-out: S subscribers to ``connectorStatusChanged`` over websockets while
charge points send StatusNotifications at R per second; delivery latency (charger send →
subscriber receive) p50/p99 and lost events. Baseline, same run: a bare ``websockets``
broadcast server relaying the same messages to the same number of sockets.

    python -m bench.subscription_fanout [--subscribers 1000] [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, broadcast, serve

from bench.common import percentile, report
from bench.ocpp_server import raise_fd_limit
from bench.ocpp_throughput import call, now
from tests.helpers import free_port

STATIONS = 20
SUBSCRIPTION = "subscription { connectorStatusChanged { cpId info } }"


class Tally:
    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.received = 0

    def got(self, seq: str | None) -> None:
        sent = self.sent.get(seq or "")
        if sent is not None:
            self.received += 1
            self.latencies.append(time.perf_counter() - sent)


async def subscriber(url: str, token: str, tally: Tally, ready: asyncio.Semaphore) -> None:
    async with connect(url, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                       compression=None, max_queue=None, open_timeout=60) as ws:
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"authorization": f"Bearer {token}"}}))
        await ws.recv()
        await ws.send(json.dumps({"id": "1", "type": "subscribe",
                                  "payload": {"query": SUBSCRIPTION}}))
        ready.release()
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") == "next":
                tally.got(message["payload"]["data"]["connectorStatusChanged"]["info"])


async def load(chargers: list[ClientConnection], rate: float, seconds: float, tally: Tally,
               send: Any) -> int:
    interval = 1 / rate
    next_at = time.perf_counter()
    deadline = next_at + seconds
    seq = 0
    pending: set[asyncio.Task[Any]] = set()
    while time.perf_counter() < deadline:
        seq += 1
        key = f"s{seq}"
        tally.sent[key] = time.perf_counter()
        task = asyncio.create_task(send(chargers[seq % len(chargers)], key, seq))
        pending.add(task)
        task.add_done_callback(pending.discard)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await asyncio.gather(*pending)
    return seq


async def chargegraph(subscribers: int, rate: float, seconds: float) -> dict[str, Any]:
    folder = tempfile.mkdtemp(prefix="chargegraph-fanout-")
    port, ocpp_port = free_port(), free_port()
    env = {**os.environ, "CHARGEGRAPH_DATABASE_URL": f"sqlite:///{folder}/f.db",
           "CHARGEGRAPH_PORT": str(port), "CHARGEGRAPH_OCPP_PORT": str(ocpp_port),
           "CHARGEGRAPH_JWT_SECRET": "f" * 40, "CHARGEGRAPH_LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "-m", "chargegraph", "create-user", "--email",
                    "admin@bench.example", "--password", "bench-password", "--role", "admin"],
                   env=env, check=True, capture_output=True)
    server = subprocess.Popen([sys.executable, "-m", "chargegraph", "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    tasks: list[asyncio.Task[Any]] = []
    chargers: list[ClientConnection] = []
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            token = (await http.post("/graphql", json={"query": 'mutation { login(email: '
                     '"admin@bench.example", password: "bench-password") { token } }'})).json()[
                "data"]["login"]["token"]
            for i in range(STATIONS):
                await http.post("/graphql", headers={"authorization": f"Bearer {token}"},
                                json={"query": f'mutation {{ createStation(input: {{cpId: '
                                      f'"FAN-{i:03d}", name: "Fan {i}", connectors: '
                                      f'[{{connectorId: 1}}]}}) {{ errors {{ code }} }} }}'})
        tally = Tally()
        ready = asyncio.Semaphore(0)
        tasks = [asyncio.create_task(subscriber(f"ws://127.0.0.1:{port}/graphql", token, tally,
                                                ready)) for _ in range(subscribers)]
        for _ in range(subscribers):
            await asyncio.wait_for(ready.acquire(), 120)
        for i in range(STATIONS):
            chargers.append(await connect(f"ws://127.0.0.1:{ocpp_port}/ocpp/FAN-{i:03d}",
                                          subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                          compression=None))
        await asyncio.sleep(2)  # every subscription is registered on the server by now

        locks = {id(ws): asyncio.Lock() for ws in chargers}

        async def send(ws: ClientConnection, key: str, seq: int) -> None:
            async with locks[id(ws)]:  # a charger has one CALL outstanding at a time
                tally.sent[key] = time.perf_counter()
                await call(ws, "StatusNotification", {
                    "connectorId": 1, "errorCode": "NoError", "info": key,
                    "timestamp": now(), "status": "Available" if seq % 2 else "Preparing"})

        sent = await load(chargers, rate, seconds, tally, send)
        await asyncio.sleep(3)  # drain
    finally:
        for task in tasks:
            task.cancel()
        for ws in chargers:
            with contextlib.suppress(Exception):
                await ws.close()
        server.terminate()
        server.wait(timeout=30)
    return summary("chargegraph", subscribers, rate, sent, tally)


async def baseline(subscribers: int, rate: float, seconds: float) -> dict[str, Any]:
    sockets: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path == "/pub":
            async for message in ws:
                broadcast(sockets, message)
                await ws.send("ok")
        else:
            sockets.add(ws)
            try:
                await ws.wait_closed()
            finally:
                sockets.discard(ws)

    tally = Tally()
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]

        async def listen() -> None:
            async with connect(f"ws://127.0.0.1:{port}/sub", compression=None,
                               max_queue=None) as ws:
                async for raw in ws:
                    tally.got(json.loads(raw)["info"])

        tasks = [asyncio.create_task(listen()) for _ in range(subscribers)]
        while len(sockets) < subscribers:
            await asyncio.sleep(0.05)
        publishers = [await connect(f"ws://127.0.0.1:{port}/pub", compression=None)
                      for _ in range(STATIONS)]

        locks = {id(ws): asyncio.Lock() for ws in publishers}

        async def send(ws: ClientConnection, key: str, seq: int) -> None:
            async with locks[id(ws)]:
                tally.sent[key] = time.perf_counter()
                await ws.send(json.dumps({"cpId": "FAN", "info": key}))
                await ws.recv()

        sent = await load(publishers, rate, seconds, tally, send)
        await asyncio.sleep(3)
        for task in tasks:
            task.cancel()
        for ws in publishers:
            await ws.close()
    return summary("baseline: bare websockets broadcast", subscribers, rate, sent, tally)


def summary(name: str, subscribers: int, rate: float, sent: int, tally: Tally
            ) -> dict[str, Any]:
    expected = sent * subscribers
    return {"server": name, "subscribers": subscribers, "rate_per_s": rate,
            "events_sent": sent, "deliveries": tally.received,
            "lost": expected - tally.received,
            "p50_ms": percentile(tally.latencies, 50) * 1000,
            "p99_ms": percentile(tally.latencies, 99) * 1000}


async def main(subscribers: int, rate: float, seconds: float) -> None:
    raise_fd_limit()
    rows = [await baseline(subscribers, rate, seconds),
            await chargegraph(subscribers, rate, seconds)]
    report("subscription_fanout", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.subscribers, arguments.rate, arguments.seconds))
