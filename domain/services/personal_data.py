"""A person's copy of their data (GDPR art. 15, right of access, and art. 20, portability):
``GET /export/me.json`` for the signed-in person, ``GET /export/users/{id}.json`` for an
admin answering a person's request (``graph/data_export.py`` writes the document).

Who: the person themself, whatever their role, and admins for anyone. Not operators for
their company's people: the copy holds the person's charging at every company's
stations, their payments everywhere and their signed-in devices, more than an operator
reads of anyone through the API (their scopes stop at their own books), so letting them
download it would widen what they see. An operator asking for a colleague is
``FORBIDDEN``; for anyone they cannot see, as for a driver, ``NOT_FOUND`` (ids are not
probed, as everywhere).

What: the records that are the person's, read as the person reads them
(``holder_view``: their own account, cars, cards, sessions, reservations, payments and
refunds, by the driver scopes, which are "mine"), whoever asks, so an admin hands on the
same document the person would download: a session's books (which company billed it)
and other drivers' records stay out, as they do in every read the person makes. Their
cars are those they own (``Policy.theirs``), removed from the garage too (their sessions
name them); not a car of their sessions handed to another owner since, which the driver
scope also reads (reduced): its session names it by id only (review r28-org: it was
exported as theirs, with its new owner's battery). Webhooks they own, as they
read webhooks (an operator's company's, their own of no company). Their signed-in
devices (refresh token families: when each signed in, last refreshed, expires, ended),
never a token or its hash. The audit log's entries about what was theirs
(``AuditEntry.holder_id``), with their images as the person reads them, and the entries
they made about anything else that they still read in their ``auditLog`` (the audit
scope of their role now: a demoted admin's copy does not keep the people and cards they
once managed), without images (those name other people: the person's own action is
theirs, what it changed is not), merged newest first and capped at ``AUDIT_CAP`` (the
document says when entries were left out).

An erased account is refused (``ERASED``): what is left of it is pseudonymous books kept
for operators, no person can sign in to ask for it, and a copy handed to whoever asks
an admin for "user X" could not be checked against anyone.

Each export is recorded in the audit log (``EXPORT``, about the person: who exported
whose data and when; it names nothing else), so the person reads who took a copy.

How often: ``EXPORTS_PER_WINDOW`` copies of one person's data by one taker within any
``EXPORT_WINDOW`` (a rolling hour: counted as each starts, as sign-ups are, so copies
asked all at once meet the limit too), then ``TOO_MANY_REQUESTS`` until the oldest copy
of the last hour's ten is an hour old (``Retry-After``); a HEAD is refused alike,
uncounted. Each copy
reads all of a person's years of records and writes an audit entry the person reads: a
script looping on it (a leaked token, a buggy client) loaded the database and buried the
person's audit log under thousands of ``EXPORT`` entries (QA s26). A download cut off
and taken again, or one for each device, fits well within it. Shared by the instances
(``ThrottleSharing``), as the sign-in limits are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.entities import (
    AuditAction,
    AuditEntry,
    E,
    IdTag,
    Payment,
    RefreshFamily,
    Refund,
    Reservation,
    Role,
    Session,
    User,
    Vehicle,
    Webhook,
)
from domain.errors import Conflict, Forbidden, NotFound, TooManyRequests, Unauthenticated
from domain.policy import Viewer
from domain.query import Eq, Filter, PageRequest, all_of, newest_first
from domain.services.base import Service, ServiceContext, pages
from domain.services.throttle import RollingLimit

#: Records read per store call while the document is written.
READ_ROWS = 100
#: The most audit entries one export holds, newest first (about the person and made by
#: them together): an admin's own actions run to millions, and the newest are what a
#: person asks about. The document's ``auditLogComplete`` says whether more were left out.
AUDIT_CAP = 10_000
NEWEST_FIRST = newest_first("at")
#: Copies of one person's data one taker may start within ``EXPORT_WINDOW`` (module
#: docstring): as many as sign-ups from one address.
EXPORTS_PER_WINDOW = 10
EXPORT_WINDOW = timedelta(hours=1)


def holder_view(user: User) -> Viewer:
    """The person's eyes on what is theirs: the driver scopes ("my" account, cars, cards,
    sessions, reservations, payments, refunds, and the audit entries about them), whatever
    their role. An operator's own scopes read their company's books instead, which are
    not theirs, and miss their own charging at other companies' stations."""
    return Viewer(user_id=user.id, role=Role.DRIVER, company_id=user.company_id)


