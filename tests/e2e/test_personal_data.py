"""A person's copy of their data (``GET /export/me.json``, ``/export/users/{id}.json``) from
a real ChargeGraph over HTTP: one JSON document of what is theirs and nothing of the
other drivers of the station they share, streamed; who may take whose; each copy
recorded in the person's audit log; a store failing part way cuts the transfer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.errors import StoreUnavailable
from domain.policy import SYSTEM, Viewer
from domain.ports import Insert
from domain.query import Eq
from domain.services import personal_data
from domain.services.edits import edit
from graph.ids import to_global_id
from tests.e2e.conftest import Running, running_service
from tests.e2e.test_metrics import scrape, value


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Running]:
    """The e2e seed (Volt GmbH runs CP-1); the driver charged twice on CP-1 (with their
    car, and once with a card of no car), driver2 on the same charger, in between."""
    async with running_service(tmp_path) as running:
        charging = running.services.charging
        start = utcnow() - timedelta(hours=6)
        for n, (connector, tag, wh) in enumerate(((1, "TAG-OK", 12_345),
                                                  (2, "TAG-OTHER", 7_000),
                                                  (1, "TAG-OK", 2_000))):
            began = start + timedelta(hours=n)
            tx, _ = await charging.start_transaction("CP-1", connector, tag, 0, began)
            await charging.stop_transaction("CP-1", tx, wh, began + timedelta(minutes=30),
                                            reason="EVDisconnected")
        yield running


async def download(service: Running, path: str, token: str | None = None,
                   method: str = "GET") -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient() as client:
        return await client.request(method, f"{service.http_url}{path}", headers=headers)


def gid(kind: str, record_id: str) -> str:
    return to_global_id(kind, record_id)


async def test_a_driver_downloads_their_data_and_nothing_of_other_drivers(
        service: Running) -> None:
    c = service.central
    driver, driver2 = c.users["driver"], c.users["driver2"]
    token = await service.token("driver")
    # A car they removed since is still theirs (its sessions name it).
    old = await service.services.fleet.add_vehicle(Viewer.of(driver),
                                                   license_plate="B-OLD 9")
    await service.services.fleet.remove_vehicle(Viewer.of(driver), old.id)

    response = await download(service, "/export/me.json", token)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"].startswith(
        f'attachment; filename="personal-data-{driver.id}-')
    assert "content-length" not in response.headers  # streamed, chunked
    doc = response.json()
    assert doc["format"] == "chargegraph.personal-data/1"
    assert doc["exportedBy"] == gid("user", driver.id)
    assert doc["user"]["email"] == "driver@example.com"
    assert doc["user"]["id"] == gid("user", driver.id)
    assert {v["licensePlate"]: v["removedAt"] is not None for v in doc["vehicles"]} == {
        "B-EV 1": False, "B-OLD 9": True}
    assert sorted(t["tag"] for t in doc["idTags"]) == ["TAG-BLOCKED", "TAG-OK"]
    # Their sessions, as GraphQL lists them, with energy and cost; their payments.
    listed = await service.gql("{ sessions(first: 50) { nodes { id } } "
                               "payments(first: 50) { nodes { id } } }", token=token)
    assert sorted(s["id"] for s in doc["sessions"]) == sorted(
        n["id"] for n in listed["sessions"]["nodes"])
    assert sorted(s["energyWh"] for s in doc["sessions"]) == [2_000, 12_345]
    assert {(s["costMinor"], s["cost"], s["currency"]) for s in doc["sessions"]} == {
        (494, "4.94", "EUR"), (80, "0.80", "EUR")}
    assert sorted(p["id"] for p in doc["payments"]) == sorted(
        n["id"] for n in listed["payments"]["nodes"])
    # The device they signed in on, no token: as ``me { devices }`` lists it.
    assert len(doc["devices"]) == 1 and doc["devices"][0]["signedIn"] is True
    mine = (await service.gql("{ me { devices { id userAgent } } }", token=token)
            )["me"]["devices"]
    assert [{k: d[k] for k in ("id", "userAgent")} for d in doc["devices"]] == mine
    # Newest first: this export, recorded before the copy was written.
    assert doc["auditLog"][0]["action"] == "EXPORT"
    assert doc["auditLog"][0]["actor"] == gid("user", driver.id)
    ats = [e["at"] for e in doc["auditLog"]]
    assert ats == sorted(ats, reverse=True)
    assert doc["auditLogComplete"] is True and doc["auditLogCap"] == 10_000
    # Nothing of driver2's, who charged on the same charger; no credentials.
    text = response.text
    for other in (driver2.id, gid("user", driver2.id), "TAG-OTHER", "driver2@example.com",
                  "password_hash", "token_hash", "$argon2"):
        assert other not in text, other
    assert driver.password_hash not in text


async def test_webhooks_are_exported_without_their_secret(service: Running) -> None:
    op = service.central.users["op"]
    hook = d.Webhook(url="https://billing.example.com/hook", events=["session.ended"],
                     secret="whsec-never-shown", owner_id=op.id, company_id=op.company_id)
    await service.services.ctx.store.write([Insert(hook)], [])
    response = await download(service, "/export/me.json", await service.token("op"))
    doc = response.json()
    assert [(w["id"], w["url"]) for w in doc["webhooks"]] == [
        (gid("webhook", hook.id), "https://billing.example.com/hook")]
    assert "whsec-never-shown" not in response.text
    # An operator's own copy: their charging, not their company's books.
    assert doc["sessions"] == [] and doc["payments"] == []


async def test_who_may_download_whose_copy(service: Running) -> None:
    c = service.central
    driver = c.users["driver"]
    tokens = {name: await service.token(name)
              for name in ("admin", "op", "op_other", "driver2")}
    path = f"/export/users/{gid('user', driver.id)}.json"

    by_admin = await download(service, path, tokens["admin"])
    assert by_admin.status_code == 200, by_admin.text
    doc = by_admin.json()
    assert doc["user"]["email"] == "driver@example.com"
    assert doc["exportedBy"] == gid("user", c.users["admin"].id)
    assert (await download(service, f"/export/users/{driver.id}.json",
                           tokens["admin"])).status_code == 200  # a raw id too
    # The operator of the charger the driver used sees them by name: refused, not hidden.
    assert (await download(service, path, tokens["op"])).json()["errors"][0]["code"] \
        == "FORBIDDEN"
    for name in ("op_other", "driver2"):  # cannot see the driver: as if missing
        refused = await download(service, path, tokens[name])
        assert (refused.status_code, refused.json()["errors"][0]["code"]) == (
            404, "NOT_FOUND")
    anonymous = await download(service, "/export/me.json")
    assert anonymous.status_code == 401
    assert (await download(service, "/export/me.json", "not-a-token")).status_code == 401
    bad = await download(service, "/export/users/nope.json", tokens["admin"])
    assert (bad.status_code, bad.json()["errors"][0]["code"]) == (400, "INVALID_ID")
    assert (await download(service, "/export/me.json?x=1", tokens["admin"])
            ).status_code == 400
    # HEAD checks, and neither reads nor records.
    head = await download(service, path, tokens["admin"], method="HEAD")
    assert (head.status_code, head.content) == (200, b"")
    # QA s31: the 403 and the 404s were counted as invalid requests.
    samples, _ = await scrape(service)
    counted = {(export, outcome): value(samples, "chargegraph_export_requests_total",
                                        export=export, outcome=outcome)
               for export, outcome in (("user", "forbidden"), ("user", "not_found"),
                                       ("user", "invalid"), ("me", "invalid"))}
    assert counted == {("user", "forbidden"): 1, ("user", "not_found"): 2,
                       ("user", "invalid"): 1, ("me", "invalid"): 2}

    # The driver reads in their audit log who took a copy of their data.
    seen = await service.gql(
        '{ auditLog(first: 10, filter: {action: EXPORT}) { nodes { actor entityId } } }',
        token=await service.token("driver"))
    assert seen["auditLog"]["nodes"] == [
        {"actor": gid("user", c.users["admin"].id), "entityId": gid("user", driver.id)}] * 2


async def test_an_erased_account_is_refused(service: Running) -> None:
    c = service.central
    driver2 = c.users["driver2"]
    await service.services.erasure.erase_user(Viewer.of(c.users["admin"]), driver2.id)
    refused = await download(service, f"/export/users/{driver2.id}.json",
                             await service.token("admin"))
    assert refused.status_code == 410
    assert refused.json()["errors"][0]["code"] == "ERASED"
    samples, _ = await scrape(service)  # not there any more: as a 404
    assert value(samples, "chargegraph_export_requests_total", export="user",
                 outcome="not_found") == 1


async def test_a_store_failure_is_503_before_and_a_cut_transfer_after(
        service: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(personal_data, "READ_ROWS", 1)
    store = service.services.ctx.store
    real = store.find_all
    failing = [False]

    async def find_all(kind: type[d.Record], *args: Any, **kwargs: Any) -> Any:
        if failing[0] and kind is d.Session:
            raise StoreUnavailable("the database cannot be read now", reason="gone")
        return await real(kind, *args, **kwargs)

    monkeypatch.setattr(store, "find_all", find_all)
    token = await service.token("driver")
    real_one = store.find_one

    async def find_one(kind: type[d.Record], *args: Any, **kwargs: Any) -> Any:
        if failing[0] and kind is d.User:
            raise StoreUnavailable("the database cannot be read now", reason="gone")
        return await real_one(kind, *args, **kwargs)

    monkeypatch.setattr(store, "find_one", find_one)
    failing[0] = True
    before = await download(service, "/export/me.json", token)
    assert (before.status_code, before.json()["errors"][0]["code"]) == (
        503, "STORE_UNAVAILABLE")
    monkeypatch.setattr(store, "find_one", real_one)  # opens; sessions fail mid-way
    async with httpx.AsyncClient() as client, client.stream(
            "GET", f"{service.http_url}/export/me.json",
            headers={"authorization": f"Bearer {token}"}) as streamed:
        assert streamed.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            await streamed.aread()  # no end of the chunked body: the client knows
    samples, _ = await scrape(service)
    assert value(samples, "chargegraph_export_requests_total", export="me",
                 outcome="error") == 2


async def test_what_they_did_to_others_records_is_listed_without_those_records(
        service: Running) -> None:
    """An admin's own copy lists their change of driver2's card (that they did it, and
    when), but not the card's images: those are driver2's data, not the admin's."""
    c = service.central
    admin = c.users["admin"]
    await service.services.fleet.update_id_tag(Viewer.of(admin), c.tags["other"].id,
                                               status=d.IdTagStatus.BLOCKED)
    response = await download(service, "/export/me.json", await service.token("admin"))
    doc = response.json()
    [done] = [e for e in doc["auditLog"] if e["entity"] == "id_tag"]
    assert (done["entityId"], done["action"], done["actor"], done["aboutYou"],
            done["before"], done["after"]) == (gid("id_tag", c.tags["other"].id),
                                               "UPDATE", gid("user", admin.id), False, None,
                                               None)
    assert "TAG-OTHER" not in response.text
    assert c.users["driver2"].id not in response.text


