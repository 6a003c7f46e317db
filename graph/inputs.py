"""Mutation inputs. Optional fields left out stay unchanged (``UNSET``); an explicit null
clears a clearable field."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import strawberry

from domain.services import UNSET
from domain.validation import Checks
from graph.enums import ConnectorType, IdTagStatus, PowerType, Registration, Role
from graph.ids import expect_id


def given(value: Any) -> Any:
    """Strawberry's UNSET (field left out) as the domain's UNSET."""
    return UNSET if value is strawberry.UNSET else value


def checked_id(checks: Checks, value: Any, kind: str, field: str) -> Any:
    """An id of a mutation's input (``expect_id``), checked with the input's other
    fields: an id that is no ``kind``'s is reported in ``checks`` with every other
    invalid field, and stands as UNSET (left out) until the use case raises them all,
    so no rule about clearing the field speaks for it meanwhile. UNSET and null pass
    through."""
    value = given(value)
    if value is UNSET or value is None:
        return value
    decoded = checks(expect_id, str(value), kind, field)
    return UNSET if decoded is None else decoded


@strawberry.input
class LocationInput:
    lat: float
    lon: float
    address: str | None = None


@strawberry.input
class CreateCompanyInput:
    name: str


@strawberry.input
class UpdateCompanyInput:
    id: strawberry.ID
    name: str


@strawberry.input
class CreateUserInput:
    email: str
    password: str
    name: str
    role: Role = Role.DRIVER  # type: ignore[assignment]
    company_id: strawberry.ID | None = None


@strawberry.input
class UpdateUserInput:
    id: strawberry.ID
    name: str | None = strawberry.UNSET
    email: str | None = strawberry.UNSET
    password: str | None = strawberry.UNSET
    current_password: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Your password, to change your own email or password.")
    role: Role | None = strawberry.UNSET
    company_id: strawberry.ID | None = strawberry.UNSET
    active: bool | None = strawberry.UNSET


@strawberry.input
class DeactivateUserInput:
    id: strawberry.ID


@strawberry.input
class RemoveVehicleInput:
    id: strawberry.ID


@strawberry.input
class RemoveIdTagInput:
    id: strawberry.ID


@strawberry.input
class RemoveStationInput:
    id: strawberry.ID


@strawberry.input(description="Close a session its charger will never stop.")
class EndSessionInput:
    id: strawberry.ID
    end_time: datetime | None = strawberry.field(
        default=None, description="When it ended (default now); not before its start.")


@strawberry.input
class RemoveConnectorInput:
    id: strawberry.ID


@strawberry.input
class AddVehicleInput:
    license_plate: str
    owner_id: strawberry.ID | None = strawberry.field(
        default=None, description="Defaults to the signed-in user."
    )
    make: str | None = None
    model: str | None = None
    battery_kwh: float | None = None


@strawberry.input
class UpdateVehicleInput:
    id: strawberry.ID
    owner_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET, description=(
            "Hand the vehicle to another user (admins, and operators within their "
            "company): its past sessions stay with it and with the drivers who charged "
            "them; the previous owner's cards linked to it are unlinked."))
    license_plate: str | None = strawberry.UNSET
    make: str | None = strawberry.UNSET
    model: str | None = strawberry.UNSET
    battery_kwh: float | None = strawberry.UNSET


_PARENT = ("The card's group (OCPP parentIdTag, at most 20 characters): cards of one group "
           "may use a reservation made for the group and stop each other's sessions at "
           "chargers that allow it. Set by admins and the driver's operator only; a group "
           "is one company's (IN_USE: another company's cards are in it).")


@strawberry.input
class IssueIdTagInput:
    tag: str = strawberry.field(description="OCPP idTag, at most 20 characters.")
    user_id: strawberry.ID | None = strawberry.field(
        default=None, description="Defaults to the signed-in user."
    )
    vehicle_id: strawberry.ID | None = None
    expires_at: datetime | None = None
    parent_id_tag: str | None = strawberry.field(default=None, description=_PARENT)


@strawberry.input
class UpdateIdTagInput:
    id: strawberry.ID
    status: IdTagStatus | None = strawberry.UNSET
    vehicle_id: strawberry.ID | None = strawberry.UNSET
    expires_at: datetime | None = strawberry.UNSET
    parent_id_tag: str | None = strawberry.field(default=strawberry.UNSET,
                                                 description=_PARENT + " Null removes it.")


@strawberry.input
class ConnectorInput:
    connector_id: int
    type: ConnectorType = ConnectorType.TYPE2  # type: ignore[assignment]
    max_kw: float | None = None


@strawberry.input
class CreateStationInput:
    cp_id: str = strawberry.field(description="OCPP identity (websocket path segment).")
    name: str
    company_id: strawberry.ID | None = None
    owner_id: strawberry.ID | None = None
    location: LocationInput | None = None
    connectors: list[ConnectorInput] = strawberry.field(default_factory=list)
    password: str | None = strawberry.field(
        default=None, description="HTTP Basic password the charger authenticates with "
                                  "(OCPP security profile 1/2)."
    )


@strawberry.input
class UpdateStationInput:
    id: strawberry.ID
    name: str | None = strawberry.UNSET
    location: LocationInput | None = strawberry.UNSET
    company_id: strawberry.ID | None = strawberry.UNSET
    owner_id: strawberry.ID | None = strawberry.UNSET
    password: str | None = strawberry.UNSET
    registration: Registration | None = strawberry.UNSET
    heartbeat_interval: int | None = strawberry.field(default=strawberry.UNSET, description=(
        "Seconds (1 to 86400) its charger's boots are answered with from now on, which it "
        "takes at its next boot (a `changeConfiguration` of `HeartbeatInterval` it accepts "
        "sets it too, and changes it at once); null: the service's global interval again."))


@strawberry.input
class AddConnectorInput:
    station_id: strawberry.ID
    connector_id: int
    type: ConnectorType = ConnectorType.TYPE2  # type: ignore[assignment]
    max_kw: float | None = None


@strawberry.input
class UpdateConnectorInput:
    id: strawberry.ID
    type: ConnectorType | None = strawberry.UNSET
    max_kw: float | None = strawberry.UNSET


@strawberry.input(description=(
    "A time-of-day energy price: `pricePerKwh` on `days` from `start` to `end`, local "
    "times of the tariff's `timeZone`. A band over midnight is two bands."))
class PriceBandInput:
    days: list[str] = strawberry.field(description=(
        "MON, TUE, WED, THU, FRI, SAT, SUN (or the whole names), any case."))
    start: str = strawberry.field(description="HH:MM, from 00:00.")
    end: str = strawberry.field(description="HH:MM after `start`, up to 24:00.")
    price_per_kwh: Decimal


@strawberry.input
class SetTariffInput:
    company_id: strawberry.ID | None = None
    station_id: strawberry.ID | None = None
    price_per_kwh: Decimal
    currency: str
    price_per_minute: Decimal = Decimal(0)
    session_fee: Decimal = Decimal(0)
    tax_rate: Decimal = Decimal(0)
    valid_from: datetime | None = strawberry.field(default=None,
                                                   description="Defaults to now.")
    idle_price_per_minute: Decimal = strawberry.field(default=Decimal(0), description=(
        "Per idle minute beyond the grace (the car done, the connector still occupied)."))
    idle_grace_minutes: int = strawberry.field(default=0, description=(
        "Free idle minutes per session, 0..1440."))
    idle_fee_cap: Decimal | None = strawberry.field(default=None, description=(
        "The most a session's idle fee comes to, before tax; null: no cap."))
    energy_bands: list[PriceBandInput] = strawberry.field(default_factory=list, description=(
        "Time-of-day energy prices (none may overlap); energy at a time no band covers is "
        "at `pricePerKwh`."))
    time_zone: str | None = strawberry.field(default=None, description=(
        "The IANA time zone of the bands' times, such as Europe/Berlin; required with "
        "bands."))
    connector_type: ConnectorType | None = strawberry.field(default=None, description=(
        "Price only sessions on plugs of this standard (at most one of this and "
        "`powerType`; neither: all plugs)."))
    power_type: PowerType | None = strawberry.field(default=None, description=(
        "Price only sessions on plugs of this power type, such as a station's DC plugs."))


@strawberry.input
class CapturePaymentInput:
    id: strawberry.ID


@strawberry.input
class FailPaymentInput:
    id: strawberry.ID


@strawberry.input
class RefundPaymentInput:
    id: strawberry.ID
    amount: Decimal | None = strawberry.field(
        default=None, description="How much to pay back, in the payment's currency (major "
                                  "units, e.g. 2.50): part of what is not refunded yet, "
                                  "or (default) all of it.")
