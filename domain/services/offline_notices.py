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
the announcement either closes the notice first (and decides as if nobody had looked)
or finds it announced (its ``station.online`` is delivered). A look that finds the
charger back already leaves the outage to the connection that ended it (RETURNED): only
that connection knows when it came, so only it knows whether the outage lasted the
grace. Either way an outage longer than the grace delivers one offline, then one online.

The online goes to whoever got the offline: the notice keeps the station's ownership at
the announcement, and the online carries it (``company_id``/``owner_id``, which webhook
visibility is decided on), so a station handed to another company meanwhile closes its
former company's incident and tells the new one nothing of an outage it never heard of.
The ownership an offline is announced with is the station's as read, judged by the
caller (``judge``: the webhook dispatcher's order of handovers, in which a handover
heard after that read wins over it, QA s26), and recorded as judged.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from datetime import timedelta

from domain.entities import NoticeState, OfflineNotice, Station
from domain.errors import Conflict, NotFound
from domain.events import StationConnectionChanged
from domain.policy import SYSTEM
from domain.ports import Delete, Insert, Store
from domain.query import Eq, In, Range, Sort, all_of
from domain.services.base import Service, owned_by, patch, stamp_new

#: Notices one look for due ones takes on (the rest wait for the next look).
MAX_DUE = 500
#: A station's open notices a connection reads: more would be outages long over, whose
#: connections were never settled (their instance died), and are closed by later ones.
MAX_OPEN = 50
#: Compare-and-set rounds against another instance moving the same notice.
ROUNDS = 3

_OPEN = (NoticeState.PENDING.value, NoticeState.ANNOUNCED.value, NoticeState.RETURNED.value)
#: Whose webhooks see an event: the ``company_id`` and ``owner_id`` it carries.
Ownership = tuple[str | None, str | None]
#: Who an offline read from its station is told to (``judge`` below): as read, by default.
Judge = Callable[[StationConnectionChanged], StationConnectionChanged]


