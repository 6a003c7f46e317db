"""The object types of the graph. Leaves are plain attributes copied from the record (no
resolver per leaf); relations are async and go through the per-request loaders, with the
viewer's scope applied by the domain. Fields a viewer may not see read as null."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import strawberry
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
)
from strawberry.scalars import JSON

from domain import entities as d
from domain import pricing
from domain.availability import connectors_free
from domain.command_rules import without_credentials
from domain.currencies import major_units, price_shown, rate_shown
from domain.geo import distance_km
from domain.ids import is_id
from domain.ocpp16 import member
from domain.policy import Seen
from domain.query import ALL, Eq, Filter, Range, Sort, all_of, newest_first
from domain.services.charging import last_known, unheard_since_restore
from domain.services.configuration import MAX_KEYS, is_secret
from domain.services.fleet import IN_GARAGE, expiry_set_by_staff
from domain.services.intervals import IdleSpan
from domain.services.reads import Load
from domain.services.refresh_tokens import AGENT_MAX, DEVICES_LIMIT
from domain.services.tariffs import LATEST_VERSION_FIRST, PricedAt, open_at
from domain.tariff_bands import session_split
from graph import history, signed
from graph.command_types import (
    AuthorizationStatus,
    ChargePointErrorCode,
    ConfigurationKey,
    DiagnosticsStatus,
    FirmwareStatus,
    StopReason,
    shown_error_code,
)
from graph.enums import (
    AuditAction,
    ConnectorStatus,
    ConnectorType,
    IdTagStatus,
    MeterAnomaly,
    PaymentStatus,
    PowerType,
    Registration,
    ReservationState,
    Role,
    SessionState,
)
from graph.filters import GeoPointInput, check_point
from graph.history import ConnectionEvent, Measurand, MeterSample, Since, Until
from graph.ids import TYPE_BY_KIND, shown_actor, to_global_id
from graph.loaders import Loaders
from graph.relay import Connection, Node, PageArgs, nested_connection
from graph.scalars import BigInt
from graph.signed import SignedMeterValue

if TYPE_CHECKING:
    from graph.context import GraphContext
    from graph.sites import Site

Info = strawberry.Info
NodeT = TypeVar("NodeT")

NEWEST_FIRST = (Sort("start_time", descending=True),)
BY_CONNECTOR = (Sort("connector_id"),)
MAX_CONNECTORS = 100
#: The most refunds listed under one payment (newest first). Refunds are partial and rare
#: (a disputed part of a session); a payment paid back in more parts lists its newest,
#: and ``Payment.refunded`` is still the whole sum.
MAX_REFUNDS = 100
#: A payment's refunds newest first, ``id`` descending too (ids count up within a
#: millisecond).
REFUNDS_NEWEST_FIRST = newest_first("at")
#: The most configuration keys shown of one station (``services.configuration.MAX_KEYS``).
MAX_CONFIGURATION_KEYS = MAX_KEYS


def _ctx(info: Info) -> GraphContext:
    return info.context  # type: ignore[no-any-return]


def garage(ctx: GraphContext) -> Filter:
    """The cars a list of vehicles shows: in garages (``IN_GARAGE``), and of a driver
    their own only (``Policy.theirs``), not the handed-over cars of their sessions that
    their scope also reads. A driver's list thus asks the owner's index alone
    (``all_of`` absorbs their scope's sub-select of sessions)."""
    return all_of(IN_GARAGE, ctx.services.policy.theirs(ctx.viewer, d.Vehicle.kind))


async def _load(info: Info, kind: type[d.Record], record_id: str | None) -> Any:
    if record_id is None:
        return None
    return await _ctx(info).loaders.by_id(kind).load(record_id)


def _wrap_or_none(node: Any, record: d.Record | None, ctx: GraphContext) -> Any:
    return node.wrap(record, ctx) if record is not None else None


async def _related(info: Info, node: Any, record_id: str | None) -> Any:
    """The node of a to-one relation (``Session.user``, ``Payment.session`` …) through the
    per-request loader of its kind; ``None`` when missing or hidden."""
    return _wrap_or_none(node, await _load(info, RECORD_OF_NODE[node], record_id), _ctx(info))


def _related_now(info: Info, node: Any, record_id: str | None) -> Any:
    """A to-one relation, at once when the request already loaded it (a parent
    prefetched it), else as an awaitable that loads it in the next batch."""
    if record_id is None:
        return None
    ctx = _ctx(info)
    return _now_or_later(ctx.loaders.by_id(RECORD_OF_NODE[node]), record_id,
                         lambda record: _wrap_or_none(node, record, ctx))


def _now_or_later(loader: Any, key: Any, answer: Callable[[Any], Any]) -> Any:
    """``answer(value)`` at once when the request already loaded ``key`` (a parent
    prefetched it), else an awaitable of it that loads ``key`` in the next batch."""
    hit, value = loader.peek(key)
    if hit:
        return answer(value)

    async def later() -> Any:
        value = answer(await loader.load(key))
        # ``answer`` may load more in turn (an estimate's idle time after its tariff).
        return await value if inspect.isawaitable(value) else value
    return later()


#: Answers of ``wants`` by (selection nodes, path). Every row of a page asks the same
#: question about the same part of the document, and the parser cache hands the same
#: document (the same node objects) to every request that sends it again; each answer
#: keeps its nodes alive, so their ids cannot be reused by another document's nodes
#: while it is cached. Bounded: emptied when full (a new document's answers cost a walk
#: of its selection, microseconds).
_WANTS: dict[tuple[tuple[int, ...], tuple[str, ...]], tuple[bool, list[FieldNode]]] = {}
_WANTS_LIMIT = 4096


def wants(info: Info, *path: str) -> bool:
    """Whether this field's selection (through fragments) asks for the nested ``path``.
    Read from graphql-core's AST (strawberry's ``info.selected_fields`` converts the whole
    selection on every call, which per row of a page was a fifth of a nested query), and
    answered once for each part of each document. The answer depends on the document
    alone: a fragment's name means one fragment within a document, and ``@skip``/
    ``@include`` are not looked at (a prefetch of something skipped costs a load, not a
    wrong answer)."""
    raw = info._raw_info
    key = (tuple(map(id, raw.field_nodes)), path)
    hit = _WANTS.get(key)
    if hit is None:
        answer = any(_ast_wants(node.selection_set, raw.fragments, path)
                     for node in raw.field_nodes)
        if len(_WANTS) >= _WANTS_LIMIT:
            _WANTS.clear()
        _WANTS[key] = hit = (answer, list(raw.field_nodes))
    return hit[0]


def _ast_wants(selection_set: SelectionSetNode | None,
               fragments: dict[str, FragmentDefinitionNode], path: tuple[str, ...],
               seen: dict[tuple[str, int], bool] | None = None) -> bool:
    """``seen``: the answer for each fragment and remaining path already looked into.
    A fragment is looked into once per path, not at each of its spreads: a chain of
    fragments each spreading the next twice would take exponential time."""
    if not path:
        return True
    if selection_set is None:
        return False
    if seen is None:
        seen = {}
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value == path[0] and _ast_wants(
                    selection.selection_set, fragments, path[1:], seen):
                return True
        elif isinstance(selection, InlineFragmentNode):
            if _ast_wants(selection.selection_set, fragments, path, seen):
                return True
        elif isinstance(selection, FragmentSpreadNode):
            key = (selection.name.value, len(path))
            answer = seen.get(key)
            if answer is None:
                fragment = fragments.get(key[0])
                seen[key] = False  # a cycle (refused by validation) ends here
                answer = seen[key] = fragment is not None and _ast_wants(
                    fragment.selection_set, fragments, path, seen)
            if answer:
                return True
    return False


def _active_sessions(ctx: GraphContext) -> Any:
    """The loader of a station's active sessions (by station id)."""
    return ctx.loaders.shared(_new_active_sessions_loader)


def _connectors_of(ctx: GraphContext) -> Any:
    """The loader of a station's connectors (by station id): for a station id a record
    names (a session's, an allocation's), which the viewer may not see."""
    return ctx.loaders.shared(_new_connectors_loader)


def _connectors_under(ctx: GraphContext) -> Any:
    """The loader of the connectors of stations the viewer sees, read through their scope
    (``Station._under_seen``): asked by station id alone, the station rule having been
    applied to the station itself (``Policy.scope_under``'s ``seen``)."""
    return ctx.loaders.shared(_new_connectors_under_loader)


def _connectors_named(ctx: GraphContext, station_id: str) -> Any:
    """The loader to read the connectors of the station a record names (a session's)
    from: the one of stations seen when it holds them (the same records: the policy
    equates the two, ``test_lists_under_stations_seen_are_the_scope_s``), so a
    station's connectors and its sessions' cost one store call; else ``_connectors_of``."""
    under = _connectors_under(ctx)
    return under if under.peek(station_id)[0] else _connectors_of(ctx)


def _payment_of(ctx: GraphContext) -> Any:
    """The loader of a session's payment (by session id)."""
    return ctx.loaders.shared(_new_payment_loader)


def _new_active_sessions_loader(loaders: Loaders) -> Any:
    return loaders.many_by(d.Session, "station_id", Eq("state", d.SessionState.ACTIVE), (),
                           MAX_CONNECTORS)


def _new_connectors_loader(loaders: Loaders) -> Any:
    return loaders.many_by(d.Connector, "station_id", ALL, BY_CONNECTOR, MAX_CONNECTORS)


def _new_connectors_under_loader(loaders: Loaders) -> Any:
    return loaders.many_by(d.Connector, "station_id", ALL, BY_CONNECTOR, MAX_CONNECTORS,
                           seen="station")


def _configuration_of(ctx: GraphContext, seen: str | None) -> Any:
    """The loader of a station's configuration (by station id), by folded key: the order
    a reader looks a key up in, whatever its case. ``seen`` as ``Station._seen_kind``."""
    return ctx.loaders.many_by(d.ConfigurationKey, "station_id", ALL, (Sort("folded_key"),),
                               MAX_CONFIGURATION_KEYS, seen)


def _new_payment_loader(loaders: Loaders) -> Any:
    return loaders.one_by(d.Payment, "session_id", ALL)


def _new_refunds_loader(loaders: Loaders) -> Any:
    # Scoped under their payments (``policy.FOLLOW_PARENT``): seen by whoever sees the
    # payment, one call for a page of payments.
    return loaders.many_by(d.Refund, "payment_id", ALL, REFUNDS_NEWEST_FIRST, MAX_REFUNDS)


async def _prefetch_active_sessions(ctx: GraphContext, station_ids: list[str],
                                    wants_below: Callable[..., bool]) -> None:
    """The active sessions of these stations, and below them what ``wants_below(*path)``
    selects: one batched call per level. Their failing to load leaves the levels below
    to each row's resolvers, which tell it (``BatchLoader.fetch``)."""
    groups = await _active_sessions(ctx).fetch(station_ids)
    if groups is not None:
        await Session.prefetch(ctx, [s for group in groups for s in group], wants_below)


def _on_connector(records: Sequence[Any], connector_id: int) -> Any:
    """The record of ``records`` (a station's connectors or sessions) on ``connector_id``."""
    return next((r for r in records if r.connector_id == connector_id), None)


def _page(first: int | None, after: str | None, last: int | None, before: str | None
          ) -> PageArgs:
    return PageArgs(first=first, after=after, last=last, before=before)


@strawberry.interface(description="Who created and last changed a record, and when.")
class Audited:
    created_at: datetime = strawberry.field(description="When the record was created, UTC.")
    updated_at: datetime = strawberry.field(description=(
        "When it last changed, UTC. A user or vehicle in a reduced view (seen by name or "
        "plate only) reads its `createdAt`: its last change may be a private one."))
    created_by: str | None = strawberry.field(description=(
        "Who created it: a user's global id (as `User.id`), `ocpp:<cpId>` or `system`; "
        "null where the viewer may not know."))
    updated_by: str | None = strawberry.field(description=(
        "Who changed it last, as `createdBy`; null where the viewer may not know."))
    #: The record (``_audited`` sets it): its stamps as stored, a user's raw id.
    _r: strawberry.Private[d.Record]

    @strawberry.field(description="The user who created it, when a user did and the "
                                  "viewer may see them (`createdBy` is their id).")
    async def created_by_user(self, info: Info) -> User | None:
        # The record's stamp, raw: ``created_by`` is it as shown, null when hidden.
        return await _actor_user(info, self.created_by and self._r.created_by)

    @strawberry.field(description="The user who changed it last, when a user did and the "
                                  "viewer may see them.")
    async def updated_by_user(self, info: Info) -> User | None:
        return await _actor_user(info, self.updated_by and self._r.updated_by)


async def _actor_user(info: Info, actor: str | None) -> User | None:
    """The user an audit stamp names (a user's record id as stored, not ``ocpp:…`` or
    ``system``), through the request's batched loads: a page of records asks for their
    authors once."""
    if actor is None or not is_id(actor):
        return None
    return await _related(info, User, actor)  # type: ignore[no-any-return]


def _loading(ctx: GraphContext) -> Load:
    """``ReadService.visible_ids``' ``load`` through the request's batched loads: one
    read per kind for a page."""
    async def load(kind: type[d.Record], ids: Sequence[str]) -> list[d.Record | None]:
        loader = ctx.loaders.by_id(kind)
        return list(await asyncio.gather(*(loader.load(i) for i in ids)))
    return load


def _staff(ctx: GraphContext) -> bool:
    """Whether the viewer sees the audit stamps of shared, public records (the policy's
    ``sees_audit_stamps``)."""
    return ctx.services.policy.sees_audit_stamps(ctx.viewer)


_new_object = object.__new__


def _node(cls: type[NodeT], fields: dict[str, Any]) -> NodeT:
    """An instance of the node type ``cls`` holding ``fields``, made without the dataclass
    ``__init__``: a nested page builds a node per row (1,100 for ``stations(first: 100)
    { connectors { activeSession { user vehicle } } }``), and passing a dozen keyword
    arguments through ``__init__`` cost half again as much as filling the instance's
    dict. ``fields`` must name every dataclass field of ``cls``, no more and no less
    (``tests/graph/test_nodes.py`` checks each ``wrap``)."""
    node = _new_object(cls)
    node.__dict__ = fields
    return node


def _audited(cls: type[NodeT], r: d.Record, fields: dict[str, Any], visible: bool = True,
             *, changes_visible: bool = True) -> NodeT:
    """``_node`` for an ``Audited`` type: adds the record and its audit stamps (who made
    and changed it, hidden where the viewer may not know). ``changes_visible`` false (a
    person's record in a reduced view): ``updatedAt`` reads ``createdAt``, since the time
    of the last change is the time of a private one (a deactivation, a new email)."""
    fields["_r"] = r
    fields["created_at"] = r.created_at
    fields["updated_at"] = r.updated_at if changes_visible else r.created_at
    fields["created_by"] = shown_actor(r.created_by) if visible else None
    fields["updated_by"] = shown_actor(r.updated_by) if visible else None
    return _node(cls, fields)


@strawberry.type(description="A money amount, exact.")
class Money:
    amount_minor: BigInt = strawberry.field(
        description="In the currency's minor unit (cents; whole yen for JPY).")
    currency: str = strawberry.field(description="ISO 4217 code, e.g. EUR.")

    @strawberry.field(description="The amount in major units, e.g. 12.34.")
    def amount(self) -> Decimal:
        return major_units(self.amount_minor, self.currency)


@strawberry.type(description="Where a station stands.")
class Location:
    lat: float = strawberry.field(description="Latitude in degrees (WGS 84), -90 to 90.")
    lon: float = strawberry.field(description="Longitude in degrees (WGS 84), -180 to 180.")
    address: str | None = strawberry.field(description="Free text as entered; null when "
                                                       "none was.")


# ------------------------------------------------------------------------- accounts
@strawberry.type(description="An operator business: groups stations and staff.")
class Company(Node, Audited):
    name: str = strawberry.field(description="Unique among companies.")
    _r: strawberry.Private[d.Company]

    @classmethod
    def wrap(cls, r: d.Company, ctx: GraphContext) -> Company:
        return _audited(cls, r, {"name": r.name})

    @strawberry.field(description="The stations it runs, in creation order.")
    async def stations(self, info: Info, first: int | None = None, after: str | None = None,
                       last: int | None = None, before: str | None = None
                       ) -> Connection[Station]:
        return await nested_connection(_ctx(info), d.Station, Station.wrap, "company_id",
                                       self._r.id, ALL, (), _page(first, after, last, before))

    @strawberry.field(description="Its people, in creation order, as far as the viewer "
                                  "may see them.")
    async def users(self, info: Info, first: int | None = None, after: str | None = None,
                    last: int | None = None, before: str | None = None) -> Connection[User]:
        return await nested_connection(_ctx(info), d.User, User.wrap, "company_id", self._r.id,
                                       ALL, (), _page(first, after, last, before))


@strawberry.type(description=(
    "A device a user is signed in on: one sign-in (login, signUp, changePassword) and "
    "the refreshes since. Never its tokens."))
class Device:
    id: strawberry.ID = strawberry.field(description="What signOutDevice takes.")
    signed_in_at: datetime = strawberry.field(description="When it signed in.")
    last_refreshed_at: datetime | None = strawberry.field(description=(
        "When it last exchanged its refresh token (refreshToken); null when not since "
        "it signed in."))
    expires_at: datetime = strawberry.field(description=(
        "When its refresh token expires unless used before: it is signed out then."))
    user_agent: str | None = strawberry.field(description=(
        f"The User-Agent it last signed in or refreshed with, one line, at most "
        f"{AGENT_MAX} characters; null when it sent none (and for devices signed in "
        f"before it was kept)."))
    current: bool = strawberry.field(description=(
        "Whether it is the device of this request's access token."))

    @classmethod
    def wrap(cls, f: d.RefreshFamily, current: str | None) -> Device:
        return cls(id=strawberry.ID(to_global_id(f.kind, f.id)), signed_in_at=f.created_at,
                   last_refreshed_at=f.last_refreshed_at, expires_at=f.expires_at,
                   user_agent=f.user_agent, current=f.id == current)


@strawberry.type(description="A person: driver, operator or admin.")
class User(Node, Audited):
    name: str = strawberry.field(description="As entered; every viewer who sees the user "
                                             "sees it.")
    email: str | None = strawberry.field(description="Null in reduced views.")
    role: Role | None = strawberry.field(description=(
        "Null in reduced views: an operator sees the drivers of their sessions by name "
        "only (admins, the user and their company's operators see it)."))
    active: bool | None = strawberry.field(description=(
        "False once deactivated: no sign-in, cards refused at chargers. Null in reduced "
        "views."))
    erased_at: datetime | None = strawberry.field(description=(
        "When the account was erased (`eraseUser`, `eraseMyAccount`): its name and "
        "email read as placeholders since. Null when not erased, and in reduced views."))
    _r: strawberry.Private[d.User]
    _private: strawberry.Private[bool]

    @classmethod
    def wrap(cls, r: d.User, ctx: GraphContext) -> User:
        private = ctx.services.policy.sees_user_private(ctx.viewer, r)
        return _audited(cls, r, {
            "name": r.name,
            "email": r.email if private else None,
            "role": r.role if private else None,
            "active": r.active if private else None,
            "erased_at": r.erased_at if private else None,
            "_private": private,
        }, private, changes_visible=private)

    @strawberry.field(description="Their company; null when none, and in reduced views.")
    async def company(self, info: Info) -> Company | None:
        if not self._private:
            return None
        return await _related(info, Company, self._r.company_id)

    @strawberry.field(description=(
        f"The devices they are signed in on (one per sign-in, each refresh keeping it), "
        f"newest sign-in first, at most {DEVICES_LIMIT}: not those signed out, expired, "
        f"or ended by a new password, a deactivation or signOutEverywhere. Sign one out "
        f"with signOutDevice. Only they and admins see it: null for anyone else."))
    async def devices(self, info: Info) -> list[Device] | None:
        ctx = _ctx(info)
        found = await ctx.services.refresh_tokens.devices(ctx.viewer, self._r)
        if found is None:
            return None
        return [Device.wrap(f, ctx.device_id) for f in found]

    @strawberry.field(description="Their vehicles (their garage: not those removed), in "
                                  "creation order, as far as the viewer may see them.")
    async def vehicles(self, info: Info, first: int | None = None, after: str | None = None,
                       last: int | None = None, before: str | None = None
                       ) -> Connection[Vehicle]:
        return await nested_connection(_ctx(info), d.Vehicle, Vehicle.wrap, "owner_id",
                                       self._r.id, garage(_ctx(info)), (),
                                       _page(first, after, last, before))

    @strawberry.field(name="idTags", description="Their charging cards, in creation order, "
                                                 "as far as the viewer may see them.")
    async def id_tags(self, info: Info, first: int | None = None, after: str | None = None,
                      last: int | None = None, before: str | None = None
                      ) -> Connection[IdTag]:
        return await nested_connection(_ctx(info), d.IdTag, IdTag.wrap, "user_id", self._r.id,
                                       ALL, (), _page(first, after, last, before))

    @strawberry.field(description="The sessions they charged, newest first, as far as the "
                                  "viewer may see them (an operator: those in their books).")
    async def sessions(self, info: Info, first: int | None = None, after: str | None = None,
                       last: int | None = None, before: str | None = None
                       ) -> Connection[Session]:
        return await nested_connection(_ctx(info), d.Session, Session.wrap, "user_id",
                                       self._r.id, ALL, NEWEST_FIRST,
                                       _page(first, after, last, before))

    # Their reservations and payments as the root lists show them (QA s33: a driver's
    # app had to read those and could not start from `me`), in the same order, by the
    # viewer's scope: batched across a page of users as ``sessions`` is.
    @strawberry.field(description="The reservations they made, in id order, as far as "
                                  "the viewer may see them (the root `reservations`' "
                                  "rules: an operator, those in their books and the "
                                  "live ones of a station they run now).")
    async def reservations(self, info: Info, first: int | None = None,
                           after: str | None = None, last: int | None = None,
                           before: str | None = None) -> Connection[Reservation]:
        return await nested_connection(_ctx(info), d.Reservation, Reservation.wrap,
                                       "user_id", self._r.id, ALL, (),
                                       _page(first, after, last, before))

    @strawberry.field(description="Their payments, in id order, as far as the viewer may "
                                  "see them (the root `payments`' rules: an operator, "
                                  "those in their books).")
    async def payments(self, info: Info, first: int | None = None, after: str | None = None,
                       last: int | None = None, before: str | None = None
                       ) -> Connection[Payment]:
        return await nested_connection(_ctx(info), d.Payment, Payment.wrap, "user_id",
                                       self._r.id, ALL, (), _page(first, after, last, before))

    @strawberry.field(description="Stations this user owns.")
    async def stations(self, info: Info, first: int | None = None, after: str | None = None,
                       last: int | None = None, before: str | None = None
                       ) -> Connection[Station]:
        return await nested_connection(_ctx(info), d.Station, Station.wrap, "owner_id",
                                       self._r.id, ALL, (), _page(first, after, last, before))


@strawberry.type(description="An electric vehicle, owned by a user.")
class Vehicle(Node, Audited):
    license_plate: str = strawberry.field(
        description="As entered, for display: trimmed, spaces collapsed, upper case, "
                    "full-width characters as their plain ones (\"B-MI 2024\"). Unique "
                    "per owner by its letters and digits alone: \"BMI2024\" is the same "
                    "plate.")
    make: str | None = strawberry.field(description="As entered; null when not given.")
    model: str | None = strawberry.field(description="As entered; null when not given.")
    battery_kwh: float | None = strawberry.field(description=(
        "Battery capacity in kWh; null when not given, and for viewers other than its "
        "owner and admins."))
    removed_at: datetime | None = strawberry.field(description=(
        "When its owner removed it (`removeVehicle`), UTC; null while it is in their "
        "garage, and for viewers other than its owner and admins (it would tell when "
        "they last changed it). A removed vehicle is in no list of vehicles and no "
        "longer chosen for cards or charging; it stays as the vehicle of the sessions "
        "charged with it."))
    _r: strawberry.Private[d.Vehicle]
    _private: strawberry.Private[bool]

    @classmethod
    def wrap(cls, r: d.Vehicle, ctx: GraphContext) -> Vehicle:
        private = ctx.services.policy.sees_vehicle_private(ctx.viewer, r)
        return _audited(cls, r, {
            "license_plate": r.license_plate,
            "make": r.make,
            "model": r.model,
            "battery_kwh": r.battery_kwh if private else None,
            "removed_at": r.removed_at if private else None,
            "_private": private,
        }, private, changes_visible=private)

    @strawberry.field(description="Its owner; null when the viewer may not see them.")
    async def owner(self, info: Info) -> User | None:
        return await _related(info, User, self._r.owner_id)

    @strawberry.field(description="The sessions charged with it, newest first, as far as "
                                  "the viewer may see them.")
    async def sessions(self, info: Info, first: int | None = None, after: str | None = None,
                       last: int | None = None, before: str | None = None
                       ) -> Connection[Session]:
        return await nested_connection(_ctx(info), d.Session, Session.wrap, "vehicle_id",
                                       self._r.id, ALL, NEWEST_FIRST,
                                       _page(first, after, last, before))

    @strawberry.field(name="idTags", description="The cards linked to it, in creation "
                                                 "order, as far as the viewer may see them.")
    async def id_tags(self, info: Info, first: int | None = None, after: str | None = None,
                      last: int | None = None, before: str | None = None
                      ) -> Connection[IdTag]:
        return await nested_connection(_ctx(info), d.IdTag, IdTag.wrap, "vehicle_id",
                                       self._r.id, ALL, (), _page(first, after, last, before))


@strawberry.type(description="An RFID card or app token (OCPP idTag) of a user.")
class IdTag(Node, Audited):
    tag: str = strawberry.field(description=(
        "The OCPP idTag chargers are presented, upper case (id tags are "
        "case-insensitive)."))
    expires_at: datetime | None = strawberry.field(description=(
        "When chargers stop accepting it (it reads EXPIRED then); null: never."))
    expiry_set_by_staff: bool | None = strawberry.field(description=(
        "Whether `expiresAt` was set by an operator or admin: once past, such a date bars "
        "its holder as EXPIRED does (they may not change nor remove the card, and issue "
        "themselves no new card); false: its holder chose it, and it bars nothing else; "
        "null: no expiry."))
    parent_id_tag: str | None = strawberry.field(
        description="The card's group (OCPP parentIdTag), as chargers are told it.")
    _r: strawberry.Private[d.IdTag]

    @classmethod
    def wrap(cls, r: d.IdTag, ctx: GraphContext) -> IdTag:
        return _audited(cls, r, {
            "tag": r.tag,
            "expires_at": r.expires_at,
            "expiry_set_by_staff": None if r.expires_at is None
            else expiry_set_by_staff(r, r.user_id),
            "parent_id_tag": r.parent_tag,
        })

    @strawberry.field(description=(
        "As chargers are told it now: EXPIRED once past `expiresAt`, BLOCKED while its "
        "user is deactivated."))
    def status(self, info: Info) -> IdTagStatus:
        # The owners of a page of cards load in one batch (the tag's viewer sees its
        # owner: a missing one is gone, and chargers are told Blocked then too).
        ctx = _ctx(info)
        return cast(IdTagStatus, _now_or_later(
            ctx.loaders.by_id(d.User), self._r.user_id,
            lambda owner: self._r.charger_status(owner, ctx.now)))

    @strawberry.field(description="Its holder.")
    async def user(self, info: Info) -> User | None:
        return await _related(info, User, self._r.user_id)

    @strawberry.field(description="The vehicle it is linked to; null when none, or when "
                                  "the viewer may not see it.")
    async def vehicle(self, info: Info) -> Vehicle | None:
        return await _related(info, Vehicle, self._r.vehicle_id)


# ------------------------------------------------------------------------- stations
@strawberry.type(description=(
    "A firmware update its charger accepted, or did not answer (OCPP UpdateFirmware)."))
class FirmwareRollout:
    requested_at: datetime = strawberry.field(description=(
        "When the charger accepted it (or its answer was given up on)."))
    location: str = strawberry.field(description=(
        "Where the charger was to fetch the firmware from, without the URL's user "
        "information nor its query string's values, where a presigned URL carries its "
        "signature (as the audit log keeps it)."))
    retrieve_date: datetime | None = strawberry.field(description=(
        "When the charger was to fetch it (not before)."))

    @classmethod
    def of(cls, r: d.Station) -> FirmwareRollout | None:
        if r.firmware_requested_at is None:
            return None
        # Also a rollout recorded before query values were hidden (QA s25).
        return cls(requested_at=r.firmware_requested_at,
                   location=without_credentials(r.firmware_location or ""),
                   retrieve_date=r.firmware_retrieve_date)


@strawberry.type(description=(
    "A diagnostics upload its charger accepted (OCPP GetDiagnostics answered with a file "
    "name)."))
class DiagnosticsRequest:
    requested_at: datetime = strawberry.field(description="When the charger accepted it.")
    file_name: str = strawberry.field(description=(
        "The name of the file the charger said it would upload (its answer's `fileName`, "
        "as its other text is shown: without control characters, a line break a "
        "space; made of hidden characters only, U+FFFD)."))

    @classmethod
    def of(cls, r: d.Station) -> DiagnosticsRequest | None:
        if r.diagnostics_requested_at is None:
            return None
        return cls(requested_at=r.diagnostics_requested_at,
                   file_name=r.diagnostics_file_name or "")


@strawberry.type(description="A charge point (OCPP identity `cpId`).")
class Station(Node, Audited):
    cp_id: str = strawberry.field(description=(
        "The charger's OCPP identity: its websocket path and HTTP Basic user name."))
    name: str = strawberry.field(description="As entered.")
    location: Location | None = strawberry.field(description="Null when none was given.")
    online: bool = strawberry.field(description="Whether its charger is connected now.")
    vendor: str | None = strawberry.field(description=(
        "`chargePointVendor` of its charger's last BootNotification; null before one. "
        "Admins and the station's operators; null for others."))
    model: str | None = strawberry.field(description=(
        "`chargePointModel` of its charger's last BootNotification, as `vendor`."))
    serial: str | None = strawberry.field(description=(
        "`chargePointSerialNumber` (else `chargeBoxSerialNumber`) of its charger's last "
        "BootNotification, as `vendor`."))
    firmware: str | None = strawberry.field(description=(
        "`firmwareVersion` of its charger's last BootNotification, as `vendor`."))
    registration: Registration | None = strawberry.field(description=(
        "How its charger's boots are answered; only ACCEPTED stations are on the drivers' "
        "map. Admins and the station's operators; null for others."))
    last_seen: datetime | None = strawberry.field(description=(
        "When its charger was last heard from: its connection, boot, heartbeat, or any "
        "other message (within a minute). Staff only."))
    firmware_status: FirmwareStatus | None = strawberry.field(description=(
        "Its charger's last FirmwareStatusNotification (DOWNLOADING, DOWNLOADED, "
        "INSTALLING, INSTALLED, DOWNLOAD_FAILED, INSTALLATION_FAILED, IDLE), or "
        "`REQUESTED`: an `updateFirmware` the charger "
        "accepted (`firmwareRollout`) and has not reported on yet, or `UNANSWERED`: one "
        "sent that the charger did not answer in time (it may have started it; its next "
        "FirmwareStatusNotification settles it). An Idle before "
        "`firmwareRollout.retrieveDate` leaves `REQUESTED` or `UNANSWERED` (the download "
        "is not due); "
        "from then on it is shown. An Idle after this rollout's Installed, DownloadFailed "
        "or InstallationFailed (a triggered FirmwareStatusNotification: the charger is "
        "done) leaves that end. See `firmwareStatusAt`. Staff only."))
    firmware_status_at: datetime | None = strawberry.field(description=(
        "When `firmwareStatus` was set (the notification came, or the rollout was "
        "accepted); null for a status kept before times were. Staff only."))
    firmware_rollout: FirmwareRollout | None = strawberry.field(description=(
        "The last `updateFirmware` its charger accepted or did not answer; null before "
        "any. Firmware "
        "statuses from `firmwareRollout.requestedAt` on are this rollout's. Staff only."))
    diagnostics_status: DiagnosticsStatus | None = strawberry.field(description=(
        "Its charger's last DiagnosticsStatusNotification (IDLE, UPLOADING, UPLOADED, "
        "UPLOAD_FAILED), or `REQUESTED`: a `getDiagnostics` the charger accepted "
        "(`diagnosticsRequest`) and has not reported on yet. An Uploaded or UploadFailed "
        "while the upload before it was still Uploading is that upload's end and leaves "
        "`REQUESTED`; an Idle after this upload's Uploaded or UploadFailed (a triggered "
        "DiagnosticsStatusNotification: the charger is done) leaves that end. See "
        "`diagnosticsStatusAt`. Staff only."))
    diagnostics_status_at: datetime | None = strawberry.field(description=(
        "When `diagnosticsStatus` was set (the notification came, or the upload was "
        "accepted); null for a status kept before times were. Staff only."))
    diagnostics_request: DiagnosticsRequest | None = strawberry.field(description=(
        "The last `getDiagnostics` its charger accepted with a file name; null before "
        "any. Diagnostics statuses from `diagnosticsRequest.requestedAt` on are this "
        "upload's. Staff only."))
    password_required: bool | None = strawberry.field(description=(
        "Whether its charger must present the station's password (HTTP Basic, OCPP "
        "security profile 1 or 2). False: anyone who knows the cpId can connect as it. "
        "Admins and the station's operators; null for others."))
    status: ConnectorStatus | None = strawberry.field(description=(
        "The charge point as a whole (OCPP connector 0): AVAILABLE, UNAVAILABLE or "
        "FAULTED; null until its charger reported one. UNAVAILABLE or FAULTED: none of "
        "its connectors can charge, whatever they report."))
    error_code: ChargePointErrorCode | None = strawberry.field(description=(
        "OCPP ChargePointErrorCode of the charge point as a whole, `NO_ERROR` when "
        "healthy; null until reported."))
    status_at: datetime | None = strawberry.field(description=(
        "When the charge point's `status` began, by the charger's timestamp (else its "
        "clock's now), UTC; null until reported."))
    info: str | None = strawberry.field(description=(
        "The charger's free-text detail with the charge point's status (connector 0)."))
    vendor_error_code: str | None = strawberry.field(description=(
        "The charger's own code for the charge point's error (OCPP vendorErrorCode); null "
        "when it sent none."))
    heartbeat_interval: int | None = strawberry.field(description=(
        "Seconds its charger's boots are answered with when it is not the service's global "
        "interval: the `HeartbeatInterval` its charger last accepted by "
        "`changeConfiguration` (or set by `updateStation`); null: the global one. Staff "
        "only."))
    configuration_truncated: bool | None = strawberry.field(description=(
        f"True when its charger reported more configuration keys than are kept "
        f"({MAX_CONFIGURATION_KEYS:,}): `configuration` then holds the first of them by "
        "key (without regard to case) and knows nothing of the others (ask the charger "
        "with `getConfiguration`). False again once a `getConfiguration` of every key (no "
        "`key` list) fits. Admins and the station's operators; null for others."))
    _r: strawberry.Private[d.Station]
    _private: strawberry.Private[bool]

    def _under_seen(self, info: Info) -> bool:
        """Whether what is listed under it may be asked by its id alone
        (``Policy.scope_under``'s ``seen``): the viewer sees it as held (``Policy.sees``) and
        it was read through their scope in this request. Every station of a query or a
        subscription's event was (the lists, ``node``, the loaders by id); a mutation's
        may be what its write returned, which ``sees`` cannot tell from one read: a
        station just removed (review s30: its price list, kept in the history, showed in
        ``removeStation``'s payload). So no station claims it in a mutation, whichever
        mutation returns it, and what is under it asks the full rule."""
        if info.operation.operation is OperationType.MUTATION:
            return False
        ctx = _ctx(info)
        return ctx.services.policy.sees(ctx.viewer, self._r)

    def _seen_kind(self, info: Info) -> str | None:
        """``_under_seen`` as a list under it states it to the policy (``seen``)."""
        return "station" if self._under_seen(info) else None

    @strawberry.field(description=(
        "Great-circle distance in km from a point (a map list's `filter.near` point: "
        "the distance `orderBy: DISTANCE` sorts by); null without a location."))
    def distance_km(self, from_: Annotated[GeoPointInput, strawberry.argument(
            name="from", description="The point to measure from: `lat` -90..90, `lon` "
                                     "-180..180 (OUT_OF_RANGE otherwise).")]
                    ) -> float | None:
        # An argument, not a value the list fills in: the same station answers alike on
        # every path (node, nested lists, subscriptions), and needs no state per row.
        check_point(from_.lat, from_.lon, "from")
        if self._r.lat is None or self._r.lon is None:
            return None
        return distance_km(self._r.lat, self._r.lon, from_.lat, from_.lon)

    @classmethod
    def wrap(cls, r: d.Station, ctx: GraphContext) -> Station:
        private = ctx.services.policy.sees_station_private(ctx.viewer, r)
        location = (
            Location(lat=r.lat, lon=r.lon, address=r.address)
            if r.lat is not None and r.lon is not None
            else None
        )
        return _audited(cls, r, {
            "cp_id": r.cp_id,
            "name": r.name,
            "location": location,
            "online": r.online,
            "vendor": r.vendor if private else None,
            "model": r.model if private else None,
            "serial": r.serial if private else None,
            "firmware": r.firmware if private else None,
            "registration": r.registration if private else None,
            "last_seen": r.last_seen if private else None,
            "firmware_status": member(FirmwareStatus, r.firmware_status) if private
            else None,
            "firmware_status_at": r.firmware_status_at if private else None,
            "firmware_rollout": FirmwareRollout.of(r) if private else None,
            "diagnostics_status": member(DiagnosticsStatus, r.diagnostics_status)
            if private else None,
            "diagnostics_status_at": r.diagnostics_status_at if private else None,
            "diagnostics_request": DiagnosticsRequest.of(r) if private else None,
            "password_required": (r.auth_password_hash is not None) if private else None,
            "status": r.status,
            "error_code": shown_error_code(r.error_code) if r.error_code is not None else None,
            "status_at": r.status_at,
            "info": r.info,
            "vendor_error_code": r.vendor_error_code,
            "heartbeat_interval": r.heartbeat_interval if private else None,
            "configuration_truncated": r.configuration_truncated if private else None,
            "_private": private,
        }, private)

    @staticmethod
    async def prefetch(ctx: GraphContext, stations: Sequence[d.Station],
                       wants: Callable[..., bool]) -> None:
        """Loads, for a whole page of stations, the levels below them that the selection
        asks for (``wants(*path)``), one batched store call per level as always; their
        fields then answer synchronously, which spares graphql-core a task per row."""
        if not stations or not wants("connectors"):
            return
        by_id = ctx.loaders.by_id(d.Station)
        for station in stations:
            by_id.prime(station.id, station)  # ``connector { station }`` is known already
        # The page was read through the station rule, and the policy says so of each.
        policy, viewer = ctx.services.policy, ctx.viewer
        ids = [station.id for station in stations if policy.sees(viewer, station)]
        # Their failing to load leaves the levels below to the rows' resolvers.
        connectors = await _connectors_under(ctx).fetch(ids)
        if connectors is not None and wants("connectors", "activeSession"):
            await _prefetch_active_sessions(
                ctx, ids, lambda *path: wants("connectors", "activeSession", *path))

    @strawberry.field(description=(
        f"Its connectors in `connectorId` order (at most {MAX_CONNECTORS}): a plain list, "
        "not paged."))
    def connectors(self, info: Info) -> list[Connector]:
        ctx = _ctx(info)
        if self._under_seen(info):
            hit, records = _connectors_under(ctx).peek(self._r.id)
            if hit:  # a parent prefetched them
                return [Connector.wrap(c, ctx) for c in records]
        return self._load_connectors(info)  # type: ignore[return-value]

    async def _load_connectors(self, info: Info) -> list[Connector]:
        # Reached one station at a time (a company's or a user's stations, a reservation's
        # or payment's session's station, ``nodes(ids:)``): through the batched load, so
        # every station of this level shares one store call, and their connectors'
        # active sessions and what is below them load per level through the connectors'
        # own resolvers (batched too). A prefetch here (``fetch`` sends its keys at once)
        # cost a store call per station at each level (QA s28).
        ctx = _ctx(info)
        ctx.loaders.by_id(d.Station).prime(self._r.id, self._r)  # ``connector { station }``
        loader = _connectors_under(ctx) if self._under_seen(info) else _connectors_of(ctx)
        return [Connector.wrap(c, ctx) for c in await loader.load(self._r.id)]

    @strawberry.field(description=(
        "The user named its owner (who runs it when it has no company); null when none. "
        "Admins and the station's operators; null for others."))
    async def owner(self, info: Info) -> User | None:
        if not self._private:
            return None
        return await _related(info, User, self._r.owner_id)

    @strawberry.field(description=(
        "The company that runs it; null when none. Admins and the station's operators; "
        "null for others."))
    async def company(self, info: Info) -> Company | None:
        if not self._private:
            return None
        return await _related(info, Company, self._r.company_id)

    @strawberry.field(description="The site (grid connection) whose power its sessions "
                                  "share; null when none, and for drivers.")
    async def site(self, info: Info
                   ) -> Annotated[Site, strawberry.lazy("graph.sites")] | None:
        if not self._private or self._r.site_id is None:
            return None
        from graph.sites import Site as SiteNode  # graph.sites builds on this module

        return await _related(info, SiteNode, self._r.site_id)  # type: ignore[no-any-return]

    @strawberry.field(description=(
        "The price list in force now for all its plugs: the station's, else its "
        "company's. A plug may have one of its own (by standard or power type): "
        "`Connector.tariff`."))
    async def tariff(self, info: Info) -> Tariff | None:
        ctx = _ctx(info)
        # Pricing's rule (``tariffs._pick``): the latest not ended, so a version a removal
        # gave back shows, not the removed one's absence; none: its company's.
        in_force = all_of(Range("valid_from", lte=ctx.now), open_at(ctx.now),
                          Eq("connector_type", None), Eq("power_type", None))
        newest = LATEST_VERSION_FIRST  # the version set last wins a tie, as in pricing
        own = await ctx.loaders.one_by(d.Tariff, "station_id", in_force, newest,
                                       self._seen_kind(info)).load(self._r.id)
        if own is None and self._r.company_id is not None:
            # A company's price list names no station (a tariff names one of the two):
            # said, a driver's "of no station, or of a station that exists" is absorbed
            # and an operator's "of my company" decided by the key (``scope_under``), no
            # station sub-select, whether or not the station was seen.
            company_wide = all_of(in_force, Eq("station_id", None))
            own = await ctx.loaders.one_by(d.Tariff, "company_id", company_wide, newest
                                           ).load(self._r.company_id)
        return Tariff.wrap(own, ctx) if own else None

    @strawberry.field(description=(
        "Sessions charged on it, newest first, as far as the viewer may see them (an "
        "operator: those in their books; a driver: their own)."))
    async def sessions(self, info: Info, first: int | None = None, after: str | None = None,
                       last: int | None = None, before: str | None = None
                       ) -> Connection[Session]:
        return await nested_connection(_ctx(info), d.Session, Session.wrap, "station_id",
                                       self._r.id, ALL, NEWEST_FIRST,
                                       _page(first, after, last, before),
                                       seen=self._seen_kind(info))

    @strawberry.field(description=(
        "Reservations on it, in creation order, as far as the viewer may see them (an "
        "operator: those in their books, and the live ones of a station they run now)."))
    async def reservations(self, info: Info, first: int | None = None,
                           after: str | None = None, last: int | None = None,
                           before: str | None = None) -> Connection[Reservation]:
        return await nested_connection(_ctx(info), d.Reservation, Reservation.wrap,
                                       "station_id", self._r.id, ALL, (),
                                       _page(first, after, last, before),
                                       seen=self._seen_kind(info))

    @strawberry.field(description=(
        "The version of the local authorization list its charger last accepted, as the "
        "product recorded it (an operator's `sendLocalList`, the product's own "
        "withdrawals of cards, which raise it too, and a `getLocalListVersion` answer): "
        "a DIFFERENTIAL list needs a version above it. Null when not known. Admins and "
        "the station's operators; null for others."))
    async def local_list_version(self, info: Info) -> int | None:
        if not self._private:
            return None
        # Its id is its station's (one per station).
        recorded = await _ctx(info).loaders.by_id(d.LocalList).load(self._r.id)
        return None if recorded is None else int(recorded.version)

    @strawberry.field(description=(
        "Its charger's configuration as last known, by key: from every `getConfiguration` "
        "answer and every `changeConfiguration` the charger took, so it shows while the "
        "charger is offline (a key known from neither is not here). Secret keys' values "
        f"are `masked`. At most {MAX_CONFIGURATION_KEYS:,} keys, the first by key: "
        "`configurationTruncated` says when the charger reported more. Admins and the "
        "station's operators; empty for others."))
    async def configuration(self, info: Info) -> list[ConfigurationKey]:
        if not self._private:
            return []
        ctx = _ctx(info)
        known = await _configuration_of(ctx, self._seen_kind(info)).load(self._r.id)
        booted = self._r.booted_at
        return [ConfigurationKey(key=k.key, readonly=k.readonly,
                                 value=None if is_secret(k) else k.value, masked=is_secret(k),
                                 read_at=k.read_at, changed_at=k.changed_at,
                                 reboot_required=k.awaits_reboot(booted),
                                 value_in_force=None if is_secret(k) else (
                                     k.value_in_force if k.awaits_reboot(booted)
                                     else k.value)) for k in known]

    @strawberry.field(description="When the charger connected and disconnected, newest "
                                  "first (admins, and the operators of the books each "
                                  "went to: of a station handed over, those from the "
                                  "handover on).")
    async def connection_history(self, info: Info, from_: Since = None, to: Until = None,
                                 first: int | None = None, after: str | None = None,
                                 last: int | None = None, before: str | None = None
                                 ) -> Connection[ConnectionEvent]:
        return await history.connection_history(_ctx(info), self._r, from_, to,
                                                _page(first, after, last, before),
                                                self._seen_kind(info))


@strawberry.type(description="One plug of a station; `(cpId, connectorId)` is unique.")
class Connector(Node, Audited):
    cp_id: str = strawberry.field(description="Its station's OCPP identity.")
    connector_id: int = strawberry.field(description="OCPP connector id, from 1.")
    status: ConnectorStatus = strawberry.field(description=(
        "What its charger last reported (see `statusAt`), kept while the charger is "
        "offline. Whether a driver can plug in now also needs its station online and not "
        "UNAVAILABLE or FAULTED as a whole, and no session or live reservation holding "
        "it (one the charger has not reported yet too): filter with `availableNow`."))
    error_code: ChargePointErrorCode = strawberry.field(description=(
        "OCPP ChargePointErrorCode, `NO_ERROR` when healthy."))
    info: str | None = strawberry.field(description=(
        "The charger's free-text detail with its last status; null when it sent none."))
    vendor_error_code: str | None = strawberry.field(description=(
        "The charger's own code for the error (OCPP vendorErrorCode); null when it sent "
        "none."))
    status_at: datetime | None = strawberry.field(description=(
        "When `status` began, by the charger's timestamp (else its clock's now), UTC; "
        "null until it reported one."))
    type: ConnectorType = strawberry.field(description="Its plug standard.")
    max_kw: float | None = strawberry.field(description=(
        "Its rated power in kW; null: unknown (it then meets no `minKw` filter)."))
    phases: int | None = strawberry.field(description=(
        "The phases it charges on (1 to 3), which a site limited in A converts its share "
        "with; null: its site's `phases`."))
    _r: strawberry.Private[d.Connector]

    @classmethod
    def wrap(cls, r: d.Connector, ctx: GraphContext) -> Connector:
        return _audited(cls, r, {
            "cp_id": r.cp_id,
            "connector_id": r.connector_id,
            "status": r.status,
            "error_code": shown_error_code(r.error_code),
            "info": r.info,
            "vendor_error_code": r.vendor_error_code,
            "status_at": r.status_at,
            "type": r.type,
            "max_kw": r.max_kw,
            "phases": r.phases,
        }, _staff(ctx))

    @staticmethod
    async def prefetch(ctx: GraphContext, connectors: Sequence[d.Connector],
                       wants: Callable[..., bool]) -> None:
        """Loads the relations a page of connectors selects (station, active session and
        below it), one batched call per level, so they answer synchronously."""
        station_ids = list({c.station_id for c in connectors})
        if not station_ids:
            return
        if wants("station"):
            await ctx.loaders.by_id(d.Station).fetch(station_ids)
        if wants("activeSession"):
            await _prefetch_active_sessions(ctx, station_ids,
                                            lambda *path: wants("activeSession", *path))

    @strawberry.field(description=(
        "Whether the plug itself is free now: it last reported AVAILABLE, holds no "
        "session and no live reservation holds it (its own or its station's connector "
        "0's; one the charger has not reported yet too; whose is not told). It is "
        "available now (`availableNow`) when its station is also online and not "
        "UNAVAILABLE or FAULTED as a whole. `connectorStatusChanged` carries it too."))
    async def free(self, info: Info) -> bool:
        ctx = _ctx(info)
        # The rule of the availableNow filter, batched over the page: one store call.
        found = await ctx.loaders.one_by(d.Connector, "id", connectors_free(ctx.now)
                                         ).load(self._r.id)
        return found is not None

    @strawberry.field(description="Its station.")
    def station(self, info: Info) -> Station | None:
        return _related_now(info, Station, self._r.station_id)  # type: ignore[no-any-return]

    @strawberry.field(description="The session charging on this connector now, if the "
                                  "viewer may see it.")
    def active_session(self, info: Info) -> Session | None:
        ctx = _ctx(info)
        return _now_or_later(_active_sessions(ctx), self._r.station_id,  # type: ignore[no-any-return]
                             lambda sessions: _wrap_or_none(
                                 Session, _on_connector(sessions, self._r.connector_id), ctx))

    @strawberry.field(description=(
        "The tariff a session started on this connector now is priced by: the most "
        "specific in force of its station's (for its plug standard, else its power type, "
        "else all plugs), else of its company's. Null when there is none or the viewer "
        "may not see it."))
    async def tariff(self, info: Info) -> Tariff | None:
        ctx = _ctx(info)
        station = await ctx.loaders.by_id(d.Station).load(self._r.station_id)
        if station is None:
            return None
        found, shown = await ctx.loaders.pricing_tariff().load(PricedAt(
            station.id, station.company_id, ctx.now, self._r.type))
        return Tariff.wrap(found, ctx) if found is not None and shown else None

    @strawberry.field(description="The connector's status reports, newest first (admins "
                                  "and the station's operators).")
    async def status_history(self, info: Info, from_: Since = None, to: Until = None,
                             first: int | None = None, after: str | None = None,
                             last: int | None = None, before: str | None = None
                             ) -> Connection[StatusEvent]:
        return await history.status_history(_ctx(info), self._r, StatusEvent.wrap, from_, to,
                                            _page(first, after, last, before))


@strawberry.type(description=(
    "What a completed session was billed, line by line, in major units of `currency` "
    "(exact): `energy + time + fee + idle = net`, `net + tax = gross`, and `gross` is the "
    "session's `cost`. Each line of the net is its exact amount rounded to the minor "
    "unit, up or down by less than one unit so that they add up to `net` (the exact net "
    "rounded half up); `tax` is `net` × the tariff's rate, rounded half up once."))
class CostBreakdown:
    energy: Decimal = strawberry.field(description="Energy × price per kWh.")
    time: Decimal = strawberry.field(description="Minutes × price per minute.")
    fee: Decimal = strawberry.field(description="The session fee.")
    idle: Decimal = strawberry.field(description=(
        "The idle fee: minutes the connector sat occupied but not charging because the car "
        "was done (`SUSPENDED_EV`, `FINISHING`, after it first charged) beyond the tariff's "
        "grace × its idle price, at most its cap."))
    net: Decimal = strawberry.field(description="Before tax.")
    tax: Decimal = strawberry.field(description=(
        "The tariff's tax rate × `net`, rounded half up to the currency's minor unit. A "
        "session billed before session 31 shows what it was billed by: `gross` − `net`, "
        "the gross then being the exact total with tax rounded on its own (at times one "
        "minor unit more or less than the rate × `net`)."))
    gross: Decimal = strawberry.field(description="What was billed: the session's `cost`.")
    currency: str = strawberry.field(description="ISO 4217 code of every line.")

    @classmethod
    def of(cls, b: pricing.CostBreakdown) -> CostBreakdown:
        def major(minor: int) -> Decimal:
            return major_units(minor, b.currency)
        return cls(energy=major(b.energy), time=major(b.time), fee=major(b.fee),
                   idle=major(b.idle), net=major(b.net), tax=major(b.tax), gross=major(b.gross),
                   currency=b.currency)


def _pricing_tariff(ctx: GraphContext, session: d.Session,
                    answer: Callable[[d.Tariff | None, bool], Any]) -> Any:
    """``answer(tariff, shown)`` for the tariff that prices ``session`` (``shown``: the
    viewer sees the tariff itself), at once when a page's prefetch loaded it; none for a
    session whose start was refused (``Session.billable``)."""
    if not session.billable:
        return answer(None, False)
    return _now_or_later(ctx.loaders.pricing_tariff(), PricedAt.of(session),
                         lambda found: answer(*found))


@strawberry.type(description="One charging transaction.")
class Session(Node, Audited):
    transaction_id: int = strawberry.field(description="OCPP transactionId.")
    cp_id: str = strawberry.field(description="The charger's OCPP identity.")
    connector_id: int = strawberry.field(description="OCPP connector id, from 1.")
    id_tag: str = strawberry.field(description=(
        "The tag the charger presented, upper case (a character that cannot be shown "
        "reads U+FFFD)."))
    state: SessionState = strawberry.field(description="ACTIVE or COMPLETED.")
    start_time: datetime = strawberry.field(description=(
        "When it started, by the charger's clock (StartTransaction), UTC; when the "
        "charger's timestamp was no time (before 2015: a clock never set, or more than "
        "5 minutes ahead of ours), when its start arrived."))
    end_time: datetime | None = strawberry.field(description=(
        "When it ended, by the charger's clock, UTC; null while ACTIVE."))
    meter_start_wh: BigInt = strawberry.field(description=(
        "The charger's energy register at the start (OCPP meterStart), Wh."))
    meter_stop_wh: BigInt | None = strawberry.field(description=(
        "The register at the end (OCPP meterStop), Wh; null while ACTIVE, for a "
        "session closed without its StopTransaction (`closedWithoutStop`), and for one "
        "whose meterStop no register can read (negative, or beyond 10^12 Wh: "
        "`meterAnomaly` IMPLAUSIBLE_STOP)."))
    stop_reason: StopReason | None = strawberry.field(description=(
        "OCPP Reason of its StopTransaction (LOCAL when the charger gave none), or OTHER "
        "when the service closed it without one (`endSession`, a lost stop: "
        "`closedWithoutStop`; a charger may give OTHER too); null while ACTIVE, and for "
        "one ended whose StopTransaction is still to come."))
    closed_without_stop: bool = strawberry.field(description=(
        "Whether the service closed it without its StopTransaction (an operator's "
        "`endSession`, a stop lost with a reboot or a newer start on its connector); its "
        "StopTransaction, should it come after all, corrects the close. False while "
        "ACTIVE and for one closed by its charger's stop, whatever its meterStop and "
        "reason."))
    start_refused: AuthorizationStatus | None = strawberry.field(
        description="What the charger was told of the card at the start when it was not "
                    "ACCEPTED (BLOCKED, EXPIRED, INVALID, CONCURRENT_TX): a refused start, "
                    "billed nothing (no tariff prices it) and holding neither card nor car "
                    "(the card's starts elsewhere are not told CONCURRENT_TX because of it, "
                    "nor a remote start of its car refused IN_USE); null for an accepted "
                    "one.")
    # Plain fields, computed when wrapped: a resolver per field and row costs more than
    # the division (strawberry wraps every resolver call).
    energy_kwh: float = strawberry.field(
        description="Energy delivered so far (live while charging).")
    power_kw: float | None = strawberry.field(
        description="Charging power at the last meter value.")
    meter_anomaly: MeterAnomaly | None = strawberry.field(description=(
        "Set when the charger's energy register rolled over at its limit or restarted "
        "near 0 (reset, replaced) during the session: its energy is counted across it "
        "(the highest reading before plus those after), for an operator to review; "
        "or its meterStop could not be believed (IMPLAUSIBLE_STOP: below meterStart, "
        "more than the connector could deliver, meterStart though its readings "
        "moved, or no register at all) and it was billed what was metered; or it was "
        "billed by a meterStop its "
        "own readings had passed (STOP_BELOW_READINGS); or, its stop lost, a newer "
        "start on its connector closed it with a meterStart below its readings, and it "
        "was billed up to that meterStart (NEXT_START_BELOW_READINGS)."))
    _r: strawberry.Private[d.Session]

    @classmethod
    def wrap(cls, r: d.Session, ctx: GraphContext) -> Session:
        return _audited(cls, r, {
            "transaction_id": r.transaction_id,
            "cp_id": r.cp_id,
            "connector_id": r.connector_id,
            "id_tag": r.id_tag,
            "state": r.state,
            "start_time": r.start_time,
            "end_time": r.end_time,
            "meter_start_wh": r.meter_start_wh,
            "meter_stop_wh": r.meter_stop_wh,
            "stop_reason": member(StopReason, r.stop_reason, StopReason.OTHER),
            "closed_without_stop": r.closed_without_stop
            and r.state is d.SessionState.COMPLETED,
            "energy_kwh": r.energy_wh / 1000,
            "power_kw": r.power_w / 1000 if r.power_w is not None else None,
            "meter_anomaly": r.meter_anomaly,
            "start_refused": AuthorizationStatus(r.start_refused)
            if r.start_refused else None,
        })

    @strawberry.field(description=(
        "What it was billed, tax included (`costBreakdown` splits it); null while ACTIVE "
        "(see `estimatedCost`) and when no tariff priced it."))
    def cost(self) -> Money | None:
        if self._r.cost_minor is None or self._r.currency is None:
            return None
        return Money(amount_minor=BigInt(self._r.cost_minor), currency=self._r.currency)

    @staticmethod
    async def prefetch(ctx: GraphContext, sessions: Sequence[d.Session],
                       wants: Callable[..., bool]) -> None:
        """Loads the relations a page of sessions selects (driver, vehicle, station,
        connector, payment), one batched call per relation, so they answer synchronously."""
        if not sessions:
            return
        loads = []
        for field, kind, key in (("user", d.User, "user_id"), ("vehicle", d.Vehicle,
                                                                "vehicle_id"),
                                 ("station", d.Station, "station_id")):
            if wants(field):
                loads.append(ctx.loaders.by_id(kind).fetch(list(
                    {getattr(s, key) for s in sessions if getattr(s, key)})))
        if wants("connector"):
            under = _connectors_under(ctx)
            named = list({s.station_id for s in sessions if not under.peek(s.station_id)[0]})
            if named:
                loads.append(_connectors_of(ctx).fetch(named))
        if wants("payment"):
            loads.append(_payment_of(ctx).fetch([s.id for s in sessions]))
        if wants("tariff") or wants("costBreakdown") or wants("estimatedCost"):
            loads.append(ctx.loaders.pricing_tariff().fetch(
                [PricedAt.of(s) for s in sessions]))
        # Together where the store overlaps reads (network round trips); else one by one,
        # without tasks and loop turns that would overlap nothing (SQLite: 3 % of a
        # ten-station page).
        if len(loads) > 1 and ctx.services.reads.overlapping:
            await asyncio.gather(*loads)
        else:
            for load in loads:
                await load

    @strawberry.field(description=(
        "The driver: the holder of the card it started with; null for a tag of no card, "
        "and when the viewer may not see them (an operator sees a driver outside their "
        "company by name only)."))
    def user(self, info: Info) -> User | None:
        return _related_now(info, User, self._r.user_id)  # type: ignore[no-any-return]

    @strawberry.field(description=(
        "The vehicle its card was linked to; null when none, or when the viewer may not "
        "see it."))
    def vehicle(self, info: Info) -> Vehicle | None:
        return _related_now(info, Vehicle, self._r.vehicle_id)  # type: ignore[no-any-return]

    @strawberry.field(description="Its station; null when removed, or when the viewer may "
                                  "not see it.")
    def station(self, info: Info) -> Station | None:
        return _related_now(info, Station, self._r.station_id)  # type: ignore[no-any-return]

    @strawberry.field(description="The connector it charged on; null when removed, or when "
                                  "the viewer may not see it.")
    def connector(self, info: Info) -> Connector | None:
        ctx = _ctx(info)
        return _now_or_later(_connectors_named(ctx, self._r.station_id),  # type: ignore[no-any-return]
                             self._r.station_id,
                             lambda connectors: _wrap_or_none(
                                 Connector, _on_connector(connectors, self._r.connector_id),
                                 ctx))

    @strawberry.field(description=(
        "Its payment, opened when it completed with a cost; null before, for a session "
        "that cost nothing, and when the viewer may not see it."))
    def payment(self, info: Info) -> Payment | None:
        ctx = _ctx(info)
        return _now_or_later(_payment_of(ctx), self._r.id,  # type: ignore[no-any-return]
                             lambda record: _wrap_or_none(Payment, record, ctx))

    @strawberry.field(description=(
        "The tariff that prices the session: the station's, else the company's whose "
        "books it is in, in force at its start. Null when there is none, or when the "
        "viewer may not see it (as `tariffs` shows them: a removed station's price list "
        "is kept for admins, and never replaced by its company's); the operators whose "
        "books the session is in see it, also after its station was handed over."))
    def tariff(self, info: Info) -> Tariff | None:
        ctx = _ctx(info)
        return _pricing_tariff(  # type: ignore[no-any-return]
            ctx, self._r, lambda tariff, shown: Tariff.wrap(tariff, ctx)
            if tariff is not None and shown else None)

    @strawberry.field(description=(
        "The `cost` of a COMPLETED session split into its lines, which add up to it; "
        "null for other states, a session priced by no tariff, and one whose tariff no "
        "longer gives the cost it was billed (a version an admin dated back since). A "
        "session billed before durations were priced exactly (from a float of its "
        "seconds, at times one minor unit less), or before session 31 (its tax what the "
        "total with tax rounded left, see `tax`), shows the lines it was billed by."))
    def cost_breakdown(self, info: Info) -> CostBreakdown | None:
        r = self._r
        if r.state is not d.SessionState.COMPLETED or r.cost_minor is None \
                or r.end_time is None:
            return None
        return _pricing_tariff(  # type: ignore[no-any-return]
            _ctx(info), r, lambda tariff, _shown: _receipt(r, tariff))

    @strawberry.field(description=(
        "An estimate of what an ACTIVE session costs so far: its tariff's price of the "
        "energy metered up to now, of its duration up to now (on the session's own "
        "timeline; a session a restore brought back open and not heard of since: up to "
        "its last reading, where any close bills it) and of its idle time so far, tax "
        "included. Not what will be billed: "
        "that is `cost`, when it ends. Null for other states and when no tariff prices "
        "the session."))
    def estimated_cost(self, info: Info) -> Money | None:
        r = self._r
        if r.state is not d.SessionState.ACTIVE:
            return None
        ctx = _ctx(info)
        now = ctx.now
        # Ends where endSession would bill it (``Session.billed_end``): a charger clock
        # set right since the start does not estimate years; a session a restore brought
        # back open, unheard since, at its last reading, as any close bills it
        # (``end_without_stop``; review r27-restore2: it estimated hours no close bills).
        end = last_known(r, r.open_at_restore) \
            if unheard_since_restore(r) and r.open_at_restore is not None \
            else r.billed_end(r.now_on_timeline(now), now)
        return _pricing_tariff(  # type: ignore[no-any-return]
            ctx, r, lambda tariff, _shown: _estimate(ctx, r, tariff, end))

    @strawberry.field(description="The latest State of Charge the charger reported for "
                                  "this session, in percent; null when it reports none.")
    def soc_percent(self) -> float | None:
        return self._r.soc_percent

    @strawberry.field(description="The session's meter samples, oldest first: its charging "
                                  "curve. Seen by whoever sees the session.")
    async def meter_values(self, info: Info,
                           measurands: Annotated[list[Measurand] | None, strawberry.argument(
                               description="Only samples of these measurands; left out: "
                                           "all; an empty list: none.")] = None,
                           from_: Since = None, to: Until = None, first: int | None = None,
                           after: str | None = None, last: int | None = None,
                           before: str | None = None) -> Connection[MeterSample]:
        return await history.meter_values(_ctx(info), self._r, measurands, from_, to,
                                          _page(first, after, last, before))

    @strawberry.field(description="The signed meter values its charger sent (OCMF under "
                                  "calibration law, other vendors' formats), oldest "
                                  "first, as sent. Seen by whoever sees the session.")
    async def signed_meter_values(self, info: Info, first: int | None = None,
                                  after: str | None = None, last: int | None = None,
                                  before: str | None = None
                                  ) -> Connection[SignedMeterValue]:
        return await signed.signed_meter_values(_ctx(info), self._r,
                                                _page(first, after, last, before))


def _estimate(ctx: GraphContext, session: d.Session, tariff: d.Tariff | None,
              end: datetime) -> Any:
    """An ACTIVE session's price up to ``end`` (Money, or None without a tariff). What
    its tariff needs beyond the session is loaded, batched with the page's, only when
    it needs it: its idle time (an idle fee), its meter readings (time-of-day prices)."""
    if tariff is None:
        return None

    def priced(idle: timedelta, band_wh: list[int] | None) -> Money:
        return Money(amount_minor=BigInt(pricing.cost_breakdown(
            tariff, session.energy_wh, session.start_time, end, idle, band_wh).gross),
            currency=tariff.currency)
    if not tariff.bills_idle and not tariff.energy_bands:
        return priced(timedelta(0), None)

    async def later() -> Money:
        idle = await ctx.loaders.idle_time().load(IdleSpan.of(session, end)) \
            if tariff.bills_idle else timedelta(0)
        band_wh = None
        if tariff.energy_bands:
            samples = await ctx.loaders.register_readings().load(session.id)
            band_wh = session_split(tariff, session, session.energy_wh,
                                    [(s.at, s.delta_wh or 0) for s in samples], end)
        return priced(idle, band_wh)
    return later()


def _receipt(session: d.Session, tariff: d.Tariff | None) -> CostBreakdown | None:
    """The lines of a completed session's bill (``pricing.receipt``: none unless they
    add up to exactly what it was billed)."""
    lines = pricing.receipt(tariff, session) if tariff is not None else None
    return CostBreakdown.of(lines) if lines is not None else None


@strawberry.type(description="A connector held for a driver (OCPP ReserveNow).")
class Reservation(Node, Audited):
    reservation_id: int = strawberry.field(description=(
        "OCPP reservationId: ours, unique, as the charger was told it."))
    cp_id: str = strawberry.field(description="The charger's OCPP identity.")
    connector_id: int = strawberry.field(description=(
        "OCPP connector id; 0: any connector of the station."))
    id_tag: str = strawberry.field(description="The tag it holds the plug for, upper case.")
    expires_at: datetime = strawberry.field(description=(
        "When it ends, UTC: a live one reads EXPIRED from then on."))
    state: ReservationState = strawberry.field(description=(
        "Where it is now (EXPIRED once past `expiresAt`)."))
    _r: strawberry.Private[d.Reservation]

    @classmethod
    def wrap(cls, r: d.Reservation, ctx: GraphContext) -> Reservation:
        return _audited(cls, r, {
            "reservation_id": r.reservation_id,
            "cp_id": r.cp_id,
            "connector_id": r.connector_id,
            "id_tag": r.id_tag,
            "expires_at": r.expires_at,
            "state": r.state_at(ctx.now),
        })

    @strawberry.field(description="Its station; null when removed, or when the viewer may "
                                  "not see it.")
    async def station(self, info: Info) -> Station | None:
        return await _related(info, Station, self._r.station_id)

    @strawberry.field(description=(
        "The holder of the card it was made for; null for a tag of no card, and when the "
        "viewer may not see them."))
    async def user(self, info: Info) -> User | None:
        return await _related(info, User, self._r.user_id)


@strawberry.type(description=(
    "A time-of-day energy price: `pricePerKwh` on `days` from `start` to `end`, local "
    "times of its tariff's `timeZone`."))
class PriceBand:
    days: list[str] = strawberry.field(description="MON … SUN.")
    start: str = strawberry.field(description="HH:MM.")
    end: str = strawberry.field(description="HH:MM, up to 24:00.")
    price_per_kwh: Decimal = strawberry.field(description=(
        "Per kWh in the band, in its tariff's `currency` (major units), before tax."))

    @classmethod
    def of(cls, doc: dict[str, Any], currency: str) -> PriceBand:
        return cls(days=list(doc["days"]), start=doc["start"], end=doc["end"],
                   price_per_kwh=price_shown(Decimal(doc["price_per_kwh"]), currency))


@strawberry.type(description="A price list of a company or a station, from `validFrom` on.")
class Tariff(Node, Audited):
    price_per_kwh: Decimal = strawberry.field(description=(
        "Per kWh delivered, in `currency` (major units, e.g. 0.35), before tax; "
        "`energyBands` may price some hours differently."))
    currency: str = strawberry.field(description="ISO 4217 code, e.g. EUR.")
    price_per_minute: Decimal = strawberry.field(description=(
        "Per minute from a session's start to its end, before tax."))
    session_fee: Decimal = strawberry.field(description="Per session, before tax.")
    tax_rate: Decimal = strawberry.field(description="e.g. 0.19 for 19 %.")
    valid_from: datetime = strawberry.field(description=(
        "When it takes effect, UTC: a session is priced by the version in force at its "
        "start."))
    idle_price_per_minute: Decimal = strawberry.field(description=(
        "Per minute the connector sits occupied but not charging because the car is done "
        "(`SUSPENDED_EV`; `FINISHING` while the transaction is open; never `SUSPENDED_EVSE`; "
        "only from the session's first `CHARGING` on: a car waiting for its departure timer "
        "is not done), beyond `idleGraceMinutes` of such time per session."))
    idle_grace_minutes: int = strawberry.field(description=(
        "Idle minutes per session that are free, counted over the whole session."))
    idle_fee_cap: Decimal | None = strawberry.field(description=(
        "The most a session's idle fee comes to, before tax; null: no cap."))
    energy_bands: list[PriceBand] = strawberry.field(description=(
        "Time-of-day energy prices; energy at a time none covers is at `pricePerKwh`. A "
        "session's energy is split by its meter readings (across a band's edge in "
        "proportion to time); energy no reading accounts for is at the price in force at "
        "its start."))
    time_zone: str | None = strawberry.field(description="The bands' IANA time zone.")
    connector_type: ConnectorType | None = strawberry.field(description=(
        "It prices only sessions on plugs of this standard (null: see `powerType`)."))
    power_type: PowerType | None = strawberry.field(description=(
        "It prices only sessions on plugs of this power type (CCS and CHAdeMO are DC; "
        "Type 1, Type 2 and Schuko AC; NACS and Other neither). Neither set: all plugs. "
        "Of a station's (else its company's) versions in force, the most specific that "
        "fits a session's plug prices it."))
    valid_until: datetime | None = strawberry.field(description=(
        "When it ends, UTC: where the version that replaced it begins (a time to come for "
        "one set for later), or when it was removed (`removeTariff`). Null: the version "
        "of its owner and scope a session starting now is priced by, or the latest set "
        "for later. A scope with none open prices by its owner's next scope (power type, "
        "all plugs) and, for a station's, by its company's."))
    _r: strawberry.Private[d.Tariff]

    @classmethod
    def wrap(cls, r: d.Tariff, ctx: GraphContext) -> Tariff:
        def price(value: Decimal) -> Decimal:
            return price_shown(value, r.currency)
        return _audited(cls, r, {
            "price_per_kwh": price(r.price_per_kwh),
            "currency": r.currency,
            "price_per_minute": price(r.price_per_minute),
            "session_fee": price(r.session_fee),
            "tax_rate": rate_shown(r.tax_rate),
            "valid_from": r.valid_from,
            "idle_price_per_minute": price(r.idle_price_per_minute),
            "idle_grace_minutes": r.idle_grace_minutes,
            "idle_fee_cap": price(r.idle_fee_cap) if r.idle_fee_cap is not None else None,
            "energy_bands": [PriceBand.of(band, r.currency) for band in r.energy_bands],
            "time_zone": r.time_zone,
            "connector_type": r.connector_type,
            "power_type": r.power_type,
            "valid_until": r.valid_until,
        }, _staff(ctx))

    @strawberry.field(description="The station whose price list it is; null for a "
                                  "company's, and when the viewer may not see it.")
    async def station(self, info: Info) -> Station | None:
        return await _related(info, Station, self._r.station_id)

    @strawberry.field(description="The company whose price list it is; staff only (null for "
                                  "drivers and anonymous users, who are not told who runs a "
                                  "station).")
    async def company(self, info: Info) -> Company | None:
        # A station of no tariff of its own shows its company's: a driver of that company
        # (who sees their own company) read which stations it runs through it.
        if not _staff(_ctx(info)):
            return None
        return await _related(info, Company, self._r.company_id)


@strawberry.type(description="What a completed session costs, and its settlement state.")
class Payment(Node, Audited):
    status: PaymentStatus = strawberry.field(description="Where it is in settlement.")
    provider: str = strawberry.field(description=(
        "The payment provider that captured it, or marked it failed; `manual` until then, "
        "and when none is configured."))
    provider_ref: str | None = strawberry.field(description=(
        "The provider's reference of its capture; null before one. Each refund's "
        "reference is on the refund (`refunds`)."))
    _r: strawberry.Private[d.Payment]

    @classmethod
    def wrap(cls, r: d.Payment, ctx: GraphContext) -> Payment:
        return _audited(cls, r, {
            "status": r.status,
            "provider": r.provider,
            "provider_ref": r.provider_ref,
        })

    @strawberry.field(description=(
        "What is asked of the driver: the session's `cost` when it closed, and its "
        "corrected cost when a late StopTransaction corrects the session while no money "
        "moved (PENDING, FAILED; 0 once VOIDED). A CAPTURED or REFUNDED payment keeps "
        "what was collected: when it differs from the session's `cost`, an operator "
        "settles the difference (a refund of part of it)."))
    def amount(self) -> Money:
        return Money(amount_minor=BigInt(self._r.amount_minor), currency=self._r.currency)

    @strawberry.field(description="Paid back so far (partial refunds add up; the payment "
                                  "is REFUNDED once this is its whole amount).")
    def refunded(self) -> Money:
        return Money(amount_minor=BigInt(self._r.refunded_minor), currency=self._r.currency)

    @strawberry.field(description=(
        "Being paid back: refunds asked of the payment provider and not answered yet "
        "(0 when none). Reserved against the payment: a refund may ask at most "
        "`amount` less `refunded` less this. A refund whose request was interrupted (a "
        "crash) stays here until a sweep asks the provider again under the refund's own "
        "key, within minutes, and records it in `refunded` (or gives it back when the "
        "provider refuses)."))
    def refunding(self) -> Money:
        return Money(amount_minor=BigInt(self._r.refunding_minor), currency=self._r.currency)

    @strawberry.field(description=(
        "What was paid back, one entry per refund (partial ones too), newest first: "
        "the ledger `refunded` sums. Seen by whoever sees the payment. At most the "
        f"newest {MAX_REFUNDS}."))
    async def refunds(self, info: Info) -> list[Refund]:
        ctx = _ctx(info)
        found = await ctx.loaders.shared(_new_refunds_loader).load(self._r.id)
        return [Refund.wrap(r, ctx) for r in found]

    @strawberry.field(description="The session it bills; null when the viewer may not see "
                                  "it.")
    async def session(self, info: Info) -> Session | None:
        return await _related(info, Session, self._r.session_id)

    @strawberry.field(description="Who pays: the session's driver; null for a tag of no "
                                  "card, and when the viewer may not see them.")
    async def user(self, info: Info) -> User | None:
        return await _related(info, User, self._r.user_id)


@strawberry.type(description=(
    "Money paid back of a payment, recorded when it was made: reports book it then. "
    "`createdBy` is who paid it back."))
class Refund(Audited):
    at: datetime = strawberry.field(description=(
        "When it was recorded as paid back: the provider's answer; for a refund an "
        "interrupted request left, when the sweep recorded it (the provider's answer "
        "does not say when it paid). Reports book it in this period."))
    provider: str = strawberry.field(description=(
        "The payment provider that paid it back (the payment's `provider` is its "
        "capture's). A refund recorded before refunds kept their own shows the "
        "payment's."))
    provider_ref: str | None = strawberry.field(
        description="The payment provider's reference of the refund.")
    _r: strawberry.Private[d.Refund]

    @classmethod
    def wrap(cls, r: d.Refund, ctx: GraphContext) -> Refund:
        # Its audit stamps as its payment's: whoever sees the payment sees who settled it.
        return _audited(cls, r, {"at": r.at, "provider": r.provider,
                                 "provider_ref": r.provider_ref})

    @strawberry.field(description="How much, in the payment's currency.")
    def amount(self) -> Money:
        return Money(amount_minor=BigInt(self._r.amount_minor), currency=self._r.currency)


@strawberry.type(description="One change of one record: who, what, when, before and after.")
class AuditEntry(Node, Audited):
    entity: str = strawberry.field(description="Entity kind, e.g. `station`, `id_tag`.")
    entity_id: strawberry.ID = strawberry.field(description="Global id of the changed record.")
    action: AuditAction = strawberry.field(description="What kind of change.")
    actor: str = strawberry.field(description=(
        "Who made it: a user's global id (as `User.id`), `ocpp:<cpId>` or `system`."))
    at: datetime = strawberry.field(description="When it happened, UTC.")
    _r: strawberry.Private[d.AuditEntry]
    #: What the viewer sees of the holders its images name, read once for ``before`` and
    #: ``after`` (``_image``).
    _seen: strawberry.Private[asyncio.Future[Seen] | None]

    @classmethod
    def wrap(cls, r: d.AuditEntry, ctx: GraphContext) -> AuditEntry:
        entity_id = to_global_id(r.entity, r.entity_id) if r.entity in TYPE_BY_KIND \
            else r.entity_id
        return _audited(cls, r, {
            "entity": r.entity,
            "entity_id": strawberry.ID(entity_id),
            "action": r.action,
            "actor": shown_actor(r.actor),
            "at": r.at,
            "_seen": None,
        })

    @strawberry.field(description=(
        "The record before the change, as stored: snake_case fields and raw record ids "
        "(`station_id`); private fields hidden as reads hide them, and so is an id of "
        "whoever held the record then (`owner_id`, `user_id`, `company_id`, a station's "
        "`site_id`) naming a record the viewer does not see: a car's former owner is not "
        "told its new owner. `entityId` is the "
        "changed record's global id; another record's is base64 of `<TypeName>:<raw id>`, "
        "e.g. `Station:…`. Values as stored too, not as the API writes them out: a "
        "price as it was typed (`\"0.5900\"`, which the tariff shows `\"0.59\"`), money "
        "in minor units (a payment's `amount_minor`). Null for a CREATE."))
    async def before(self, info: Info) -> JSON | None:
        return await self._image(info, self._r.before)

    @strawberry.field(description=(
        "The record after the change, shaped as `before`. Null for a DELETE."))
    async def after(self, info: Info) -> JSON | None:
        return await self._image(info, self._r.after)

    async def _image(self, info: Info, image: dict[str, Any] | None) -> JSON | None:
        """An image as the policy lets the viewer read it (``Policy.audit_snapshot``, as
        the CSV export shows it): what the viewer sees of the holders it names is read
        once for both images (``_seen``), through the request's batched loads."""
        ctx = _ctx(info)
        if self._seen is None:
            self._seen = asyncio.ensure_future(ctx.services.reads.audit_seen(
                ctx.viewer, [self._r], _loading(ctx)))
        seen = await asyncio.shield(self._seen)
        return cast(JSON, ctx.services.policy.audit_snapshot(ctx.viewer, self._r, image, seen))

    @strawberry.field(description="The user who made the change, when it was a user.")
    async def actor_user(self, info: Info) -> User | None:
        return await _actor_user(info, self._r.actor)


@strawberry.type(description=(
    "One status report of a connector (history, and faults). Its audit stamps are its "
    "recording (`createdBy`: `ocpp:<cpId>` for its charger's report; `createdAt`: its "
    "`at`)."))
class StatusEvent(Node, Audited):
    cp_id: str = strawberry.field(description="The charger's OCPP identity.")
    connector_id: int = strawberry.field(description="0 is the charge point as a whole.")
    status: ConnectorStatus = strawberry.field(description="The status reported.")
    error_code: ChargePointErrorCode = strawberry.field(description=(
        "OCPP ChargePointErrorCode reported with it, `NO_ERROR` when healthy."))
    info: str | None = strawberry.field(description=(
        "The charger's free-text detail; null when it sent none."))
    vendor_error_code: str | None = strawberry.field(
        description="The charger's own code for the error (OCPP vendorErrorCode), as it "
                    "reported it; null when it sent none, and for reports stored before "
                    "ChargeGraph kept it.")
    at: datetime = strawberry.field(description=(
        "When the status began, by the charger's timestamp (else its clock's now), "
        "UTC."))
    _r: strawberry.Private[d.StatusEvent]

    @classmethod
    def wrap(cls, r: d.StatusEvent, ctx: GraphContext) -> StatusEvent:
        return _audited(cls, r, {
            "cp_id": r.cp_id,
            "connector_id": r.connector_id,
            "status": r.status,
            "error_code": shown_error_code(r.error_code),
            "info": r.info,
            "vendor_error_code": r.vendor_error_code,
            "at": r.at,
        }, _staff(ctx))

    @strawberry.field(description="The station that reported it; null when removed, or when "
                                  "the viewer may not see it.")
    async def station(self, info: Info) -> Station | None:
        return await _related(info, Station, self._r.station_id)


#: Node type for each entity kind, for ``node(id:)`` and payloads.
NODE_BY_KIND: dict[str, Any] = {
    "company": Company,
    "user": User,
    "vehicle": Vehicle,
    "id_tag": IdTag,
    "station": Station,
    "connector": Connector,
    "session": Session,
    "reservation": Reservation,
    "tariff": Tariff,
    "payment": Payment,
    "audit_entry": AuditEntry,
    "status_event": StatusEvent,
}

#: The entity class behind each node type.
RECORD_OF_NODE: dict[Any, type[d.Record]] = {
    node: d.ENTITY_BY_KIND[kind] for kind, node in NODE_BY_KIND.items()
}
