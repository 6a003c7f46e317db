"""What every use case shares: its ports, the policy, and one way to commit a change
together with its audit entries."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, NamedTuple

from domain import validation as v
from domain.availability import connectors_free
from domain.clock import utcnow
from domain.command_rules import folded_key
from domain.entities import (
    DIAGNOSTICS_REQUESTED,
    FIRMWARE_AWAITING,
    LIVE_RESERVATION_STATES,
    AuditAction,
    AuditEntry,
    Company,
    Connector,
    ConnectorStatus,
    E,
    IdTag,
    Payment,
    Record,
    Refund,
    Registration,
    Reservation,
    Session,
    SessionState,
    Site,
    Station,
    Tariff,
    User,
    Vehicle,
    Webhook,
    audit_after,
    snapshot,
)
from domain.errors import Conflict, NotFound
from domain.events import (
    ConnectorStatusChanged,
    DomainEvent,
    MaintenanceStatusChanged,
    ReservationChanged,
)
from domain.ids import is_id
from domain.policy import HOLDER_PRIVATE_KINDS, PRIVATE_FIELDS, SYSTEM, Policy, Viewer
from domain.ports import (
    Audit,
    AuditIfApplied,
    Change,
    Delete,
    EventBus,
    Guard,
    Insert,
    PasswordHasher,
    Store,
    Update,
)
from domain.query import Eq, Filter, Range, Sort, all_of, any_of, newest_first

log = logging.getLogger("chargegraph.services")


class _Unset:
    """Marks an update field the caller did not give (``None`` means "clear it")."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset()


#: Password hashes computed at once (each keeps a core busy for tens of milliseconds).
HASHING_THREADS = 2


@dataclass
class ServiceContext:
    store: Store
    policy: Policy
    hasher: PasswordHasher
    bus: EventBus | None = None
    #: The time source; tests replace it to drive histories at chosen instants.
    clock: Callable[[], datetime] = field(default=utcnow)
    #: Called with the changes of every audited commit, once stored: caches of this
    #: process (the OCPP hot path's) drop what an operator just changed.
    committed: list[Callable[[Sequence[Change]], None]] = field(default_factory=list)
    #: Called with every event this process's services publish, before the bus carries
    #: it: work done once per event across instances (outgoing webhooks) hooks in here,
    #: not on a bus subscription, which every instance behind Redis would see. Must not
    #: block: it runs on the publisher's path (a charger's message).
    published: list[Callable[[Any], None]] = field(default_factory=list)
    #: Password hashing (argon2, tens of milliseconds of CPU each) runs on these threads,
    #: for sign-ins and chargers alike: it cannot stall the event loop or take every core.
    #: A pool rather than a semaphore: a cancelled caller's hashing still holds its thread
    #: until done (a queued one is dropped), so the bound holds whatever clients do.
    hashing: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=HASHING_THREADS, thread_name_prefix="chargegraph-hashing"))
    #: Chargers' Basic-auth checks have threads of their own: a flood of sign-ins queued
    #: on ``hashing`` must not keep chargers from connecting.
    charger_hashing: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=HASHING_THREADS, thread_name_prefix="chargegraph-charger-hashing"))
    #: The deployment's key for what the store keeps by a digest that must not be
    #: matched by trying every value (a freed card number, ``freed_tags.digest``):
    #: derived from the secret every instance shares, on every path that builds the
    #: services, the CLI's too (``chargegraph.app.build_services``).
    digest_key: bytes = b""


def owned_by(station: Station) -> dict[str, Any]:
    """The station fields every domain event carries (``DomainEvent``): who may see it,
    and the version of that read (``Station.sight``)."""
    return {"station_id": station.id, "cp_id": station.cp_id,
            "company_id": station.company_id, "owner_id": station.owner_id,
            "on_map": station.registration is Registration.ACCEPTED,
            "version": station.sight}


def owned_as(event: DomainEvent) -> dict[str, Any]:
    """``owned_by`` of the station ``event`` is about, as the event carries it: for an
    event that follows another (``Service.plugs_held``)."""
    return {"station_id": event.station_id, "cp_id": event.cp_id,
            "company_id": event.company_id, "owner_id": event.owner_id,
            "on_map": event.on_map, "version": event.version}


async def reserved_for_card(store: Store, reservation: Reservation, presented: str,
                            card: IdTag | None) -> bool:
    """Whether ``reservation`` holds its plug for the card presented (OCPP 1.6, 5.13):
    its own id tag, a card whose parentIdTag is the reserved id, or one of the reserved
    card's group. One rule for a start (``ChargingService``) and a driver's remote start
    (``CommandService``). A group is a company's: a card of another company carrying
    the same parentIdTag is not of it (``same_company``). A group named beside the card
    (``Reservation.parent_id_tag``) is served too, as its charger serves it. The
    reserved card is the one
    the reservation was made for (``made_for``): a card issued with the reserved id
    later, by another company, is not it, and presenting it takes the reservation only
    as a bare id's, for its maker's company."""
    reserved = await store.find_one(IdTag, Eq("tag", reservation.id_tag)) \
        if card is not None else None
    if reserved is not None and not made_for(reservation, reserved):
        reserved = None  # reserved before this card was issued: a bare id then
    if reservation.id_tag == presented:
        # A tag we know no card of is matched as written; the reserved card itself is.
        return card is None or reserved is not None \
            or await same_company(store, card, None, reservation)
    if card is None or card.parent_tag is None:
        return False
    if reservation.parent_id_tag is not None and card.parent_tag == reservation.parent_id_tag:
        # The group its maker named beside the card (ReserveNow's parentIdTag), which the
        # charger holds the plug for too: their company's group, as a bare group id is
        # (QA s27: its cards were refused here, and their start left it live).
        return await same_company(store, card, None, reservation)
    if card.parent_tag != reservation.id_tag and (
            reserved is None or reserved.parent_tag != card.parent_tag):
        return False
    return await same_company(store, card, reserved, reservation)


