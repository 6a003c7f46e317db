"""What an erasure asks of a store (``domain/services/erasure.py``), on every backend:
the audit log's images of the person's account and cars rewritten in place (entries are
otherwise only appended), found by entity and id across batches, and nothing else
touched; and every refresh token and family of the person deleted, nobody else's."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import timedelta
from typing import Any, cast

import pytest

from domain.clock import utcnow
from domain.entities import (
    AuditAction,
    AuditEntry,
    IdempotencyKey,
    PendingDelivery,
    RefreshFamily,
    RefreshToken,
    Role,
    Session,
    SessionState,
    User,
    Webhook,
)
from domain.errors import Conflict, StoreBusy, StoreUnavailable, Unauthenticated
from domain.policy import Policy, Viewer
from domain.ports import Store, Update, WebhookAttempt
from domain.query import ALL, Eq, all_of
from domain.services.accounts import AccountService
from domain.services.base import ServiceContext
from domain.services.charging import ChargingService
from domain.services.erasure import (
    ERASED_NAME,
    ERASED_NOTE,
    ERASED_PLATE,
    ERASED_URL,
    Erasure,
    erased_email,
)
from domain.services.idempotency import Claim, IdempotencyService, Refusal
from domain.services.refresh_tokens import RefreshTokenService
from domain.services.webhooks import WebhookService
from tests.contract.factories import audit, oid, put, session, station, user, vehicle
from tests.helpers import FastHasher


async def test_the_audit_images_of_an_erased_person_are_scrubbed(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    person, other = user(name="Lena Example", email="lena@example.com"), user()
    car, others_car = vehicle(person, license_plate="B-LE 123"), vehicle(other)
    image = {"name": "Lena Example", "name_key": "lena example",
             "email": "lena@example.com", "role": "DRIVER"}
    plate = {"license_plate": "B-LE 123", "plate_key": "BLE123", "make": "VW"}
    about_person = [audit(person, "system", action=AuditAction.UPDATE, before=image,
                          after={**image, "name": "Lena"}) for _ in range(5)]
    about_car = audit(car, person.id, action=AuditAction.DELETE, before=plate)
    untouched = [audit(other, "system", before={"name": "Other", "email": "o@x.org"}),
                 audit(others_car, "system", before={"license_plate": "B-OT 1"})]
    await put(store, person, other, car, others_car)
    await store.write([], [*about_person, about_car, *untouched])

    ctx = ServiceContext(store=store, policy=Policy(), hasher=FastHasher())
    erasure = Erasure(ctx, AccountService(ctx), RefreshTokenService(ctx))
    monkeypatch.setattr("domain.services.erasure.SCRUB_BATCH", 2)  # several batches
    erased = await erasure.erase_user(Viewer.of(user(role=Role.ADMIN)), person.id)

    entries = await store.find_all(AuditEntry, ALL)
    text = json.dumps([(e.before, e.after) for e in entries])
    assert [p for p in ("Lena", "lena@example.com", "B-LE 123", "BLE123") if p in text] == []
    by_id = {e.id: e for e in entries}
    for entry in about_person:
        assert by_id[entry.id].before == {
            "name": "Erased user", "name_key": erased.name_key,
            "email": erased_email(person.id), "role": "DRIVER"}
    assert by_id[about_car.id].before == {"license_plate": ERASED_PLATE,
                                          "plate_key": ERASED_PLATE, "make": "VW"}
    assert [by_id[e.id] for e in untouched] == untouched
    [stored] = await store.find_all(User, Eq("id", person.id))
    assert (stored.email, stored.active, stored.password_hash) == (
        erased_email(person.id), False, "")


async def test_an_erased_persons_refresh_tokens_are_deleted(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    person, other = user(), user()
    await put(store, person, other)
    ctx = ServiceContext(store=store, policy=Policy(), hasher=FastHasher())
    refresh = RefreshTokenService(ctx)
    for _ in range(3):  # three devices, one of them refreshed once: four tokens
        await refresh.start(person)
    await refresh.rotate((await refresh.start(person)).token)
    kept = await refresh.start(other)
    monkeypatch.setattr("domain.services.refresh_tokens.FORGET_BATCH", 2)  # pages

    await Erasure(ctx, AccountService(ctx), refresh).erase_user(
        Viewer.of(user(role=Role.ADMIN)), person.id)

    assert {t.user_id for t in await store.find_all(RefreshToken, ALL)} == {other.id}
    assert {f.user_id for f in await store.find_all(RefreshFamily, ALL)} == {other.id}
    user_of_kept, _ = await refresh.rotate(kept.token)
    assert user_of_kept.id == other.id


class HeldHasher(FastHasher):
    """Verifies as argon2 does, but only once ``release`` is set (a slow hash)."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def verify(self, password_hash: str, password: str) -> bool:
        self.started.set()
        self.release.wait(10)
        return super().verify(password_hash, password)


