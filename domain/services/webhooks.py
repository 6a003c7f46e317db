"""Outgoing webhooks: who may keep which, which events each gets, and what a delivery's
outcome does to it. Sending is not here (``chargegraph/webhooks.py`` posts, signs and
retries); this is the rules it follows.

* An admin's webhook sees everything; an operator's belongs to their company and gets
  what that company may see: ``Policy.sees_event`` with ``Policy.webhook_viewer`` (the
  owner as read at delivery time), the rule every subscription obeys. Drivers keep none.
* A URL is http or https, carries no credentials nor port 0, and names no loopback,
  private, link-local or otherwise non-public address unless the deployment allows it
  (``allow_private``: a receiver on the same network). Names are checked again when
  delivered to, by what they resolve to (``chargegraph/webhooks.py``).
* Every change an owner makes is audited (the secret never is); delivery health is
  written unaudited, as telemetry, and a webhook whose deliveries keep failing is
  disabled (audited, as ``system``) for its owner to see and enable again.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

from domain import validation as v
from domain.entities import (
    DeliveryClaim,
    InstanceLease,
    PendingDelivery,
    User,
    Webhook,
    WebhookEvent,
)
from domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    UniqueViolation,
    ValidationError,
)
from domain.events import (
    CommandCompleted,
    ConnectorStatusChanged,
    DomainEvent,
    FaultReported,
    MaintenanceStatusChanged,
    PaymentChanged,
    ReservationChanged,
    SessionChanged,
    StationConnectionChanged,
    WebhookChanged,
)
from domain.ids import new_id
from domain.outside import reaching_out
from domain.policy import SYSTEM, Viewer, refuse_unless_staff
from domain.ports import (
    Change,
    Delete,
    Guard,
    Insert,
    InsertIfAbsent,
    Store,
    Update,
    WebhookAttempt,
    WebhookSender,
)
from domain.query import ALL, Eq, Filter, In, NotSub, Or, Range, Sort, all_of
from domain.services.base import (
    STAMPS,
    UNSET,
    Service,
    ServiceContext,
    changed,
    patch,
    stamp_new,
)
from domain.services.edits import edit, retried

log = logging.getLogger("chargegraph.webhooks")

MAX_URL = 2048
MAX_DESCRIPTION = 200
#: Webhooks one company (or one admin, or one operator of no company) may keep: each
#: event is posted once per webhook, so their number is the fan-out of every event.
MAX_WEBHOOKS_PER_OWNER = 20
#: Deliveries failed in a row (each after all its tries) that disable a webhook.
DISABLE_AFTER_FAILURES = 10
#: A delivery that keeps succeeding writes its health at most this often (every attempt
#: that changes something is written at once).
HEALTH_REFRESH = timedelta(minutes=1)
#: How much of a receiver's error text is kept (it is shown to the owner).
MAX_ERROR = 300
#: Handed-over deliveries one write of a claim deletes (a claim takes all of its
#: webhook's, in as many writes as it needs, under its ``DeliveryClaim``).
CLAIM_BATCH = 1000
#: A claim's lock older than this was left by an instance that died claiming: broken by
#: the next claim (a live claim holds it for a few writes).
CLAIM_STALE = timedelta(minutes=5)

#: What a stored delivery's progress writes: its tries, the next try's time, and which
#: instance delivers it (``None``: handed over).
PROGRESS_FIELDS = frozenset({"tries_made", "due_at", "instance_id"}) | STAMPS
#: A removed webhook's stored deliveries deleted per write.
FORGET_BATCH = 1000

#: The health fields a delivery writes, without the update stamps: who last changed the
#: webhook stays its owner (``updatedBy``), not the instance that delivered.
HEALTH_FIELDS = frozenset({"last_status", "last_error", "last_attempt_at", "last_success_at",
                           "consecutive_failures", "dropped_events"})

#: Why a webhook whose owner can no longer see its events was disabled.
ORPHANED = ("its owner can no longer receive its events (left the company, deactivated, "
            "demoted or erased); a colleague who enables it again takes it over")

_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*$")


def webhook_event(event: DomainEvent) -> WebhookEvent | None:
    """The webhook type of a published event; None for those no webhook carries (live
    meter updates, and internal ones between instances)."""
    match event:
        case SessionChanged(change="STARTED"):
            return WebhookEvent.SESSION_STARTED
        case SessionChanged(change="ENDED"):
            return WebhookEvent.SESSION_ENDED
        case ConnectorStatusChanged():
            return WebhookEvent.CONNECTOR_STATUS_CHANGED
        case FaultReported():
            return WebhookEvent.FAULT_REPORTED
        case MaintenanceStatusChanged(kind="FIRMWARE"):
            return WebhookEvent.FIRMWARE_STATUS
        case MaintenanceStatusChanged():
            return WebhookEvent.DIAGNOSTICS_STATUS
        case StationConnectionChanged(removed_offline=True):
            return None  # no charger went anywhere: the station went, for live maps
        case StationConnectionChanged(online=True):
            return WebhookEvent.STATION_ONLINE
        case StationConnectionChanged():
            return WebhookEvent.STATION_OFFLINE
        case ReservationChanged():
            return WebhookEvent.RESERVATION_CHANGED
        case CommandCompleted():
            return WebhookEvent.COMMAND_COMPLETED
        # News to a payments integration, which must stop collecting (voided) or
        # collect the new amount (repriced): not a settlement, so not payment.failed
        # for a FAILED one repriced (a status alone cannot tell them apart).
        case PaymentChanged(change="VOIDED"):
            return WebhookEvent.PAYMENT_VOIDED
        case PaymentChanged(change="REPRICED"):
            return WebhookEvent.PAYMENT_REPRICED
        case PaymentChanged(status="CAPTURED", refunded_minor=0):
            return WebhookEvent.PAYMENT_CAPTURED
        case PaymentChanged(status="FAILED"):
            return WebhookEvent.PAYMENT_FAILED
        case PaymentChanged():  # REFUNDED, or CAPTURED with part of it refunded
            return WebhookEvent.PAYMENT_REFUNDED
    return None


#: IPv6 global unicast (``2000::/3``): the only IPv6 a webhook may reach.
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
#: IPv6 ranges that carry an IPv4 address inside (NAT64, 6to4, Teredo), judged by it.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is on the public internet: not loopback, private, link-local
    (cloud metadata at 169.254.169.254), shared, reserved, site-local, multicast or
    unspecified. IPv6 that carries an IPv4 address (``::ffff:a.b.c.d``, ``::a.b.c.d``,
    NAT64 ``64:ff9b::``, 6to4 ``2002::``, Teredo) is judged by that IPv4 address: on an
    IPv6-only network with NAT64, ``64:ff9b::a9fe:a9fe`` reaches 169.254.169.254, and
    Python counts such forms as global. Other IPv6 must be global unicast (``2000::/3``)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return public_address(embedded)
        if address not in _GLOBAL_UNICAST or address.is_reserved or address.is_site_local:
            return False
    return address.is_global and not address.is_multicast


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    packed = int(address)
    if any(address in network for network in _NAT64) or (
            packed >> 32 == 0 and packed > 1):  # ::a.b.c.d, IPv4-compatible
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    if packed >> 32 == 0xFFFF0000:  # ::ffff:0:a.b.c.d, IPv4-translated
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


def webhook_url(value: str | None, *, allow_private: bool, field: str = "url") -> str:
    """A URL deliveries may be posted to (see the module's rules); refused with a
    reason naming ``field`` otherwise."""
    if value is None:
        raise ValidationError("must not be null", field=field, code="REQUIRED")
    url = value.strip()
    if not url:
        raise ValidationError("must not be empty", field=field, code="REQUIRED")
    if len(url) > MAX_URL:
        raise ValidationError(f"at most {MAX_URL} characters", field=field, code="TOO_LONG")
    if not url.isascii() or not url.isprintable() or " " in url:
        raise ValidationError("write the URL in ASCII without spaces (punycode for "
                              "international names)", field=field)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is no number or out of range
    except ValueError:
        raise ValidationError("not a valid URL", field=field) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValidationError("only http and https URLs", field=field, code="UNSUPPORTED")
    if port == 0:
        # No receiver listens on port 0; taken for "no port", it was posted to 80 (QA s24).
        raise ValidationError("port 0 is no port a receiver listens on", field=field)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        # They would travel with every delivery and show in every list of webhooks;
        # receivers authenticate deliveries by their signature.
        raise ValidationError("no credentials in the URL: check the signature instead",
                              field=field)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValidationError("the URL names no host", field=field)
    if parts.fragment or url.endswith("#"):
        raise ValidationError("no fragment (#…): it is never sent", field=field)
    if not allow_private:
        _refuse_private_host(host, field)
    return url


#: Said with every refused address: the deployment can allow them, and a newcomer
#: trying a receiver on localhost should not have to search for how.
ALLOW_PRIVATE = (" (a receiver on this machine or a private network needs the service "
                 "setting CHARGEGRAPH_WEBHOOKS_ALLOW_PRIVATE=true)")


def _refuse_private_host(host: str, field: str) -> None:
    """Refuses hosts that name this machine or a private network (server-side request
    forgery: a webhook would let anyone who may create one probe the internal network
    and read what answers in its delivery health)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if not public_address(address):
            raise ValidationError("a loopback, private or reserved address: deliveries "
                                  f"go to public addresses only{ALLOW_PRIVATE}",
                                  field=field, code="FORBIDDEN_ADDRESS")
        return
    lowered = host.lower()
    if _NUMERIC_HOST.match(lowered):
        # 2130706433, 0x7f.1, 127.1: spellings of an address resolvers accept.
        raise ValidationError(f"write an IP address in its usual form{ALLOW_PRIVATE}",
                              field=field, code="FORBIDDEN_ADDRESS")
    if lowered == "localhost" or lowered.endswith((".localhost", ".local", ".internal")):
        raise ValidationError("a local name: deliveries go to public addresses only"
                              f"{ALLOW_PRIVATE}", field=field, code="FORBIDDEN_ADDRESS")


def webhook_events(values: Sequence[str] | None, field: str = "events") -> list[str]:
    """The event types asked for: at least one, each known, in their canonical order."""
    if not values:
        raise ValidationError("ask for at least one event", field=field, code="REQUIRED")
    wanted = set()
    for value in values:
        try:
            wanted.add(WebhookEvent(value))
        except ValueError:
            raise ValidationError(f"unknown event {value!r}", field=field) from None
    return [kind.value for kind in WebhookEvent if kind in wanted]


def new_secret() -> str:
    """A signing secret: 256 random bits, prefixed so it is recognised when leaked."""
    return "whsec_" + secrets.token_urlsafe(32)


class LeaseTooShort(Exception):
    """A claim took nothing because the claimer's own lease does not last its margin
    (``claim_handed_over``): all it would take would be orphaned as it lands, and looking
    again changes nothing until the lease is renewed (review s29-hooks3: taken for "none
    taken, look again", the claimer looked again at once, a busy loop, for as long as it
    trusted its lease: its wall clock ahead of its monotonic one, its lease row gone)."""


@dataclass(frozen=True, slots=True)
class CreatedWebhook:
    webhook: Webhook
    #: Shown once: only its owner's receiver keeps it after this answer.
    secret: str


class WebhookService(Service):
    def __init__(self, ctx: ServiceContext, *, allow_private: bool = False,
                 disable_after: int = DISABLE_AFTER_FAILURES) -> None:
        super().__init__(ctx)
        self.allow_private = allow_private
        self.disable_after = disable_after
        #: Plugged in by whoever delivers (``chargegraph/webhooks.py``), for pings.
        self.sender: WebhookSender | None = None

    # ------------------------------------------------------------- owners' changes
    async def create_webhook(self, viewer: Viewer, *, url: str, events: Sequence[str],
                             description: str | None = None,
                             checks: v.Checks | None = None) -> CreatedWebhook:
        """Every invalid field is reported at once (with the caller's ``checks``), before
        the owner and the webhooks they keep are read."""
        if not self.policy.may_create_webhook(viewer):
            raise Forbidden("only admins and operators keep webhooks")
        checks = checks or v.Checks()
        url = checks(webhook_url, url, allow_private=self.allow_private)
        wanted = checks(webhook_events, events)
        description = checks(v.optional_text, description, "description", MAX_DESCRIPTION)
        checks.done()
        assert viewer.user_id is not None  # may_create_webhook: a signed-in user
        if (await self.store.get_many(User, [viewer.user_id]))[0] is None:
            # The service itself (seeding, ``system``) is no user: a webhook it owned
            # would have nobody's eyes to see events with.
            raise Forbidden("webhooks belong to a user: sign in as an admin or operator")
        webhook = Webhook(
            url=url,
            events=wanted,
            description=description,
            secret=new_secret(),
            owner_id=viewer.user_id,
            # An operator's belongs to their company (its other operators manage it too);
            # an admin's to nobody but them.
            company_id=viewer.company_id if viewer.is_operator else None,
        )
        await self._within_limit(viewer)
        stamp_new(webhook, viewer)
        await self.commit(viewer, [(Insert(webhook), None)])
        await self._announce(webhook)
        return CreatedWebhook(webhook, webhook.secret)

    async def _within_limit(self, viewer: Viewer) -> None:
        # An operator's count is their company's (what its operators manage together).
        kept = self.policy.webhook_scope(viewer) if viewer.is_operator else all_of(
            Eq("owner_id", viewer.user_id), Eq("company_id", None))
        if await self.store.count(Webhook, kept) >= MAX_WEBHOOKS_PER_OWNER:
            whose = "company" if viewer.is_operator and viewer.company_id else "owner"
            raise Conflict(f"at most {MAX_WEBHOOKS_PER_OWNER} webhooks per {whose}",
                           code="LIMIT_REACHED")

    async def update_webhook(self, viewer: Viewer, webhook_id: str, *, url: Any = UNSET,
                             events: Any = UNSET, description: Any = UNSET,
                             active: Any = UNSET, checks: v.Checks | None = None
                             ) -> Webhook:
        """Edits what is given. Enabling a webhook again (``active``) starts its failure
        count afresh, clears why it was disabled and makes it the enabler's (not an
        operator's own, of no company, enabled by an admin while they can still receive
        its events: ``takes_over_webhook``). The
        fields given are checked together (with the caller's ``checks``) before the
        webhook is read."""
        refuse_unless_staff(viewer, "change webhooks")
        checks = checks or v.Checks()
        updates: dict[str, Any] = {}
        if url is not UNSET:
            updates["url"] = checks(webhook_url, url, allow_private=self.allow_private)
        if events is not UNSET:
            updates["events"] = checks(webhook_events, events)
        if description is not UNSET:
            updates["description"] = checks(v.optional_text, description, "description",
                                            MAX_DESCRIPTION)
        active = checks(v.present, active, "active")
        checks.done()
        webhook = await retried(lambda: self._edit(viewer, webhook_id, updates, active))
        await self._announce(webhook)
        return webhook

    async def _edit(self, viewer: Viewer, webhook_id: str, given: dict[str, Any],
                    active: Any) -> Webhook:
        """``update_webhook``'s read, checks and write (``retried``: another edit landed
        meanwhile). A delivery's health write keeps the webhook's version (its fields
        are written apart, without stamps): an edit is not run again for one, and its
        before-image shows the health as it read it."""
        webhook = await self.visible(viewer, Webhook, webhook_id)
        updates = dict(given)
        if active is not UNSET:
            updates["active"] = bool(active)
            if active:
                updates["consecutive_failures"] = 0
                updates["disabled_reason"] = None
                if not webhook.active and viewer.user_id is not None \
                        and await self._taken_over(webhook, viewer):
                    # Enabled again by whoever does it: theirs from now on (its owner may
                    # be the reason it was disabled), its events seen with their eyes.
                    updates["owner_id"] = viewer.user_id
        if not updates:
            return webhook
        change = edit(webhook, viewer, **updates)
        await self.commit(viewer, [(change, webhook)])
        return cast(Webhook, change.record)

    async def _taken_over(self, webhook: Webhook, enabler: Viewer) -> bool:
        """``Policy.takes_over_webhook``, with the owner read now."""
        [owner] = await self.store.get_many(User, [webhook.owner_id])
        return self.policy.takes_over_webhook(webhook, owner, enabler)

    async def remove_webhook(self, viewer: Viewer, webhook_id: str,
                             checks: v.Checks | None = None) -> Webhook:
        """Deletes it; events already queued for it are not delivered, and its stored
        deliveries go too (an instance holding one drops it at its try)."""
        refuse_unless_staff(viewer, "remove webhooks", checks)
        webhook = await self.visible(viewer, Webhook, webhook_id)
        await self.commit(viewer, [(Delete(webhook), webhook)])
        await self._announce(webhook)
        try:
            await self.forget_deliveries(webhook.id)
        except Exception:  # the removal stands; what is left is dropped at its try
            log.exception("deleting removed webhook %s's stored deliveries failed",
                          webhook.id)
        return webhook

    async def forget_deliveries(self, webhook_id: str) -> None:
        """Deletes the stored deliveries of a removed webhook (``forget_deliveries``)."""
        await forget_deliveries(self.store, webhook_id)

    async def _announce(self, webhook: Webhook) -> None:
        """Tells every instance that ``webhook`` changed, so each routes its events by it
        now (``WebhookChanged``): events are delivered by the instance that published
        them, whose periodic read of the webhooks is only the fallback."""
        await self.publish(WebhookChanged(station_id=None, cp_id="", webhook_id=webhook.id))

    async def ping(self, viewer: Viewer, webhook_id: str,
                   checks: v.Checks | None = None) -> WebhookAttempt:
        """Posts a ``ping`` to the webhook at once (also while it is disabled, to check a
        receiver before enabling it again) and says how it went. It counts for nothing:
        no retries, no health."""
        refuse_unless_staff(viewer, "test webhooks", checks)
        webhook = await self.visible(viewer, Webhook, webhook_id)
        if self.sender is None:
            raise DomainError("webhook delivery is not running on this instance",
                              code="UNAVAILABLE")
        reaching_out("ping")
        return await self.sender.ping(webhook)

    # ------------------------------------------------------------- what delivery asks
    async def active_webhooks(self, limit: int = 10_000) -> list[Webhook]:
        """The enabled webhooks, at most ``limit`` (the deliverer routes events by their
        ``events``)."""
        return await self.store.find_all(Webhook, Eq("active", True), (Sort("id"),),
                                         limit=limit)

    async def deliverable(self, webhook_id: str, event: DomainEvent) -> Webhook | None:
        """The webhook as stored now, if it is to get ``event`` now: still there and
        enabled, still asking for its type, and its owner, read now, may see it."""
        [webhook] = await self.store.get_many(Webhook, [webhook_id])
        kind = webhook_event(event)
        if webhook is None or not webhook.active or kind is None \
                or kind.value not in webhook.events:
            return None
        [owner] = await self.store.get_many(User, [webhook.owner_id])
        viewer = self.policy.webhook_viewer(webhook, owner)
        if viewer is None:
            # Its owner left (deactivated, demoted, moved to another company): nothing
            # more goes to a URL they chose, and the webhook says so instead of staying
            # enabled and silent. A colleague who enables it again takes it over.
            await self._disable_orphan(webhook)
            return None
        if not self.policy.sees_event(viewer, event):
            return None
        return webhook

    async def _disable_orphan(self, webhook: Webhook) -> None:
        off = patch(webhook, SYSTEM, only_if=("active", True), active=False,
                    disabled_reason=ORPHANED)
        await self.commit(SYSTEM, [(off, webhook)])

    async def record_attempt(self, webhook: Webhook, attempt: WebhookAttempt, *,
                             final: bool, dropped: int = 0) -> Webhook | None:
        """Writes what one attempt of a delivery did. ``final``: the delivery is over
        (it succeeded, or this was its last try). A delivery failed for good counts
        towards disabling the webhook; a success starts the count afresh. ``dropped``:
        events its queue lost since the last write. Returns the webhook as written
        (None when it was removed meanwhile)."""
        for _ in range(3):
            current = (await self.store.get_many(Webhook, [webhook.id]))[0]
            if current is None:
                return None
            try:
                return await self._record(current, attempt, final, dropped)
            except NotFound:
                return None  # removed meanwhile
            except Conflict as exc:
                if exc.code != "CHANGED":
                    raise
                # Another instance counted a delivery of its own meanwhile: count again.
        return None

    async def _record(self, current: Webhook, attempt: WebhookAttempt, final: bool,
                      dropped: int) -> Webhook:
        failures = current.consecutive_failures
        if attempt.ok:
            failures = 0
        elif final:
            failures += 1
        health: dict[str, Any] = {
            "last_status": attempt.status,
            "last_error": attempt.error[:MAX_ERROR] if attempt.error else None,
            "last_attempt_at": attempt.at,
            "consecutive_failures": failures,
            "dropped_events": current.dropped_events + dropped,
        }
        if attempt.ok:
            health["last_success_at"] = attempt.at
            if self._healthy_already(current, attempt) and not dropped:
                return current
        guard = ("consecutive_failures", current.consecutive_failures)
        if failures >= self.disable_after and current.active:
            reason = (f"disabled after {failures} deliveries failed in a row (last: "
                      f"{health['last_error'] or attempt.status}); fix the receiver and "
                      f"enable it again")
            off = patch(current, SYSTEM, only_if=guard, required=True, active=False,
                        disabled_reason=reason[:MAX_ERROR + 100], **health)
            await self.commit(SYSTEM, [(off, current)])
            return cast(Webhook, off.record)
        written = changed(current, SYSTEM, **health)
        # Health only, without the update stamps: ``updatedBy`` stays whoever edited it.
        written.updated_at, written.updated_by = current.updated_at, current.updated_by
        await self.store.write([Update(written, HEALTH_FIELDS, guard, required=True)], [])
        return written

    @staticmethod
    def _healthy_already(current: Webhook, attempt: WebhookAttempt) -> bool:
        """A success that changes nothing shown but the time: written once a minute."""
        return (current.consecutive_failures == 0 and current.last_error is None
                and current.last_status == attempt.status
                and current.last_success_at is not None
                and attempt.at - current.last_success_at < HEALTH_REFRESH)

    # ------------------------------------------------------------- handing over at a stop
    async def hand_over(self, deliveries: Sequence[PendingDelivery]) -> None:
        """Stores what a stopping instance still had to deliver, in one write, for the
        next instance to claim (``claim_handed_over``)."""
        if not deliveries:
            return
        now = self.now()
        await self.store.write([Insert(stamp_new(d, SYSTEM, now)) for d in deliveries], [])

    async def keep_deliveries(self, owner: str, *, new: Sequence[PendingDelivery] = (),
                              progressed: Sequence[PendingDelivery] = (),
                              over: Sequence[PendingDelivery] = (),
                              margin: timedelta = timedelta(0)) -> list[PendingDelivery]:
        """One write of what ``owner``'s deliveries did since its last: ``new`` ones
        stored (queued), ``progressed`` ones' tries, next try and instance written (a
        graceful stop hands them over: ``instance_id`` None), ``over`` ones deleted
        (delivered, given up, dropped). Updates and deletes hold only while the delivery
        is still ``owner``'s: one another instance took over (this one's lease had
        lapsed) stays that instance's. A write failing for a delivery that is gone (its
        webhook removed, taken over) is written again change by change without it.

        New ones stored as ``owner``'s are stored only while its lease lasts ``margin``
        past the clock's time as the write lands, as a claim's are (``_lease_guard``;
        review s29: a slow write landed after the lease ended, rows of an instance
        another had declared dead and claimed from). Returned when that guard fails, none of them
        stored: still only in ``owner``'s memory, nobody else's to take, to be stored
        once its lease is renewed; the rest of the write is written without them (a
        delete of a delivered one must not wait for the lease: a claimer would post it
        again)."""
        now = self.now()
        owned = [d for d in new if d.instance_id == owner]
        # Handed over (no instance's): any instance's to take, whatever the lease.
        others: list[Change] = [InsertIfAbsent(stamp_new(d, SYSTEM, now)) for d in new
                                if d.instance_id != owner]
        for delivery in progressed:
            delivery.updated_at, delivery.updated_by = now, SYSTEM.actor
            others.append(Update(delivery, PROGRESS_FIELDS, only_if=("instance_id", owner)))
        others += [Delete(d, only_if=("instance_id", owner)) for d in over]
        stored: list[Change] = [InsertIfAbsent(stamp_new(d, SYSTEM, now)) for d in owned]
        guards = [_lease_guard(owner, self.now, margin)] if owned else []
        if not stored and not others:
            return []
        try:
            await self.store.write([*stored, *others], [], guards)
            return []
        except (Conflict, NotFound):
            pass
        # A delete of one gone or taken over, or the lease: told apart by writing the
        # owned inserts alone, on the guard (an InsertIfAbsent fails on nothing else).
        refused: list[PendingDelivery] = []
        if stored:
            try:
                await self.store.write(stored, [], guards)
            except Conflict:
                refused = owned
        for change in others:
            with contextlib.suppress(Conflict, NotFound):
                await self.store.write([change], [])
        return refused

    async def stored_delivery(self, record_id: str) -> PendingDelivery | None:
        """The stored delivery ``record_id`` as it is now (None: gone), for an instance
        to tell whether it is still its own."""
        return (await self.store.get_many(PendingDelivery, [record_id]))[0]

    async def claim_handed_over(self, batch: int = CLAIM_BATCH, *,
                                instance_id: str | None = None,
                                margin: timedelta = timedelta(0)
                                ) -> list[PendingDelivery] | None:
        """The deliveries of one webhook that no live instance delivers (handed over at
        a graceful stop, or of an instance whose lease expired: it crashed), the webhook
        whose is oldest among those no other instance is claiming: all of them, in
        order, now this instance's alone; ``None`` when none are left to take now.
        ``instance_id``: this instance's, written on them (they stay stored, its own,
        until delivered); without it they are deleted (taken into memory only). Its
        lease must be live (the caller's to know, review r27-durable2): under an id with
        no live lease they are orphaned again as they land, for another instance to
        claim and post too.

        One webhook's together, by one instance: split between instances, they would be
        posted side by side, out of order. So the claim first takes the webhook's
        ``DeliveryClaim`` (one insert, which one instance wins, on either store), then
        deletes its deliveries, ``batch`` to a write, each delete guarded (taken once),
        and gives the lock back. Empty when another instance won the lock (look again:
        that webhook is skipped while it holds it).

        Each batch is read and written at the clock's time then, the write guarded on the
        instances it takes from still having no live lease (one renewed since the read,
        a stall over, is posting them still) and, with ``instance_id``, on that one's
        lease lasting ``margin`` past the write's landing (review s29: one claim of many
        batches outlived the lease it was begun under, and rows written as its own after
        that were orphaned as they landed, another instance claiming and posting them
        too). A
        guard that fails ends the claim there: the rest stays for a later one (the
        caller renews its lease first). Its own lease's guard failing before anything
        was taken raises ``LeaseTooShort``: the caller stops looking until it has
        renewed its lease."""
        now = self.now()
        await self._break_stale_claims(now)
        order = (Sort("queued_at"), Sort("id"))
        unclaimed = NotSub("webhook_id", DeliveryClaim.kind, ALL)
        orphaned = _orphaned(now, instance_id)
        oldest = await self.store.find_all(PendingDelivery, all_of(unclaimed, orphaned),
                                           order, limit=1)
        if not oldest:
            return None
        lock = stamp_new(DeliveryClaim(id=oldest[0].webhook_id, claimant=new_id(),
                                       claimed_at=now), SYSTEM, now)
        try:
            await self.store.write([Insert(lock)], [])
        except UniqueViolation:
            return []  # another instance is taking this webhook's
        taken: list[PendingDelivery] = []
        try:
            while True:
                # Only the webhook's that no live instance delivers now: another's own
                # stay its.
                now = self.now()
                found = await self.store.find_all(
                    PendingDelivery, all_of(Eq("webhook_id", lock.id),
                                            _orphaned(now, instance_id)),
                    order, limit=batch)
                if not found:
                    break
                claims = [_taken(d, instance_id) for d in found]
                try:
                    await self.store.write(claims, [], _claim_guards(
                        found, now, self.now, instance_id, margin))
                except (Conflict, NotFound):
                    # Deleted meanwhile (its webhook removed), taken, or a lease guard
                    # no longer holds: the rest stays. Its own lease is told apart (a
                    # read of the guard's condition): a look again fails the same way.
                    if not taken and instance_id is not None and not \
                            await self.store.find_all(InstanceLease, _lasting(
                                instance_id, self.now(), margin), limit=1):
                        raise LeaseTooShort(instance_id) from None
                    break
                except Exception:
                    if not taken:
                        raise
                    # What was deleted already is this instance's to deliver: the rest
                    # stays for a later claim.
                    log.exception("claiming webhook %s's handed-over deliveries failed "
                                  "after %d of them", lock.id, len(taken))
                    break
                taken += [cast(PendingDelivery, c.record) for c in claims]
        finally:
            try:
                await self.store.write([Delete(lock, only_if=("claimant", lock.claimant))],
                                       [])
            except Exception:  # left for CLAIM_STALE; what was taken is still returned
                log.warning("releasing the claim of webhook %s's handed-over deliveries "
                            "failed; it lapses within %s", lock.id, CLAIM_STALE,
                            exc_info=True)
        return taken

    async def _break_stale_claims(self, now: datetime) -> None:
        """Deletes the locks of claims older than ``CLAIM_STALE`` (their instance died
        claiming), each only while it is still that claim's."""
        for stale in await self.store.find_all(
                DeliveryClaim, Range("claimed_at", lt=now - CLAIM_STALE), limit=100):
            with contextlib.suppress(Conflict, NotFound):
                await self.store.write(
                    [Delete(stale, only_if=("claimant", stale.claimant))], [])


async def forget_deliveries(store: Store, webhook_id: str) -> None:
    """Deletes the stored deliveries of a removed webhook (by its owner, or with its
    owner's erasure), whoever delivers them. One deleted meanwhile (delivered, claimed)
    fails a batch: read again."""
    for _ in range(100):
        found = await store.find_all(PendingDelivery, Eq("webhook_id", webhook_id),
                                     limit=FORGET_BATCH)
        if not found:
            return
        with contextlib.suppress(NotFound):
            await store.write([Delete(d) for d in found], [])


def _orphaned(now: datetime, instance_id: str | None) -> Filter:
    """Stored deliveries no live instance delivers: handed over (no instance), or of an
    instance whose lease has expired or is gone (it crashed; a lease is deleted once
    swept), and never ``instance_id``'s own (in its memory, whatever its lease says)."""
    dead = NotSub("instance_id", InstanceLease.kind, Range("expires_at", gte=now))
    if instance_id is None:
        return dead
    # "Not this instance's": a null, or any other id (above or below it).
    others = Or((Eq("instance_id", None), Range("instance_id", lt=instance_id),
                 Range("instance_id", gt=instance_id)))
    return all_of(dead, others)


def _claim_guards(found: Sequence[PendingDelivery], now: datetime,
                  clock: Callable[[], datetime], instance_id: str | None,
                  margin: timedelta) -> list[Guard]:
    """What a claim's write of ``found`` (read as orphaned at ``now``) holds on: none of
    the instances they were of has a live lease again, and ``instance_id``'s (when they
    are made its) lasts ``margin`` past the write's landing (``clock``), so what lands as
    its own is not orphaned."""
    guards: list[Guard] = []
    owners = tuple(sorted({d.instance_id for d in found if d.instance_id is not None}))
    if owners:
        guards.append(Guard(InstanceLease, all_of(In("id", owners),
                                                  Range("expires_at", gte=now)),
                            exists=False))
    if instance_id is not None:
        guards.append(_lease_guard(instance_id, clock, margin))
    return guards


def _lease_guard(instance_id: str, clock: Callable[[], datetime], margin: timedelta
                 ) -> Guard:
    """A write of rows as ``instance_id``'s holds on its lease lasting ``margin`` past
    ``clock``'s time as the write lands (the store checks the guard then): one landing
    on a lease that has ended is orphaned as it lands, for another instance to claim and
    post too. Review s30: judged at the write's start, a write landing more than
    ``margin`` later (waiting for SQLite's lock, a slow MongoDB batch) was taken."""
    return Guard(InstanceLease, lambda: _lasting(instance_id, clock(), margin))


def _lasting(instance_id: str, now: datetime, margin: timedelta) -> Filter:
    """``instance_id``'s lease, while it lasts ``margin`` past ``now``."""
    return all_of(Eq("id", instance_id), Range("expires_at", gte=now + margin))


def _taken(delivery: PendingDelivery, instance_id: str | None) -> Delete | Update:
    """The claim of ``delivery``: made ``instance_id``'s (or deleted, without one), only
    while it is still as read (the guard fails the write, ``Conflict``, once another
    instance took it)."""
    if instance_id is None:
        return Delete(delivery, only_if=("delivery_id", delivery.delivery_id))
    return Update(changed(delivery, SYSTEM, instance_id=instance_id), PROGRESS_FIELDS,
                  only_if=("instance_id", delivery.instance_id), required=True,
                  also_if=(("delivery_id", delivery.delivery_id),))