def made_for(reservation: Reservation, card: IdTag) -> bool:
    """Whether ``reservation`` (of ``card``'s tag) was made for ``card``: for its holder,
    whom a reservation for a known card records (``CommandService._new_reservation``).
    A tag string is nobody's: one reserved before a card was issued with it was a bare
    id, maybe another company's. (Not "made after the card": stored times are to the
    millisecond and instances' clocks differ, the holder is exact.)"""
    return reservation.user_id == card.user_id


async def same_company(store: Store, card: IdTag, reserved: IdTag | None,
                       reservation: Reservation) -> bool:
    """Whether ``card``'s holder is of the company the reservation was made for: its
    card's holder's, or for a bare group id (no card of ours) its maker's, the operator
    who reserved for their fleet. Drivers of no company are one pool: their groups are
    an admin's doing. A bare group id reserved by someone of no company (an admin, the
    system) is matched as written: the group is whoever's cards carry it (one company's,
    ``FleetService`` sees to that)."""
    reserver_id = reserved.user_id if reserved is not None else reservation.created_by
    ids = [card.user_id, reserver_id] if is_id(reserver_id) else [card.user_id]
    found = await store.get_many(User, ids)
    holder, reserver = found[0], found[1] if len(found) > 1 else None
    if holder is None:
        return False
    if reserved is None and (reserver is None or reserver.company_id is None):
        return True
    return reserver is not None and reserver.company_id == holder.company_id


def maintenance_event(station: Station, kind: str, status: str, at: datetime
                      ) -> MaintenanceStatusChanged:
    """The announcement of a station's firmware (``FIRMWARE``) or diagnostics status as
    stored at ``at``: subscriptions and webhooks say what ``Station`` reads."""
    requested = station.firmware_requested_at if kind == "FIRMWARE" \
        else station.diagnostics_requested_at
    return MaintenanceStatusChanged(**owned_by(station), kind=kind, status=status, at=at,
                                    requested_at=requested)


#: The DiagnosticsStatusNotification statuses that end an upload.
UPLOAD_ENDS = frozenset({"Uploaded", "UploadFailed"})


def keeps_requested(station: Station, kind: str, status: str, now: datetime) -> bool:
    """Whether a charger's firmware (``FIRMWARE``) or diagnostics report of ``status``,
    coming while ``station`` reads ``Requested`` (or a firmware ``Unanswered``), is not
    news of that request, so the station goes on reading it. A firmware ``Idle`` before
    the rollout's ``firmware_retrieve_date``: the charger is not doing anything yet because the
    download is not due (answering a TriggerMessage, say), which is what ``Requested``
    with the rollout's date says already; from that date on an ``Idle`` is news (the
    charger dropped or has not begun a download it should have) and is kept. A
    diagnostics Uploaded or UploadFailed while the upload before the request was still
    under way (``diagnostics_previous_uploading``): that upload's end, late. OCPP 1.6's
    notifications name neither a rollout nor a file, so nothing else can be told apart:
    every other report is taken as the request's."""
    if kind == "FIRMWARE":
        due = station.firmware_retrieve_date
        return station.firmware_status in FIRMWARE_AWAITING and status == "Idle" \
            and due is not None and due > now
    return station.diagnostics_status == DIAGNOSTICS_REQUESTED \
        and station.diagnostics_previous_uploading and status in UPLOAD_ENDS


#: The FirmwareStatusNotification statuses that end a rollout.
ROLLOUT_ENDS = frozenset({"Installed", "InstallationFailed", "DownloadFailed"})


def keeps_outcome(station: Station, kind: str, status: str) -> bool:
    """Whether a charger's firmware (``FIRMWARE``) or diagnostics report of ``status``
    leaves the end of the last rollout (``ROLLOUT_ENDS``) or upload (``UPLOAD_ENDS``)
    the station reads: an ``Idle``, which OCPP 1.6 has a charger send only when a
    TriggerMessage asks and it is doing nothing, says no more than the end does (it is
    idle because it is done). Taken, it wrote an InstallationFailed over with the
    trigger's time, so an operator refreshing a fleet's statuses lost every failed
    install (QA s27). After any other status (Downloading, Uploading) an Idle is news:
    the charger dropped what it was doing. Only the end of the request the station
    records (``Station.firmware_requested_at``, ``diagnostics_requested_at``): an end
    from before it (the last rollout's Installed, raced by the new one's answer and left
    standing beside it) is not the new request's, and an Idle then is news of that one
    (review r27: dropped, the station read the new rollout as installed until the charger
    fetched it, hours later)."""
    if kind == "FIRMWARE":
        ended, at, asked = (station.firmware_status in ROLLOUT_ENDS,
                            station.firmware_status_at, station.firmware_requested_at)
    else:
        ended, at, asked = (station.diagnostics_status in UPLOAD_ENDS,
                            station.diagnostics_status_at, station.diagnostics_requested_at)
    current = asked is None or at is None or at >= asked
    return status == "Idle" and ended and current


