"""The Mutation root. Each mutation translates its input, calls one domain use case and
returns a payload: the object, plus ``errors`` for expected failures (a field and a code),
so clients never parse messages."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, TypeVar

import strawberry

from domain.errors import DomainError
from domain.policy import Viewer
from domain.services import UNSET, ConnectorSpec
from domain.services.refresh_tokens import IssuedRefresh
from domain.tariff_bands import BandInput
from domain.validation import Checks
from graph.commands import CommandMutation
from graph.context import GraphContext
from graph.errors import NOT_READ_BACK, PAYLOAD_ERRORS, UserError, attempt, user_error
from graph.ids import expect_id
from graph.inputs import (
    AddConnectorInput,
    AddVehicleInput,
    CapturePaymentInput,
    CreateCompanyInput,
    CreateStationInput,
    CreateUserInput,
    DeactivateUserInput,
    EndSessionInput,
    EraseMyAccountInput,
    EraseUserInput,
    FailPaymentInput,
    IssueIdTagInput,
    RefundPaymentInput,
    RemoveConnectorInput,
    RemoveIdTagInput,
    RemoveStationInput,
    RemoveTariffInput,
    RemoveVehicleInput,
    SetTariffInput,
    UpdateCompanyInput,
    UpdateConnectorInput,
    UpdateIdTagInput,
    UpdateStationInput,
    UpdateUserInput,
    UpdateVehicleInput,
    checked_id,
    given,
)
from graph.nodes import (
    Company,
    Connector,
    IdTag,
    Payment,
    Session,
    Station,
    Tariff,
    User,
    Vehicle,
    wants,
)
from graph.sites import SiteMutation
from graph.webhooks import WebhookMutation

Info = strawberry.Info
T = TypeVar("T")
log = logging.getLogger("chargegraph.graph")

#: What every mutation's ``input`` argument is, said once and given to each that has no
#: description of its own when the schema is built (``graph.schema``): the contract is
#: the same for all of them.
INPUT_ARGUMENT = ("What to do; each field is described on the input type. Expected "
                  "failures come back in the payload's `errors` (input field and code), "
                  "not as GraphQL errors; every invalid field of the input at once, in "
                  "the input's order.")
#: Arguments of the sign-in mutations (their rules: ``domain.validation``).
Email = Annotated[str, strawberry.argument(description="The account's email (any case).")]
NewPassword = Annotated[str, strawberry.argument(
    description="8 to 256 characters (TOO_SHORT, TOO_LONG), not one of the passwords "
                "guessed first (TOO_WEAK: common ones, one character repeated), both of "
                "it as it is compared: Unicode-normalized (NFKC: full-width letters as "
                "plain ones, a letter and its combining accent as one); for "
                "changePassword, not the current one (UNCHANGED).")]
RefreshToken = Annotated[str, strawberry.argument(
    description="A refresh token, as `refreshToken` in a LoginPayload.")]


def _ctx(info: Info) -> GraphContext:
    return info.context  # type: ignore[no-any-return]


@strawberry.type(description="A signed-in session: a short-lived access token (the bearer "
                             "token) and a long-lived refresh token that gets the next one.")
class LoginPayload:
    token: str | None = strawberry.field(description="The access token: send it as "
                                                     "'Authorization: Bearer <token>'.")
    expires_at: datetime | None = strawberry.field(description=(
        "When the access token expires, UTC; null when signing in failed."))
    refresh_token: str | None = strawberry.field(
        description="Exchange it with refreshToken for a new access token (and a new "
                    "refresh token: this one then stops working); end it with signOut. "
                    "Keep it secret: it is shown only here.")
    refresh_expires_at: datetime | None = strawberry.field(
        description="When the refresh token expires unless used before.")
    user: User | None = strawberry.field(description="Who signed in; null when it failed.")
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


def _failed_sign_in(errors: list[UserError]) -> LoginPayload:
    return LoginPayload(token=None, expires_at=None, refresh_token=None,
                        refresh_expires_at=None, user=None, errors=errors)


async def _signed_in(ctx: GraphContext, user: Any, refresh: IssuedRefresh | None = None
                     ) -> LoginPayload:
    """The tokens of ``user``, who has just proved who they are; ``refresh`` when a
    rotation issued it already, else a new device's (a new refresh family)."""
    if refresh is None:
        # Refused when the account changed while its password was checked (erased,
        # deactivated, a new password): a failed sign-in in the payload, as any other.
        refresh, errors = await attempt(
            ctx, lambda: ctx.services.refresh_tokens.start(user, _agent(ctx)), public=True)
        if refresh is None:
            return _failed_sign_in(errors)
    issued = ctx.tokens.issue(user.id, user.token_epoch, refresh.family_id)
    own_view = GraphContext.build(ctx.services, ctx.tokens, Viewer.of(user))
    return LoginPayload(token=issued.token, expires_at=issued.expires_at,
                        refresh_token=refresh.token, refresh_expires_at=refresh.expires_at,
                        user=User.wrap(user, own_view), errors=[])