async def test_a_demoted_admin_does_not_keep_the_cards_they_once_managed(
        service: Running) -> None:
    """Demoted to driver, an admin no longer reads driver2's card's history through
    ``auditLog``; their copy of their data does not list their old change of it either
    (which card, when): what they made is listed as their ``auditLog`` reads it now."""
    c = service.central
    admin, card = c.users["admin"], c.tags["other"]  # driver2's card
    await service.services.fleet.update_id_tag(Viewer.of(admin), card.id,
                                               status=d.IdTagStatus.BLOCKED)
    await service.services.ctx.store.write([edit(admin, SYSTEM, role=d.Role.DRIVER)], [])
    token = await service.token("admin")
    listed = await service.gql('{ auditLog(first: 100) { nodes { entityId } } }',
                               token=token)
    assert gid("id_tag", card.id) not in str(listed)  # the API's read
    response = await download(service, "/export/me.json", token)
    assert response.status_code == 200
    assert gid("id_tag", card.id) not in response.text
    # What is theirs is still there: the entry of this very export, about them.
    [export] = [e for e in response.json()["auditLog"] if e["action"] == "EXPORT"]
    assert (export["entityId"], export["aboutYou"]) == (gid("user", admin.id), True)


async def test_a_deactivated_accounts_devices_are_not_signed_in(service: Running) -> None:
    """An account deactivated by a build before token epochs kept its epoch: its
    devices' refresh tokens no longer sign in (``active`` is checked too), and the copy
    an admin downloads for the person says so."""
    c = service.central
    driver = c.users["driver"]
    await service.token("driver")  # a device signed in
    await service.services.ctx.store.write([edit(driver, SYSTEM, active=False)], [])
    response = await download(service, f"/export/users/{gid('user', driver.id)}.json",
                              await service.token("admin"))
    assert response.status_code == 200, response.text
    [device] = response.json()["devices"]
    assert (device["signedIn"], device["signedOutAt"]) == (False, None)


