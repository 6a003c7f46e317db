"""List filter and ordering inputs, and their translation into the domain's query language.
The translation is the only thing done here: filtering itself happens in the database."""

from __future__ import annotations

import math
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

import strawberry

from domain import validation as v
from domain.availability import (
    connector_fits,
    connectors_available_now,
    connectors_not_available_now,
    stations_with,
)
from domain.clock import utcnow
from domain.entities import ENTITY_BY_KIND, LIVE_RESERVATION_STATES
from domain.errors import ValidationError
from domain.ids import is_id
from domain.query import DISTANCE, Eq, Filter, In, Near, Range, Search, Sub, all_of, any_of
from graph.enums import (
    AuditAction,
    ConnectorStatus,
    ConnectorType,
    IdTagStatus,
    PaymentStatus,
    ReservationState,
    Role,
    SessionState,
)
from graph.ids import KIND_BY_TYPE, expect_id, from_global_id, stored_actor
from graph.relay import OrderDirection

T = TypeVar("T")


def _id(value: strawberry.ID | None, kind: str, field: str) -> str | None:
    return expect_id(str(value), kind, field) if value is not None else None


def _eq(field: str, value: object) -> Filter | None:
    return Eq(field, value) if value is not None else None


#: Ids one filter list may hold (a page of a console's selection, not a whole network):
#: every list of ids or cpIds in a filter, of lists, analytics, subscriptions and the
#: CSV exports alike (``bounded``). To ask about more, leave the list out: all the
#: records the viewer may see.
MAX_FILTER_IDS = 100
#: What a filter list's description says of its bound.
BOUNDED = (f"at most {MAX_FILTER_IDS} (TOO_LONG; for more, leave the list out: all the "
           "viewer may see)")


def bounded(values: list[T] | None, field: str) -> list[T] | None:
    """A filter's list as given, ``None`` (asks nothing) as ``None``: at most
    ``MAX_FILTER_IDS`` items, else ``TOO_LONG`` on ``field``. The one check of every
    filter list of ids, so none takes any number (QA s26: the analytics filters, the
    energy export and the station feed took any, and handed them all to the store)."""
    if values is not None and len(values) > MAX_FILTER_IDS:
        raise ValidationError(f"at most {MAX_FILTER_IDS} ids", field=field, code="TOO_LONG")
    return values


def global_ids(values: list[strawberry.ID] | None, kind: str, field: str
               ) -> tuple[str, ...] | None:
    """The raw ids of a filter's list of global ids of ``kind`` (``bounded``)."""
    values = bounded(values, field)
    return None if values is None else tuple(expect_id(str(v), kind, field) for v in values)


def _ids(values: list[strawberry.ID] | None, kind: str, field: str) -> Filter | None:
    """``In`` over the listed global ids of ``kind``; an empty list matches nothing."""
    ids = global_ids(values, kind, field)
    return None if ids is None else In(f"{kind}_id", ids)


def _cp_ids(values: list[str] | None, field: str) -> Filter | None:
    """``In`` over the listed OCPP identities (``bounded``); an empty list matches nothing."""
    cp_ids = bounded(values, field)
    return None if cp_ids is None else In("cp_id", tuple(cp_ids))


#: What the one-value forms, kept for the clients written against them, say (QA s30: the
#: list filters took ``cpIds``/``stationIds``, these ``cpId``/``stationId``, and a
#: client had to know which). Given with its list, both must hold, as any two conditions.
USE_CP_IDS = "Use `cpIds` (a list); given with it, both must hold."
_USE_STATION_IDS = "Use `stationIds` (a list); given with it, both must hold."
#: The connector type list's one name, a station's and a connector's alike (QA s30:
#: ``connectorTypes`` on stations, ``types`` on connectors).
_USE_CONNECTOR_TYPES = "Use `connectorTypes`, as on the station filter."


