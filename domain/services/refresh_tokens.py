"""Refresh tokens: the long-lived half of a sign-in, exchanged for a new short-lived
access token (``graph.auth``) and a new refresh token at once.

A sign-in starts a family (``RefreshFamily``, one device); each refresh marks the token
presented used and issues the next of the family, in one guarded write. A used token
presented again means two parties hold the chain (a stolen copy): the whole family is
revoked, so the thief's and the owner's next refresh both fail and the owner signs in
again (OAuth 2.0 Security BCP, refresh token rotation with reuse detection). Sign-out
revokes the family of the token given. A family is valid only in the user's token epoch
it started in, so a password change or a deactivation (which raise the epoch) ends every
family of the user without a write of their own.

Tokens are 256 random bits; the store keeps their SHA-256. A fast hash is enough for
that much entropy (argon2 defends guessable passwords) and, unsalted, it is the key the
token is looked up by. Everything is stored, so a token works on any instance and after a
restart. These writes are not audited: they are sign-in bookkeeping, as sign-ins are. A
person signing one of their devices out by its id (``sign_out_device``, an admin anyone's)
is audited: it is an act on an account, as ``signOutEverywhere`` is.

A family keeps the user agent its device last signed in or refreshed with
(``device_agent``), so its person can tell their devices apart (``devices``); never the
client's address (nothing else of a person's whereabouts is kept either).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from domain.entities import Record, RefreshFamily, RefreshToken, User
from domain.errors import Conflict, NotFound, Unauthenticated, ValidationError
from domain.policy import SYSTEM, Viewer
from domain.ports import Change, Delete, Guard, Insert
from domain.query import Eq, Range, all_of, newest_first
from domain.services.base import (
    Service,
    ServiceContext,
    pages,
    patch,
    stamp_new,
    still_active,
)
from domain.validation import shown_text

log = logging.getLogger("chargegraph.accounts")

#: How long a refresh token lasts unless used (each rotation starts a new period).
DEFAULT_TTL = timedelta(days=30)
#: What ``secrets.token_urlsafe(32)`` gives: 43 characters of the URL-safe alphabet.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
#: Expired tokens and families of a user deleted per sign-in, at most.
PRUNE_LIMIT = 500
#: Tokens (or families) deleted per store write when a user's are all forgotten.
FORGET_BATCH = 500
#: A device's user agent kept, at most (characters): enough to tell an app, a browser
#: and their versions apart, not room for whatever a client sends in the header.
AGENT_MAX = 256
#: Devices ``devices`` lists, newest sign-in first: each sign-in starts one and the
#: expired go at the next, so only a script signing in over and over reaches it.
DEVICES_LIMIT = 100


@dataclass(frozen=True, slots=True)
class IssuedRefresh:
    """A refresh token as its holder gets it: the only time it exists in clear; and its
    family (the device), which the access tokens issued with it name."""

    token: str
    expires_at: datetime
    family_id: str


def account_keeps(family: RefreshFamily, user: User) -> bool:
    """Whether ``user``'s account still honours the refresh tokens of ``family``: active,
    and in the token epoch it signed in in (a new password or a deactivation moves it
    on, and a deactivation by a build before token epochs left it: ``active`` says)."""
    return user.active and user.token_epoch == family.token_epoch


def still_signs_in(family: RefreshFamily, user: User, now: datetime) -> bool:
    """Whether the device of ``family`` still signs in at ``now``: not signed out, not
    expired, and its account keeps it (``account_keeps``), as ``rotate`` checks."""
    return family.revoked_at is None and family.expires_at > now \
        and account_keeps(family, user)


def device_agent(given: str | None) -> str | None:
    """A ``User-Agent`` as a device keeps it: shown to its person, so without control or
    invisible characters (``shown_text``), one line, at most ``AGENT_MAX`` characters."""
    agent = " ".join((shown_text(given) or "").split())[:AGENT_MAX]
    return agent or None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _invalid(message: str = "the refresh token is not valid: sign in again",
             code: str = "INVALID_TOKEN") -> Unauthenticated:
    return Unauthenticated(message, field="token", code=code)


def checked_token(token: str | None) -> str:
    """A refresh token as given: ``REQUIRED`` when empty, ``INVALID_TOKEN`` when it cannot
    be one (no store read for text of any other shape or length)."""
    if token is None or not token.strip():
        raise ValidationError("give the refresh token", field="token",
                              code="REQUIRED")
    token = token.strip()
    if not _TOKEN_RE.fullmatch(token):
        raise _invalid()
    return token


class RefreshTokenService(Service):
    def __init__(self, ctx: ServiceContext, ttl: timedelta = DEFAULT_TTL) -> None:
        super().__init__(ctx)
        self.ttl = ttl

    async def start(self, user: User, agent: str | None = None) -> IssuedRefresh:
        """A new family's first token, for a user who has just proved who they are (a
        sign-in, a sign-up, a password change) with the ``User-Agent`` ``agent``. The
        user's expired tokens go meanwhile."""
        now = self.now()
        viewer = Viewer.of(user)
        family = stamp_new(RefreshFamily(user_id=user.id, token_epoch=user.token_epoch,
                                         expires_at=now + self.ttl,
                                         user_agent=device_agent(agent)), viewer, now)
        issued, token = self._next(family, now)
        try:
            # Only while the user is as they proved themselves: a sign-in whose password
            # was being checked when the account was erased, deactivated or given a new
            # password (another epoch) must not store a family after it (review s23: an
            # erasure's deletion of the person's tokens ran before this insert, and the
            # erased person's device record stayed for good).
            await self.store.write([Insert(family), Insert(token)], [], [Guard(User, all_of(
                still_active(user.id).condition(), Eq("token_epoch", user.token_epoch)))])
        except Conflict as conflict:
            if conflict.code != "CHANGED":
                raise
            raise Unauthenticated("the account changed while signing in: sign in "
                                  "again") from None
        await self._prune(user, now)
        return issued

    async def rotate(self, given: str | None, agent: str | None = None
                     ) -> tuple[User, IssuedRefresh]:
        """The user of a valid refresh token and its successor; the token given stops
        working. A token used already revokes its family (``TOKEN_REUSED``). The
        family keeps ``agent`` (the device's ``User-Agent`` now: an app updated since)
        when one is given."""
        token = await self._find(checked_token(given))
        now = self.now()
        if token.used_at is not None:
            await self._reused(token, now)
        family = await self._family(token)
        if token.expires_at <= now:
            raise _invalid("the refresh token has expired: sign in again", "TOKEN_EXPIRED")
        user = (await self.store.get_many(User, [token.user_id]))[0]
        if user is None or not account_keeps(family, user):
            # A new password or a deactivation since: the family ended with them.
            raise _invalid()
        viewer = Viewer.of(user)
        issued, successor = self._next(family, now)
        # All or nothing: another refresh of this token, or a sign-out, that landed since
        # the reads above fails the whole write (CHANGED), and no successor is stored.
        rotation: list[Change] = [
            patch(family, viewer, only_if=("revoked_at", None), required=True,
                  last_refreshed_at=now, expires_at=successor.expires_at,
                  user_agent=device_agent(agent) or family.user_agent),
            patch(token, viewer, only_if=("used_at", None), required=True, used_at=now),
            Insert(successor)]
        try:
            await self.store.write(rotation, [])
        except Conflict as conflict:
            if conflict.code != "CHANGED":
                raise
            await self._lost_race(token, now)
        return user, issued

    async def revoke(self, given: str | None) -> None:
        """Signs the device out: the family of this token ends (a family revoked already
        stays so; an expired token still signs its family out)."""
        token = await self._find(checked_token(given))
        family = await self._family(token, revoked_ok=True)
        await self._revoke(family, self.now())

    async def devices(self, viewer: Viewer, user: User) -> list[RefreshFamily] | None:
        """The devices ``user`` is signed in on (``still_signs_in``), newest sign-in first,
        for themselves and admins; ``None`` for anyone else (an operator's reach over their
        people is for their records, not their sessions, as ``sign_out_everywhere``
        has it). Read here, not through the policy: families are credentials
        (``CREDENTIAL_KINDS``), no read scope shows them."""
        if viewer.user_id != user.id and not viewer.is_admin:
            return None
        if not user.active:
            return []
        # ``still_signs_in``, asked of the store: in the user's epoch, not signed out or
        # expired (the account's being active, above).
        return await self.store.find_all(RefreshFamily, all_of(
            Eq("user_id", user.id), Eq("token_epoch", user.token_epoch),
            Eq("revoked_at", None), Range("expires_at", gt=self.now())),
            list(newest_first("created_at")), limit=DEVICES_LIMIT)

    async def sign_out_device(self, viewer: Viewer, family_id: str) -> RefreshFamily:
        """Signs one device out by its id (``devices``): its refresh chain ends at once,
        as ``revoke`` ends it for its holder; yours, or an admin's of anyone. Audited as
        an update of the device. One signed out already (or expired) stays so, and
        answers as done; someone else's reads as missing (``NOT_FOUND``)."""
        if viewer.user_id is None:
            raise Unauthenticated("sign in first")
        [family] = await self.store.get_many(RefreshFamily, [family_id])
        if family is None or (family.user_id != viewer.user_id and not viewer.is_admin):
            raise NotFound("no such device", field="id")
        return await self._revoke(family, self.now(), viewer)

    async def _find(self, token: str) -> RefreshToken:
        found = await self.store.find_one(RefreshToken, Eq("token_hash", digest(token)))
        if found is None:
            raise _invalid()
        return found

    async def _family(self, token: RefreshToken, *, revoked_ok: bool = False
                      ) -> RefreshFamily:
        family = (await self.store.get_many(RefreshFamily, [token.family_id]))[0]
        if family is None or (family.revoked_at is not None and not revoked_ok):
            raise _invalid("the refresh token was revoked (signed out): sign in again")
        return family

    async def _reused(self, token: RefreshToken, now: datetime) -> None:
        """A rotated token presented again: whoever holds the family's newest token may be
        a thief, so nobody keeps it."""
        family = (await self.store.get_many(RefreshFamily, [token.family_id]))[0]
        if family is not None:
            await self._revoke(family, now)
        log.warning("a used refresh token of user %s was presented again: its family %s "
                    "is revoked", token.user_id, token.family_id)
        raise _invalid("this refresh token was used already, so it may have been copied: "
                       "every session it belongs to is signed out; sign in again",
                       "TOKEN_REUSED")

    async def _lost_race(self, token: RefreshToken, now: datetime) -> None:
        """The rotation's guarded write failed: the token was rotated meanwhile (a reuse,
        the family goes) or its family was revoked."""
        [stored] = await self.store.get_many(RefreshToken, [token.id])
        if stored is not None and stored.used_at is not None:
            await self._reused(stored, now)
        raise _invalid("the refresh token was revoked (signed out): sign in again")

    async def _revoke(self, family: RefreshFamily, now: datetime,
                      viewer: Viewer | None = None) -> RefreshFamily:
        """``family`` revoked (as it was, when it was already); by ``viewer``'s act,
        audited, with one (``sign_out_device``), unaudited as the system's without."""
        if family.revoked_at is not None:
            return family
        # Guarded, not required: a revocation that landed meanwhile is as good as this one
        # (and is then the only one audited: ``AuditIfApplied``).
        revoked = patch(family, viewer or SYSTEM, only_if=("revoked_at", None),
                        revoked_at=now)
        if viewer is None:
            await self.store.write([revoked], [])
        else:
            await self.commit(viewer, [(revoked, family)])
        return cast(RefreshFamily, revoked.record)

    def _next(self, family: RefreshFamily, now: datetime) -> tuple[IssuedRefresh,
                                                                     RefreshToken]:
        plain = secrets.token_urlsafe(32)
        token = RefreshToken(family_id=family.id, user_id=family.user_id,
                             token_hash=digest(plain), expires_at=now + self.ttl)
        stamp_new(token, Viewer(user_id=family.user_id), now)
        return IssuedRefresh(plain, token.expires_at, family.id), token

    async def _prune(self, user: User, now: datetime) -> None:
        """Deletes the user's tokens and families past their expiry: nothing can be
        refreshed with them any more. Best effort, apart from the sign-in: two sign-ins
        at once may race to delete the same ones (the second finds them gone)."""
        past = all_of(Eq("user_id", user.id), Range("expires_at", lt=now))
        tokens = await self.store.find_all(RefreshToken, past, limit=PRUNE_LIMIT)
        families = await self.store.find_all(RefreshFamily, past, limit=PRUNE_LIMIT)
        if not tokens and not families:
            return
        try:
            await self.store.write([*(Delete(t) for t in tokens),
                                    *(Delete(f) for f in families)], [])
        except NotFound:
            log.debug("expired refresh tokens of user %s were deleted meanwhile", user.id)

    async def forget(self, user_id: str) -> None:
        """Deletes every refresh token and family of the user (an erasure: when and how
        often each of their devices refreshed is theirs, and the raised token epoch
        ended them all already). Tokens first, so a failure part-way leaves no token
        whose family is gone; each page is deleted as read (a deleted record leaves the
        next page's bounds as they were)."""
        theirs = Eq("user_id", user_id)
        for kind in (RefreshToken, RefreshFamily):
            async for page in pages(self.store, kind, theirs, FORGET_BATCH):
                try:
                    await self.store.write([Delete(record) for record in page], [])
                except NotFound:
                    # A sign-in's prune took some of them meanwhile: the rest go one by
                    # one, so those already gone are no failure.
                    await self._delete_each(page)

    async def _delete_each(self, records: Sequence[Record]) -> None:
        for record in records:
            try:
                await self.store.write([Delete(record)], [])
            except NotFound:
                continue