async def test_a_sign_in_the_erasure_overtook_stores_no_refresh_token(store: Store) -> None:
    """Review s23: a sign-in whose password was being checked when the account was
    erased stored its refresh family after the erasure deleted the person's: the erased
    person's device record stayed for good. The sign-in fails instead."""
    hasher = HeldHasher()
    ctx = ServiceContext(store=store, policy=Policy(), hasher=hasher)
    person = user(email="lena@example.com")
    person.password_hash = hasher.hash("correct horse battery")
    await put(store, person)
    accounts, refresh = AccountService(ctx), RefreshTokenService(ctx)
    erasure = Erasure(ctx, accounts, refresh)

    async def login() -> None:  # graph/mutation.py login: authenticate, then _signed_in
        signed_in = await accounts.authenticate("lena@example.com", "correct horse battery")
        await refresh.start(signed_in)

    signing_in = asyncio.create_task(login())
    await asyncio.to_thread(hasher.started.wait, 10)  # its password is being checked
    await erasure.erase_user(Viewer.of(user(role=Role.ADMIN)), person.id)
    hasher.release.set()
    with pytest.raises(Unauthenticated, match="sign in again"):
        await signing_in
    await erasure.settled()
    assert await store.find_all(RefreshToken, Eq("user_id", person.id)) == []
    assert await store.find_all(RefreshFamily, Eq("user_id", person.id)) == []


async def test_an_erased_persons_own_webhooks_go_and_their_company_s_stop(
        store: Store) -> None:
    """On every backend: the erasure's write removes the person's webhooks of no company
    and disables their company's (its guard, with ``company_id`` null, holds), and the
    scrub finds the removed ones' entries by their books (``station_owner_id``)."""
    person = user(role=Role.ADMIN, name="Lena Example", email="lena@example.com")
    company_id = oid(900)
    own = Webhook(url="https://lena.example.org/hook", events=["session.ended"],
                  secret="s", owner_id=person.id, description="Lena's pager")
    company_s = Webhook(url="https://billing.example.com/hook", events=["session.ended"],
                        secret="s", owner_id=person.id, company_id=company_id)
    image = {"url": own.url, "description": own.description, "active": True}
    created = audit(own, person.id, action=AuditAction.CREATE, after=image,
                    station_owner_id=person.id)
    await put(store, person, user(role=Role.ADMIN), own, company_s)
    await store.write([], [created])

    ctx = ServiceContext(store=store, policy=Policy(), hasher=FastHasher())
    erasure = Erasure(ctx, AccountService(ctx), RefreshTokenService(ctx))
    await erasure.erase_user(Viewer.of(user(role=Role.ADMIN)), person.id)

    [gone, kept] = await store.get_many(Webhook, [own.id, company_s.id])
    assert gone is None
    assert kept is not None and (kept.url, kept.active) == (company_s.url, False)
    entries = await store.find_all(AuditEntry, Eq("entity_id", own.id))
    text = json.dumps([(e.before, e.after) for e in entries])
    assert "lena" not in text.lower()
    [first] = [e for e in entries if e.id == created.id]
    assert first.after == {"url": ERASED_URL, "description": None, "active": True}


def _services(store: Store) -> tuple[Erasure, WebhookService]:
    ctx = ServiceContext(store=store, policy=Policy(), hasher=FastHasher())
    return (Erasure(ctx, AccountService(ctx), RefreshTokenService(ctx)),
            WebhookService(ctx, allow_private=True, disable_after=1))


async def _audit_text(store: Store) -> str:
    entries = await store.find_all(AuditEntry, ALL)
    return json.dumps([(e.entity, e.before, e.after) for e in entries])