def books_of(station: Station) -> tuple[str | None, str | None]:
    """Whose books a session on ``station`` goes to (``Session.company_id`` and
    ``station_owner_id``): its company's; a station of no company, its owner's. The
    owner of a company's station keeps no claim of their own: one who moves to another
    company must not take its sessions along."""
    if station.company_id is not None:
        return station.company_id, None
    return None, station.owner_id


def still_in_books(station: Station) -> Guard:
    """A write's ``Guard``: ``station`` is still in the books it was read in
    (``books_of``). A handover landing between a use case's read of the station and its
    write fails the write (``Conflict`` CHANGED); run again, the use case reads the
    station as handed over (a session's start books it to the new company, QA s26; a
    price set by the old company's operator is refused, review s26)."""
    return Guard(Station, all_of(Eq("id", station.id),
                                 *(Eq(name, value) for name, value in _books_held(station))))


def patch_in_books(station: Station, viewer: Viewer, *, held: tuple[str, Any] | None = None,
                   **updates: Any) -> Update:
    """``patch`` of ``station`` written only while it is in the books it was read in
    (``still_in_books`` as the update's own condition, on the row it writes: no guard
    read beside it) and, with ``held``, while that field still holds its value; else
    the whole write fails (``Conflict`` CHANGED, ``required``). The condition is checked
    where the update lands in its write: a write that must see what another wrote
    before it (a handover's) puts it after the rest, as a ``Guard`` is read after them
    (``ChargerConnections._record_connection``)."""
    conditions = ((held,) if held is not None else ()) + _books_held(station)
    return dataclasses.replace(
        patch(station, viewer, only_if=conditions[0], required=True, **updates),
        also_if=conditions[1:])


def _books_held(station: Station) -> tuple[tuple[str, Any], ...]:
    """The station's fields and values that say its books (``books_of``)."""
    company_id, owner_id = books_of(station)
    if company_id is not None:
        return (("company_id", company_id),)
    return ("company_id", None), ("owner_id", owner_id)


#: The books of an audit entry about a record of no one's books.
NO_BOOKS: tuple[str | None, str | None] = (None, None)


class Whose(NamedTuple):
    """Whose an audit entry is (``AuditEntry.company_id``, ``station_owner_id``,
    ``holder_id``): the books it is written in and the person it is about."""

    company_id: str | None = None
    station_owner_id: str | None = None
    holder_id: str | None = None

    @property
    def books(self) -> tuple[str | None, str | None]:
        return self.company_id, self.station_owner_id


NOBODY: Final = Whose()


def reservation_changed(reservation: Reservation, station: Station | None
                        ) -> ReservationChanged:
    """The event for ``reservation``'s state now (its station may have been removed)."""
    owned = owned_by(station) if station is not None else {
        "station_id": reservation.station_id, "cp_id": reservation.cp_id}
    return ReservationChanged(
        **owned, reservation_record_id=reservation.id,
        reservation_id=reservation.reservation_id, connector_id=reservation.connector_id,
        user_id=reservation.user_id, state=reservation.state.value,
        books_company_id=reservation.company_id,
        books_station_owner_id=reservation.station_owner_id)


#: A reservation's states (``ReservationChanged.state``) in which it holds its plugs.
_HOLDING = frozenset(s.value for s in LIVE_RESERVATION_STATES)