@dataclass(frozen=True, slots=True)
class AuditItem:
    """One entry of the person's copy of the audit log: ``about_them`` (its images shown,
    as the person reads them), or one they made about something else (no images)."""

    entry: AuditEntry
    about_them: bool


@dataclass(frozen=True, slots=True)
class PersonalData:
    """What one export reads, opened and authorized: each section is read a page at a
    time as the document is written (``graph/data_export.py``)."""

    subject: User
    #: The person's eyes (``holder_view``): what the document's images and related
    #: records are shown as.
    holder: Viewer
    exported_by: str
    exported_at: datetime
    service: PersonalDataService

    def vehicles(self) -> AsyncIterator[list[Vehicle]]:
        return self.service.mine(self, Vehicle)

    def id_tags(self) -> AsyncIterator[list[IdTag]]:
        return self.service.mine(self, IdTag)

    def sessions(self) -> AsyncIterator[list[Session]]:
        return self.service.mine(self, Session)

    def payments(self) -> AsyncIterator[list[Payment]]:
        return self.service.mine(self, Payment)

    def refunds(self) -> AsyncIterator[list[Refund]]:
        return self.service.mine(self, Refund)

    def reservations(self) -> AsyncIterator[list[Reservation]]:
        return self.service.mine(self, Reservation)

    def webhooks(self) -> AsyncIterator[list[Webhook]]:
        return self.service.webhooks(self)

    def devices(self) -> AsyncIterator[list[RefreshFamily]]:
        return pages(self.service.store, RefreshFamily, Eq("user_id", self.subject.id),
                     READ_ROWS)

    def audit_log(self, cap: int = AUDIT_CAP) -> AuditLog:
        return AuditLog(self.service, self.subject, cap)


class AuditLog:
    """The entries about the person and those made by them that they still read, newest
    first, at most ``cap``: two lists read a page at a time, each in the order its index
    gives (``holder_id``, ``actor`` with ``at``), merged here (one query ORing both would
    sort every entry an admin ever made before returning the first page). ``complete``
    once iterated: False when the cap left entries out.

    Those they made are those of their ``auditLog`` now, the audit scope of their role
    today (``Policy.scope``): an operator or admin demoted to driver keeps no entry about
    the people and cards they once managed (a driver's are those about what is theirs,
    already in the first list), one who moved company none of the old company's books."""

    def __init__(self, service: PersonalDataService, subject: User, cap: int) -> None:
        self.service, self.subject, self.cap = service, subject, cap
        self.user_id = subject.id
        self.complete = True

    async def __aiter__(self) -> AsyncIterator[list[AuditItem]]:
        about = self.service.newest(Eq("holder_id", self.user_id))
        readable = self.service.policy.scope(Viewer.of(self.subject), AuditEntry.kind)
        made = self.service.newest(all_of(Eq("actor", self.user_id), readable))
        heads: list[AuditEntry | None] = [await anext(about, None), await anext(made, None)]
        given, page = 0, []
        while any(head is not None for head in heads):
            # Newest first, ties by id as the stores order them (``NEWEST_FIRST``: the
            # last written first); an entry about the person that they made is in both
            # lists: given once, as about them (``max`` takes the first of equals).
            side = max((i for i in (0, 1) if heads[i] is not None),
                       key=lambda i: _recency(heads[i]))  # type: ignore[arg-type]
            entry = heads[side]
            assert entry is not None
            heads[side] = await anext(made if side else about, None)
            if side == 1 and entry.holder_id == self.user_id:
                continue
            if given == self.cap:
                self.complete = False
                break
            given += 1
            page.append(AuditItem(entry, about_them=entry.holder_id == self.user_id))
            if len(page) == READ_ROWS:
                yield page
                page = []
        if page:
            yield page


def _recency(entry: AuditEntry) -> tuple[datetime, str]:
    return (entry.at, entry.id)


