"""What "available now" means to a driver looking for a charger: the one rule the API's
filters (``connectors``, ``stations``) apply, as query-language filters that run in the
store with the viewer's scope like any other.

A connector is available now when its last report was Available, it holds no ACTIVE
session, no live reservation holds it, **and** its charger can take a car now: the
station is connected (``online``) and the charge point as a whole (OCPP connector 0,
``Station.status``) is not Unavailable or Faulted. A charger that dropped its connection
keeps the status its connectors last reported (``Connector.status`` stays what the
charger said), but nobody can start a session there. A charger that started a
transaction without reporting Preparing or Charging (QA s20: Available, then
StartTransaction and meter values) still reads Available, but the plug is taken.

A live reservation (PENDING or ACTIVE, not past its expiry: ``policy.live_reservations``)
holds its connector from when it is stored, whether or not the charger has reported the
plug Reserved yet (many report it late or never; a PENDING one may have reached the
charger unanswered): our record decides while the charger still says Available, as the
remote start does (``CommandService._refuse_reserved``, QA s23). A reservation of
connector 0 holds one connector of the station that the charger picks when the car
comes; which one nobody can tell before, and a remote start for another card is refused
on every connector of that station, so it takes all of them out of "available now" (a
station of two free plugs and one station-wide reservation is not listed, though a
driver who walks up could take one). The rule is the same for every viewer, the
reservation's holder too: a reserved plug is not free (the charger's own Reserved says
so once it reports it), and its holder finds it by their reservation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from domain.entities import ConnectorStatus, ConnectorType, SessionState
from domain.policy import live_reservations
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
#: correlated sub-select; one at most, by the store's unique rule). Joined on the station
#: explicitly too, as ``_reserved`` is and for the same reason: on the connector number
#: alone SQLite scanned every ACTIVE session of the network per connector (its partial
#: index leads with cpId); so it reads the station's from ``(station_id, state)``.
_HELD = ("station_id", "session", Eq("state", SessionState.ACTIVE), "station_id",
         (("station_id", "station_id"), ("connector_id", "connector_id")))


def connectors_held() -> Filter:
    """Connectors holding an ACTIVE session, whatever their last report."""
    return Sub(*_HELD)


def _reserved(now: datetime) -> tuple[Sub, Sub]:
    """The live reservations that hold a connector at ``now``: one of that very plug (its
    station's and connector number's), or one of its station's connector 0. Both join on
    the station explicitly (``station_id`` pairs that say nothing the ``IN`` does not):
    SQLite does not turn ``x IN (SELECT y …)`` into ``y = x`` inside the sub-select, so
    without them it scanned every reservation ever made, per connector (correlated on
    the connector number alone) or once per statement (uncorrelated: no index leads with
    ``connector_id`` or ``expires_at``). With them each outer row reads its station's
    live reservations from ``(station_id, expires_at)``; MongoDB's lookup joins on
    ``station_id`` anyway."""
    live = live_reservations(now)
    on_station = ("station_id", "station_id")
    return (Sub("station_id", "reservation", live, "station_id",
                (on_station, ("connector_id", "connector_id"))),
            Sub("station_id", "reservation", all_of(live, Eq("connector_id", 0)),
                "station_id", (on_station,)))


def connectors_reserved(now: datetime) -> Filter:
    """Connectors a live reservation holds at ``now`` (their own or their station's
    connector 0), whatever their last report."""
    return any_of(*_reserved(now))


def connectors_free(now: datetime) -> Filter:
    """Connectors that last reported Available, hold no ACTIVE session and no live
    reservation holds at ``now`` (the exact complement of ``connectors_held`` and
    ``connectors_reserved`` among those reporting Available)."""
    return all_of(Eq("status", ConnectorStatus.AVAILABLE), NotSub(*_HELD),
                  *(NotSub(r.field, r.kind, r.where, r.select, r.joined)
                    for r in _reserved(now)))


def connectors_available_now(now: datetime) -> Filter:
    return all_of(connectors_free(now), Sub("station_id", "station", stations_in_service()))


def connectors_not_available_now(now: datetime) -> Filter:
    """Reported something else than Available, holding an ACTIVE session, held by a
    live reservation at ``now``, or on a station out of service."""
    others = tuple(s for s in ConnectorStatus if s is not ConnectorStatus.AVAILABLE)
    return any_of(In("status", others), connectors_held(), connectors_reserved(now),
                  Sub("station_id", "station", stations_out_of_service()))


def connector_fits(types: Sequence[ConnectorType] | None = None,
                   min_kw: float | None = None) -> Filter:
    """Connectors of one of ``types`` (any when ``None``; none when empty, as every list
    a filter is given means "any of these") giving at least ``min_kw`` (a connector of
    unknown power does not)."""
    return all_of(In("type", tuple(types)) if types is not None else None,
                  Range("max_kw", gte=min_kw) if min_kw is not None else None)


def stations_with(connectors: Filter, *, available_now: bool | None = None,
                  now: datetime | None = None) -> Filter:
    """Stations with one connector matching ``connectors`` and, with ``available_now``,
    available now (at ``now``, required with it): the same connector, so "a CCS2 of
    150 kW free now" is one plug.

    ``available_now=False`` is the exact complement of ``True`` among the stations with
    a connector matching ``connectors`` (every station, connectors or not, when that is
    ``ALL``): none of those connectors is available now, because the station is out of
    service or none of them reports Available without holding an ACTIVE session or
    being held by a live reservation."""
    if available_now is None:
        return ALL if connectors == ALL else Sub("id", "connector", connectors,
                                                 select="station_id")
    if now is None:
        raise ValueError("available now needs the time it is judged at")
    free = Sub("id", "connector", all_of(connectors, connectors_free(now)),
               select="station_id")
    if available_now:
        return all_of(stations_in_service(), free)
    none_free = NotSub(free.field, free.kind, free.where, free.select)
    return all_of(stations_with(connectors),
                  any_of(stations_out_of_service(), none_free))
