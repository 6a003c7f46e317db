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


#: What a name may be (``validation.name``).
_NAME = "At most 200 characters; runs of whitespace become one space."
_EMAIL = ("A sign-in address, stored trimmed and in lower case: unique whatever its case "
          "(DUPLICATE).")
_PASSWORD = ("8 to 256 characters (TOO_SHORT, TOO_LONG), not one of the passwords guessed "
             "first (TOO_WEAK: common ones, one character repeated), both of it as it is "
             "compared: Unicode-normalized (NFKC: full-width letters as plain ones, a "
             "letter and its combining accent as one).")
_MAX_KW = "Rated power in kW, above 0 and at most 1000; null: unknown."
_BATTERY = "Battery capacity in kWh, above 0 and at most 1000."
_PLATE = ("Letters, digits, spaces and dashes, at most 16 letters and digits; stored "
          "upper case, full-width characters as their plain ones (NFKC). Unique per owner "
          "by its letters and digits (DUPLICATE).")


def _id_of(what: str) -> str:
    """The ``id`` of an input that names one record."""
    return f"The {what}'s global id (INVALID_ID if it is no {what}'s)."


@strawberry.input(description="Where a station stands.")
class LocationInput:
    lat: float = strawberry.field(description="Latitude in degrees, -90 to 90.")
    lon: float = strawberry.field(description="Longitude in degrees, -180 to 180.")
    address: str | None = strawberry.field(default=None, description=(
        "Free text, at most 500 characters (line breaks allowed); blank: none."))


@strawberry.input(description="A new company.")
class CreateCompanyInput:
    name: str = strawberry.field(description=_NAME + " Unique (DUPLICATE).")


@strawberry.input(description="A company's new name.")
class UpdateCompanyInput:
    id: strawberry.ID = strawberry.field(description=_id_of("company"))
    name: str = strawberry.field(description=_NAME + " Unique (DUPLICATE).")


@strawberry.input(description="A new account.")
class CreateUserInput:
    email: str = strawberry.field(description=_EMAIL)
    password: str = strawberry.field(description=_PASSWORD)
    name: str = strawberry.field(description=_NAME)
    role: Role = strawberry.field(  # type: ignore[assignment]
        default=Role.DRIVER, description="DRIVER unless given; only admins create admins.")
    company_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Their company; an operator's own when left out (operators create people of their "
        "own company only)."))


@strawberry.input(description="What to change of a user; fields left out stay as they are.")
class UpdateUserInput:
    id: strawberry.ID = strawberry.field(description=_id_of("user"))
    name: str | None = strawberry.field(default=strawberry.UNSET, description=_NAME)
    email: str | None = strawberry.field(default=strawberry.UNSET, description=(
        _EMAIL + " Your own needs `currentPassword`."))
    password: str | None = strawberry.field(default=strawberry.UNSET, description=(
        _PASSWORD + " Revokes every token issued before. Your own needs "
        "`currentPassword`, and the payload's `signedIn`, if selected, has your new "
        "tokens; a manager "
        "resets another's without it, signing them out everywhere."))
    current_password: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Your password, to change your own email or password.")
    role: Role | None = strawberry.field(default=strawberry.UNSET, description=(
        "Admins, and operators for their company's people other than admins; only admins "
        "grant ADMIN, and nobody changes their own."))
    company_id: strawberry.ID | None = strawberry.field(default=strawberry.UNSET, description=(
        "Move them to another company (null: none). Admins only."))
    active: bool | None = strawberry.field(default=strawberry.UNSET, description=(
        "false deactivates (as `deactivateUser`), true reactivates; either revokes their "
        "tokens. Managers only, and not yourself."))


@strawberry.input(description="The user to deactivate.")
class DeactivateUserInput:
    id: strawberry.ID = strawberry.field(description=_id_of("user"))


@strawberry.input(description="The account to erase.")
class EraseUserInput:
    id: strawberry.ID = strawberry.field(description=_id_of("user"))


@strawberry.input(description="Your own account, to erase.")
class EraseMyAccountInput:
    current_password: str = strawberry.field(description=(
        "The password in use now: a token alone does not erase an account."))


@strawberry.input(description="The vehicle to remove.")
class RemoveVehicleInput:
    id: strawberry.ID = strawberry.field(description=_id_of("vehicle"))


@strawberry.input(description="The card to remove.")
class RemoveIdTagInput:
    id: strawberry.ID = strawberry.field(description=_id_of("id tag"))


