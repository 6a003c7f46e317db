"""Subscription storm: many addresses of nested subscriptions against a real
``chargegraph serve``, and what everyone else sees meanwhile.

A addresses (127.0.0.2, .3, …) open one socket each with P ``connectorStatusChanged``
subscriptions, every one aliased apart with its own nested selection (connector, station,
its connectors and sessions), so no two share a render group, while chargers send
StatusNotifications at R per second. Measured twice, without the nested subscribers and
with them (the first is the baseline, measured in the same run):

* a charger's Heartbeat round trip (one every 100 ms after the last answer),
* the chargers' StatusNotification round trips (one CALL outstanding per charger),
* a GraphQL query over HTTP (one every 200 ms),
* delivery latency and completeness for subscribers of event fields only (the shared fast
  path, from an address of their own),
* for the nested subscribers: renders delivered, latency from the event they carry, and
  whether every event was delivered or counted in ``droppedBefore`` (none ended with
  EVENTS_LOST or refused with TOO_MANY_OPERATIONS),
* the server's resident memory (peak while each phase runs, and before and after).

    python -m bench.subscription_storm                                  # 30 x 100, 10/s, 5 s
    python -m bench.subscription_storm --addresses 10 --per-address 50 --rate 20

Bounded: every wait has a timeout, the whole run has ``--timeout``, and the server is
killed if its RSS passes ``--max-rss-mib`` (the machine may be shared). Linux only: the
client addresses are loopback aliases (Linux routes 127/8) and RSS comes from ``/proc``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.common import median, percentile, report
from bench.ocpp_server import raise_fd_limit
from bench.ocpp_throughput import call, now, stop_server
from tests.helpers import free_port

INFO = re.compile(rb'"info":"s(\d+)"')
DROPPED = re.compile(rb'"droppedBefore":(\d+)')
LIGHT_QUERY = "subscription { connectorStatusChanged { cpId info droppedBefore } }"
HEARTBEAT_TIMEOUT = 30.0
STATUS_TIMEOUT = 60.0
QUERY_TIMEOUT = 60.0
#: How long subscribers may take to connect and have their subscribe messages handled.
SUBSCRIBE_TIMEOUT = 120.0


@dataclass(frozen=True)
class Sizes:
    addresses: int
    per_address: int
    stations: int
    rate: float
    seconds: float
    light: int
    client_processes: int
    drain: float
    max_rss_mib: float


def address(index: int) -> str:
    """Loopback source address ``index`` (0 → 127.0.0.2): one per client, as in QA's case."""
    return f"127.0.{(2 + index) // 256}.{(2 + index) % 256}"


def heavy_query(number: int, i: int, per_address: int) -> str:
    """Distinct text per subscription (alias and page size), so each is a render group of
    its own: the case that made every status change cost thousands of renders."""
    n = 1 + (number * per_address + i) % 50
    return ("subscription { connectorStatusChanged { info droppedBefore "
            f"a{number}_{i}: connector {{ connectorId status station {{ name cpId "
            f"connectors {{ status connectorId activeSession {{ id }} }} "
            f"sessions(first: {n}) {{ totalCount nodes {{ id }} }} }} }} }} }}")


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass  # the process is gone
    return float("nan")


def stats_ms(seconds: list[float]) -> dict[str, float | int]:
    return {"n": len(seconds), "p50": percentile(seconds, 50) * 1000,
            "p99": percentile(seconds, 99) * 1000, "max": max(seconds, default=0.0) * 1000}


async def subscribe_socket(port: int, source: str, subscriptions: list[tuple[str, str]],
                           **options: Any) -> ClientConnection:
    """A graphql-transport-ws socket from ``source`` with ``subscriptions`` (id, query)
    registered: the server handles a socket's messages in order, so the pong answering a
    ping sent after them means every subscribe before it was handled."""
    ws = await connect(f"ws://127.0.0.1:{port}/graphql",
                       subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                       local_addr=(source, 0), compression=None, ping_interval=None,
                       open_timeout=60, **options)
    async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        ack = await ws.recv()
        if '"connection_ack"' not in str(ack):
            raise RuntimeError(f"no connection_ack from the server: {ack!r}")
        for op_id, query in subscriptions:
            await ws.send(json.dumps({"id": op_id, "type": "subscribe",
                                      "payload": {"query": query}}))
        await ws.send(json.dumps({"type": "ping"}))
        while '"pong"' not in str(await ws.recv()):
            pass  # a refusal would be an error message: counted after the run
    return ws


