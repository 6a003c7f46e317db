"""Companies and users: creation, changes, deactivation, and logging in."""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from datetime import timedelta
from typing import Any, cast

from domain import validation as v
from domain.entities import Company, Record, Role, Station, User
from domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Unauthenticated,
    UniqueViolation,
    ValidationError,
    each,
)
from domain.events import AccessChanged
from domain.policy import Viewer, refuse_unless, refuse_unless_staff
from domain.ports import Change, Guard, Insert
from domain.query import Eq, Filter, Range, all_of, any_of
from domain.services.background import Background
from domain.services.base import UNSET, Service, ServiceContext, stamp_new, touch
from domain.services.edits import edit, retried
from domain.services.fleet import group_left_behind
from domain.services.stations import may_own
from domain.services.throttle import RollingLimit, Shared, SignInThrottle, counting_probes

log = logging.getLogger("chargegraph.accounts")

#: Failed sign-ins for one email, from all clients together, before it is locked.
EMAIL_LIMIT = 50
#: Failed sign-ins from one client, whatever the emails, before it is locked: a guesser
#: trying one password on many accounts (or random emails, to keep every per-email count
#: low) from one address. Generous, for offices behind one NAT address.
CLIENT_LIMIT = 100
#: Sign-ins being checked at once (each tens of milliseconds of argon2) before more are
#: told to try again in a moment instead of queueing: a flood must not make every
#: sign-in wait for seconds, nor pile up requests in memory.
MAX_PENDING_SIGN_INS = 16
#: Of those, at most this many from one client (``client_key``): one address flooding
#: with random emails took every slot until its failures locked it.
MAX_PENDING_PER_CLIENT = 5

#: Sign-ups from one client (``client_key``) within ``SIGN_UP_WINDOW`` before it waits
#: out the rest of it: a household or an office behind one address signs up a few
#: drivers; a script making accounts, or probing which emails have one, is stopped.
SIGN_UP_LIMIT = 10
SIGN_UP_WINDOW = timedelta(hours=1)
#: Taken emails an operator may be told (``createUser``, a change of one of their
#: people's email answered DUPLICATE) within any ``OPERATOR_PROBE_WINDOW``, then
#: ``TOO_MANY_ATTEMPTS`` until the oldest of them is out of it: other companies' people
#: do not exist for them, so each such answer tells them who has an account (QA s26).
#: Their own budget, by their user id: their office's sign-ins are no concern of it
#: (review s26). A bulk import meeting a few existing accounts fits well within it.
OPERATOR_TAKEN_EMAILS = 20
OPERATOR_PROBE_WINDOW = timedelta(hours=1)

# Verifying against a fixed hash when the email is unknown keeps login time the same for
# known and unknown emails, so the response time does not reveal who has an account.
_DUMMY_PASSWORD = "not-a-real-password-but-long-enough"


def client_key(address: str | None) -> str | None:
    """What sign-in limits count a client by: its IPv4 address, or the /64 network of an
    IPv6 one (a single host is given a whole /64 and may send from any address in it).
    Anything else (a name, nothing) as it is."""
    if not address:
        return None
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def other_active_admins(user_id: str) -> Filter:
    """The active admins but ``user_id``: one must stay when that user's admin rights go
    (a demotion, a deactivation, an erasure), or nobody could manage the deployment."""
    return all_of(Eq("role", Role.ADMIN), Eq("active", True),
                  any_of(Range("id", lt=user_id), Range("id", gt=user_id)))


def _name_taken() -> Conflict:
    return Conflict("another company has this name", field="name", code="DUPLICATE")


