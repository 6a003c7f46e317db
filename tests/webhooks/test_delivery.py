"""Webhook deliveries end to end: events published by the services are POSTed, signed,
to receivers on 127.0.0.1, as their owners may see them, retried, counted, and given up
on; each by the instance that published it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from chargegraph.webhooks import WebhookDispatcher, event_data
from domain import entities as d
from domain.clock import utcnow
from domain.events import (
    CommandCompleted,
    ConnectorStatusChanged,
    ReservationChanged,
    StationConnectionChanged,
)
from domain.policy import SYSTEM, Viewer
from domain.query import Eq, all_of
from domain.services.metering import MeterReading, SampledValue
from graph.ids import to_global_id
from ocpp_bridge.simulator import connected
from tests.helpers import until
from tests.ocpp.conftest import seed as seed_central
from tests.ocpp.conftest import start_central, stop_central
from tests.webhooks.conftest import World, two_instances
from tests.webhooks.receiver import DRIP, Receiver


async def available(world: World, cp_id: str = "CP-1") -> None:
    """A status report of connector 1 that changes its state (Available, or Preparing
    when it is Available already: a report repeating the state is announced no more):
    one ``connector.status_changed`` event."""
    [plug] = await world.store.find_all(d.Connector, all_of(Eq("cp_id", cp_id),
                                                            Eq("connector_id", 1)))
    status = "Preparing" if plug.status is d.ConnectorStatus.AVAILABLE else "Available"
    await world.services.charging.status_notification(cp_id, 1, status, "NoError")


async def test_a_session_ended_by_a_charger_is_delivered_signed(tmp_path: Path) -> None:
    """A real charger over OCPP: boot, start, meter, stop. The operator's receiver gets
    one ``session.ended`` with the energy and the cost, signed with the secret it was
    shown once, and nothing it did not ask for."""
    central = await start_central(tmp_path / "central.db")
    receiver = await Receiver().start()
    dispatcher = WebhookDispatcher(central.services, allow_private=True, backoff=(0.01,))
    await dispatcher.start()
    try:
        await seed_central(central)
        central.services.webhooks.allow_private = True
        operator = central.users["op"]
        created = await central.services.webhooks.create_webhook(
            Viewer.of(operator), url=receiver.url, events=["session.ended"])
        async with connected(central.url, "CP-1", password="station-password-1") as cp:
            await cp.boot()
            transaction_id, status = await cp.start_transaction(1, "TAG-OK")
            assert status == "Accepted"
            cp.connectors[1].power_w = 11_000
            await cp.meter_values(1, seconds=600)  # 11 kW for ten minutes: 1,833 Wh
            await cp.stop_transaction(1)

        async def delivered() -> bool:
            return len(receiver.requests) >= 1
        await until(delivered)
        session = await central.session(transaction_id)
    finally:
        await dispatcher.close()
        await receiver.close()
        await stop_central(central)

    [request] = receiver.requests
    assert request.method == "POST" and request.path == "/hooks"
    assert request.signed_with(created.secret)
    assert not request.signed_with("whsec_another")
    assert request.headers["x-chargegraph-event"] == "session.ended"
    assert request.headers["x-chargegraph-delivery"].startswith("dlv_")
    assert request.headers["content-type"] == "application/json"
    body = request.json
    assert set(body) == {"id", "type", "at", "data"}
    assert body["id"].startswith("evt_") and body["type"] == "session.ended"
    data = body["data"]
    assert data["transactionId"] == transaction_id and data["cpId"] == "CP-1"
    assert data["state"] == "COMPLETED" and data["change"] == "ENDED"
    assert session is not None and session.cost_minor is not None
    assert data["energyWh"] == session.energy_wh > 1800  # 11 kW for ten minutes
    # The price at 0.40 EUR/kWh, in cents.
    assert (data["costMinor"], data["currency"]) == (session.cost_minor, "EUR")
    assert data["costMinor"] == round(session.energy_wh * 0.40 / 10)
    assert data["sessionId"] == to_global_id("session", session.id)
    assert "companyId" not in data and "ownerId" not in data


def test_a_reservation_event_s_books_are_not_delivered() -> None:
    """Whose books a reservation is in decides who gets its event; like the station's
    ownership, it is no receiver's to read (a new company would learn the old one)."""
    event = ReservationChanged(
        station_id="a" * 24, cp_id="CP-1", company_id="b" * 24, owner_id=None,
        reservation_record_id="c" * 24, reservation_id=3, connector_id=1, user_id=None,
        state="ACTIVE", books_company_id="d" * 24, books_station_owner_id="e" * 24)
    data = event_data(event)
    assert "b" * 24 not in str(data) and "d" * 24 not in str(data) \
        and "e" * 24 not in str(data)
    assert data["state"] == "ACTIVE" and data["reservationId"] == 3