# ------------------------------------------------------------------ nested subscribers
@dataclass
class Heavy:
    """What one client process's nested subscribers received."""

    latency: list[tuple[int, float]] = field(default_factory=list)
    #: Per operation: renders received and events they said were skipped before them.
    per_op: dict[str, list[int]] = field(default_factory=dict)
    errors: int = 0
    lost: int = 0
    refused: int = 0
    subscribed: int = 0

    def receive(self, data: bytes) -> None:
        at = time.monotonic()
        if b'"type":"next"' in data:
            info, dropped = INFO.search(data), DROPPED.search(data)
            counts = self.per_op.setdefault(json.loads(data)["id"], [0, 0])
            counts[0] += 1
            counts[1] += int(dropped.group(1)) if dropped else 0
            if info:
                self.latency.append((int(info.group(1)), at))
        elif b'"type":"error"' in data:
            self.errors += 1
            self.lost += b"EVENTS_LOST" in data
            self.refused += b"TOO_MANY_OPERATIONS" in data

    def accounted(self, sent: int) -> int:
        """Operations that received or were told of (``droppedBefore``) every event."""
        return sum(1 for got, dropped in self.per_op.values() if got + dropped >= sent)

    def summary(self) -> dict[str, Any]:
        return {"latency": self.latency, "errors": self.errors, "lost": self.lost,
                "refused": self.refused, "subscribed": self.subscribed,
                "per_op": {op: tuple(counts) for op, counts in self.per_op.items()}}


def heavy_process(port: int, numbers: list[int], per_address: int, pipe: Connection) -> None:
    """One client process: a socket per address in ``numbers``, ``per_address`` nested
    subscriptions on each. Answers ("progress", sent) with how many operations have every
    event accounted for, and ("report",) with everything it received."""
    raise_fd_limit()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        heavy = Heavy()
        sockets: list[ClientConnection] = []

        async def one(number: int, settled: asyncio.Event) -> None:
            try:
                ws = await subscribe_socket(
                    port, address(number - 2),
                    [(f"{number}-{i}", heavy_query(number, i, per_address))
                     for i in range(per_address)], max_size=None)
            finally:
                settled.set()  # subscribed, or failed: not counted as subscribed
            sockets.append(ws)
            heavy.subscribed += per_address
            async for raw in ws:
                heavy.receive(raw.encode() if isinstance(raw, str) else raw)

        settled = [asyncio.Event() for _ in numbers]
        tasks = [asyncio.create_task(one(n, e)) for n, e in zip(numbers, settled, strict=True)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in settled)),
                                   SUBSCRIBE_TIMEOUT + 5)
        pipe.send(("subscribed", heavy.subscribed))
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command[0] != "progress":
                break
            pipe.send(heavy.accounted(command[1]))
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pipe.send(heavy.summary())

    asyncio.run(run())


