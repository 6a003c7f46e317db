"""Cards withdrawn at the chargers: what a blocked, expired, removed or deactivated card
still holds there is taken back.

A charger decides on its own with what it keeps: its local authorization list (OCPP 1.6,
3.5: filled by SendLocalList) and its authorization cache. So the service remembers what
each station's list holds, as far as the chargers' answers tell (``record_local_list``,
called for every SendLocalList a charger accepted: a Full list replaces, a Differential
adds, updates and removes). When a card stops being usable, every list holding it as
Accepted is sent a Differential (``listVersion`` + 1) marking it so (``Withdrawal``), in
the background: the change that caused it never waits on chargers. What a charger did
not accept (it was offline, it failed) stays wanted (``LocalListEntry.wanted``) and is
sent again when it boots. A blocked card's, or a deactivated driver's, session under way
is stopped (RemoteStopTransaction) and its live reservations cancelled.
The cache needs no command: its entries expire (``ChargingService.authorize`` bounds
every answer's ``expiryDate``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from domain.entities import (
    LIVE_RESERVATION_STATES,
    IdTag,
    IdTagStatus,
    LocalList,
    LocalListEntry,
    Reservation,
    Session,
    SessionState,
    Station,
    User,
)
from domain.errors import DomainError
from domain.policy import SYSTEM, Viewer
from domain.ports import Change, Delete, Insert, Store
from domain.query import Eq, In, Range, Sort, all_of
from domain.services.background import Background
from domain.services.base import Service, ServiceContext, patch, stamp_new

if TYPE_CHECKING:
    from domain.services.commands import CommandService

log = logging.getLogger("chargegraph.withdrawal")

#: The most entries of one station's list read at once: far above what chargers hold
#: (``LocalAuthListMaxLength`` is in the hundreds or low thousands).
MAX_LIST = 100_000
#: How far back the first expiry sweep of a process looks (later ones look back to the
#: previous sweep): cards that expired while no instance ran. A charger's list that
#: missed an older one is corrected when the charger boots (``charger_back``).
EXPIRY_LOOKBACK = timedelta(days=7)
#: The most cards one expiry sweep handles (the next sweep takes the rest).
EXPIRY_BATCH = 500
ACCEPTED = "Accepted"


def _charger_status(status: IdTagStatus) -> str:
    """A card's status as a charger's list spells it (OCPP AuthorizationStatus)."""
    return {IdTagStatus.ACCEPTED: "Accepted", IdTagStatus.BLOCKED: "Blocked",
            IdTagStatus.EXPIRED: "Expired"}.get(status, "Invalid")


async def record_local_list(store: Store, station: Station, payload: dict[str, Any],
                            actor: Viewer) -> None:
    """Records what a SendLocalList the charger accepted put in its list (``payload`` as
    sent: OCPP field names). An entry that now holds what the service wanted of it has
    nothing wanted any more."""
    entries = [e for e in payload.get("localAuthorizationList") or () if isinstance(e, dict)]
    given: dict[str, str | None] = {}
    for item in entries:
        info = item.get("idTagInfo")
        given[str(item["idTag"]).upper()] = info.get("status") if isinstance(info, dict) \
            else None
    full = payload.get("updateType") == "Full"
    where = Eq("station_id", station.id) if full \
        else all_of(Eq("station_id", station.id), In("tag", tuple(given)))
    held = {e.tag: e for e in await store.find_all(LocalListEntry, where, limit=MAX_LIST)} \
        if full or given else {}
    changes: list[Change] = []
    for tag, entry in held.items():
        status = given.get(tag)
        if status is None:  # not in a Full list, or removed by a Differential
            changes.append(Delete(entry))
        elif status != entry.status or entry.wanted is not None:
            changes.append(patch(entry, actor, status=status,
                                 wanted=None if status == entry.wanted else entry.wanted))
    for tag, status in given.items():
        if status is not None and tag not in held:
            changes.append(Insert(stamp_new(LocalListEntry(
                station_id=station.id, cp_id=station.cp_id, tag=tag, status=status),
                actor)))
    changes.append(await _versioned(store, station, int(payload["listVersion"]), actor))
    await store.write(changes, [])


async def _versioned(store: Store, station: Station, version: int, actor: Viewer
                     ) -> Change:
    [current] = await store.get_many(LocalList, [station.id])
    if current is None:
        return Insert(stamp_new(LocalList(id=station.id, station_id=station.id,
                                          cp_id=station.cp_id, version=version), actor))
    return patch(current, actor, version=version, cp_id=station.cp_id)


class Withdrawal(Service):
    """Takes back at the chargers what a card no longer usable holds there (see the
    module): called by the use cases that make one so, runs in the background."""

    def __init__(self, ctx: ServiceContext, commands: CommandService) -> None:
        super().__init__(ctx)
        self.commands = commands
        self._work = Background()
        #: Up to when cards' expiries were swept by this process (``sweep_expired``).
        self._swept: datetime | None = None

    async def settled(self) -> None:
        """Waits for what runs in the background (tests, shutdown)."""
        await self._work.settled()

    # ------------------------------------------------------------- triggers
    async def withdraw_card(self, actor: Viewer, card: IdTag, status: IdTagStatus, *,
                            stop: bool) -> None:
        """``card`` is ``status`` now (blocked, expired; a removed card BLOCKED), by
        ``actor``. ``stop``: it may not go on charging (blocked or removed, not expired:
        a session started before its expiry was authorized), so its session under way is
        stopped and its live reservations cancelled. ``FleetService`` runs it in the
        background."""
        await self._mark_wanted(actor, card.tag, _charger_status(status))
        if stop:
            await self._stop_sessions(actor, Eq("id_tag", card.tag))
            await self._cancel_reservations(actor, Eq("id_tag", card.tag))
        for station_id in await self._stations_wanting([card.tag]):
            await self.push(actor, station_id)

    async def withdraw_user(self, actor: Viewer, user: User) -> None:
        """``user`` was deactivated by ``actor``: their cards are withdrawn, their
        sessions stopped, their live reservations cancelled (as the system: the user's
        operator may not run those stations; audited as ``actor``'s). One whose charger
        cannot be reached keeps its state, as any unanswered command's.
        ``AccountService`` runs it in the background."""
        cards = await self.store.find_all(IdTag, Eq("user_id", user.id), limit=MAX_LIST)
        for card in cards:
            await self._mark_wanted(actor, card.tag, "Blocked")
        await self._stop_sessions(actor, Eq("user_id", user.id))
        await self._cancel_reservations(actor, Eq("user_id", user.id))
        for station_id in await self._stations_wanting([c.tag for c in cards]):
            await self.push(actor, station_id)

    def charger_back(self, station_id: str) -> None:
        """A charger booted (its boot answered Accepted): what its list should hold and
        does not is sent now, in the background."""
        self._work.run(self._correct(station_id), f"local-list-{station_id}",
                       f"correcting the local list of station {station_id} failed")

    async def sweep_expired(self) -> int:
        """Withdraws the cards that expired since the last sweep; returns how many."""
        now = self.now()
        since = self._swept or now - EXPIRY_LOOKBACK
        due = await self.store.find_all(IdTag, all_of(
            Eq("status", IdTagStatus.ACCEPTED), Range("expires_at", gt=since, lte=now)),
            [Sort("expires_at")], limit=EXPIRY_BATCH)
        for card in due:
            await self._mark_wanted(SYSTEM, card.tag, "Expired")
        # A full batch: the rest next time, from the last one taken.
        last = due[-1].expires_at if len(due) == EXPIRY_BATCH else None
        self._swept = last or now
        for station_id in await self._stations_wanting([c.tag for c in due]):
            await self.push(SYSTEM, station_id)
        return len(due)

    # ------------------------------------------------------------- the work
    async def _mark_wanted(self, actor: Viewer, tag: str, status: str) -> None:
        """Every list entry holding ``tag`` as Accepted is wanted as ``status`` instead."""
        held = await self.store.find_all(LocalListEntry, all_of(
            Eq("tag", tag), Eq("status", ACCEPTED)), limit=MAX_LIST)
        changes: list[Change] = [patch(e, actor, wanted=status) for e in held
                                 if e.wanted != status]
        if changes:
            await self.store.write(changes, [])

    async def _stations_wanting(self, tags: Sequence[str]) -> list[str]:
        if not tags:
            return []
        wanting = await self.store.find_all(LocalListEntry, all_of(
            In("tag", tuple(tags)), In("wanted", ("Blocked", "Expired", "Invalid"))),
            limit=MAX_LIST)
        return sorted({e.station_id for e in wanting})

    async def _correct(self, station_id: str) -> None:
        """Marks wanted what the station's list accepts of cards not usable now (a change
        missed while no instance ran, an expiry no sweep saw), then pushes."""
        accepted = await self.store.find_all(LocalListEntry, all_of(
            Eq("station_id", station_id), Eq("status", ACCEPTED)), limit=MAX_LIST)
        tags = [e.tag for e in accepted if e.wanted is None]
        now = self.now()
        for start in range(0, len(tags), 500):
            cards = await self.store.find_all(IdTag, In("tag", tuple(tags[start:start + 500])),
                                              limit=500)
            owners = {u.id: u for u in await self.store.get_many(
                User, sorted({c.user_id for c in cards})) if u is not None}
            for card in cards:
                status = card.charger_status(owners.get(card.user_id), now)
                if status is not IdTagStatus.ACCEPTED:
                    await self._mark_wanted(SYSTEM, card.tag, _charger_status(status))
        await self.push(SYSTEM, station_id)

    async def push(self, actor: Viewer, station_id: str) -> None:
        """Sends the station's wanted entries as one Differential, when its charger is
        connected (otherwise its next boot does). A VersionMismatch (the charger's list
        is at a version we did not record: changed elsewhere, or reset) is answered by
        asking its version and sending once more above it."""
        wanted = await self.store.find_all(LocalListEntry, all_of(
            Eq("station_id", station_id), In("wanted", ("Blocked", "Expired", "Invalid"))),
            limit=MAX_LIST)
        [station] = await self.store.get_many(Station, [station_id])
        if not wanted or station is None or not station.online:
            return
        [current] = await self.store.get_many(LocalList, [station_id])
        version = (current.version if current is not None else 0) + 1
        outcome = await self._send(actor, station, version, wanted)
        if outcome == "VersionMismatch":
            asked = await self.commands.send(SYSTEM, station.cp_id, "GetLocalListVersion",
                                             {}, audited_as=actor)
            theirs = asked.result.get("listVersion")
            if asked.error is None and isinstance(theirs, int) and theirs >= 0:
                await self._send(actor, station, max(theirs, version) + 1, wanted)

    async def _send(self, actor: Viewer, station: Station, version: int,
                    wanted: Sequence[LocalListEntry]) -> str | None:
        payload = {"listVersion": version, "updateType": "Differential",
                   "localAuthorizationList": [
                       {"idTag": e.tag, "idTagInfo": {"status": e.wanted}} for e in wanted]}
        try:
            outcome = await self.commands.send(SYSTEM, station.cp_id, "SendLocalList",
                                               payload, audited_as=actor)
        except DomainError as exc:  # the station went meanwhile: nothing to correct
            log.info("local list of %s not corrected: %s", station.cp_id, exc.message)
            return None
        if outcome.error is not None:
            log.info("local list of %s not corrected now (sent again at its next boot): "
                     "%s", station.cp_id, outcome.error.message)
        return outcome.status

    async def _stop_sessions(self, actor: Viewer, where: Eq) -> None:
        """Asks the chargers to stop the sessions under way that ``where`` selects; one
        whose charger is offline goes on until its charger stops it."""
        active = await self.store.find_all(Session, all_of(
            where, Eq("state", SessionState.ACTIVE)), limit=100)
        for session in active:
            try:
                outcome = await self.commands.send(
                    SYSTEM, session.cp_id, "RemoteStopTransaction",
                    {"transactionId": session.transaction_id}, audited_as=actor)
            except DomainError as exc:
                log.info("session %d of a withdrawn card not stopped: %s",
                         session.transaction_id, exc.message)
                continue
            if outcome.error is not None:
                log.info("session %d of a withdrawn card not stopped: %s",
                         session.transaction_id, outcome.error.message)

    async def _cancel_reservations(self, actor: Viewer, where: Eq) -> None:
        held = await self.store.find_all(Reservation, all_of(
            where, In("state", LIVE_RESERVATION_STATES),
            Range("expires_at", gt=self.now())), limit=100)
        for reservation in held:
            try:
                await self.commands.send(SYSTEM, reservation.cp_id, "CancelReservation",
                                         {"reservationId": reservation.reservation_id},
                                         audited_as=actor)
            except DomainError as exc:
                log.info("reservation %d of a withdrawn card not cancelled: %s",
                         reservation.reservation_id, exc.message)
