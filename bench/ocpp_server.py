"""A server process for the OCPP benchmarks: ChargeGraph's central system on a fresh
SQLite store with N pre-registered stations (no passwords, so no argon2 in the loop), or
the baseline: a bare ``websockets`` server answering every CALL with an empty CALLRESULT.

    python -m bench.ocpp_server --mode chargegraph|baseline --stations N

Prints ``READY <port>`` once it listens; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import sqlite3
import sys
import tempfile
from pathlib import Path

import uvloop
from websockets.asyncio.server import ServerConnection, serve

from chargegraph.runtime import tune_garbage_collector


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def baseline(ready: asyncio.Event, port_box: list[int]) -> None:
    async def answer(ws: ServerConnection) -> None:
        async for message in ws:
            frame = json.loads(message)
            await ws.send(json.dumps([3, frame[1], {}]))

    async with serve(answer, "127.0.0.1", 0, subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                     compression=None, max_size=256 * 1024, ping_interval=None) as server:
        port_box.append(server.sockets[0].getsockname()[1])
        ready.set()
        await asyncio.Future()


def register(path: Path, stations: int) -> None:
    from domain import entities as d
    from store.sqlite.codec import columns, quote, to_row

    rows: dict[type[d.Record], list[d.Record]] = {d.Station: [], d.Connector: []}
    for i in range(stations):
        station = d.Station(cp_id=f"BENCH-{i:05d}", name=f"Bench {i}")
        rows[d.Station].append(station)
        rows[d.Connector].append(d.Connector(station_id=station.id, cp_id=station.cp_id,
                                             connector_id=1))
    db = sqlite3.connect(path)
    for kind, records in rows.items():
        names = columns(kind)
        db.executemany(f"INSERT INTO {quote(kind.kind)} ({', '.join(quote(n) for n in names)})"
                       f" VALUES ({', '.join('?' * len(names))})", [to_row(r) for r in records])
    db.commit()
    db.close()


async def chargegraph(ready: asyncio.Event, port_box: list[int], stations: int) -> None:
    from chargegraph.metrics import MetricsRegistry
    from domain.policy import Policy
    from domain.services import ServiceContext, Services
    from ocpp_bridge.gateway import OcppGateway
    from ocpp_bridge.server import OcppServer
    from store.sqlite import SqliteStore
    from tests.helpers import FastHasher

    folder = tempfile.mkdtemp(prefix="chargegraph-bench-")
    path = Path(folder) / "bench.db"
    store = SqliteStore(str(path))
    await store.start()
    await store.close()
    register(path, stations)
    store = SqliteStore(str(path))
    await store.start()
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher()))
    # Counting as the app does (``chargegraph/metrics.py``): its cost is part of a call's.
    metrics = MetricsRegistry()
    gateway = OcppGateway(metrics)
    server = OcppServer(services.charging, gateway, "127.0.0.1", 0, ping_interval=600,
                        metrics=metrics)
    await server.start()
    port_box.append(server.bound_port)
    ready.set()
    try:
        await asyncio.Future()
    finally:
        await server.stop()
        await store.close()


async def main(mode: str, stations: int) -> None:
    raise_fd_limit()
    ready = asyncio.Event()
    port: list[int] = []
    runner = baseline(ready, port) if mode == "baseline" else chargegraph(ready, port,
                                                                         stations)
    task = asyncio.create_task(runner)
    await ready.wait()
    print(f"READY {port[0]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task  # the store closes before the loop does


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["chargegraph", "baseline"], required=True)
    parser.add_argument("--stations", type=int, default=100)
    arguments = parser.parse_args()
    try:
        # Both servers run as ``chargegraph serve`` runs: on uvloop (uvicorn picks it when
        # installed, and uvicorn[standard] installs it), with its garbage-collector settings.
        tune_garbage_collector()
        uvloop.run(main(arguments.mode, arguments.stations))
    except KeyboardInterrupt:
        sys.exit(0)
