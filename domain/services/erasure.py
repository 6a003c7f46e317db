"""The right to erasure (GDPR art. 17): an admin's ``eraseUser`` and a person's own
``eraseMyAccount`` (confirmed with their password).

An account could only be deactivated, and its email could never be used again (QA s22).
Erasing it anonymises what names the person — the account's name and email (the email
is free for a new sign-up), its password, its cars' plates — and ends its access as a
deactivation does (every token revoked, open sockets closed). Its cards are removed as
``removeIdTag`` removes one, so chargers refuse them (Blocked in the local lists that
hold them, in the background). Its cars are removed (``Vehicle.removed_at``): sessions
keep showing the car they were charged for, without the person's plate. Sessions,
payments and refunds stay for the operators' books under the account's id
(pseudonymous). Its own webhooks (of no company) are removed, its company's disabled.
The audit log's images of the person's account and cars, and of the webhooks while
they were its own, are scrubbed of those values, and the erasure is recorded by one
entry that names none of them. The account's refresh tokens (its devices and when each
last refreshed) are deleted. Then the store overwrites the old versions of all that its
files still hold (``Store.scrub``).

Not while a session of theirs is under way (it would be billed to nobody's card), nor
for the last active admin, nor while they own stations (hand them over first, as for a
demotion). Erasing an erased account again is allowed: it forgets the kept answers
naming the person and scrubs the audit log again (what to do when a crash stopped
either, which run after the erasure's write, ``_tidy``).

What the write sets off (the person signed out everywhere, their cards withdrawn at the
chargers) starts as soon as it commits, before the scrub: a scrub that fails must leave
neither undone (review s22: it did, and a re-run found the cards gone and never had the
chargers told). A failed scrub does not fail the erasure, which happened: it is logged
and tried again in the background (``SCRUB_RETRY_S``); erasing again scrubs too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeGuard, cast

from domain import validation as v
from domain.entities import (
    AuditAction,
    AuditEntry,
    E,
    IdTag,
    Role,
    Session,
    SessionState,
    Station,
    User,
    Vehicle,
    Webhook,
)
from domain.errors import Conflict, Unauthenticated
from domain.policy import Viewer, refuse_unless
from domain.ports import Change, Guard, Store, Update
from domain.query import Eq, Filter, In, Range, all_of, any_of
from domain.services import freed_tags
from domain.services.accounts import AccountService, other_active_admins
from domain.services.background import Background
from domain.services.base import Service, ServiceContext, pages
from domain.services.charging import ChargingService
from domain.services.edits import edit, removal, retried
from domain.services.fleet import IN_GARAGE
from domain.services.idempotency import IdempotencyService
from domain.services.refresh_tokens import RefreshTokenService
from domain.services.webhooks import ORPHANED, forget_deliveries
from domain.services.withdrawal import withdrawal_marks

#: What an erased account is called; its email is ``erased_email`` (unique, as emails
#: must be, and in the reserved ``.invalid`` domain: it reaches nobody, and no account
#: is given one by anyone else, ``validation.email`` refusing it).
ERASED_NAME = "Erased user"
#: What an erased person's cars' plates read (and their keys: the plate rule holds
#: among kept cars only, and an erased person's cars are all removed).
ERASED_PLATE = "ERASED"
#: Audit entries rewritten per store write while scrubbing.
SCRUB_BATCH = 200
#: The most texts naming the person (emails, names, plates, now and as the audit log shows
#: they were) the answers kept for idempotency keys are searched for; beyond, the rest
#: are left out (the current ones come first).
MAX_MENTIONS = 200
#: The fields of a person's records whose former values a kept answer may show: what
#: ``_mentions`` gathers from the audit log's images (the derived keys never are shown).
MENTIONED_FIELDS: dict[str, tuple[str, ...]] = {
    "user": ("email", "name"), "vehicle": ("license_plate",)}
#: The pauses before each background retry of a scrub that failed (a store away for a
#: moment); after the last, the log says to erase the account again.
SCRUB_RETRY_S: tuple[float, ...] = (1.0, 10.0)

#: A person's cars (or cards) read per query: an erasure reads them all, page by page
#: (review s22: a fleet manager's over a thousand cards were left after it).
READ_BATCH = 1000
#: The cards whose list entries are read per query (``withdrawal_marks``).
MARK_BATCH = 500

log = logging.getLogger("chargegraph.erasure")

#: The fields of a person's records that name them, by kind: what an erasure overwrites
#: in the records and scrubs from the audit log's images of them.
PERSONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "user": ("name", "name_key", "email"),
    "vehicle": ("license_plate", "plate_key"),
    # The person's own webhooks (of no company): where their events went, their note,
    # and what their receiver answered (``last_error``: a host that "does not resolve",
    # a receiver's error body) and so why it was disabled (``disabled_reason`` quotes
    # it; review s25: the host stayed in the system's disabling entry and the erasure's
    # own DELETE).
    "webhook": ("url", "description", "last_error", "disabled_reason"),
}
#: What an erased person's removed webhooks' URLs read in the audit log (``.invalid``:
#: it reaches nobody).
ERASED_URL = "https://erased.invalid/"
#: What an erased person's webhooks' ``last_error`` and ``disabled_reason`` read in the
#: audit log where they were set (null stays null: the image still says whether a
#: delivery had failed and whether it was disabled, ``last_status`` and ``active`` kept).
ERASED_NOTE = "(erased with its owner)"


def erased_email(user_id: str, suffix: str = "") -> str:
    """The email an erasure gives account ``user_id``; with ``suffix`` when another
    account holds the plain one (``Erasure._placeholder``)."""
    return f"erased-{user_id}{f'-{suffix}' if suffix else ''}@erased.invalid"


def _names_someone(value: Any) -> TypeGuard[str]:
    """Whether ``value`` (an email, name or plate) may name a person: a text that is none
    of an erasure's placeholders (``ERASED_NAME``, ``ERASED_PLATE``, ``erased_email``'s,
    with or without a suffix), which every erased person's records read alike."""
    return isinstance(value, str) and bool(value) \
        and value not in (ERASED_NAME, ERASED_PLATE) \
        and not value.endswith("@erased.invalid")


