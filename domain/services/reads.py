"""Every read of the API goes through here, with the viewer's scope from the policy
ANDed into the store query: the single enforcement point for visibility."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from domain.entities import ENTITY_BY_KIND, AuditEntry, E, MeterSample, Record, Tariff
from domain.policy import Seen, Viewer
from domain.query import (
    ALL,
    POSITIONED,
    Eq,
    Filter,
    Page,
    PageRequest,
    Sort,
    all_of,
    nested_list,
    sorts_by_distance,
)
from domain.services.base import Service
from domain.services.intervals import IdleSpan, idle_times
from domain.services.metering import register_readings
from domain.services.tariffs import PricedAt, tariffs_in_force

#: Reads records of a kind by id as the viewer may see them, ``None`` for one not seen
#: (``ReadService.visible_ids``: the graph's request loaders).
Load = Callable[[type[Record], Sequence[str]], Awaitable[Sequence[Record | None]]]


class ReadService(Service):
    @property
    def overlapping(self) -> bool:
        """Whether independent reads are worth starting together (``Store.overlapping_reads``)."""
        return self.store.overlapping_reads

    def scoped(self, viewer: Viewer, kind: type[E], where: Filter = ALL,
               sort: Sequence[Sort] = (), grouped_by: str | None = None,
               keys: Sequence[Any] | None = None, seen: str | None = None) -> Filter:
        """The viewer's scope AND ``where``, with conditions on private fields guarded:
        also the sort (an order reveals what it sorts by) and the key a batched nested
        list is grouped by (``company.stations`` is ``station.company_id`` IN …). With
        the ``keys`` of a nested list, the scope of its records under those parents
        (``Policy.scope_under``: a session's samples follow the session; ``seen``: the
        keys are ids of that kind read through this viewer's scope). A distance
        order lists only records with a position (one without has no distance to be
        placed by), and its count counts the same."""
        scope = self.policy.scope(viewer, kind.kind) if grouped_by is None or keys is None \
            else self.policy.scope_under(viewer, kind.kind, grouped_by, keys, seen)
        return all_of(scope,
                      self.policy.guard_private(viewer, kind.kind, where, sort, grouped_by),
                      POSITIONED if sorts_by_distance(sort) else None)

    def _under(self, viewer: Viewer, kind: type[E], where: Filter, sort: Sequence[Sort],
               under: tuple[str, Any] | None, seen: str | None = None) -> Filter:
        """``scoped`` for a top-level list, or for one parent's nested list (``under``:
        its key field and value; ``seen`` as ``scoped``'s) paged with cursors."""
        if under is None:
            return self.scoped(viewer, kind, where, sort)
        key_field, key = under
        return self.scoped(viewer, kind, all_of(Eq(key_field, key), where), sort,
                           key_field, (key,), seen)

    async def get(self, viewer: Viewer, kind: type[E], record_id: str) -> E | None:
        return (await self.get_many(viewer, kind, [record_id]))[0]

    async def get_many(self, viewer: Viewer, kind: type[E], ids: Sequence[str]
                       ) -> list[E | None]:
        return await self.store.get_many(kind, ids, self.scoped(viewer, kind))

    async def visible_ids(self, viewer: Viewer, kind: type[Record],
                          ids: Iterable[str | None], load: Load | None = None) -> set[str]:
        """Which of ``ids`` the viewer sees: one scoped read (``get_many``, or ``load``:
        the graph's request loaders, which make it one per kind for a page), as a
        relation reads them (a hidden record reads null there, so its id is left out)."""
        wanted = sorted({i for i in ids if i is not None})
        if not wanted:
            return set()
        found = await (load(kind, wanted) if load is not None
                       else self.get_many(viewer, kind, wanted))
        return {record.id for record in found if record is not None}

    async def audit_seen(self, viewer: Viewer, entries: Sequence[AuditEntry],
                         load: Load | None = None) -> Seen:
        """What the viewer sees of the holders the entries' images name
        (``Policy.audit_references``, ``visible_ids``): one read per kind for the whole
        page, for ``Policy.audit_snapshot``."""
        return {kind: await self.visible_ids(viewer, ENTITY_BY_KIND[kind], ids, load)
                for kind, ids in self.policy.audit_references(viewer, entries).items()}

    async def find_one(self, viewer: Viewer, kind: type[E], where: Filter) -> E | None:
        return await self.store.find_one(kind, self.scoped(viewer, kind, where))

    async def page(self, viewer: Viewer, kind: type[E], where: Filter, sort: Sequence[Sort],
                   page: PageRequest, under: tuple[str, Any] | None = None,
                   within: str | None = None, seen: str | None = None) -> Page[E]:
        """A page of a list; ``under`` (key field, value): of one parent's nested list,
        whose cursors belong to it alone (``within``: the list's name, when more keys
        than ``under``'s make it the parent's, ``query.nested_list``; ``seen`` as
        ``scoped``'s)."""
        if under is not None:
            page = replace(page, within=within or nested_list(*under))
        return await self.store.find_page(
            kind, self._under(viewer, kind, where, sort, under, seen), sort, page)

    async def count(self, viewer: Viewer, kind: type[E], where: Filter,
                    sort: Sequence[Sort] = (), under: tuple[str, Any] | None = None,
                    seen: str | None = None) -> int:
        """How many records ``page`` would go through with the same ``where``, ``sort``,
        ``under`` and ``seen`` (a sort on a private field narrows both alike)."""
        return await self.store.count(kind, self._under(viewer, kind, where, sort, under,
                                                        seen))

    async def grouped(self, viewer: Viewer, kind: type[E], key_field: str, keys: Sequence[Any],
                      where: Filter, sort: Sequence[Sort], limit: int,
                      seen: str | None = None) -> dict[Any, list[E]]:
        return await self.store.find_grouped(
            kind, key_field, keys,
            self.scoped(viewer, kind, where, sort, key_field, keys, seen), sort, limit)

    async def count_grouped(self, viewer: Viewer, kind: type[E], key_field: str,
                            keys: Sequence[Any], where: Filter, seen: str | None = None
                            ) -> dict[Any, int]:
        return await self.store.count_grouped(
            kind, key_field, keys,
            self.scoped(viewer, kind, where, grouped_by=key_field, keys=keys, seen=seen))

    async def pricing_tariffs(self, viewer: Viewer, wanted: Sequence[PricedAt]
                              ) -> list[tuple[Tariff | None, bool]]:
        """For sessions the viewer sees (``PricedAt.of`` each): the tariff that prices each
        (``TariffService.tariff_at``'s rule, found whatever the viewer sees of tariffs, so
        a tariff hidden from them never lets another one stand in for it), and whether
        the viewer sees that tariff itself: in the tariff scope, or the price of a session
        in their books. A station's own price list is its current operators' (the tariff
        scope), so after a handover the operator billing a session started before it
        read its tariff null (QA s27), though their driver and admins saw it. Two or
        three store calls for any number of sessions."""
        priced = await tariffs_in_force(self.store, wanted)
        ids = list({t.id for t in priced if t is not None})
        shown = {t.id for t in await self.get_many(viewer, Tariff, ids) if t is not None} \
            if ids else set()
        return [(t, t is not None and (t.id in shown or self.policy.keeps_books(viewer, at)))
                for t, at in zip(priced, wanted, strict=True)]

    async def idle_times(self, spans: Sequence[IdleSpan]) -> list[timedelta]:
        """How long each session's connector sat idle over its span (``IdleSpan.of``: of
        sessions the viewer sees, up to the estimate's "now"), what its idle fee prices:
        read whatever the viewer sees of the station's state history, as the tariff
        pricing it is, since only the amount is shown. One store call."""
        return await idle_times(self.store, spans)

    async def register_readings(self, session_ids: Sequence[str]
                                ) -> dict[str, list[MeterSample]]:
        """The energy register samples of sessions the viewer sees, by session
        (``metering.register_readings``), for the running cost of those whose tariff has
        time-of-day prices: only the amount is shown. One store call."""
        return await register_readings(self.store, session_ids)
