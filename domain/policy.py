"""Who may see and change what (DESIGN.md section 3). The only place these rules live.

Every read in the domain goes through ``Policy.scope``: the scope is a ``domain.query``
filter that the store ANDs into the same database query, so list fields, nested fields,
``node(id:)``, batch loads, analytics and subscription filters all obey one rule set.
A hidden record reads exactly like a missing one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from domain.clock import utcnow
from domain.command_rules import without_secret_value
from domain.entities import (
    LIVE_RESERVATION_STATES,
    AuditAction,
    AuditEntry,
    Record,
    Registration,
    Role,
    Station,
    User,
    Vehicle,
    Webhook,
    without_url_credentials,
)
from domain.errors import Forbidden
from domain.events import (
    CommandCompleted,
    ConnectorStatusChanged,
    DomainEvent,
    PaymentChanged,
    ReservationChanged,
    SessionChanged,
    StationConnectionChanged,
    StationSightChanged,
)
from domain.query import (
    ALL,
    NONE,
    And,
    Eq,
    Filter,
    In,
    NotSub,
    Or,
    Range,
    Search,
    Sort,
    Sub,
    all_of,
    any_of,
)
from domain.validation import Checks

#: Fields only the viewers of a record's private view (``sees_*_private``) may read. A
#: filter or sort key on one matches only such records: otherwise it would tell what the
#: field hides (an email guessed a letter at a time by search, a role by filtering on
#: it, an email in the cursor of a list sorted by it).
PRIVATE_FIELDS: dict[str, frozenset[str]] = {
    # When a person's record last changed tells when they changed a private field (a
    # deactivation, a new email, a new battery): ``updatedAt`` reads ``createdAt`` in
    # their reduced views, and sorting by it is theirs only too.
    "user": frozenset({"email", "role", "active", "company_id", "created_by",
                       "updated_by", "updated_at", "erased_at"}),
    # Not ``removed_at``: shown in the private view only (``graph.nodes.Vehicle``), but
    # the garage's own filter (``fleet.IN_GARAGE``) reads it for every viewer, and no
    # client filters or sorts by it.
    "vehicle": frozenset({"battery_kwh", "created_by", "updated_by", "updated_at"}),
    "station": frozenset({"owner_id", "company_id", "registration", "vendor", "model",
                          "serial", "firmware", "firmware_status", "diagnostics_status",
                          "last_seen", "created_by", "updated_by", "site_id",
                          "heartbeat_interval", "firmware_status_at",
                          "diagnostics_status_at", "firmware_requested_at",
                          "firmware_location", "firmware_retrieve_date",
                          "diagnostics_requested_at", "diagnostics_file_name",
                          "diagnostics_previous_uploading",
                          "configuration_truncated", "site_fallback_kw"}),
    # Whose books: who ran the station then, which a driver is not told of any station.
    "session": frozenset({"company_id", "station_owner_id"}),
    "status_event": frozenset({"company_id", "station_owner_id"}),
    "connector_interval": frozenset({"company_id", "station_owner_id"}),
    "connection_event": frozenset({"company_id", "station_owner_id"}),
    "payment": frozenset({"company_id", "station_owner_id"}),
    "refund": frozenset({"company_id", "station_owner_id"}),
    "reservation": frozenset({"company_id", "station_owner_id"}),
}

#: The fields of an audited record that name who holds it, by kind: field -> the kind
#: it names. An entry of a hand-over (a car given to another driver, a station to another
#: company) holds both sides' ids, and whoever reads it sees each only if they see the
#: record it names (``Policy.audit_references``, ``audit_snapshot``'s ``seen``): a car's
#: former owner is not told its new owner's id, as the car's own read does not tell them.
AUDIT_REFERENCES: dict[str, dict[str, str]] = {
    "vehicle": {"owner_id": "user"},
    "id_tag": {"user_id": "user"},
    "station": {"owner_id": "user", "company_id": "company", "site_id": "site"},
    "tariff": {"company_id": "company"},
    "site": {"company_id": "company"},
    "user": {"company_id": "company"},
    "webhook": {"owner_id": "user", "company_id": "company"},
}

#: Records an audit image names that the viewer sees, by kind: ids (``audit_snapshot``).
Seen = Mapping[str, Collection[str]]

#: Kinds whose private fields only their holder (and admins) read (``private_view``): a
#: change of nothing else is written in no company's books (``base._whose``).
HOLDER_PRIVATE_KINDS = frozenset({"vehicle"})

#: Kinds recorded in the books of whoever ran their station when they happened.
BOOKED_KINDS = frozenset({"session", "payment", "refund", "reservation"})


#: Kinds of record a person holds (``AuditEntry.holder_id``) and reads as an operator too:
#: their account, their cards and their cars.
_HELD_KINDS = ("user", "id_tag", "vehicle")

#: Audit actions that change a record (``COMMAND`` records an action instead).
RECORD_CHANGES = (AuditAction.CREATE, AuditAction.UPDATE, AuditAction.DELETE)

#: Nested lists whose records are seen by whoever sees their parent: (kind, key field)
#: -> the parent's kind (``Policy.scope_under``). A session's samples follow the session,
#: which follows the books it went to (``Session.company_id``): the operator who keeps a
#: session's books after its station passed to another company still draws its charging
#: curve, and the station's new operator, who does not see the session, sees none of it
#: through it (the ``meter_sample`` scope says the same for samples read on their own,
#: as analytics read them; a session's own list asks its parent's scope, one lookup).
#: A session's signed meter values (``signed_meter_value``) are its meter's readings too,
#: seen exactly as its samples are. A payment's refunds (``Payment.refunds``) are its
#: ledger: seen exactly by whoever sees the payment, whatever the refund records say.
FOLLOW_PARENT: dict[tuple[str, str], str] = {("meter_sample", "session_id"): "session",
                                             ("signed_meter_value", "session_id"): "session",
                                             ("refund", "payment_id"): "payment"}


#: What the map shows (signed out, and to drivers): stations an operator accepted and
#: their connectors, and every tariff. Not a station that registered itself
#: (``CHARGEGRAPH_AUTO_REGISTER``) and nobody accepted: any client that reaches the OCPP
#: port could put "available" chargers on the drivers' map. Connectors by the complement
#: of the few stations not accepted (a short list for MongoDB, not one of every station).
_NOT_ACCEPTED = In("registration", (Registration.PENDING, Registration.REJECTED))
_ON_MAP: dict[str, Filter] = {
    "station": Eq("registration", Registration.ACCEPTED),  # and ``Policy.sees``: together
    "connector": NotSub("station_id", "station", _NOT_ACCEPTED),
    # Company-wide prices, and those of stations that exist: a removed station's are
    # kept as its sessions' price history, for those who keep their books.
    "tariff": any_of(Eq("station_id", None), Sub("station_id", "station", ALL)),
}


def live_reservations(now: datetime) -> Filter:
    """Reservations holding (or that may hold) their plug at ``now``: PENDING or ACTIVE
    and not expired, whether or not the sweep has stored it yet. The filter form of
    ``Reservation.state_at``; every service passes its own clock's now."""
    return all_of(In("state", LIVE_RESERVATION_STATES), Range("expires_at", gt=now))


