"""``Loaders.fetch``: a prefetch's loads, one batch call at once, primed for the rows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiodataloader import DataLoader

from graph.loaders import Loaders


class Counting:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail

    async def load(self, keys: Sequence[int]) -> list[int]:
        self.batches.append(list(keys))
        if self.fail:
            raise RuntimeError("store down")
        return [key * 10 for key in keys]


async def test_fetch_loads_the_missing_keys_in_one_call_and_primes_them() -> None:
    batch = Counting()
    loader = DataLoader(batch.load)
    assert await loader.load(1) == 10
    assert await Loaders.fetch(loader, [1, 2, 3, 2]) == [10, 20, 30, 20]
    assert batch.batches == [[1], [2, 3]]  # 1 was loaded, 2 asked for once
    # The rows' own loads find them: no further batch.
    assert await loader.load_many([2, 3]) == [20, 30]
    assert batch.batches == [[1], [2, 3]]


async def test_fetch_waits_for_a_key_another_load_is_fetching() -> None:
    batch = Counting()
    loader = DataLoader(batch.load)
    pending = loader.load(5)  # dispatched on the next loop turn
    assert not pending.done()
    assert await Loaders.fetch(loader, [5, 6]) == [50, 60]
    assert sorted(batch.batches) == [[5], [6]]


async def test_a_failing_batch_raises_and_primes_nothing() -> None:
    loader = DataLoader(Counting(fail=True).load)
    with pytest.raises(RuntimeError, match="store down"):
        await Loaders.fetch(loader, [1, 2])
    assert loader._cache == {}
    await asyncio.sleep(0)
