"""OCPP throughput and latency: charge points in this process send MeterValues in a loop
(each waits for its answer) to a server process — ChargeGraph with persistence, or the
baseline, a bare ``websockets`` server answering every CALL with an empty CALLRESULT.

    python -m bench.ocpp_throughput [--cps 100 1000 5000] [--seconds 8] [--rate 2000]

Reports calls/s and p50/p95/p99 per number of connected charge points, the ratio to the
baseline, and latency at a fixed total rate (``--rate`` calls/s spread over 1,000 CPs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.common import percentile, report
from bench.ocpp_server import raise_fd_limit

_ids = itertools.count()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def start_server(mode: str, stations: int) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen([sys.executable, "-m", "bench.ocpp_server", "--mode", mode,
                                "--stations", str(stations)], stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = await asyncio.get_running_loop().run_in_executor(None, process.stdout.readline)
    if not line.startswith(b"READY"):
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return process, int(line.split()[1])


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def call(ws: ClientConnection, action: str, payload: dict[str, Any]) -> Any:
    unique = str(next(_ids))
    await ws.send(json.dumps([2, unique, action, payload], separators=(",", ":")))
    while True:
        reply = json.loads(await ws.recv())
        if reply[1] == unique:
            return reply


async def open_all(port: int, count: int) -> list[ClientConnection]:
    gate = asyncio.Semaphore(200)

    async def one(i: int) -> ClientConnection:
        async with gate:
            return await connect(f"ws://127.0.0.1:{port}/ocpp/BENCH-{i:05d}",
                                 subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                 compression=None, ping_interval=None, open_timeout=60,
                                 max_queue=4)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def start_transaction(ws: ClientConnection) -> int:
    reply = await call(ws, "StartTransaction", {"connectorId": 1, "idTag": "BENCH",
                                                "meterStart": 0, "timestamp": now()})
    return int(reply[2].get("transactionId", 1)) if reply[0] == 3 else 1


async def charge_point(ws: ClientConnection, transaction: int, deadline: float,
                       interval: float | None, latencies: list[float]) -> None:
    energy = 0
    next_at = time.perf_counter()
    if interval is not None:
        # Spread the charge points over the interval: a fixed rate, not synchronized bursts.
        next_at += random.uniform(0, interval)
    while time.perf_counter() < deadline:
        if interval is not None:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        energy += 37
        payload = {"connectorId": 1, "transactionId": transaction, "meterValue": [
            {"timestamp": now(), "sampledValue": [
                {"value": str(energy), "measurand": "Energy.Active.Import.Register",
                 "unit": "Wh"},
                {"value": "7400", "measurand": "Power.Active.Import", "unit": "W"},
                {"value": "42", "measurand": "SoC", "unit": "Percent"}]}]}
        start = time.perf_counter()
        await call(ws, "MeterValues", payload)
        latencies.append(time.perf_counter() - start)


async def run(mode: str, cps: int, seconds: float, rate: float | None = None
              ) -> dict[str, Any]:
    server, port = await start_server(mode, cps)
    try:
        sockets = await open_all(port, cps)
        gate = asyncio.Semaphore(200)

        async def started(ws: ClientConnection) -> int:
            async with gate:
                return await start_transaction(ws)

        # Every charge point opens its transaction first; only MeterValues are timed.
        transactions = await asyncio.gather(*(started(ws) for ws in sockets))
        latencies: list[float] = []
        interval = cps / rate if rate else None
        deadline = time.perf_counter() + seconds
        began = time.perf_counter()
        cpu_before = process_cpu_seconds(server.pid)
        await asyncio.gather(*(charge_point(ws, tx, deadline, interval, latencies)
                               for ws, tx in zip(sockets, transactions, strict=True)))
        elapsed = time.perf_counter() - began
        cpu = process_cpu_seconds(server.pid) - cpu_before
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
    finally:
        stop_server(server)
    return {"server": mode, "cps": cps, "calls": len(latencies),
            "calls_per_s": len(latencies) / elapsed,
            "p50_ms": percentile(latencies, 50) * 1000,
            "p95_ms": percentile(latencies, 95) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            # CPU the server spent per call (all its threads): steadier than calls/s on a
            # shared machine, and it shows whether the server or the client was the limit.
            "server_cpu_us_per_call": cpu / max(len(latencies), 1) * 1e6,
            "server_cpu_share": cpu / elapsed}


async def main(cps_list: list[int], seconds: float, rate: float, repeat: int) -> None:
    raise_fd_limit()
    rows = []
    for cps in cps_list:
        # Baseline and ChargeGraph alternate, ``repeat`` pairs; the pair with the median
        # ratio is reported (one pair is at the mercy of whatever else the machine runs).
        pairs = []
        for _ in range(repeat):
            base = await run("baseline", cps, seconds)
            ours = await run("chargegraph", cps, seconds)
            base["ratio"] = 1.0
            ours["ratio"] = ours["calls_per_s"] / base["calls_per_s"]
            pairs.append((base, ours))
        pairs.sort(key=lambda pair: pair[1]["ratio"])
        base, ours = pairs[len(pairs) // 2]
        base["ratios_seen"] = "-"
        ours["ratios_seen"] = " ".join(f"{o['ratio']:.2f}" for _, o in pairs)
        rows += [base, ours]
    if rate:
        fixed = await run("chargegraph", 1000, seconds, rate)
        fixed["server"] = f"chargegraph @ {rate:.0f} calls/s"
        fixed["ratio"] = float("nan")
        fixed["ratios_seen"] = "-"
        rows.append(fixed)
    report("ocpp_throughput", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cps", type=int, nargs="*", default=[100, 1000, 5000])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--repeat", type=int, default=1,
                        help="baseline/ChargeGraph pairs per size; the median is reported")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.cps, arguments.seconds, arguments.rate, arguments.repeat))
