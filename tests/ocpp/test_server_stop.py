"""A stop of the OCPP server with a charger that answers nothing any more (a cellular
modem gone silent, its TCP connection half-open, as happens in the field every day)."""

from __future__ import annotations

import time
from pathlib import Path

from domain import entities as d
from domain.query import Eq
from ocpp_bridge.server import CLOSE_TIMEOUT_S
from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, seed, start_central, stop_central


async def test_a_silent_charger_does_not_hold_the_stop(tmp_path: Path) -> None:
    """Ops QA s25: the stop waited websockets' default 10 s for the silent charger's
    close frame, as long as `docker stop` waits before it kills the process: the
    disconnects were not written nor the instance lease released, and a graceful stop
    ended as a SIGKILL. The charger is recorded offline all the same."""
    central = await start_central(tmp_path / "stop.db")
    try:
        await seed(central)
        async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            cp._connection.transport.pause_reading()  # reads, and so answers, nothing
            began = time.monotonic()
            await central.server.stop()
            took = time.monotonic() - began
            cp._connection.transport.resume_reading()
        assert took < CLOSE_TIMEOUT_S + 2, took
        station = await central.store.find_one(d.Station, Eq("cp_id", "CP-1"))
        assert station is not None and not station.online
    finally:
        await stop_central(central)