def listed_beside(what: str, single: str) -> str:
    """The description of a list form kept beside its deprecated one-value ``single``."""
    return f"{what}, {BOUNDED}; an empty list: none. With `{single}` too, both must hold."


#: Longer than any name, plate or address; a real MongoDB server refuses patterns past
#: 32 KiB (and the escaped text can be twice as long as the text).
MAX_SEARCH = 200


def _search(fields: tuple[str, ...], text: str | None) -> Filter | None:
    text = (text or "").strip()
    if len(text) > MAX_SEARCH:
        raise ValidationError(f"at most {MAX_SEARCH} characters", field="filter.search",
                              code="TOO_LONG")
    if not text.isprintable():  # a NUL, which MongoDB refuses in a pattern, and the like
        raise ValidationError("no control characters", field="filter.search",
                              code="INVALID")
    return Search(fields, text) if text else None


def window(field: str, start: datetime | None, end: datetime | None, name: str | None = None
           ) -> Filter | None:
    """``field`` from ``start`` (inclusive) to ``end`` (exclusive), given as the ``from``
    and ``to`` of the input ``name`` (or, without one, of the field's own arguments)."""
    prefix = f"{name}." if name else ""
    for label, value in (("from", start), ("to", end)):
        if value is not None and value.tzinfo is None:
            raise ValidationError("needs a time zone offset", field=f"{prefix}{label}")
    if start is not None and end is not None and end < start:
        raise ValidationError("`to` is before `from`", field=f"{prefix}to", code="OUT_OF_RANGE")
    if start is None and end is None:
        return None
    return Range(field, gte=start, lt=end)


def _order(name: str, fields: dict[str, str], description: str, meanings: dict[str, str]
           ) -> tuple[type, type]:
    """An ``<Name>OrderField`` enum (values are domain fields, each described by
    ``meanings``) and ``<Name>Order`` input."""
    members = {key: strawberry.enum_value(field, description=meanings[key])
               for key, field in fields.items()}
    field_enum: Any = strawberry.enum(Enum(f"{name}OrderField", members),  # type: ignore[call-overload]
                                      description=description)

    # Built with real (not string) annotations: the class is made at run time, where the
    # enum above is a local that postponed annotations could not resolve.
    namespace = {
        "__annotations__": {"field": field_enum, "direction": OrderDirection},
        "field": strawberry.field(description="The key to sort by."),
        "direction": strawberry.field(default=OrderDirection.ASC,
                                      description="ASC (the default) or DESC."),
    }
    order = strawberry.input(type(f"{name}Order", (), namespace),
                             description=f"One sort key for {name.lower()} lists.")
    return field_enum, order


_AUDIT_TIMES = {"CREATED_AT": "created_at", "UPDATED_AT": "updated_at"}
_BY_TIMES = {"CREATED_AT": "When the record was created.",
             "UPDATED_AT": "When the record last changed."}
#: NAME sorts by the name's stored key (``validation.name_key``), not by its bytes, which
#: put "aachen" and "Ärztehaus" after "Zoo"; the name is shown as entered.
_BY_NAME = {"NAME": "name_key"}
_NAME_ORDER = ("NAME: as people read names, case and accents ignored (\"Ärztehaus\" with "
               "the a's, \"aachen\" before \"Zoo\"; \"ł\", \"ø\", \"đ\", \"ħ\" are "
               "letters of their own, after \"z\"), ties by id.")
_BY_NAME_MEANING = {"NAME": "The name as people read it: case and accents ignored."}
CompanyOrderField, CompanyOrder = _order("Company", {**_BY_NAME, **_AUDIT_TIMES},
                                         f"Sortable company fields. {_NAME_ORDER}",
                                         {**_BY_NAME_MEANING, **_BY_TIMES})
