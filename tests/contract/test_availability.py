"""The "available now" rule (``domain.availability``) evaluated in each store: a
connector that reported Available counts only on a connected station that is not down as
a whole (connector 0 Unavailable or Faulted; never reported, null, is not down), when no
ACTIVE session and no live reservation holds it."""

from __future__ import annotations

from domain.availability import (
    connector_fits,
    connectors_available_now,
    connectors_held,
    connectors_not_available_now,
    connectors_reserved,
    stations_in_service,
    stations_out_of_service,
    stations_with,
)
from domain.entities import (
    Connector,
    ConnectorStatus,
    ConnectorType,
    ReservationState,
    SessionState,
    Station,
)
from domain.ports import Store
from tests.contract.factories import T0, at, connector, put, reservation, session, station

A = ConnectorStatus.AVAILABLE


async def ids(store: Store, kind: type[Connector] | type[Station], where: object) -> set[str]:
    found = {r.id for r in await store.find_all(kind, where)}  # type: ignore[arg-type]
    assert await store.count(kind, where) == len(found)  # type: ignore[arg-type]
    return found


async def test_available_now_needs_a_connected_station_that_is_up(store: Store) -> None:
    up = station(online=True)  # never reported connector 0
    up_too = station(online=True, status=A)
    offline = station(online=False, status=A)
    faulted = station(online=True, status=ConnectorStatus.FAULTED)
    unavailable = station(online=True, status=ConnectorStatus.UNAVAILABLE)
    plugs = {st.cp_id: connector(st, 1, status=A) for st in
             (up, up_too, offline, faulted, unavailable)}
    busy = connector(up, 2, status=ConnectorStatus.CHARGING)
    await put(store, up, up_too, offline, faulted, unavailable, *plugs.values(), busy)

    assert await ids(store, Station, stations_in_service()) == {up.id, up_too.id}
    assert await ids(store, Station, stations_out_of_service()) == {
        offline.id, faulted.id, unavailable.id}
    free = {plugs[up.cp_id].id, plugs[up_too.cp_id].id}
    assert await ids(store, Connector, connectors_available_now(T0)) == free
    every = {c.id for c in plugs.values()} | {busy.id}
    assert await ids(store, Connector, connectors_not_available_now(T0)) == every - free


async def test_stations_with_one_connector_meeting_every_condition(store: Store) -> None:
    fast = station(online=True)
    slow = station(online=True)
    unknown = station(online=True)
    await put(store, fast, slow, unknown,
              connector(fast, 1, type=ConnectorType.CCS2, max_kw=150.0,
                        status=ConnectorStatus.CHARGING),
              connector(fast, 2, type=ConnectorType.TYPE2, max_kw=22.0, status=A),
              connector(slow, 1, type=ConnectorType.TYPE2, max_kw=11.0, status=A),
              connector(unknown, 1, type=ConnectorType.CCS2, status=A))

    ccs = connector_fits([ConnectorType.CCS2])
    assert await ids(store, Station, stations_with(ccs)) == {fast.id, unknown.id}
    assert await ids(store, Station, stations_with(ccs, available_now=True, now=T0)) == {unknown.id}
    strong = connector_fits(min_kw=20)  # unknown power does not qualify
    assert await ids(store, Station, stations_with(strong)) == {fast.id}
    assert await ids(store, Station, stations_with(
        connector_fits([ConnectorType.TYPE2], 20), available_now=True, now=T0)) == {fast.id}
    assert await ids(store, Station, stations_with(connector_fits())) == {
        fast.id, slow.id, unknown.id}
    # An empty list of types is "any of none", as every list filter reads one.
    for available_now in (None, True, False):
        assert await ids(store, Station, stations_with(
            connector_fits([]), available_now=available_now, now=T0)) == set()
    assert await ids(store, Connector, connector_fits([])) == set()


async def test_stations_with_none_available_now_are_the_exact_complement(
        store: Store) -> None:
    """Offline stations, charge points down as a whole (connector 0), busy and mixed
    connectors, and a station without connectors: every station is in exactly one of
    "one available now" and "none available now", with connector conditions too."""
    mixed = station(online=True)  # a free Type 2, a busy CCS2
    offline = station(online=False, status=A)
    faulted = station(online=True, status=ConnectorStatus.FAULTED)
    busy = station(online=True, status=A)
    bare = station(online=True)
    await put(store, mixed, offline, faulted, busy, bare,
              connector(mixed, 1, type=ConnectorType.TYPE2, status=A),
              connector(mixed, 2, type=ConnectorType.CCS2, status=ConnectorStatus.CHARGING),
              connector(offline, 1, type=ConnectorType.CCS2, status=A),
              connector(faulted, 1, type=ConnectorType.CCS2, status=A),
              connector(busy, 1, type=ConnectorType.CCS2, status=ConnectorStatus.FAULTED))

    every = await ids(store, Station, stations_with(connector_fits()))
    free = await ids(store, Station, stations_with(connector_fits(), available_now=True,
                                                   now=T0))
    none_free = await ids(store, Station, stations_with(connector_fits(), available_now=False,
                                                        now=T0))
    assert free == {mixed.id}
    assert none_free == {offline.id, faulted.id, busy.id, bare.id}
    assert free | none_free == every and not free & none_free

    ccs = connector_fits([ConnectorType.CCS2])
    assert await ids(store, Station, stations_with(ccs, available_now=True, now=T0)) == set()
    assert await ids(store, Station, stations_with(ccs, available_now=False, now=T0)) == {
        mixed.id, offline.id, faulted.id, busy.id}  # not bare: it has no CCS2