def test_a_commands_raw_answer_is_not_delivered() -> None:
    """A GetConfiguration's values (a charger may echo its AuthorizationKey) or a
    DataTransfer's data stay in the service, as the commandCompleted subscription keeps
    them: the webhook sent them to an outside URL."""
    event = CommandCompleted(
        station_id="a" * 24, cp_id="CP-1", company_id="b" * 24, owner_id=None,
        command_id="c1", action="GetConfiguration", requested_by="u1", status="Accepted",
        result={"configurationKey": [{"key": "AuthorizationKey", "value": "s3cret"}]})
    data = event_data(event)
    assert "s3cret" not in str(data) and data["status"] == "Accepted"
    # Who asked, as a global id a receiver can look up (an actor stays as it is).
    asked = replace(event, requested_by="6b1333ffd03c38cc00c110f9")
    assert event_data(asked)["requestedBy"] == to_global_id("user",
                                                            "6b1333ffd03c38cc00c110f9")


def test_which_connection_is_a_chargers_newest_stays_between_instances() -> None:
    event = StationConnectionChanged(station_id="a" * 24, cp_id="CP-1", company_id=None,
                                     owner_id=None, online=True, connection=7)
    assert event_data(event) == {"stationId": to_global_id("station", "a" * 24),
                                 "cpId": "CP-1", "online": True}


async def test_an_operator_gets_only_what_their_company_may_see(world: World) -> None:
    """The same rule as subscriptions (``Policy.sees_event`` as the owner): Volt's
    operator gets Volt's charger, Other's operator nothing of it; an admin everything."""
    await world.dispatcher()
    volt, other, admin = (await world.receiver(), await world.receiver(),
                          await world.receiver())
    await world.webhook("op", volt, "connector.status_changed")
    await world.webhook("op_other", other, "connector.status_changed")
    await world.webhook("admin", admin, "connector.status_changed")

    await available(world, "CP-1")
    await world.settled()
    assert len(volt.requests) == 1 and len(admin.requests) == 1
    assert other.requests == []

    await available(world, "CP-OTHER")
    await world.settled()
    assert [r.json["data"]["cpId"] for r in other.requests] == ["CP-OTHER"]
    assert len(volt.requests) == 1 and len(admin.requests) == 2


async def test_settling_a_payment_is_delivered_to_its_books(world: World) -> None:
    """Captures, failures and refunds (partial ones too) reach the webhooks of the
    operator whose books the payment is in, and of admins; nobody else's."""
    from decimal import Decimal

    from domain.ports import Insert
    from tests.contract.factories import payment, session

    volt = world.companies["volt"].id
    station = await world.store.find_one(d.Station, Eq("cp_id", "CP-1"))
    assert station is not None
    charged = session(station, user_id=world.users["driver"].id, company_id=volt)
    paid = payment(charged, amount_minor=660)
    failing = payment(session(station, company_id=volt), amount_minor=120)
    await world.store.write([Insert(r) for r in (charged, paid, failing)], [])
    await world.dispatcher()
    books, stranger, admin = (await world.receiver(), await world.receiver(),
                              await world.receiver())
    kinds = ("payment.captured", "payment.failed", "payment.refunded")
    await world.webhook("op", books, *kinds)
    await world.webhook("op_other", stranger, *kinds)
    await world.webhook("admin", admin, "payment.refunded")
    payments = world.services.payments
    await payments.capture(SYSTEM, paid.id)
    await payments.refund(SYSTEM, paid.id, Decimal("1.00"))
    await payments.refund(SYSTEM, paid.id)
    await payments.fail(SYSTEM, failing.id)
    await world.settled()
    got = [(r.json["type"], r.json["data"]["status"], r.json["data"]["refundedMinor"])
           for r in books.requests]
    assert sorted(got) == sorted([("payment.captured", "CAPTURED", 0),
                                  ("payment.refunded", "CAPTURED", 100),
                                  ("payment.refunded", "REFUNDED", 660),
                                  ("payment.failed", "FAILED", 0)])
    first = books.requests[0].json["data"]
    assert first["paymentId"] == to_global_id("payment", paid.id)
    assert first["sessionId"] == to_global_id("session", charged.id)
    assert first["userId"] == to_global_id("user", world.users["driver"].id)
    assert "cpId" not in first and "booksCompanyId" not in first
    assert stranger.requests == [] and len(admin.requests) == 2