class Service:
    #: The pause before a write that met a change is run again, with the attempt's number
    #: (``retried``'s ``pause``). ``Services`` wires ``ChargingService.pause_to_retry``
    #: (the one pause of writes tried again: random, each instance its own, its jitter
    #: injectable) into the services that retry (stations, tariffs, fleet): on MongoDB
    #: guards are read after the write, so two writes racing each read the other's in
    #: flight, both are rolled back, and run again at once they meet again in step
    #: (reviews s31, r33). None (a bare service): at once.
    pause_to_retry: Callable[[int], Awaitable[None]] | None = None

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.policy = ctx.policy

    def now(self) -> datetime:
        return self.ctx.clock()

    async def publish(self, event: Any) -> None:
        """Announce ``event`` (after its change committed), best effort: a lost live
        update must not undo the change, and every reader has a slower way to learn it.

        Done here for every publisher, so none can forget it: a ``ConnectorStatusChanged``
        goes out with ``free`` (``_with_free``), and a ``ReservationChanged`` that ends
        the reservation (REJECTED, USED, CANCELLED, EXPIRED) is followed by one for each
        plug it held that is free now (``plugs_held``): the live map cannot see
        reservations, yet they take plugs out of "available now". An ACTIVE one held its
        plugs already as PENDING (``CommandService._new_reservation`` told of them): no
        plug changes by it. The follow-ups go to this process's listeners whether or not
        a bus runs (review r3b: without one, a CLI's or a test's webhooks never heard a
        reservation end)."""
        if isinstance(event, ConnectorStatusChanged) and event.free is None:
            event = await self._with_free(event)
        for listener in self.ctx.published:
            try:
                listener(event)
            except Exception:
                log.exception("a listener of published %s events failed", event.topic)
        if self.ctx.bus is not None:
            try:
                await self.ctx.bus.publish(event)
            except Exception:
                log.exception("publishing %s failed", event.topic)
        if isinstance(event, ReservationChanged) and event.state not in _HOLDING:
            await self.plugs_held(owned_as(event), event.connector_id, at=event.at)

    async def _with_free(self, event: ConnectorStatusChanged) -> ConnectorStatusChanged:
        """``event`` with ``free`` as the plug reads now: without a read when its status
        says it already (connector 0: ``None``; any status but Available: not free), else
        by the one indexed read of ``connectors_free`` on its record. A read that fails
        leaves it ``None`` (unknown), as from an older version."""
        if event.connector_record_id is None:
            return event
        if event.status != ConnectorStatus.AVAILABLE.value:
            return dataclasses.replace(event, free=False)
        try:
            found = await self.store.find_one(Connector, all_of(
                Eq("id", event.connector_record_id), connectors_free(self.now())))
        except Exception:
            log.exception("reading whether connector %s is free failed",
                          event.connector_record_id)
            return event
        return dataclasses.replace(event, free=found is not None)

    async def plugs_free(self, station_id: str, connector_id: int) -> frozenset[str]:
        """The record ids of the plugs of ``connector_id`` on the station (every plug of
        it for connector 0) that are free now (``connectors_free``): one indexed read.
        Taken before a change that may take them (``plugs_held``'s ``were_free``)."""
        return frozenset(c.id for c in await self.store.find_all(Connector, all_of(
            self._plugs(station_id, connector_id), connectors_free(self.now()))))

    @staticmethod
    def _plugs(station_id: str, connector_id: int) -> Filter:
        return all_of(Eq("station_id", station_id),
                      Eq("connector_id", connector_id) if connector_id else None)

    async def plugs_held(self, owned: dict[str, Any], connector_id: int,
                         were_free: Collection[str] = frozenset(),
                         at: datetime | None = None) -> None:
        """Publishes a ``ConnectorStatusChanged`` (its status unchanged, ``free`` as it
        reads now) for each plug of ``connector_id`` on the station ``owned`` names
        (``owned_by``; every plug of the station for connector 0) whose ``free`` a change
        just turned: free now and not among ``were_free`` (the record ids of those free
        before it, ``plugs_free``; none for a change that ends what held them), or the
        other way round. For the
        live map, whenever a reservation begins or stops holding (stored PENDING:
        ``CommandService._new_reservation``; REJECTED, USED, CANCELLED, EXPIRED:
        ``publish``) or a session starts or ends (``ChargingService``), as the charger
        may report nothing (no Reserved; Available before the StopTransaction; a
        StartTransaction with no Preparing). Only on a change: a plug taken anyway (a
        refused reservation of a charging plug) tells the map nothing, and nobody of a
        reservation attempt (review r3b). Carries the station's ownership (``owned``)
        and nothing of what changed, so it is as public as any status event; dated by
        the status it repeats, else ``at`` (the change's), else now. Each
        instance publishes those of its own changes, and they reach the others by the
        bus as any event."""
        station_id = owned["station_id"]
        if station_id is None:
            return
        where = self._plugs(station_id, connector_id)
        try:
            if were_free:
                plugs = await self.store.find_all(Connector, where)
                free = {c.id for c in await self.store.find_all(
                    Connector, all_of(where, connectors_free(self.now())))} \
                    if any(c.status is ConnectorStatus.AVAILABLE for c in plugs) else set()
            else:  # none was free: those free now are all that turned (one read)
                plugs = await self.store.find_all(
                    Connector, all_of(where, connectors_free(self.now())))
                free = {c.id for c in plugs}
        except Exception:
            log.exception("reading the plugs of station %s failed", station_id)
            return
        plugs = [p for p in plugs if (p.id in free) != (p.id in were_free)]
        for plug in plugs:
            # Dated by the status it repeats (a client keeps it as ``statusAt``, and
            # skips as stale only an event older than that).
            await self.publish(ConnectorStatusChanged(
                **owned, at=plug.status_at or at or self.now(), connector_record_id=plug.id,
                connector_id=plug.connector_id, status=plug.status.value,
                error_code=plug.error_code, info=plug.info,
                vendor_error_code=plug.vendor_error_code, free=plug.id in free))

    async def hash_password(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.ctx.hashing, self.ctx.hasher.hash, password)

    async def password_matches(self, password_hash: str, password: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.ctx.hashing, self.ctx.hasher.verify,
                                          password_hash, password)

    async def visible(self, viewer: Viewer, kind: type[E], record_id: str | None,
                      field: str = "id") -> E:
        """The record if the viewer may see it, else NOT_FOUND (missing and hidden read
        the same)."""
        if record_id is not None:
            found = await self.store.get_many(kind, [record_id],
                                              self.policy.scope(viewer, kind.kind))
            if found[0] is not None:
                return found[0]
        raise NotFound(f"no such {kind.kind.replace('_', ' ')}", field=field)

    async def landed(self, written: Sequence[E]) -> list[E]:
        """Of records written by guarded updates (``only_if`` without ``required``, which
        the store skips silently), those the store holds as written: what to announce."""
        if not written:
            return []
        stored = await self.store.get_many(type(written[0]), [r.id for r in written])
        return [now for wrote, now in zip(written, stored, strict=True)
                if now is not None and now.updated_at == wrote.updated_at
                and now.updated_by == wrote.updated_by]

    async def commit(self, viewer: Viewer, changes: Sequence[tuple[Change, Record | None]],
                     unaudited: Sequence[Change] = (),
                     extra_audit: Sequence[AuditEntry] = (),
                     guards: Sequence[Guard] = (), *,
                     by_system: Sequence[tuple[Change, Record | None]] = (),
                     first: Sequence[Change] = ()) -> None:
        """Write ``changes`` (each with the record's before-image, ``None`` for inserts)
        and one audit entry per change, in a single store operation: the entry of an
        update the store may skip (``only_if`` without ``required``) only if it applied
        (``AuditIfApplied``), so no entry records a change that did not land.
        ``unaudited`` changes (telemetry with a history of its own) ride along in the
        same operation, and so do ``extra_audit`` entries that record actions rather
        than record changes; the operation holds only if ``guards`` do (``Guard``).
        ``by_system``: changes the system makes because of ``viewer``'s act, not as
        theirs (a removal closing the refused sessions left open on what it removes,
        maybe in books the remover cannot see): written in the same operation, audited
        under ``system`` (review r27-accounts2). ``first``: unaudited changes written
        before all the others. A store may apply a write's changes one by one (MongoDB's
        batch), each seen by other writers as it lands: what guards another's write
        against this one's effect (a card number's freeing against an issue of the card
        it deletes) must be there before that effect (review r32-c)."""
        now = utcnow()
        audit = [*await self._entries(viewer, changes, now),
                 *await self._entries(SYSTEM, by_system, now)]
        written = [*first, *(c for c, _ in changes), *(c for c, _ in by_system), *unaudited]
        if guards:
            await self.store.write(written, [*audit, *extra_audit], guards)
        else:
            await self.store.write(written, [*audit, *extra_audit])
        for listener in self.ctx.committed:
            listener([*(c for c, _ in changes), *(c for c, _ in by_system)])

    async def _entries(self, viewer: Viewer,
                       changes: Sequence[tuple[Change, Record | None]],
                       now: datetime) -> list[Audit]:
        """The audit entries of ``changes`` made by ``viewer`` (``commit``)."""
        if not changes:
            return []
        whose = await self._whose(changes, viewer)
        audit: list[Audit] = []
        for change, before in changes:
            record = change.record
            removal = isinstance(change, Delete) or _removes(before, record)
            if isinstance(change, Insert):
                action = AuditAction.CREATE
            elif removal:
                action = AuditAction.DELETE
            else:
                action = AuditAction.UPDATE
            entry_of = whose.get(record.id, NOBODY)
            entry = AuditEntry(
                entity=record.kind,
                entity_id=record.id,
                action=action,
                actor=viewer.actor,
                at=_entry_at(now, change, before),
                created_at=now,
                updated_at=now,
                created_by=viewer.actor,
                updated_by=viewer.actor,
                before=snapshot(before) if before is not None else None,
                after=None if removal else audit_after(before, record),
                company_id=entry_of.company_id,
                station_owner_id=entry_of.station_owner_id,
                holder_id=entry_of.holder_id,
            )
            if isinstance(change, Update) and change.only_if is not None \
                    and not change.required:
                audit.append(AuditIfApplied(entry, change))
            else:
                audit.append(entry)
        return audit

    async def _whose(self, changes: Sequence[tuple[Change, Record | None]],
                     viewer: Viewer) -> dict[str, Whose]:
        """Whose each audited change is (``Whose``), by record id: the record's books and
        person as they were before the change (a station's hand-over, a person's move
        to another company, a car's new owner stay with those they leave, who keep
        their history), or, where it then had none (a new record, one joining a
        company), as they are after it. Books that are not the record's own are
        looked up at write time, not when the entry is read: a card's or a car's are
        its holder's company, a connector's or a station's tariff its station's
        (``books_of``); a reservation's are its own (its history stays with it when its
        station changes hands), or for one written without them its station's. The
        stations and people needed are taken from the write itself where it has them,
        the others read at once (one read of each kind for the whole write)."""
        stations, users = await self._named_by(changes)
        whose: dict[str, Whose] = {}
        for change, before in changes:
            after = _whose_of(change.record, stations, users)
            then = _whose_of(before, stations, users) if before is not None else NOBODY
            books = then.books if then.books != NO_BOOKS else after.books
            holder = then.holder_id or after.holder_id
            if before is not None and holder is not None and holder == viewer.user_id \
                    and _holder_private_change(before, change.record):
                # Its company's operators would read that, and when, the holder changed
                # what they may not see (a car's battery: verify s21). One of them who
                # changed it keeps it in the books (review s21).
                books = NO_BOOKS
            whose[change.record.id] = Whose(*books, holder)
        return whose

    async def _named_by(self, changes: Sequence[tuple[Change, Record | None]]
                        ) -> tuple[dict[str, Station], dict[str, User]]:
        """The stations and people whose books the changed records take (``_whose_of``),
        by id: as the write has them before it, the others as stored now."""
        stations: dict[str, Station] = {}
        users: dict[str, User] = {}
        for change, before in changes:
            record = before or change.record  # as it was before this write
            if isinstance(record, Station):
                stations[record.id] = record
            elif isinstance(record, User):
                users[record.id] = record
        wanted_stations: set[str] = set()
        wanted_users: set[str] = set()
        for change, before in changes:
            for image in (before, change.record):
                if isinstance(image, Connector | Tariff) or (
                        isinstance(image, Reservation) and _own_books(image) is None):
                    if image.station_id is not None:
                        wanted_stations.add(image.station_id)
                elif isinstance(image, IdTag | Vehicle):
                    wanted_users.add(_holder(image))
        if wanted_stations - stations.keys():
            stations.update((st.id, st) for st in await self.store.get_many(
                Station, sorted(wanted_stations - stations.keys())) if st is not None)
        if wanted_users - users.keys():
            users.update((u.id, u) for u in await self.store.get_many(
                User, sorted(wanted_users - users.keys())) if u is not None)
        return stations, users


