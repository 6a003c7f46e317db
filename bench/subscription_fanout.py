"""Subscription fan-out: S subscribers to ``connectorStatusChanged`` over websockets while
charge points send StatusNotifications at R per second; delivery latency (charger send →
subscriber receive) p50/p99, lost events and the server's CPU per delivery. Baseline, same
run and same client: a bare ``websockets`` server (its own process) broadcasting a message
of the same size to the same number of sockets.

    python -m bench.subscription_fanout                      # the issue's case + a sweep
    python -m bench.subscription_fanout --subscribers 1000 --rate 200 --seconds 5

The client is built to measure the server, not itself: subscribers are spread over
``--client-processes`` processes, each a bare asyncio protocol that parses websocket
frames itself and finds the event's marker with ``bytes.find`` (no JSON decoding), and
stamps every frame of a read with the read's time (CLOCK_MONOTONIC, shared by processes).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from multiprocessing.connection import Connection
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, broadcast, serve

from bench.common import percentile, report
from bench.ocpp_server import raise_fd_limit
from bench.ocpp_throughput import call, now, process_cpu_seconds, stop_server
from tests.helpers import free_port

STATIONS = 20
SUBSCRIPTION = "subscription { connectorStatusChanged { cpId info droppedBefore } }"
TARGET_P99_MS = 50.0
#: (subscribers, events per second) after the issue's own case.
SWEEP = [(1000, 20), (1000, 50), (1000, 100), (100, 200)]
MARKER = b'"info":"s'
#: Subscribers per client source address (127.0.0.2, .3, …): under the server's per-address
#: cap (``graph.live_ws.MAX_OPERATIONS_PER_CLIENT``, 200), which refused 800 of 1,000
#: subscribers all connecting from 127.0.0.1.
PER_ADDRESS = 100
DROPPED = b'"droppedBefore":'
#: The server's keep-alive (``graph.live_ws.Connection.keep_alive``), sent as it encodes it.
PING = b'{"type":"ping"}'


# ------------------------------------------------------------------ the client
class Subscriber(asyncio.Protocol):
    """One websocket subscriber: HTTP upgrade, connection_init, subscribe, then frames."""

    def __init__(self, worker: Worker, path: str, host: str, init: bytes | None) -> None:
        self.worker = worker
        self.path = path
        self.host = host
        self.init = init
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.subscribed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        protocol = "Sec-WebSocket-Protocol: graphql-transport-ws\r\n" if self.init else ""
        self.transport.write((  # type: ignore[union-attr]
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{protocol}\r\n").encode())

    def send_text(self, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        header = struct.pack("!BB", 0x81, 0x80 | length) if length < 126 else \
            struct.pack("!BBH", 0x81, 0x80 | 126, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None
        self.transport.write(header + mask + masked)

    def send_control(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None
        self.transport.write(struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload))
                             + mask + masked)

    def data_received(self, data: bytes) -> None:
        at = time.monotonic()
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(buffer[:200].decode(errors="replace"))
            self.upgraded = True
            buffer = buffer[end + 4:]
            if self.init is not None:
                self.send_text(self.init)
        worker = self.worker
        position, size = 0, len(buffer)
        while size - position >= 2:
            opcode = buffer[position] & 0x0F
            length = buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = (buffer[position + 2] << 8) | buffer[position + 3]
                start = position + 4
            elif length == 127:
                if size - position < 10:
                    break
                length = struct.unpack_from("!Q", buffer, position + 2)[0]
                start = position + 10
            end = start + length
            if end > size:
                break
            if opcode == 0x1:
                marker = buffer.find(MARKER, start, end)
                if marker < 0 and buffer.startswith(PING, start):
                    # The server's keep-alive: answer, or a run past 50 s is dropped.
                    self.send_text(b'{"type":"pong"}')
                elif marker >= 0:
                    digits = marker + len(MARKER)
                    quote = buffer.find(b'"', digits, end)
                    worker.seqs.append(int(buffer[digits:quote]))
                    worker.times.append(at)
                    dropped = buffer.find(DROPPED, quote, end)
                    if dropped >= 0 and buffer[dropped + len(DROPPED)] != 0x30:  # "0"
                        tail = dropped + len(DROPPED)
                        stop = tail
                        while 0x30 <= buffer[stop] <= 0x39:
                            stop += 1
                        worker.announced += int(buffer[tail:stop])
                elif not self.subscribed:
                    self.subscribed = True  # connection_ack (or the baseline's hello)
                    if self.init is not None:
                        self.send_text(json.dumps({"id": "1", "type": "subscribe",
                                                   "payload": {"query": SUBSCRIPTION}}
                                                  ).encode())
                    worker.ready += 1
            elif opcode == 0x9:  # ping: answer, or the server drops us
                self.send_control(0xA, bytes(buffer[start:end]))
            position = end
        self.buffer = buffer[position:] if position < size else b""


class Worker:
    def __init__(self) -> None:
        self.seqs = array("q")
        self.times = array("d")
        self.announced = 0
        self.ready = 0


def source_address(index: int) -> str:
    """The loopback address subscriber ``index`` connects from (Linux routes 127/8)."""
    return f"127.0.{(2 + index // PER_ADDRESS) // 256}.{(2 + index // PER_ADDRESS) % 256}"


def client_process(port: int, path: str, token: str | None, count: int, first: int,
                   pipe: Connection) -> None:
    """Opens ``count`` subscribers (numbered from ``first``, for their source addresses),
    says "ready", and on "stop" sends back what arrived."""
    raise_fd_limit()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        worker = Worker()
        init = json.dumps({"type": "connection_init", "payload": {
            "authorization": f"Bearer {token}"}}).encode() if token else None
        transports = []
        for index in range(count):
            transport, _ = await loop.create_connection(
                lambda: Subscriber(worker, path, f"127.0.0.1:{port}", init),
                "127.0.0.1", port, local_addr=(source_address(first + index), 0))
            transports.append(transport)
            if index % 50 == 49:
                await asyncio.sleep(0.01)  # do not flood the accept queue
        deadline = time.monotonic() + 120
        while worker.ready < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        pipe.send(("ready", worker.ready))
        stop = asyncio.Event()
        loop.add_reader(pipe.fileno(), stop.set)
        await stop.wait()
        loop.remove_reader(pipe.fileno())
        pipe.recv()
        pipe.send((worker.seqs.tobytes(), worker.times.tobytes(), worker.announced))
        for transport in transports:
            transport.close()

    asyncio.run(run())


class Clients:
    """Subscribers spread over processes."""

    def __init__(self, port: int, path: str, token: str | None, subscribers: int,
                 processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        processes = max(1, min(processes, subscribers))
        shares = [subscribers // processes + (1 if i < subscribers % processes else 0)
                  for i in range(processes)]
        self.pipes: list[Connection] = []
        self.processes = []
        for number, share in enumerate(shares):
            mine, theirs = context.Pipe()
            process = context.Process(target=client_process,
                                      args=(port, path, token, share, sum(shares[:number]),
                                            theirs), daemon=True)
            process.start()
            self.pipes.append(mine)
            self.processes.append(process)

    async def ready(self) -> int:
        loop = asyncio.get_running_loop()
        answers = await asyncio.gather(*(loop.run_in_executor(None, p.recv)
                                         for p in self.pipes))
        return sum(count for _, count in answers)

    async def collect(self) -> tuple[list[int], list[float], int]:
        loop = asyncio.get_running_loop()
        for pipe in self.pipes:
            pipe.send("stop")
        answers = await asyncio.gather(*(loop.run_in_executor(None, p.recv)
                                         for p in self.pipes))
        seqs: list[int] = []
        times: list[float] = []
        announced = 0
        for raw_seqs, raw_times, dropped in answers:
            seqs.extend(array("q", raw_seqs))
            times.extend(array("d", raw_times))
            announced += dropped
        for process in self.processes:
            process.join(timeout=30)
        return seqs, times, announced


# ------------------------------------------------------------------ the load
async def load(senders: list[Any], rate: float, seconds: float,
               sent_at: dict[int, float], send: Any) -> int:
    """Sends ``rate`` events a second for ``seconds``, round-robin over ``senders``."""
    locks = {id(s): asyncio.Lock() for s in senders}
    interval = 1 / rate
    next_at = time.monotonic()
    deadline = next_at + seconds
    seq = 0
    pending: set[asyncio.Task[Any]] = set()

    async def one(sender: Any, number: int) -> None:
        async with locks[id(sender)]:  # a charger has one CALL outstanding at a time
            sent_at[number] = time.monotonic()
            await send(sender, number)

    while time.monotonic() < deadline:
        seq += 1
        task = asyncio.create_task(one(senders[seq % len(senders)], seq))
        pending.add(task)
        task.add_done_callback(pending.discard)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*pending)
    return seq


def summary(server: str, subscribers: int, rate: float, seconds: float, sent: int,
            sent_at: dict[int, float], seqs: list[int], times: list[float], announced: int,
            cpu: float | None, ready: int) -> dict[str, Any]:
    latencies = [t - sent_at[s] for s, t in zip(seqs, times, strict=True) if s in sent_at]
    delivered = len(latencies)
    expected = sent * subscribers
    p99 = percentile(latencies, 99) * 1000
    lost = expected - delivered
    holds = delivered > 0 and p99 <= TARGET_P99_MS and lost == 0
    return {"server": server, "subscribers": subscribers, "rate_per_s": rate,
            "deliveries_per_s": int(subscribers * rate), "subscribed": ready,
            "events_sent": sent, "delivered": delivered, "lost": lost,
            "dropped_announced": announced,
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": p99,
            "server_us_per_delivery": (cpu / delivered * 1e6) if cpu is not None and delivered
            else None,
            "target_p99_50ms_no_loss": "MET" if holds else "MISSED"}


# ------------------------------------------------------------------ ChargeGraph
class ChargeGraph:
    def __init__(self) -> None:
        folder = tempfile.mkdtemp(prefix="chargegraph-fanout-")
        self.port, self.ocpp_port = free_port(), free_port()
        self.env = {**os.environ, "CHARGEGRAPH_DATABASE_URL": f"sqlite:///{folder}/f.db",
                    "CHARGEGRAPH_PORT": str(self.port),
                    "CHARGEGRAPH_OCPP_PORT": str(self.ocpp_port),
                    "CHARGEGRAPH_JWT_SECRET": "f" * 40, "CHARGEGRAPH_LOG_LEVEL": "WARNING"}
        self.token = ""
        self.server: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        subprocess.run([sys.executable, "-m", "chargegraph", "create-user", "--email",
                        "admin@bench.example", "--password", "bench-password", "--role",
                        "admin"], env=self.env, check=True, capture_output=True)
        self.server = subprocess.Popen([sys.executable, "-m", "chargegraph", "serve"],
                                       env=self.env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}",
                                     timeout=30) as http:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            self.token = (await http.post("/graphql", json={
                "query": 'mutation { login(email: "admin@bench.example", password: '
                         '"bench-password") { token } }'})).json()["data"]["login"]["token"]
            for i in range(STATIONS):
                await http.post("/graphql", headers={"authorization": f"Bearer {self.token}"},
                                json={"query": f'mutation {{ createStation(input: {{cpId: '
                                      f'"FAN-{i:03d}", name: "Fan {i}", connectors: '
                                      f'[{{connectorId: 1}}]}}) {{ errors {{ code }} }} }}'})

    def stop(self) -> None:
        if self.server is not None:
            stop_server(self.server)  # terminate, and kill if it does not stop in time

    async def run(self, subscribers: int, rate: float, seconds: float, processes: int
                  ) -> dict[str, Any]:
        assert self.server is not None
        clients = Clients(self.port, "/graphql", self.token, subscribers, processes)
        ready = await clients.ready()
        chargers: list[ClientConnection] = [
            await connect(f"ws://127.0.0.1:{self.ocpp_port}/ocpp/FAN-{i:03d}",
                          subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                          compression=None) for i in range(STATIONS)]
        await asyncio.sleep(1.5)  # the subscribe messages are registered by now

        async def send(ws: ClientConnection, seq: int) -> None:
            await call(ws, "StatusNotification", {
                "connectorId": 1, "errorCode": "NoError", "info": f"s{seq}",
                "timestamp": now(), "status": "Available" if seq % 2 else "Preparing"})

        sent_at: dict[int, float] = {}
        cpu_before = process_cpu_seconds(self.server.pid)
        try:
            sent = await load(chargers, rate, seconds, sent_at, send)
            await asyncio.sleep(2 + subscribers * rate / 100_000)  # drain
        finally:
            cpu = process_cpu_seconds(self.server.pid) - cpu_before
            for ws in chargers:
                with contextlib.suppress(Exception):
                    await ws.close()
        seqs, times, announced = await clients.collect()
        await asyncio.sleep(0.5)  # let the server forget the closed subscribers
        return summary("chargegraph", subscribers, rate, seconds, sent, sent_at, seqs, times,
                       announced, cpu, ready)


# ------------------------------------------------------------------ the baseline
def baseline_process(port: int) -> None:
    """A bare websockets broadcast server: what relaying a message to S sockets costs."""

    async def run() -> None:
        sockets: set[ServerConnection] = set()
        hello = '{"type":"connection_ack"}'

        async def handler(ws: ServerConnection) -> None:
            if ws.request is not None and ws.request.path == "/pub":
                async for message in ws:
                    seq = json.loads(message)["seq"]
                    # The same shape and size as ChargeGraph's `next` message.
                    broadcast(sockets, '{"id":"1","type":"next","payload":{"data":{'
                                       '"connectorStatusChanged":{"cpId":"FAN-000",'
                                       f'"info":"s{seq}","droppedBefore":0}}}}}}}}')
                    await ws.send("ok")
            else:
                await ws.send(hello)
                sockets.add(ws)
                try:
                    await ws.wait_closed()
                finally:
                    sockets.discard(ws)

        async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
            await asyncio.Future()

    raise_fd_limit()
    asyncio.run(run())


class Baseline:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: Any = None

    async def start(self) -> None:
        self.process = multiprocessing.get_context("spawn").Process(
            target=baseline_process, args=(self.port,), daemon=True)
        self.process.start()
        for _ in range(300):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.join(timeout=30)

    async def run(self, subscribers: int, rate: float, seconds: float, processes: int
                  ) -> dict[str, Any]:
        clients = Clients(self.port, "/sub", None, subscribers, processes)
        ready = await clients.ready()
        publishers = [await connect(f"ws://127.0.0.1:{self.port}/pub", compression=None)
                      for _ in range(STATIONS)]
        await asyncio.sleep(0.5)

        async def send(ws: ClientConnection, seq: int) -> None:
            await ws.send(json.dumps({"seq": seq}))
            await ws.recv()

        sent_at: dict[int, float] = {}
        cpu_before = process_cpu_seconds(self.process.pid)
        try:
            sent = await load(publishers, rate, seconds, sent_at, send)
            await asyncio.sleep(2 + subscribers * rate / 100_000)
        finally:
            cpu = process_cpu_seconds(self.process.pid) - cpu_before
            for ws in publishers:
                await ws.close()
        seqs, times, announced = await clients.collect()
        await asyncio.sleep(0.5)
        return summary("baseline: bare websockets broadcast", subscribers, rate, seconds,
                       sent, sent_at, seqs, times, announced, cpu, ready)


async def main(cases: list[tuple[int, float]], seconds: float, processes: int) -> None:
    raise_fd_limit()
    baseline, chargegraph = Baseline(), ChargeGraph()
    rows: list[dict[str, Any]] = []
    try:
        await baseline.start()
        await chargegraph.start()
        for subscribers, rate in cases:
            for server in (baseline, chargegraph):
                row = await server.run(subscribers, rate, seconds, processes)
                rows.append(row)
                print(f"  {row['server'][:11]:<11} {subscribers:>5} x {rate:>5g}/s: "
                      f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
                      f"lost {row['lost']}, {row['target_p99_50ms_no_loss']}", flush=True)
    finally:
        baseline.stop()
        chargegraph.stop()
    report("subscription_fanout", rows, {
        "seconds": seconds, "client_processes": processes,
        "target": f"p99 <= {TARGET_P99_MS:g} ms and no lost events"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=None,
                        help="run only this case (with --rate) instead of the sweep")
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--client-processes", type=int, default=2)
    arguments = parser.parse_args()
    if arguments.subscribers is None and arguments.rate is None:
        chosen = [(1000, 200.0), *((s, float(r)) for s, r in SWEEP)]
    else:
        chosen = [(arguments.subscribers or 1000, arguments.rate or 200.0)]
    asyncio.run(main(chosen, arguments.seconds, arguments.client_processes))