async def _charged_and_ended(world: World, start: datetime) -> tuple[int, d.Payment]:
    """A session on CP-1 metered to 1 kWh and ended by an admin, its stop still to
    come: 40 cents PENDING in Volt's books."""
    charging = world.services.charging
    tx, _ = await charging.start_transaction("CP-1", 1, "TAG-OK", 5000, start)
    await charging.meter_values("CP-1", 1, tx, [MeterReading(
        start + timedelta(minutes=5),
        (SampledValue("6000", "Energy.Active.Import.Register", "Wh"),))])
    session = await world.store.find_one(d.Session, Eq("transaction_id", tx))
    assert session is not None
    await charging.end_session(world.viewer("admin"), session.id)
    payment = await world.store.find_one(d.Payment, Eq("session_id", session.id))
    assert payment is not None and payment.amount_minor == 40
    return tx, payment


async def test_a_late_stop_repricing_or_voiding_a_payment_is_delivered(world: World
                                                                      ) -> None:
    """A payments integration must collect the corrected amount (``payment.repriced``)
    or nothing at all (``payment.voided``): both reach the payment's books, with the
    payment as it now stands; a FAILED payment repriced is no second
    ``payment.failed``."""
    await world.dispatcher()
    books, stranger = await world.receiver(), await world.receiver()
    kinds = ("payment.repriced", "payment.voided", "payment.failed")
    await world.webhook("op", books, *kinds)
    await world.webhook("op_other", stranger, *kinds)
    charging, start = world.services.charging, utcnow() - timedelta(hours=2)
    repriced, first = await _charged_and_ended(world, start)
    await charging.stop_transaction("CP-1", repriced, 7000, start + timedelta(minutes=30))
    voided, second = await _charged_and_ended(world, start + timedelta(hours=1))
    await world.services.payments.fail(SYSTEM, second.id)
    await charging.stop_transaction("CP-1", voided, 5000, start + timedelta(minutes=90))
    failed_again, third = await _charged_and_ended(world, start + timedelta(minutes=100))
    await world.services.payments.fail(SYSTEM, third.id)
    await charging.stop_transaction("CP-1", failed_again, 7000,
                                    start + timedelta(minutes=110))
    await world.settled()
    got = [(r.json["type"], r.json["data"]["paymentId"], r.json["data"]["status"],
            r.json["data"]["amountMinor"], r.json["data"]["change"])
           for r in books.requests]
    gid = {p.id: to_global_id("payment", p.id) for p in (first, second, third)}
    assert got == [("payment.repriced", gid[first.id], "PENDING", 80, "REPRICED"),
                   ("payment.failed", gid[second.id], "FAILED", 40, "FAILED"),
                   ("payment.voided", gid[second.id], "VOIDED", 0, "VOIDED"),
                   ("payment.failed", gid[third.id], "FAILED", 40, "FAILED"),
                   ("payment.repriced", gid[third.id], "FAILED", 80, "REPRICED")]
    assert stranger.requests == []


async def test_a_revoked_operator_stops_receiving_at_once(world: World) -> None:
    """Decided at delivery time with the owner read then: deactivated, or moved to
    another company, their webhook gets nothing more (also one their colleague keeps),
    and says so: it used to stay enabled and silent. A colleague who enables it again
    takes it over."""
    await world.dispatcher()
    receiver = await world.receiver()
    webhook, _ = await world.webhook("op", receiver, "connector.status_changed")
    await available(world)
    await world.settled()
    assert len(receiver.requests) == 1

    await world.services.accounts.update_user(
        SYSTEM, world.users["op"].id, company_id=world.companies["other"].id)
    await available(world)
    await world.settled()
    assert len(receiver.requests) == 1
    orphaned = await world.stored(webhook)
    assert not orphaned.active and "owner" in (orphaned.disabled_reason or "")

    await world.services.accounts.update_user(
        SYSTEM, world.users["op"].id, company_id=world.companies["volt"].id)
    await world.services.accounts.deactivate_user(SYSTEM, world.users["op"].id)
    await available(world)
    await world.settled()
    assert len(receiver.requests) == 1

    taken = await world.services.webhooks.update_webhook(world.viewer("op2"), webhook.id,
                                                         active=True)
    assert taken.owner_id == world.users["op2"].id
    await available(world)
    await world.settled()
    assert len(receiver.requests) == 2


