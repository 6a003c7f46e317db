"""Remote starts whose StartTransaction has not come yet (``PendingStart``).

``CommandService`` stores one just before it sends a RemoteStartTransaction and refuses a
second start with the same card, on the same connector, for the same car, or (naming
neither card nor car) by the same driver while it lives; it settles one the charger
refused. ``ChargingService`` settles it (``settled_at``) when its StartTransaction comes,
taking its car for the session, or when the charger reports its connector given up
(``GIVEN_UP``). ``CommandService.forget_pending_starts`` deletes it once its window has
passed. Both judge "live" by these rules.

A start sent before its charger's last boot (``Station.booted_at``: a boot that answered
no TriggerMessage of ours, after the one the start recorded it was sent in) is still
live, but no longer holds its card and plug (``holds``): a reboot forgets a start the
charger held (QA s25: held for its whole window, the driver the Reset was for could not
start again), but some chargers send a BootNotification at every reconnect without
restarting, and still carry the start out (review s25: settled at the boot, its
StartTransaction then lost the car the driver chose). So its StartTransaction, if it
comes, still matches it and takes its car; and a new remote start with its card or on
its plug is sent, and settles it as superseded once the charger accepts the new one
(``CommandService._hold_start``; review s25: settled before, a charger refusing the new
one, as it still held the first, cost the first its car). While both are live a
StartTransaction takes the new one (``started_by``; review s26).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from domain.entities import ConnectorStatus, PendingStart, Station
from domain.policy import Viewer
from domain.ports import Update
from domain.query import Eq, Filter, Range, all_of
from domain.services.base import patch
from domain.wire import rfc3339

#: How long a remote start the charger may have taken is held: OCPP 1.6's
#: ConnectionTimeOut, the time a charger waits for the cable after a remote start before
#: it gives the start up (its value is the charger's; 120 s is a common setting, and
#: above most). Past it, no StartTransaction is expected for it any more (one flushed
#: later from an offline queue is taken as it comes), and it holds nothing.
PENDING_START_WINDOW = timedelta(seconds=120)


#: What a connector reports, leaving the Preparing a remote start put it in, when its
#: charger gave the start up (no car within its ConnectionTimeOut, the start cancelled at
#: the charger): no StartTransaction will come for it. Available only: a Faulted or
#: Unavailable may pass (a ground fault cleared, Preparing again) and the charger still
#: carry the start out within its ConnectionTimeOut (review r3b: settled on a brief
#: Faulted, the start's StartTransaction lost the car the driver chose); such a start
#: holds its card and plug until its window ends.
GIVEN_UP = frozenset({ConnectorStatus.AVAILABLE})


def live_pending_starts(now: datetime) -> Filter:
    """Pending starts live at ``now``: not settled (started, or refused by the charger)
    and within their window; a StartTransaction may still carry them out, and those
    ``holds`` allows hold their card and plug. An expired one is ignored by
    every check before the sweep (``CommandService.forget_pending_starts``) deletes it."""
    return all_of(Range("expires_at", gt=now), Eq("settled_at", None))


def holds(pending: PendingStart, station: Station | None) -> bool:
    """Whether live ``pending`` holds its card and plug: not when its ``station`` has
    booted since it was sent (see the module); a station gone holds nothing either.

    By the boot it was sent in (``PendingStart.station_booted_at``), not by time: the
    start's ``created_at`` is the sending instance's clock and ``booted_at`` the booting
    one's, and a start sent within their difference after a boot held nothing (review
    s25). One stored without it (before that field, or to a station never booted) is
    judged by time, as before."""
    if station is None:
        return False
    if pending.station_booted_at is not None:
        return pending.station_booted_at == station.booted_at
    return station.booted_at is None or pending.created_at >= station.booted_at


def holding(pending: Sequence[PendingStart], stations: Mapping[str, Station | None]
            ) -> list[PendingStart]:
    """Of live ``pending``, those that hold their card and plug (``holds``), by their
    stations (``stations``: by id)."""
    return [p for p in pending if holds(p, stations.get(p.station_id))]


def settle(pending: PendingStart, actor: Viewer, now: datetime) -> Update:
    """The write settling ``pending`` at ``now`` (it holds nothing from then on): only
    while it is unsettled, skipped without error when it is settled already or gone
    (swept), so two settlings never fail each other's write."""
    return patch(pending, actor, only_if=("settled_at", None), settled_at=now)


def unknown_outcome(pending: PendingStart, actor: Viewer) -> Update:
    """The write marking ``pending`` as sent with no answer telling whether its charger
    took it (``PendingStart.outcome_unknown``), while it is unsettled: it holds its card
    and plug all the same, and says so to whoever it holds them from."""
    return patch(pending, actor, only_if=("settled_at", None), outcome_unknown=True)


def waiting(pending: PendingStart) -> str:
    """What a live ``pending`` is waiting for, as a refusal it causes says: its car, or,
    its outcome unknown, the end of its hold (QA s33: a start its charger never answered
    readably held the card for two minutes "waiting for the car")."""
    if not pending.outcome_unknown:
        return "its remote start is waiting for the car"
    return ("whether its charger took its remote start is unknown (it may have started "
            f"it): held until {rfc3339(pending.expires_at)}")


def started_by(pending: Sequence[PendingStart], connector_id: int,
               station: Station | None) -> PendingStart | None:
    """Of a card's live pending starts on a charger (its ``station``), the one a
    StartTransaction on ``connector_id`` carries out: one that named this connector,
    else one that let the charger pick (``connector_id`` ``None``), else one that named
    another connector: the driver plugged into the plug beside the one they chose and
    tapped the card there (review of 1c05ebe: left unsettled, it held the card once that
    session ended, and the session lost the car chosen). The charger holds one
    transaction per card, so the card's start here is this one.

    A start sent since the charger's last boot (``holds``), the newest, before one from
    before it: live, it was not refused (a refusal settles it), so the charger took it
    or is about to say so, and a restarted charger forgot the older one. The older one
    is settled only once the new one's Accepted is handled, which, relayed from another
    instance, may come after this StartTransaction (review s26: it took the older start
    and its car, not the one the driver just chose). One the charger refused is settled,
    so the older start it still carries out keeps its car."""
    current = [p for p in pending if holds(p, station)]
    among = current or list(pending)
    named = [p for p in among if p.connector_id == connector_id]
    free = [p for p in among if not p.connector_id]
    found = sorted(named or free or among, key=lambda p: p.created_at,
                   reverse=bool(current))
    return found[0] if found else None


def abandoned(pending: Sequence[PendingStart], connector_id: int,
             preparing_since: datetime) -> list[PendingStart]:
    """Of a station's live pending starts, those its charger gave up when ``connector_id``
    left for a ``GIVEN_UP`` state the Preparing it was reported in since
    ``preparing_since`` (when that report was stored, on our clock): those that named the
    connector and were stored before it, so the Preparing was the charger taking the
    start (review of 1c05ebe: a start given up held the card and plug for its whole
    window, and nobody could clear it). Not a report before any Preparing (some chargers
    repeat Available as they accept a start, then go Preparing), nor one left from before
    the start (a car plugged in first), nor one that named no connector (the charger's
    pick is not known): those hold until their StartTransaction or their window's end."""
    return [p for p in pending
            if p.connector_id == connector_id and p.created_at <= preparing_since]