async def test_copies_of_one_person_are_limited_per_hour_with_retry_after(
        service: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA s26: nothing limited the copies, each reading all of a person's records and
    writing an EXPORT entry to their audit log: a script looping on /export/me.json
    loaded the database and buried the log. Ten copies of one person by one taker an
    hour (asked all at once too), then 429 with Retry-After; HEAD is not counted, another
    taker (an admin answering the person) has their own ten, and a store that refused
    the audit entry took no copy."""
    c, exports = service.central, service.services.personal_data.exports
    driver = c.users["driver"]
    token, admin = await service.token("driver"), await service.token("admin")
    for _ in range(3):
        assert (await download(service, "/export/me.json", token, "HEAD")).status_code == 200
    store = service.services.ctx.store
    real_write = store.write

    async def refusing(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("the disk is full", reason="full")

    monkeypatch.setattr(store, "write", refusing)
    assert (await download(service, "/export/me.json", token)).status_code == 503
    monkeypatch.setattr(store, "write", real_write)
    for _ in range(3):
        assert (await download(service, "/export/me.json", token)).status_code == 200
    at_once = await asyncio.gather(*(download(service, "/export/me.json", token)
                                     for _ in range(9)))
    assert sorted(r.status_code for r in at_once) == [200] * 7 + [429] * 2
    refused = await download(service, "/export/me.json", token)
    assert refused.status_code == 429
    assert 3500 < int(refused.headers["Retry-After"]) <= 3600
    assert refused.json()["errors"][0]["code"] == "TOO_MANY_REQUESTS"
    samples, _ = await scrape(service)
    assert value(samples, "chargegraph_export_requests_total", export="me",
                 outcome="limited") == 3
    entries = await store.find_all(d.AuditEntry, Eq("action", d.AuditAction.EXPORT))
    assert len(entries) == 10
    assert (await download(service, f"/export/users/{driver.id}.json", admin)
            ).status_code == 200
    # The hour over (the ten copies out of it), the driver may take a copy again.
    later = exports.clock() + personal_data.EXPORT_WINDOW
    monkeypatch.setattr(exports, "clock", lambda: later)
    assert (await download(service, "/export/me.json", token)).status_code == 200


async def test_head_is_refused_as_the_get_would_be_once_the_limit_is_reached(
        service: Running) -> None:
    """Review s26: HEAD "checks" an export (README), but once GET was refused 429 it
    still said 200: a client checking before downloading was told to go ahead. It is
    refused alike, with Retry-After, and still not counted."""
    token = await service.token("driver")
    for _ in range(personal_data.EXPORTS_PER_WINDOW):
        assert (await download(service, "/export/me.json", token)).status_code == 200
    assert (await download(service, "/export/me.json", token)).status_code == 429
    head = await download(service, "/export/me.json", token, "HEAD")
    assert head.status_code == 429, head.status_code
    assert 3500 < int(head.headers["Retry-After"]) <= 3600


async def test_ten_copies_an_hour_is_a_rolling_hour(
        service: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s26: one copy at 08:00 and nine at 08:59 locked the taker out until 09:59
    (an hour from the tenth), though at 09:01 the hour before held nine copies. Ten in
    any hour: at 09:01 one more is taken; the next waits until the 08:59 copies are an
    hour old, as Retry-After says."""
    exports = service.services.personal_data.exports
    start = exports.clock()
    now = [start]
    monkeypatch.setattr(exports, "clock", lambda: now[0])
    token = await service.token("driver")
    assert (await download(service, "/export/me.json", token)).status_code == 200
    now[0] = start + timedelta(minutes=59)
    for _ in range(9):
        assert (await download(service, "/export/me.json", token)).status_code == 200
    refused = await download(service, "/export/me.json", token)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) == 60  # the 08:00 copy leaves at 09:00
    now[0] = start + timedelta(minutes=61)
    later = await download(service, "/export/me.json", token)
    assert later.status_code == 200, (later.status_code, later.headers.get("Retry-After"))
    refused = await download(service, "/export/me.json", token)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) == 58 * 60  # the 08:59 copies: at 09:59