async def test_an_erased_persons_webhook_errors_are_scrubbed_from_the_audit_log(
        store: Store) -> None:
    """A delivery's error names the receiver's host ("<host> does not resolve") or
    quotes its body; it is kept in ``last_error`` and quoted in the disabling's
    ``disabled_reason``, both in audit images (the system's disabling entry, the
    erasure's DELETE). Set ones read ``ERASED_NOTE`` after the scrub; the images keep
    saying that a delivery failed and that it was disabled (review s25)."""
    person, admin = user(role=Role.ADMIN, name="Lena Example"), user(role=Role.ADMIN)
    await put(store, person, admin)
    erasure, hooks = _services(store)
    created = (await hooks.create_webhook(
        Viewer.of(person), url="https://lena-example.org/hook",
        events=["session.ended"])).webhook
    await hooks.record_attempt(created, WebhookAttempt(
        ok=False, status=None, error="lena-example.org does not resolve", at=utcnow()),
        final=True)
    await erasure.erase_user(Viewer.of(admin), person.id)

    assert "lena-example.org" not in await _audit_text(store)
    [deleted] = await store.find_all(AuditEntry, all_of(
        Eq("entity_id", created.id), Eq("action", AuditAction.DELETE)))
    assert deleted.before is not None
    assert (deleted.before["url"], deleted.before["last_error"],
            deleted.before["disabled_reason"], deleted.before["active"]) == (
        ERASED_URL, ERASED_NOTE, ERASED_NOTE, False)


async def test_erasing_a_webhooks_enabler_scrubs_the_url_they_set_taking_it_over(
        store: Store) -> None:
    """Admin B fixes admin A's disabled webhook and enables it in one update (URL and
    note B's): the entry is in A's books, the books before the change. Erasing B, whose
    webhook it now is, scrubs B's URL and note from its after-image, and leaves A's
    before-image as A left it (review s25: B's stayed)."""
    a = user(role=Role.ADMIN, name="Anna")
    b = user(role=Role.ADMIN, name="Bert Example")
    admin = user(role=Role.ADMIN)
    await put(store, a, b, admin)
    erasure, hooks = _services(store)
    created = (await hooks.create_webhook(
        Viewer.of(a), url="https://anna.example.com/hook", events=["session.ended"])).webhook
    await hooks.update_webhook(Viewer.of(a), created.id, active=False)
    taken = await hooks.update_webhook(Viewer.of(b), created.id, active=True,
                                       url="https://bert-example.org/hook",
                                       description="Bert's pager")
    assert taken.owner_id == b.id
    await erasure.erase_user(Viewer.of(admin), b.id)

    assert await store.get_many(Webhook, [created.id]) == [None]
    text = await _audit_text(store)
    assert "bert" not in text.lower()
    assert "https://anna.example.com/hook" in text


async def test_erasing_a_webhooks_former_owner_keeps_its_new_owners_history(
        store: Store) -> None:
    """The converse: erasing A, in whose books B's take-over entry is, scrubs A's
    before-image only; its after-image keeps B's live receiver (review s25: it was
    rewritten to erased.invalid while the webhook, B's, kept posting there)."""
    a = user(role=Role.ADMIN, name="Anna")
    b = user(role=Role.ADMIN, name="Bert")
    admin = user(role=Role.ADMIN)
    await put(store, a, b, admin)
    erasure, hooks = _services(store)
    created = (await hooks.create_webhook(
        Viewer.of(a), url="https://anna.example.com/hook", events=["session.ended"])).webhook
    await hooks.update_webhook(Viewer.of(a), created.id, active=False)
    await hooks.update_webhook(Viewer.of(b), created.id, active=True,
                               url="https://billing.example.net/hook")
    await erasure.erase_user(Viewer.of(admin), a.id)

    [live] = await store.get_many(Webhook, [created.id])
    assert live is not None and live.url == "https://billing.example.net/hook"
    text = await _audit_text(store)
    assert "https://billing.example.net/hook" in text
    assert "anna.example.com" not in text