class HeavyClients:
    """The nested subscribers, spread over client processes."""

    def __init__(self, port: int, sizes: Sizes) -> None:
        numbers = [2 + i for i in range(sizes.addresses)]
        processes = max(1, min(sizes.client_processes, sizes.addresses))
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[Any] = []
        for chunk in range(processes):
            mine, theirs = context.Pipe()
            process = context.Process(target=heavy_process, daemon=True, args=(
                port, numbers[chunk::processes], sizes.per_address, theirs))
            process.start()
            self.pipes.append(mine)
            self.processes.append(process)

    async def ask(self, message: tuple[Any, ...] | None, timeout: float) -> list[Any]:
        """Sends ``message`` to every process (None: just listen) and returns the answers
        (a process that does not answer in time fails the run)."""
        loop = asyncio.get_running_loop()

        def answer(pipe: Connection) -> Any:
            if not pipe.poll(timeout):
                raise RuntimeError("a client process did not answer in time")
            return pipe.recv()

        if message is not None:
            for pipe in self.pipes:
                pipe.send(message)
        return list(await asyncio.gather(*(loop.run_in_executor(None, answer, p)
                                           for p in self.pipes)))

    async def subscribed(self) -> int:
        return sum(count for _, count in await self.ask(None, SUBSCRIBE_TIMEOUT + 30))

    async def drain(self, sent: int, operations: int, seconds: float) -> None:
        """Until every operation has each event delivered or counted in ``droppedBefore``
        (the last renders are coalesced and may come seconds after the storm), or
        ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if sum(await self.ask(("progress", sent), 30)) >= operations:
                return
            await asyncio.sleep(0.5)

    async def collect(self) -> list[dict[str, Any]]:
        try:
            return await self.ask(("report",), 60)
        finally:
            for process in self.processes:
                process.join(10)
                if process.is_alive():
                    process.kill()


def heavy_row(reports: list[dict[str, Any]], sent_at: dict[int, float], sent: int,
              operations: int) -> dict[str, Any]:
    per_op = {op: counts for r in reports for op, counts in r["per_op"].items()}
    latencies = [(t - sent_at[seq]) for r in reports for seq, t in r["latency"]
                 if seq in sent_at]
    renders = [got for got, _ in per_op.values()]
    accounted = [got + dropped for got, dropped in per_op.values()]
    # Events neither delivered nor announced; an operation that never heard anything
    # missed all of them.
    missing = sum(max(0, sent - total) for total in accounted) \
        + sent * max(0, operations - len(per_op))
    return {"operations": operations,
            "subscribed": sum(r["subscribed"] for r in reports),
            "operations_heard": len(per_op), "renders": sum(renders),
            "dropped_announced": sum(dropped for _, dropped in per_op.values()),
            "unaccounted_events": missing,
            "errors": sum(r["errors"] for r in reports),
            "events_lost": sum(r["lost"] for r in reports),
            "refused": sum(r["refused"] for r in reports),
            "latency_ms": stats_ms(latencies),
            "renders_per_op_min_median_max": (min(renders, default=0), median(renders),
                                              max(renders, default=0)),
            "accounted_per_op_min_max": (min(accounted, default=0),
                                         max(accounted, default=0))}


# ------------------------------------------------------------------ the server
class Server:
    """``chargegraph serve`` on a fresh SQLite file, public map on (the subscribers are
    anonymous), ``stations`` charge points of two connectors plus one for Heartbeats."""

    def __init__(self) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="chargegraph-storm-")
        self.port, self.ocpp_port = free_port(), free_port()
        self.env = {**os.environ,
                    "CHARGEGRAPH_DATABASE_URL": f"sqlite:///{self.folder.name}/s.db",
                    "CHARGEGRAPH_PORT": str(self.port),
                    "CHARGEGRAPH_OCPP_PORT": str(self.ocpp_port),
                    "CHARGEGRAPH_PUBLIC_MAP": "true",
                    "CHARGEGRAPH_JWT_SECRET": "s" * 40, "CHARGEGRAPH_LOG_LEVEL": "WARNING"}
        self.log = Path(self.folder.name) / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.killed = False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, stations: int) -> None:
        subprocess.run([sys.executable, "-m", "chargegraph", "create-user", "--email",
                        "admin@storm.example", "--password", "storm-password", "--role",
                        "admin"], env=self.env, check=True, capture_output=True, timeout=60)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "chargegraph", "serve"],
                                            env=self.env, stdout=subprocess.DEVNULL,
                                            stderr=log)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}",
                                     timeout=30) as http:
            await self._healthy(http)
            token = (await http.post("/graphql", json={
                "query": 'mutation { login(email: "admin@storm.example", password: '
                         '"storm-password") { token } }'})).json()["data"]["login"]["token"]
            for cp_id in [*(f"FAN-{i:03d}" for i in range(stations)), "HB-000"]:
                answer = await http.post(
                    "/graphql", headers={"authorization": f"Bearer {token}"},
                    json={"query": f'mutation {{ createStation(input: {{cpId: "{cp_id}", '
                                   f'name: "Storm {cp_id}", connectors: [{{connectorId: 1}}, '
                                   f'{{connectorId: 2}}]}}) {{ errors {{ code }} }} }}'})
                if answer.json()["data"]["createStation"]["errors"]:
                    raise RuntimeError(f"createStation {cp_id}: {answer.text}")

    async def _healthy(self, http: httpx.AsyncClient) -> None:
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the server did not start: {self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""

    def kill(self) -> None:
        """Past the memory limit: the run goes on and its numbers show the dead server."""
        assert self.process is not None
        self.killed = True
        self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            stop_server(self.process)  # terminate, and kill if it does not stop in time
        self.folder.cleanup()


async def timed_call(ws: ClientConnection, action: str, payload: dict[str, Any],
                     timeout: float) -> float:
    """Round trip of one CALL; ``timeout`` if unanswered (or the connection is gone)."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            await call(ws, action, payload)
    except (TimeoutError, ConnectionClosed):
        return timeout
    return time.monotonic() - start


