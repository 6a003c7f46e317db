"""Group commit for telemetry: concurrent small writes (one per MeterValues message from
many chargers) share one store transaction.

Each caller still waits until its own changes are committed — nothing is acknowledged to
a charger before it is stored — but while one transaction runs, the writes that arrive
queue up and go together in the next. An idle system writes at once; a busy one writes
in batches, which is what the single SQLite writer needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence

from domain.ports import Change, Store

#: One caller's write and the future it waits on.
Pending = tuple[Sequence[Change], asyncio.Future[None]]

log = logging.getLogger("chargegraph.batching")

MAX_BATCH_CHANGES = 2_000
#: How long the first write of a batch waits for company. A commit has a fixed cost (the
#: transaction, the WAL frames of every page it dirtied) that a batch shares: at a steady
#: 2,000 messages a second, one commit per message cost twice the CPU per message of
#: batches a couple of milliseconds wide (``python -m bench.ocpp_throughput``).
LINGER_S = 0.002


class GroupCommitter:
    def __init__(self, store: Store, max_changes: int = MAX_BATCH_CHANGES,
                 linger: float = LINGER_S) -> None:
        self.store = store
        self.max_changes = max_changes
        self.linger = linger
        self._pending: deque[Pending] = deque()
        self._worker: asyncio.Task[None] | None = None

    async def write(self, changes: Sequence[Change]) -> None:
        if not changes:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((changes, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        if self.linger > 0:
            await asyncio.sleep(self.linger)
        while self._pending:
            batch: list[Pending] = []
            size = 0
            while self._pending and (not batch or size + len(self._pending[0][0])
                                     <= self.max_changes):
                item = self._pending.popleft()
                batch.append(item)
                size += len(item[0])
            await self._commit(batch)

    async def _commit(self, batch: list[Pending]) -> None:
        try:
            await self.store.write([c for changes, _ in batch for c in changes], [])
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            # One bad write must not fail its neighbours: retry each on its own.
            await asyncio.gather(*(self._retry(chain) for chain in chains(batch)))
            return
        for _, future in batch:
            self._settle(future)

    async def _retry(self, chain: list[Pending]) -> None:
        """Writes ``chain`` one by one, each settling its own caller. Chains run at once:
        one after another, a write held up (MongoDB: a session another batch in flight
        wrote, or one whose writer died, waits and then fails) delayed every later one,
        other chargers' included, by its whole wait."""
        for changes, future in chain:
            try:
                await self.store.write(changes, [])
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                self._settle(future)

    @staticmethod
    def _settle(future: asyncio.Future[None]) -> None:
        if not future.done():
            future.set_result(None)


def chains(batch: Sequence[Pending]) -> list[list[Pending]]:
    """``batch`` split into chains of writes that share a record (directly or through
    another write), each in the order the writes arrived: retried at once, writes of one
    record still land in order (a charger's later live energy after its earlier one)."""
    parent = list(range(len(batch)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = index = parent[parent[index]]
        return index

    first_writer: dict[tuple[str, str], int] = {}
    for index, (changes, _) in enumerate(batch):
        for change in changes:
            other = first_writer.setdefault((change.record.kind, change.record.id), index)
            low, high = sorted((root(other), root(index)))
            parent[high] = low
    grouped: dict[int, list[Pending]] = {}
    for index, item in enumerate(batch):
        grouped.setdefault(root(index), []).append(item)
    return list(grouped.values())