async def test_an_erasure_closes_its_persons_refused_sessions_in_its_write(
        store: Store) -> None:
    """An open session refused at its start (its charger never stopped it) is closed in
    the erasure's own write, on every store: the guard that no session of theirs is left
    open is checked on the store as the write leaves it. One accepted still refuses the
    erasure (IN_USE), and nothing of it is written."""
    person, other = user(), user()
    st = station()
    refused = session(st, user_id=person.id, start_refused="ConcurrentTx",
                      start_time=utcnow())
    await put(store, person, other, st, refused)
    ctx = ServiceContext(store=store, policy=Policy(), hasher=FastHasher())
    erasure = Erasure(ctx, AccountService(ctx), RefreshTokenService(ctx),
                      charging=ChargingService(ctx))
    admin = Viewer.of(user(role=Role.ADMIN))

    accepted = session(st, 2, user_id=other.id, start_time=utcnow())
    await put(store, accepted)
    with pytest.raises(Conflict) as waits:
        await erasure.erase_user(admin, other.id)
    assert waits.value.code == "IN_USE"
    [kept] = await store.find_all(User, Eq("id", other.id))
    assert kept.erased_at is None

    erased = await erasure.erase_user(admin, person.id)
    assert erased.erased_at is not None
    [closed] = await store.find_all(Session, Eq("id", refused.id))
    assert (closed.state, closed.closed_without_stop, closed.cost_minor) == (
        SessionState.COMPLETED, True, None)


async def test_an_erasure_forgets_every_kept_answer_that_names_the_person(
        store: Store) -> None:
    """Idempotency keys keep mutations' answers for 24 hours: the person's own, and
    others' that name them (an admin's ``updateUser`` of their email, an operator's
    answer listing their car). An erasure left the latter, the person's email and plate
    in the store for a day after it (and in SQLite's files past the scrub)."""
    person, admin = user(name="Lena Example", email="lena@example.com"), user()
    car = vehicle(person, license_plate="B-LE 123")
    await put(store, person, admin, car)
    ctx = ServiceContext(store=store, policy=Policy(), hasher=FastHasher())
    keys = IdempotencyService(ctx)
    answers = [
        (person, "own", '{"data":{"addVehicle":{"vehicle":{"id":"VmVoaWNsZTox"}}}}'),
        (admin, "email", '{"data":{"updateUser":{"user":{"email":"lena@example.com"}}}}'),
        (admin, "plate", '{"data":{"x":{"licensePlate":"B-LE 123","name":"Other"}}}'),
        (admin, "name", '{"data":{"x":{"name":"Lena Example"}}}'),
        (admin, "unrelated", '{"data":{"x":{"email":"someone@example.com"}}}')]
    for who, key, answer in answers:
        claim = await keys.begin(Viewer.of(who), key, "fp")
        assert isinstance(claim, Claim)
        await keys.finish(claim, answer)

    erasure = Erasure(ctx, AccountService(ctx), RefreshTokenService(ctx), idempotency=keys)
    await erasure.erase_user(Viewer.of(user(role=Role.ADMIN)), person.id)

    left = await store.find_all(IdempotencyKey, ALL)
    assert [(k.user_id, k.key) for k in left] == [(admin.id, "unrelated")]


class HeldAnswers:
    """One instance's view of the shared store whose keeping of idempotency answers
    waits for ``lands`` (``entered`` once it does): a slow write."""

    def __init__(self, store: Store) -> None:
        self.inner = store
        self.entered, self.lands = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def write(self, changes: Any, audit: Any, *rest: Any) -> None:
        if any(isinstance(c, Update) and isinstance(c.record, IdempotencyKey)
               for c in changes):
            self.entered.set()
            await self.lands.wait()
        await self.inner.write(changes, audit, *rest)


async def test_an_answer_another_instance_keeps_after_the_erasure_looked_is_withheld(
        store: Store) -> None:
    """Session 30: an erasure waits for the answers its own instance is keeping, not for
    another instance's: an admin's ``updateUser`` answer naming the person, its mutation
    run before the erasure, written on another instance after the erasure had looked,
    kept the person's email for a day. Its keeping, once written, sees the erasure and
    withholds it: a retry is told it ran, and runs nothing."""
    person, admin = user(name="Lena Example", email="lena@example.com"), user()
    await put(store, person, admin)
    held = HeldAnswers(store)
    one = ServiceContext(store=cast(Store, held), policy=Policy(), hasher=FastHasher())
    keys_one = IdempotencyService(one)
    claim = await keys_one.begin(Viewer.of(admin), "update-lena", "fp")
    assert isinstance(claim, Claim)
    keeping = asyncio.create_task(keys_one.finish(
        claim, '{"data":{"updateUser":{"user":{"email":"lena@example.com"}}}}'))
    await asyncio.wait_for(held.entered.wait(), 5)

    other = ServiceContext(store=store, policy=Policy(), hasher=FastHasher())
    erasure = Erasure(other, AccountService(other), RefreshTokenService(other),
                      idempotency=IdempotencyService(other))
    await erasure.erase_user(Viewer.of(user(role=Role.ADMIN)), person.id)
    held.lands.set()
    await keeping
    await keys_one.settled()

    assert [k.response for k in await store.find_all(IdempotencyKey, ALL)] == [None]
    assert await keys_one.begin(Viewer.of(admin), "update-lena", "fp") is Refusal.WITHHELD