# Emails are stored case-folded and NFKC-normalized (``validation.email``): their bytes
# are already the order people expect of addresses.
UserOrderField, UserOrder = _order("User", {**_BY_NAME, "EMAIL": "email", **_AUDIT_TIMES},
                                   f"Sortable user fields. {_NAME_ORDER} EMAIL: as stored, "
                                   "lower case.",
                                   {**_BY_NAME_MEANING, **_BY_TIMES,
                                    "EMAIL": "The email as stored, lower case (a hidden "
                                             "one sorts only where the viewer may read "
                                             "it)."})
VehicleOrderField, VehicleOrder = _order(
    "Vehicle", {"LICENSE_PLATE": "plate_key", **_AUDIT_TIMES},
    "Sortable vehicle fields. LICENSE_PLATE: by letters and digits, whatever the "
    "spaces and dashes.",
    {"LICENSE_PLATE": "The plate's letters and digits, spaces and dashes ignored.",
     **_BY_TIMES},
)
IdTagOrderField, IdTagOrder = _order("IdTag", {"TAG": "tag", **_AUDIT_TIMES},
                                     "Sortable id tag fields.",
                                     {"TAG": "The tag, upper case.", **_BY_TIMES})
StationOrderField, StationOrder = _order(
    "Station", {**_BY_NAME, "CP_ID": "cp_id", "DISTANCE": DISTANCE, **_AUDIT_TIMES},
    f"Sortable station fields. {_NAME_ORDER} DISTANCE: great-circle distance from the "
    "point of `filter.near` (required with it), nearest first when ASC.",
    {**_BY_NAME_MEANING, "CP_ID": "The OCPP identity, as spelt (by code point).",
     "DISTANCE": "Great-circle distance from `filter.near`'s point (REQUIRED with it); "
                 "stations without a location are left out.",
     **_BY_TIMES},
)
ConnectorOrderField, ConnectorOrder = _order(
    "Connector", {"CP_ID": "cp_id", "CONNECTOR_ID": "connector_id", **_AUDIT_TIMES},
    "Sortable connector fields. Without a key, CP_ID then CONNECTOR_ID. (No STATUS: what "
    "a connector shows depends on its station being online, which no stored order "
    "follows; filter by `status` instead.)",
    {"CP_ID": "Its station's OCPP identity.", "CONNECTOR_ID": "The OCPP connector id.",
     **_BY_TIMES},
)
SessionOrderField, SessionOrder = _order(
    "Session",
    {"START_TIME": "start_time", "TRANSACTION_ID": "transaction_id", "ENERGY": "energy_wh",
     **_AUDIT_TIMES},
    "Sortable session fields.",
    {"START_TIME": "When it started (the charger's clock).",
     "TRANSACTION_ID": "The OCPP transactionId.",
     "ENERGY": "Energy delivered so far.", **_BY_TIMES},
)
ReservationOrderField, ReservationOrder = _order(
    "Reservation", {"EXPIRES_AT": "expires_at", **_AUDIT_TIMES}, "Sortable reservation fields.",
    {"EXPIRES_AT": "When it ends.", **_BY_TIMES},
)
PaymentOrderField, PaymentOrder = _order(
    "Payment", {"AMOUNT": "amount_minor", **_AUDIT_TIMES}, "Sortable payment fields.",
    {"AMOUNT": "The amount in minor units, whatever the currency.", **_BY_TIMES},
)
AuditOrderField, AuditOrder = _order("Audit", {"AT": "at"}, "Sortable audit fields.",
                                     {"AT": "When the change happened."})


_SEARCH = ("Text found anywhere (case and accents ignored: \"munchen\" finds "
           "\"München\", and Arabic and Hebrew vowel marks, as NAME order ignores them; "
           "a letter with a stroke or slash, \"ł\", \"ø\", \"đ\", \"ħ\", is a letter "
           "of its own: \"wroclaw\" misses \"Wrocław\"; at most 200 characters)")


@strawberry.input(description="Which companies to list.")
class CompanyFilter:
    search: str | None = strawberry.field(default=None, description=f"{_SEARCH}, in the "
                                                                    "name.")

    def to_domain(self) -> Filter:
        return all_of(_search(("name",), self.search))


