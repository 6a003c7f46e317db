"""Drivers' things: vehicles and the id tags (RFID cards, app tokens) that tie an OCPP
transaction to a user and a vehicle."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, cast

from domain import validation as v
from domain.clock import utcnow
from domain.entities import (
    IdTag,
    IdTagStatus,
    LocalListEntry,
    Record,
    Reservation,
    Session,
    User,
    Vehicle,
)
from domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    UniqueViolation,
    ValidationError,
)
from domain.policy import Viewer, live_reservations
from domain.ports import Change, Guard, Insert, Store
from domain.query import Eq, Filter, In, NotSub, Range, all_of, any_of
from domain.services import freed_tags
from domain.services.background import Background
from domain.services.base import (
    UNSET,
    Service,
    ServiceContext,
    holding_car,
    holding_card,
    not_erased,
    pages,
    stamp_new,
)
from domain.services.edits import edit, removal, retried
from domain.services.throttle import RollingLimit, counting_probes
from domain.services.withdrawal import (
    ACCEPTED,
    list_status,
    reissue_marks,
    restoration_marks,
    withdrawal_marks,
)

#: The most cards of one holder whose groups one query checks (``group_left_behind``).
GROUP_BATCH = 200

#: The most cards a driver may hold when issuing one for themselves (``issueIdTag``),
#: by default (``FleetService.max_cards_per_driver``, ``CHARGEGRAPH_MAX_CARDS_PER_DRIVER``).
MAX_CARDS_PER_DRIVER = 10

#: Card numbers a user (a driver, an operator) may be told are someone's within any
#: ``CARD_PROBE_WINDOW`` (``issueIdTag`` refused DUPLICATE, or IN_USE: another company's
#: card group, a freed number held back), then ``TOO_MANY_ATTEMPTS`` until the oldest of
#: them is out of it: each such answer confirms a number exists (review s33: a driver
#: tried 60 in 5 s, unthrottled, and could claim a physical card's number before its
#: holder). As operators' taken emails (``accounts.OPERATOR_TAKEN_EMAILS``): by user,
#: admins not counted; a number mistyped now and then fits well within it.
TAKEN_CARD_NUMBERS = 20
CARD_PROBE_WINDOW = timedelta(hours=1)

#: A garage's cars: those not removed (``Vehicle.removed_at``). Lists of cars and every
#: choice of one (a card's link, a remote start or reservation by car) read these; a
#: session's car, ``node(id:)``, filters by a car's id and the CSV export read any car,
#: so history keeps the car it was charged for (QA s22).
IN_GARAGE: Filter = Eq("removed_at", None)


def kept_for(vehicle: Vehicle, owner: User) -> Guard:
    """A card's link to ``vehicle`` holds only while the car is still ``owner``'s and in
    their garage: a removal or hand-over on another instance may land between the
    link's read and its write (review s22: a card ended pointing at a removed car).
    Both are guarded the other way (``_no_links_but``)."""
    return Guard(Vehicle, all_of(Eq("id", vehicle.id), Eq("owner_id", owner.id), IN_GARAGE))


def _no_links_but(vehicle: Vehicle, holder_id: str | None) -> Guard:
    """A car's removal (``holder_id`` ``None``) or hand-over to ``holder_id`` holds only
    while no card is left linked to it but of ``holder_id``: a card linked between its
    read of the links and its write is unlinked on the next try."""
    linked: Filter = Eq("vehicle_id", vehicle.id)
    if holder_id is not None:
        linked = all_of(linked, any_of(Range("user_id", lt=holder_id),
                                       Range("user_id", gt=holder_id)))
    return Guard(IdTag, linked, exists=False)


def blocked_by_others(tag: IdTag, owner: User) -> bool:
    """Whether ``tag`` stands blocked by someone other than its owner (an operator or
    admin: who may charge is theirs to decide)."""
    return tag.status is IdTagStatus.BLOCKED and tag.blocked_by != owner.id


def staff_expiry_passed(tag: IdTag, owner: User, now: datetime) -> bool:
    """Whether ``tag``'s expiry date has passed at ``now`` and was set by someone other
    than its owner (an operator or admin: ``IdTag.expiry_set_by``; unrecorded counts as
    another, as an unrecorded blocker does). Such a date bars the owner as an EXPIRED
    mark does (QA s29: the driver issued themselves a new card the minute their
    operator's date passed); one they chose themselves bars nothing."""
    return tag.expires_at is not None and tag.expires_at <= now \
        and expiry_set_by_staff(tag, owner.id)


def expiry_set_by_staff(tag: IdTag, owner_id: str | None) -> bool:
    """Whether ``tag``'s expiry was set by anyone but its owner (unrecorded: another)."""
    return tag.expiry_set_by != owner_id


def withdrawn_by_others(tag: IdTag, owner: User, now: datetime) -> bool:
    """Whether ``tag`` was made unusable by an operator or admin at ``now``, which its
    owner may not get round: blocked by them (``blocked_by_others``), marked EXPIRED, a
    status only they set (QA s28: its driver blocked it themselves, which made the block
    theirs to lift, and lifted it, the card Accepted again; or issued themselves a new
    card), or past an expiry date they set (``staff_expiry_passed``). A card past an
    expiry date its driver chose is not."""
    return blocked_by_others(tag, owner) or tag.status is IdTagStatus.EXPIRED \
        or staff_expiry_passed(tag, owner, now)


def _not_by(owner: User, field: str) -> Filter:
    """Cards whose ``field`` (a user id) names anyone but ``owner``, or no one."""
    return any_of(Eq(field, None), Range(field, lt=owner.id), Range(field, gt=owner.id))


def withdrawn_from(owner: User, now: datetime) -> Filter:
    """``owner``'s cards that are ``withdrawn_by_others`` at ``now``, as a store filter:
    marked EXPIRED, BLOCKED by anyone but them (who blocked it unrecorded counts as
    another: ``blocked_by`` null), or past an expiry anyone but them set."""
    return all_of(Eq("user_id", owner.id),
                  any_of(Eq("status", IdTagStatus.EXPIRED),
                         all_of(Eq("status", IdTagStatus.BLOCKED),
                                _not_by(owner, "blocked_by")),
                         all_of(Range("expires_at", lte=now),
                                _not_by(owner, "expiry_set_by"))))


def _future(expires_at: datetime | None) -> datetime | None:
    """A new card's expiry: none, or a zoned instant still to come."""
    expires_at = v.aware(expires_at, "expiresAt")
    if expires_at is not None and expires_at <= utcnow():
        raise ValidationError("expiresAt must be in the future", field="expiresAt",
                              code="OUT_OF_RANGE")
    return expires_at


def _status(status: Any) -> Any:
    """A card's new status, when given: one of ``IdTagStatus``, never cleared."""
    if status is None:
        raise ValidationError("status cannot be empty", field="status", code="REQUIRED")
    if status is not UNSET and not isinstance(status, IdTagStatus):
        raise ValidationError("unknown status", field="status")
    return status


async def foreign_card(store: Store, company_id: str | None, groups: Sequence[str], *,
                       as_group: bool, apart_from: str | None = None) -> IdTag | None:
    """A card of a holder outside the company ``company_id`` (drivers of no company are
    one pool) that carries one of ``groups`` as its parentIdTag, or (``as_group``: they
    are to be parentIdTags) is one of them itself; the cards of ``apart_from`` (a holder
    being moved) do not count. The rule "a group is one company's" asks this; one
    query: the holders are a sub-select."""
    named = any_of(In("parent_tag", tuple(groups)), In("tag", tuple(groups))) if as_group \
        else In("parent_tag", tuple(groups))
    company = Eq("company_id", company_id)
    staying = company if apart_from is None else any_of(company, Eq("id", apart_from))
    return await store.find_one(IdTag, all_of(named, NotSub("user_id", "user", staying)))


async def group_left_behind(store: Store, holder: User, company_id: str | None
                            ) -> tuple[IdTag, str] | None:
    """A card of ``holder`` and its group (its parentIdTag, or the card itself as other
    cards' parent) that has cards of holders outside the company ``company_id``: moving
    ``holder`` there would make the group two companies' (``foreign_card``'s rule, the
    one ``FleetService._parent_tag`` keeps when cards are put in groups). ``None`` when
    every group of theirs has no other members, or only members of ``company_id``."""
    # In batches of cards, by id: a fleet manager may hold many.
    async for cards in pages(store, IdTag, Eq("user_id", holder.id), GROUP_BATCH):
        groups = sorted({g for c in cards for g in (c.parent_tag, c.tag) if g is not None})
        other = await foreign_card(store, company_id, groups, as_group=True,
                                   apart_from=holder.id) if groups else None
        if other is not None:
            group = other.parent_tag if other.parent_tag in groups else other.tag
            return next(c for c in cards if group in (c.parent_tag, c.tag)), group
    return None


class FleetService(Service):
    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        #: What a card made unusable sets off at the chargers (``Services`` wires in
        #: ``Withdrawal.withdraw_card``): run in the background, so the change never
        #: waits on a charger.
        self.on_withdrawn: Callable[..., Awaitable[None]] | None = None
        #: What a card usable again sets off at the chargers (``Withdrawal.restore_card``:
        #: what its withdrawals changed is put back), in the background the same way.
        self.on_restored: Callable[[Viewer, IdTag], Awaitable[None]] | None = None
        self._withdrawing = Background()
        #: The cards (any status) a driver may hold when issuing one for themselves;
        #: 0: no limit (``_refuse_over_cap``).
        self.max_cards_per_driver = MAX_CARDS_PER_DRIVER
        #: Card numbers told to each user (``TAKEN_CARD_NUMBERS``).
        self.card_probes = RollingLimit(ctx.clock, limit=TAKEN_CARD_NUMBERS,
                                        window=CARD_PROBE_WINDOW, name="taken_card_numbers")

    @property
    def throttles(self) -> list[RollingLimit]:
        """The limits the instances share (``ThrottleSharing``)."""
        return [self.card_probes]

    async def settled(self) -> None:
        """Waits for what withdrawn cards set off in the background (tests, shutdown)."""
        await self._withdrawing.settled()

    def _withdrawn(self, viewer: Viewer, card: IdTag, status: IdTagStatus, *,
                   stop: bool, again: bool = False) -> None:
        """The card stands ``status`` now: what the chargers hold of it is taken back
        (``Withdrawal``); ``stop``: its session and reservations end too; ``again``: it
        was unusable before the change too (``Withdrawal.withdraw_card``)."""
        if self.on_withdrawn is None:
            return
        self._withdrawing.run(self.on_withdrawn(viewer, card, status, stop=stop,
                                                again=again),
                              f"withdraw-{card.tag}", f"withdrawing card {card.tag} failed")

    def _restored(self, viewer: Viewer, card: IdTag) -> None:
        """The card is usable again: what its withdrawals changed at the chargers is put
        back (``Withdrawal.restore_card``)."""
        if self.on_restored is None:
            return
        self._withdrawing.run(self.on_restored(viewer, card), f"restore-{card.tag}",
                              f"restoring card {card.tag} at the chargers failed")

    async def _owner(self, viewer: Viewer, owner_id: str | None, field: str) -> User:
        """The user the viewer acts for: themselves unless another id is given. Never an
        erased account: a car or card given to it would name or serve nobody, and would
        outlive its erasure (the write is guarded too: ``not_erased``)."""
        target_id = owner_id or viewer.user_id
        owner = await self.visible(viewer, User, target_id, field=field)
        if not self.policy.may_act_for_user(viewer, owner):
            raise Forbidden("you may not act for this user", field=field)
        if owner.erased_at is not None:
            raise Conflict("the account was erased", field=field, code="INVALID_STATE")
        return owner

    # ---------------------------------------------------------------- vehicles
    async def add_vehicle(self, viewer: Viewer, *, license_plate: str,
                          owner_id: str | None = None, make: str | None = None,
                          model: str | None = None, battery_kwh: float | None = None,
                          checks: v.Checks | None = None) -> Vehicle:
        """Every invalid field is reported at once (with the caller's ``checks``), before
        the owner is looked up. ``retried``, as ``issue_id_tag``: an owner erased between
        the read and the write fails the guard, and the next read refuses them on
        ``ownerId`` (QA s25: the caller was told CHANGED on an ``id`` the input has not)."""
        checks = checks or v.Checks()
        plate = checks(v.license_plate, license_plate)
        make = checks(v.optional_text, make, "make")
        model = checks(v.optional_text, model, "model")
        battery_kwh = checks(v.positive, battery_kwh, "batteryKwh", max_value=1000)
        checks.done()

        async def once() -> Vehicle:
            owner = await self._owner(viewer, owner_id, "ownerId")
            vehicle = stamp_new(
                Vehicle(
                    owner_id=owner.id,
                    license_plate=plate,
                    plate_key=v.plate_key(plate),
                    make=make,
                    model=model,
                    battery_kwh=battery_kwh,
                ),
                viewer,
            )
            await self._commit_plate(viewer, [(Insert(vehicle), None)],
                                     guards=[not_erased(owner.id)])
            return vehicle

        return await retried(once)

    async def _commit_plate(self, viewer: Viewer,
                            changes: Sequence[tuple[Change, Record | None]],
                            plate_field: str = "licensePlate",
                            guards: Sequence[Guard] = ()) -> None:
        """Commits a vehicle's write. The store's unique rule is on ``plate_key``, which
        no input names: the driver typed ``licensePlate`` (or handed the vehicle to an
        owner who has one with that plate: ``ownerId``), so that is where the duplicate
        is reported."""
        try:
            await self.commit(viewer, changes, guards=guards)
        except UniqueViolation as exc:
            if exc.field != "plate_key":
                raise
            raise UniqueViolation("the owner has a vehicle with this license plate already",
                                  field=plate_field) from None

    async def _own_vehicle(self, viewer: Viewer, vehicle_id: str, field: str = "id"
                           ) -> Vehicle:
        vehicle = await self._kept_vehicle(viewer, vehicle_id, field)
        owner = await self.visible(viewer, User, vehicle.owner_id, field=field)
        if not self.policy.may_act_for_user(viewer, owner):
            raise Forbidden("you may not change this vehicle", field=field)
        return vehicle

    async def update_vehicle(self, viewer: Viewer, vehicle_id: str, *,
                             owner_id: Any = UNSET, license_plate: Any = UNSET,
                             make: Any = UNSET, model: Any = UNSET,
                             battery_kwh: Any = UNSET, checks: v.Checks | None = None
                             ) -> Vehicle:
        """``owner_id``: the vehicle handed to another user (QA s17, a fleet: moving a van
        to another driver meant removing it, which took it off its past sessions). Its
        sessions keep it; the previous owner's cards linked to it are unlinked, as a
        removal unlinks them. The fields given are checked together (with the caller's
        ``checks``) before the vehicle is read."""
        checks = checks or v.Checks()
        owner_id = checks(v.present, owner_id, "ownerId", "a vehicle always has an owner")
        plate: Any = license_plate if license_plate is UNSET \
            else checks(v.license_plate, license_plate)
        make = make if make is UNSET else checks(v.optional_text, make, "make")
        model = model if model is UNSET else checks(v.optional_text, model, "model")
        battery_kwh = battery_kwh if battery_kwh is UNSET \
            else checks(v.positive, battery_kwh, "batteryKwh", max_value=1000)
        checks.done()

        async def once() -> Vehicle:
            vehicle = await self._own_vehicle(viewer, vehicle_id)
            new_owner_record = None if owner_id is UNSET or owner_id == vehicle.owner_id \
                else await self._owner(viewer, owner_id, "ownerId")
            new_owner = UNSET if new_owner_record is None else new_owner_record.id
            update = edit(
                vehicle,
                viewer,
                owner_id=new_owner,
                # The key is written with the plate, always: the two never disagree.
                license_plate=plate,
                plate_key=UNSET if plate is UNSET else v.plate_key(plate),
                make=make,
                model=model,
                battery_kwh=battery_kwh,
            )
            updated = cast(Vehicle, update.record)
            changes: list[tuple[Change, Record | None]] = [(update, vehicle)]
            if new_owner is not UNSET:
                tags = await self.store.find_all(IdTag, Eq("vehicle_id", vehicle.id))
                changes += [(edit(tag, viewer, vehicle_id=None), tag) for tag in tags
                            if tag.user_id != new_owner]
            await self._commit_plate(viewer, changes,
                                     plate_field="licensePlate" if new_owner is UNSET
                                     else "ownerId",
                                     guards=() if new_owner_record is None
                                     else [_no_links_but(vehicle, new_owner_record.id),
                                           not_erased(new_owner_record.id)])
            return updated

        return await retried(once)

    async def _kept_vehicle(self, viewer: Viewer, vehicle_id: str, field: str) -> Vehicle:
        """A car the viewer sees that is still in its garage: a removed one is history,
        no longer to be changed, removed again or chosen (NOT_FOUND, as for a car the
        viewer cannot see: it is gone from every list of cars)."""
        vehicle = await self.visible(viewer, Vehicle, vehicle_id, field=field)
        if vehicle.removed_at is not None:
            raise NotFound("the vehicle was removed", field=field)
        return vehicle

    async def remove_vehicle(self, viewer: Viewer, vehicle_id: str) -> Vehicle:
        """Takes the car out of its owner's garage (QA s22): no list of cars, card link
        or remote start offers it any more, and its plate may be added again. It stays
        as the car its sessions, payments and refunds were charged for (``removed_at``:
        a soft removal; deleting it made a session's car and the CSV export read null
        while a filter by its id still matched). Tags pointing at the car are unlinked
        in the same write. Not while it charges."""
        return await retried(lambda: self._remove_vehicle(viewer, vehicle_id))

    async def _remove_vehicle(self, viewer: Viewer, vehicle_id: str) -> Vehicle:
        vehicle = await self._own_vehicle(viewer, vehicle_id)
        # A session whose start the CSMS refused holds the car for nothing
        # (``holding_car``), its charger may never stop it.
        active = await self.store.find_one(Session, holding_car(vehicle.id))
        if active is not None:
            raise Conflict("the vehicle is charging right now", field="id", code="IN_USE")
        tags = await self.store.find_all(IdTag, Eq("vehicle_id", vehicle.id))
        # Each unlink on the card's version read, as the car's hand-over unlinks: a card
        # edited meanwhile (its operator blocked it) made an entry saying it Accepted
        # while the store kept it Blocked; now the removal runs again on a fresh read.
        changes: list[Any] = [
            (edit(tag, viewer, vehicle_id=None), tag) for tag in tags
        ]
        taken_out = edit(vehicle, viewer, removed_at=self.now())
        changes.append((taken_out, vehicle))
        await self.commit(viewer, changes, guards=[_no_links_but(vehicle, None)])
        return cast(Vehicle, taken_out.record)

    # ---------------------------------------------------------------- id tags
    async def issue_id_tag(self, viewer: Viewer, *, tag: str, user_id: str | None = None,
                           vehicle_id: str | None = None,
                           expires_at: datetime | None = None,
                           parent_tag: str | None = None, checks: v.Checks | None = None
                           ) -> IdTag:
        """Every invalid field is reported at once (with the caller's ``checks``), before
        the holder, vehicle and group are looked up. A refusal saying the number (or the
        group) is someone's is counted against the caller (``TAKEN_CARD_NUMBERS``)."""
        checks = checks or v.Checks()
        tag = checks(v.id_tag, tag)
        expires_at = checks(_future, expires_at)
        if parent_tag is not None:
            parent_tag = checks(v.id_tag, parent_tag, "parentIdTag")
        checks.done()
        with self._counting_card_probes(viewer):
            # After a pause (``Service.pause_to_retry``): two issues racing for a driver's
            # last place each saw the other's card on MongoDB (review r33).
            issued, reissued = await retried(lambda: self._issue_id_tag(
                viewer, tag, user_id, vehicle_id, expires_at, parent_tag),
                pause=self.pause_to_retry)
        if reissued:  # its holder's removed card again: put back at the chargers
            self._restored(viewer, issued)
        return issued

    async def _issue_id_tag(self, viewer: Viewer, tag: str, user_id: str | None,
                            vehicle_id: str | None, expires_at: datetime | None,
                            parent_tag: str | None) -> tuple[IdTag, bool]:
        """``issue_id_tag``'s reads, checks and write (``retried``: a car it links to that
        was removed or handed over meanwhile is read again, and refused); and whether it
        took over list entries of its holder's removed card of the tag
        (``reissue_marks``)."""
        owner = await self._owner(viewer, user_id, "userId")
        if not viewer.is_admin and await self._foreign_group(owner, tag, as_group=False):
            # Presented at a charger, it would take the reservations made for that group
            # id, and chargers would take it for the group's parent.
            raise Conflict("this id is another company's card group", field="tag",
                           code="IN_USE")
        if parent_tag is not None:
            parent_tag = await self._parent_tag(viewer, owner, parent_tag)
        guards = [not_erased(owner.id)]
        if vehicle_id is not None:
            guards.append(kept_for(await self._vehicle_of(viewer, owner, vehicle_id), owner))
        id_tag = stamp_new(
            IdTag(
                tag=tag,
                user_id=owner.id,
                vehicle_id=vehicle_id,
                expires_at=expires_at,
                expiry_set_by=None if expires_at is None else viewer.actor,
                parent_tag=parent_tag,
            ),
            viewer,
        )
        if not self.policy.may_manage_user(viewer, owner):
            guards.append(await self._refuse_if_withdrawn(owner))
            cap = await self._refuse_over_cap(owner, id_tag)
            if cap is not None:
                guards.append(cap)
        held = await freed_tags.hold_back(self.store, self.policy, viewer, tag, owner.id,
                                          self.now(), self.ctx.digest_key)
        if held is not None:
            guards.append(held)
        marks = await reissue_marks(self.store, viewer, id_tag)
        await self.commit(viewer, [(Insert(id_tag), None)], guards=guards, unaudited=marks)
        return id_tag, bool(marks)

    async def _refuse_over_cap(self, owner: User, new: IdTag) -> Guard | None:
        """A driver issuing a card for themselves while holding ``max_cards_per_driver``
        cards already (any status: a blocked one is held too; a removed one is gone) is
        refused ``LIMIT_REACHED`` on ``tag`` (QA s33: one sign-up issued itself 40 numbers
        in a row, each then refused to others as DUPLICATE, and for 30 days after its
        removal as IN_USE: squatting whole ranges). Staff issuing for them are not capped:
        they hand out their company's cards, and answer for it. Returns the guard the
        write carries when ``new`` takes the last place: no card of the driver stands
        once it lands but those read and ``new``, so of two issues racing for it (here
        or on another instance) the second's write fails, and, read again, is refused.
        ``None`` with no limit (0), or with room left after ``new``: on MongoDB a guard
        is read after the write, so two issues at once, each carrying it, each saw the
        other's card and both were undone (review r33), though both fit."""
        cap = self.max_cards_per_driver
        if not cap:
            return None
        mine = Eq("user_id", owner.id)
        held = await self.store.find_all(IdTag, mine, limit=cap)
        if len(held) >= cap:
            # Staff may have issued them more than the cap: the message says how many.
            count = await self.store.count(IdTag, mine)
            raise Conflict(f"you hold {count} cards already, {cap} the most a driver may "
                           "issue themselves: remove one you no longer use first",
                           field="tag", code="LIMIT_REACHED")
        if len(held) < cap - 1:
            return None
        known = In("id", (*(card.id for card in held), new.id))
        return Guard(IdTag, all_of(mine, NotSub("id", IdTag.kind, known)), exists=False)

    async def _refuse_if_withdrawn(self, owner: User) -> Guard:
        """A driver issuing their own tag while one of theirs stands blocked by an operator
        or admin would be charging around the block. (A card they blocked themselves,
        lost, is what a new one replaces.) So would one while a card of theirs stands
        marked EXPIRED: only operators and admins set that status (QA s28: the next
        minute the driver charged on a card of their own with no expiry), or one past an
        expiry date they set (``staff_expiry_passed``). A card past an expiry date the
        driver chose when they issued it is not: a new card replaces it.

        The store is asked for one such card (``withdrawn_from``), not for their blocked
        and expired cards to be sifted here (review r28-org: the first 100 of those,
        all blocked by the driver themselves, lost, hid an operator's). Returns the
        guard the new card's write carries: a card blocked, marked EXPIRED or given a
        past expiry by their operator between this read and that write (another request
        or instance) fails the write, and the issue, read again, is refused as it would
        have been after."""
        withdrawn = withdrawn_from(owner, self.now())
        if await self.store.find_one(IdTag, withdrawn) is not None:
            raise Forbidden("a card of yours was blocked or expired by your "
                            "operator: ask them for a new one", field="tag")
        return Guard(IdTag, withdrawn, exists=False)

    async def update_id_tag(self, viewer: Viewer, id_tag_id: str, *, status: Any = UNSET,
                            vehicle_id: Any = UNSET, expires_at: Any = UNSET,
                            parent_tag: Any = UNSET, checks: v.Checks | None = None
                            ) -> IdTag:
        """The fields given are checked together (with the caller's ``checks``) before
        the card is read."""
        checks = checks or v.Checks()
        status = checks(_status, status)
        expires_at = expires_at if expires_at in (UNSET, None) \
            else checks(v.instant, expires_at, "expiresAt")
        if parent_tag not in (UNSET, None):
            parent_tag = checks(v.id_tag, parent_tag, "parentIdTag")
        checks.done()
        # A group given may be refused as another company's (``_parent_tag``): counted
        # as an issue's is. An edit naming no group tells no number, nor is refused.
        with self._counting_card_probes(viewer, asks=isinstance(parent_tag, str)):
            updated, withdrawn, restored = await retried(lambda: self._edit_id_tag(
                viewer, id_tag_id, status, vehicle_id, expires_at, parent_tag))
        if withdrawn is not None:
            # Blocked now (a lost card) it may not go on charging; expired, a session it
            # started before stays authorized. Withdrawn again (unusable before the edit
            # too), what it still holds is taken back, its sessions left as they are.
            became, again = withdrawn
            self._withdrawn(viewer, updated, became, again=again,
                            stop=became is IdTagStatus.BLOCKED and not again)
        if restored:
            self._restored(viewer, updated)
        return updated

    async def _edit_id_tag(self, viewer: Viewer, id_tag_id: str, status: Any,
                           vehicle_id: Any, expires_at: Any, parent_tag: Any
                           ) -> tuple[IdTag, tuple[IdTagStatus, bool] | None, bool]:
        """``update_id_tag``'s read, checks and write (``retried``): the card as written,
        what it was withdrawn as and whether again (``_withdrawn_as``), and whether it is
        usable again."""
        id_tag = await self.visible(viewer, IdTag, id_tag_id)
        owner = await self.visible(viewer, User, id_tag.user_id)
        if not self.policy.may_act_for_user(viewer, owner):
            raise Forbidden("you may not change this id tag")
        if not self.policy.may_manage_user(viewer, owner):
            # Drivers may block their own card (it was lost) but not lift a block or an
            # expiry that an operator or admin set: those decide who may charge.
            if withdrawn_by_others(id_tag, owner, self.now()):
                # Not even rewritten as it is: the card is their operator's to decide on
                # now (a no-op rewrite once made the block look like the driver's own;
                # a block of a card marked EXPIRED was the driver's own, theirs to lift).
                raise Forbidden("your operator blocked this card or expired it: "
                                "ask them about it", field="id")
            # A card they blocked themselves (they found it again) they may unblock.
            own_block = id_tag.status is IdTagStatus.BLOCKED and id_tag.blocked_by == owner.id
            if status not in (UNSET, IdTagStatus.BLOCKED, id_tag.status) \
                    and not (own_block and status is IdTagStatus.ACCEPTED):
                # Each refusal says what was refused (QA s30: marking a card EXPIRED was
                # told "only operators and admins unblock or re-validate", neither of
                # which she asked). EXPIRED is staff's (``withdrawn_by_others``); what
                # else reaches here is lifting a block that is not hers.
                raise Forbidden("only operators and admins mark an id tag expired: block "
                                "it (status BLOCKED) to stop its use"
                                if status is IdTagStatus.EXPIRED else
                                "only operators and admins lift a block they set",
                                field="status")
            if expires_at is not UNSET and expires_at != id_tag.expires_at:
                raise Forbidden("only operators and admins change an id tag's expiry",
                                field="expiresAt")
        guards = [] if vehicle_id in (UNSET, None) \
            else [kept_for(await self._vehicle_of(viewer, owner, vehicle_id), owner)]
        if parent_tag not in (UNSET, id_tag.parent_tag):
            parent_tag = await self._parent_tag(viewer, owner, parent_tag)
        blocked_by: Any = UNSET  # who blocked it stays, whoever writes to it later
        if status is IdTagStatus.BLOCKED and (id_tag.status is not IdTagStatus.BLOCKED
                                              or self.policy.may_manage_user(viewer, owner)):
            blocked_by = viewer.actor  # an operator blocking a self-blocked card makes it theirs
        elif status is not UNSET and status is not IdTagStatus.BLOCKED:
            blocked_by = None
        # Who set the expiry is written with every change of it (a driver changes none:
        # refused above), and stays otherwise, whoever writes to the card later.
        moved = expires_at is not UNSET and expires_at != id_tag.expires_at
        expiry_set_by: Any = UNSET if not moved \
            else None if expires_at is None else viewer.actor
        update = edit(
            id_tag,
            viewer,
            status=status,
            blocked_by=blocked_by,
            vehicle_id=vehicle_id,
            expires_at=expires_at,
            expiry_set_by=expiry_set_by,
            parent_tag=parent_tag,
        )
        updated = cast(IdTag, update.record)
        if status is IdTagStatus.ACCEPTED and updated.status_at(self.now()) \
                is IdTagStatus.EXPIRED:
            # ACCEPTED alone does not lift an expiry: the card still read EXPIRED and the
            # caller was told nothing (QA s24). Moving nothing, they are told what to move.
            raise Conflict("the card's expiry is past: move expiresAt later or clear it "
                           "to make it usable", field="expiresAt", code="EXPIRED")
        withdrawn = await self._withdrawn_as(id_tag, updated)
        restored = self._usable_again(id_tag, updated)
        marks = [] if withdrawn is None else await withdrawal_marks(
            self.store, viewer, [id_tag.id], list_status(withdrawn[0]))
        if restored:  # marked in the same commit, as a withdrawal is (a crash loses none)
            marks += await restoration_marks(self.store, viewer, [id_tag.id])
        await self.commit(viewer, [(update, id_tag)], unaudited=marks, guards=guards)
        return updated, withdrawn, restored

    def _usable_again(self, before: IdTag, after: IdTag) -> bool:
        """Whether a card that could not charge can now: unblocked, re-validated, its
        expiry moved later or cleared. (Its holder's state is not the card's: a
        reactivation is ``Withdrawal.restore_user``'s; a card's group, its parentIdTag,
        gives it nothing: Authorize answers from the card alone.)"""
        now = self.now()
        return before.status_at(now) is not IdTagStatus.ACCEPTED \
            and after.status_at(now) is IdTagStatus.ACCEPTED

    async def _withdrawn_as(self, before: IdTag, after: IdTag
                            ) -> tuple[IdTagStatus, bool] | None:
        """What an edited card that cannot charge after the edit is withdrawn as, and
        whether again (it could not before either); ``None`` for an edit that withdraws
        nothing. A card that could charge and no longer can, or one blocked now (an
        expired one too: a session it started before its expiry may still run), is
        withdrawn. So is one unusable before and after (expired by its date or its
        status, blocked) that still holds what a withdrawal takes back
        (``_still_holds``: a live reservation, a list entry Accepted), whatever the edit
        changed: the expiry sweep takes each card once, when it walks past its expiry
        from where it last stopped, and reads Accepted cards only, so one expired lately
        (not swept yet) whose expiry is moved back before that point, or which is marked
        EXPIRED (status only), is never its (review r27-reserve, r27-misc: its
        reservation kept the plug held, and the chargers' lists kept it Accepted, the
        edit seeing it expired before and after). What it was withdrawn of already is
        left as it is: the withdrawal takes back only what is still held for it."""
        now = self.now()
        became = after.status_at(now)
        if became is IdTagStatus.ACCEPTED:
            return None
        if before.status_at(now) is IdTagStatus.ACCEPTED or (
                became is IdTagStatus.BLOCKED and before.status is not IdTagStatus.BLOCKED):
            return became, False
        if await self._still_holds(after):
            return became, True
        return None

    async def _still_holds(self, card: IdTag) -> bool:
        """Whether ``card`` still has what a withdrawal takes back: a live reservation
        made for it (``base.made_for``: its tag and holder) or a list entry holding it
        Accepted that no withdrawal is under way for (not marked wanted withdrawn: one
        marked so is the sweep's, its push unanswered or refused; review r27-reserve3:
        each edit of the card pushed it again, past the sweep's backoff)."""
        reserved = await self.store.find_one(Reservation, all_of(
            Eq("id_tag", card.tag), Eq("user_id", card.user_id),
            live_reservations(self.now())))
        if reserved is not None:
            return True
        return await self.store.find_one(LocalListEntry, all_of(
            Eq("card_id", card.id), Eq("status", ACCEPTED),
            any_of(Eq("wanted", None), Eq("wanted", ACCEPTED)))) is not None

    async def remove_id_tag(self, viewer: Viewer, id_tag_id: str) -> IdTag:
        """Removes a card (mistyped, lost for good, replaced). Its sessions keep the tag
        as it was charged with (history); the tag may be issued again. Not while it is
        charging; its live reservations are cancelled and the chargers' lists holding it
        told it is blocked, in the background. A driver cannot remove a card their
        operator blocked or marked EXPIRED (issuing a new one would then get round the
        block: ``withdrawn_by_others``)."""
        id_tag = await retried(lambda: self._remove_id_tag(viewer, id_tag_id))
        self._withdrawn(viewer, id_tag, IdTagStatus.BLOCKED, stop=True)
        return id_tag

    async def _remove_id_tag(self, viewer: Viewer, id_tag_id: str) -> IdTag:
        """``remove_id_tag``'s read, checks and deletion, on the version read
        (``edits.removal``; ``retried``): a block by the card's operator landing between
        its driver's read and the delete deleted the blocked card (the block gone, a new
        card issuable around it) with an entry whose before-image was the card as read."""
        id_tag = await self.visible(viewer, IdTag, id_tag_id)
        owner = await self.visible(viewer, User, id_tag.user_id)
        if not self.policy.may_act_for_user(viewer, owner):
            raise Forbidden("you may not change this id tag")
        if not self.policy.may_manage_user(viewer, owner) \
                and withdrawn_by_others(id_tag, owner, self.now()):
            raise Forbidden("your operator blocked this card or expired it: ask "
                            "them about it", field="id")
        # Its own session: one a charger runs for the same tag string before the card
        # was issued (of no card, maybe another company's station) is not the card's;
        # nor one whose start was refused (``holding_card``), which held a lost card for
        # good when its charger never stopped it (review r26-tx3).
        its_own = all_of(holding_card(id_tag.tag), Eq("user_id", id_tag.user_id))
        charging = await self.store.find_one(Session, its_own)
        if charging is not None:
            raise Conflict("the card is charging right now", field="id", code="IN_USE")
        # Lost for good: no charger may go on accepting it offline (BLOCKED, not unknown:
        # a list entry removed would leave a charger's cache to decide). Marked wanted in
        # the delete's own commit: the push runs in the background, and a crash before it
        # must not leave the lists accepting the card (a charger's boot sends the mark).
        marks = await withdrawal_marks(self.store, viewer, [id_tag.id], "Blocked")
        # The read above is no lock: a start of the card (a fresh one, or a resent
        # refused one now accepted) written between it and the delete left an ACTIVE,
        # billed session on a card that was gone, its charger told Accepted (review
        # r27-accounts2). So the delete holds only while none holds it, as the store
        # stands with it (by the index of open sessions' tags, migration 69); it runs
        # again on a trip and is refused IN_USE. The starts are guarded the other way
        # (their card still on record: ``ChargingService._start_guards``, ``_answered``).
        # Its number held back from drivers for a while: the card may still be in use.
        # Written first: an issue of the number landing after the delete sees it.
        await self.commit(viewer, [(removal(id_tag), id_tag)], unaudited=marks,
                          guards=[Guard(Session, its_own, exists=False)],
                          first=freed_tags.freed(viewer, [id_tag], owner.company_id,
                                                 self.now(), self.ctx.digest_key))
        return id_tag

    async def sweep_freed_tags(self) -> int:
        """Deletes the card numbers freed ``freed_tags.HELD_FOR`` ago or longer: free
        to anyone again (the hold-back reads only the last ``HELD_FOR`` anyway)."""
        return await freed_tags.sweep(self.store, self.now() - freed_tags.HELD_FOR)

    def _counting_card_probes(self, viewer: Viewer, *, asks: bool = True
                              ) -> AbstractContextManager[None]:
        """``counting_probes`` of ``card_probes`` for an attempt that may be told a card
        number or group is someone's (``asks``; ``_tells_number_taken``): refused once
        spent before anything is read, so the refusal tells nothing. Admins, and
        attempts naming no number, are not counted nor refused."""
        return counting_probes(
            self.card_probes, viewer.user_id if asks and not viewer.is_admin else None,
            "too many card numbers that are in use already: at most "
            f"{self.card_probes.limit} an hour", _tells_number_taken)

    async def _parent_tag(self, viewer: Viewer, owner: User, group: str | None
                          ) -> str | None:
        """A card's group is its operator's (or an admin's) to set or remove: a driver
        giving their card another group's parent id could use that group's reservations,
        and stop its members' sessions at chargers that let a card of the group end one;
        one taking it out of its fleet's group would leave its group's reservations and
        stops. And a group is one company's: an operator may not put their drivers'
        cards in a group another company's cards are in, or under another company's card
        (chargers compare parentIdTags as text, whoever's they are). Admins may.
        ``group``: checked already (``validation.id_tag``)."""
        if not self.policy.may_manage_user(viewer, owner):
            raise Forbidden("only operators and admins put cards in a group or take "
                            "them out", field="parentIdTag")
        if group is None:
            return None
        if not viewer.is_admin and await self._foreign_group(owner, group, as_group=True):
            raise Conflict("this card group is another company's", field="parentIdTag",
                           code="IN_USE")
        return group

    async def _foreign_group(self, owner: User, group: str, *, as_group: bool) -> bool:
        """Whether ``group`` is another company's than ``owner``'s (``foreign_card``)."""
        return await foreign_card(self.store, owner.company_id, (group,),
                                  as_group=as_group) is not None

    async def _vehicle_of(self, viewer: Viewer, owner: User, vehicle_id: str) -> Vehicle:
        vehicle = await self._kept_vehicle(viewer, vehicle_id, "vehicleId")
        if vehicle.owner_id != owner.id:
            raise ValidationError("the vehicle belongs to someone else", field="vehicleId")
        return vehicle


def _tells_number_taken(exc: DomainError) -> bool:
    """Whether ``issue_id_tag``'s refusal says a card number or group is someone's:
    DUPLICATE from the store's unique index, IN_USE of another company's card group
    (``tag`` or ``parentIdTag``) or of a freed number held back (``freed_tags``)."""
    return (isinstance(exc, UniqueViolation) and exc.field == "tag") or (
        exc.code == "IN_USE" and exc.field in ("tag", "parentIdTag"))