def _client(ctx: GraphContext) -> str | None:
    """The caller's address (uvicorn's, ``X-Forwarded-For`` from trusted proxies): what
    sign-in and sign-up limits count by."""
    return getattr(getattr(ctx.request, "client", None), "host", None)


def _agent(ctx: GraphContext) -> str | None:
    """The caller's ``User-Agent``: what a device list names the device by."""
    headers = getattr(ctx.request, "headers", None)
    return headers.get("user-agent") if headers is not None else None


@strawberry.type(description="The answer to `signOut`, `signOutEverywhere` and "
                             "`signOutDevice`.")
class SignOutPayload:
    signed_out: bool = strawberry.field(
        description="True once the session is ended (also when it was already). "
                    "`signOut` and `signOutDevice`: access tokens issued to that device "
                    "stay valid until they expire; `signOutEverywhere`: none does.")
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


@strawberry.type(description="What a mutation of a company returns.")
class CompanyPayload:
    company: Company | None = strawberry.field(description=(
        "The company as the mutation left it (as it was, for a removal); null "
        "when it failed."))
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


@strawberry.type(description="What a mutation of a user returns.")
class UserPayload:
    user: User | None = strawberry.field(description=(
        "The user as the mutation left it (as it was, for a removal); null "
        "when it failed."))
    signed_in: LoginPayload | None = strawberry.field(default=None, description=(
        "Only when `updateUser` changed your OWN password: as `changePassword`, every "
        "earlier token of yours (this request's, and every device's refresh token) is "
        "revoked, and these are your new ones. Null otherwise (a password reset by an "
        "admin or operator signs that user out everywhere and gives no tokens)."))
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


@strawberry.type(description="What a mutation of a vehicle returns.")
class VehiclePayload:
    vehicle: Vehicle | None = strawberry.field(description=(
        "The vehicle as the mutation left it (as it was, for a removal); null "
        "when it failed."))
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


@strawberry.type(description="What a mutation of a card returns.")
class IdTagPayload:
    id_tag: IdTag | None = strawberry.field(description=(
        "The card as the mutation left it (as it was, for a removal); null "
        "when it failed."))
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


@strawberry.type(description="What a mutation of a station returns.")
class StationPayload:
    station: Station | None = strawberry.field(description=(
        "The station as the mutation left it (as it was, for a removal); null "
        "when it failed."))
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


@strawberry.type(description="What a mutation of a connector returns.")
class ConnectorPayload:
    connector: Connector | None = strawberry.field(description=(
        "The connector as the mutation left it (as it was, for a removal); null "
        "when it failed."))
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


@strawberry.type(description="What a mutation of a tariff returns.")
class TariffPayload:
    tariff: Tariff | None = strawberry.field(description=(
        "The tariff as the mutation left it (as it was, for a removal); null "
        "when it failed."))
    in_force: Tariff | None = strawberry.field(default=None, description=(
        "The version of its owner (station or company) and scope (plug standard, power "
        "type, all plugs) in force now, after the mutation: for `removeTariff`, the one "
        "it replaced, in force again; null: none, and sessions starting now are priced by "
        "the owner's next scope and, for a station's, by its company's (or not at all)."))
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


@strawberry.type(description="What a mutation of a session returns.")
class SessionPayload:
    session: Session | None = strawberry.field(description=(
        "The session as the mutation left it (as it was, for a removal); null "
        "when it failed."))
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


@strawberry.type(description="What a mutation of a payment returns.")
class PaymentPayload:
    payment: Payment | None = strawberry.field(description=(
        "The payment as the mutation left it (as it was, for a removal); null "
        "when it failed."))
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