@strawberry.input(description="The station to remove.")
class RemoveStationInput:
    id: strawberry.ID = strawberry.field(description=_id_of("station"))


@strawberry.input(description="Close a session its charger will never stop.")
class EndSessionInput:
    id: strawberry.ID = strawberry.field(description=_id_of("session"))
    end_time: datetime | None = strawberry.field(
        default=None, description=(
            "When it ended (default now; for a session open in a restored backup and "
            "not metered since the restore, its last meter reading); not before its "
            "start."))


@strawberry.input(description="The connector to remove.")
class RemoveConnectorInput:
    id: strawberry.ID = strawberry.field(description=_id_of("connector"))


@strawberry.input(description="A new vehicle.")
class AddVehicleInput:
    license_plate: str = strawberry.field(description=_PLATE)
    owner_id: strawberry.ID | None = strawberry.field(
        default=None, description="Defaults to the signed-in user."
    )
    make: str | None = strawberry.field(default=None, description="At most 200 characters.")
    model: str | None = strawberry.field(default=None, description="At most 200 characters.")
    battery_kwh: float | None = strawberry.field(default=None, description=_BATTERY)


@strawberry.input(description="What to change of a vehicle; fields left out stay as they "
                               "are.")
class UpdateVehicleInput:
    id: strawberry.ID = strawberry.field(description=_id_of("vehicle"))
    owner_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET, description=(
            "Hand the vehicle to another user (admins, and operators within their "
            "company): its past sessions stay with it and with the drivers who charged "
            "them; the previous owner's cards linked to it are unlinked."))
    license_plate: str | None = strawberry.field(default=strawberry.UNSET,
                                                 description=_PLATE)
    make: str | None = strawberry.field(default=strawberry.UNSET, description=(
        "At most 200 characters; null clears it."))
    model: str | None = strawberry.field(default=strawberry.UNSET, description=(
        "At most 200 characters; null clears it."))
    battery_kwh: float | None = strawberry.field(default=strawberry.UNSET, description=(
        _BATTERY + " Null clears it."))


_PARENT = ("The card's group (OCPP parentIdTag, at most 20 characters): cards of one group "
           "may use a reservation made for the group and stop each other's sessions at "
           "chargers that allow it. Set by admins and the driver's operator only; a group "
           "is one company's (IN_USE: another company's cards are in it).")


@strawberry.input(description="A new charging card.")
class IssueIdTagInput:
    tag: str = strawberry.field(description="OCPP idTag, at most 20 characters.")
    user_id: strawberry.ID | None = strawberry.field(
        default=None, description="Defaults to the signed-in user."
    )
    vehicle_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "A vehicle of the card's holder it charges."))
    expires_at: datetime | None = strawberry.field(default=None, description=(
        "When chargers stop accepting it, in the future; left out: never."))
    parent_id_tag: str | None = strawberry.field(default=None, description=_PARENT)


@strawberry.input(description="What to change of a card; fields left out stay as they are.")
class UpdateIdTagInput:
    id: strawberry.ID = strawberry.field(description=_id_of("id tag"))
    status: IdTagStatus | None = strawberry.field(default=strawberry.UNSET, description=(
        "BLOCKED: its holder (a lost card) or a manager; ACCEPTED again: a holder lifts "
        "only their own block, admins and the holder's operators any; EXPIRED: managers "
        "(a card a manager blocked, marked EXPIRED or gave an expiry now past its "
        "holder may not change nor "
        "remove, FORBIDDEN on `id`, and issues themselves no new card meanwhile). "
        "ACCEPTED does not lift an expiry: on a card whose `expiresAt` is past (as given "
        "here, or as it is) nothing is changed and EXPIRED is answered on `expiresAt`: "
        "move it later or clear it. BLOCKED while the card charges stops that session at "
        "once (RemoteStopTransaction sent to its charger, by its holder too: a stolen "
        "card must stop charging) and cancels its reservations; `removeIdTag` is refused "
        "IN_USE meanwhile."))
    vehicle_id: strawberry.ID | None = strawberry.field(default=strawberry.UNSET, description=(
        "A vehicle of the card's holder it charges; null unlinks it."))
    expires_at: datetime | None = strawberry.field(default=strawberry.UNSET, description=(
        "When chargers stop accepting it; null: never. Admins and the holder's operators: "
        "once past, a date they set bars the holder as EXPIRED does "
        "(`IdTag.expirySetByStaff`)."))
    parent_id_tag: str | None = strawberry.field(default=strawberry.UNSET,
                                                 description=_PARENT + " Null removes it.")