def metered_on(stations: Filter) -> Filter:
    """Meter samples of ``stations``: by cpId (indexed) and by the station that metered
    them, for a cpId that passed from a removed station to a new one."""
    return all_of(Sub("cp_id", "station", stations, select="cp_id"),
                  any_of(Eq("station_id", None), Sub("station_id", "station", stations)))


#: Kinds no read shows anyone, admins included: sign-in credentials, used only by
#: ``AccountService``/``RefreshTokenService`` straight from the store; and the clients'
#: idempotency keys (the answers they keep are their users' alone), used only by
#: ``IdempotencyService``; and where stations' chargers passed their password check from
#: (``ChargingService``'s known addresses); and the card numbers freed lately
#: (``freed_tags``).
CREDENTIAL_KINDS = frozenset({"refresh_family", "refresh_token", "idempotency_key",
                              "known_charger_address", "freed_id_tag"})


@dataclass(frozen=True, slots=True)
class Viewer:
    """The resolved caller of one request or subscription."""

    user_id: str | None = None
    role: Role | None = None
    company_id: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.user_id is None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    @property
    def is_driver(self) -> bool:
        return self.role is Role.DRIVER

    @property
    def actor(self) -> str:
        """The audit actor for changes this viewer makes."""
        return self.user_id or "anonymous"

    @classmethod
    def of(cls, user: User) -> Viewer:
        return cls(user_id=user.id, role=user.role, company_id=user.company_id)


ANONYMOUS = Viewer()
#: The service itself (seeding, OCPP side effects): sees everything, audited as ``system``.
SYSTEM = Viewer(user_id="system", role=Role.ADMIN)


def refuse_unless_staff(viewer: Viewer, what: str, checks: Checks | None = None) -> None:
    """A use case only operators and admins make, refused to anyone else before anything
    is checked or read: a refusal of who they are, whatever they sent, so ``FORBIDDEN``
    with no field, first and alone (README, Errors). A refusal of one value sent (a
    record of another company, a status only staff set) names that input instead (QA
    s30: a driver was told on ``id``, ``cpId`` or ``stationId``, by the check of the
    record named, or ``NOT_FOUND`` for a record they do not see).

    ``checks``: what the door checked of the input (its ids, ``checked_id``) for a use
    case with nothing of its own to check, raised once the caller passed: a malformed
    id sent by a driver was answered INVALID_ID, not refused (review s30)."""
    refuse_unless(viewer.is_operator or viewer.is_admin, f"only operators and admins {what}",
                  checks)


def refuse_unless(allowed: bool, message: str, checks: Checks | None = None) -> None:
    """``refuse_unless_staff`` for any rule about who the caller is (``eraseUser``: only
    admins)."""
    if not allowed:
        raise Forbidden(message)
    if checks is not None:
        checks.done()