def scrubbed(image: dict[str, Any] | None, values: dict[str, Any]) -> dict[str, Any] | None:
    """An audit image with each personal field it holds replaced by ``values``' (the
    erased record's own): the image keeps its shape, and says nothing of the person."""
    if image is None:
        return None
    return {key: values.get(key, value) for key, value in image.items()}


def scrubbed_webhook(image: dict[str, Any] | None) -> dict[str, Any] | None:
    """An audit image of an erased person's webhook without what names or leads to them
    (``PERSONAL_FIELDS["webhook"]``)."""
    out = scrubbed(image, {"url": ERASED_URL, "description": None})
    if out is None:
        return None
    for key in ("last_error", "disabled_reason"):
        if out.get(key) is not None:
            out[key] = ERASED_NOTE
    return out


def _owned_by(image: dict[str, Any] | None, entry: AuditEntry, user_id: str) -> bool:
    """Whether an audit image of a webhook shows it as ``user_id``'s own (of no company):
    each image by its own ``owner_id`` (a take-over's before-image is the former owner's,
    its after-image, with the URL the enabler set, the enabler's); an image without one
    by the entry's books (a webhook of no company is in its owner's)."""
    if image is None:
        return False
    owner = image.get("owner_id", entry.station_owner_id)
    return owner == user_id and image.get("company_id", entry.company_id) is None


def _other_than(record_id: str, field: str = "id") -> Filter:
    """Every record whose ``field`` is not ``record_id`` (the query language has no "not
    equal")."""
    return any_of(Range(field, lt=record_id), Range(field, gt=record_id))


def _nothing_else_of(user_id: str) -> list[Guard]:
    """The guards that the erasure's write took every car and card of the person: once
    it is applied, none of theirs is left kept, or with a plate, or at all (a card). A
    car or card added (or a car handed to them) between the erasure's reads and its
    write on another instance fails it, and it runs again on a fresh read (review s22:
    they survived, the car with its plate, the card accepted)."""
    theirs = Eq("owner_id", user_id)
    return [Guard(Vehicle, all_of(theirs, IN_GARAGE), exists=False),
            Guard(Vehicle, all_of(theirs, _other_than(ERASED_PLATE, "license_plate")),
                  exists=False),
            Guard(IdTag, Eq("user_id", user_id), exists=False),
            # No webhook of theirs left of no company, nor enabled (``_webhook_changes``).
            Guard(Webhook, all_of(theirs, any_of(Eq("company_id", None),
                                                 Eq("active", True))), exists=False)]