_CONNECTOR_ID = "OCPP connector id, 1 to 100, unique within the station."
_PHASES = ("The phases it charges on, 1, 2 or 3 (a single-phase wallbox: 1): its share of a "
           "site limited in A is converted with them, and sent with them as `numberPhases`. "
           "Left out or null: its site's `phases`.")


@strawberry.input(description="A connector of a new station.")
class ConnectorInput:
    connector_id: int = strawberry.field(description=_CONNECTOR_ID)
    type: ConnectorType = strawberry.field(  # type: ignore[assignment]
        default=ConnectorType.TYPE2, description="Plug standard; TYPE2 unless given.")
    max_kw: float | None = strawberry.field(default=None, description=_MAX_KW)
    phases: int | None = strawberry.field(default=None, description=_PHASES)


@strawberry.input(description="A new station (admins and operators).")
class CreateStationInput:
    cp_id: str = strawberry.field(description=(
        "OCPP identity (websocket path segment), one whatever its case as OCPP has it: "
        "`DUPLICATE` when another station's differs only in case, and its charger may "
        "connect as `cp-001` for `CP-001`."))
    name: str = strawberry.field(description=_NAME)
    company_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "The company that runs it; an operator's own company, always."))
    owner_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "An operator or admin who owns it; an operator themselves unless they name a "
        "colleague. Never a driver (INVALID)."))
    location: LocationInput | None = strawberry.field(default=None, description=(
        "Where it stands; left out: nowhere (it shows in no `near` search)."))
    connectors: list[ConnectorInput] = strawberry.field(
        default_factory=list, description="Its connectors, at most 100.")
    password: str | None = strawberry.field(
        default=None, description="HTTP Basic password the charger authenticates with "
                                  "(OCPP security profile 1/2)."
    )


@strawberry.input(description="What to change of a station; fields left out stay as "
                               "they are.")
class UpdateStationInput:
    id: strawberry.ID = strawberry.field(description=_id_of("station"))
    name: str | None = strawberry.field(default=strawberry.UNSET, description=_NAME)
    location: LocationInput | None = strawberry.field(default=strawberry.UNSET, description=(
        "Where it stands; null removes it."))
    company_id: strawberry.ID | None = strawberry.field(default=strawberry.UNSET, description=(
        "Hand it to another company (null: none). Admins only."))
    owner_id: strawberry.ID | None = strawberry.field(default=strawberry.UNSET, description=(
        "Its owner: an operator or admin (an operator names one of their company); null: "
        "none."))
    password: str | None = strawberry.field(default=strawberry.UNSET, description=(
        "The HTTP Basic password its charger must present, 8 to 40 printable ASCII "
        "characters (OCPP security profile 1/2); null: none, anyone knowing the cpId may "
        "connect. A new password (the same one set again too) closes its charger's "
        "connection signed in with the old one at once, whichever instance holds it: the "
        "way to shut out a compromised charger, which cannot sign in again without it."))
    registration: Registration | None = strawberry.field(default=strawberry.UNSET,
                                                         description=(
        "How its charger's boots are answered; accepting a PENDING or REJECTED station "
        "asks its charger, if connected, to boot again. Made PENDING or REJECTED, it "
        "authorizes no session from then on (no remote start or reservation, no card "
        "checked); its charger, told at its next boot, acts as before until then: a "
        "session under way runs to its end, a start it makes anyway is recorded and "
        "billed, and it may still be sent a remote stop, an unlock or a reset. A charger "
        "told PENDING or REJECTED at its last boot is sent only what OCPP 1.6 allows for "
        "that until it boots again, accepted or not (REJECTED: nothing). Its connection "
        "stays: a new `password` closes it."))
    heartbeat_interval: int | None = strawberry.field(default=strawberry.UNSET, description=(
        "Seconds (1 to 86400) its charger's boots are answered with from now on, which it "
        "takes at its next boot (a `changeConfiguration` of `HeartbeatInterval` it accepts "
        "sets it too, and changes it at once); null: the service's global interval again."))