async def test_an_admin_enabling_a_solo_operators_webhook_does_not_widen_it(
        world: World) -> None:
    """An operator of no company keeps webhooks of no company, seeing what they run. An
    admin who enables one again (the receiver fixed for them) must not make it theirs:
    a webhook of no company sees with its owner's eyes, and the operator's receiver got
    every other company's events (QA s25). A company's webhook still passes to its
    enabler (it sees what the company sees, whoever owns it), and an admin's to another
    admin."""
    await world.dispatcher()
    solo = await world.services.accounts.create_user(
        SYSTEM, email="solo@example.com", password="password-123", name="solo",
        role=d.Role.OPERATOR, company_id=None)
    receiver = await world.receiver()
    created = await world.services.webhooks.create_webhook(
        Viewer.of(solo), url=receiver.url, events=["connector.status_changed"])
    hooks = world.services.webhooks
    await hooks.update_webhook(Viewer.of(solo), created.webhook.id, active=False)

    enabled = await hooks.update_webhook(world.viewer("admin"), created.webhook.id,
                                         active=True)
    await available(world, "CP-OTHER")  # another company's charger
    await available(world)  # Volt's
    await world.settled()

    assert enabled.active and enabled.owner_id == solo.id
    assert receiver.requests == []
    # Still the operator's to manage (their list shows it).
    [mine] = await world.store.find_all(
        d.Webhook, world.services.policy.webhook_scope(Viewer.of(solo)))
    assert mine.id == created.webhook.id

    company, _ = await world.webhook("op", receiver, "connector.status_changed")
    await hooks.update_webhook(world.viewer("op"), company.id, active=False)
    taken = await hooks.update_webhook(world.viewer("admin"), company.id, active=True)
    assert taken.owner_id == world.users["admin"].id
    admin2 = await world.services.accounts.create_user(
        SYSTEM, email="admin2@example.com", password="password-123", name="admin2",
        role=d.Role.ADMIN)
    own, _ = await world.webhook("admin", receiver, "connector.status_changed")
    await hooks.update_webhook(world.viewer("admin"), own.id, active=False)
    passed = await hooks.update_webhook(Viewer.of(admin2), own.id, active=True)
    assert passed.owner_id == admin2.id


async def test_an_admin_takes_over_an_orphaned_webhook_of_no_company(
        world: World) -> None:
    """An admin's own webhook whose admin was demoted into a company is disabled as
    orphaned, its reason inviting a colleague to enable it and take it over: another
    admin who does makes it theirs, and it keeps receiving (review s25: it stayed the
    demoted owner's, disabled again at the next event). So does a deactivated solo
    operator's: only an operator who can still receive keeps theirs."""
    await world.dispatcher()
    receiver = await world.receiver()
    accounts, hooks = world.services.accounts, world.services.webhooks
    admin2 = await accounts.create_user(
        SYSTEM, email="admin2@example.com", password="password-123", name="admin2",
        role=d.Role.ADMIN)
    created = (await hooks.create_webhook(
        Viewer.of(admin2), url=receiver.url, events=["connector.status_changed"])).webhook
    await accounts.update_user(SYSTEM, admin2.id, role=d.Role.OPERATOR,
                               company_id=world.companies["volt"].id)
    await available(world)
    await world.settled()
    orphaned = await world.stored(created)
    assert not orphaned.active and "colleague who enables it again takes it over" in (
        orphaned.disabled_reason or "")

    enabled = await hooks.update_webhook(world.viewer("admin"), created.id, active=True)
    await available(world)
    await world.settled()
    assert enabled.owner_id == world.users["admin"].id
    assert (await world.stored(created)).active
    assert len(receiver.requests) == 1

    solo = await accounts.create_user(
        SYSTEM, email="solo@example.com", password="password-123", name="solo",
        role=d.Role.OPERATOR, company_id=None)
    own = (await hooks.create_webhook(
        Viewer.of(solo), url=receiver.url, events=["connector.status_changed"])).webhook
    await hooks.update_webhook(Viewer.of(solo), own.id, active=False)
    await accounts.deactivate_user(SYSTEM, solo.id)
    taken = await hooks.update_webhook(world.viewer("admin"), own.id, active=True)
    assert taken.owner_id == world.users["admin"].id


