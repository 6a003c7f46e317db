"""What "available now" means to a driver looking for a charger: the one rule the API's
filters (``connectors``, ``stations``) apply, as query-language filters that run in the
store with the viewer's scope like any other.

A connector is available now when its last report was Available, it holds no ACTIVE
session, **and** its charger can take a car now: the station is connected (``online``)
and the charge point as a whole (OCPP connector 0, ``Station.status``) is not Unavailable
or Faulted. A charger that dropped its connection keeps the status its connectors last
reported (``Connector.status`` stays what the charger said), but nobody can start a
session there. A charger that started a transaction without reporting Preparing or
Charging (QA s20: Available, then StartTransaction and meter values) still reads
Available, but the plug is taken.
"""

from __future__ import annotations

from collections.abc import Sequence

from domain.entities import ConnectorStatus, ConnectorType, SessionState
from domain.query import ALL, Eq, Filter, In, NotSub, Range, Sub, all_of, any_of

#: The charge point's own statuses (connector 0) under which none of its connectors can
#: charge, whatever they report.
POINT_DOWN = frozenset({ConnectorStatus.UNAVAILABLE, ConnectorStatus.FAULTED})
#: What ``Station.status`` may hold while its connectors can charge (``None``: its charger
#: never reported connector 0, as many report their connectors only).
_POINT_UP = (None, *(s for s in ConnectorStatus if s not in POINT_DOWN))


def stations_in_service() -> Filter:
    """Stations whose connectors can charge now: connected, and not down as a whole."""
    return all_of(Eq("online", True), In("status", _POINT_UP))


def stations_out_of_service() -> Filter:
    """The complement of ``stations_in_service``."""
    return any_of(Eq("online", False), In("status", tuple(POINT_DOWN)))


#: A connector's ACTIVE session: the one of its station and connector number (a
#: correlated sub-select; one at most, by the store's unique rule).
_HELD = ("station_id", "session", Eq("state", SessionState.ACTIVE), "station_id",
         (("connector_id", "connector_id"),))


def connectors_held() -> Filter:
    """Connectors holding an ACTIVE session, whatever their last report."""
    return Sub(*_HELD)


def connectors_free() -> Filter:
    """Connectors that last reported Available and hold no ACTIVE session (the exact
    complement of ``connectors_held`` among those reporting Available)."""
    return all_of(Eq("status", ConnectorStatus.AVAILABLE), NotSub(*_HELD))


def connectors_available_now() -> Filter:
    return all_of(connectors_free(), Sub("station_id", "station", stations_in_service()))


def connectors_not_available_now() -> Filter:
    """Reported something else than Available, holding an ACTIVE session, or on a
    station out of service."""
    others = tuple(s for s in ConnectorStatus if s is not ConnectorStatus.AVAILABLE)
    return any_of(In("status", others), connectors_held(),
                  Sub("station_id", "station", stations_out_of_service()))


def connector_fits(types: Sequence[ConnectorType] = (), min_kw: float | None = None
                   ) -> Filter:
    """Connectors of one of ``types`` (any when none) giving at least ``min_kw`` (a
    connector of unknown power does not)."""
    return all_of(In("type", tuple(types)) if types else None,
                  Range("max_kw", gte=min_kw) if min_kw is not None else None)


def stations_with(connectors: Filter, *, available_now: bool | None = None) -> Filter:
    """Stations with one connector matching ``connectors`` and, with ``available_now``,
    available now: the same connector, so "a CCS2 of 150 kW free now" is one plug.

    ``available_now=False`` is the exact complement of ``True`` among the stations with
    a connector matching ``connectors`` (every station, connectors or not, when that is
    ``ALL``): none of those connectors is available now, because the station is out of
    service or none of them reports Available without holding an ACTIVE session."""
    if available_now is None:
        return ALL if connectors == ALL else Sub("id", "connector", connectors,
                                                 select="station_id")
    free = Sub("id", "connector", all_of(connectors, connectors_free()), select="station_id")
    if available_now:
        return all_of(stations_in_service(), free)
    none_free = NotSub(free.field, free.kind, free.where, free.select)
    return all_of(stations_with(connectors),
                  any_of(stations_out_of_service(), none_free))