def _about(user_id: str, cars: Sequence[Vehicle]) -> Filter:
    """The audit entries about account ``user_id`` and its ``cars``."""
    about = all_of(Eq("entity", "user"), Eq("entity_id", user_id))
    if cars:
        about = any_of(about, all_of(Eq("entity", "vehicle"),
                                     In("entity_id", tuple(c.id for c in cars))))
    return about


def _webhook_changes(viewer: Viewer, webhooks: Sequence[Webhook]
                     ) -> list[tuple[Change, Webhook]]:
    """What an erasure does to the webhooks the person owns. Their own (of no company:
    an admin's, or an operator's of no company) are removed: nobody else manages them,
    and they kept the URL and note the person chose, enabled, after the person was gone
    (QA s25); their audit images are scrubbed of both (``PERSONAL_FIELDS``). Their
    company's stay the company's (its receiver, its operators manage them), disabled
    now rather than at the next delivery, for a colleague to enable and take over.
    Audited, as their owners' changes are (the secret never is)."""
    changes: list[tuple[Change, Webhook]] = []
    for webhook in webhooks:
        if webhook.company_id is None:
            changes.append((removal(webhook), webhook))
        elif webhook.active:
            changes.append((edit(webhook, viewer, active=False, disabled_reason=ORPHANED),
                            webhook))
    return changes


async def every(store: Store, kind: type[E], where: Filter) -> list[E]:
    """Every record of ``kind`` matching ``where``, read by pages of ``READ_BATCH`` in id
    order (``find_all`` stops at its limit)."""
    return [record async for page in pages(store, kind, where, READ_BATCH)
            for record in page]


async def _withdrawal_marks(store: Store, viewer: Viewer, cards: Sequence[IdTag]
                            ) -> list[Change]:
    """``withdrawal_marks`` (Blocked) of every one of ``cards``, read in batches."""
    marks: list[Change] = []
    for start in range(0, len(cards), MARK_BATCH):
        marks += await withdrawal_marks(store, viewer,
                                        [c.id for c in cards[start:start + MARK_BATCH]],
                                        "Blocked")
    return marks