class Booked(Protocol):
    """What went to someone's books (``base.books_of``): a session, a payment, a session's
    pricing (``PricedAt``)."""

    @property
    def company_id(self) -> str | None: ...

    @property
    def station_owner_id(self) -> str | None: ...


class Policy:
    """Scopes and permissions for viewers. ``public_map`` allows anonymous viewers to see
    the public station view (name, location, connectors and their live status)."""

    def __init__(self, *, public_map: bool = False) -> None:
        self.public_map = public_map

    # ---------------------------------------------------------------- read scopes
    def scope(self, viewer: Viewer, kind: str) -> Filter:
        """The filter every read of ``kind`` by ``viewer`` is ANDed with. Its "station"
        branches (admin, operator, driver, the map) are restated on one station held by
        ``sees``: they change together."""
        if kind in CREDENTIAL_KINDS:
            return NONE
        if viewer.is_admin:
            return ALL
        if kind == "webhook":
            return self.webhook_scope(viewer)
        if viewer.anonymous:
            return self._public_scope(kind) if self.public_map else NONE
        if viewer.is_operator:
            return self._operator_scope(viewer, kind)
        if viewer.is_driver:
            return self._driver_scope(viewer, kind)
        return NONE

    @staticmethod
    def theirs(viewer: Viewer, kind: str) -> Filter:
        """Within a driver's scope of ``kind``, the records that are their own: all of it,
        but for cars, whose scope also takes the cars of their own sessions (a car handed
        to another owner since, in its reduced view: for their sessions' ``vehicle`` and
        ``node(id:)`` only); theirs are those they own, their garage. What the top-level
        ``vehicles`` list shows a driver (their apps pick the car of a remote start from
        it, where a car not theirs answers ``NOT_FOUND``) and a person's copy of their
        data holds ("theirs and nobody else's": review r28-org, a handed-over car was
        exported as its former driver's, with its new owner's battery). ``ALL`` for the
        other roles, whose lists are their scopes. A branch of the scope it narrows, so
        ANDed with it the read is this filter alone (``all_of`` absorbs the scope): one
        indexed condition, without the sessions' sub-select, a ``$lookup`` on MongoDB."""
        if kind == "vehicle" and viewer.is_driver and viewer.user_id is not None:
            return Eq("owner_id", viewer.user_id)
        return ALL

    def scope_under(self, viewer: Viewer, kind: str, key_field: str, keys: Sequence[Any],
                    seen: str | None = None) -> Filter:
        """The scope of ``kind`` listed under its parents, the records whose ``key_field``
        is one of ``keys`` (a nested list of the graph): the kind's own scope, except where
        ``FOLLOW_PARENT`` says the records are seen by whoever sees their parent.

        ``seen``: the caller states that ``keys`` are ids of records of that kind it read
        through this viewer's scope of it in this request (and ``sees``, the record form,
        holds for each: a mutation's payload was not read through it, and may be a
        record it just removed). The conditions of the scope that
        only say "its parent is visible" (a connector's "on a station I run", a driver's
        "not on a station nobody accepted", a tariff's "of a station that exists") then
        hold for every record under those keys and are dropped: one plain filter on the
        keys instead of the parent's rule again as a sub-select (a ``$lookup`` on
        MongoDB) per batch. What else the scope says stays (a station's sessions are
        still those in the viewer's books; its configuration still none for a driver).

        Whatever ``seen``, a condition of the scope that the keys decide is decided: under
        one key, "its ``key_field`` is that key" holds (an operator's company-wide prices
        under their company: ``Station.tariff``'s fallback asks no station sub-select)."""
        if seen is not None:
            return _given_seen(self.scope_under(viewer, kind, key_field, keys), key_field,
                               seen, self.scope(viewer, seen))
        parent = FOLLOW_PARENT.get((kind, key_field))
        if parent is None or viewer.is_admin:
            return _given_keys(self.scope(viewer, kind), key_field, keys)
        # The parents among ``keys`` this viewer sees: a sub-select of a handful of ids
        # (all of an operator's sessions would be a long list for MongoDB's ``$in``).
        return Sub(key_field, parent, all_of(self.scope(viewer, parent),
                                             In("id", tuple(keys))))

    @staticmethod
    def _public_scope(kind: str) -> Filter:
        # The map: every accepted station's public view and its connectors' live status.
        return _ON_MAP.get(kind, NONE)

    def operator_stations(self, viewer: Viewer) -> Filter:
        """Stations an operator runs: every station of their company, and their own among
        the stations of no company. A company's station is the company's, whoever is
        named its owner: an owner who moved to another company, or a station handed to
        another company, must not leave them running it (as ``books_of`` decides)."""
        if viewer.user_id is None:
            return NONE
        own: Filter = all_of(Eq("owner_id", viewer.user_id), Eq("company_id", None))
        if viewer.company_id is None:
            return own
        return any_of(own, Eq("company_id", viewer.company_id))

    def _operator_scope(self, viewer: Viewer, kind: str) -> Filter:
        stations = self.operator_stations(viewer)
        on_stations: Filter = Sub("station_id", "station", stations)
        # Sessions and payments by whose books they went to when they happened
        # (``base.books_of``), not by who runs their station now: the books stay
        # with the operator after the station is removed or handed to another company,
        # and a new operator does not see the drivers who charged under the old one.
        books: Filter = any_of(
            Eq("station_owner_id", viewer.user_id),
            Eq("company_id", viewer.company_id) if viewer.company_id else NONE)
        match kind:
            case "station":
                # Restated on one station held by ``sees`` (and ``_ON_MAP``'s for drivers
                # and the map): the two change together, which
                # ``test_lists_under_stations_seen_are_the_scope_s`` checks.
                return stations
            case "session" | "payment" | "refund":
                # A refund is in its payment's books: who collected pays back.
                return books
            case "reservation":
                # Reservations too stay in the books they were made in; one still live
                # is also its station's current operators': they run the charger holding
                # its plug, and must be able to cancel it.
                # Live on the wall clock, as a request's own "now" is (services pass
                # their own clock's now to ``live_reservations`` where they decide).
                return any_of(books, all_of(live_reservations(utcnow()), on_stations))
            case "status_event" | "connector_interval" | "connection_event":
                # A station's state history by whose books each record went to when it
                # reached us (``StatusEvent.company_id``), as sessions: the company that
                # handed a station over keeps its status reports, its time and its
                # charger's connects and disconnects there, and the new one reads none
                # of them (review r27: ``statusHistory`` showed it the old one's faults
                # and its drivers' charging times; r27-analytics2: ``connectionHistory``
                # its charger's comings and goings).
                return books
            case "connector":
                return on_stations
            case "local_list":
                # As a configuration key (below), by its id, its station's: the table
                # has no station_id index (one row per station).
                return Sub("id", "station", stations)
            case "configuration_key":
                # Its charger's internals, as the station's private view: those who run
                # it (drivers and the map see none: the driver scope has no case).
                return on_stations
            case "meter_sample" | "signed_meter_value":
                # A session's samples follow its books, as the session and its revenue do:
                # the energy of a station handed over mid-history stays with the sessions
                # it was billed in, and samples never name a driver the viewer cannot see.
                # Samples of unknown transactions have no session: scope them by charger,
                # through its cpId index, and by the station that metered them, since a
                # cpId may have passed to a new station (older samples carry none).
                return any_of(Sub("session_id", "session", books),
                              all_of(Eq("session_id", None), metered_on(stations)))
            case "company":
                return Eq("id", viewer.company_id) if viewer.company_id else NONE
            case "site" | "site_allocation":
                # A site is its company's, as its stations are: its operators only (a
                # station of no company joins no site).
                return Eq("company_id", viewer.company_id) if viewer.company_id else NONE
            case "user":
                # Themselves, their company's people, and the drivers of sessions on their
                # stations (the last as a reduced view, see ``sees_user_private``).
                return any_of(
                    Eq("id", viewer.user_id),
                    Eq("company_id", viewer.company_id) if viewer.company_id else NONE,
                    Sub("id", "session", books, select="user_id"),
                )
            case "vehicle":
                return any_of(
                    Eq("owner_id", viewer.user_id),
                    Sub("owner_id", "user", Eq("company_id", viewer.company_id))
                    if viewer.company_id
                    else NONE,
                    Sub("id", "session", books, select="vehicle_id"),
                )
            case "id_tag":
                return any_of(
                    Eq("user_id", viewer.user_id),
                    Sub("user_id", "user", Eq("company_id", viewer.company_id))
                    if viewer.company_id
                    else NONE,
                )
            case "tariff":
                return any_of(
                    Eq("company_id", viewer.company_id) if viewer.company_id else NONE,
                    Sub("station_id", "station", stations),
                )
            case "audit_entry":
                # By whose the changed record was when it changed, recorded on the entry
                # (``AuditEntry.company_id``/``station_owner_id``/``holder_id``, see
                # ``base.Service._whose``), not by who acted: an actor who moves to
                # another company or is demoted takes nothing along, their removals
                # included, and their colleagues read those. Nor by whose the record is
                # now: a company a person or a station moves to does not inherit the
                # old one's history of them (emails, drivers' cards in commands), and the
                # old one keeps it, also once the record is gone.
                return any_of(
                    books,
                    # Their own account, cards and cars, whoever acted, as they read
                    # those records (not their sessions as a driver elsewhere, which are
                    # in another's books and not theirs to read as an operator).
                    all_of(Eq("holder_id", viewer.user_id), In("entity", _HELD_KINDS)),
                    # Entries written before sessions' and payments' recorded books.
                    Sub("entity_id", "session", books),
                    Sub("entity_id", "payment", books),
                    # Records that carry no driver's data are also their current
                    # operators', who run them with that history: a station's own record,
                    # its connectors and its tariffs.
                    all_of(Eq("entity", "station"), In("action", RECORD_CHANGES),
                           Sub("entity_id", "station", stations)),
                    Sub("entity_id", "connector", on_stations),
                    Sub("entity_id", "tariff", Sub("station_id", "station", stations)),
                )
            case _:
                return NONE

    @staticmethod
    def _driver_scope(viewer: Viewer, kind: str) -> Filter:
        me = viewer.user_id
        match kind:
            case "station" | "connector" | "tariff":
                return _ON_MAP[kind]  # the public map and its prices
            case "user":
                return Eq("id", me)
            case "company":
                return Eq("id", viewer.company_id) if viewer.company_id else NONE
            case "vehicle":
                # Their cars, and the cars of their own sessions: a car handed to another
                # owner (``updateVehicle`` ``ownerId``) stays on the sessions its former
                # driver charged with it (QA s28: their history read it as null), seen as
                # an operator of those sessions sees it (plate, make, model: its private
                # view and every change stay its owner's, ``private_view``). Their lists
                # of cars and their copy of their data hold their own only (``theirs``).
                return any_of(Eq("owner_id", me),
                              Sub("id", "session", Eq("user_id", me), select="vehicle_id"))
            case "id_tag" | "session" | "reservation" | "payment" | "refund":
                return Eq("user_id", me)
            case "meter_sample" | "signed_meter_value":
                return Sub("session_id", "session", Eq("user_id", me))
            case "audit_entry":
                # About what was theirs when it changed (``AuditEntry.holder_id``: their
                # account, cards, cars, sessions, reservations, payments), whoever acted,
                # its removal included; not every entry they ever wrote: an operator or
                # admin demoted to driver must not keep reading the people and cards
                # they once managed, nor a car's new owner its former owner's history.
                return Eq("holder_id", me)
            case _:
                return NONE

    # ---------------------------------------------------------------- private fields
    def private_view(self, viewer: Viewer, kind: str) -> Filter:
        """The records of ``kind`` whose private fields ``viewer`` sees: ``sees_*_private``
        as a filter."""
        if viewer.is_admin:
            return ALL
        if viewer.user_id is None:
            return NONE
        if kind == "user":
            return any_of(Eq("id", viewer.user_id),
                          Eq("company_id", viewer.company_id)
                          if viewer.is_operator and viewer.company_id else NONE)
        if kind == "station":
            return self.operator_stations(viewer) if viewer.is_operator else NONE
        if kind == "vehicle":
            return Eq("owner_id", viewer.user_id)
        if kind in BOOKED_KINDS:
            # An operator reads only those in their books (or live reservations on the
            # stations they run); nobody else keeps any.
            return ALL if viewer.is_operator else NONE
        return ALL

    def guard_private(self, viewer: Viewer, kind: str, where: Filter,
                      sort: Sequence[Sort] = (), grouped_by: str | None = None) -> Filter:
        """``where`` with every condition on a private field (and, when ``sort`` or the
        grouping of a batched nested list uses one, the whole query) limited to the
        records whose private view ``viewer`` has."""
        private = PRIVATE_FIELDS.get(kind)
        if not private or viewer.is_admin:
            return where
        view = self.private_view(viewer, kind)
        guarded = _guard(where, private, view)
        if grouped_by in private or any(key.field in private for key in sort):
            guarded = all_of(guarded, view)
        return guarded

    def guard_nested(self, viewer: Viewer, kind: str, where: Filter) -> Filter:
        """``guard_private`` through subqueries too: a condition on a private field of
        the records a ``Sub`` selects ("samples metered on company X's stations") tells
        as much as one on the records themselves. For filters built from what a caller
        asked (analytics), not for scopes."""
        if viewer.is_admin:
            return where
        return self.guard_private(viewer, kind, self._guard_subqueries(viewer, where))

    def _guard_subqueries(self, viewer: Viewer, where: Filter) -> Filter:
        def guarded(condition: Filter) -> Filter:
            match condition:
                case Sub(field, kind, inner, select, joined):
                    return Sub(field, kind, self.guard_nested(viewer, kind, inner), select,
                               joined)
                case NotSub(field, kind, inner, select, joined):
                    # Guarding narrows the sub-select to what the viewer may know, so its
                    # complement grows: "not on company X's stations" matches everything
                    # for a driver, which tells them nothing about company X.
                    return NotSub(field, kind, self.guard_nested(viewer, kind, inner),
                                  select, joined)
                case _:
                    return condition
        return _rewrite_conditions(where, guarded)

    def audit_snapshot(self, viewer: Viewer, entry: AuditEntry,
                       snapshot: dict[str, Any] | None, seen: Seen
                       ) -> dict[str, Any] | None:
        """An audit entry's before or after image as ``viewer`` may read it: without the
        private fields of a kind whose private view they have not of that record (a
        driver reading their own session's entries is not told whose books it went to,
        as no read of the session tells them; an operator reading their company's
        drivers' cars is not told their batteries, as the car's own read does not).
        Without the references to whoever held the record in this image
        (``AUDIT_REFERENCES``) that name a record they do not see: ``seen``, what they
        see of ``audit_references``, looked up by the caller for a page of entries at
        once; so each image, before and after, is judged by who held it then.
        A command's secrets as the rules are now (``without_secret_value``), a record's
        URLs without their credentials (``without_url_credentials``), also in entries
        written before they were hidden."""
        if entry.action is AuditAction.COMMAND:
            snapshot = without_secret_value(snapshot)
        else:
            snapshot = without_url_credentials(entry.entity, snapshot)
        if snapshot is None:
            return None
        hidden: set[str] = set() if self._sees_image_private(viewer, entry) \
            else set(PRIVATE_FIELDS.get(entry.entity, frozenset()))
        for field, kind, ref in self._references(viewer, entry, snapshot):
            if ref not in seen.get(kind, ()):
                hidden.add(field)
        if hidden.isdisjoint(snapshot):
            return snapshot
        return {key: value for key, value in snapshot.items() if key not in hidden}

    def audit_references(self, viewer: Viewer, entries: Iterable[AuditEntry]
                         ) -> dict[str, set[str]]:
        """The records the entries' images name as their holders (``AUDIT_REFERENCES``)
        whose sight by ``viewer`` only a read can tell, by kind: the caller reads them
        through the viewer's scope (one read per kind for a page) and passes those found
        to ``audit_snapshot``."""
        wanted: dict[str, set[str]] = {}
        for entry in entries:
            for image in (entry.before, entry.after):
                if image is not None:
                    for _, kind, ref in self._references(viewer, entry, image):
                        wanted.setdefault(kind, set()).add(ref)
        return wanted

    @staticmethod
    def _references(viewer: Viewer, entry: AuditEntry, image: dict[str, Any]
                    ) -> Iterable[tuple[str, str, str]]:
        """(field, kind, id) of the records ``image`` names as its holders that ``viewer``
        may not see: none for an admin nor in a command's (not a record's image), and
        not themselves nor their own company, which every scope holds."""
        if viewer.is_admin or entry.action is AuditAction.COMMAND:
            return
        for field, kind in AUDIT_REFERENCES.get(entry.entity, {}).items():
            ref = image.get(field)
            if isinstance(ref, str) and not (
                    (kind == "user" and ref == viewer.user_id)
                    or (kind == "company" and ref == viewer.company_id)):
                yield field, kind, ref

    def _sees_image_private(self, viewer: Viewer, entry: AuditEntry) -> bool:
        """``sees_*_private`` for the record an entry is about, as it was then: a
        person's record by the person and books the entry recorded (``holder_id``,
        ``company_id``); other kinds by whether the viewer has any private view."""
        if viewer.is_admin:
            return True
        match entry.entity:
            case "vehicle":
                return entry.holder_id is not None and entry.holder_id == viewer.user_id
            case "user":
                return entry.entity_id == viewer.user_id \
                    or self.may_manage_company(viewer, entry.company_id)
            case kind:
                return self.private_view(viewer, kind) != NONE

    # ---------------------------------------------------------------- live events
    def sees_event(self, viewer: Viewer, event: DomainEvent) -> bool:
        """The subscription-side twin of ``scope``: the same rules, decided on the event's
        ownership snapshot instead of in a store query."""
        if isinstance(event, StationSightChanged):
            # Only to whom the edit changed the station's sight: an admin, or a driver
            # of a station handed over on the map, sees it before and after (nothing
            # changed for them, and no charger went offline).
            now, before = (self.sees_event(viewer, side) for side in event.sides())
            return now and not before if event.joined else before and not now
        if viewer.is_admin:
            return True
        public = isinstance(event, ConnectorStatusChanged | StationConnectionChanged) \
            and event.on_map
        if viewer.anonymous:
            return public and self.public_map
        if isinstance(event, PaymentChanged):  # as payments are read: books, or driver
            return self.in_books(viewer, event.books_company_id,
                                 event.books_station_owner_id) if viewer.is_operator \
                else viewer.is_driver and event.user_id == viewer.user_id
        if viewer.is_operator:
            if isinstance(event, ReservationChanged):
                return self._sees_reservation_event(viewer, event)
            return self.runs(viewer, event.owner_id, event.company_id)
        if viewer.is_driver:
            if public:
                return True
            if isinstance(event, SessionChanged | ReservationChanged):
                return event.user_id == viewer.user_id
            if isinstance(event, CommandCompleted):
                return event.requested_by == viewer.user_id
        return False

    def _sees_reservation_event(self, viewer: Viewer, event: ReservationChanged) -> bool:
        """The reservation scope on the event: in the operator's books, or on a station
        they run now while it is live, and so also its end (used, cancelled, expired,
        rejected: every reservation ends from a live state): they saw it live, and a live
        map must not go on showing it held. An event without books (from a version before
        them) is decided by the station's ownership, as it was then."""
        if event.books_company_id is None and event.books_station_owner_id is None:
            return self.runs(viewer, event.owner_id, event.company_id)
        return self.in_books(viewer, event.books_company_id,
                             event.books_station_owner_id) or self.runs(
            viewer, event.owner_id, event.company_id)

    # ---------------------------------------------------------------- outgoing webhooks
    @staticmethod
    def webhook_scope(viewer: Viewer) -> Filter:
        """Webhooks: admins all; an operator their company's (or, without a company, their
        own of no company, as ``operator_stations`` has it); drivers and anonymous none."""
        if viewer.is_admin:
            return ALL
        if not viewer.is_operator or viewer.user_id is None:
            return NONE
        if viewer.company_id is not None:
            return Eq("company_id", viewer.company_id)
        return all_of(Eq("owner_id", viewer.user_id), Eq("company_id", None))

    @staticmethod
    def may_create_webhook(viewer: Viewer) -> bool:
        return viewer.is_admin or (viewer.is_operator and viewer.user_id is not None)

    @staticmethod
    def webhook_viewer(webhook: Webhook, owner: User | None) -> Viewer | None:
        """Whose eyes a webhook sees events with, decided when each is delivered (the
        owner read then): ``sees_event`` with this viewer is its filter, the rule every
        subscription obeys. None (nothing delivered) once the owner is gone, inactive,
        a driver, or no longer with the webhook's company, so revoking an operator stops
        their webhooks at once. A company's webhook sees what the company sees, also when
        its owner has become an admin since; an admin's (no company) everything, while its
        owner is an admin."""
        if owner is None or not owner.active or owner.role is Role.DRIVER:
            return None
        if webhook.company_id is None:
            if owner.role is Role.ADMIN or owner.company_id is None:
                return Viewer.of(owner)
            return None
        if owner.role is Role.ADMIN or owner.company_id == webhook.company_id:
            return Viewer(user_id=owner.id, role=Role.OPERATOR, company_id=webhook.company_id)
        return None

    @classmethod
    def takes_over_webhook(cls, webhook: Webhook, owner: User | None, enabler: Viewer
                           ) -> bool:
        """Whether enabling ``webhook`` again makes it ``enabler``'s (its events seen with
        their eyes from then on). A company's webhook sees what the company sees whoever
        owns it, so it always does. One of no company sees with its owner's eyes: an
        admin taking over an operator's would send every company's events to the URL
        that operator chose (QA s25: a solo operator's receiver, enabled again by an
        admin who fixed it for them, got every other company's sessions), so an operator
        who can still receive its events keeps theirs. An admin takes over one whose
        owner is an admin, or whose owner can no longer receive its events
        (``webhook_viewer`` is None: deactivated, demoted, erased, the rule that
        disables it as orphaned); otherwise it stayed the orphan's and was disabled
        again at its next event (review s25)."""
        if webhook.company_id is not None or not enabler.is_admin:
            return True
        return owner is None or owner.role is Role.ADMIN \
            or cls.webhook_viewer(webhook, owner) is None

    # ---------------------------------------------------------------- field-level views
    def sees_station_private(self, viewer: Viewer, station: Station) -> bool:
        """Owner, company, hardware details, registration: for those who manage it
        (admins and its operators), one rule with ``may_manage_station``."""
        return self.may_manage_station(viewer, station)

    @staticmethod
    def sees_audit_stamps(viewer: Viewer) -> bool:
        """Who made and last changed a shared record (connectors, tariffs): admins and
        operators, who see only their own stations' and companies' such records (their
        scopes); drivers and the public map are not told who runs a station."""
        return viewer.is_admin or viewer.is_operator

    @classmethod
    def sees_user_private(cls, viewer: Viewer, user: User) -> bool:
        """Email, role, company, activity: for admins, the user, and their company's
        operators (who manage the company). Other operators see the drivers of their
        sessions by name only."""
        return viewer.user_id == user.id or cls.may_manage_company(viewer, user.company_id)

    @staticmethod
    def sees_vehicle_private(viewer: Viewer, vehicle: Vehicle) -> bool:
        """Battery details. Operators of a session see plate, make and model, and the
        owner by name only (the session names its driver anyway)."""
        return viewer.is_admin or viewer.user_id == vehicle.owner_id

    # ---------------------------------------------------------------- permissions
    @staticmethod
    def runs(viewer: Viewer, owner_id: str | None, company_id: str | None) -> bool:
        """Whether an operator runs a station with this owner and company (the record
        form of ``operator_stations``)."""
        if viewer.user_id is None:
            return False
        if company_id is not None:
            return company_id == viewer.company_id
        return owner_id == viewer.user_id

    def sees(self, viewer: Viewer, station: Station) -> bool:
        """The station scope (``scope(viewer, "station")``) on one station held: whether a
        list under it may be asked as under a parent seen (``scope_under``'s ``seen``),
        if it was read through that scope. Of the record's fields alone: it cannot tell
        a station just removed, which the caller must not claim (the graph claims none in
        a mutation: ``Station._under_seen``). False for a station the viewer no longer
        sees (an operator who named another owner of their own station of no company).
        The scope's station branches restate this one: they change together."""
        if viewer.is_admin or viewer.is_operator:
            return self.may_manage_station(viewer, station)
        if viewer.is_driver or (viewer.anonymous and self.public_map):
            return station.registration is Registration.ACCEPTED  # the map: _ON_MAP
        return False

    def runs_station(self, viewer: Viewer, station: Station) -> bool:
        return self.runs(viewer, station.owner_id, station.company_id)

    def may_manage_station(self, viewer: Viewer, station: Station) -> bool:
        return viewer.is_admin or (viewer.is_operator and self.runs_station(viewer, station))

    @classmethod
    def keeps_books(cls, viewer: Viewer, record: Booked) -> bool:
        """Whether the session or payment (or what priced a session) is in the viewer's
        books (see the scope): an admin's are everyone's."""
        return viewer.is_admin or (viewer.is_operator and cls.in_books(
            viewer, record.company_id, record.station_owner_id))

    @staticmethod
    def in_books(viewer: Viewer, company_id: str | None, station_owner_id: str | None
                 ) -> bool:
        """Whether books kept as ``company_id``/``station_owner_id`` (``base.books_of``)
        are the viewer's: their company's, or their own of no company."""
        if viewer.user_id is None:
            return False
        return station_owner_id == viewer.user_id or (
            viewer.company_id is not None and company_id == viewer.company_id)

    @staticmethod
    def may_manage_user(viewer: Viewer, target: User) -> bool:
        """Admins manage everyone; operators the non-admin people of their company."""
        if viewer.is_admin:
            return True
        return (
            viewer.is_operator
            and viewer.company_id is not None
            and target.company_id == viewer.company_id
            and target.role is not Role.ADMIN
        )

    @staticmethod
    def may_manage_company(viewer: Viewer, company_id: str | None) -> bool:
        return viewer.is_admin or (
            viewer.is_operator and company_id is not None and company_id == viewer.company_id
        )

    def may_act_for_user(self, viewer: Viewer, target: User) -> bool:
        """May manage ``target``'s own things (vehicles, id tags)."""
        return viewer.user_id == target.id or self.may_manage_user(viewer, target)

    @staticmethod
    def owns(viewer: Viewer, record: Record, owner_field: str) -> bool:
        return viewer.user_id is not None and getattr(record, owner_field) == viewer.user_id