def _removes(before: Record | None, after: Record) -> bool:
    """Whether a change removes a record that stays as history (``Vehicle.removed_at``
    set): it is audited as the removal it is to its owner, a DELETE with the record as
    it was, as when cars were deleted; the record itself stays for what refers to it."""
    return before is not None and getattr(before, "removed_at", None) is None \
        and getattr(after, "removed_at", None) is not None


def _holder_private_change(before: Record, after: Record) -> bool:
    """Whether a change of a record whose private fields only its holder reads
    (``HOLDER_PRIVATE_KINDS``) changed nothing else: an entry of the holder's alone."""
    if after.kind not in HOLDER_PRIVATE_KINDS:
        return False
    changed = {f.name for f in dataclasses.fields(after)
               if getattr(before, f.name) != getattr(after, f.name)} - STAMPS
    return bool(changed) and changed <= PRIVATE_FIELDS[after.kind]


def _holder(record: IdTag | Vehicle) -> str:
    return record.user_id if isinstance(record, IdTag) else record.owner_id


def _whose_of(record: Record, stations: dict[str, Station], users: dict[str, User]
              ) -> Whose:
    """Whose ``record`` is as this image of it says (``Service._whose``); the stations
    and people it names as the write found them."""

    def station_books(station_id: str | None) -> tuple[str | None, str | None]:
        station = stations.get(station_id) if station_id is not None else None
        return books_of(station) if station is not None else NO_BOOKS

    def company_of(user_id: str) -> str | None:
        person = users.get(user_id)
        return person.company_id if person is not None else None

    match record:
        case Station():
            return Whose(*books_of(record))
        case Reservation():
            return Whose(*(_own_books(record) or station_books(record.station_id)),
                         record.user_id)
        case Session() | Payment() | Refund():
            # Their own books, recorded when they happened.
            return Whose(record.company_id, record.station_owner_id, record.user_id)
        case User():
            return Whose(record.company_id, None, record.id)
        case IdTag() | Vehicle():
            holder = _holder(record)
            return Whose(company_of(holder), None, holder)
        case Connector():
            return Whose(*station_books(record.station_id))
        case Tariff():
            return Whose(record.company_id, None) if record.company_id is not None \
                else Whose(*station_books(record.station_id))
        case Site():
            # Its company's operators read its history, also once it is removed.
            return Whose(record.company_id)
        case Webhook():
            # Its operators read its history (who changed its URL, who disabled it), as
            # they manage it: a company's, or, of no company, its owner's.
            return Whose(record.company_id, None if record.company_id else record.owner_id)
        case Company():
            return Whose(record.id)
        case _:
            return NOBODY