class Erasure(Service):
    def __init__(self, ctx: ServiceContext, accounts: AccountService,
                 refresh_tokens: RefreshTokenService,
                 charging: ChargingService | None = None,
                 idempotency: IdempotencyService | None = None) -> None:
        super().__init__(ctx)
        self.accounts = accounts
        self.refresh_tokens = refresh_tokens
        #: Closes the person's refused sessions their chargers never stopped
        #: (``_refusals``); without it (a bare erasure, in store tests) they are waited
        #: for as an accepted one is.
        self.charging = charging
        #: The person's idempotency keys are forgotten with them: the answers kept are
        #: theirs (their cars, cards, payments).
        self.idempotency = idempotency
        #: What an erasure sets off at the chargers (``Services`` wires in
        #: ``Withdrawal.withdraw_erased``: the removed cards Blocked in the lists, the
        #: live reservations cancelled); in the background, as a deactivation's.
        self.on_erased: Callable[[Viewer, User, Sequence[IdTag]], Awaitable[None]] | None \
            = None
        self._releasing = Background()

    async def settled(self) -> None:
        """Waits for what erasures set off in the background (tests, shutdown)."""
        await self._releasing.settled()

    async def erase_user(self, viewer: Viewer, user_id: str,
                         checks: v.Checks | None = None) -> User:
        """An admin erases an account (``user_id``)."""
        refuse_unless(viewer.is_admin, "only admins erase accounts", checks)
        user = await self.visible(viewer, User, user_id)
        return await self._erase(viewer, user, field="id")

    async def erase_my_account(self, viewer: Viewer, current_password: Any) -> User:
        """The signed-in person erases their own account, confirmed with their password
        (throttled as changing it is: a token alone must not erase an account)."""
        if viewer.user_id is None:
            raise Unauthenticated("sign in first")
        user = await self.visible(viewer, User, viewer.user_id)
        await self.accounts.confirm_current_password(user, current_password)
        return await self._erase(viewer, user, field=None)

    async def _erase(self, viewer: Viewer, user: User, field: str | None) -> User:
        # What names the person, read before the write anonymises it and the scrub the
        # audit log: the answers kept for idempotency keys that hold it are forgotten
        # (``_tidy``).
        mentions = await self._mentions(user)
        try:
            erased, cards, closed, removed = await retried(
                lambda: self._write(viewer, user.id, field))
        except Conflict as exc:
            if exc.code != "CHANGED":
                raise
            # Named on the caller's own field: eraseMyAccount has no ``id`` (the
            # store's conflict names one).
            raise Conflict("the account's sessions, stations or admins kept changing "
                           "while it was erased: try again", field=field,
                           code="CHANGED") from exc
        # First what the committed write must set off, whatever the scrub does next,
        # each step on its own: one failing (a store out of reach) is logged and skips
        # none of the others, and the erasure, committed, stands and is the answer
        # (review r27-durable3: a failed announcement raised past the deletion of the
        # removed webhooks' stored deliveries, which a re-run cannot find again).
        # Open sockets of theirs, on every instance, are checked again now: revoked
        # (had this been lost, the periodic re-check catches them within a minute).
        await _logged(self.accounts.access_changed(erased.id),
                      "revoking erased user %s's open sockets failed", user.id)
        if self.charging is not None:
            for station, session in closed:
                await _logged(self.charging.announce_closed(station, session),
                              "announcing the close of erased user %s's refused session "
                              "%s failed", user.id, session.id)
        for webhook_id in removed:
            # Their removed webhooks' stored deliveries go with them, as a removal's do
            # (review r27: they stayed, to be claimed and dropped, or kept for good);
            # after the sockets' revocation and the announcements, which a slow store
            # must not hold back (review r27-durable2). What a failure leaves is
            # dropped at its try (its webhook is gone).
            await _logged(forget_deliveries(self.store, webhook_id),
                          "deleting erased user %s's removed webhook %s's stored "
                          "deliveries failed", user.id, webhook_id)
        if self.on_erased is not None:
            self._releasing.run(self.on_erased(viewer, erased, cards),
                                f"release-erased-{erased.id}",
                                f"withdrawing erased user {erased.id}'s cards failed")
        try:
            await self._tidy(erased, mentions)
        except Exception:
            # The erasure stands and is the caller's answer; the scrub is retried.
            log.exception("scrubbing the audit log of erased user %s failed: retried in "
                          "the background", erased.id)
            self._releasing.run(self._scrub_later(erased, mentions),
                                f"scrub-erased-{erased.id}",
                                f"scrubbing the audit log of erased user {erased.id} "
                                f"failed again: erase the account again to finish it")
        return erased

    async def _mentions(self, user: User) -> tuple[str, ...]:
        """What names ``user``: their email, name and cars' plates now, and those the
        audit log's images of their account and cars show they had (review s27: an
        email corrected twice, a removed car's plate, stayed in the answers kept for a
        day), at most ``MAX_MENTIONS``. Never the erased placeholders (``_placeholder``),
        neither the account's current values on a re-run nor the audit log's: every
        erased person's read so, and an answer showing one (an operator's refund of an
        erased driver's payment) names nobody (review r27-idem2: a re-run forgot them,
        and their retries ran again)."""
        cars = await every(self.store, Vehicle, Eq("owner_id", user.id))
        texts = dict.fromkeys(v for v in [user.email, user.name,
                                          *(car.license_plate for car in cars)]
                              if _names_someone(v))
        async for entries in pages(self.store, AuditEntry, _about(user.id, cars),
                                   SCRUB_BATCH):
            for entry in entries:
                for image in (entry.after, entry.before):
                    for field in MENTIONED_FIELDS.get(entry.entity, ()):
                        value = (image or {}).get(field)
                        if _names_someone(value):
                            texts.setdefault(value)
            if len(texts) >= MAX_MENTIONS:
                break
        return tuple(texts)[:MAX_MENTIONS]

    async def _tidy(self, erased: User, mentions: Sequence[str] = ()) -> None:
        """What follows the erasure's write and may fail without undoing it: the answers
        kept for idempotency keys that are the person's or hold ``mentions`` (their
        email, name, plates as they were) deleted, the audit log scrubbed, the refresh
        tokens deleted (signed out already by the raised token epoch), and then the
        store's files scrubbed of the old versions of what those writes overwrote
        (``Store.scrub``: SQLite kept them in its ``-wal`` file until the service
        stopped, QA s24). All are repeatable, so a retry, or erasing again, runs them
        all. The kept answers go before the scrub: once the account is anonymised, the
        audit log's images are all that still tell what to look for in them
        (``_mentions``), so a failure leaves those for erasing again to read (review
        r27-idem2: the scrub ran first, and a re-run no longer knew the email)."""
        if self.idempotency is not None:
            await self.idempotency.forget(erased.id, mentions)
        await self._scrub_audit(erased)
        await self.refresh_tokens.forget(erased.id)
        await self.store.scrub()

    async def _scrub_later(self, erased: User, mentions: Sequence[str] = ()) -> None:
        """``_tidy`` again after each pause of ``SCRUB_RETRY_S`` until it succeeds; the
        last failure is raised (logged by ``Background``)."""
        for attempt, pause in enumerate(SCRUB_RETRY_S, start=1):
            await asyncio.sleep(pause)
            try:
                await self._tidy(erased, mentions)
                return
            except Exception:
                if attempt == len(SCRUB_RETRY_S):
                    raise
                log.exception("scrubbing the audit log of erased user %s failed again",
                              erased.id)

    async def _write(self, viewer: Viewer, user_id: str, field: str | None
                     ) -> tuple[User, list[IdTag], list[tuple[Station, Session]], list[str]]:
        """The erasure's one write (``retried``): the account anonymised and deactivated,
        its cars removed without their plates, its cards removed (their list entries
        marked Blocked in the same write, as ``removeIdTag`` does), its webhooks removed
        or disabled (``_webhook_changes``), its refused sessions left open closed
        (``_refusals``), and its entry. With the cards, the closed sessions and the
        removed webhooks' ids, for what follows the write."""
        user = await self.visible(viewer, User, user_id)
        guards, refused = await self._refusals(user, field)
        closed: list[tuple[Station, Session]] = []
        closes: list[tuple[Change, Any]] = []
        if refused and self.charging is not None:
            closed, closes = await self.charging.refused_closes(viewer, refused)
        now = self.now()
        update = edit(user, viewer, name=ERASED_NAME, email=await self._placeholder(user),
                      password_hash="", active=False, token_epoch=user.token_epoch + 1,
                      # When it was erased is when first: a re-run (to finish a scrub)
                      # is no new erasure.
                      erased_at=user.erased_at or now)
        cars = await every(self.store, Vehicle, Eq("owner_id", user.id))
        cards = await every(self.store, IdTag, Eq("user_id", user.id))
        webhooks = await every(self.store, Webhook, Eq("owner_id", user.id))
        # The account and cars are written unaudited: an entry's before-image would
        # name the person again. The erasure's own entry stands for them. Each car and
        # card only as read (``edit``, ``removal``): one handed to someone else, or
        # changed, meanwhile is read again, never overwritten.
        unaudited: list[Change] = [update]
        unaudited += [edit(car, viewer, license_plate=ERASED_PLATE, plate_key=ERASED_PLATE,
                           removed_at=car.removed_at or now) for car in cars]
        unaudited += await _withdrawal_marks(self.store, viewer, cards)
        # What this run removed: a car removed before (by its owner, or by an erasure
        # run before this one) is only stripped of its plate (review s22: a re-run's
        # entry counted the first run's cars again).
        removed = sum(1 for car in cars if car.removed_at is None)
        hooks = _webhook_changes(viewer, webhooks)
        hooks_removed = sum(1 for _, webhook in hooks if webhook.company_id is None)
        entry = self._entry(viewer, user, removed, len(cards),
                            (hooks_removed, len(hooks) - hooks_removed))
        await self.commit(viewer, [*((removal(card), card) for card in cards), *hooks,
                                   *closes],
                          unaudited=unaudited, extra_audit=[entry],
                          guards=[*guards, *_nothing_else_of(user.id)],
                          # Their numbers held back from other drivers: the cards may
                          # still be in use. First: an issue landing after a card's
                          # delete sees it (``removeIdTag``'s).
                          first=freed_tags.freed(viewer, cards, user.company_id, now,
                                                 self.ctx.digest_key))
        return cast(User, update.record), cards, closed, [
            webhook.id for _, webhook in hooks if webhook.company_id is None]

    async def _placeholder(self, user: User) -> str:
        """The email the erasure gives ``user``: the one it has if it was erased before
        (a re-run keeps it), else ``erased_email``; and when another account holds that
        one, the same with a random suffix, in the same reserved domain. Review s25: an
        account given ``erased-<id>@erased.invalid`` before such emails were refused
        (QA s25) made that account's erasure fail for good (DUPLICATE). The placeholder
        is only unique and reaching nobody; nothing looks an erased account up by it, so
        a suffix costs nothing, where moving the other account aside would rewrite the
        sign-in of a live account its person never asked to change. The holder is
        logged for an admin to give it a real email."""
        if user.erased_at is not None and user.email.endswith("@erased.invalid"):
            return user.email
        email = erased_email(user.id)
        holder = await self.store.find_one(User, Eq("email", email))
        if holder is None or holder.id == user.id:
            return email
        log.warning("account %s holds the email %s, given to erased accounts (taken before "
                    "such emails were refused): erasing account %s under another; give "
                    "account %s a real email", holder.id, email, user.id, holder.id)
        return erased_email(user.id, secrets.token_hex(8))

    async def warn_of_held_placeholders(self, limit: int = 100) -> list[str]:
        """Logs (at start) each account that holds an erasure's email without having
        been erased (taken before ``.invalid`` emails were refused): it reaches nobody,
        and an admin should give it a real one. One read of the email index (the
        ``erased-`` prefix; ``-`` sorts just before ``.``); the ids, for tests."""
        # Erased accounts are left out by the read, not after it: past ``limit`` of
        # them, a holder would never be seen.
        held = [u for u in await self.store.find_all(
                    User, all_of(Range("email", gte="erased-", lt="erased."),
                                 Eq("erased_at", None)), limit=limit)
                if u.email.endswith("@erased.invalid")]
        for user in held:
            log.warning("account %s holds an erased account's email (%s), taken before "
                        "such emails were refused: it reaches nobody, give it a real one "
                        "(updateUser email)", user.id, user.email)
        return [u.id for u in held]

    async def _refusals(self, user: User, field: str | None
                        ) -> tuple[list[Guard], list[Session]]:
        """Refuses what an erasure must wait for, and the guards that keep each check
        true inside the write (another instance may start a session meanwhile); with
        the person's open sessions refused at their start (``Session.start_refused``),
        for the erasure to close. A charger that never stops such a session (told
        ConcurrentTx or Blocked, it cut the energy) held the account from being erased
        until an operator ended it (QA s27): it holds no card or car (``holding_card``)
        and bills nothing, so it is closed as ``endSession`` closes one, and its stop,
        should it come after all, still corrects the close. An accepted one is being
        charged to the person: the erasure waits for it."""
        open_ = await every(self.store, Session,
                            all_of(Eq("user_id", user.id), Eq("state", SessionState.ACTIVE)))
        refused = [s for s in open_ if s.start_refused is not None] \
            if self.charging is not None else []
        if len(refused) < len(open_):
            raise Conflict("a session of theirs is under way: erase the account once it "
                           "has ended", field=field, code="IN_USE")
        await self.accounts.refuse_owner_demotion(user, field)
        # Checked on the store as the write leaves it: the refused ones read are closed
        # by it, and any session of theirs started meanwhile (accepted or refused) fails
        # it, to be read again.
        charging = all_of(Eq("user_id", user.id), Eq("state", SessionState.ACTIVE))
        guards = [Guard(Session, charging, exists=False),
                  Guard(Station, Eq("owner_id", user.id), exists=False)]
        if user.role is Role.ADMIN and user.active:
            others = other_active_admins(user.id)
            if await self.store.count(User, others) == 0:
                raise Conflict("the last admin cannot be erased: make another admin first",
                               field=field, code="IN_USE")
            guards.append(Guard(User, others))
        return guards, refused

    def _entry(self, viewer: Viewer, user: User, cars: int, cards: int,
               webhooks: tuple[int, int]) -> AuditEntry:
        """The erasure's audit entry: who erased which account, and how many cars and
        cards went with it and how many webhooks it removed and disabled
        (``_webhook_changes``); no name, email or plate. In the books of the account's
        company and read by admins (its person no longer signs in)."""
        now = self.now()
        return AuditEntry(entity=user.kind, entity_id=user.id, action=AuditAction.ERASE,
                          actor=viewer.actor, at=now, created_at=now, updated_at=now,
                          created_by=viewer.actor, updated_by=viewer.actor,
                          after={"vehicles_removed": cars, "id_tags_removed": cards,
                                 "webhooks_removed": webhooks[0],
                                 "webhooks_disabled": webhooks[1]},
                          company_id=user.company_id, holder_id=user.id)

    async def _scrub_audit(self, erased: User) -> None:
        """Rewrites the images of every audit entry about the erased account or its cars
        with the erased values (``PERSONAL_FIELDS``), and those of its webhooks of no
        company that show them its own (``_owned_by``), in batches by id. Runs after
        the erasure's write; erasing again runs it again."""
        cars = await every(self.store, Vehicle, Eq("owner_id", erased.id))
        values = {"user": {f: getattr(erased, f) for f in PERSONAL_FIELDS["user"]},
                  "vehicle": dict.fromkeys(PERSONAL_FIELDS["vehicle"], ERASED_PLATE)}
        about = _about(erased.id, cars)
        hooks = await self._webhooks_owned(erased)
        if hooks:
            about = any_of(about, all_of(Eq("entity", "webhook"), In("entity_id", hooks)))

        def rewrite(entry: AuditEntry) -> Update | None:
            if entry.entity != "webhook":
                return self._rewrite(entry, lambda i: scrubbed(i, values[entry.entity]))
            # Only the images that show it theirs: a take-over entry holds the former
            # owner's URL before and the enabler's after (review s25: the entry, in the
            # former owner's books, kept the erased enabler's URL, and erasing the
            # former owner rewrote the enabler's live URL out of its history).
            return self._rewrite(entry, lambda i: scrubbed_webhook(i) if _owned_by(
                i, entry, erased.id) else i)

        async for entries in pages(self.store, AuditEntry, about, SCRUB_BATCH):
            changes = [r for r in map(rewrite, entries) if r is not None]
            if changes:
                await self.store.write(changes, [])

    async def _webhooks_owned(self, erased: User) -> tuple[str, ...]:
        """The webhooks of no company ``erased`` ever owned, by id, found by the audit
        entries in their books (a webhook of no company is in its owner's,
        ``base._whose``): each has one at least, the erasure's own DELETE if none
        other, and they outlive its removal, so a run again finds them too."""
        theirs = all_of(Eq("entity", "webhook"), Eq("station_owner_id", erased.id))
        ids: set[str] = set()
        async for entries in pages(self.store, AuditEntry, theirs, SCRUB_BATCH):
            ids.update(e.entity_id for e in entries)
        return tuple(sorted(ids))

    @staticmethod
    def _rewrite(entry: AuditEntry,
                 scrub: Callable[[dict[str, Any] | None], dict[str, Any] | None]
                 ) -> Update | None:
        before, after = scrub(entry.before), scrub(entry.after)
        if (before, after) == (entry.before, entry.after):
            return None
        return Update(dataclasses.replace(entry, before=before, after=after),
                      frozenset({"before", "after"}))


async def _logged(step: Awaitable[None], message: str, *args: Any) -> None:
    """Runs one of what a committed erasure sets off; a failure is logged (``message``
    with ``args``, and its traceback), not raised: the next step runs all the same."""
    try:
        await step
    except Exception:
        log.exception(message, *args)