@strawberry.input(description="Which users to list; every condition given must hold. "
                               "Conditions on a private field (`role`, `companyId`, "
                               "`active`, the email) match only users whose private view "
                               "the viewer has.")
class UserFilter:
    role: Role | None = strawberry.field(default=None, description="With this role.")
    company_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Of this company."))
    active: bool | None = strawberry.field(default=None, description=(
        "Active (true) or deactivated (false)."))
    search: str | None = strawberry.field(default=None, description=f"{_SEARCH}, in "
                                                                    "name and email.")

    def to_domain(self) -> Filter:
        return all_of(
            _eq("role", self.role),
            _eq("company_id", _id(self.company_id, "company", "filter.companyId")),
            _eq("active", self.active),
            _search(("name", "email"), self.search),
        )


@strawberry.input(description="Which vehicles to list; every condition given must hold.")
class VehicleFilter:
    owner_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Owned by this user."))
    search: str | None = strawberry.field(
        default=None, description=f"{_SEARCH}, in plate, make, model. A plate is also "
                                  "found by its letters and digits alone: \"bmi 2024\" "
                                  "finds \"B-MI 2024\".")

    def to_domain(self) -> Filter:
        return all_of(
            _eq("owner_id", _id(self.owner_id, "user", "filter.ownerId")),
            _vehicle_search(self.search),
        )


def _vehicle_search(text: str | None) -> Filter | None:
    """The text in plate (as entered), make or model, or its letters and digits in the
    plate's key: a driver types a plate with the separators they remember, or none."""
    found = _search(("license_plate", "make", "model"), text)
    if found is None:
        return None
    key = v.plate_key(text or "")
    return any_of(found, Search(("plate_key",), key)) if key else found


@strawberry.input(description="Which cards to list; every condition given must hold.")
class IdTagFilter:
    user_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Held by this user."))
    vehicle_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Linked to this vehicle."))
    status: IdTagStatus | None = strawberry.field(default=None, description=(
        "Whose status reads so now, as chargers are told it (`IdTag.status`): an "
        "ACCEPTED card past its expiry is EXPIRED, any card of a deactivated user "
        "BLOCKED."))
    search: str | None = strawberry.field(default=None, description=f"{_SEARCH}, in the "
                                                                    "tag.")

    def to_domain(self) -> Filter:
        return all_of(
            _eq("user_id", _id(self.user_id, "user", "filter.userId")),
            _eq("vehicle_id", _id(self.vehicle_id, "vehicle", "filter.vehicleId")),
            _tag_status(self.status, utcnow()) if self.status is not None else None,
            _search(("tag",), self.search),
        )


def _tag_status(status: IdTagStatus, now: datetime) -> Filter:
    """Tags whose status reads ``status`` now (``IdTag.charger_status``): an ACCEPTED tag
    past its expiry reads, and is found as, EXPIRED, and any tag of a deactivated user as
    BLOCKED, as chargers are told. (Users are never removed, so an owner is there.)"""
    active = Sub("user_id", "user", Eq("active", True))
    lapsed = all_of(Eq("status", IdTagStatus.ACCEPTED), Range("expires_at", lte=now))
    if status is IdTagStatus.EXPIRED:
        return all_of(any_of(Eq("status", IdTagStatus.EXPIRED), lapsed), active)
    if status is IdTagStatus.ACCEPTED:
        return all_of(Eq("status", IdTagStatus.ACCEPTED),
                      any_of(Eq("expires_at", None), Range("expires_at", gt=now)), active)
    return any_of(Eq("status", status), Sub("user_id", "user", Eq("active", False)))


def check_point(lat: float, lon: float, field: str) -> None:
    """A point on the map, or the user error naming ``field``'s ``lat`` or ``lon``: a
    query's field fails with one GraphQL error, which names the first of the two when
    both are out of range (a mutation's payload lists both)."""
    v.coordinates(lat, lon, field)