def _own_books(reservation: Reservation) -> tuple[str | None, str | None] | None:
    """The books a reservation was made in, ``None`` for one written without them."""
    books = (reservation.company_id, reservation.station_owner_id)
    return None if books == NO_BOOKS else books


def charger(cp_id: str) -> Viewer:
    """The audit actor for changes a charger causes."""
    return Viewer(user_id=f"ocpp:{cp_id}")


#: Keys stored beside a field and written whenever it is (source field, key field, the
#: function of the source's value): what a list in that field's order sorts by, or a
#: unique rule compares. Kept here, where every new record is stamped and every edit
#: patched, so no use case can write a name and leave its key behind (the stations a
#: charger registers itself too).
DERIVED_KEYS: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("name", "name_key", v.name_key),
    # What company names are unique by, in the store: a check before the write let two
    # creations at once through (review r2).
    ("name", "name_identity", v.name_identity),
    # A charger's configuration key is one whatever its case (``ConfigurationKey``).
    ("key", "folded_key", folded_key),
    # A station's cpId too (``Station.cp_id_key``).
    ("cp_id", "cp_id_key", v.cp_id_key))


def stamp_new(record: E, viewer: Viewer, now: datetime | None = None) -> E:
    """``record`` made by ``viewer`` now: the audit stamps, and its derived keys."""
    now = now or utcnow()
    record.created_at = record.updated_at = now
    record.created_by = record.updated_by = viewer.actor
    for source, key, make in _derived_keys(type(record)):
        setattr(record, key, make(getattr(record, source)))
    return record


def no_case_twin(station: Station) -> Guard:
    """What a new ``station``'s insert is guarded by: no other station has its cpId
    whatever the case (``Station.cp_id_key``). Not a unique index (stations stored before
    cpIds were one whatever their case may differ only in it), so a read before the
    write is not enough: another instance's insert of a twin between the read and the
    write (createStation, or a charger's auto-registration) fails this one CHANGED.
    Another than this one: the guard sees the write's own insert."""
    return Guard(Station, all_of(Eq("cp_id_key", station.cp_id_key),
                                 any_of(Range("id", lt=station.id),
                                        Range("id", gt=station.id))), exists=False)


