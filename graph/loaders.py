"""Per-request loaders (``graph.batch_loader.BatchLoader``): every relation of the graph
resolves through one of these, so a nested query costs one store call per level whatever
the number of rows.

Loaders are built per request (and per subscription event) and never shared: their cache
is only valid for one viewer at one moment.

The batch functions hold the read service and the viewer, never the ``Loaders``, so
loaders and their owner form no reference cycle: dropped or released (``release``, at
the end of every request: ``graph.pipeline.RequestPipeline``), what they loaded is freed at
once instead of waiting for the garbage collector.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from datetime import timedelta
from typing import Any

from domain.entities import E, MeterSample, Record
from domain.policy import Viewer
from domain.query import Filter, Sort
from domain.services.intervals import IdleSpan
from domain.services.reads import ReadService
from domain.services.tariffs import PricedAt
from graph.batch_loader import BatchLoader


class Loaders:
    def __init__(self, reads: ReadService, viewer: Viewer) -> None:
        self._reads = reads
        self._viewer = viewer
        self._loaders: dict[Hashable, BatchLoader[Any, Any]] = {}

    def release(self) -> None:
        """Drops every loader and what it loaded (the request is done with them; a later
        call builds them again)."""
        self._loaders.clear()

    def shared(self, build: Callable[[Loaders], BatchLoader[Any, Any]]) -> BatchLoader[Any, Any]:
        """The loader ``build`` makes, made once per request and then found by one lookup
        keyed by ``build`` itself. For loaders fetched once per row of a page (a
        connector's active session): ``many_by``'s key hashes its filter and sort on every
        call, which cost 2 µs a row."""
        loader = self._loaders.get(build)
        if loader is None:
            loader = self._loaders[build] = build(self)
        return loader

    def by_id(self, kind: type[E]) -> BatchLoader[Any, Any]:
        """Records by id; ``None`` for missing or hidden ones."""
        key = ("id", kind)
        if key not in self._loaders:
            reads, viewer = self._reads, self._viewer

            async def load(ids: Sequence[str]) -> list[Record | None]:
                return await reads.get_many(viewer, kind, list(ids))  # type: ignore[return-value]

            self._loaders[key] = BatchLoader(load)
        return self._loaders[key]

    def one_by(self, kind: type[E], key_field: str, where: Filter,
               sort: Sequence[Sort] = (), seen: str | None = None) -> BatchLoader[Any, Any]:
        """The first record (in ``sort`` order) per key value, e.g. a connector's active
        session. ``seen``: every key loaded is the id of a record of that kind read
        through the viewer's scope (``Policy.scope_under``), e.g. "station"."""
        loader_key = ("one", kind, key_field, where, tuple(sort), seen)
        if loader_key not in self._loaders:
            reads, viewer = self._reads, self._viewer

            async def load(keys: Sequence[Any]) -> list[Record | None]:
                found = await reads.grouped(
                    viewer, kind, key_field, list(keys), where, sort, 1, seen
                )
                return [found.get(k, [None])[0] for k in keys]

            self._loaders[loader_key] = BatchLoader(load)
        return self._loaders[loader_key]

    def many_by(self, kind: type[E], key_field: str, where: Filter, sort: Sequence[Sort],
                limit: int, seen: str | None = None) -> BatchLoader[Any, Any]:
        """Up to ``limit`` records per key value in ``sort`` order (nested lists);
        ``seen`` as ``one_by``'s."""
        loader_key = ("many", kind, key_field, where, tuple(sort), limit, seen)
        if loader_key not in self._loaders:
            reads, viewer = self._reads, self._viewer

            async def load(keys: Sequence[Any]) -> list[list[Record]]:
                found = await reads.grouped(
                    viewer, kind, key_field, list(keys), where, sort, limit, seen
                )
                return [list(found.get(k, [])) for k in keys]

            self._loaders[loader_key] = BatchLoader(load)
        return self._loaders[loader_key]

    def count_by(self, kind: type[E], key_field: str, where: Filter,
                 seen: str | None = None) -> BatchLoader[Any, Any]:
        """How many records per key value (``totalCount`` of nested connections);
        ``seen`` as ``one_by``'s."""
        loader_key = ("count", kind, key_field, where, seen)
        if loader_key not in self._loaders:
            reads, viewer = self._reads, self._viewer

            async def load(keys: Sequence[Any]) -> list[int]:
                found = await reads.count_grouped(
                    viewer, kind, key_field, list(keys), where, seen
                )
                return [found.get(k, 0) for k in keys]

            self._loaders[loader_key] = BatchLoader(load)
        return self._loaders[loader_key]

    def pricing_tariff(self) -> BatchLoader[PricedAt, tuple[Any, bool]]:
        """The tariff that prices a session (by ``PricedAt``), and whether the viewer
        sees it (``ReadService.pricing_tariffs``)."""
        key = ("pricing_tariff",)
        if key not in self._loaders:
            reads, viewer = self._reads, self._viewer

            async def load(wanted: Sequence[PricedAt]) -> list[tuple[Any, bool]]:
                return await reads.pricing_tariffs(viewer, wanted)

            self._loaders[key] = BatchLoader(load)
        return self._loaders[key]

    def idle_time(self) -> BatchLoader[IdleSpan, timedelta]:
        """How long a session's connector sat idle over a span (``ReadService.idle_times``),
        for the running cost of sessions whose tariff bills idle time."""
        key = ("idle_time",)
        if key not in self._loaders:
            reads = self._reads

            async def load(spans: Sequence[IdleSpan]) -> list[timedelta]:
                return await reads.idle_times(spans)

            self._loaders[key] = BatchLoader(load)
        return self._loaders[key]

    def register_readings(self) -> BatchLoader[str, list[MeterSample]]:
        """A session's energy register samples, oldest first
        (``ReadService.register_readings``), for the running cost of sessions whose tariff
        has time-of-day prices."""
        key = ("register_readings",)
        if key not in self._loaders:
            reads = self._reads

            async def load(session_ids: Sequence[str]) -> list[list[MeterSample]]:
                found = await reads.register_readings(session_ids)
                return [found.get(session_id, []) for session_id in session_ids]

            self._loaders[key] = BatchLoader(load)
        return self._loaders[key]