async def _settle(info: Info, payment_id: strawberry.ID, step: str, **options: Any
                  ) -> PaymentPayload:
    ctx = _ctx(info)
    action = getattr(ctx.services.payments, step)

    async def run() -> Any:
        checks = Checks()
        return await action(ctx.viewer, checked_id(checks, payment_id, "payment", "id"),
                            **options, checks=checks)

    payment, errors = await attempt(ctx, run)
    return PaymentPayload(payment=Payment.wrap(payment, ctx) if payment else None,
                          errors=errors)


@strawberry.type(description=(
    "Writes and charger commands. Each returns a payload with the result and `errors`: "
    "expected failures, each with the input field at fault and a stable code."))
class Mutation(CommandMutation, WebhookMutation, SiteMutation):
    # ------------------------------------------------------------- sign-in
    @strawberry.mutation(description="Exchange email and password for an access token "
                                     "and a refresh token.")
    async def login(self, info: Info, email: Email,
                    password: Annotated[str, strawberry.argument(
                        description="The account's password.")]) -> LoginPayload:
        ctx = _ctx(info)
        client = _client(ctx)
        user, errors = await attempt(
            ctx, lambda: ctx.services.accounts.authenticate(email, password, client),
            public=True)
        if user is None:
            return _failed_sign_in(errors)
        return await _signed_in(ctx, user)

    @strawberry.mutation(description="Open a driver account and sign in to it (when the "
                                     "service takes sign-ups: else SIGN_UP_DISABLED).")
    async def sign_up(self, info: Info, email: Email, password: NewPassword,
                      name: Annotated[str, strawberry.argument(
                          description="The driver's name as shown to operators.")]
                      ) -> LoginPayload:
        ctx = _ctx(info)
        client = _client(ctx)
        user, errors = await attempt(ctx, lambda: ctx.services.accounts.sign_up(
            email=email, password=password, name=name, client=client), public=True)
        if user is None:
            return _failed_sign_in(errors)
        return await _signed_in(ctx, user)

    @strawberry.mutation(description="A new access token and refresh token for a refresh "
                                     "token, which stops working. One used already "
                                     "(TOKEN_REUSED) ends its session: every token of "
                                     "its chain, a copy's and the holder's.")
    async def refresh_token(self, info: Info, token: RefreshToken) -> LoginPayload:
        ctx = _ctx(info)
        rotated, errors = await attempt(
            ctx, lambda: ctx.services.refresh_tokens.rotate(token, _agent(ctx)), public=True)
        if rotated is None:
            return _failed_sign_in(errors)
        user, refresh = rotated
        return await _signed_in(ctx, user, refresh)

    @strawberry.mutation(description="End the session of a refresh token (sign this "
                                     "device out).")
    async def sign_out(self, info: Info, token: RefreshToken) -> SignOutPayload:
        ctx = _ctx(info)
        _, errors = await attempt(ctx, lambda: ctx.services.refresh_tokens.revoke(token),
                                  public=True)
        return SignOutPayload(signed_out=not errors, errors=errors)

    @strawberry.mutation(description=(
        "Sign one device out by its id (`User.devices`): its refresh token stops working "
        "at once; access tokens already issued to it stay valid until they expire, as "
        "with signOut. Your own devices, or (admins only) anyone's, audited either way; "
        "another's reads NOT_FOUND. One signed out already answers signedOut too."))
    async def sign_out_device(
            self, info: Info,
            id: Annotated[strawberry.ID, strawberry.argument(
                description="The device's id, as `Device.id` gives it.")]
    ) -> SignOutPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            return await ctx.services.refresh_tokens.sign_out_device(
                ctx.viewer, expect_id(str(id), "refresh_family", "id"))

        device, errors = await attempt(ctx, run)
        return SignOutPayload(signed_out=device is not None, errors=errors)

    @strawberry.mutation(description=(
        "Sign out everywhere: every refresh token (each device's) and every access token "
        "of the user is revoked, this request's too, and their open subscriptions close "
        "(4403), as a password change does; sign in again after. Yourself, or (admins "
        "only, audited) `userId`."))
    async def sign_out_everywhere(
            self, info: Info,
            user_id: Annotated[strawberry.ID | None, strawberry.argument(
                description="Whose (admins); yourself when left out.")] = None
    ) -> SignOutPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.accounts.sign_out_everywhere(
                ctx.viewer, checked_id(checks, user_id, "user", "userId"), checks=checks)

        user, errors = await attempt(ctx, run)
        return SignOutPayload(signed_out=user is not None, errors=errors)

    @strawberry.mutation(description="Change your own password. Every earlier token (all "
                                     "devices) is revoked; the payload has new ones.")
    async def change_password(self, info: Info,
                              current_password: Annotated[str, strawberry.argument(
                                  description="The password in use now.")],
                              new_password: NewPassword) -> LoginPayload:
        ctx = _ctx(info)
        user, errors = await attempt(ctx, lambda: ctx.services.accounts.change_password(
            ctx.viewer, current_password=current_password, new_password=new_password))
        if user is None:
            return _failed_sign_in(errors)
        return await _signed_in(ctx, user)

    # ------------------------------------------------------------- companies and users
    @strawberry.mutation(description=(
        "A new company (admins only); names are unique (DUPLICATE)."))
    async def create_company(self, info: Info, input: CreateCompanyInput) -> CompanyPayload:
        ctx = _ctx(info)
        company, errors = await attempt(
            ctx, lambda: ctx.services.accounts.create_company(ctx.viewer, name=input.name),
            input=input)
        return CompanyPayload(company=Company.wrap(company, ctx) if company else None,
                              errors=errors)

    @strawberry.mutation(description=(
        "Rename a company: admins, and operators their own."))
    async def update_company(self, info: Info, input: UpdateCompanyInput) -> CompanyPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.accounts.update_company(
                ctx.viewer, checked_id(checks, input.id, "company", "id"), name=input.name,
                checks=checks)

        company, errors = await attempt(ctx, run, input=input)
        return CompanyPayload(company=Company.wrap(company, ctx) if company else None,
                              errors=errors)

    @strawberry.mutation(description=(
        "A new account: admins create anyone, operators drivers and operators of their "
        "own company."))
    async def create_user(self, info: Info, input: CreateUserInput) -> UserPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.accounts.create_user(
                ctx.viewer, email=input.email, password=input.password, name=input.name,
                role=input.role,  # type: ignore[arg-type]
                company_id=checked_id(checks, input.company_id, "company", "companyId"),
                checks=checks)

        user, errors = await attempt(ctx, run, input=input)
        return UserPayload(user=User.wrap(user, ctx) if user else None, errors=errors)

    @strawberry.mutation(description=(
        "Change what is given. Users change their own name, email and password (email and "
        "password with `currentPassword`); admins, and operators for their company's "
        "non-admin people, also role, company and `active`, and reset passwords. A new "
        "password revokes every token of the user: your own new password gives you new "
        "ones in `signedIn` (as `changePassword`) when you select it; another's signs "
        "them out everywhere."))
    async def update_user(self, info: Info, input: UpdateUserInput) -> UserPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.accounts.update_user(
                ctx.viewer, checked_id(checks, input.id, "user", "id"),
                name=given(input.name), email=given(input.email),
                password=given(input.password), role=given(input.role),
                company_id=checked_id(checks, input.company_id, "company", "companyId"),
                active=given(input.active), current_password=given(input.current_password),
                checks=checks, client=_client(ctx))

        user, errors = await attempt(ctx, run, input=input)
        if user is None:
            return UserPayload(user=None, errors=errors)
        # One's own new password revoked the caller's tokens too (the token epoch moved
        # on): the new pair, as changePassword gives, keeps them signed in (QA s33: the
        # next request failed INVALID_TOKEN, the refresh token dead as well). Only when
        # asked for (``wants``: through aliases and fragments): each pair stores a refresh
        # family, a device signed in that nobody would hold (review r33).
        own_password = user.id == ctx.viewer.user_id \
            and given(input.password) not in (UNSET, None) and wants(info, "signedIn")
        return UserPayload(user=User.wrap(user, ctx),
                           signed_in=await _signed_in(ctx, user) if own_password else None,
                           errors=errors)

    @strawberry.mutation(description="Blocks sign-in and invalidates the user's tokens.")
    async def deactivate_user(self, info: Info, input: DeactivateUserInput) -> UserPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.accounts.deactivate_user(
                ctx.viewer, checked_id(checks, input.id, "user", "id"), checks=checks)

        user, errors = await attempt(ctx, run)
        return UserPayload(user=User.wrap(user, ctx) if user else None, errors=errors)

    @strawberry.mutation(description=(
        "Erase an account (admins; the right to erasure): its name, email (free for a "
        "new sign-up), password and cars' plates are anonymised, here and in the audit "
        "log's entries about it; it is deactivated for good (every token revoked); its "
        "cards are removed (chargers refuse them) and its cars removed (sessions keep "
        "showing the car); its own webhooks (of no company) are removed, their URL and "
        "errors scrubbed from the audit log, and its company's disabled. Its sessions, "
        "payments and refunds stay under its id; a session of theirs refused at its "
        "start (its charger never stopped it) is closed (an ENDED event), billing "
        "nothing. IN_USE while a session of theirs accepted at its start is under way, "
        "while they own stations, and for the last admin; CHANGED when it kept meeting "
        "changes (try again)."))
    async def erase_user(self, info: Info, input: EraseUserInput) -> UserPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.erasure.erase_user(
                ctx.viewer, checked_id(checks, input.id, "user", "id"), checks=checks)

        user, errors = await attempt(ctx, run)
        return UserPayload(user=User.wrap(user, ctx) if user else None, errors=errors)

    @strawberry.mutation(description=(
        "Erase your own account, confirmed with your password (`eraseUser` says what "
        "goes and what stays: your sessions refused at their start are closed, an "
        "ENDED event; IN_USE while one accepted is under way). Signs you out "
        "everywhere; the payload's user is the account as erased. Its IN_USE and "
        "CHANGED errors name no field."))
    async def erase_my_account(self, info: Info, input: EraseMyAccountInput
                               ) -> UserPayload:
        ctx = _ctx(info)
        user, errors = await attempt(ctx, lambda: ctx.services.erasure.erase_my_account(
            ctx.viewer, input.current_password), input=input)
        return UserPayload(user=User.wrap(user, ctx) if user else None, errors=errors)

    # ------------------------------------------------------------- vehicles and id tags
    @strawberry.mutation(description=(
        "Register a vehicle for yourself, or (admins, operators for their company's people) "
        "for `ownerId`; plates are unique (DUPLICATE)."))
    async def add_vehicle(self, info: Info, input: AddVehicleInput) -> VehiclePayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.fleet.add_vehicle(
                ctx.viewer, license_plate=input.license_plate,
                owner_id=checked_id(checks, input.owner_id, "user", "ownerId"),
                make=input.make, model=input.model, battery_kwh=input.battery_kwh,
                checks=checks)

        vehicle, errors = await attempt(ctx, run, input=input)
        return VehiclePayload(vehicle=Vehicle.wrap(vehicle, ctx) if vehicle else None,
                              errors=errors)

    @strawberry.mutation(description=(
        "Change what is given of a vehicle: its owner, or whoever manages its owner."))
    async def update_vehicle(self, info: Info, input: UpdateVehicleInput) -> VehiclePayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.fleet.update_vehicle(
                ctx.viewer, checked_id(checks, input.id, "vehicle", "id"),
                owner_id=checked_id(checks, input.owner_id, "user", "ownerId"),
                license_plate=given(input.license_plate), make=given(input.make),
                model=given(input.model), battery_kwh=given(input.battery_kwh),
                checks=checks)

        vehicle, errors = await attempt(ctx, run, input=input)
        return VehiclePayload(vehicle=Vehicle.wrap(vehicle, ctx) if vehicle else None,
                              errors=errors)

    @strawberry.mutation(description=(
        "Takes the vehicle out of its owner's garage: no list of vehicles, card link or "
        "remote start offers it any more, and its plate may be added again. It stays as "
        "the vehicle of the sessions charged with it (`removedAt` set). Returns it "
        "removed. NOT_FOUND once removed; IN_USE while it charges."))
    async def remove_vehicle(self, info: Info, input: RemoveVehicleInput) -> VehiclePayload:
        ctx = _ctx(info)

        async def run() -> Any:
            return await ctx.services.fleet.remove_vehicle(
                ctx.viewer, expect_id(str(input.id), "vehicle", "id")
            )

        vehicle, errors = await attempt(ctx, run)
        return VehiclePayload(vehicle=Vehicle.wrap(vehicle, ctx) if vehicle else None,
                              errors=errors)

    @strawberry.mutation(description=(
        "A new charging card (OCPP idTag) for yourself, or for `userId` if you manage that "
        "user; tags are unique (DUPLICATE). A driver issuing for themselves holds at most "
        "the deployment's CHARGEGRAPH_MAX_CARDS_PER_DRIVER cards, any status "
        "(LIMIT_REACHED on `tag`: remove one first); staff issuing are not capped. A "
        "number refused as someone's (DUPLICATE, IN_USE) counts against you: 20 an hour, "
        "then TOO_MANY_ATTEMPTS before any number is looked at (admins not counted)."))
    async def issue_id_tag(self, info: Info, input: IssueIdTagInput) -> IdTagPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.fleet.issue_id_tag(
                ctx.viewer, tag=input.tag,
                user_id=checked_id(checks, input.user_id, "user", "userId"),
                vehicle_id=checked_id(checks, input.vehicle_id, "vehicle", "vehicleId"),
                expires_at=input.expires_at, parent_tag=input.parent_id_tag, checks=checks)

        id_tag, errors = await attempt(ctx, run, input=input)
        return IdTagPayload(id_tag=IdTag.wrap(id_tag, ctx) if id_tag else None, errors=errors)

    @strawberry.mutation(description=(
        "Change what is given of a card. Its holder may link a vehicle, block it (lost) "
        "and lift a block of their own; other unblocking and the expiry are for admins "
        "and the holder's operators. Blocking it stops its session under way and "
        "cancels its reservations; blocked or expired, the chargers' local lists that "
        "accept it are told (in the background). A `parentIdTag` refused as another "
        "company's (IN_USE) counts against you as issueIdTag's refusals do: once spent, "
        "edits naming a `parentIdTag` answer TOO_MANY_ATTEMPTS (admins not counted)."))
    async def update_id_tag(self, info: Info, input: UpdateIdTagInput) -> IdTagPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.fleet.update_id_tag(
                ctx.viewer, checked_id(checks, input.id, "id_tag", "id"),
                status=given(input.status),
                vehicle_id=checked_id(checks, input.vehicle_id, "vehicle", "vehicleId"),
                expires_at=given(input.expires_at), parent_tag=given(input.parent_id_tag),
                checks=checks)

        id_tag, errors = await attempt(ctx, run, input=input)
        return IdTagPayload(id_tag=IdTag.wrap(id_tag, ctx) if id_tag else None, errors=errors)

    @strawberry.mutation(description=(
        "Removes a card (its sessions keep the tag they were charged with); not while it "
        "charges (IN_USE), unlike a block: a removal is for a card out of use, and the "
        "session under way stays the card's until it stops. To end it now, block the "
        "card (`updateIdTag` status BLOCKED stops its session at once), then remove it. Its "
        "reservations are cancelled and the chargers' local lists that accept it told it "
        "is blocked. Returns it as it was."))
    async def remove_id_tag(self, info: Info, input: RemoveIdTagInput) -> IdTagPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            return await ctx.services.fleet.remove_id_tag(
                ctx.viewer, expect_id(str(input.id), "id_tag", "id"))

        id_tag, errors = await attempt(ctx, run)
        return IdTagPayload(id_tag=IdTag.wrap(id_tag, ctx) if id_tag else None, errors=errors)

    # ------------------------------------------------------------- stations
    @strawberry.mutation(description="A station and its connectors, in one write.")
    async def create_station(self, info: Info, input: CreateStationInput) -> StationPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            location = input.location
            checks = Checks()
            station, _ = await ctx.services.stations.create_station(
                ctx.viewer, cp_id=input.cp_id, name=input.name,
                company_id=checked_id(checks, input.company_id, "company", "companyId"),
                owner_id=checked_id(checks, input.owner_id, "user", "ownerId"),
                lat=location.lat if location else None,
                lon=location.lon if location else None,
                address=location.address if location else None,
                connectors=[
                    ConnectorSpec(c.connector_id, c.type, c.max_kw,  # type: ignore[arg-type]
                                  c.phases)
                    for c in input.connectors
                ],
                password=input.password, checks=checks,
            )
            return station

        station, errors = await attempt(ctx, run, input=input)
        return StationPayload(station=Station.wrap(station, ctx) if station else None,
                              errors=errors)

    @strawberry.mutation(description=(
        "Change what is given of a station (admins and its operators); only admins move "
        "it to another company. A null `location` removes it."))
    async def update_station(self, info: Info, input: UpdateStationInput) -> StationPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            location = given(input.location)
            place: dict[str, Any] = {}
            if location is None:
                place = {"lat": None, "lon": None, "address": None}
            elif location is not UNSET:
                place = {"lat": location.lat, "lon": location.lon, "address": location.address}
            checks = Checks()
            return await ctx.services.stations.update_station(
                ctx.viewer, checked_id(checks, input.id, "station", "id"),
                name=given(input.name),
                company_id=checked_id(checks, input.company_id, "company", "companyId"),
                owner_id=checked_id(checks, input.owner_id, "user", "ownerId"),
                password=given(input.password), registration=given(input.registration),
                heartbeat_interval=given(input.heartbeat_interval), **place, checks=checks,
            )

        station, errors = await attempt(ctx, run, input=input)
        return StationPayload(station=Station.wrap(station, ctx) if station else None,
                              errors=errors)

    @strawberry.mutation(description=(
        "Removes a station and its connectors (its live reservations cancelled at the "
        "charger first); its sessions, payments and price lists stay in the history. "
        "IN_USE while a session charges there; one refused at its start (its charger "
        "never stopped it) is closed (an ENDED event), billing nothing."))
    async def remove_station(self, info: Info, input: RemoveStationInput) -> StationPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.stations.remove_station(
                ctx.viewer, checked_id(checks, input.id, "station", "id"), checks=checks)

        station, errors = await attempt(ctx, run)
        return StationPayload(station=Station.wrap(station, ctx) if station else None,
                              errors=errors)

    @strawberry.mutation(description=(
        "A new plug on a station (admins and its operators)."))
    async def add_connector(self, info: Info, input: AddConnectorInput) -> ConnectorPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.stations.add_connector(
                ctx.viewer, checked_id(checks, input.station_id, "station", "stationId"),
                ConnectorSpec(input.connector_id, input.type,  # type: ignore[arg-type]
                              input.max_kw, input.phases), checks=checks,
            )

        connector, errors = await attempt(ctx, run, input=input)
        return ConnectorPayload(connector=Connector.wrap(connector, ctx) if connector else None,
                                errors=errors)

    @strawberry.mutation(description=(
        "Change a plug's type, power or phases (admins and its station's operators)."))
    async def update_connector(self, info: Info, input: UpdateConnectorInput
                               ) -> ConnectorPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.stations.update_connector(
                ctx.viewer, checked_id(checks, input.id, "connector", "id"),
                type=given(input.type), max_kw=given(input.max_kw),
                phases=given(input.phases), checks=checks,
            )

        connector, errors = await attempt(ctx, run, input=input)
        return ConnectorPayload(connector=Connector.wrap(connector, ctx) if connector else None,
                                errors=errors)

    @strawberry.mutation(description=(
        "Remove a plug (admins and its station's operators); not while it charges "
        "(IN_USE): a session refused at its start left open on it is closed (an ENDED "
        "event). Its live reservations are cancelled, at the charger too. Returns it "
        "as it was."))
    async def remove_connector(self, info: Info, input: RemoveConnectorInput) -> ConnectorPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.stations.remove_connector(
                ctx.viewer, checked_id(checks, input.id, "connector", "id"), checks=checks)

        connector, errors = await attempt(ctx, run)
        return ConnectorPayload(connector=Connector.wrap(connector, ctx) if connector else None,
                                errors=errors)

    # ------------------------------------------------------------- sessions
    @strawberry.mutation(description=(
        "End an ACTIVE session its charger will never stop (it lost the transaction or "
        "is gone): closed with the energy last metered, priced, reason `Other`. For "
        "admins and the operators who keep the session's books (the company that ran "
        "its station when it started, or its owner of no company): they bill it, so "
        "after a station changed hands mid-session it is the old operators who end "
        "it, not the station's operators now. The charger is not asked (see "
        "`remoteStopTransaction`)."))
    async def end_session(self, info: Info, input: EndSessionInput) -> SessionPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.charging.end_session(
                ctx.viewer, checked_id(checks, input.id, "session", "id"), input.end_time,
                checks=checks)

        session, errors = await attempt(ctx, run)
        return SessionPayload(session=Session.wrap(session, ctx) if session else None,
                              errors=errors)

    # ------------------------------------------------------------- prices
    @strawberry.mutation(description="A new price list for a company or one station, in "
                                     "force from `validFrom` (default now); the version "
                                     "in force then ends there (`validUntil`).")
    async def set_tariff(self, info: Info, input: SetTariffInput) -> TariffPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.tariffs.set_tariff(
                ctx.viewer,
                company_id=checked_id(checks, input.company_id, "company", "companyId"),
                station_id=checked_id(checks, input.station_id, "station", "stationId"),
                price_per_kwh=input.price_per_kwh, currency=input.currency,
                price_per_minute=input.price_per_minute, session_fee=input.session_fee,
                tax_rate=input.tax_rate, valid_from=input.valid_from,
                idle_price_per_minute=input.idle_price_per_minute,
                idle_grace_minutes=input.idle_grace_minutes, idle_fee_cap=input.idle_fee_cap,
                energy_bands=[BandInput(band.days, band.start, band.end, band.price_per_kwh)
                              for band in input.energy_bands],
                time_zone=input.time_zone, connector_type=input.connector_type,
                power_type=input.power_type, checks=checks,
            )

        tariff, errors = await attempt(ctx, run, input=input)
        return await _tariff_payload(ctx, tariff, errors)

    @strawberry.mutation(description=(
        "Remove a price list version (who may set it), undoing its `setTariff`: one not "
        "in force yet that has priced no session is deleted; the one in force ends now "
        "(`validUntil`; one a session was priced by already, just after it). The version "
        "it replaced is in force again (its `validUntil` back as before). One that "
        "replaced none leaves its scope without a price: sessions starting later are "
        "priced by its owner's next scope (a plug standard's by its power type's, that by "
        "the all-plugs one) and, for a station's, by its company's. Sessions started "
        "before keep it. One a later version replaced, or removed already, is "
        "INVALID_STATE. Returns it as it was deleted or as it ends."))
    async def remove_tariff(self, info: Info, input: RemoveTariffInput) -> TariffPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.tariffs.remove_tariff(
                ctx.viewer, checked_id(checks, input.id, "tariff", "id"), checks=checks)

        tariff, errors = await attempt(ctx, run)
        return await _tariff_payload(ctx, tariff, errors)

    # ------------------------------------------------------------- payments
    @strawberry.mutation(description="Collect a PENDING (or FAILED) payment.")
    async def capture_payment(self, info: Info, input: CapturePaymentInput) -> PaymentPayload:
        return await _settle(info, input.id, "capture")

    @strawberry.mutation(description=(
        "Mark a PENDING payment as failed. A capture already under way (its provider "
        "asked before the fail was written) may still record the payment CAPTURED "
        "afterwards: its money moved."))
    async def fail_payment(self, info: Info, input: FailPaymentInput) -> PaymentPayload:
        return await _settle(info, input.id, "fail")

    @strawberry.mutation(description="Pay a CAPTURED payment back, all of it or part "
                                     "(`amount`); it is REFUNDED once nothing is left.")
    async def refund_payment(self, info: Info, input: RefundPaymentInput) -> PaymentPayload:
        return await _settle(info, input.id, "refund", amount=input.amount)


async def _tariff_payload(ctx: GraphContext, tariff: Any, errors: list[UserError]
                          ) -> TariffPayload:
    """A price mutation's answer, with what prices its owner's scope now (read after the
    write: a change landing since shows too)."""
    if tariff is None:
        return TariffPayload(tariff=None, errors=errors)
    try:
        in_force = await ctx.services.tariffs.in_force_beside(ctx.viewer, tariff)
    except DomainError as exc:
        # The write landed: failing the answer (STORE_UNAVAILABLE, retryable) made a
        # client send it again, and a second version was set (review s31): told
        # NOT_READ_BACK, no retryable code, so its idempotency key keeps the answer.
        log.warning("tariff %s written; reading what is in force beside it failed: %s",
                    tariff.id, exc.message)
        return TariffPayload(tariff=Tariff.wrap(tariff, ctx), in_force=None, errors=[
            *errors, user_error(DomainError(
                "the change was written, but what is in force beside it could not be "
                f"read ({exc.message}): read it with a query, do not send it again",
                code=NOT_READ_BACK))])
    return TariffPayload(tariff=Tariff.wrap(tariff, ctx),
                         in_force=Tariff.wrap(in_force, ctx) if in_force else None,
                         errors=errors)
