"""Meter samples into the embedded store, batched as the bridge batches them (one write
per MeterValues message: its sampled values in one transaction), against raw sqlite3
``executemany`` of the same batches, one transaction each, on the same file.

    python -m bench.store_inserts [--messages 20000] [--per-message 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import report
from domain.entities import MeterSample
from domain.ports import InsertIfAbsent
from store.sqlite import SqliteStore
from store.sqlite.codec import columns, quote, to_row

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def batches(messages: int, per_message: int, cp_id: str) -> list[list[MeterSample]]:
    return [[MeterSample(session_id=None, cp_id=cp_id, connector_id=1,
                         at=T0 + timedelta(seconds=m), measurand=f"M{v}", value=float(m),
                         unit="Wh", transaction_id=1) for v in range(per_message)]
            for m in range(messages)]


async def ours(path: Path, work: list[list[MeterSample]]) -> float:
    store = SqliteStore(str(path))
    await store.start()
    start = time.perf_counter()
    for batch in work:
        await store.write([InsertIfAbsent(s) for s in batch], [])
    elapsed = time.perf_counter() - start
    await store.close()
    return elapsed


def raw(path: Path, work: list[list[MeterSample]]) -> float:
    names = columns(MeterSample)
    sql = (f"INSERT INTO {quote('meter_sample')} ({', '.join(quote(n) for n in names)}) "
           f"VALUES ({', '.join('?' * len(names))}) ON CONFLICT (\"id\") DO NOTHING")
    rows = [[to_row(s) for s in batch] for batch in work]  # encoding is not what is timed
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    start = time.perf_counter()
    for batch in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, batch)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


async def main(messages: int, per_message: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "inserts.db"
        store = SqliteStore(str(path))
        await store.start()
        await store.close()
        baseline = raw(path, batches(messages, per_message, "RAW"))
        mine = await ours(path, batches(messages, per_message, "OURS"))
    samples = messages * per_message
    report("store_inserts", [
        {"writer": "raw sqlite3 executemany", "samples": samples,
         "samples_per_s": samples / baseline, "ratio": 1.0},
        {"writer": "SqliteStore.write", "samples": samples, "samples_per_s": samples / mine,
         "ratio": baseline / mine},
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--per-message", type=int, default=5)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.messages, arguments.per_message))