_LAT = "Latitude in degrees, -90 to 90 (OUT_OF_RANGE otherwise)."
_LON = "Longitude in degrees, -180 to 180 (OUT_OF_RANGE otherwise)."


@strawberry.input(description="A point on the map.")
class GeoPointInput:
    lat: float = strawberry.field(description=_LAT)
    lon: float = strawberry.field(description=_LON)


@strawberry.input(description="A circle on the map.")
class NearInput:
    lat: float = strawberry.field(description="The centre's latitude, -90 to 90.")
    lon: float = strawberry.field(description="The centre's longitude, -180 to 180.")
    radius_km: float = strawberry.field(description=(
        "Great-circle radius in km, above 0 and at most 20000."))

    @property
    def point(self) -> tuple[float, float]:
        return self.lat, self.lon

    def to_domain(self) -> Filter:
        check_point(self.lat, self.lon, "filter.near")
        if not 0 < self.radius_km <= 20_000:
            raise ValidationError("radiusKm must be > 0 and ≤ 20000",
                                  field="filter.near.radiusKm", code="OUT_OF_RANGE")
        return Near(self.lat, self.lon, self.radius_km)


@strawberry.input(description="Which stations to list; every condition given must hold.")
class StationFilter:
    cp_ids: list[str] | None = strawberry.field(default=None, description=(
        listed_beside("The stations with any of these OCPP identities", "cpId")))
    cp_id: str | None = strawberry.field(default=None, deprecation_reason=USE_CP_IDS,
                                         description="The station with this OCPP identity.")
    company_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Run by this company. Private: matches only stations whose company the viewer "
        "may read (admins, their operators)."))
    owner_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Owned by this user. Private, as `companyId`."))
    online: bool | None = strawberry.field(default=None, description=(
        "Whether its charger is connected now."))
    search: str | None = strawberry.field(default=None, description=f"{_SEARCH}, in "
                                                                    "name, cpId and address.")
    near: NearInput | None = strawberry.field(default=None, description=(
        "Within `radiusKm` of a point; order by `DISTANCE` from it with `orderBy`."))
    connector_types: list[ConnectorType] | None = strawberry.field(default=None, description=(
        "With a connector of one of these types (null: any type; an empty list: "
        "none, so no station)."))
    min_kw: float | None = strawberry.field(default=None, description=(
        "With a connector giving at least this power (`maxKw`; unknown power does not)."))
    available_now: bool | None = strawberry.field(default=None, description=(
        "true: with a connector available now (its last report was AVAILABLE, it holds "
        "no ACTIVE session, no live reservation holds it, the station is online and not "
        "UNAVAILABLE or FAULTED as a whole). A PENDING or ACTIVE reservation not past "
        "its `expiresAt` holds its connector, for everyone (its holder too) and "
        "whether or not the charger reported it RESERVED yet; one of connector 0 holds "
        "every connector of its station. The connector "
        "conditions hold for one connector together: a CCS2 of 150 kW free now. false: "
        "the others, with the connector conditions: stations with a connector meeting "
        "them (any station, with connectors or not, without them) none of which is "
        "available now, offline and UNAVAILABLE or FAULTED stations included."))

    def to_domain(self) -> Filter:
        return all_of(
            _eq("cp_id", self.cp_id),
            _cp_ids(self.cp_ids, "filter.cpIds"),
            _eq("company_id", _id(self.company_id, "company", "filter.companyId")),
            _eq("owner_id", _id(self.owner_id, "user", "filter.ownerId")),
            _eq("online", self.online),
            _search(("name", "cp_id", "address"), self.search),
            self.near.to_domain() if self.near else None,
            self._connectors(),
        )

    def _connectors(self) -> Filter:
        fits = connector_fits(self.connector_types,
                              _min_kw(self.min_kw, "filter.minKw"))
        return stations_with(fits, available_now=self.available_now, now=utcnow())


