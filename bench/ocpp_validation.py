"""What OCPP payload validation costs per message: the ``ocpp`` package's default (its
jsonschema check in the default thread pool), that check inline, the same schemas compiled
by fastjsonschema, and the bridge's choice (compiled to closures by ``ocpp_bridge.schema``,
inline).

    python -m bench.ocpp_validation [--messages 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

import fastjsonschema
from ocpp.messages import Call, _validate_payload

from bench.common import report
from ocpp_bridge import frames

PAYLOAD = {
    "connectorId": 1, "transactionId": 42,
    "meterValue": [{"timestamp": "2026-11-24T10:00:00.000Z", "sampledValue": [
        {"value": "123456", "measurand": "Energy.Active.Import.Register", "unit": "Wh",
         "context": "Sample.Periodic"},
        {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
        {"value": "16.0", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
        {"value": "230.0", "measurand": "Voltage", "unit": "V", "phase": "L1-N"},
        {"value": "55", "measurand": "SoC", "unit": "Percent"},
    ]}],
}


async def thread_pool(n: int) -> float:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    for i in range(n):
        call = Call(str(i), "MeterValues", PAYLOAD)
        await loop.run_in_executor(None, _validate_payload, call, "1.6")
    return time.perf_counter() - start


async def jsonschema_inline(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        _validate_payload(Call(str(i), "MeterValues", PAYLOAD), "1.6")
    return time.perf_counter() - start


async def fastjsonschema_inline(n: int) -> float:
    validate = fastjsonschema.compile(_schema("MeterValues"),
                                      formats={"date-time": frames._DATE_TIME.pattern})
    start = time.perf_counter()
    for _ in range(n):
        validate(PAYLOAD)
    return time.perf_counter() - start


def _schema(action: str) -> dict[str, Any]:
    with open(os.path.join(frames._SCHEMAS, f"{action}.json"), encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    schema.pop("$schema", None)
    return schema


async def bridge(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        frames.validate(frames.CALL, "MeterValues", PAYLOAD, str(i))
    return time.perf_counter() - start


async def main(n: int) -> None:
    await bridge(200)  # warm both validator caches
    await jsonschema_inline(200)
    pool = await thread_pool(n)
    plain = await jsonschema_inline(n)
    compiled = await fastjsonschema_inline(n)
    mine = await bridge(n)
    report("ocpp_validation", [
        {"mode": "ocpp default: jsonschema in thread pool", "messages": n,
         "us_per_msg": pool / n * 1e6, "ratio": 1.0},
        {"mode": "jsonschema inline", "messages": n, "us_per_msg": plain / n * 1e6,
         "ratio": plain / pool},
        {"mode": "fastjsonschema inline", "messages": n,
         "us_per_msg": compiled / n * 1e6, "ratio": compiled / pool},
        {"mode": "bridge: ocpp_bridge.schema closures inline", "messages": n,
         "us_per_msg": mine / n * 1e6, "ratio": mine / pool},
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().messages))