class PersonalDataService(Service):
    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        #: Copies started per taker and person within the rolling window (module
        #: docstring).
        self.exports = RollingLimit(ctx.clock, limit=EXPORTS_PER_WINDOW,
                                    window=EXPORT_WINDOW, name="personal_data_export")

    @property
    def throttles(self) -> list[RollingLimit]:
        """The limits the instances share (``ThrottleSharing``)."""
        return [self.exports]

    async def open(self, viewer: Viewer, user_id: str | None) -> PersonalData:
        """Authorizes the export of ``user_id``'s data (the viewer's own when None),
        records it in the audit log and returns what to read. Raises before anything is
        written to the client: ``UNAUTHENTICATED``, ``NOT_FOUND``, ``FORBIDDEN``,
        ``ERASED``, ``TOO_MANY_REQUESTS``, or the store's errors."""
        subject = await self.check(viewer, user_id)
        key = self._limited(viewer, subject)
        # Counted as it starts, in the step that tested the limit (no await between):
        # copies asked all at once would otherwise all pass the test.
        self.exports.take(key)
        now = self.now()
        # Recorded before the first byte goes out: a copy cut off half way was still
        # (partly) taken. About the person, in their company's books, as their record's
        # own entries are; it names nobody but who exported.
        try:
            await self.store.write([], [AuditEntry(
                entity=subject.kind, entity_id=subject.id, action=AuditAction.EXPORT,
                actor=viewer.actor, at=now, created_at=now, updated_at=now,
                created_by=viewer.actor, updated_by=viewer.actor,
                company_id=subject.company_id, holder_id=subject.id)])
        except Exception:
            self.exports.give_back(key)  # no copy was taken: the store refused
            raise
        return PersonalData(subject, holder_view(subject), viewer.actor, now, self)

    async def check(self, viewer: Viewer, user_id: str | None, *, limited: bool = False
                    ) -> User:
        """Whose data ``viewer`` may export (``open`` without recording or reading
        anything). ``limited``: refused ``TOO_MANY_REQUESTS`` too while the limit is
        reached (an HTTP HEAD, which answers as the GET would, and is not counted:
        review s26, a client checking before it downloads was told 200, then 429)."""
        if viewer.user_id is None:
            raise Unauthenticated("sign in: send 'Authorization: Bearer <token>'")
        wanted = viewer.user_id if user_id is None else user_id
        if wanted != viewer.user_id and not viewer.is_admin:
            # Seen (a colleague): not theirs to export. Unseen: as if missing.
            await self.visible(viewer, User, wanted)
            raise Forbidden("only admins export another person's data; they may export "
                            "their own at /export/me.json", field="id")
        subject = await self.store.find_one(User, Eq("id", wanted))
        if subject is None:
            raise NotFound("no such user", field="id")
        if subject.erased_at is not None:
            raise Conflict(f"this account was erased on {subject.erased_at:%Y-%m-%d}: "
                           "nothing that names a person is left to export", field="id",
                           code="ERASED")
        if limited:
            self._limited(viewer, subject)
        return subject

    def _limited(self, viewer: Viewer, subject: User) -> str:
        """The limit's key of ``viewer`` taking ``subject``'s data; raises
        ``TOO_MANY_REQUESTS`` while it holds ``EXPORTS_PER_WINDOW`` copies taken within the
        last ``EXPORT_WINDOW``, with the time until the oldest of them leaves it."""
        key = f"{viewer.actor}\n{subject.id}"
        wait = self.exports.refused_for(key)
        if wait is not None:
            raise TooManyRequests(
                f"at most {EXPORTS_PER_WINDOW} copies of one person's data an hour: "
                f"try again in {max(1, round(wait.total_seconds() / 60))} min",
                retry_after=wait)
        return key

    def mine(self, data: PersonalData, kind: type[E]) -> AsyncIterator[list[E]]:
        """The person's records of ``kind`` in creation (id) order, by the person's own
        scope, narrowed to what is theirs (``Policy.theirs``: the cars they own, not those
        of their sessions handed to another owner since): theirs and nobody else's. Read
        by that alone where it is a branch of the scope (``all_of`` absorbs the rest)."""
        where = all_of(self.policy.scope(data.holder, kind.kind),
                       self.policy.theirs(data.holder, kind.kind))
        return pages(self.store, kind, where, READ_ROWS)

    def webhooks(self, data: PersonalData) -> AsyncIterator[list[Webhook]]:
        """The webhooks they own that they read (``webhook_scope`` with their own role:
        none for a driver; one of a company they have left is the company's)."""
        scope: Filter = self.policy.webhook_scope(Viewer.of(data.subject))
        return pages(self.store, Webhook, all_of(Eq("owner_id", data.subject.id), scope),
                     READ_ROWS)

    async def newest(self, where: Filter) -> AsyncIterator[AuditEntry]:
        """Audit entries matching ``where``, newest first, one at a time, read a page of
        ``READ_ROWS`` at a time with keyset cursors."""
        after: str | None = None
        while True:
            page = await self.store.find_page(AuditEntry, where, NEWEST_FIRST,
                                              PageRequest(first=READ_ROWS, after=after))
            for entry in page.items:
                yield entry
            if not page.has_next or not page.cursors:
                return
            after = page.cursors[-1]