def _rewrite_conditions(where: Filter, rewrite: Callable[[Filter], Filter]) -> Filter:
    """``where`` with each condition under its ANDs and ORs (not inside a sub-select's
    filter) replaced by ``rewrite``'s, simplified again (``all_of``, ``any_of``): a
    condition rewritten to ``ALL`` drops out of its AND and makes its OR hold. The one walk
    of the policy's filter rewrites (``_given_seen``, ``_given_keys``, the guards)."""
    match where:
        case And(parts):
            return all_of(*(_rewrite_conditions(part, rewrite) for part in parts))
        case Or(parts):
            return any_of(*(_rewrite_conditions(part, rewrite) for part in parts))
        case _:
            return rewrite(where)


def _given_seen(scope: Filter, key_field: str, parent: str, parent_scope: Filter) -> Filter:
    """``scope`` for records whose ``key_field`` names a ``parent`` in ``parent_scope``:
    its conditions that such a parent satisfies whatever it is (it exists, it is in the
    parent scope, it is not in a set the parent scope excludes) replaced by ``ALL``."""
    def decided(condition: Filter) -> Filter:
        match condition:
            case Sub(field, kind, inner, "id", ()) if field == key_field \
                    and kind == parent and inner in (ALL, parent_scope):
                return ALL
            case NotSub(field, kind, inner, "id", ()) if field == key_field \
                    and kind == parent and _disjoint(parent_scope, inner):
                return ALL
            case _:
                return condition
    return _rewrite_conditions(scope, decided)


