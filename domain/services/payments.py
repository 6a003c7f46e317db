"""Settling sessions: the payment state machine behind a ``PaymentProvider``.

PENDING → CAPTURED (or FAILED, which may be captured on a later try); CAPTURED →
REFUNDED. Nothing else: no refund of money never captured, no double capture.
"""

from __future__ import annotations

from typing import cast

from domain.entities import Payment, PaymentStatus
from domain.errors import Conflict, Forbidden
from domain.policy import Viewer
from domain.ports import PaymentProvider
from domain.services.base import Service, ServiceContext, patch

TRANSITIONS: dict[str, tuple[frozenset[PaymentStatus], PaymentStatus]] = {
    "capture": (frozenset({PaymentStatus.PENDING, PaymentStatus.FAILED}),
                PaymentStatus.CAPTURED),
    "fail": (frozenset({PaymentStatus.PENDING}), PaymentStatus.FAILED),
    "refund": (frozenset({PaymentStatus.CAPTURED}), PaymentStatus.REFUNDED),
}


class ManualPaymentProvider:
    """Money collected outside ChargeGraph (invoice, card terminal): an operator records
    the outcome, the reference says so."""

    name = "manual"

    async def capture(self, payment: Payment) -> str:
        return f"manual:capture:{payment.id}"

    async def refund(self, payment: Payment) -> str:
        return f"manual:refund:{payment.id}"


class PaymentService(Service):
    def __init__(self, ctx: ServiceContext, provider: PaymentProvider | None = None) -> None:
        super().__init__(ctx)
        self.provider: PaymentProvider = provider or ManualPaymentProvider()

    async def _managed(self, viewer: Viewer, payment_id: str) -> Payment:
        payment = await self.visible(viewer, Payment, payment_id)
        if not self.policy.keeps_books(viewer, payment):
            raise Forbidden("only admins and the operator whose books it is in settle "
                            "payments")
        return payment

    async def _move(self, viewer: Viewer, payment_id: str, step: str) -> Payment:
        payment = await self._managed(viewer, payment_id)
        sources, target = TRANSITIONS[step]
        if payment.status not in sources:
            raise Conflict(f"a {payment.status.value} payment cannot be {target.value.lower()}",
                           field="id", code="INVALID_STATE")
        reference = payment.provider_ref
        if step == "capture":
            reference = await self.provider.capture(payment)
        elif step == "refund":
            reference = await self.provider.refund(payment)
        # Only from the status read above: of two requests racing (two captures, a capture
        # and a fail), one moves the payment and the other is told it moved meanwhile.
        # (The provider, asked twice, keys its idempotency on the payment and the step.)
        # ``patch`` writes the update stamps too: who settled it, and when.
        move = patch(payment, viewer, only_if=("status", payment.status), required=True,
                     status=target, provider=self.provider.name, provider_ref=reference)
        updated = cast(Payment, move.record)
        try:
            await self.commit(viewer, [(move, payment)])
        except Conflict as exc:
            if exc.code != "CHANGED":
                raise
            raise Conflict("the payment was settled meanwhile", field="id",
                           code="INVALID_STATE") from exc
        return updated

    async def capture(self, viewer: Viewer, payment_id: str) -> Payment:
        return await self._move(viewer, payment_id, "capture")

    async def fail(self, viewer: Viewer, payment_id: str) -> Payment:
        return await self._move(viewer, payment_id, "fail")

    async def refund(self, viewer: Viewer, payment_id: str) -> Payment:
        return await self._move(viewer, payment_id, "refund")