def _as_read(event: StationConnectionChanged) -> StationConnectionChanged:
    return event


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

    async def announce(self, notice: OfflineNotice, judge: Judge = _as_read
                       ) -> StationConnectionChanged | None:
        """The ``station.offline`` of a due notice, for this instance to deliver: only
        while its station is still offline with the connection that closed (read now,
        from the store: the charger may have come back to any instance), and only if no
        other instance announced or closed it meanwhile. It records the station's
        ownership, which the online is delivered with. A charger that came back leaves
        the notice to the connection that ended it (RETURNED); a removed station's is
        closed."""
        [station] = await self.store.get_many(Station, [notice.station_id])
        if station is None:
            await self._move(notice, NoticeState.CLOSED)
            return None
        if station.online or station.connection != notice.connection:
            # Closing it here lost an outage longer than the grace whenever the charger
            # came back between the look and this read: the connection's settling, on its
            # way, then found nothing and told neither the offline nor the online.
            await self._move(notice, NoticeState.RETURNED,
                             returned_connection=station.connection)
            return None
        offline = judge(_offline(station, notice))  # a handover heard since the read
        if not await self._move(notice, NoticeState.ANNOUNCED, announced_at=self.now(),
                                company_id=offline.company_id, owner_id=offline.owner_id):
            return None
        return offline

    async def open(self, limit: int = MAX_DUE) -> list[OfflineNotice]:
        """Every notice not closed yet, oldest first (``release``'s work)."""
        return await self.store.find_all(OfflineNotice, In("state", _OPEN),
                                         (Sort("offline_at"),), limit=limit)

    async def release(self, notice: OfflineNotice, judge: Judge = _as_read
                      ) -> StationConnectionChanged | None:
        """Closes ``notice`` for an instance started with no grace (it was switched back to
        0): nothing waits any more, every connection and disconnect is delivered at once.
        Its ``station.offline``, dated at the disconnect, if it was still waiting for the
        grace with its charger still gone, so that the online the reconnection delivers
        follows an offline; nothing for one announced (its receivers have the offline),
        one whose charger is back (it ended within the grace, or its connection decided)
        or one of a removed station."""
        [station] = await self.store.get_many(Station, [notice.station_id])
        closed = await self._close(notice)
        if closed is None or closed.state is not NoticeState.PENDING or station is None \
                or station.online or station.connection != closed.connection:
            return None
        return judge(_offline(station, closed))

    async def settle(self, event: StationConnectionChanged, grace: timedelta,
                     judge: Judge = _as_read) -> list[StationConnectionChanged]:
        """What a connection (``event``) delivers, in order, closing the outages it ends:
        its ``station.online`` if an outage it ends was announced, with the ownership the
        offline was announced with (one online per ownership, should outages it ends
        have been announced under several); nothing after a flap within the grace; and
        for an outage that lasted the grace without being announced (no instance was
        running to do it in time, or a look found the charger already back) its
        ``station.offline`` first, then the ``station.online``, as if it had been."""
        if not event.online or event.station_id is None:
            return []
        found = await self.store.find_all(OfflineNotice, all_of(
            Eq("station_id", event.station_id), In("state", _OPEN)), limit=MAX_OPEN)
        ended = sorted((n for n in found if _ended_by(n, event)), key=_age)
        offline: list[StationConnectionChanged] = []
        heard: list[Ownership] = []
        for notice in ended:
            closed = await self._close(notice)
            if closed is None:
                continue
            if closed.state is NoticeState.ANNOUNCED:
                heard.append(_announced_to(closed, event))
            elif notice is ended[-1] and _decided_by(closed, event) \
                    and event.at - closed.offline_at >= grace:
                [station] = await self.store.get_many(Station, [closed.station_id])
                if station is not None:
                    told = judge(_offline(station, closed))
                    offline.append(told)
                    heard.append((told.company_id, told.owner_id))
        online = [dataclasses.replace(event, company_id=company_id, owner_id=owner_id)
                  for company_id, owner_id in dict.fromkeys(heard)]
        return [*offline, *online]

    async def _close(self, notice: OfflineNotice) -> OfflineNotice | None:
        """Closes ``notice`` from whatever open state it is in; the notice as it was when
        closed (its state, and the ownership it was announced with), or ``None`` when
        another instance closed it first."""
        current: OfflineNotice | None = notice
        for _ in range(ROUNDS):
            if current is None or current.state is NoticeState.CLOSED:
                return None
            if await self._move(current, NoticeState.CLOSED):
                return current
            # Announced (or found returned) meanwhile by the instance whose look found it
            # due: read again.
            [current] = await self.store.get_many(OfflineNotice, [notice.id])
        return None

    async def _move(self, notice: OfflineNotice, to: NoticeState, **also: object) -> bool:
        """Moves ``notice`` from the state it was read in to ``to`` (writing ``also`` with
        it), only if it is still in it (compare-and-set); whether this call did. A closed
        notice is deleted: no move leaves CLOSED, so nobody needs it any more."""
        moved = patch(notice, SYSTEM, only_if=("state", notice.state.value), required=True,
                      state=to, **also)
        try:
            await self.store.write([moved], [])
        except (Conflict, NotFound):
            return False
        if to is NoticeState.CLOSED:
            with contextlib.suppress(NotFound):
                await self.store.write([Delete(moved.record)], [])
        return True


async def forget_outages(store: Store, station_id: str) -> None:
    """Deletes a removed station's notices, whatever their state: nothing will end them
    (its cpId may be given to a new station, whose outages are its own). One at a time,
    each as it is now: a connection or a look may close one meanwhile."""
    for notice in await store.find_all(OfflineNotice, Eq("station_id", station_id),
                                       limit=MAX_DUE):
        with contextlib.suppress(NotFound):
            await store.write([Delete(notice)], [])


def _offline(station: Station, notice: OfflineNotice) -> StationConnectionChanged:
    """The ``station.offline`` of ``notice``: dated when the charger went offline, seen
    by whoever sees the station now (as every delivery reads its webhook's owner now)."""
    return StationConnectionChanged(**owned_by(station), online=False, at=notice.offline_at,
                                    connection=notice.connection)


def _announced_to(notice: OfflineNotice, event: StationConnectionChanged) -> Ownership:
    """Whose webhooks got the offline of the announced ``notice``: the ownership it was
    announced with, or for one announced before that was kept (SQLite migration 43)
    the station's at the connection, as then."""
    if notice.announced_at is None:
        return event.company_id, event.owner_id
    return notice.company_id, notice.owner_id


def _decided_by(notice: OfflineNotice, event: StationConnectionChanged) -> bool:
    """Whether the connection ``event`` decides whether the unannounced ``notice`` is
    told: a PENDING one, and a RETURNED one if the connection is not later than the one
    the look found (the one that ended it, or one before it: it was on its way). A later
    one finds the outage long over, its own connection settled before it was stored or
    lost with its instance: telling it now would page for a flap."""
    if notice.state is NoticeState.PENDING:
        return True
    if notice.returned_connection is None or event.connection is None:
        return True
    return event.connection <= notice.returned_connection


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