def _given_keys(scope: Filter, key_field: str, keys: Sequence[Any]) -> Filter:
    """``scope`` for records whose ``key_field`` is one of ``keys``: a condition that
    ``key_field`` equals the only key (not ``None``, which ``In`` matches as no value)
    holds, and is replaced by ``ALL``."""
    def decided(condition: Filter) -> Filter:
        match condition:
            case Eq(field, value) if field == key_field and value is not None \
                    and keys and all(k == value for k in keys):
                return ALL
            case _:
                return condition
    return _rewrite_conditions(scope, decided)


def _disjoint(a: Filter, b: Filter) -> bool:
    """Whether no record matches both (only the case the map needs is known: a field
    equal to a value the other lists none of; anything else is "may overlap")."""
    match a, b:
        case Eq(field, value), In(other, values) if field == other:
            return value not in values
        case _:
            return False


def _guard(where: Filter, private: frozenset[str], view: Filter) -> Filter:
    """Each condition of ``where`` on a ``private`` field ANDed with ``view``; a search
    across public and private fields keeps matching the public ones for everyone."""
    def guarded(condition: Filter) -> Filter:
        match condition:
            case Search(fields, text):
                hidden = tuple(f for f in fields if f in private)
                if not hidden:
                    return condition
                shown = tuple(f for f in fields if f not in private)
                return any_of(Search(shown, text) if shown else NONE,
                              all_of(Search(hidden, text), view))
            case Eq(field) | In(field) | Range(field) | Sub(field) | NotSub(field) \
                    if field in private:
                return all_of(condition, view)
            case _:
                return condition
    return _rewrite_conditions(where, guarded)
