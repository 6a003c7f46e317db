"""``BatchLoader`` (graph/batch_loader.py): loads batched per loop turn and cached;
``fetch``, a prefetch's loads, one batch call at once, cached for the rows, a failure
answered None."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

from graph.batch_loader import BatchLoader


class Counting:
    def __init__(self, fail: bool = False, short: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail
        self.short = short

    async def load(self, keys: Sequence[int]) -> list[int]:
        self.batches.append(list(keys))
        if self.fail:
            raise RuntimeError("store down")
        return [key * 10 for key in keys][: -1 if self.short else None]


def gated() -> tuple[asyncio.Event, list[list[int]], Callable[[Sequence[int]],
                                                             Awaitable[list[int]]]]:
    """A batch function answering once its gate is set, and the batches it was asked."""
    gate = asyncio.Event()
    batches: list[list[int]] = []

    async def slow(keys: Sequence[int]) -> list[int]:
        batches.append(list(keys))
        await gate.wait()
        return [key * 10 for key in keys]

    return gate, batches, slow


async def test_loads_of_one_turn_and_of_the_tasks_it_starts_make_one_batch() -> None:
    batch = Counting()
    loader: BatchLoader[int, int] = BatchLoader(batch.load)

    async def resolver(key: int) -> int:  # graphql-core starts these as tasks
        return await loader.load(key)

    first = loader.load(1)
    values = await asyncio.gather(first, resolver(2), resolver(3), resolver(1))
    assert values == [10, 20, 30, 10]
    assert batch.batches == [[1, 2, 3]]
    # Cached for the rest of the request.
    assert await loader.load(2) == 20 and batch.batches == [[1, 2, 3]]
    assert loader.peek(3) == (True, 30) and loader.peek(4) == (False, None)


async def test_a_failing_batch_fails_its_keys_and_caches_none_of_them() -> None:
    batch = Counting(fail=True)
    loader: BatchLoader[int, int] = BatchLoader(batch.load)
    loads = [loader.load(1), loader.load(2)]
    for load in loads:
        with pytest.raises(RuntimeError, match="store down"):
            await load
    assert loader.peek(1) == (False, None)
    batch.fail = False
    assert await loader.load(1) == 10  # tried again
    assert batch.batches == [[1, 2], [1]]


async def test_a_batch_answering_too_few_values_fails_its_keys() -> None:
    loader: BatchLoader[int, int] = BatchLoader(Counting(short=True).load)
    with pytest.raises(TypeError, match="1 values for 2 keys"):
        # Bounded: a batch that fails after answering nothing would leave them waiting.
        await asyncio.wait_for(asyncio.gather(loader.load(1), loader.load(2)), 5)


async def test_fetch_loads_the_missing_keys_in_one_call_and_caches_them() -> None:
    batch = Counting()
    loader: BatchLoader[int, int] = BatchLoader(batch.load)
    assert await loader.load(1) == 10
    assert await loader.fetch([1, 2, 3, 2]) == [10, 20, 30, 20]
    assert batch.batches == [[1], [2, 3]]  # 1 was loaded, 2 asked for once
    # The rows' own loads find them: no further batch.
    assert await asyncio.gather(loader.load(2), loader.load(3)) == [20, 30]
    assert batch.batches == [[1], [2, 3]]


async def test_fetch_waits_for_a_key_another_load_is_fetching() -> None:
    batch = Counting()
    loader: BatchLoader[int, int] = BatchLoader(batch.load)
    pending = loader.load(5)  # dispatched two loop turns later
    assert not pending.done()
    assert await loader.fetch([5, 6]) == [50, 60]
    assert sorted(batch.batches) == [[5], [6]]


async def test_a_failing_fetch_answers_none_and_caches_nothing() -> None:
    """A prefetch fails no row (QA s31): the rows' own loads try again, in one batch."""
    batch = Counting(fail=True)
    loader: BatchLoader[int, int] = BatchLoader(batch.load)
    assert await loader.fetch([1, 2]) is None
    assert loader.peek(1) == (False, None) and loader.peek(2) == (False, None)
    batch.fail = False
    assert await asyncio.gather(loader.load(1), loader.load(2)) == [10, 20]
    assert batch.batches == [[1, 2], [1, 2]]


async def test_a_fetch_waiting_on_a_failing_load_answers_none() -> None:
    """A key another load is fetching fails with that load's batch: the fetch answers
    None, the load itself gets the error."""
    async def load(keys: Sequence[int]) -> list[int]:
        if 5 in keys:
            raise RuntimeError("store down")
        return [key * 10 for key in keys]

    loader: BatchLoader[int, int] = BatchLoader(load)
    pending = loader.load(5)
    assert await loader.fetch([5, 6]) is None
    with pytest.raises(RuntimeError, match="store down"):
        await pending
    assert loader.peek(6) == (True, 60)


async def test_prime_keeps_what_the_request_already_has() -> None:
    loader: BatchLoader[int, int] = BatchLoader(Counting().load)
    loader.prime(1, 7)
    loader.prime(1, 8)
    assert await loader.load(1) == 7


async def test_a_load_during_a_fetch_waits_for_the_fetchs_batch() -> None:
    gate, batches, slow = gated()
    loader: BatchLoader[int, int] = BatchLoader(slow)
    fetching = asyncio.ensure_future(loader.fetch([1, 2]))
    await asyncio.sleep(0)  # the fetch's batch is under way
    meanwhile = loader.load(2)
    gate.set()
    assert await fetching == [10, 20] and await meanwhile == 20
    for _ in range(5):  # long enough for any batch of the load to go out
        await asyncio.sleep(0)
    assert batches == [[1, 2]]


async def test_a_cancelled_waiter_fails_no_other_waiter_of_its_key() -> None:
    """graphql-core cancels a failed object's sibling fields: a load cancelled with its
    task must leave the key's other loads and a prefetch waiting on it their value, not
    a CancelledError (review s31)."""
    gate = asyncio.Event()

    async def slow(keys: Sequence[int]) -> list[int]:
        await gate.wait()
        return [key * 10 for key in keys]

    loader: BatchLoader[int, int] = BatchLoader(slow)

    async def resolver(key: int) -> int:
        return await loader.load(key)

    doomed = asyncio.ensure_future(resolver(1))
    sibling = asyncio.ensure_future(resolver(1))
    for _ in range(3):  # the batch is dispatched two loop turns after its first key
        await asyncio.sleep(0)
    fetching = asyncio.ensure_future(loader.fetch([1]))
    await asyncio.sleep(0)
    doomed.cancel()
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.wait_for(sibling, 5) == 10
    assert await asyncio.wait_for(fetching, 5) == [10]
    assert doomed.cancelled()


async def test_a_cancelled_prefetch_leaves_its_batch_to_the_loads_that_joined_it() -> None:
    """A prefetching field cancelled with its siblings (review s31): its batch goes on
    for a load of one of its keys made meanwhile, which gets its value, not a
    CancelledError."""
    gate, batches, slow = gated()
    loader: BatchLoader[int, int] = BatchLoader(slow)
    fetching = asyncio.ensure_future(loader.fetch([1, 2]))
    for _ in range(2):  # the fetch's batch is under way
        await asyncio.sleep(0)
    joined = asyncio.ensure_future(loader.load(2))
    fetching.cancel()
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.wait_for(joined, 5) == 20
    assert fetching.cancelled()
    assert batches == [[1, 2]]
    assert loader.peek(1) == (True, 10)