def _min_kw(value: float | None, field: str) -> float | None:
    if value is not None and not 0 <= value < math.inf:
        raise ValidationError("must be 0 or more", field=field, code="OUT_OF_RANGE")
    return value


@strawberry.input(description="Which connectors to list; every condition given must hold.")
class ConnectorFilter:
    cp_ids: list[str] | None = strawberry.field(default=None, description=(
        listed_beside("Of the stations with any of these OCPP identities", "cpId")))
    cp_id: str | None = strawberry.field(default=None, deprecation_reason=USE_CP_IDS,
                                         description="Of the station with this OCPP "
                                                     "identity.")
    station_ids: list[strawberry.ID] | None = strawberry.field(default=None, description=(
        listed_beside("Of any of these stations (global ids)", "stationId")))
    station_id: strawberry.ID | None = strawberry.field(
        default=None, deprecation_reason=_USE_STATION_IDS, description="Of this station.")
    status: ConnectorStatus | None = strawberry.field(default=None, description=(
        "AVAILABLE: available now, as `availableNow: true` (not a connector holding an "
        "ACTIVE session or held by a live reservation, whatever it reported); any other "
        "status: the last one "
        "reported, as `Connector.status` shows it (a charger that started a session "
        "without reporting CHARGING is not in `CHARGING`)."))
    connector_types: list[ConnectorType] | None = strawberry.field(default=None, description=(
        "One of these types (null: any type; an empty list: none, so no connector). "
        "With `types` too, both must hold."))
    types: list[ConnectorType] | None = strawberry.field(
        default=None, deprecation_reason=_USE_CONNECTOR_TYPES, description=(
            "One of these types (null: any type; an empty list: none, so no "
            "connector)."))
    min_kw: float | None = strawberry.field(default=None, description=(
        "At least this power (`maxKw`; unknown power does not match)."))
    available_now: bool | None = strawberry.field(default=None, description=(
        "true: a driver can plug in now: it last reported AVAILABLE, it holds no "
        "ACTIVE session, no live reservation holds it (a PENDING or ACTIVE one not past "
        "its `expiresAt`, of this connector or of its station's connector 0; for "
        "everyone, its holder too), its station is online and its charge point as a "
        "whole (connector 0) is not UNAVAILABLE or FAULTED. `Connector.status` stays "
        "what the charger last reported, so a connector of an offline station, one a "
        "charger started a session on without reporting it, or one reserved before its "
        "charger reported RESERVED may read AVAILABLE and not match. false: the "
        "others."))

    def to_domain(self) -> Filter:
        return all_of(
            _eq("cp_id", self.cp_id),
            _cp_ids(self.cp_ids, "filter.cpIds"),
            _eq("station_id", _id(self.station_id, "station", "filter.stationId")),
            _ids(self.station_ids, "station", "filter.stationIds"),
            self._status(),
            connector_fits(self.connector_types, _min_kw(self.min_kw, "filter.minKw")),
            connector_fits(self.types),
            _available(self.available_now),
        )

    def _status(self) -> Filter | None:
        # What a driver filtering AVAILABLE means is "can I charge there now": a
        # connector of a charger that went offline still reads its last report.
        if self.status is ConnectorStatus.AVAILABLE:
            return connectors_available_now(utcnow())
        return _eq("status", self.status)


def _available(available_now: bool | None) -> Filter | None:
    if available_now is None:
        return None
    now = utcnow()
    return connectors_available_now(now) if available_now \
        else connectors_not_available_now(now)