#: How long after it was stamped a station found may still be another's insert in flight,
#: which its rollback would take away: a MongoDB batch lasts at most its deadline (half a
#: minute), and one whose writer died is rolled back by the next sweep once stale (the
#: MongoDB store's ``journal.STALE_AFTER`` plus ``SWEEP_EVERY_S``: three minutes; a test
#: holds this above them), with room for instances' clocks to differ. An older one stood
#: committed long ago.
INSERT_IN_FLIGHT_FOR = timedelta(minutes=10)


async def committed(store: Store, station: Station | None, now: datetime
                    ) -> Station | None:
    """``station`` (a twin found by cpId) as committed (``Store.get_committed``): ``None``
    when the write that stored it was rolled back, as a batch in flight on MongoDB may
    yet be (its reads see it). ``Conflict`` CHANGED when that write is still in flight
    after the store's wait: the caller's write is tried again (``retried``). A store
    whose reads see no write in flight (SQLite, ``Store.reads_in_flight``) read it so,
    and a station created before ``INSERT_IN_FLIGHT_FOR`` is no insert in flight: neither
    is read again (review r29: every handshake of a known charger read its station
    twice on MongoDB, and waited out any write in flight on it, a disconnect's, up to
    failing)."""
    if (station is None or not store.reads_in_flight
            or station.created_at < now - INSERT_IN_FLIGHT_FOR):
        return station
    [stored] = await store.get_committed(Station, [station.id])
    return stored


STAMPS = frozenset({"updated_at", "updated_by"})


def patch(record: E, viewer: Viewer, *, only_if: tuple[str, Any] | None = None,
          required: bool = False, **updates: Any) -> Update:
    """An ``Update`` writing only ``updates`` (those not ``UNSET``, the keys derived from
    them, and the stamps) onto the stored record, so a change made meanwhile to another
    field stays; ``only_if`` and ``required``: see ``Update``."""
    return Update(changed(record, viewer, **updates), _written(record, updates) | STAMPS,
                  only_if, required)


async def pages(store: Store, kind: type[E], where: Filter, size: int,
                newest_by: str | None = None) -> AsyncIterator[list[E]]:
    """Every record of ``kind`` matching ``where``, a page of at most ``size`` at a time
    in id order, or newest ``newest_by`` first (``newest_first``) when given
    (``find_all`` stops at its limit; a caller may stop early). Writes between pages
    that change neither ids nor that field keep the paging exact."""
    order = [Sort("id")] if newest_by is None else list(newest_first(newest_by))
    last: E | None = None
    while True:
        page = await store.find_all(kind, all_of(where, _past(last, newest_by)), order,
                                    limit=size)
        if page:
            yield page
        if len(page) < size:
            return
        last = page[-1]


def _past(record: Record | None, newest_by: str | None) -> Filter | None:
    """The records after ``record`` in ``pages``' order (``None``: from the first)."""
    if record is None:
        return None
    if newest_by is None:
        return Range("id", gt=record.id)
    # Not "before it, or at it with a smaller id": SQLite takes such an OR as two index
    # reads sorted whole, every page (a table of 100,000 read in 20 s, not 2).
    value = getattr(record, newest_by)
    return all_of(Range(newest_by, lte=value),
                  any_of(Range(newest_by, lt=value), Range("id", lt=record.id)))


async def sweep_expired(store: Store, kind: type[E], expired: Filter, unchanged: str,
                        batch: int, *, oldest_by: str) -> int:
    """Deletes the records of ``kind`` matching ``expired``, ``batch`` at a time, each
    only while its field ``unchanged`` holds what was read (one renewed meanwhile stays,
    as does one another instance swept first); how many. A housekeeping round's
    (``IdempotencyService.sweep``, ``known_addresses.sweep``). ``oldest_by``: the indexed
    field ``expired`` bounds from above, each batch read in its order: by its index, from
    the oldest, stopping at the batch's end (in id order SQLite walked the id index
    through the whole table for the round's last batch: review r32-g)."""
    deleted = 0
    oldest = (Sort(oldest_by),)
    while found := await store.find_all(kind, expired, oldest, limit=batch):
        gone = [Delete(r, only_if=(unchanged, getattr(r, unchanged))) for r in found]
        try:
            await store.write(gone, [])
            deleted += len(gone)
        except (Conflict, NotFound):
            for one in gone:  # one of them renewed or swept meanwhile
                with contextlib.suppress(Conflict, NotFound):
                    await store.write([one], [])
                    deleted += 1
        if len(found) < batch:
            break
    return deleted


def not_erased(user_id: str) -> Guard:
    """A write giving something to a person (a car, a card, a station, a session) holds
    only while they are not erased: their erasure may land on another instance between
    the read of them and the write (guarded the other way: ``erasure``)."""
    return Guard(User, all_of(Eq("id", user_id), Eq("erased_at", None)))


def still_active(user_id: str) -> Guard:
    """``not_erased``, and still active: a write judged on its person being active (a
    live start Accepted) holds only while no deactivation landed since the read, here or
    on another instance (session 33: one between the card's check and the session's
    write was answered Accepted)."""
    return Guard(User, all_of(not_erased(user_id).condition(), Eq("active", True)))


#: What makes a session hold its card and car: open, and not refused at its start.
_HOLDS_ITS_CARD = all_of(Eq("state", SessionState.ACTIVE), Eq("start_refused", None))


