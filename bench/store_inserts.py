"""Meter samples into the embedded store, written as the bridge writes them: each
MeterValues message's samples in one write, messages from many chargers at once going
through the group committer (``domain/services/batching.py``). Baselines on the same
file in the same run: raw sqlite3 ``executemany`` with one transaction per message, and
with 500-message transactions.

    python -m bench.store_inserts [--messages 20000] [--per-message 5] [--chargers 200]
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
from domain.services.batching import GroupCommitter
from store.sqlite import SqliteStore
from store.sqlite.codec import columns, quote, to_row

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def batches(messages: int, per_message: int, cp_id: str) -> list[list[MeterSample]]:
    return [[MeterSample(session_id=None, cp_id=cp_id, connector_id=1,
                         at=T0 + timedelta(seconds=m), measurand=f"M{v}", value=float(m),
                         unit="Wh", transaction_id=1) for v in range(per_message)]
            for m in range(messages)]


async def ours(path: Path, work: list[list[MeterSample]], chargers: int) -> float:
    """``chargers`` concurrent senders, each writing its messages one after the other."""
    store = SqliteStore(str(path))
    await store.start()
    committer = GroupCommitter(store)

    async def charger(mine: list[list[MeterSample]]) -> None:
        for batch in mine:
            await committer.write([InsertIfAbsent(s) for s in batch])

    start = time.perf_counter()
    await asyncio.gather(*(charger(work[i::chargers]) for i in range(chargers)))
    elapsed = time.perf_counter() - start
    await store.close()
    return elapsed


def raw(path: Path, work: list[list[MeterSample]], per_transaction: int = 1) -> float:
    names = columns(MeterSample)
    sql = (f"INSERT INTO {quote('meter_sample')} ({', '.join(quote(n) for n in names)}) "
           f"VALUES ({', '.join('?' * len(names))}) ON CONFLICT (\"id\") DO NOTHING")
    rows = [[to_row(s) for s in batch] for batch in work]  # encoding is not what is timed
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    start = time.perf_counter()
    for first in range(0, len(rows), per_transaction):
        conn.execute("BEGIN IMMEDIATE")
        for batch in rows[first:first + per_transaction]:
            conn.executemany(sql, batch)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


async def main(messages: int, per_message: int, chargers: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "inserts.db"
        store = SqliteStore(str(path))
        await store.start()
        await store.close()
        per_message_tx = raw(path, batches(messages, per_message, "RAW1"))
        batched_tx = raw(path, batches(messages, per_message, "RAW500"), 500)
        single = await ours(path, batches(messages, per_message, "ONE"), 1)
        grouped = await ours(path, batches(messages, per_message, "MANY"), chargers)
    samples = messages * per_message
    report("store_inserts", [
        {"writer": "raw executemany, 1 message per transaction", "samples": samples,
         "samples_per_s": samples / per_message_tx, "ratio": 1.0},
        {"writer": "raw executemany, 500 messages per transaction", "samples": samples,
         "samples_per_s": samples / batched_tx, "ratio": per_message_tx / batched_tx},
        {"writer": "store, 1 charger (a write per message)", "samples": samples,
         "samples_per_s": samples / single, "ratio": per_message_tx / single},
        {"writer": f"store, {chargers} chargers (group commit)", "samples": samples,
         "samples_per_s": samples / grouped, "ratio": per_message_tx / grouped},
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--per-message", type=int, default=5)
    parser.add_argument("--chargers", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.messages, arguments.per_message, arguments.chargers))
