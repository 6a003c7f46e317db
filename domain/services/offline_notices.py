"""Which ``station.offline`` and ``station.online`` webhooks a charger's outages deliver.

A charger on a bad cellular modem drops its connection and comes back every few seconds;
each flap used to page operators twice. An outage is announced (``station.offline``,
dated when the charger went offline) only once the charger has stayed offline for the
grace, and the connection ending it is announced (``station.online``) only if its
outage was. A flap within the grace delivers nothing. Live subscriptions are not
concerned: they hear every change at once.

Each outage is an ``OfflineNotice`` in the store, not a timer in one process: the
charger may come back to another instance, and the instance that saw it go may restart
within the grace. Whoever moves a notice's ``state`` does it by compare-and-set, so of
the instances looking at one outage exactly one announces it, and a connection racing
the announcement either closes the notice first (nothing is delivered) or finds it
announced (its ``station.online`` is delivered).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from domain.entities import NoticeState, OfflineNotice, Station
from domain.errors import Conflict, NotFound
from domain.events import StationConnectionChanged
from domain.policy import SYSTEM
from domain.ports import Delete, Insert
from domain.query import Eq, In, Range, Sort, all_of
from domain.services.base import Service, owned_by, patch, stamp_new

#: Notices one look for due ones takes on (the rest wait for the next look).
MAX_DUE = 500
#: A station's open notices a connection reads: more would be outages long over, whose
#: connections were never settled (their instance died), and are closed by later ones.
MAX_OPEN = 50
#: Compare-and-set rounds against another instance moving the same notice.
ROUNDS = 3

_OPEN = (NoticeState.PENDING.value, NoticeState.ANNOUNCED.value)


class OfflineNotices(Service):
    async def hold(self, event: StationConnectionChanged) -> OfflineNotice | None:
        """Records the outage a disconnect (``event``) began, PENDING: its webhook waits
        out the grace. ``None`` for a connection."""
        if event.online or event.station_id is None:
            return None
        notice = stamp_new(OfflineNotice(station_id=event.station_id, cp_id=event.cp_id,
                                         connection=event.connection, offline_at=event.at),
                           SYSTEM, self.now())
        await self.store.write([Insert(notice)], [])
        return notice

    async def due(self, grace: timedelta, limit: int = MAX_DUE) -> list[OfflineNotice]:
        """The PENDING notices whose charger went offline at least ``grace`` ago, oldest
        first: whichever instance looks first announces them."""
        return await self.store.find_all(OfflineNotice, all_of(
            Eq("state", NoticeState.PENDING.value),
            Range("offline_at", lte=self.now() - grace)), (Sort("offline_at"),), limit=limit)

    async def announce(self, notice: OfflineNotice) -> StationConnectionChanged | None:
        """The ``station.offline`` of a due notice, for this instance to deliver: only
        while its station is still offline with the connection that closed (read now,
        from the store: the charger may have come back to any instance), and only if no
        other instance announced or closed it meanwhile. A charger that came back closes
        the notice instead (its connection did, unless it came while nobody could)."""
        [station] = await self.store.get_many(Station, [notice.station_id])
        if station is None or station.online or station.connection != notice.connection:
            await self._move(notice, NoticeState.CLOSED)
            return None
        if not await self._move(notice, NoticeState.ANNOUNCED):
            return None
        return _offline(station, notice)

    async def settle(self, event: StationConnectionChanged, grace: timedelta
                     ) -> list[StationConnectionChanged]:
        """What a connection (``event``) delivers, in order, closing the outages it ends:
        its ``station.online`` if an outage it ends was announced; nothing after a flap
        within the grace; and for an outage that lasted the grace without being announced
        (no instance was running to do it in time) its ``station.offline`` first, then
        the ``station.online``, as if it had been."""
        if not event.online or event.station_id is None:
            return []
        found = await self.store.find_all(OfflineNotice, all_of(
            Eq("station_id", event.station_id), In("state", _OPEN)), limit=MAX_OPEN)
        ended = sorted((n for n in found if _ended_by(n, event)), key=_age)
        delivered: list[StationConnectionChanged] = []
        announced = False
        for notice in ended:
            was = await self._close(notice)
            if was is NoticeState.ANNOUNCED:
                announced = True
            elif was is NoticeState.PENDING and notice is ended[-1] \
                    and event.at - notice.offline_at >= grace:
                [station] = await self.store.get_many(Station, [notice.station_id])
                if station is not None:
                    delivered.append(_offline(station, notice))
                    announced = True
        return [*delivered, event] if announced else []

    async def _close(self, notice: OfflineNotice) -> NoticeState | None:
        """Closes ``notice`` from whatever open state it is in; the state it closed it
        from, or ``None`` when another instance closed it first."""
        current: OfflineNotice | None = notice
        for _ in range(ROUNDS):
            if current is None or current.state is NoticeState.CLOSED:
                return None
            if await self._move(current, NoticeState.CLOSED):
                return current.state
            # Announced meanwhile (by the instance whose look found it due): read again.
            [current] = await self.store.get_many(OfflineNotice, [notice.id])
        return None

    async def _move(self, notice: OfflineNotice, to: NoticeState) -> bool:
        """Moves ``notice`` from the state it was read in to ``to``, only if it is still
        in it (compare-and-set); whether this call did. A closed notice is deleted: no
        move leaves CLOSED, so nobody needs it any more."""
        moved = patch(notice, SYSTEM, only_if=("state", notice.state.value), required=True,
                      state=to)
        try:
            await self.store.write([moved], [])
        except (Conflict, NotFound):
            return False
        if to is NoticeState.CLOSED:
            with contextlib.suppress(NotFound):
                await self.store.write([Delete(moved.record)], [])
        return True


def _offline(station: Station, notice: OfflineNotice) -> StationConnectionChanged:
    """The ``station.offline`` of ``notice``: dated when the charger went offline, seen
    by whoever sees the station now (as every delivery reads its webhook's owner now)."""
    return StationConnectionChanged(**owned_by(station), online=False, at=notice.offline_at,
                                    connection=notice.connection)


def _ended_by(notice: OfflineNotice, event: StationConnectionChanged) -> bool:
    """Whether the connection ``event`` ends the outage of ``notice``: a newer connection
    than the one that closed (the store draws them increasing), or the same one recorded
    again after the outage (a live connection a sweep had recorded offline). A notice
    of a later outage (this connection's own, closed since) is not ended by it."""
    if notice.connection is None or event.connection is None:
        return notice.offline_at <= event.at
    if notice.connection != event.connection:
        return notice.connection < event.connection
    return notice.offline_at <= event.at


def _age(notice: OfflineNotice) -> tuple[int, float]:
    """Oldest outage first: by connection (a number none had is older), then time."""
    return (-1 if notice.connection is None else notice.connection,
            notice.offline_at.timestamp())