async def test_an_erased_persons_webhooks_go_with_them(world: World) -> None:
    """Erasing an account removes the webhooks it kept of no company (an admin's own),
    and their URL and note from the audit log's images of them: they stayed, enabled,
    with the URL the person chose (QA s25). Their company's webhooks stay the company's,
    URL and all, disabled at once for a colleague to take over (not at the next
    delivery, which may be weeks away for a rare event)."""
    await world.dispatcher()
    receiver = await world.receiver()
    admin2 = await world.services.accounts.create_user(
        SYSTEM, email="admin2@example.com", password="password-123", name="Alice Example",
        role=d.Role.ADMIN)
    mine = (await world.services.webhooks.create_webhook(
        Viewer.of(admin2), url=receiver.url + "/alice", description="Alice's pager",
        events=["connector.status_changed"])).webhook
    await world.services.webhooks.update_webhook(Viewer.of(admin2), mine.id,
                                                 description="Alice Example's pager")
    company, _ = await world.webhook("op", receiver, "connector.status_changed")

    erasure = world.services.erasure
    await erasure.erase_user(world.viewer("admin"), admin2.id)
    await erasure.erase_user(world.viewer("admin"), world.users["op"].id)
    await available(world)
    await world.settled()

    assert receiver.requests == []
    assert (await world.store.get_many(d.Webhook, [mine.id])) == [None]
    kept = await world.stored(company)
    assert (kept.url, kept.active) == (receiver.url, False)
    assert "erased" in (kept.disabled_reason or "")
    entries = await world.store.find_all(d.AuditEntry, Eq("entity_id", mine.id))
    assert [e.action for e in entries] == [d.AuditAction.CREATE, d.AuditAction.UPDATE,
                                           d.AuditAction.DELETE]
    images = [i for e in entries for i in (e.before, e.after) if i is not None]
    assert images and all("alice" not in str(i).lower() for i in images)
    # The company's webhook's history keeps its receiver.
    history = await world.store.find_all(d.AuditEntry, Eq("entity_id", company.id))
    assert history[0].after is not None and history[0].after["url"] == receiver.url
    assert history[-1].after is not None and history[-1].after["active"] is False

    # A colleague takes the company's over; erasing again finds nothing more to do.
    taken = await world.services.webhooks.update_webhook(world.viewer("op2"), company.id,
                                                         active=True)
    await erasure.erase_user(world.viewer("admin"), world.users["op"].id)
    assert (await world.stored(taken)).active
    # Each erasure's entry counts the webhooks that run removed and disabled.
    erased = await world.store.find_all(d.AuditEntry, Eq("action", d.AuditAction.ERASE))
    assert [(e.entity_id, e.after and (e.after["webhooks_removed"],
                                       e.after["webhooks_disabled"])) for e in erased] == [
        (admin2.id, (1, 0)), (world.users["op"].id, (0, 1)), (world.users["op"].id, (0, 0))]


async def test_a_failed_delivery_is_tried_again_until_it_succeeds(world: World) -> None:
    await world.dispatcher()
    receiver = await world.receiver(500, 503, 200)
    webhook, secret = await world.webhook("op", receiver, "connector.status_changed")

    await available(world)
    await world.settled()

    assert len(receiver.requests) == 3
    # One delivery: the same event and delivery ids each time, signed each time.
    assert len({r.headers["x-chargegraph-delivery"] for r in receiver.requests}) == 1
    assert len({r.json["id"] for r in receiver.requests}) == 1
    assert all(r.signed_with(secret) for r in receiver.requests)
    health = await world.stored(webhook)
    assert (health.last_status, health.last_error, health.consecutive_failures) == \
        (200, None, 0)
    assert health.last_success_at is not None and health.active


