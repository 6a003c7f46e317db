"""Connection density: N idle charge points (boot, status, heartbeat) connected to one
server process; memory per connection (server RSS growth / N) and time to accept all,
ChargeGraph against the bare ``websockets`` baseline. Afterwards every connection must
still answer a heartbeat.

    python -m bench.ocpp_density [--cps 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from bench.common import report
from bench.ocpp_server import raise_fd_limit
from bench.ocpp_throughput import call, now, open_all, start_server, stop_server


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def idle_charge_point(ws: Any) -> None:
    await call(ws, "BootNotification", {"chargePointVendor": "Bench",
                                        "chargePointModel": "Idle"})
    await call(ws, "StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                          "status": "Available", "timestamp": now()})
    await call(ws, "Heartbeat", {})


async def run(mode: str, cps: int) -> dict[str, Any]:
    server, port = await start_server(mode, cps)
    try:
        await asyncio.sleep(1.0)
        before = rss_kib(server.pid)
        began = time.perf_counter()
        sockets = await open_all(port, cps)
        gate = asyncio.Semaphore(500)

        async def settle(ws: Any) -> None:
            async with gate:
                await idle_charge_point(ws)

        await asyncio.gather(*(settle(ws) for ws in sockets))
        accepted_s = time.perf_counter() - began
        await asyncio.sleep(1.0)
        after = rss_kib(server.pid)
        answers = await asyncio.gather(*(call(ws, "Heartbeat", {}) for ws in sockets),
                                       return_exceptions=True)
        answering = sum(1 for a in answers if isinstance(a, list) and a[0] == 3)
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
    finally:
        stop_server(server)
    return {"server": mode, "cps": cps, "accept_all_s": accepted_s,
            "rss_before_mib": before / 1024, "rss_after_mib": after / 1024,
            "kib_per_connection": (after - before) / cps, "answering": answering}


async def main(cps: int) -> None:
    raise_fd_limit()
    rows = [await run("baseline", cps), await run("chargegraph", cps)]
    rows[0]["ratio"] = 1.0
    rows[1]["ratio"] = rows[1]["kib_per_connection"] / rows[0]["kib_per_connection"]
    report("ocpp_density", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cps", type=int, default=10_000)
    asyncio.run(main(parser.parse_args().cps))
