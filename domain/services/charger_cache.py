"""What the charger hot path (every charger message) may reuse instead of asking the
store again: stations by cpId, ACTIVE sessions by transaction id, connector ratings."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TypeVar

from domain.entities import Connector, Session, SessionState, Station
from domain.events import (
    DomainEvent,
    EventsDropped,
    SessionChanged,
    StationChanged,
    StationConnectionChanged,
    StationRemoved,
)
from domain.ports import Change

#: How long an entry may be reused. Edits made through this process's services drop the
#: entry at once (``forget``), and so do those other instances announce on the bus
#: (``drop``: a session's end, a station's edit, removal or connection); the charger's own
#: writes update a cached copy but never extend its expiry. So this is only the fallback
#: for a change no event announced. Short TTLs cost a store read per charger per TTL: with
#: 5,000 chargers and 5 s, 2,000 reads a second.
CACHE_TTL_S = 30.0

K = TypeVar("K")
V = TypeVar("V")

#: The topics whose events ``drop`` needs: the changes other instances announce to what
#: is cached here.
CACHED_TOPICS = (SessionChanged.topic, StationChanged.topic, StationRemoved.topic,
                 StationConnectionChanged.topic)


class ChargerCache:
    def __init__(self) -> None:
        self._stations: dict[str, tuple[Station, float]] = {}
        self._sessions: dict[int, tuple[Session, float]] = {}
        # (station id, connector id) → its rating in kW: what a register may believably
        # rise by (``metering.believable_register``).
        self._ratings: dict[tuple[str, int], tuple[float, float]] = {}

    def station(self, cp_id: str) -> Station | None:
        return _live(self._stations.get(cp_id))

    def session(self, transaction_id: int) -> Session | None:
        return _live(self._sessions.get(transaction_id))

    def rating(self, station_id: str, connector_id: int) -> float | None:
        return _live(self._ratings.get((station_id, connector_id)))

    def keep_rating(self, station_id: str, connector_id: int, rated_kw: float) -> None:
        self._ratings[(station_id, connector_id)] = (rated_kw, time.monotonic() + CACHE_TTL_S)

    def remember(self, record: Station | Session) -> None:
        """Cache ``record``, a copy just read from the store (or a new session), for
        ``CACHE_TTL_S``."""
        if isinstance(record, Station):
            self._stations[record.cp_id] = (record, time.monotonic() + CACHE_TTL_S)
        elif record.state is SessionState.ACTIVE:
            self._sessions[record.transaction_id] = (record, time.monotonic() + CACHE_TTL_S)
        else:
            self._sessions.pop(record.transaction_id, None)

    def patched(self, base: Station | Session, record: Station | Session) -> None:
        """The charger's own write turned ``base`` into ``record``: it replaces the cached
        copy, keeping its expiry (a charger that reports every few seconds must not keep
        its copy from ever being read again), only if that copy is ``base`` itself.
        Otherwise the entry is dropped, and the next message reads the record again:
        the cached copy was read or patched since ``base`` was (review s26: a heartbeat's
        write queued while the station was given a new password put its copy, read
        before the change, back over the one read since, and the connection that signed
        in with the new password was shut out at its next message), or ``base`` came
        from elsewhere (a read of its own). An entry dropped meanwhile (an edit was
        announced while the write ran) stays dropped. ``base`` may be stale itself (an
        edit on another instance not announced yet): so is the copy it replaces, until
        the announcement drops it."""
        if isinstance(record, Station):
            _replace(self._stations, record.cp_id, base, record)
        elif record.state is SessionState.ACTIVE:
            _replace(self._sessions, record.transaction_id, base, record)
        else:
            self._sessions.pop(record.transaction_id, None)

    def drop_station(self, cp_id: str) -> None:
        self._stations.pop(cp_id, None)

    def drop_session(self, transaction_id: int) -> None:
        self._sessions.pop(transaction_id, None)

    def forget(self, changes: Sequence[Change]) -> None:
        """Drop cached stations and sessions a commit changed (the next message reads
        them again); the charging service's own writes ``remember`` right after."""
        for change in changes:
            record = change.record
            if isinstance(record, Station):
                self._stations.pop(record.cp_id, None)
            elif isinstance(record, Session):
                self._sessions.pop(record.transaction_id, None)
            elif isinstance(record, Connector):
                self._ratings.pop((record.station_id, record.connector_id), None)

    def drop(self, event: DomainEvent | EventsDropped) -> None:
        """Drop what another instance announced it changed. Events lost (a subscriber
        that fell behind, the bus between instances interrupted) may have been such
        changes: everything is dropped."""
        if isinstance(event, EventsDropped):
            self._stations.clear()
            self._sessions.clear()
            self._ratings.clear()
        elif isinstance(event, SessionChanged):
            if event.change == "ENDED":
                self._sessions.pop(event.transaction_id, None)
        elif isinstance(event, (StationChanged, StationRemoved, StationConnectionChanged)):
            self._stations.pop(event.cp_id, None)
            if isinstance(event, (StationChanged, StationRemoved)):
                for key in [k for k in self._ratings if k[0] == event.station_id]:
                    del self._ratings[key]


def _live(entry: tuple[V, float] | None) -> V | None:
    return entry[0] if entry is not None and entry[1] > time.monotonic() else None


def _replace(entries: dict[K, tuple[V, float]], key: K, base: object, value: V) -> None:
    held = entries.get(key)
    if held is None:
        return
    if held[0] is base:
        entries[key] = (value, held[1])
    else:
        del entries[key]