async def test_a_delivery_that_keeps_failing_counts_and_then_disables(world: World) -> None:
    """Each delivery is tried ``tries`` times; deliveries failed in a row count, and at
    the limit the webhook is disabled (audited as the system) and gets nothing more."""
    world.services.webhooks.disable_after = 2
    await world.dispatcher()
    receiver = await world.receiver(500)
    webhook, _ = await world.webhook("op", receiver, "connector.status_changed")

    await available(world)
    await world.settled()
    once = await world.stored(webhook)
    assert len(receiver.requests) == 3  # TRIES
    assert (once.active, once.consecutive_failures, once.last_status) == (True, 1, 500)
    assert once.last_error == "HTTP 500: receiver says no"

    await available(world)
    await world.settled()
    off = await world.stored(webhook)
    assert len(receiver.requests) == 6
    assert not off.active and off.consecutive_failures == 2
    assert off.disabled_reason is not None and "2 deliveries failed" in off.disabled_reason
    audit = await world.store.find_all(d.AuditEntry, all_of(
        Eq("entity_id", webhook.id), Eq("actor", "system")))
    assert [a.after["active"] for a in audit if a.after] == [False]

    await available(world)
    await world.settled()
    assert len(receiver.requests) == 6

    # Enabled again by its owner: counted afresh, and delivered to.
    await world.services.webhooks.update_webhook(world.viewer("op"), webhook.id, active=True)
    again = await world.stored(webhook)
    assert (again.active, again.consecutive_failures, again.disabled_reason) == (True, 0, None)


async def test_a_full_queue_drops_its_oldest_events_and_counts_them(world: World) -> None:
    dispatcher = await world.dispatcher(queue_size=2)
    receiver = await world.receiver()
    webhook, _ = await world.webhook("op", receiver, "connector.status_changed")
    # Five events offered before the delivery task gets its first turn.
    for status in ("Preparing", "Charging", "SuspendedEV", "Finishing", "Available"):
        dispatcher.offer(ConnectorStatusChanged(
            station_id=None, cp_id="CP-1", company_id=world.companies["volt"].id,
            connector_record_id=None, connector_id=1, status=status))
    await world.settled()
    assert [r.json["data"]["status"] for r in receiver.requests] == ["Finishing",
                                                                     "Available"]
    assert (await world.stored(webhook)).dropped_events == 3


async def test_each_event_is_delivered_by_the_instance_that_published_it(
        tmp_path: Path) -> None:
    """Two instances on one database and one bus (as behind Redis): both hear every
    event, yet each event is posted once, by the instance where it happened."""
    async with two_instances(tmp_path) as (world, first, second):
        receiver = await world.receiver()
        await world.webhook("op", receiver, "connector.status_changed")
        await world.dispatcher(first)
        other_instance = await world.dispatcher(second)
        await other_instance.refresh()  # routes by the webhook made on the first
        heard = world.bus.subscribe(["connector_status"])

        await available(world)  # on the first instance
        await second.charging.status_notification("CP-1", 1, "Charging", "NoError")
        # Both instances hear both events (the bus carries them everywhere).
        for status in ("Available", "Charging"):
            event = await asyncio.wait_for(anext(heard), 5)
            assert isinstance(event, ConnectorStatusChanged) and event.status == status
        await world.settled()

        assert sorted(r.json["data"]["status"] for r in receiver.requests) == \
            ["Available", "Charging"]


async def test_a_name_resolving_to_a_private_address_is_not_posted_to(world: World) -> None:
    """Checked again at delivery by what the name resolves to (here a webhook stored
    while private addresses were allowed): refused, recorded, never sent."""
    await world.dispatcher(allow_private=False)
    receiver = await world.receiver()
    webhook, _ = await world.webhook("op", receiver, "connector.status_changed")
    await world.services.webhooks.update_webhook(
        world.viewer("op"), webhook.id, url=f"http://localhost:{receiver.port}/hooks")

    await available(world)
    await world.settled()
    assert receiver.requests == []
    refused = await world.stored(webhook)
    assert refused.last_status is None and refused.consecutive_failures == 1
    assert refused.last_error == "localhost resolves to a loopback, private or reserved " \
                                 "address (a receiver on this machine or a private network " \
                                 "needs the service setting " \
                                 "CHARGEGRAPH_WEBHOOKS_ALLOW_PRIVATE=true)"