async def test_an_erasure_forgets_kept_answers_naming_what_the_person_was_called_before(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s27: an erasure looked for the email, name and plates the person had at its
    end, so an answer holding an email corrected since, or a removed car's former plate,
    stayed kept for a day. Their former values are read from the audit log's images of
    their account and cars (which the scrub then rewrites), across batches."""
    person, admin = user(name="Lena Example", email="lena@example.com"), user()
    car = vehicle(person, license_plate="B-LE 123")
    await put(store, person, admin, car)
    await store.write([], [
        audit(person, admin.id, action=AuditAction.UPDATE,
              before={"email": "lena.old@example.com", "name": "Lena Old"},
              after={"email": "lena.mid@example.com", "name": "Lena Example"}),
        audit(person, admin.id, action=AuditAction.UPDATE,
              before={"email": "lena.mid@example.com"}, after={"email": "lena@example.com"}),
        audit(car, person.id, action=AuditAction.UPDATE,
              before={"license_plate": "B-OLD 9"}, after={"license_plate": "B-LE 123"})])
    ctx = ServiceContext(store=store, policy=Policy(), hasher=FastHasher())
    keys = IdempotencyService(ctx)
    answers = [
        ("old", '{"data":{"updateUser":{"user":{"email":"lena.old@example.com"}}}}'),
        ("mid", '{"data":{"updateUser":{"user":{"email":"lena.mid@example.com"}}}}'),
        ("name", '{"data":{"x":{"name":"Lena Old"}}}'),
        ("plate", '{"data":{"x":{"licensePlate":"B-OLD 9"}}}'),
        ("unrelated", '{"data":{"x":{"email":"someone@example.com"}}}')]
    for key, answer in answers:
        claim = await keys.begin(Viewer.of(admin), key, "fp")
        assert isinstance(claim, Claim)
        await keys.finish(claim, answer)

    monkeypatch.setattr("domain.services.erasure.SCRUB_BATCH", 2)  # several batches
    erasure = Erasure(ctx, AccountService(ctx), RefreshTokenService(ctx), idempotency=keys)
    await erasure.erase_user(Viewer.of(user(role=Role.ADMIN)), person.id)

    left = await store.find_all(IdempotencyKey, ALL)
    assert [k.key for k in left] == ["unrelated"]


async def _keep(keys: IdempotencyService, who: Any, key: str, answer: str) -> None:
    claim = await keys.begin(Viewer.of(who), key, "fp")
    assert isinstance(claim, Claim)
    await keys.finish(claim, answer)


async def test_erasing_again_keeps_the_answers_that_show_only_an_erased_persons_placeholders(
        store: Store) -> None:
    """Review r27-idem2: erasing an erased account again looked for its current values
    too, the placeholders every erased person's records read ("Erased user", "ERASED",
    the ``.invalid`` email), and forgot an operator's kept answer (a refund's) that
    merely showed some erased driver: a retry with its key would refund again. An
    erasure never looks for the placeholders."""
    person, admin, operator = (user(name="Lena Example", email="lena@example.com"),
                               user(), user(role=Role.OPERATOR))
    car = vehicle(person, license_plate="B-LE 123")
    await put(store, person, admin, operator, car)
    ctx = ServiceContext(store=store, policy=Policy(), hasher=FastHasher())
    keys = IdempotencyService(ctx)
    erasure = Erasure(ctx, AccountService(ctx), RefreshTokenService(ctx), idempotency=keys)
    admin_viewer = Viewer.of(user(role=Role.ADMIN))
    await erasure.erase_user(admin_viewer, person.id)
    await erasure.settled()

    # After it, an operator refunds a payment of an erased driver (this one or another).
    await _keep(keys, operator, "refund-1",
                '{"data":{"refundPayment":{"payment":{"session":{"user":'
                f'{{"name":"{ERASED_NAME}","email":"{erased_email(person.id)}"}},'
                f'"vehicle":{{"licensePlate":"{ERASED_PLATE}"}}}}}},"errors":[]}}}}')
    await erasure.erase_user(admin_viewer, person.id)  # again
    await erasure.settled()

    left = await store.find_all(IdempotencyKey, ALL)
    assert [k.key for k in left] == ["refund-1"]


async def test_erasing_again_forgets_the_kept_answers_a_failed_erasure_left(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: should the tidy-up after an erasure fail, "erasing the account again ...
    finishes it too". Review r27-idem2: the audit log was scrubbed before the kept
    answers were forgotten; when forgetting them failed (a locked database, the
    background retry too), erasing again read the anonymised account and the scrubbed
    audit log, no longer knew the email, and the admin's answer holding it stayed kept
    for the day. They are forgotten first, so the audit log still tells a re-run."""
    person, admin = user(name="Lena Example", email="lena@example.com"), user()
    await put(store, person, admin)
    # The account's creation, audited as every account's is (``AccountService``).
    await store.write([], [audit(person, admin.id, action=AuditAction.CREATE,
                                 after={"email": person.email, "name": person.name})])
    ctx = ServiceContext(store=store, policy=Policy(), hasher=FastHasher())
    keys = IdempotencyService(ctx)
    await _keep(keys, admin, "email",
                '{"data":{"updateUser":{"user":{"email":"lena@example.com"}}}}')
    erasure = Erasure(ctx, AccountService(ctx), RefreshTokenService(ctx), idempotency=keys)
    monkeypatch.setattr("domain.services.erasure.SCRUB_RETRY_S", (0.0,))
    forget = keys.forget

    async def locked(*args: Any, **kwargs: Any) -> None:
        raise StoreBusy("the database is locked")

    monkeypatch.setattr(keys, "forget", locked)
    admin_viewer = Viewer.of(user(role=Role.ADMIN))
    await erasure.erase_user(admin_viewer, person.id)
    await erasure.settled()  # the background retry failed as well: "erase it again"

    monkeypatch.setattr(keys, "forget", forget)
    await erasure.erase_user(admin_viewer, person.id)
    await erasure.settled()

    left = await store.find_all(IdempotencyKey, ALL)
    assert [k.key for k in left] == []
    # And the audit log is scrubbed now.
    entries = await store.find_all(AuditEntry, Eq("entity_id", person.id))
    assert "lena@example.com" not in json.dumps([e.after for e in entries])


