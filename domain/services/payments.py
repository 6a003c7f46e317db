"""Settling sessions: the payment state machine behind a ``PaymentProvider``.

PENDING → CAPTURED (or FAILED, which may be captured on a later try); CAPTURED →
REFUNDED, in one refund or several partial ones (``refunded_minor`` counts what was paid
back; the payment stays CAPTURED until all of it was). PENDING or FAILED → VOIDED when
its session's corrected cost is 0 (``repriced``): nothing is left to collect. Nothing
else: no refund of money never captured or beyond what is left, no double capture, no
capture of a voided payment. A refund is claimed on the payment (``refunding_minor``,
``refund_claims``) before the provider is asked, and settled or released after its
answer (``PaymentService.refund``); one a crash left is settled by
``settle_stale_refunds``.

Every change of a payment's status or amount publishes one ``PaymentChanged`` after its
commit (``payment_changed``): a settlement here, a reprice or a void where a late
StopTransaction corrects its session (``ChargingService``). Opening one publishes none:
its session's ENDED event carries the price.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from domain import validation as v
from domain.currencies import finest_amount, major_units, minor_units
from domain.entities import Payment, PaymentStatus, Refund, Session
from domain.errors import Conflict, Forbidden, PaymentDeclined, ValidationError
from domain.events import PaymentChanged
from domain.ids import new_id
from domain.outside import reaching_out
from domain.policy import SYSTEM, Viewer, refuse_unless_staff
from domain.ports import Change, Insert, PaymentProvider, Update
from domain.query import MAX_PAGE_SIZE, Eq, PageRequest, Range, Sort, all_of
from domain.services.base import Service, ServiceContext, patch, stamp_new

log = logging.getLogger("chargegraph.payments")

TRANSITIONS: dict[str, tuple[frozenset[PaymentStatus], PaymentStatus]] = {
    "capture": (frozenset({PaymentStatus.PENDING, PaymentStatus.FAILED}),
                PaymentStatus.CAPTURED),
    "fail": (frozenset({PaymentStatus.PENDING}), PaymentStatus.FAILED),
}


#: Digits before the point of the largest amount a refund is read as: more is no payment.
MAX_DIGITS = 18

#: Payments whose amount follows their session's corrected price: no money moved. A
#: FAILED one was asked for and not collected; its next try asks the corrected amount.
UNCOLLECTED = frozenset({PaymentStatus.PENDING, PaymentStatus.FAILED})
#: The charger fields a payment copies from its session when it is opened (migration 41).
CHARGER_FIELDS = frozenset({"cp_id", "connector_id", "vehicle_id"})
#: How far back a process's first round of ``fill_charger_fields`` looks: payments an
#: instance of an older version wrote before this one started (a rolling upgrade, or
#: every new instance restarted while old ones still ran). Older ones were filled by
#: migration 41 (MongoDB: ``payment_plugs``) when the first new instance started.
CHARGER_FIELDS_LOOKBACK = timedelta(days=7)
#: Each later round looks this far before the previous round began: a payment is dated
#: by its writer's clock before it is stored, and instances' clocks differ.
CHARGER_FIELDS_MARGIN = timedelta(minutes=10)
#: How old a refund's claim is before ``settle_stale_refunds`` settles it: well past
#: any provider's answer, so a refund still waiting for one is left to its request (were
#: it asked anyway, the provider answers the same key once, and the payment's guard
#: writes one settlement).
STALE_REFUND_CLAIM = timedelta(minutes=10)
#: Tries of a refund's claim, settlement or release, each lost to another write of the
#: payment (another refund's) that came between its read and its write.
REFUND_WRITE_TRIES = 20
#: How long ``settle_stale_refunds`` waits for the provider's answer to one refund before
#: leaving its claim for the next round (``PaymentService.refund_timeout_s``).
REFUND_PROVIDER_TIMEOUT_S = 30.0
#: How long one round of ``settle_stale_refunds`` goes on asking before it leaves the
#: rest to the next round (``PaymentService.refund_sweep_budget_s``): within the sweep's
#: 5 minutes, a provider call's timeout included.
REFUND_SWEEP_BUDGET_S = 240.0


def repriced(payment: Payment, amount_minor: int, currency: str, viewer: Viewer
             ) -> Update | None:
    """The update giving ``payment`` its session's corrected price (the session's close
    was corrected by a StopTransaction that came after it): only while no money moved
    (PENDING, or FAILED: the status kept), and only from that status (a capture racing
    it wins, and the correction is told ``Conflict``). ``None`` once money moved
    (CAPTURED, REFUNDED) or nothing can be asked any more (VOIDED): what was collected
    is not rewritten by a charger's message; an operator settles the difference.

    A corrected price of 0 voids it (VOIDED, amount 0), PENDING or FAILED alike: a
    session that costs nothing has nothing to collect, as one free from the start opens
    no payment (``_close``); a PENDING 0 would wait for a capture forever, and a FAILED
    one would stay billed (reports count FAILED as billed) and be retried for money not
    owed. The same guard: a capture that won keeps its money."""
    if payment.status not in UNCOLLECTED:
        return None
    status = PaymentStatus.VOIDED if amount_minor == 0 else payment.status
    return patch(payment, viewer, only_if=("status", payment.status), required=True,
                 amount_minor=amount_minor, currency=currency, status=status)


def payment_changed(payment: Payment, change: str) -> PaymentChanged:
    """The event of ``payment`` as a committed write left it. ``change``: what happened
    (``PaymentChanged.change``). Seen as payments are read: in its books, or by its
    driver (``Policy.sees_event``)."""
    return PaymentChanged(
        station_id=payment.station_id, cp_id="", payment_record_id=payment.id,
        session_record_id=payment.session_id, user_id=payment.user_id,
        status=payment.status.value, amount_minor=payment.amount_minor,
        refunded_minor=payment.refunded_minor, currency=payment.currency,
        books_company_id=payment.company_id,
        books_station_owner_id=payment.station_owner_id, change=change)


def reprice_change(after: Payment) -> str:
    """``PaymentChanged.change`` of a correction's write (``repriced``): VOIDED, or
    REPRICED (the status kept, the amount changed)."""
    return "VOIDED" if after.status is PaymentStatus.VOIDED else "REPRICED"


class ManualPaymentProvider:
    """Money collected outside ChargeGraph (invoice, card terminal): an operator records
    the outcome, the reference says so."""

    name = "manual"

    async def capture(self, payment: Payment) -> str:
        return f"manual:capture:{payment.id}"

    async def refund(self, payment: Payment, amount_minor: int, key: str) -> str:
        return f"manual:refund:{payment.id}:{key}"


class PaymentService(Service):
    def __init__(self, ctx: ServiceContext, provider: PaymentProvider | None = None) -> None:
        super().__init__(ctx)
        self.provider: PaymentProvider = provider or ManualPaymentProvider()
        #: Where the next round of ``fill_charger_fields`` starts; ``None`` before the
        #: first.
        self._charger_fields_since: datetime | None = None
        #: Where the next round of ``settle_stale_refunds`` goes on (the cursor of the
        #: last payment the previous one asked for); ``None``: from the first.
        self._refunds_after: str | None = None
        self.refund_timeout_s = REFUND_PROVIDER_TIMEOUT_S
        self.refund_sweep_budget_s = REFUND_SWEEP_BUDGET_S

    async def fill_charger_fields(self) -> int:
        """Gives the payments an instance of an older version opened without their
        session's charger, connector and vehicle (``CHARGER_FIELDS``; it still runs
        beside this one during a rolling upgrade) those of their session, as migration
        41 did for the payments before it; returns how many it found. Revenue and its filters read
        the payment's own fields (``AnalyticsService``), which keeps those reads free
        of a join with the sessions: such a payment is missing from a vehicle's revenue
        and grouped under no charger until this runs (housekeeping, every few minutes).

        Only payments opened since the previous round began (less
        ``CHARGER_FIELDS_MARGIN``; a process's first round: ``CHARGER_FIELDS_LOOKBACK``)
        are looked at, through the index on ``created_at``: old versions only open
        payments, they never rewrite a payment whole (updates write their own fields),
        so an older payment that has the fields keeps them. Pages of at most
        ``MAX_PAGE_SIZE``: one read of sessions and one write each."""
        began = self.now()
        since = self._charger_fields_since or began - CHARGER_FIELDS_LOOKBACK
        lacking = all_of(Eq("cp_id", None), Range("created_at", gte=since))
        filled, after = 0, None
        while True:
            page = await self.store.find_page(Payment, lacking, [Sort("created_at")],
                                              PageRequest(first=MAX_PAGE_SIZE, after=after))
            filled += await self._fill_from_sessions(page.items)
            if not page.has_next:
                break
            after = page.cursors[-1]  # past a payment whose session is gone, too
        self._charger_fields_since = began - CHARGER_FIELDS_MARGIN
        if filled:
            log.info("gave %d payments an older version opened their session's charger, "
                     "connector and vehicle", filled)
        return filled

    async def _fill_from_sessions(self, payments: Sequence[Payment]) -> int:
        """Writes their sessions' charger fields into ``payments``, each only while it
        still lacks them (another instance's round may have filled it meanwhile). Only
        those fields: not its update stamps, which a refund's guard reads (and this
        is no one's change of the payment)."""
        sessions = await self.store.get_many(Session, [p.session_id for p in payments])
        fills: list[Change] = [
            Update(dataclasses.replace(payment, cp_id=session.cp_id,
                                       connector_id=session.connector_id,
                                       vehicle_id=session.vehicle_id),
                   CHARGER_FIELDS, only_if=("cp_id", None))
            for payment, session in zip(payments, sessions, strict=True)
            if session is not None]  # sessions are never removed
        if fills:
            await self.store.write(fills, [])
        return len(fills)

    async def _managed(self, viewer: Viewer, payment_id: str) -> Payment:
        payment = await self.visible(viewer, Payment, payment_id)
        if not self.policy.keeps_books(viewer, payment):
            raise Forbidden("only admins and the operator whose books it is in settle "
                            "payments")
        return payment

    async def _move(self, viewer: Viewer, payment_id: str, step: str,
                    checks: v.Checks | None) -> Payment:
        # Drivers keep no books: refused as who they are, whatever id they sent.
        refuse_unless_staff(viewer, "settle payments", checks)
        payment = await self._managed(viewer, payment_id)
        sources, target = TRANSITIONS[step]
        if payment.status not in sources:
            raise Conflict(f"a {payment.status.value} payment cannot be {target.value.lower()}",
                           field="id", code="INVALID_STATE")
        reference = payment.provider_ref
        if step == "capture":
            reaching_out("capture")
            reference = await self.provider.capture(payment)
        # Only onto the payment as read (its last write, not only its status): of two
        # requests racing (two captures, a capture and a fail), one moves the payment and
        # the other is told it moved meanwhile (but a capture, whose money moved, is
        # recorded over a fail: ``_collected_meanwhile``); and a late stop's reprice committed
        # between the read and this write (the status kept, the amount changed) does not
        # have the payment read CAPTURED at an amount the provider never captured.
        # (The provider, asked twice, keys its idempotency on the payment and the step.)
        # ``patch`` writes the update stamps too: who settled it, and when.
        move = patch(payment, viewer, only_if=("updated_at", payment.updated_at),
                     required=True, status=target, provider=self.provider.name,
                     provider_ref=reference)
        try:
            return await self._settled(viewer, move, payment, "changed", target.value)
        except Conflict:
            if step != "capture":
                raise
            return await self._collected_meanwhile(viewer, payment, reference)

    async def _collected_meanwhile(self, viewer: Viewer, read: Payment,
                                   reference: str | None) -> Payment:
        """The provider collected ``read``'s amount, and the payment changed before that
        was written: a late stop repriced or voided it, or a fail marked it FAILED. The
        money moved, so the payment says so: CAPTURED at the amount collected, written
        onto the payment as it is now. Refused, the capture left money collected with no
        trace (VOIDED with 40 cents taken), and its retry, which the provider answers
        with the first capture, recorded CAPTURED at the repriced 80 (review s19); a
        fail that overtook it left the payment FAILED with the money taken and no
        reference of the capture (QA s25: the driver dunned for money collected). The
        session's corrected cost beside it shows the difference an operator settles, as
        for any payment captured before a correction. One another capture settled
        meanwhile is told, as before (the provider, asked again, collects once)."""
        for _ in range(3):  # each miss is another write that came between
            [now] = await self.store.get_many(Payment, [read.id])
            # Still uncollected (PENDING or FAILED: a correction or a fail came between,
            # and FAILED may be captured anyway) or VOIDED: this capture's money is the
            # only money moved. CAPTURED or REFUNDED: another capture recorded it, and
            # of two captures one moves the payment and the other is told.
            if now is None or now.status not in UNCOLLECTED | {PaymentStatus.VOIDED}:
                raise Conflict("the payment was settled meanwhile: read it again",
                               field="id", code="INVALID_STATE")
            move = patch(now, viewer, only_if=("updated_at", now.updated_at),
                         required=True, status=PaymentStatus.CAPTURED,
                         amount_minor=read.amount_minor, currency=read.currency,
                         provider=self.provider.name, provider_ref=reference)
            try:
                settled = await self._settled(viewer, move, now, "changed", "CAPTURED")
            except Conflict:
                continue
            if (now.amount_minor, now.currency) != (read.amount_minor, read.currency):
                log.warning("payment %s was captured at %s minor units while its session "
                            "was corrected to %s %s (%s): settle the difference by hand",
                            read.id, read.amount_minor, now.amount_minor, now.currency,
                            now.status.value)
            return settled
        raise Conflict("the payment kept changing: read it again", field="id",
                       code="INVALID_STATE")

    async def _settled(self, viewer: Viewer, move: Update, payment: Payment, what: str,
                       change: str, also: Sequence[Change] = ()) -> Payment:
        """Writes ``move`` (guarded), and ``also`` with it; one that lost to another
        settlement is told so, and nothing of it is written."""
        try:
            await self.commit(viewer, [(move, payment)], unaudited=also)
        except Conflict as exc:
            if exc.code != "CHANGED":
                raise
            raise Conflict(f"the payment was {what} meanwhile: read it again", field="id",
                           code="INVALID_STATE") from exc
        settled = cast(Payment, move.record)
        await self.publish(payment_changed(settled, change))
        return settled

    async def capture(self, viewer: Viewer, payment_id: str,
                      checks: v.Checks | None = None) -> Payment:
        return await self._move(viewer, payment_id, "capture", checks)

    async def fail(self, viewer: Viewer, payment_id: str,
                   checks: v.Checks | None = None) -> Payment:
        return await self._move(viewer, payment_id, "fail", checks)

    async def refund(self, viewer: Viewer, payment_id: str,
                     amount: Decimal | None = None,
                     checks: v.Checks | None = None) -> Payment:
        """Pay ``amount`` (in the payment's currency; default: all that is left) of a
        CAPTURED payment back.

        Claimed in the store before the provider is asked (``_claim_refund``): the
        amount is reserved against what is left (``Payment.refunding_minor``) by a write
        guarded on the payment as read, under the refund's own idempotency key. Of
        refunds racing, on this instance or another on the same store, each is checked
        against what the others left: one that does not fit is refused up front, and the
        provider is never asked for more than was captured (QA s27: 3, 2 and 1.50 EUR of
        4.00 all reached it, under one key). The provider's answer settles the claim
        (``_settle_claim``: refunded, with its ``Refund`` record); its refusal
        (``PaymentDeclined``) releases it. Any other failure, or a crash, leaves the
        claim: shown on the payment as being refunded, and settled by
        ``settle_stale_refunds``, which asks the provider again under the same key."""
        refuse_unless_staff(viewer, "settle payments", checks)
        payment = await self._managed(viewer, payment_id)
        # Its session before the provider pays anything back: what the refund's record
        # is reported by (sessions are never removed).
        session, = await self.store.get_many(Session, [payment.session_id])
        if session is None:
            raise Conflict("the payment's session is gone", field="id", code="INVALID_STATE")
        claimed, claim = await self._claim_refund(viewer, payment, amount)
        reaching_out("refund")
        try:
            reference = await self.provider.refund(claimed, claim["amount_minor"],
                                                   claim["key"])
        except PaymentDeclined:
            await self._release_claim(viewer, payment.id, claim["key"])
            raise
        settled = await self._settle_claim(viewer, payment.id, claim, reference, session)
        return settled or await self._managed(viewer, payment_id)

    def _refundable(self, payment: Payment, amount: Decimal | None) -> int:
        """The minor units ``amount`` pays back of ``payment`` as read (all that is
        left: ``None``), or why it cannot: left is what neither was refunded nor is
        being refunded (claimed by a refund not settled yet)."""
        unpaid = payment.amount_minor - payment.refunded_minor
        if payment.status is not PaymentStatus.CAPTURED or unpaid <= 0:
            raise Conflict(f"a {payment.status.value} payment of "
                           f"{major_units(unpaid, payment.currency)} {payment.currency} "
                           "left cannot be refunded", field="id", code="INVALID_STATE")
        left = unpaid - payment.refunding_minor
        pending = (f" ({major_units(payment.refunding_minor, payment.currency)} "
                   f"{payment.currency} being refunded)" if payment.refunding_minor else "")
        if amount is not None and amount.is_finite() and amount.adjusted() > MAX_DIGITS:
            # Beyond any payment (1e999999 overflowed the conversion: a 500).
            raise ValidationError(f"at most the {major_units(left, payment.currency)} "
                                  f"{payment.currency} not yet refunded{pending}",
                                  field="amount", code="OUT_OF_RANGE")
        amount_minor = left if amount is None else minor_units(amount, payment.currency)
        if amount_minor is None:
            raise ValidationError(f"give the amount with {finest_amount(payment.currency)}",
                                  field="amount", code="INVALID")
        if not 0 < amount_minor <= left:
            raise ValidationError(
                f"refund more than 0 and at most the {major_units(left, payment.currency)} "
                f"{payment.currency} not yet refunded{pending}", field="amount",
                code="OUT_OF_RANGE")
        return amount_minor

    async def _claim_refund(self, viewer: Viewer, payment: Payment, amount: Decimal | None
                            ) -> tuple[Payment, dict[str, Any]]:
        """Reserves the refund's amount on ``payment`` (``refunding_minor``, and the claim
        in ``refund_claims`` with a key of its own), guarded by the payment's last write:
        of refunds racing, one writes and the others read the payment again and are
        checked against what it left (refused up front when they no longer fit). The
        payment as claimed, and the claim."""
        for _ in range(REFUND_WRITE_TRIES):  # each miss is another refund's write
            amount_minor = self._refundable(payment, amount)
            claim: dict[str, Any] = {"key": new_id(), "amount_minor": amount_minor,
                                     "at": self.now().isoformat(), "by": viewer.actor}
            move = patch(payment, viewer, only_if=("updated_at", payment.updated_at),
                         required=True,
                         refunding_minor=payment.refunding_minor + amount_minor,
                         refund_claims=[*(payment.refund_claims or ()), claim])
            if await self._wrote(viewer, move, payment):
                return cast(Payment, move.record), claim
            payment = await self._managed(viewer, payment.id)
        raise Conflict("the payment kept changing: read it again", field="id",
                       code="INVALID_STATE")

    async def _wrote(self, viewer: Viewer, move: Update, before: Payment,
                     also: Sequence[Change] = ()) -> bool:
        """Writes ``move`` (guarded on ``before``'s last write) and ``also``; False when
        another write of the payment came first (nothing written)."""
        try:
            await self.commit(viewer, [(move, before)], unaudited=also)
        except Conflict as exc:
            if exc.code != "CHANGED":
                raise
            return False
        return True

    async def _with_claim(self, payment_id: str, key: str
                          ) -> tuple[Payment, dict[str, Any]] | None:
        """The payment as stored and its claim ``key``; ``None`` once it is not pending
        any more (settled or released meanwhile: by the sweep, or by the request)."""
        [payment] = await self.store.get_many(Payment, [payment_id])
        claim = next((c for c in (payment.refund_claims or ()) if c["key"] == key), None
                     ) if payment is not None else None
        return None if payment is None or claim is None else (payment, claim)

    async def _settle_claim(self, viewer: Viewer, payment_id: str, claim: dict[str, Any],
                            reference: str | None, session: Session) -> Payment | None:
        """Records the claimed refund as paid back (the provider answered
        ``reference``): its amount moves from ``refunding_minor`` to ``refunded_minor``,
        and its ``Refund`` record (id: the claim's key) is written with it, by whoever
        asked for it. ``None`` when it was settled (or released) meanwhile."""
        for _ in range(REFUND_WRITE_TRIES):
            found = await self._with_claim(payment_id, claim["key"])
            if found is None:
                return None
            now, pending = found
            amount_minor = pending["amount_minor"]
            refunded = now.refunded_minor + amount_minor
            record = self._refund_record(viewer, now, session, amount_minor, reference)
            record.id, record.created_by, record.updated_by = (
                pending["key"], pending["by"], pending["by"])
            move = patch(now, viewer, only_if=("updated_at", now.updated_at),
                         required=True, refunded_minor=refunded,
                         refunding_minor=now.refunding_minor - amount_minor,
                         refund_claims=[c for c in now.refund_claims or ()
                                        if c["key"] != pending["key"]] or None,
                         status=PaymentStatus.REFUNDED if refunded == now.amount_minor
                         else PaymentStatus.CAPTURED)
            # The refund's own record rides in the same write: reports book it when it
            # was paid back. Not audited on its own: the payment's audited update says
            # who paid back how much, and when. Its provider's reference is on that
            # record only: the payment keeps its capture's (QA s31: each refund wrote
            # its own over it, and the capture's was left in the audit log alone).
            if await self._wrote(viewer, move, now, [Insert(record)]):
                settled = cast(Payment, move.record)
                await self.publish(payment_changed(settled, "REFUNDED"))
                return settled
        raise Conflict("the payment kept changing: read it again", field="id",
                       code="INVALID_STATE")

    async def _release_claim(self, viewer: Viewer, payment_id: str, key: str) -> None:
        """Gives the amount of claim ``key`` back to what is left to refund: the provider
        refused it, nothing moved."""
        for _ in range(REFUND_WRITE_TRIES):
            found = await self._with_claim(payment_id, key)
            if found is None:
                return
            now, pending = found
            move = patch(now, viewer, only_if=("updated_at", now.updated_at),
                         required=True,
                         refunding_minor=now.refunding_minor - pending["amount_minor"],
                         refund_claims=[c for c in now.refund_claims or ()
                                        if c["key"] != key] or None)
            if await self._wrote(viewer, move, now):
                return
        raise Conflict("the payment kept changing: read it again", field="id",
                       code="INVALID_STATE")

    async def settle_stale_refunds(self) -> int:
        """Settles the refunds claimed more than ``STALE_REFUND_CLAIM`` ago and never
        settled: their instance crashed, or lost the store, between the claim and the
        provider's answer. Each is asked of the provider again under its own key (a
        provider keeping the port's promise pays back once, and answers with the refund
        it made, or makes it now): its answer settles the claim, its refusal releases
        it, any other failure leaves it for the next round, and so does a provider that
        does not answer within ``refund_timeout_s`` (one that never answers held the
        sweep for good, on every instance). Housekeeping, every few minutes; returns how
        many it settled or released.

        The payments being refunded are read a page at a time, by id, from where the
        previous round stopped: a round asks for ``refund_sweep_budget_s`` at most (and
        for one payment's claims at least), and the next one goes on after the last it
        asked; one that reached the end starts again from the first. A backlog the
        provider keeps failing on is not asked over and over in front of the claims
        after it (review s27: only the first 100 were ever read). Settled refunds are
        dated when the sweep records them (the provider's answer does not say when it
        paid)."""
        stale = self.now() - STALE_REFUND_CLAIM
        began = time.monotonic()
        done, looked_at, after = 0, 0, self._refunds_after
        while True:
            page = await self.store.find_page(
                Payment, Range("refunding_minor", gt=0), [Sort("id")],
                PageRequest(first=MAX_PAGE_SIZE, after=after))
            for payment, cursor in zip(page.items, page.cursors, strict=True):
                if looked_at and time.monotonic() - began >= self.refund_sweep_budget_s:
                    self._refunds_after = after
                    log.info("the refund sweep ran out of its %gs after %d payments: the "
                             "next round goes on from there", self.refund_sweep_budget_s,
                             looked_at)
                    return self._swept(done)
                done += await self._settle_stale(payment, stale)
                looked_at += 1
                after = cursor
            if not page.has_next:
                break
        self._refunds_after = None
        return self._swept(done)

    @staticmethod
    def _swept(done: int) -> int:
        if done:
            log.info("settled %d refunds an interrupted request left claimed", done)
        return done

    async def _settle_stale(self, payment: Payment, stale: datetime) -> int:
        """Asks the provider again for each of ``payment``'s claims made before ``stale``
        and settles or releases it by the answer; how many it settled or released."""
        session, = await self.store.get_many(Session, [payment.session_id])
        done = 0
        for claim in payment.refund_claims or ():
            if datetime.fromisoformat(claim["at"]) > stale or session is None:
                continue
            try:
                reference = await asyncio.wait_for(
                    self.provider.refund(payment, claim["amount_minor"], claim["key"]),
                    self.refund_timeout_s)
            except PaymentDeclined:
                await self._release_claim(SYSTEM, payment.id, claim["key"])
                log.warning("refund %s of payment %s, claimed at %s, was refused by "
                            "the provider: released", claim["key"], payment.id,
                            claim["at"])
            except TimeoutError:
                log.warning("refund %s of payment %s, claimed at %s, is still unsettled: "
                            "the provider did not answer within %gs; asked again next "
                            "round", claim["key"], payment.id, claim["at"],
                            self.refund_timeout_s)
                continue
            except Exception:
                log.exception("refund %s of payment %s, claimed at %s, is still "
                              "unsettled: the provider failed", claim["key"],
                              payment.id, claim["at"])
                continue
            else:
                await self._settle_claim(SYSTEM, payment.id, claim, reference, session)
            done += 1
        return done

    def _refund_record(self, viewer: Viewer, payment: Payment, session: Session,
                       amount_minor: int, reference: str | None) -> Refund:
        """The record of paying ``amount_minor`` of ``payment`` back now, with what
        reports filter and group it by: its session's charger, connector and vehicle."""
        return stamp_new(Refund(
            payment_id=payment.id, session_id=payment.session_id,
            station_id=payment.station_id, cp_id=session.cp_id,
            connector_id=session.connector_id, user_id=payment.user_id,
            vehicle_id=session.vehicle_id, amount_minor=amount_minor,
            currency=payment.currency, at=self.now(), provider=self.provider.name,
            provider_ref=reference,
            company_id=payment.company_id, station_owner_id=payment.station_owner_id),
            viewer)