@strawberry.input(description="Which sessions to list; every condition given must hold.")
class SessionFilter:
    cp_ids: list[str] | None = strawberry.field(default=None, description=(
        listed_beside("At the chargers with any of these OCPP identities", "cpId")))
    cp_id: str | None = strawberry.field(default=None, deprecation_reason=USE_CP_IDS,
                                         description="At the charger with this OCPP "
                                                     "identity.")
    connector_id: int | None = strawberry.field(default=None, description=(
        "On this OCPP connector id (with one charger or station, one plug)."))
    station_ids: list[strawberry.ID] | None = strawberry.field(default=None, description=(
        listed_beside("At any of these stations (global ids)", "stationId")))
    station_id: strawberry.ID | None = strawberry.field(
        default=None, deprecation_reason=_USE_STATION_IDS, description="At this station.")
    user_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Charged by this driver."))
    vehicle_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Charging this vehicle."))
    state: SessionState | None = strawberry.field(default=None, description=(
        "ACTIVE (charging now) or COMPLETED."))
    from_: datetime | None = strawberry.field(default=None, name="from",
                                              description="Sessions started at or after.")
    to: datetime | None = strawberry.field(default=None, description="Started before.")
    id_tag: str | None = strawberry.field(
        default=None, description="Sessions charged with this card (its tag, in any case).")

    def to_domain(self) -> Filter:
        return all_of(
            _eq("cp_id", self.cp_id),
            _cp_ids(self.cp_ids, "filter.cpIds"),
            _eq("connector_id", self.connector_id),
            _eq("station_id", _id(self.station_id, "station", "filter.stationId")),
            _ids(self.station_ids, "station", "filter.stationIds"),
            _eq("id_tag", _session_tag(self.id_tag)),
            _eq("user_id", _id(self.user_id, "user", "filter.userId")),
            _eq("vehicle_id", _id(self.vehicle_id, "vehicle", "filter.vehicleId")),
            _eq("state", self.state),
            window("start_time", self.from_, self.to, "filter"),
        )


@strawberry.input(description="Which reservations to list; every condition given must "
                               "hold.")
class ReservationFilter:
    cp_ids: list[str] | None = strawberry.field(default=None, description=(
        listed_beside("At the chargers with any of these OCPP identities", "cpId")))
    cp_id: str | None = strawberry.field(default=None, deprecation_reason=USE_CP_IDS,
                                         description="At the charger with this OCPP "
                                                     "identity.")
    station_ids: list[strawberry.ID] | None = strawberry.field(default=None, description=(
        listed_beside("At any of these stations (global ids)", "stationId")))
    station_id: strawberry.ID | None = strawberry.field(
        default=None, deprecation_reason=_USE_STATION_IDS, description="At this station.")
    user_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "For this user's card."))
    state: ReservationState | None = strawberry.field(default=None, description=(
        "Whose state reads so now (`Reservation.state`): a live one past its expiry is "
        "EXPIRED."))

    def to_domain(self) -> Filter:
        return all_of(
            _eq("cp_id", self.cp_id),
            _cp_ids(self.cp_ids, "filter.cpIds"),
            _eq("station_id", _id(self.station_id, "station", "filter.stationId")),
            _ids(self.station_ids, "station", "filter.stationIds"),
            _eq("user_id", _id(self.user_id, "user", "filter.userId")),
            _reservation_state(self.state, utcnow()) if self.state is not None else None,
        )


def _session_tag(value: str | None) -> str | None:
    """A card's tag as sessions store it (``validation.stored_id_tag``): a charger may
    present a tag no card was issued with (non-ASCII, unprintable), and an operator
    looking into it must find its sessions. Bounded as OCPP bounds a tag."""
    if value is None:
        return None
    tag = v.stored_id_tag(value)
    if not tag:
        raise ValidationError("must not be empty", field="filter.idTag", code="REQUIRED")
    if len(tag) > v.MAX_ID_TAG:
        raise ValidationError(f"at most {v.MAX_ID_TAG} characters", field="filter.idTag",
                              code="TOO_LONG")
    return tag


def _reservation_state(state: ReservationState, now: datetime) -> Filter:
    """Reservations whose state reads ``state`` now (``Reservation.state_at``): a live one
    past its expiry is EXPIRED before the sweep has stored it."""
    live = LIVE_RESERVATION_STATES
    if state is ReservationState.EXPIRED:
        return any_of(Eq("state", ReservationState.EXPIRED),
                      all_of(In("state", live), Range("expires_at", lte=now)))
    if state in live:
        return all_of(Eq("state", state), Range("expires_at", gt=now))
    return Eq("state", state)