async def watch_rss(server: Server, limit_mib: float, peak: list[float]) -> None:
    """Keeps ``peak[0]`` at the server's highest RSS seen (every 2 s, as QA's script)."""
    while not server.killed:
        peak[0] = max(peak[0], rss_mib(server.pid))
        if peak[0] > limit_mib:
            print(f"  server RSS {peak[0]:.0f} MiB, over {limit_mib:g}: killing it",
                  flush=True)
            server.kill()
            return
        await asyncio.sleep(2)


# ------------------------------------------------------------------ one phase
@dataclass
class Light:
    """Subscribers of event fields only (the shared fast path)."""

    got: list[list[tuple[int, float]]]
    dropped: list[int]

    def receive(self, k: int, data: bytes) -> None:
        at = time.monotonic()
        info, dropped = INFO.search(data), DROPPED.search(data)
        if info:
            self.got[k].append((int(info.group(1)), at))
        if dropped:
            self.dropped[k] += int(dropped.group(1))

    def complete(self, sent: int) -> bool:
        return all(len(got) + dropped >= sent
                   for got, dropped in zip(self.got, self.dropped, strict=True))


async def phase(server: Server, sizes: Sizes) -> dict[str, Any]:
    """Chargers send ``sizes.rate`` StatusNotifications a second for ``sizes.seconds``
    while a charger beats, a client queries and the light subscribers listen."""
    ocpp = f"ws://127.0.0.1:{server.ocpp_port}/ocpp"
    hb = await connect(f"{ocpp}/HB-000", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                       compression=None, open_timeout=60)
    chargers = [await connect(f"{ocpp}/FAN-{i:03d}",
                              subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                              compression=None, open_timeout=60)
                for i in range(sizes.stations)]
    light = Light([[] for _ in range(sizes.light)], [0] * sizes.light)
    light_sockets = [await subscribe_socket(server.port, address(sizes.addresses),
                                            [("1", LIGHT_QUERY)])
                     for _ in range(sizes.light)]

    async def listen(k: int, ws: ClientConnection) -> None:
        async for raw in ws:
            light.receive(k, raw.encode() if isinstance(raw, str) else raw)

    listeners = [asyncio.create_task(listen(k, ws)) for k, ws in enumerate(light_sockets)]
    sent_at: dict[int, float] = {}
    heartbeats: list[float] = []
    queries: list[float] = []
    status: list[float] = []
    stop = asyncio.Event()

    async def beat() -> None:
        while not stop.is_set():
            heartbeats.append(await timed_call(hb, "Heartbeat", {}, HEARTBEAT_TIMEOUT))
            await asyncio.sleep(0.1)

    async def query() -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}",
                                     timeout=QUERY_TIMEOUT) as http:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    answer = await http.post("/graphql", json={
                        "query": "{ stations(first: 5) { nodes { cpId name } } }"})
                except httpx.TransportError:
                    queries.append(QUERY_TIMEOUT)  # no answer is the worst answer
                else:
                    if answer.status_code != 200:
                        raise RuntimeError(f"query failed: {answer.text[:500]}")
                    queries.append(time.monotonic() - start)
                await asyncio.sleep(0.2)

    locks = [asyncio.Lock() for _ in chargers]

    async def notify(seq: int) -> None:
        # One CALL outstanding per charger (OCPP): a slow answer delays its next event.
        async with locks[seq % len(chargers)]:
            sent_at[seq] = time.monotonic()
            status.append(await timed_call(chargers[seq % len(chargers)],
                                           "StatusNotification", {
                "connectorId": 1 + (seq // len(chargers)) % 2, "errorCode": "NoError",
                "info": f"s{seq}", "timestamp": now(),
                "status": "Available" if seq % 2 else "Preparing"}, STATUS_TIMEOUT))

    async def storm() -> int:
        seq = 0
        start = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        while time.monotonic() - start < sizes.seconds:
            pending.add(asyncio.create_task(notify(seq)))
            seq += 1
            await asyncio.sleep(max(0.0, start + seq / sizes.rate - time.monotonic()))
        await asyncio.wait(pending, timeout=45)
        return seq

    peak = [rss_mib(server.pid)]
    watcher = asyncio.create_task(watch_rss(server, sizes.max_rss_mib, peak))
    side = [asyncio.create_task(beat()), asyncio.create_task(query())]
    try:
        sent = await storm()
        stop.set()
        done, _ = await asyncio.wait(side, timeout=HEARTBEAT_TIMEOUT)
        for task in done:
            task.result()  # a failed query fails the run: it is not a latency
        deadline = time.monotonic() + sizes.drain
        while time.monotonic() < deadline and not light.complete(sent):
            await asyncio.sleep(0.2)
    finally:
        for task in [*side, *listeners, watcher]:
            task.cancel()
        for ws in [hb, *chargers, *light_sockets]:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
    latencies = [t - sent_at[seq] for got in light.got for seq, t in got if seq in sent_at]
    received = sum(len(got) for got in light.got)
    return {"sent": sent, "sent_at": sent_at, "heartbeat_ms": stats_ms(heartbeats),
            "status_notification_ms": stats_ms(status), "query_ms": stats_ms(queries),
            "light": {"subscribers": sizes.light,
                      "events_per_subscriber": received / max(1, sizes.light),
                      "dropped_before_sum": sum(light.dropped),
                      "unaccounted_events": max(0, sent * sizes.light - received
                                                - sum(light.dropped)),
                      "latency_ms": stats_ms(latencies)},
            "rss_peak_mib": peak[0]}


def row(name: str, result: dict[str, Any], heavy: dict[str, Any] | None) -> dict[str, Any]:
    """The table's line for one phase (everything else goes to the JSON)."""
    light = result["light"]
    return {"phase": name, "nested_ops": heavy["subscribed"] if heavy else 0,
            "events": result["sent"],
            "heartbeat_p50_ms": result["heartbeat_ms"]["p50"],
            "heartbeat_p99_ms": result["heartbeat_ms"]["p99"],
            "heartbeat_max_ms": result["heartbeat_ms"]["max"],
            "status_p50_ms": result["status_notification_ms"]["p50"],
            "status_p99_ms": result["status_notification_ms"]["p99"],
            "query_p50_ms": result["query_ms"]["p50"],
            "query_p99_ms": result["query_ms"]["p99"],
            "shared_p50_ms": light["latency_ms"]["p50"],
            "shared_p99_ms": light["latency_ms"]["p99"],
            "shared_unaccounted": light["unaccounted_events"],
            "nested_renders": heavy["renders"] if heavy else None,
            "nested_p50_ms": heavy["latency_ms"]["p50"] if heavy else None,
            "nested_unaccounted": heavy["unaccounted_events"] if heavy else None,
            "nested_ended": heavy["events_lost"] + heavy["refused"] if heavy else None,
            "rss_peak_mib": result["rss_peak_mib"],
            # After the drain: the last coalesced renders come after the phase's peak.
            "rss_after_mib": result["rss_mib_before_after"][1] if heavy else None}


async def main(sizes: Sizes) -> None:
    raise_fd_limit()
    server = Server()
    phases: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    operations = sizes.addresses * sizes.per_address
    try:
        await server.start(sizes.stations)
        print(f"server up; without the nested subscribers, {sizes.rate:g} events/s for "
              f"{sizes.seconds:g} s...", flush=True)
        quiet = await phase(server, sizes)
        quiet.pop("sent_at")
        phases["without_storm"] = quiet
        rows.append(row("without storm", quiet, None))

        clients = HeavyClients(server.port, sizes)
        subscribed = await clients.subscribed()
        rss_before = rss_mib(server.pid)
        print(f"storm: {sizes.addresses} x {sizes.per_address} nested subscriptions "
              f"({subscribed} subscribed); RSS {rss_before:.0f} MiB", flush=True)
        storm = await phase(server, sizes)
        sent_at = storm.pop("sent_at")
        await clients.drain(storm["sent"], operations, sizes.drain)
        storm["rss_mib_before_after"] = (rss_before, rss_mib(server.pid))
        storm["heavy"] = heavy_row(await clients.collect(), sent_at, storm["sent"],
                                   operations)
        phases["with_storm"] = storm
        rows.append(row("with storm", storm, storm["heavy"]))
    except Exception:
        print(f"server log (tail):\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()
    if server.killed:
        print(f"the server was killed past {sizes.max_rss_mib:g} MiB RSS", flush=True)
    report("subscription_storm", rows, {
        "sizes": sizes.__dict__, "server_killed_for_memory": server.killed,
        "phases": phases})


def arguments() -> tuple[Sizes, float]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addresses", type=int, default=30,
                        help="client addresses of nested subscribers (127.0.0.2, .3, ...)")
    parser.add_argument("--per-address", type=int, default=100,
                        help="nested subscriptions per address (one socket each)")
    parser.add_argument("--stations", type=int, default=20,
                        help="chargers sending StatusNotifications")
    parser.add_argument("--rate", type=float, default=10,
                        help="StatusNotifications per second, all chargers together")
    parser.add_argument("--seconds", type=float, default=5, help="length of each phase")
    parser.add_argument("--light", type=int, default=10,
                        help="subscribers of event fields only (the shared fast path)")
    parser.add_argument("--client-processes", type=int, default=3)
    parser.add_argument("--drain", type=float, default=20,
                        help="at most this long for deliveries after a phase's events")
    parser.add_argument("--max-rss-mib", type=float, default=6000,
                        help="kill the server past this RSS (the machine may be shared)")
    parser.add_argument("--timeout", type=float, default=900, help="the whole run, at most")
    options = parser.parse_args()
    # Imported here, not at the top: the client processes re-import this module.
    from graph.live_ws import MAX_OPERATIONS_PER_CLIENT, MAX_OPERATIONS_PER_SOCKET

    positive = ("addresses", "per_address", "stations", "rate", "seconds", "light",
                "client_processes", "drain", "timeout")
    for name in positive:
        if getattr(options, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if options.per_address > MAX_OPERATIONS_PER_SOCKET:
        parser.error(f"--per-address is at most {MAX_OPERATIONS_PER_SOCKET}: one socket "
                     "per address, and the server refuses more operations on a socket")
    if options.light > MAX_OPERATIONS_PER_CLIENT:
        parser.error(f"--light is at most {MAX_OPERATIONS_PER_CLIENT}: they share one "
                     "address, and the server refuses more operations from it")
    if options.addresses > 250 * 256:
        parser.error("--addresses: not that many loopback addresses")
    return Sizes(options.addresses, options.per_address, options.stations, options.rate,
                 options.seconds, options.light, options.client_processes, options.drain,
                 options.max_rss_mib), options.timeout


if __name__ == "__main__":
    chosen, limit = arguments()
    asyncio.run(asyncio.wait_for(main(chosen), limit))
