"""Live events for subscribers, filtered by the same visibility rules as every read.

Two ways to listen:

* ``events(viewer, topics)``: one bus subscription per caller, an async iterator.
* ``watch(viewer, topics, deliver, closed)``: push delivery for fan-out. Each set of
  topics watched has ONE bus subscription per process, however many watchers it has;
  its pump decides ``Policy.sees_event`` once per distinct viewer per event and calls
  the watchers' ``deliver`` (plain calls, in order; after every ``HAND_OUT_SLICE`` of
  them it lets the loop run what else is ready). A thousand map subscribers then cost
  the bus one queue, and the caller can share the work of shaping one event between
  watchers. One subscription for all of a watcher's topics, not one per topic: two
  pumps of one watcher overtook each other (one pausing after a slice while the other
  ran), and a connection event reached a map before the station's earlier joining it,
  which then undid it (review s25).

Either way, ``StationSightChanged`` is told as ``SightOrder`` has it: every event of a
station is judged by the newer of its own read of the station's ownership and the
newest the stream heard, by version (``DomainEvent.version``, ``Station.sight``), so an
edit's sight event arriving after a later edit's is judged by the later ownership, and
an event that read the station before a handover (a disconnect) by the handover; a
sight event's connection read loses to a connection event of that connection or a
newer one that arrived first. A stream of those topics also reads ``StationRemoved``
(never told to anyone), to forget what it kept of a removed station.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

from domain.errors import DomainError
from domain.events import (
    ALL_TOPICS,
    CommandCompleted,
    ConnectorStatusChanged,
    DomainEvent,
    EventsDropped,
    FaultReported,
    MaintenanceStatusChanged,
    PaymentChanged,
    ReservationChanged,
    SessionChanged,
    StationConnectionChanged,
    StationRemoved,
    StationSightChanged,
)
from domain.policy import Viewer
from domain.services.base import Service, ServiceContext

log = logging.getLogger("chargegraph.live")

Deliver = Callable[[DomainEvent | EventsDropped], None]
#: Deliveries of one event made before the pump lets the loop run whatever else is ready
#: (a charger's frame, a query's next step): an event watched by the 10,000 operations a
#: process allows would otherwise hold the loop for the whole hand-out.
HAND_OUT_SLICE = 256
#: A subscription's first item when it starts while the other instances' events cannot
#: reach this one (``EventBus.receiving``): it hears only this instance's until they can.
UNHEARD = EventsDropped(0, unavailable=True)


class Watch:
    """One watcher of ``watch()``. ``close()`` unregisters it (idempotent)."""

    __slots__ = ("_pumps", "closed", "deliver", "ended", "viewer")

    def __init__(self, viewer: Viewer, deliver: Deliver, ended: Callable[[], None]) -> None:
        self.viewer = viewer
        self.deliver = deliver
        self.ended = ended
        self.closed = False
        self._pumps: list[_Pump] = []

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for pump in self._pumps:
            pump.remove(self)
        self._pumps.clear()


#: Removed stations a ``SightOrder`` remembers, to tell nobody what arrives of them late:
#: far more than are removed within the seconds an event may be late.
REMOVED_REMEMBERED = 4096


#: An ownership heard: the version of the station's read it came from (``Station.sight``),
#: its company, its owner, and whether it is on the map.
Owned = tuple[int, str | None, str | None, bool]


class SightOrder:
    """What one ordered stream of events (a pump's, a caller's of ``events``, the
    webhook dispatcher's) tells of stations whose sight changed, kept per station:

    * the newest ownership heard (``sights``): the highest version (``DomainEvent.version``,
      the ``Station.sight`` its read found, moved on by every edit of who sees the
      station, in its write) any event of the station carried, with the ownership read
      with it. Every event of the station is judged by the newer of that and its own
      read, its own on a tie: one that read the station before a handover and was
      published after it (a disconnect, a plug's status, a command's answer) is told as
      the handover has it, not to the company that left the station (QA s26); a sight
      event of an earlier edit arriving after a later one (A->B and B->C, carried by
      Redis in the other order) is judged by the later ownership, its ``was_*`` kept:
      those who saw the station before it and do not now are told it left, those who
      see it now and did not joined; the middle company is neither told it joined last
      nor told its connection (review s25). And an event whose own read is newer than
      anything heard goes by its read: a handover this stream never heard (its
      publish lost on the instance that made it, or dropped from a slow reader's queue)
      cannot outrank a fresh read, and a stale one (a cache's, up to ``CACHE_TTL_S``)
      is corrected by a newer handover heard (review s26: trusted over fresh reads with
      no way to tell which was newer, a handover heard before a lost one sent every
      event of the station to the company that had handed it back, for good). Nothing
      is forgotten when events are lost (``EventsDropped``): the versions need no
      marker, and not every loss has one. Versions of 0 (never changed) are not kept;
      so at most one entry per station whose sight ever changed (handed over, or its
      registration on or off the map: an accepted auto-registered charger's is 1),
      which may be every station of the store, a small tuple each, gone at its
      removal. An event from a build before the version was carried (``version``
      ``None``: the ``sight`` that build's handovers carry is a number of the whole
      store, no station's version) goes by its own read and is not kept: that build's
      edits move no version, so nothing orders it against what was heard (review
      r26-handover3: an older instance's handover, its number read as a version,
      outranked every later handover, and sent the station's events to the company it
      was handed to by the older instance until the version passed it);
    * the connection last told (a connection event's, or a sight event's as told): a
      sight event's connection read, when a connection event of the same connection or
      a newer one arrived first, is older than what maps were told, and that one's
      ``online`` is told instead (review s25: a disconnect published on another
      instance while the edit announced the station, "joined, online" arriving last).

    A station removed (``StationRemoved``, which the stream reads for this and never
    tells) is forgotten: kept, every station ever handed over or connected stayed here
    for as long as the pump or the socket lived. Its id is remembered instead, among the
    last ``REMOVED_REMEMBERED``, with its ownership when removed: whatever of it arrives
    after its removal was published before it (a handover's announcement, a connection
    event, from another instance). The map's events of it (``_MAP``) are told to
    nobody: a map told "joined" of a station already removed kept it (review s25); its
    others (a command's answer) by the ownership it was removed with. Ids are never
    given again, so nothing of a new station is lost.

    Every company-scoped stream keeps one, not only the map's (``_read``): a plug's
    status, a fault, a firmware report, a reservation or a command's answer read the
    station before a handover and published after it reached the company that had
    left it (QA s26). Events judged by the books they went to (``_BOOKED``: a session's,
    a payment's), whose ownership fields are not the station's, pass unchanged."""

    __slots__ = ("connections", "removed", "sights")

    def __init__(self) -> None:
        self.sights: dict[str, Owned] = {}
        self.connections: dict[str, tuple[int, bool]] = {}
        #: Insertion-ordered: the oldest goes first.
        self.removed: dict[str, StationRemoved] = {}

    def read(self, item: DomainEvent | EventsDropped) -> DomainEvent | None:
        """The next item of the stream's bus subscription, in its order: an event as
        ``shape`` has it; an ``EventsDropped`` marker changes nothing (``None``)."""
        if isinstance(item, EventsDropped):
            return None
        return self.shape(item)

    def shape(self, event: DomainEvent) -> DomainEvent | None:
        """``event`` as it is to be told (the same object when nothing changes); ``None``:
        told to nobody (``StationRemoved``, and what arrives of a removed station for
        the map)."""
        station = event.station_id
        if station is None or isinstance(event, _BOOKED):
            return event
        if isinstance(event, StationRemoved):
            self.sights.pop(station, None)
            self.connections.pop(station, None)
            self.removed[station] = event
            if len(self.removed) > REMOVED_REMEMBERED:
                del self.removed[next(iter(self.removed))]
            return None
        gone = self.removed.get(station)
        if gone is not None:
            return None if isinstance(event, _MAP) else _as_owned(event, _owned(gone))
        if isinstance(event, StationConnectionChanged):
            self.connections[station] = (_number(event.connection), event.online)
            return self.owned(event)
        if not isinstance(event, StationSightChanged):
            return self.owned(event)
        # An earlier edit, told after a later one: by the later one's ownership.
        judged = self.owned(event)
        assert isinstance(judged, StationSightChanged)
        event = judged
        if not event.joined:
            return event
        told = self.connections.get(station)
        if told is None or told[0] < _number(event.connection):
            self.connections[station] = (_number(event.connection), event.online)
        elif told[1] != event.online:
            event = replace(event, online=told[1])
        return event

    def owned(self, event: DomainEvent) -> DomainEvent:
        """An event of a station by the newer of its own read and the newest ownership
        heard (its own on a tie), which it becomes if newer; one judged by its books
        (``_BOOKED``), and one without a version, as it is."""
        station = event.station_id
        if station is None or event.version is None or isinstance(event, _BOOKED):
            # No version (an instance of the build before it): nothing orders its read
            # against one heard, and that build's edits move no version: by its read,
            # and not kept (review r26-handover3: its handover's store-wide number, read
            # as a version, outranked every handover after it, for good).
            return event
        heard = self.sights.get(station)
        read = event.version
        if heard is not None and heard[0] > read:
            return _as_owned(event, heard)
        if read > 0 and (heard is None or read > heard[0]):
            self.sights[station] = _owned(event)
        return event


def _owned(event: DomainEvent) -> Owned:
    return (-1 if event.version is None else event.version, event.company_id, event.owner_id,
            event.on_map)


def _as_owned(event: DomainEvent, by: Owned) -> DomainEvent:
    """``event`` with the ownership ``by`` (the same object when it has it)."""
    version, company_id, owner_id, on_map = by
    if _owned(event) == by:
        return event
    return replace(event, company_id=company_id, owner_id=owner_id, on_map=on_map,
                   version=None if version < 0 else version)


#: Events whose ``company_id``/``owner_id`` are the books they went to, not their
#: station's ownership (``ChargingService._session_event``, ``PaymentChanged``): a
#: station handed over mid-session leaves its session with the company that bills it.
_BOOKED = (SessionChanged, PaymentChanged)
#: The map's events: of a removed station, told to nobody once it is removed.
_MAP = (StationConnectionChanged, StationSightChanged, ConnectorStatusChanged)
#: Topics whose events are judged by their station's ownership: their streams keep a
#: ``SightOrder`` fed with the handovers (``StationSightChanged``, told only to streams
#: that asked for it) and removals (``StationRemoved``, told to none).
_ORDERED = frozenset({ConnectorStatusChanged.topic, StationConnectionChanged.topic,
                      StationSightChanged.topic, FaultReported.topic,
                      MaintenanceStatusChanged.topic, ReservationChanged.topic,
                      CommandCompleted.topic})


def _read(topics: Sequence[str]) -> list[str]:
    """The bus topics a stream of ``topics`` reads: with the handovers and removals
    that order their events, if any is judged by its station's ownership."""
    read = list(dict.fromkeys(topics))
    if _ORDERED.intersection(read):
        read += [t for t in (StationSightChanged.topic, StationRemoved.topic)
                 if t not in read]
    return read


def _number(connection: int | None) -> int:
    return -1 if connection is None else connection


class _Pump:
    """Reads one set of topics' bus subscription and hands every event to the watchers
    whose viewer may see it. Watchers are kept per viewer in tuples replaced on change, so a
    watcher that unsubscribes while an event is being handed out changes nothing under
    the loop's feet."""

    def __init__(self, live: LiveService, topics: tuple[str, ...], stream: Any) -> None:
        self.live = live
        self.topics = topics
        self.stream = stream
        self.order = SightOrder()
        self.by_viewer: dict[Viewer, tuple[Watch, ...]] = {}
        self.count = 0
        self.started = False
        self.task: asyncio.Task[None] | None = None

    def add(self, watch: Watch) -> None:
        self.by_viewer[watch.viewer] = (*self.by_viewer.get(watch.viewer, ()), watch)
        self.count += 1

    def remove(self, watch: Watch) -> None:
        current = self.by_viewer.get(watch.viewer, ())
        if watch not in current:
            return
        rest = tuple(w for w in current if w is not watch)
        if rest:
            self.by_viewer[watch.viewer] = rest
        else:
            del self.by_viewer[watch.viewer]
        self.count -= 1
        if self.count == 0:
            self.live._stop(self)

    async def run(self) -> None:
        self.started = True
        sees = self.live.policy.sees_event
        try:
            async for event in self.stream:
                everyone = isinstance(event, EventsDropped)
                shaped = self.order.read(event)
                if not everyone:
                    if shaped is None or shaped.topic not in self.topics:
                        continue  # a handover or removal read only to order the rest
                    event = shaped
                handed = 0
                for viewer, watches in tuple(self.by_viewer.items()):
                    if not everyone and not sees(viewer, event):
                        continue
                    for watch in watches:
                        if watch.closed:  # also while we let others run, below
                            continue
                        self._deliver(watch, event)
                        handed += 1
                        if handed % HAND_OUT_SLICE == 0:
                            # Watchers are handed events in order all the same: this
                            # task is the only one handing out these topics'.
                            await asyncio.sleep(0)
        finally:
            # The bus closed (shutdown) or we were stopped: tell whoever is still here.
            self.live._forget(self)
            for watches in tuple(self.by_viewer.values()):
                for watch in watches:
                    if not watch.closed:
                        watch.closed = True
                        self._call(watch.ended)
            self.by_viewer.clear()
            await self.stream.aclose()

    @staticmethod
    def _deliver(watch: Watch, event: DomainEvent | EventsDropped) -> None:
        try:
            watch.deliver(event)
        except Exception:
            # One broken subscriber must not starve the others of events.
            log.exception("live event delivery failed")

    @staticmethod
    def _call(callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("live watcher end callback failed")


class LiveService(Service):
    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        #: By the (sorted) topics they read.
        self._pumps: dict[tuple[str, ...], _Pump] = {}
        self._closing: set[asyncio.Future[Any]] = set()

    def _bus(self) -> Any:
        bus = self.ctx.bus
        if bus is None:
            raise DomainError("live events are not enabled", code="UNAVAILABLE")
        return bus

    def events(self, viewer: Viewer, topics: Sequence[str]
               ) -> AsyncIterator[DomainEvent | EventsDropped]:
        """The events on ``topics`` this viewer may see, from this call on (the
        subscription is registered before the first read); ``EventsDropped`` markers pass
        through so clients learn they missed some, the first an ``unavailable`` one if
        the bus between instances is out now (``UNHEARD``)."""
        bus = self._bus()
        return self._visible(viewer, frozenset(topics), bus.subscribe(_read(topics)),
                             unheard=not bus.receiving)

    async def _visible(self, viewer: Viewer, topics: frozenset[str], stream: Any, *,
                       unheard: bool = False) -> AsyncIterator[DomainEvent | EventsDropped]:
        try:
            if unheard:
                yield UNHEARD
            order = SightOrder()
            async for event in stream:
                shaped = order.read(event)
                if isinstance(event, EventsDropped):
                    yield event
                    continue
                # A handover or removal read only to order the rest is told to nobody.
                if shaped is not None and shaped.topic in topics \
                        and self.policy.sees_event(viewer, shaped):
                    yield shaped
        finally:
            await stream.aclose()

    def watch(self, viewer: Viewer, topics: Sequence[str], deliver: Deliver,
              ended: Callable[[], None]) -> Watch:
        """Calls ``deliver`` with every event on ``topics`` this viewer may see, from this
        call on, and with ``EventsDropped`` when the process-wide pump fell behind (the
        count includes events the viewer would not have seen, as with ``events``).
        ``deliver`` runs inside the pump and must not block; an exception it raises is
        logged. ``ended`` is called once if the bus closes while the watch is open.
        While the bus between instances is out, ``deliver`` is first called with
        ``UNHEARD``, here, before this returns: the pump, subscribed long before, has no
        marker of the outage left to tell a newcomer (QA s32)."""
        if isinstance(topics, str):
            raise TypeError("watch() takes a list of topics, not one string")
        bus = self._bus()
        watch = Watch(viewer, deliver, ended)
        key = tuple(sorted(set(topics)))
        pump = self._pumps.get(key)
        if pump is None:
            # Subscribed here, synchronously: an event published right after watch()
            # returns is already queued for the pump. One subscription for all the
            # topics: the bus queues their events in one order, and one task hands
            # them out (see the module's docstring).
            pump = _Pump(self, key, bus.subscribe(_read(key)))
            self._pumps[key] = pump
            pump.task = asyncio.get_running_loop().create_task(
                pump.run(), name=f"live-pump-{'+'.join(key)}")
        pump.add(watch)
        watch._pumps.append(pump)
        if not bus.receiving:
            _Pump._deliver(watch, UNHEARD)
        return watch

    @property
    def watching(self) -> int:
        """Open watches of client topics (tests wait on it)."""
        return sum(pump.count for pump in self._pumps.values()
                   if any(topic in ALL_TOPICS for topic in pump.topics))

    def _stop(self, pump: _Pump) -> None:
        # Nobody left: give the bus subscription back (a new watcher starts a new pump).
        self._forget(pump)
        if pump.task is not None:
            pump.task.cancel()
            if not pump.started:
                # A task cancelled before its first step never enters ``run``'s finally.
                self._closing.add(asyncio.ensure_future(pump.stream.aclose()))
                self._closing = {t for t in self._closing if not t.done()}

    def _forget(self, pump: _Pump) -> None:
        if self._pumps.get(pump.topics) is pump:
            del self._pumps[pump.topics]