#: The type of each section's items (``user`` is one).
SECTION_TYPES = {"user": "User", "vehicles": "Vehicle", "idTags": "IdTag", "devices": "Device",
                 "sessions": "Session", "payments": "Payment", "refunds": "Refund",
                 "reservations": "Reservation", "webhooks": "Webhook",
                 "auditLog": "AuditEntry"}


def _api_name(key: str, fields: dict[str, Any]) -> bool:
    """Whether ``key`` is the API's name of a field of a type of ``fields``: the field, a
    related record's by id (``stationId``), a Money field's minor units
    (``costMinor``) or currency."""
    from graphql import get_named_type
    named = {name: get_named_type(field.type).name for name, field in fields.items()}
    if key in named:
        return True
    if key.endswith("Id") and named.get(key[:-2]) not in (None, "ID", "String"):
        return True
    if key.endswith("Minor") and named.get(key[:-5]) == "Money":
        return True
    return key == "currency" and "Money" in named.values()


async def test_the_export_s_keys_are_the_api_s_names(service: Running) -> None:
    """QA s32: ``idTags[].parentTag``, where the API says ``parentIdTag``, though the
    README says the export's keys are the API's; and a payment without ``refunding``,
    which the API gives a driver. Every key of every item is checked against the
    schema's fields of its type; a key the API has not is one of ``EXPORT_ONLY``. Every
    section is walked (review r32-e: the driver had no reservation, and a driver's copy
    holds no webhooks, as drivers read none: ``webhook_scope``): a reservation of the
    driver's is seeded, and the webhooks walked in an operator's copy."""
    from graphql import build_schema

    from graph.data_export import EXPORT_ONLY
    schema = build_schema((Path(__file__).parents[2] / "schema.graphql").read_text())
    driver = service.central.users["driver"]
    admin = Viewer.of(service.central.users["admin"])
    payments = service.services.payments
    paid = await service.services.ctx.store.find_all(d.Payment, Eq("user_id", driver.id))
    charged = next(p for p in paid if p.amount_minor)
    await payments.capture(admin, charged.id)
    await payments.refund(admin, charged.id, Decimal("0.10"))  # a refund to list too
    station = service.central.stations["CP-1"]
    op = service.central.users["op"]
    await service.services.ctx.store.write([
        Insert(d.Reservation(
            reservation_id=1, station_id=station.id, cp_id="CP-1", connector_id=1,
            id_tag="TAG-OK", expires_at=utcnow() + timedelta(hours=1), user_id=driver.id,
            company_id=station.company_id, state=d.ReservationState.CANCELLED)),
        Insert(d.Webhook(url="https://billing.example.com/hook", events=["session.ended"],
                         secret="whsec-x", owner_id=op.id, company_id=op.company_id))], [])
    doc = (await download(service, "/export/me.json", await service.token("driver"))
           ).json()
    ops = (await download(service, "/export/me.json", await service.token("op"))).json()
    walked = set()
    for section, type_name in SECTION_TYPES.items():
        items = [item for copy in (doc, ops) for item in (
            copy[section] if isinstance(copy[section], list) else [copy[section]])]
        fields = dict(schema.get_type(type_name).fields)  # type: ignore[union-attr]
        if type_name == "Webhook":  # its health spread on it
            fields |= schema.get_type("WebhookHealth").fields  # type: ignore[union-attr]
        for item in items:
            walked.add(section)
            strange = {k for k in item if not _api_name(k, fields)} \
                - EXPORT_ONLY.get(type_name, set())
            assert not strange, (section, strange)
    assert walked == set(SECTION_TYPES), walked
    [tag] = [t for t in doc["idTags"] if t["tag"] == "TAG-OK"]
    assert "parentIdTag" in tag
    [exported] = [p for p in doc["payments"] if p["id"] == gid("payment", charged.id)]
    assert (exported["refunded"], exported["refunding"], exported["refundingMinor"]) == (
        "0.10", "0.00", 0)
    # A refund's provider with its reference (review r32-b: the reference alone, which
    # says nothing without whose it is).
    assert [(r["provider"], r["providerRef"]) for r in doc["refunds"]
            if r["paymentId"] == gid("payment", charged.id)] == [
        (refunded.provider, refunded.provider_ref)
        for refunded in await service.services.ctx.store.find_all(
            d.Refund, Eq("payment_id", charged.id))]
    # Each key the API lacks is one: none listed that the API has.
    for type_name, keys in EXPORT_ONLY.items():
        fields = schema.get_type(type_name).fields  # type: ignore[union-attr]
        assert not {k for k in keys if _api_name(k, fields)}, type_name
