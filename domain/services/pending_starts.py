"""Remote starts whose StartTransaction has not come yet (``PendingStart``).

``CommandService`` stores one just before it sends a RemoteStartTransaction and refuses a
second start with the same card, or on the same connector, while it lives;
``ChargingService`` takes its car for the session and deletes it when the
StartTransaction comes. Both judge "live" by these rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from domain.entities import PendingStart
from domain.policy import Viewer
from domain.ports import Update
from domain.query import Eq, Filter, Range, all_of
from domain.services.base import patch

#: How long a remote start the charger may have taken is held: OCPP 1.6's
#: ConnectionTimeOut, the time a charger waits for the cable after a remote start before
#: it gives the start up (its value is the charger's; 120 s is a common setting, and
#: above most). Past it, no StartTransaction is expected for it any more (one flushed
#: later from an offline queue is taken as it comes), and it holds nothing.
PENDING_START_WINDOW = timedelta(seconds=120)


def live_pending_starts(now: datetime) -> Filter:
    """Pending starts that hold their card and plug at ``now``: not settled (started,
    or refused by the charger) and within their window. An expired one is ignored by
    every check before the sweep (``CommandService.forget_pending_starts``) deletes it."""
    return all_of(Range("expires_at", gt=now), Eq("settled_at", None))


def settle(pending: PendingStart, actor: Viewer, now: datetime) -> Update:
    """The write settling ``pending`` at ``now`` (it holds nothing from then on): only
    while it is unsettled, skipped without error when it is settled already or gone
    (swept), so two settlings never fail each other's write."""
    return patch(pending, actor, only_if=("settled_at", None), settled_at=now)


def started_by(pending: Sequence[PendingStart], connector_id: int) -> PendingStart | None:
    """Of a card's live pending starts on a charger, the one a StartTransaction on
    ``connector_id`` carries out: one that named this connector, else one that let the
    charger pick (``connector_id`` ``None``)."""
    named = [p for p in pending if p.connector_id == connector_id]
    free = [p for p in pending if not p.connector_id]
    found = sorted(named or free, key=lambda p: p.created_at)
    return found[0] if found else None
