"""How long one very large frame holds the OCPP server's event loop, by frame kind.

    python -m bench.ocpp_big_frames [--kinds dt_ascii mv_valid ...] [--profile KIND]

A real central system (SQLite file, the OCPP server on a loopback port) runs on its own
loop in a thread, with a ticker task on that loop: the longest gap between its ticks while
a frame is taken in is the time every other charger and request waited (the hold). The
charger is a blocking websockets client in the main thread, idle (GIL released) while the
server works. ``--profile KIND``: that kind's frame under cProfile, the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from websockets.sync.client import connect

from bench.common import report
from chargegraph.runtime import tune_garbage_collector
from ocpp_bridge.frames import MAX_SAMPLED_VALUES
from ocpp_bridge.pacing import MAX_FRAME_BYTES, FramePacer

#: Bytes each frame is made up to (under the largest frame read).
TARGET = MAX_FRAME_BYTES - 64 * 1024
TICK_S = 0.001


def _reading(i: int, value: Any) -> dict[str, Any]:
    return {"timestamp": f"2026-01-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "sampledValue": [{"value": value, "unit": "Wh",
                              "measurand": "Energy.Active.Import.Register",
                              "context": "Sample.Periodic"}] * SAMPLED_PER_READING}


#: Sampled values in each reading of the MeterValues made here.
SAMPLED_PER_READING = 5
#: Readings of a MeterValues at the sampled-value bound.
READINGS_AT_BOUND = MAX_SAMPLED_VALUES // SAMPLED_PER_READING


def _meter_values(tx: int, value: Callable[[int], Any], last: dict[str, Any] | None = None,
                  readings_sent: int | None = None) -> str:
    """A MeterValues of five sampled values a reading, up to ``TARGET`` bytes, or of
    ``readings_sent`` readings."""
    per = len(orjson.dumps(_reading(99_999, value(99_999)))) + 1
    readings = [_reading(i, value(i)) for i in range(readings_sent or TARGET // per)]
    if last is not None:
        readings[-1]["sampledValue"][-1] = last
    return orjson.dumps([2, "big", "MeterValues", {"connectorId": 1, "transactionId": tx,
                                                   "meterValue": readings}]).decode()


def _data_transfer(data_json: str, extra: str = "") -> str:
    """A DataTransfer whose ``data`` is the JSON string text ``data_json`` (escapes kept
    as written)."""
    return f'[2,"big","DataTransfer",{{"vendorId":"V","data":"{data_json}"{extra}}}]'


def frames(tx: int) -> dict[str, str]:
    pairs = "[" + ",".join(["[1,2]"] * (TARGET // 6)) + "]"
    keys = "{" + ",".join(f'"k{i}":{i}' for i in range(TARGET // 20)) + "}"
    return {
        "dt_ascii": _data_transfer("x" * TARGET),
        "dt_words": _data_transfer("lorem ipsum dolor " * (TARGET // 18)),
        "dt_nonascii": _data_transfer("é" * (TARGET // 2)),
        "dt_escapes": _data_transfer("\\n" * (TARGET // 2)),
        "dt_u_escapes": _data_transfer("\\u00e9" * (TARGET // 6)),
        "dt_url_like": _data_transfer("http://h:9 " * (TARGET // 11)),
        "dt_extra_array": _data_transfer("x", f',"blob":{pairs}'),
        "dt_extra_object": _data_transfer("x", f',"blob":{keys}'),
        "mv_valid": _meter_values(tx, str),
        "mv_numbers": _meter_values(tx, float),
        "mv_one_bad": _meter_values(tx, str, {"value": "1", "measurand": "Nope"}),
        "mv_key_value": _meter_values(tx, lambda i: "key value"),
        # At the bound (``frames.MAX_SAMPLED_VALUES``): the numbers resend the valid
        # frame's readings, each late and mended, so only after ``mv_1000_valid`` in the
        # same run (the default order; with ``--kinds``, name both).
        "mv_1000_valid": _meter_values(tx, str, readings_sent=READINGS_AT_BOUND),
        "mv_1000_numbers": _meter_values(tx, float, readings_sent=READINGS_AT_BOUND),
        "mv_1000_one_bad": _meter_values(tx, str, {"value": "1", "measurand": "Nope"},
                                          READINGS_AT_BOUND),
        "bad_json": _data_transfer("x" * TARGET)[:-1],
        "bad_json_mv": _meter_values(tx, str)[:-2],
    }


class Server:
    """The central system on a loop of its own, in a thread, with a ticker."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.longest = 0.0
        self.url = ""
        self.tx = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self, folder: Path) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(folder), self.loop).result(60)

    async def _start(self, folder: Path) -> None:
        from tests.ocpp.conftest import seed, start_central

        self.central = await start_central(folder / "central.db")
        await seed(self.central)
        self.url = self.central.url
        self._ticker = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(TICK_S)
            self.longest = max(self.longest, loop.time() - before - TICK_S)

    def held(self) -> float:
        """The longest pause since ``reset``, once the ticker has ticked after the frame
        (read at once, the pause it is about to measure was missed)."""
        async def after_a_tick() -> float:
            await asyncio.sleep(5 * TICK_S)
            return self.longest
        return asyncio.run_coroutine_threadsafe(after_a_tick(), self.loop).result(30)

    def reset(self) -> None:
        self.longest = 0.0

    def on_loop(self, call: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return call()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def stop(self) -> None:
        from tests.ocpp.conftest import stop_central

        async def stopping() -> None:
            self._ticker.cancel()
            await stop_central(self.central)
        asyncio.run_coroutine_threadsafe(stopping(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)


def main(kinds: list[str] | None, profile: str | None, repeat: int) -> None:
    from tests.ocpp.test_protocol import STATION_PASSWORD, basic_auth

    server = Server()
    with tempfile.TemporaryDirectory() as folder:
        server.start(Path(folder))
        # Unpaced: the pace would hold the next frame back, and each is measured alone.
        server.central.server.pacers.factory = lambda: FramePacer(
            rate=1e9, burst=1e9, byte_rate=1e12, byte_burst=1e12)
        with connect(f"{server.url}/CP-1", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                     additional_headers=basic_auth("CP-1", STATION_PASSWORD),
                     max_size=None, ping_interval=None) as ws:
            ws.send(json.dumps([2, "s", "StartTransaction", {
                "connectorId": 1, "idTag": "TAG-OK", "meterStart": 0,
                "timestamp": "2026-01-01T00:00:00Z"}]))
            tx = json.loads(ws.recv(10))[2]["transactionId"]
            built = frames(tx)
            assert all(len(f.encode()) <= MAX_FRAME_BYTES for f in built.values())
            rows = []
            for kind in kinds or ([profile] if profile else list(built)):
                frame = built[kind]
                holds = []
                answer: list[Any] = []
                for _ in range(repeat):
                    profiler = cProfile.Profile() if profile == kind else None
                    server.on_loop(server.reset)
                    if profiler is not None:
                        server.on_loop(profiler.enable)  # on the server's thread
                    began = time.perf_counter()
                    ws.send(frame)
                    answer = json.loads(ws.recv(600))
                    took = time.perf_counter() - began
                    if profiler is not None:
                        server.on_loop(profiler.disable)
                        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
                    holds.append(server.held())
                print(kind, f"{min(holds) * 1000:.0f} ms", flush=True)
                rows.append({"kind": kind, "bytes": len(frame.encode()),
                             "answer": answer[2] if answer[0] == 4 else "CALLRESULT",
                             # The machine's load only ever adds: the fastest and the
                             # slowest of the runs.
                             "hold_ms": min(holds) * 1000, "hold_max_ms": max(holds) * 1000,
                             "round_trip_ms": took * 1000})
        server.stop()
    report("ocpp_big_frames", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kinds", nargs="*")
    parser.add_argument("--profile")
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    tune_garbage_collector()  # as ``chargegraph serve`` runs
    main(arguments.kinds, arguments.profile, arguments.repeat)
