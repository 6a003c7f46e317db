"""Outgoing webhooks in the graph: the ``Webhook`` node with its delivery health, the
``webhooks`` root list (through the one read path: the policy's ``webhook`` scope) and
the mutations that manage them. The signing secret is in ``createWebhook``'s answer
only; no field reads it afterwards."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import strawberry

from domain import entities as d
from domain.ports import WebhookAttempt
from domain.query import ALL, Sort
from domain.validation import Checks
from graph.errors import PAYLOAD_ERRORS, UserError, attempt
from graph.inputs import checked_id, given
from graph.nodes import NODE_BY_KIND, RECORD_OF_NODE, Audited, User, _audited, _related
from graph.relay import Connection, Node, PageArgs, page_connection

if TYPE_CHECKING:
    from graph.context import GraphContext

Info = strawberry.Info
T = TypeVar("T")

strawberry.enum(d.WebhookEvent, name="WebhookEvent",
                description="What a webhook may ask for; deliveries carry it as `type` "
                            "(`session.ended`, …). `STATION_OFFLINE` is delivered only "
                            "once the charger has stayed offline for the deployment's "
                            "grace (`CHARGEGRAPH_OFFLINE_WEBHOOK_GRACE_S`, 60 s by "
                            "default; 0: at once), dated when it went offline; "
                            "`STATION_ONLINE` only after a delivered `STATION_OFFLINE`: a "
                            "charger gone and back within the grace delivers neither. "
                            "The `stationConnectionChanged` subscription is not delayed. "
                            "`PAYMENT_REPRICED` and `PAYMENT_VOIDED`: a late "
                            "StopTransaction corrected the session of a payment not "
                            "collected (PENDING or FAILED): collect its new `amountMinor`, "
                            "or nothing.")
WebhookEvent = d.WebhookEvent

OLDEST_FIRST = (Sort("created_at"),)

_URL = ("Where deliveries are POSTed: http or https, at most 2048 characters, no "
        "credentials; public addresses only unless the deployment allows private ones "
        "(FORBIDDEN_ADDRESS).")
_EVENTS = "The event types it gets, at least one (REQUIRED)."
_DESCRIPTION = "A note for people, at most 200 characters."
_WEBHOOK_ID = "The webhook's global id (INVALID_ID if it is no webhook's)."


def _ctx(info: Info) -> GraphContext:
    return info.context  # type: ignore[no-any-return]


@strawberry.type(description="How a webhook's deliveries have gone.")
class WebhookHealth:
    last_status: int | None = strawberry.field(
        description="HTTP status of the last attempt; null when none came back.")
    last_error: str | None = strawberry.field(
        description="Why the last attempt failed (null when it succeeded).")
    last_attempt_at: datetime | None = strawberry.field(description=(
        "When a delivery was last tried, UTC; null before any."))
    last_success_at: datetime | None = strawberry.field(description=(
        "When a delivery last succeeded (2xx), UTC; null before any."))
    consecutive_failures: int = strawberry.field(
        description="Deliveries failed in a row, each after all its tries; the webhook "
                    "is disabled when it reaches the limit.")
    dropped_events: int = strawberry.field(
        description="Events dropped because too many waited for a slow receiver.")


@strawberry.type(description="An outgoing webhook: events its owner may see are POSTed "
                             "to `url`, signed with its secret.")
class Webhook(Node, Audited):
    url: str = strawberry.field(description="Where deliveries are POSTed.")
    events: list[WebhookEvent] = strawberry.field(  # type: ignore[valid-type]
        description="The event types it gets (each delivery's `type`).")
    description: str | None = strawberry.field(description=(
        "A note for people; null when none."))
    active: bool = strawberry.field(description=(
        "Whether it gets deliveries; false once disabled (by hand, or after failures: "
        "`disabledReason`)."))
    disabled_reason: str | None = strawberry.field(
        description="Why it was disabled (repeated failures); null when enabled.")
    health: WebhookHealth = strawberry.field(description="How its deliveries have gone.")
    _r: strawberry.Private[d.Webhook]

    @classmethod
    def wrap(cls, r: d.Webhook, ctx: GraphContext) -> Webhook:
        return _audited(cls, r, {
            "url": r.url,
            # A type a newer version stored is left out rather than failing the list.
            "events": [d.WebhookEvent(e) for e in r.events
                       if e in d.WebhookEvent._value2member_map_],
            "description": r.description,
            "active": r.active,
            "disabled_reason": r.disabled_reason,
            "health": WebhookHealth(
                last_status=r.last_status, last_error=r.last_error,
                last_attempt_at=r.last_attempt_at, last_success_at=r.last_success_at,
                consecutive_failures=r.consecutive_failures,
                dropped_events=r.dropped_events),
        })

    @strawberry.field(description=(
        "Whose view its events are delivered with: who created it, or who last enabled it "
        "again (`updateWebhook` with `active: true`; an operator's own webhook, of no "
        "company, stays theirs when an admin enables it while they can still receive its "
        "events)."))
    async def owner(self, info: Info) -> User | None:
        return await _related(info, User, self._r.owner_id)  # type: ignore[no-any-return]


NODE_BY_KIND["webhook"] = Webhook
RECORD_OF_NODE[Webhook] = d.Webhook


@strawberry.input(description="A new webhook.")
class CreateWebhookInput:
    url: str = strawberry.field(description="http or https, no credentials; public "
                                            "addresses only unless the deployment allows "
                                            "private ones.")
    events: list[WebhookEvent] = strawberry.field(  # type: ignore[valid-type]
        description=_EVENTS)
    description: str | None = strawberry.field(default=None, description=_DESCRIPTION)


@strawberry.input(description="What to change of a webhook; fields left out stay as they "
                               "are.")
class UpdateWebhookInput:
    id: strawberry.ID = strawberry.field(description=_WEBHOOK_ID)
    url: str | None = strawberry.field(default=strawberry.UNSET, description=_URL)
    events: list[WebhookEvent] | None = strawberry.field(  # type: ignore[valid-type]
        default=strawberry.UNSET, description=_EVENTS)
    description: str | None = strawberry.field(default=strawberry.UNSET, description=(
        _DESCRIPTION + " Null clears it."))
    active: bool | None = strawberry.field(
        default=strawberry.UNSET,
        description="Enabling it again starts its failure count afresh.")


@strawberry.input(description="The webhook to remove.")
class RemoveWebhookInput:
    id: strawberry.ID = strawberry.field(description=_WEBHOOK_ID)


@strawberry.input(description="The webhook to ping.")
class TestWebhookInput:
    id: strawberry.ID = strawberry.field(description=_WEBHOOK_ID)


@strawberry.type(description="The answer to `createWebhook`.")
class CreateWebhookPayload:
    webhook: Webhook | None = strawberry.field(description=(
        "The webhook created; null when it failed."))
    secret: str | None = strawberry.field(
        description="The signing secret, shown this once: keep it with the receiver.")
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


@strawberry.type(description="What a mutation of a webhook returns.")
class WebhookPayload:
    webhook: Webhook | None = strawberry.field(description=(
        "The webhook as the mutation left it (as it was, for a removal); null when it "
        "failed."))
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


@strawberry.type(description="How one delivery went.")
class WebhookDelivery:
    ok: bool = strawberry.field(description="The receiver answered 2xx.")
    status: int | None = strawberry.field(description=(
        "The receiver's HTTP status; null when none came back."))
    error: str | None = strawberry.field(description=(
        "Why it failed; null when `ok`."))
    at: datetime = strawberry.field(description="When it was tried, UTC.")


@strawberry.type(description="The answer to `testWebhook`.")
class TestWebhookPayload:
    delivery: WebhookDelivery | None = strawberry.field(description=(
        "How the ping went; null when it could not be tried (see `errors`)."))
    errors: list[UserError] = strawberry.field(description=PAYLOAD_ERRORS)


def _wrapped(record: d.Webhook | None, ctx: GraphContext) -> Webhook | None:
    return Webhook.wrap(record, ctx) if record is not None else None


@strawberry.type
class WebhookQuery:
    @strawberry.field(description="Outgoing webhooks, oldest first: an admin's all, an "
                                  "operator's their company's; none for drivers.")
    async def webhooks(self, info: Info, first: int | None = None, after: str | None = None,
                       last: int | None = None, before: str | None = None
                       ) -> Connection[Webhook]:
        return await page_connection(_ctx(info), d.Webhook, Webhook.wrap, ALL, OLDEST_FIRST,
                                     PageArgs(first=first, after=after, last=last,
                                              before=before))


@strawberry.type
class WebhookMutation:
    @strawberry.mutation(description="A webhook for admins and operators; the answer "
                                     "carries its signing secret, this once.")
    async def create_webhook(self, info: Info, input: CreateWebhookInput
                             ) -> CreateWebhookPayload:
        ctx = _ctx(info)
        created, errors = await attempt(ctx, lambda: ctx.services.webhooks.create_webhook(
            ctx.viewer, url=input.url, events=input.events, description=input.description),
            input=input)
        if created is None:
            return CreateWebhookPayload(webhook=None, secret=None, errors=errors)
        return CreateWebhookPayload(webhook=Webhook.wrap(created.webhook, ctx),
                                    secret=created.secret, errors=[])

    @strawberry.mutation(description=(
        "Change what is given. Enabling it again (`active`) clears its failures and why "
        "it was disabled, and makes it the enabler's (an operator's own, of no company, "
        "stays theirs when an admin enables it while they can still receive its "
        "events)."))
    async def update_webhook(self, info: Info, input: UpdateWebhookInput) -> WebhookPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.webhooks.update_webhook(
                ctx.viewer, checked_id(checks, input.id, "webhook", "id"),
                url=given(input.url), events=given(input.events),
                description=given(input.description), active=given(input.active),
                checks=checks)

        webhook, errors = await attempt(ctx, run, input=input)
        return WebhookPayload(webhook=_wrapped(webhook, ctx), errors=errors)

    @strawberry.mutation(description="Removes a webhook; events waiting for it are not "
                                     "delivered. Returns it as it was.")
    async def remove_webhook(self, info: Info, input: RemoveWebhookInput) -> WebhookPayload:
        ctx = _ctx(info)

        async def run() -> Any:
            checks = Checks()
            return await ctx.services.webhooks.remove_webhook(
                ctx.viewer, checked_id(checks, input.id, "webhook", "id"), checks=checks)

        webhook, errors = await attempt(ctx, run)
        return WebhookPayload(webhook=_wrapped(webhook, ctx), errors=errors)

    @strawberry.mutation(description="Posts a signed `ping` to the webhook now (also "
                                     "when disabled) and says how it went; no retries, "
                                     "and its health is left as it is.")
    async def test_webhook(self, info: Info, input: TestWebhookInput) -> TestWebhookPayload:
        ctx = _ctx(info)

        async def run() -> WebhookAttempt:
            checks = Checks()
            return await ctx.services.webhooks.ping(
                ctx.viewer, checked_id(checks, input.id, "webhook", "id"), checks=checks)

        sent, errors = await attempt(ctx, run)
        delivery = WebhookDelivery(ok=sent.ok, status=sent.status, error=sent.error,
                                   at=sent.at) if sent is not None else None
        return TestWebhookPayload(delivery=delivery, errors=errors)