def holding_card(tag: str, begun_by: datetime | None = None) -> Filter:
    """The sessions that hold a card, so that a start of it elsewhere is told
    ``ConcurrentTx`` (and a remote start of it is refused): open, and not refused at their
    start (``Session.start_refused``). A session the CSMS itself refused (ConcurrentTx,
    Blocked, …) that its charger never stops held the card for good: the driver's next
    start, after the session accepted in its place had ended, was told ConcurrentTx
    because of it (review r26). ``begun_by``: only those begun by then held it at a
    start stamped so, replayed from an offline queue: a session of the card begun later
    on another charger made the one charged hours before ConcurrentTx, recorded refused
    and billed nothing (QA s32)."""
    return all_of(Eq("id_tag", tag), _HOLDS_ITS_CARD,
                  None if begun_by is None else Range("start_time", lte=begun_by))


def holding_car(vehicle_id: str) -> Filter:
    """The sessions that hold a car (its driver's remote start of it is refused "this car
    is charging now", its removal "charging right now"): those booked to it that hold
    their card (``holding_card``'s rule: open, not refused at their start). A refused
    session its charger never stopped, booked to the car, refused the driver's remote
    start of it IN_USE for good, though a StartTransaction of the card was Accepted
    (review r26-tx2)."""
    return all_of(Eq("vehicle_id", vehicle_id), _HOLDS_ITS_CARD)


def touch(record: E, **updates: Any) -> Update:
    """An ``Update`` of telemetry (a station's ``last_seen``, ``booted_at``) that is no
    change to the record: ``patch`` without the update stamps, which stay. They are
    shown to whoever sees the record, and moved by every heartbeat they told the public
    map each charger's rhythm of contact, a private field's (``last_seen``; QA s20)."""
    return Update(_replaced(record, updates), _written(record, updates))


def changed(record: E, viewer: Viewer, **updates: Any) -> E:
    """A copy of ``record`` with the given (non-UNSET) fields replaced and the update
    stamps set. The original stays untouched as the audit before-image."""
    copy = _replaced(record, updates)
    # A new version, always: ``updated_at`` is the version an edit is guarded on
    # (``edits.edit``), and MongoDB keeps it to the millisecond; a change in the same
    # millisecond as the one before (a record made and edited at once) read as the same
    # version, and an edit on the older read landed on it (its before-image stale).
    copy.updated_at = max(utcnow(), _next_version(record.updated_at))
    copy.updated_by = viewer.actor
    return copy


def _entry_at(now: datetime, change: Change, before: Record | None) -> datetime:
    """When an audit entry says its change happened: the version it wrote
    (``updated_at``, a millisecond past the one before at least: ``changed``), so a
    record's entries in time order are its versions in order, even two written in one
    millisecond on two instances (verify s21: listed the other way round, their images
    did not chain). A removal, or a write that stamped no new version: ``now``, past
    the version it replaced."""
    if before is None:
        return change.record.updated_at if isinstance(change, Insert) else now
    written = change.record.updated_at
    if not isinstance(change, Delete) and written > before.updated_at:
        return written
    return max(now, _next_version(before.updated_at))


def _next_version(updated_at: datetime) -> datetime:
    """The least ``updated_at`` after ``updated_at`` that every store tells apart from it
    (the next millisecond)."""
    return updated_at.replace(microsecond=updated_at.microsecond // 1000 * 1000) \
        + _MILLISECOND


_MILLISECOND = timedelta(milliseconds=1)


def _written(record: Record, updates: dict[str, Any]) -> frozenset[str]:
    """The fields an update of ``updates`` writes: those given (not ``UNSET``) and the
    keys derived from them."""
    given = frozenset(key for key, value in updates.items() if value is not UNSET)
    return given | frozenset(key for source, key, _ in _derived_keys(type(record))
                             if source in given)


def _replaced(record: E, updates: dict[str, Any]) -> E:
    """A copy of ``record`` with the given (non-UNSET) fields replaced and the keys
    derived from them. Like ``dataclasses.replace`` (unknown fields are a ``TypeError``)
    without re-running ``__init__``: entities have no ``__post_init__`` and every field
    is set already, and replace's generic path was a tenth of a MeterValues frame's
    cost."""
    names = _field_names(type(record))
    copy = object.__new__(type(record))
    copy.__dict__.update(record.__dict__)
    for key, value in updates.items():
        if value is UNSET:
            continue
        if key not in names:
            raise TypeError(f"{type(record).__name__} has no field {key!r}")
        copy.__dict__[key] = value
    for source, key, make in _derived_keys(type(record)):
        value = updates.get(source, UNSET)
        if value is not UNSET:
            copy.__dict__[key] = make(value)
    return copy


_FIELD_NAMES: dict[type[Record], frozenset[str]] = {}
_DERIVED: dict[type[Record], tuple[tuple[str, str, Callable[[Any], Any]], ...]] = {}


def _derived_keys(kind: type[Record]) -> tuple[tuple[str, str, Callable[[Any], Any]], ...]:
    """(source, key, function) for each of ``DERIVED_KEYS`` that ``kind`` stores both
    fields of; found once per kind (``changed`` is on the charger's hot path)."""
    found = _DERIVED.get(kind)
    if found is None:
        names = _field_names(kind)
        found = _DERIVED[kind] = tuple(
            (source, key, make) for source, key, make in DERIVED_KEYS
            if source in names and key in names)
    return found


def _field_names(kind: type[Record]) -> frozenset[str]:
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = _FIELD_NAMES[kind] = frozenset(f.name for f in dataclasses.fields(kind))
    return names