async def test_an_event_published_before_a_webhook_existed_is_not_delivered(
        world: World) -> None:
    await world.dispatcher()
    receiver = await world.receiver()
    await available(world)
    await world.webhook("op", receiver, "connector.status_changed")
    await world.settled()
    assert receiver.requests == []


async def test_a_receiver_that_answers_forever_is_cut_off(world: World) -> None:
    """The timeout bounds the whole exchange, not each read: a receiver dripping its
    answer byte by byte does not hold its webhook's queue."""
    await world.dispatcher(timeout=0.3, tries=1)
    receiver = await world.receiver(DRIP)
    webhook, _ = await world.webhook("op", receiver, "connector.status_changed")
    await available(world)
    await world.settled()
    stalled = await world.stored(webhook)
    assert (stalled.last_status, stalled.last_error) == (None, "no answer within 0.3 s")
    assert stalled.consecutive_failures == 1


async def test_a_name_whose_nameserver_never_answers_is_cut_off_in_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The delivery's time bounds its name lookup too: before, a lookup waiting on a
    nameserver held the webhook's queue (and a thread of the loop's default pool) for as
    long as the resolver took."""
    import socket
    import threading
    from types import SimpleNamespace

    import chargegraph.webhooks as module

    released = threading.Event()

    def stalled(*_: object, **__: object) -> object:
        released.wait(10)
        raise socket.gaierror("timed out")

    monkeypatch.setattr(module.socket, "getaddrinfo", stalled)
    dispatcher = module.WebhookDispatcher(SimpleNamespace(), timeout=0.2)  # type: ignore[arg-type]
    dispatcher._client = httpx.AsyncClient()
    try:
        hook = SimpleNamespace(url="https://stalled-dns.example.com/in", secret="whsec_x")
        attempt = await dispatcher.post(hook, "ping", "delivery-1", b"{}")  # type: ignore[arg-type]
        assert not released.is_set()  # cut off while the lookup still waited
        assert not attempt.ok and attempt.error == "no answer within 0.2 s"
    finally:
        released.set()
        await dispatcher._client.aclose()
        dispatcher._resolver.shutdown(wait=True)


async def test_a_stored_url_with_port_0_is_not_posted_to_port_80() -> None:
    """QA s24: ``http://127.0.0.1:0/hook`` (refused now, but a webhook may be stored from
    before) was posted to port 80, port 0 being taken for no port at all."""
    from types import SimpleNamespace

    import chargegraph.webhooks as module

    posted: list[httpx.URL] = []

    def receive(request: httpx.Request) -> httpx.Response:
        posted.append(request.url)
        return httpx.Response(204)

    dispatcher = module.WebhookDispatcher(SimpleNamespace(),  # type: ignore[arg-type]
                                          allow_private=True)
    dispatcher._client = httpx.AsyncClient(transport=httpx.MockTransport(receive))
    try:
        for url, port in (("http://127.0.0.1:0/hook", 0), ("http://127.0.0.1/hook", None),
                          ("http://127.0.0.1:8080/hook", 8080)):
            hook = SimpleNamespace(url=url, secret="whsec_x")
            await dispatcher.post(hook, "ping", "delivery-1", b"{}")  # type: ignore[arg-type]
            assert posted[-1].port == port, url  # None: the scheme's default, 80
    finally:
        await dispatcher._client.aclose()
        dispatcher._resolver.shutdown(wait=True)


async def test_a_webhook_made_while_the_routes_are_read_is_routed(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refresh whose read started before a webhook was made here used to put its older
    routes over the new webhook's: it missed events until the next refresh."""
    dispatcher = await world.dispatcher()
    receiver = await world.receiver()
    reading, go_on = asyncio.Event(), asyncio.Event()
    read = world.services.webhooks.active_webhooks

    async def slow_read(limit: int = 10_000) -> list[d.Webhook]:
        found = await read(limit)  # read before the webhook exists
        reading.set()
        await go_on.wait()
        return found

    monkeypatch.setattr(world.services.webhooks, "active_webhooks", slow_read)
    refresh = asyncio.create_task(dispatcher.refresh())
    await reading.wait()
    await world.webhook("op", receiver, "connector.status_changed")
    go_on.set()
    await refresh
    await available(world)
    await world.settled()
    assert len(receiver.requests) == 1