async def test_a_failed_announcement_skips_nothing_the_erasure_sets_off(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """Review r27-durable3: an announcement of a closed refused session that failed (a
    store read out of reach) raised past the deletion of the removed webhooks' stored
    deliveries, which a re-run could not find again (no webhook left to remove). Each
    step runs on its own: the failure is logged, and the erasure, committed, stands."""
    person = user(role=Role.ADMIN, name="Anna")
    admin = user(role=Role.ADMIN)
    st = station()
    refused = session(st, user_id=person.id, start_refused="ConcurrentTx",
                      start_time=utcnow())
    await put(store, person, admin, st, refused)
    ctx = ServiceContext(store=store, policy=Policy(), hasher=FastHasher())
    charging = ChargingService(ctx)
    erasure = Erasure(ctx, AccountService(ctx), RefreshTokenService(ctx), charging=charging)
    hooks = WebhookService(ctx, allow_private=True)
    created = (await hooks.create_webhook(
        Viewer.of(person), url="https://anna.example.com/hook",
        events=["session.ended"])).webhook
    now = utcnow()
    await hooks.hand_over([PendingDelivery(
        webhook_id=created.id, delivery_id="dlv_anna", event_type="session.ended",
        body='{"id":"evt_1","data":{"email":"anna@example.com"}}', event="{}",
        tries_made=1, due_at=now + timedelta(seconds=30), queued_at=now)])

    async def announce_closed(*args: Any) -> None:
        raise StoreUnavailable("the database is out of reach", reason="test")
    charging.announce_closed = announce_closed  # type: ignore[method-assign,assignment]
    caplog.set_level(logging.ERROR, logger="chargegraph.erasure")
    erased = await erasure.erase_user(Viewer.of(admin), person.id)

    assert erased.erased_at is not None
    assert await store.find_all(PendingDelivery, ALL) == [], \
        "the erased person's removed webhook's stored delivery was kept"
    assert [r.exc_info is not None for r in caplog.records
            if "announcing the close" in r.getMessage()] == [True]
