"""A batching, caching loader: what a request's relations resolve through.

Every ``load(key)`` made while a batch is open joins it; the batch function then gets all
of its keys in one call (one store query per level of a nested page, whatever the number
of rows), and each key's answer is cached for the rest of the request.

Ours rather than aiodataloader's, which the graph used before: building one cost ~6 µs
(an event-loop lookup, a coroutine-function check by signature inspection), a request
builds four or five, and a prefetch (``fetch``) and a look without waiting (``peek``)
needed its private ``_cache``. Batching waits as long as aiodataloader's did: a batch
closes two loop turns after its first key, so that the loads of sibling resolvers, which
graphql-core starts as tasks one turn later, all join it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

BatchFunction = Callable[[list[K]], Awaitable[Sequence[V]]]


class BatchLoader(Generic[K, V]):
    __slots__ = ("_batch", "_known", "_pending", "_queue", "_running")

    def __init__(self, batch: BatchFunction[K, V]) -> None:
        self._batch = batch
        # What the request has loaded, as plain values: a prefetch fills in a page's rows
        # and their resolvers read them back (``peek``) without a future per key.
        self._known: dict[K, V] = {}
        # Keys being loaded, each with its shared future, which each load's own follows
        # (``_following``).
        self._pending: dict[K, asyncio.Future[V]] = {}
        self._queue: list[K] = []
        # The batches in flight (the loop keeps only weak references to tasks).
        self._running: set[asyncio.Task[None]] = set()

    def load(self, key: K) -> asyncio.Future[V]:
        """The value for ``key``: known, being loaded, or loaded in the open batch."""
        loop = asyncio.get_running_loop()
        if key in self._known:
            future = loop.create_future()
            future.set_result(self._known[key])
            return future
        shared = self._pending.get(key)
        if shared is None:
            shared = self._pending[key] = loop.create_future()
            self._queue.append(key)
            if len(self._queue) == 1:
                loop.call_soon(loop.call_soon, self._dispatch)
        return _following(shared)

    def prime(self, key: K, value: V) -> None:
        """Caches ``value`` for ``key`` unless the request has it (or is loading it)."""
        if key not in self._known and key not in self._pending:
            self._known[key] = value

    def peek(self, key: K) -> tuple[bool, V | None]:
        """(True, value) when this request already loaded ``key``: a resolver answers at
        once instead of through an awaitable (graphql-core's cost per awaitable dominates
        deep lists)."""
        known = self._known
        if key in known:
            return True, known[key]
        return False, None

    async def fetch(self, keys: Sequence[K]) -> list[V] | None:
        """The values of ``keys`` for a prefetch, which knows all its keys at once: the
        ones neither known nor being loaded go to the batch function in one call right
        away (no waiting for the batch to close) and are cached for the rows' resolvers.
        A key another load is fetching is awaited. A failing batch caches none of its
        keys, and the fetch answers None if any of its keys failed: a prefetch fails no
        row, each row's resolver loading its key in turn (one batch) and telling the
        error at its own field's path (QA s31: raised here, it failed the whole page, up
        to the nearest nullable parent of its list)."""
        known, pending = self._known, self._pending
        # Taken before any await: a load's failure meanwhile drops its key from pending.
        waiting = [pending[key] for key in dict.fromkeys(keys) if key in pending]
        missing = list(dict.fromkeys(
            key for key in keys if key not in known and key not in pending))
        if missing:
            loop = asyncio.get_running_loop()
            for key in missing:  # a load meanwhile waits for this batch
                waiting.append(pending.setdefault(key, loop.create_future()))
            # A task of its own, as a dispatched batch: the prefetch cancelled (graphql-core
            # cancels a failed object's sibling fields) leaves it to the loads that joined.
            self._start(missing)
        try:
            if waiting:
                await asyncio.gather(*map(_following, waiting))
        except Exception:
            return None  # told by the rows' own loads
        return [known[key] for key in keys]

    def _dispatch(self) -> None:
        keys, self._queue = self._queue, []
        self._start(keys)

    def _start(self, keys: list[K]) -> None:
        task = asyncio.ensure_future(self._run(keys))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, keys: list[K]) -> None:
        """Loads ``keys`` (each has its future in ``_pending``) and settles them; a failure
        fails them all and caches none, so a later load tries again."""
        pending = self._pending
        try:
            values = _checked(keys, await self._batch(keys))
        except BaseException as error:
            for key in keys:
                future = pending.pop(key, None)
                if future is not None and not future.done():
                    future.set_exception(error)
                    future.exception()  # told to its waiters: not "never retrieved"
            if not isinstance(error, Exception):
                raise  # cancellation and exits go on
            return
        known = self._known
        for key, value in zip(keys, values, strict=True):
            known[key] = value
            future = pending.pop(key, None)
            if future is not None and not future.done():
                future.set_result(value)


def _following(shared: asyncio.Future[V]) -> asyncio.Future[V]:
    """A future of its own for one waiter of a key's shared future. Awaited directly, the
    shared one would be cancelled with its waiter's task (graphql-core cancels a failed
    object's sibling fields), failing every other waiter of the key with CancelledError,
    which no resolver or prefetch catches (review s31)."""
    own: asyncio.Future[V] = shared.get_loop().create_future()

    def settle(done: asyncio.Future[V]) -> None:
        if own.done():  # its waiter was cancelled
            if not done.cancelled():
                done.exception()  # its other waiters are told; not "never retrieved"
            return
        if done.cancelled():
            own.cancel()
        elif (error := done.exception()) is not None:
            own.set_exception(error)
        else:
            own.set_result(done.result())

    shared.add_done_callback(settle)
    return own


def _checked(keys: list[Any], values: Sequence[V]) -> Sequence[V]:
    if len(values) != len(keys):
        raise TypeError(f"a batch function answered {len(values)} values for "
                        f"{len(keys)} keys")
    return values
