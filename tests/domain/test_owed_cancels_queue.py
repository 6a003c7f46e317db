"""A station's owed cancels sent after each CancelReservation its charger answers
(``Withdrawal.owed_cancels_later``): review r29, a station's removal cancelling N
reservations queued N runs, each reading the station's owed cancels again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from domain.policy import Policy
from domain.services import ServiceContext, Services
from store.sqlite import SqliteStore
from tests.helpers import FastHasher


async def test_answers_at_once_queue_one_send_of_what_is_owed(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "owed.db"))
    await store.start()
    try:
        withdrawal = Services(ServiceContext(store=store, policy=Policy(),
                                             hasher=FastHasher())).withdrawal
        runs: list[str] = []
        begun, release = asyncio.Event(), asyncio.Event()

        async def owed_cancels(station_id: str) -> None:
            runs.append(station_id)
            begun.set()
            await release.wait()

        withdrawal._owed_cancels = owed_cancels  # type: ignore[method-assign]
        for _ in range(5):  # a removal's five cancels answered
            withdrawal.owed_cancels_later("S1")
        withdrawal.owed_cancels_later("S2")
        await asyncio.wait_for(begun.wait(), 5)
        # Begun: what it read may predate a later answer, which queues another.
        withdrawal.owed_cancels_later("S1")
        release.set()
        await withdrawal.settled()
        assert sorted(runs) == ["S1", "S1", "S2"]
    finally:
        await store.close()