@strawberry.input(description="A new connector of a station.")
class AddConnectorInput:
    station_id: strawberry.ID = strawberry.field(description=_id_of("station"))
    connector_id: int = strawberry.field(description=_CONNECTOR_ID)
    type: ConnectorType = strawberry.field(  # type: ignore[assignment]
        default=ConnectorType.TYPE2, description="Plug standard; TYPE2 unless given.")
    max_kw: float | None = strawberry.field(default=None, description=_MAX_KW)
    phases: int | None = strawberry.field(default=None, description=_PHASES)


@strawberry.input(description="What to change of a connector; fields left out stay as they "
                               "are.")
class UpdateConnectorInput:
    id: strawberry.ID = strawberry.field(description=_id_of("connector"))
    type: ConnectorType | None = strawberry.field(default=strawberry.UNSET, description=(
        "Plug standard; cannot be null."))
    max_kw: float | None = strawberry.field(default=strawberry.UNSET, description=_MAX_KW)
    phases: int | None = strawberry.field(default=strawberry.UNSET, description=(
        _PHASES + " Null: the site's again."))


_PRICE_RANGE = ("0 to 100,000,000 minor units of `currency` (1,000,000 EUR, 100,000,000 "
                "JPY, 10,000 CLF), at most 6 decimals.")


@strawberry.input(description=(
    "A time-of-day energy price: `pricePerKwh` on `days` from `start` to `end`, local "
    "times of the tariff's `timeZone`. A band over midnight is two bands."))
class PriceBandInput:
    days: list[str] = strawberry.field(description=(
        "MON, TUE, WED, THU, FRI, SAT, SUN (or the whole names), any case."))
    start: str = strawberry.field(description="HH:MM, from 00:00.")
    end: str = strawberry.field(description="HH:MM after `start`, up to 24:00.")
    price_per_kwh: Decimal = strawberry.field(description=(
        "Per kWh in the band, before tax: " + _PRICE_RANGE))


_PRICE = "In `currency`'s major units, before tax: " + _PRICE_RANGE


@strawberry.input(description=(
    "A new price list version of a company or a station: give exactly one of `companyId` "
    "and `stationId`. Admins, and operators for what they run."))
class SetTariffInput:
    company_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Price the company's stations (those without a price list of their own)."))
    station_id: strawberry.ID | None = strawberry.field(default=None, description=(
        "Price this station."))
    price_per_kwh: Decimal = strawberry.field(description="Per kWh. " + _PRICE)
    currency: str = strawberry.field(description="ISO 4217 code in circulation, e.g. EUR.")
    price_per_minute: Decimal = strawberry.field(default=Decimal(0), description=(
        "Per minute of a session, 0 unless given. " + _PRICE))
    session_fee: Decimal = strawberry.field(default=Decimal(0), description=(
        "Per session, 0 unless given. " + _PRICE))
    tax_rate: Decimal = strawberry.field(default=Decimal(0), description=(
        "0 to 1 (0.19 for 19 %), 0 unless given."))
    valid_from: datetime | None = strawberry.field(default=None, description=(
        "When it takes effect; defaults to now. Only admins date one back."))
    idle_price_per_minute: Decimal = strawberry.field(default=Decimal(0), description=(
        "Per idle minute beyond the grace (the car done, the connector still occupied). "
        + _PRICE_RANGE))
    idle_grace_minutes: int = strawberry.field(default=0, description=(
        "Free idle minutes per session, 0..1440."))
    idle_fee_cap: Decimal | None = strawberry.field(default=None, description=(
        "The most a session's idle fee comes to, before tax; null: no cap. " + _PRICE_RANGE))
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


@strawberry.input(description="The price list version to remove.")
class RemoveTariffInput:
    id: strawberry.ID = strawberry.field(description=_id_of("tariff"))


@strawberry.input(description="The payment to collect.")
class CapturePaymentInput:
    id: strawberry.ID = strawberry.field(description=_id_of("payment"))


@strawberry.input(description="The payment whose collection failed.")
class FailPaymentInput:
    id: strawberry.ID = strawberry.field(description=_id_of("payment"))


@strawberry.input(description="The payment to pay back, and how much.")
class RefundPaymentInput:
    id: strawberry.ID = strawberry.field(description=_id_of("payment"))
    amount: Decimal | None = strawberry.field(
        default=None, description="How much to pay back, in the payment's currency (major "
                                  "units, e.g. 2.50): part of what is not refunded yet, "
                                  "or (default) all of it.")