class AccountService(Service):
    _dummy_hash: str | None = None

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        # Per email and client: a guesser is stopped after a few tries, but cannot lock
        # the account's owner out from elsewhere. Per email across all clients, a much
        # higher limit stops guessing spread over many addresses.
        self.throttle = SignInThrottle(ctx.clock, name="sign_in")
        self.email_throttle = SignInThrottle(ctx.clock, limit=EMAIL_LIMIT, name="email")
        self.client_throttle = SignInThrottle(ctx.clock, limit=CLIENT_LIMIT, name="client")
        #: Sign-ins whose password is being checked now (``MAX_PENDING_SIGN_INS``), in
        #: all and per client.
        self._pending = 0
        self._pending_of: Counter[str] = Counter()
        #: What else a deactivation releases (``Services`` wires in ``Withdrawal``: the
        #: user's cards at the chargers, sessions and reservations, with the actor who
        #: deactivated them); run in the background, so the deactivation itself never
        #: waits on a charger.
        self.on_deactivated: Callable[[Viewer, User], Awaitable[None]] | None = None
        #: What a reactivation sets off (``Withdrawal.restore_user``: what the
        #: deactivation withdrew of the user's cards at the chargers is put back).
        self.on_reactivated: Callable[[Viewer, User], Awaitable[None]] | None = None
        #: Sign-ins being checked now, per (email, client): a lock they set is theirs.
        self._checking: Counter[str] = Counter()
        #: Attempts that may find an email taken being checked now, per client
        #: (``_counting_taken_emails``): a lock they set is theirs.
        self._probing: Counter[str] = Counter()
        self._releasing = Background()
        #: Whether drivers may open accounts themselves (``sign_up``); off unless the
        #: deployment says so (``Settings.sign_up``).
        self.sign_up_open = False
        #: Sign-ups per client, successful or not (``SIGN_UP_LIMIT``).
        self.sign_up_throttle = SignInThrottle(ctx.clock, limit=SIGN_UP_LIMIT,
                                               window=SIGN_UP_WINDOW, lockout=SIGN_UP_WINDOW,
                                               name="sign_up")
        #: Taken emails told to each operator (``OPERATOR_TAKEN_EMAILS``).
        self.operator_probes = RollingLimit(ctx.clock, limit=OPERATOR_TAKEN_EMAILS,
                                            window=OPERATOR_PROBE_WINDOW,
                                            name="operator_taken_emails")

    async def hash_password(self, password: str) -> str:
        """An account's password hashed in its normalized form (``password_form``);
        chargers' passwords (``StationService``) are hashed as given."""
        return await super().hash_password(v.password_form(password))

    async def password_matches(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` is the one of ``password_hash``: in its normalized form,
        or as typed, for hashes made before passwords were normalized."""
        return await self._matched_form(password_hash, password) is not None

    async def _matched_form(self, password_hash: str, password: str) -> str | None:
        """The form of ``password`` that ``password_hash`` is of: its normalized form
        (``password_form``), or, for a hash made before passwords were normalized, the
        text as typed, in which case it is not ``password_form``'s; ``None``: neither."""
        normalized = v.password_form(password)
        if await super().password_matches(password_hash, normalized):
            return normalized
        if normalized != password and await super().password_matches(password_hash,
                                                                      password):
            return password
        return None

    @property
    def throttles(self) -> list[Shared]:
        """Every limit on sign-ins and sign-ups (and operators' taken emails), for the
        instances to share (``ThrottleSharing``)."""
        return [self.throttle, self.email_throttle, self.client_throttle,
                self.sign_up_throttle, self.operator_probes]

    # ---------------------------------------------------------------- companies
    async def create_company(self, viewer: Viewer, *, name: str) -> Company:
        refuse_unless(viewer.is_admin, "only admins create companies")
        company = stamp_new(Company(name=v.name(name)), viewer)
        await self._refuse_taken_name(company)
        await self._commit_named(viewer, [(Insert(company), None)])
        return company

    async def _refuse_taken_name(self, company: Company) -> None:
        """Company names are how people (and ``create-user --company``) tell companies
        apart: two of one name would make every such choice a guess."""
        named = await self._companies_named(company.name)
        if any(other.id != company.id for other in named):
            raise _name_taken()

    async def _commit_named(self, viewer: Viewer,
                            changes: Sequence[tuple[Change, Record | None]]) -> None:
        """Commits a company's write of its name. ``_refuse_taken_name`` answers before
        it, but two writes of one name at once (two requests, two instances) both pass
        that read: the store's unique rule on the name's identity (``name_identity``)
        refuses the second, reported as the check reports it (review r2)."""
        try:
            await self.commit(viewer, changes)
        except UniqueViolation as exc:
            if exc.field != "name_identity":
                raise
            raise _name_taken() from None

    async def _company_named(self, name: str) -> Company | None:
        """The company of this name (``_companies_named``), if any."""
        return next(iter(await self._companies_named(name)), None)

    async def _companies_named(self, name: str) -> list[Company]:
        """The companies of this name, whatever its case or how its letters were typed
        (``validation.name_identity``; QA s17: "hofgarten properties" made a second
        company beside "Hofgarten Properties", its operator seeing none of the first
        one's stations; an "ä" typed as "a" and a combining diaeresis made another
        "Bäckerei"). Several only where names were stored before these rules. Found by
        the folded sort key every company stores (``Company.name_key``: one exact
        lookup, where a substring search over names could miss it past its limit; names
        of one identity share it), then compared by identity: the key drops accents,
        and "Muller" is not "Müller"."""
        wanted = v.name_identity(name)
        candidates = await self.store.find_all(Company, Eq("name_key", v.name_key(name)))
        return [c for c in candidates if v.name_identity(c.name) == wanted]

    async def update_company(self, viewer: Viewer, company_id: str, *, name: str,
                             checks: v.Checks | None = None) -> Company:
        """``checks``: what the caller checked of the same input already (the door's
        ids), reported with the name's own check."""
        refuse_unless_staff(viewer, "change companies")
        checks = checks or v.Checks()
        name = checks(v.name, name)
        checks.done()

        async def once() -> Company:
            company = await self.visible(viewer, Company, company_id)
            if not self.policy.may_manage_company(viewer, company.id):
                raise Forbidden("you may not change this company")
            update = edit(company, viewer, name=name)
            updated = cast(Company, update.record)
            await self._refuse_taken_name(updated)
            await self._commit_named(viewer, [(update, company)])
            return updated

        return await retried(once)

    async def ensure_company(self, viewer: Viewer, name: str) -> Company:
        """The company with this name, created when missing (CLI and seeding)."""
        existing = await self._company_named(v.name(name))
        return existing or await self.create_company(viewer, name=name)

    # ---------------------------------------------------------------- users
    async def create_user(self, viewer: Viewer, *, email: str, password: str, name: str,
                          role: Role, company_id: str | None = None,
                          checks: v.Checks | None = None) -> User:
        """Admins create anyone; operators create drivers and operators in their company.
        Every invalid field is reported at once (``checks``: the caller's own, such as
        the ids it decoded), before the company is looked up. An operator's taken email is
        counted against their own budget (``_counting_operator_probes``: other
        companies' people do not exist for them, and DUPLICATE said who has an account,
        unlimited, QA s26); an admin sees every account anyway. Not by the caller's
        address (review s26: counted there as each creation started, an operator's
        parallel creations of free emails locked their office's address, and its
        sign-ins)."""
        refuse_unless_staff(viewer, "create users")
        checks = checks or v.Checks()
        email = checks(v.email, email)
        password = checks(v.password, password)
        name = checks(v.name, name)
        if viewer.is_operator:
            if role is Role.ADMIN:
                raise Forbidden("operators cannot create admins", field="role")
            company_id = company_id or viewer.company_id
            if not self.policy.may_manage_company(viewer, company_id):
                raise Forbidden("operators create users in their own company",
                                field="companyId")
        checks.done()
        if company_id is not None:
            await self.visible(viewer, Company, company_id, field="companyId")
        with self._counting_operator_probes(viewer):
            user = stamp_new(
                User(
                    email=email,
                    name=name,
                    role=role,
                    company_id=company_id,
                    password_hash=await self.hash_password(password),
                ),
                viewer,
            )
            await self.commit(viewer, [(Insert(user), None)])
        return user

    async def update_user(self, viewer: Viewer, user_id: str, *, name: Any = UNSET,
                          email: Any = UNSET, password: Any = UNSET, role: Any = UNSET,
                          company_id: Any = UNSET, active: Any = UNSET,
                          current_password: Any = UNSET,
                          checks: v.Checks | None = None,
                          client: str | None = None) -> User:
        """Users change their own name, email and password (the last two with their
        ``current_password``); managers (admins, and operators for their company's
        people) also role, company and activity, and reset others' passwords. The
        fields' formats are checked together (with the caller's ``checks``) before the
        user is read. A change of an email to another (the same one sent again is no
        probe, and not counted) is counted as ``_probing_email`` says; ``client``: the
        caller's address, which a change of one's own email is counted by."""
        checks = checks or v.Checks()
        own_credentials = viewer.user_id == user_id and _changes_credentials(email, password)
        name = name if name is UNSET else checks(v.name, name)
        email = email if email is UNSET else checks(v.email, email)
        password = password if password is UNSET else checks(v.password, password)
        if own_credentials and not checks.failed("currentPassword"):
            # None given is told with the other fields (QA s32: only once they were
            # valid); a wrong one is checked, throttled, only when all of them are.
            checks(_current_password_given, current_password)
        role = checks(v.present, role, "role", "role cannot be empty")
        active = checks(v.present, active, "active", "active cannot be empty")
        checks.done()
        # Hashed before the user is read: the record written below is the one read.
        password_hash = UNSET if password is UNSET else await self.hash_password(password)
        given = {"name": name, "email": email, "password_hash": password_hash,
                 "role": role, "company_id": company_id, "active": active}
        user, updated = await retried(
            lambda: self._edit_user(viewer, user_id, given, current_password, client))
        if (updated.role, updated.company_id, updated.active, updated.token_epoch) != \
                (user.role, user.company_id, user.active, user.token_epoch):
            await self.access_changed(user.id)
        if active is False and user.active and self.on_deactivated is not None:
            # The deactivation stands if this fails: what it holds expires on its own.
            self._releasing.run(self.on_deactivated(viewer, updated),
                                f"release-deactivated-{user.id}",
                                f"releasing what deactivated user {user.id} held failed")
        if active is True and not user.active and self.on_reactivated is not None:
            # The reactivation stands if this fails: a charger's boot puts it back.
            self._releasing.run(self.on_reactivated(viewer, updated),
                                f"restore-reactivated-{user.id}",
                                f"restoring reactivated user {user.id}'s cards failed")
        return updated

    @contextmanager
    def _counting_taken_emails(self, client: str | None, *, sign_ups: bool = False
                               ) -> Iterator[None]:
        """What answers DUPLICATE for a taken email (a sign-up, a change of one's own
        email) tells which emails have an account, so it is counted as a sign-in is
        (QA s25: any signed-in driver probed emails by changing their own, unlimited):
        refused while the client is locked (``sign_ups``: by its sign-ups too), and
        counted as a failed sign-in of the client *before* the slow part (a password
        hashed or checked), in the same step as the lock test, as ``authenticate``
        counts: review s25, probes sent at once all passed the lock while the first
        were still checking the password, and ten answered with a limit of two. The
        count is taken back (``forgive``) unless the answer was a taken email."""
        if not client:
            yield
            return
        self._refuse_locked_client(client, sign_ups=sign_ups)
        self.client_throttle.failed(client)
        self._probing[client] += 1
        taken = False
        try:
            yield
        except UniqueViolation as exc:
            taken = exc.field == "email"
            raise
        finally:
            self._probing[client] -= 1
            if not self._probing[client]:
                del self._probing[client]
            if not taken:
                self.client_throttle.forgive(client)

    def _probing_email(self, viewer: Viewer, user: User, email: Any, client: str | None
                       ) -> AbstractContextManager[None]:
        """How ``viewer``'s change of ``user``'s email to ``email`` is counted (a DUPLICATE
        answer says who has an account): one's own by the client's sign-in limit, as a
        sign-up is (``_counting_taken_emails``); an operator's of one of their people by
        their own budget (``_counting_operator_probes``); an admin's not. Not at all
        when the email is not changed (review s26: resending it was counted)."""
        if email is UNSET or email == user.email:
            return nullcontext()
        if viewer.user_id == user.id:
            return self._counting_taken_emails(client_key(client))
        return self._counting_operator_probes(viewer)

    def _counting_operator_probes(self, viewer: Viewer) -> AbstractContextManager[None]:
        """``throttle.counting_probes`` for an operator's attempts that may find an email
        taken (told DUPLICATE on ``email``; ``OPERATOR_TAKEN_EMAILS``); admins not counted."""
        return counting_probes(
            self.operator_probes, None if viewer.is_admin else viewer.user_id,
            f"too many emails that have an account already: at most "
            f"{self.operator_probes.limit} an hour",
            lambda exc: isinstance(exc, UniqueViolation) and exc.field == "email")

    async def _edit_user(self, viewer: Viewer, user_id: str, given: dict[str, Any],
                         current_password: Any, client: str | None
                         ) -> tuple[User, User]:
        """``update_user``'s read, checks and write (``retried``): the user as read and as
        written; a change of email counted (``_probing_email``) from the read on."""
        user = await self.visible(viewer, User, user_id)
        if user.erased_at is not None:
            # Its person asked to be forgotten: nothing of them is written back into it.
            raise Conflict("the account was erased", field="id", code="INVALID_STATE")
        # Tested and counted in the step that read the user, before the slow part (the
        # current password checked), as ``_counting_taken_emails`` requires.
        with self._probing_email(viewer, user, given["email"], client):
            return await self._edit_read_user(viewer, user, given, current_password)

    async def _edit_read_user(self, viewer: Viewer, user: User, given: dict[str, Any],
                              current_password: Any) -> tuple[User, User]:
        """``_edit_user`` once the user is read."""
        email, password_hash = given["email"], given["password_hash"]
        role, company_id, active = given["role"], given["company_id"], given["active"]
        is_self = viewer.user_id == user.id
        manages = self.policy.may_manage_user(viewer, user)
        if not (is_self or manages):
            raise Forbidden("you may not change this user")
        if is_self and _changes_credentials(email, password_hash):
            await self.confirm_current_password(user, current_password)
        privileged = {"role": role, "companyId": company_id, "active": active}
        for field, value in privileged.items():
            if value is not UNSET and not manages:
                raise Forbidden("you may not change this field", field=field)
        guards = []
        if role is not UNSET:
            if role is Role.ADMIN and not viewer.is_admin:
                raise Forbidden("only admins grant the admin role", field="role")
            if is_self and role is not user.role:
                raise Forbidden("you cannot change your own role", field="role")
            if may_own(user.role) and not may_own(role):
                await self.refuse_owner_demotion(user)
                # Counted by a read: a station handed to them on another instance
                # meanwhile must fail this write, not leave a driver owning it (QA s21;
                # the hand-over is guarded the other way, ``stations.owner_still``).
                guards.append(Guard(Station, Eq("owner_id", user.id), exists=False))
        if company_id is not UNSET and company_id != user.company_id:
            # Taking someone out of a company (null) is a move as well: an operator could
            # otherwise strand a colleague, or themselves, outside every company.
            if not viewer.is_admin:
                raise Forbidden("only admins move users between companies", field="companyId")
            if company_id is not None:
                await self.visible(viewer, Company, company_id, field="companyId")
            await self._refuse_splitting_a_group(user, company_id)
        if active is False and is_self:
            raise Forbidden("you cannot deactivate yourself", field="active")
        if user.role is Role.ADMIN and user.active and (
                active is False or role not in (UNSET, Role.ADMIN)):
            # Nobody takes their own, so one admin is always left, but for two taking
            # each other's at once, each checked while the other was still an admin
            # (QA s25: both succeeded, and no admin was left). The guard keeps the
            # count true inside the write; the second one's retry then finds none.
            others = other_active_admins(user.id)
            if await self.store.count(User, others) == 0:
                raise Conflict("the last active admin keeps their rights: make another "
                               "admin first", field="active" if active is False else "role",
                               code="IN_USE")
            guards.append(Guard(User, others))
        # A new password or a deactivation revokes the user's tokens: one stolen with the
        # old password, or held by someone whose access was withdrawn, must not come back
        # to life when the account is reactivated. A reactivation does too: a deactivation
        # by a build before token epochs left the epoch of the tokens it withdrew.
        revoke = password_hash is not UNSET \
            or (isinstance(active, bool) and active != user.active)
        # Only the fields given are written, and only onto the version read (``edit``):
        # a deactivation or password reset landing while this request checked a password
        # makes it run again on the new version, which it then does not undo. A
        # revocation moves the token epoch on from the one read, so no revoked token
        # comes back and two revocations never merge into one epoch.
        update = edit(user, viewer, token_epoch=user.token_epoch + 1 if revoke else UNSET,
                      **given)
        await self.commit(viewer, [(update, user)], guards=guards)
        return user, cast(User, update.record)

    async def refuse_owner_demotion(self, user: User, field: str | None = "role") -> None:
        """A role that may not own stations (``stations.may_own``) is not given to one
        who owns some (QA s20: a driver owning a station, which ``updateStation``
        refuses), nor is an owner erased (``erasure``): they are handed over first.
        Counted, not listed: one query."""
        owned = await self.store.count(Station, Eq("owner_id", user.id))
        if owned:
            raise Conflict(f"they own {owned} station{'s' if owned != 1 else ''}: hand "
                           f"{'them' if owned != 1 else 'it'} to another owner first "
                           f"(updateStation ownerId)", field=field, code="IN_USE")

    async def _refuse_splitting_a_group(self, user: User, company_id: str | None) -> None:
        """A card group is one company's (``fleet.foreign_card``): a holder whose group
        has other members, who stay where they are, is not moved out of it (QA s20: the
        move left the group two companies', and then neither company's operators could
        issue into it). Their cards are taken out of the group first (moved one by
        one, a group's holders can never all be moved: take the cards out, move the
        holders, then set the group again). Admins too: a move says nothing of the
        group, and a group across companies is an admin's explicit choice on the
        cards."""
        split = await group_left_behind(self.store, user, company_id)
        if split is None:
            return
        card, group = split
        raise Conflict(f"their card {card.tag} is in card group {group} with cards of "
                       f"people who stay in their company: take it out of the group "
                       f"first", field="companyId", code="IN_USE")

    async def settled(self) -> None:
        """Waits for what deactivations release in the background (tests, shutdown)."""
        await self._releasing.settled()

    async def access_changed(self, user_id: str) -> None:
        """Open GraphQL sockets of this user, on every instance, are checked again now
        (had this been lost, the periodic re-check still catches it within a minute)."""
        await self.publish(AccessChanged(station_id=None, cp_id="", user_id=user_id))

    async def deactivate_user(self, viewer: Viewer, user_id: str,
                              checks: v.Checks | None = None) -> User:
        refuse_unless_staff(viewer, "deactivate users", checks)
        return await self.update_user(viewer, user_id, active=False)

    async def sign_out_everywhere(self, viewer: Viewer, user_id: str | None = None,
                                  checks: v.Checks | None = None) -> User:
        """Revokes every token of the user (yours, or, for an admin, ``user_id``'s): each
        device's refresh tokens and every access token, as a new password does (the token
        epoch moves on), and their open GraphQL sockets close (``access_changed``).
        Operators sign out only themselves: an operator's reach over their people is for
        their records, not their sessions. Audited as an update of the user."""
        if viewer.user_id is None:
            raise Unauthenticated("sign in first")
        target = viewer.user_id if user_id is None else user_id
        refuse_unless(target == viewer.user_id or viewer.is_admin,
                      "only admins sign out someone else", checks)

        async def once() -> User:
            user = await self.visible(viewer, User, target, field="userId")
            update = edit(user, viewer, token_epoch=user.token_epoch + 1)
            await self.commit(viewer, [(update, user)])
            return cast(User, update.record)

        signed_out = await retried(once)
        await self.access_changed(signed_out.id)
        return signed_out

    # ---------------------------------------------------------------- self-service
    async def sign_up(self, *, email: str, password: str, name: str,
                      client: str | None = None) -> User:
        """A driver's own account, when the deployment takes sign-ups
        (``sign_up_open``). Counted per client (``SIGN_UP_LIMIT``), and a taken email as
        a failed sign-in of the client too, so sign-up probes for accounts no faster than
        sign-in would. The password is hashed whether or not the email is taken: the
        answer's time tells nothing either."""
        if not self.sign_up_open:
            raise DomainError("this service does not take sign-ups: ask its operator for "
                              "an account", code="SIGN_UP_DISABLED")
        checks = v.Checks()
        email = checks(v.email, email)
        checked = checks(v.password, password)
        name = checks(v.name, name)
        checks.done()
        user = User(email=email, name=name, role=Role.DRIVER)
        client = client_key(client)
        try:
            with self._counting_taken_emails(client, sign_ups=True):
                self._refuse_when_busy(client)
                if client:
                    self.sign_up_throttle.failed(client)  # every attempt, a success too
                with self._hashing_slot(client):
                    user.password_hash = await self.hash_password(checked)
                # The new user is the actor: nobody else made the account.
                viewer = Viewer.of(user)
                stamp_new(user, viewer)
                await self.commit(viewer, [(Insert(user), None)])
        except UniqueViolation as exc:
            if exc.field != "email":
                raise
            raise Conflict("an account with this email exists: sign in instead",
                           field="email", code="DUPLICATE") from None
        return user

    def _refuse_locked_client(self, client: str | None, *, sign_ups: bool = True) -> None:
        """Refuses a client its sign-in limit locked (``sign_ups``: or its sign-up
        limit)."""
        locked = (self.client_throttle.locked_for(client)
                  or (self.sign_up_throttle.locked_for(client) if sign_ups else None)
                  ) if client else None
        if locked is not None and client and self._probing[client]:
            # Locked by probes still under way (counted as taken until they are not):
            # they may all be fine, so no claim of minutes (as ``authenticate`` says).
            raise Unauthenticated("too many attempts at once from your address: try "
                                  "again in a moment", code="TOO_MANY_ATTEMPTS")
        if locked is not None:
            minutes = max(1, round(locked.total_seconds() / 60))
            raise Unauthenticated(f"too many attempts from your address: try again in "
                                  f"{minutes} min", code="TOO_MANY_ATTEMPTS")

    async def change_password(self, viewer: Viewer, *, current_password: str | None,
                              new_password: str | None) -> User:
        """The signed-in user's own new password (``update_user``'s rules: the current
        one required and throttled, every token revoked). Errors name this use case's
        fields."""
        if viewer.user_id is None:
            raise Unauthenticated("sign in first")
        if new_password and current_password is not None \
                and v.password_form(new_password) == v.password_form(current_password):
            # A "change" that keeps the password (one someone else learnt, say) would
            # still sign every other device out and read as done. Said only of the
            # current password: a wrong one (given twice) is refused as wrong first,
            # throttled as every wrong one is (review s23).
            user = await self.visible(viewer, User, viewer.user_id)
            await self.confirm_current_password(user, current_password)
            raise ValidationError("the new password is the current one: choose another",
                                  field="newPassword", code="UNCHANGED")
        checks = v.Checks()
        checks(_current_password_given, current_password)  # first, as the mutation has it
        try:
            return await self.update_user(viewer, viewer.user_id, password=new_password,
                                          current_password=current_password, checks=checks)
        except DomainError as exc:
            for one in (exc, *each(exc)):  # an aggregate reads as its first error too
                if one.field == "password":
                    one.field = "newPassword"
            raise

    # ---------------------------------------------------------------- authentication
    async def authenticate(self, email: str, password: str, client: str | None = None
                           ) -> User:
        """The active user with these credentials, or ``Unauthenticated`` — the same error
        whatever was wrong, so accounts cannot be enumerated."""
        # Nothing typed is told as such (QA s32: read as a wrong pair); it names no
        # account, so it is neither checked nor counted.
        checks = v.Checks()
        checks(v.filled, email.strip(), "email")
        checks(v.filled, password, "password")
        checks.done()
        legacy = v.legacy_email(email)
        try:
            cleaned = v.email(email)
        except ValidationError:
            if legacy is None:
                # No account has it, and saying so at once reveals nothing: no password
                # is checked (a flood of such sign-ins used to keep the hashing threads
                # busy), and it is not counted (a megabyte of it per request must not
                # pile up in the throttle).
                raise Unauthenticated("wrong email or password") from None
            cleaned = legacy  # a quoted local part, valid before 0.3: stored as it was
        client = client_key(client)
        key = f"{cleaned} {client or ''}"
        locked = self.throttle.locked_for(key) or self.email_throttle.locked_for(cleaned) \
            or (self.client_throttle.locked_for(client) if client else None)
        if locked is not None:
            if self._checking[key]:
                # Locked by attempts still being checked (counted as failed until they
                # succeed): they may well be right, so no claim of failures or of minutes.
                raise Unauthenticated("too many sign-in attempts at once: try again in a "
                                      "moment", code="TOO_MANY_ATTEMPTS")
            minutes = max(1, round(locked.total_seconds() / 60))
            raise Unauthenticated(f"too many failed sign-ins: try again in {minutes} min",
                                  code="TOO_MANY_ATTEMPTS")
        self._refuse_when_busy(client)
        # Counted as failed before the slow check, in the same step as the lock test:
        # guesses sent all at once would otherwise all pass the test while the first ones
        # are still being hashed. A success takes it back.
        self._failed(key, cleaned, client)
        self._checking[key] += 1
        try:
            with self._hashing_slot(client):
                return await self._check(key, cleaned, password, client, legacy)
        finally:
            self._checking[key] -= 1
            if not self._checking[key]:
                del self._checking[key]

    def _refuse_when_busy(self, client: str | None) -> None:
        """Too many sign-ins (and sign-ups) being hashed, in all or of this client: told
        to try again in a moment instead of queueing behind a flood."""
        if self._pending >= MAX_PENDING_SIGN_INS \
                or self._pending_of[client or ""] >= MAX_PENDING_PER_CLIENT:
            raise Unauthenticated("too many sign-ins at once: try again in a moment",
                                  code="TOO_MANY_ATTEMPTS")

    @contextmanager
    def _hashing_slot(self, client: str | None) -> Iterator[None]:
        """Counts a password being hashed for ``client`` (``MAX_PENDING_SIGN_INS``)."""
        self._pending += 1
        self._pending_of[client or ""] += 1
        try:
            yield
        finally:
            self._pending -= 1
            self._pending_of[client or ""] -= 1
            if not self._pending_of[client or ""]:
                del self._pending_of[client or ""]

    async def _check(self, key: str, cleaned: str, password: str, client: str | None,
                     legacy: str | None = None) -> User:
        """The user of these credentials (``authenticate`` without its throttling). An
        address no account has as 0.3 normalizes it is looked up as it was stored before
        (``legacy``): review s16, such accounts were locked out by the upgrade."""
        user = await self.store.find_one(User, Eq("email", cleaned))
        if user is None and legacy is not None and legacy != cleaned:
            user = await self.store.find_one(User, Eq("email", legacy))
        if user is None or not user.password_hash:
            await self.password_matches(await self._dummy(), password)
            raise Unauthenticated("wrong email or password")
        matched = await self._matched_form(user.password_hash, password)
        if matched is None or not user.active:
            raise Unauthenticated("wrong email or password")
        self.throttle.succeeded(key)
        self.email_throttle.forgive(user.email)
        if client:
            self.client_throttle.forgive(client)
        # Rehashed when the hasher's parameters moved on, and when the hash is of the
        # text as typed before passwords were normalized (review s25: such an account
        # signed in only as typed then, never by the same letters typed otherwise; now
        # its first sign-in stores its normalized form, and from then on it does).
        if matched != v.password_form(password) \
                or self.ctx.hasher.needs_rehash(user.password_hash):
            # Only the hash, and only while it is still the one just verified: a whole
            # record written back could undo a deactivation or a new password that
            # another instance stored meanwhile. The password is the same: no change of
            # the account, so neither audited nor stamped (QA s25: it was audited as the
            # person's UPDATE with ``password_changed: true``, a password change that
            # never happened, after every hasher upgrade). Its version (``updated_at``)
            # stays, and no image holds the hash, so the entries still chain.
            upgrade = touch(user, password_hash=await self.hash_password(password))
            await self.store.write([replace(upgrade, only_if=(
                "password_hash", user.password_hash))], [])
            user = cast(User, upgrade.record)
        return user

    async def confirm_current_password(self, user: User, given: Any) -> None:
        """A token alone must not take an account over for good: changing one's own email
        or password asks for the password as well (throttled like a sign-in)."""
        _current_password_given(given)
        if self.email_throttle.locked_for(user.email) is not None:
            raise Unauthenticated("too many failed attempts: try again later",
                                  code="TOO_MANY_ATTEMPTS")
        self.email_throttle.failed(user.email)  # counted before the slow check
        if not await self.password_matches(user.password_hash, str(given)):
            raise Forbidden("the current password is not right", field="currentPassword")
        self.email_throttle.forgive(user.email)

    def _failed(self, key: str, email: str, client: str | None) -> None:
        self.throttle.failed(key)
        self.email_throttle.failed(email)
        if client:
            self.client_throttle.failed(client)

    async def viewer_for(self, user_id: str, token_epoch: int = 0) -> Viewer | None:
        """The viewer behind a token's subject, or ``None`` when the user is gone or
        deactivated, or the token is of an older epoch (revoked)."""
        user = (await self.store.get_many(User, [user_id]))[0]
        if user is None or not user.active or user.token_epoch != token_epoch:
            return None
        return Viewer.of(user)

    async def _dummy(self) -> str:
        if AccountService._dummy_hash is None:
            AccountService._dummy_hash = await self.hash_password(_DUMMY_PASSWORD)
        return AccountService._dummy_hash


def _changes_credentials(email: Any, password: Any) -> bool:
    """Whether an update changes the email or password: one's own asks for the
    current password."""
    return email not in (UNSET, None) or password not in (UNSET, None)


def _current_password_given(given: Any) -> None:
    if given is UNSET or given is None or given == "":
        raise ValidationError("give your current password to change this",
                              field="currentPassword", code="REQUIRED")