@strawberry.input(description="Which payments to list; every condition given must hold.")
class PaymentFilter:
    status: PaymentStatus | None = strawberry.field(default=None, description=(
        "In this status."))
    user_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Of this driver."))
    session_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "For this session."))
    station_ids: list[strawberry.ID] | None = strawberry.field(default=None, description=(
        listed_beside("For sessions at any of these stations (global ids)", "stationId")))
    station_id: strawberry.ID | None = strawberry.field(
        default=None, deprecation_reason=_USE_STATION_IDS,
        description="For sessions at this station.")
    from_: datetime | None = strawberry.field(default=None, name="from",
                                              description="Payments opened at or after.")
    to: datetime | None = strawberry.field(default=None, description="Opened before.")

    def to_domain(self) -> Filter:
        return all_of(
            _eq("status", self.status),
            _eq("user_id", _id(self.user_id, "user", "filter.userId")),
            _eq("session_id", _id(self.session_id, "session", "filter.sessionId")),
            _eq("station_id", _id(self.station_id, "station", "filter.stationId")),
            _ids(self.station_ids, "station", "filter.stationIds"),
            window("created_at", self.from_, self.to, "filter"),
        )


def audited_kind(name: str | None) -> str | None:
    """The entity kind an audit filter names, in the store's spelling (``id_tag``) or as
    its GraphQL type (``IdTag``). A name that is neither is refused: it matched no entry,
    so a typo read as "no changes" (QA s19)."""
    if name is None:
        return None
    kind = KIND_BY_TYPE.get(name, name)
    if kind not in ENTITY_BY_KIND:
        raise ValidationError(f"no entity kind {name!r}; e.g. station, id_tag, session",
                              field="filter.entity", code="INVALID")
    return kind


@strawberry.input(description="Which change log entries to list; every condition given "
                               "must hold.")
class AuditFilter:
    entity: str | None = strawberry.field(
        default=None, description="Entity kind, e.g. `station`, `id_tag` (or its type "
                                  "name, `IdTag`); an unknown kind is `INVALID`.")
    entity_id: strawberry.ID | None = strawberry.field(
        default=None, description="Global (or raw) id of the changed record."
    )
    actor_id: strawberry.ID | None = strawberry.field(
        default=None, description=(
            "Who made it: a user's global id (as `User.id` and `actor` show it), "
            "`ocpp:<cpId>` or `system`. A user's raw id, as `actor` showed them before, "
            "still works (deprecated).")
    )
    action: AuditAction | None = strawberry.field(default=None, description=(
        "Of this kind of change."))
    command_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Of this command to a charger: the `commandId` its mutation answered (and "
        "`commandCompleted` carried); its entries are `COMMAND`s, stage `SENT` then "
        "`ANSWERED` (or one `NOT_SENT`)."))
    from_: datetime | None = strawberry.field(default=None, name="from", description=(
        "Made at or after this instant."))
    to: datetime | None = strawberry.field(default=None, description=(
        "Made before this instant (not before `from`: OUT_OF_RANGE)."))

    def to_domain(self) -> Filter:
        entity_id = None
        if self.entity_id is not None:
            raw = str(self.entity_id)
            entity_id = raw if is_id(raw) else from_global_id(raw, "filter.entityId")[1]
        actor = None
        if self.actor_id is not None:
            actor = stored_actor(str(self.actor_id), "filter.actorId")
        return all_of(
            _eq("entity", audited_kind(self.entity)),
            _eq("entity_id", entity_id),
            _eq("actor", actor),
            _eq("action", self.action),
            _eq("command_id", None if self.command_id is None else str(self.command_id)),
            window("at", self.from_, self.to, "filter"),
        )