async def test_a_connector_holding_an_active_session_is_not_available_now(
        store: Store) -> None:
    """A charger that reported Available, then started a transaction and sent meter
    values without reporting Preparing or Charging, was listed free (QA s20). The ACTIVE
    session on that very plug (its station and connector number) makes it occupied; a
    session on another plug of the station, another station's plug of the same number,
    or a completed one do not."""
    taken = station(online=True)
    other = station(online=True)
    held = connector(taken, 1, status=A)
    beside = connector(taken, 2, status=A)
    same_number = connector(other, 1, status=A)
    done = connector(other, 2, status=A)
    await put(store, taken, other, held, beside, same_number, done,
              session(taken, 1),
              session(other, 2, state=SessionState.COMPLETED),
              session(other, 3))  # on a plug the station has no record of

    assert await ids(store, Connector, connectors_held()) == {held.id}
    free = {beside.id, same_number.id, done.id}
    assert await ids(store, Connector, connectors_available_now(T0)) == free
    assert await ids(store, Connector, connectors_not_available_now(T0)) == {held.id}

    # A station whose only free plug is held is in "none available now".
    lone = station(online=True)
    plug = connector(lone, 1, status=A)
    await put(store, lone, plug, session(lone, 1))
    everywhere = connector_fits()
    assert await ids(store, Station, stations_with(everywhere, available_now=True, now=T0)) == {
        taken.id, other.id}
    assert await ids(store, Station, stations_with(everywhere, available_now=False, now=T0)) == {
        lone.id}


async def test_a_connector_a_live_reservation_holds_is_not_available_now(
        store: Store) -> None:
    """QA s23: a reservation the charger accepted (ACTIVE) or was never heard answering
    (PENDING) holds its plug while the charger still reports it Available; the remote
    start refuses another card there, and the lists called it free. One of connector 0
    holds every plug of its station. Ended ones (used, cancelled, refused, expired, or
    live but past their expiry before the sweep stored it) hold nothing, nor does one
    on another plug of the station or on another station's plug of the same number."""
    reserved = station(online=True)  # 1: ACTIVE, 2: PENDING, 3: neither
    anywhere = station(online=True)  # a station-wide reservation, two free plugs
    ended = station(online=True)  # every plug's reservation has ended
    other = station(online=True)  # no reservation, plugs numbered as the others'
    plugs = {(st.id, n): connector(st, n, status=A)
             for st in (reserved, anywhere, ended, other) for n in (1, 2, 3)}
    done = (ReservationState.USED, ReservationState.CANCELLED, ReservationState.REJECTED,
            ReservationState.EXPIRED)
    await put(store, reserved, anywhere, ended, other, *plugs.values(),
              reservation(reserved, connector_id=1, state=ReservationState.ACTIVE),
              reservation(reserved, connector_id=2),  # PENDING
              reservation(anywhere, connector_id=0, state=ReservationState.ACTIVE),
              *(reservation(ended, connector_id=1, state=s) for s in done),
              # Live as stored, but past its expiry at T0 (the sweep has not run).
              reservation(ended, connector_id=2, state=ReservationState.ACTIVE,
                          expires_at=at(-1)),
              reservation(ended, connector_id=3, expires_at=T0))

    held = {plugs[reserved.id, 1].id, plugs[reserved.id, 2].id,
            *(plugs[anywhere.id, n].id for n in (1, 2, 3))}
    assert await ids(store, Connector, connectors_reserved(T0)) == held
    every = {c.id for c in plugs.values()}
    assert await ids(store, Connector, connectors_available_now(T0)) == every - held
    assert await ids(store, Connector, connectors_not_available_now(T0)) == held
    # Once they expire, the same reservations hold nothing.
    assert await ids(store, Connector, connectors_available_now(at(31))) == every

    everywhere = connector_fits()
    assert await ids(store, Station, stations_with(everywhere, available_now=True,
                                                   now=T0)) == {
        reserved.id, ended.id, other.id}
    assert await ids(store, Station, stations_with(everywhere, available_now=False,
                                                   now=T0)) == {anywhere.id}
    # A station whose every free plug is reserved has none available now.
    lone = station(online=True)
    await put(store, lone, connector(lone, 1, status=A),
              connector(lone, 2, status=ConnectorStatus.CHARGING),
              reservation(lone, connector_id=1))
    assert lone.id in await ids(store, Station, stations_with(
        everywhere, available_now=False, now=T0))
