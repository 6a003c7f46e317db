"""What goes in comes out: every entity type, every field category, and reads by id."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from domain.entities import (
    ENTITY_TYPES,
    AuditAction,
    AuditEntry,
    ChargingRateUnit,
    Company,
    ConfigurationKey,
    ConnectionEvent,
    Connector,
    ConnectorInterval,
    ConnectorStatus,
    ConnectorType,
    DeliveryClaim,
    FreedIdTag,
    IdempotencyKey,
    IdempotencyState,
    IdTag,
    IdTagStatus,
    InstanceLease,
    KnownChargerAddress,
    LimitAnswer,
    LocalList,
    LocalListEntry,
    MeterSample,
    NoticeState,
    OfflineNotice,
    Payment,
    PaymentStatus,
    PendingDelivery,
    PendingStart,
    PowerType,
    Record,
    RefreshFamily,
    RefreshToken,
    Refund,
    Registration,
    Reservation,
    ReservationState,
    Role,
    Session,
    SessionState,
    SignedEncoding,
    SignedMeterValue,
    Site,
    SiteAllocation,
    Station,
    StatusEvent,
    Tariff,
    User,
    Vehicle,
    Webhook,
)
from domain.ids import new_id
from domain.ports import Store
from domain.query import ALL, NONE, Eq, Range
from tests.contract.factories import T0, at, company, oid, put, station, tariff, user

# The four audit fields with values that differ from the defaults, for every sample.
STAMPS: dict[str, Any] = {
    "created_at": datetime(2024, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    "updated_at": datetime(2025, 1, 2, 3, 4, 5, 6000, tzinfo=UTC),
    "created_by": new_id(),
    "updated_by": "ocpp:CP-1",
}

#: One record per entity type with every field set to a non-default value.
FULL: dict[type[Record], Callable[[], Record]] = {
    Company: lambda: Company(name="Stadtwerke Süd", **STAMPS),
    User: lambda: User(email="ada@example.com", name="Ada", role=Role.OPERATOR,
                       company_id=new_id(), password_hash="$argon2id$v=19$x",
                       active=False, **STAMPS),
    Vehicle: lambda: Vehicle(owner_id=new_id(), license_plate="B-AB 123", plate_key="BAB123",
                             make="Renault", model="Zoe", battery_kwh=52.5, **STAMPS),
    IdTag: lambda: IdTag(tag="04A2B3C4", user_id=new_id(), vehicle_id=new_id(),
                         status=IdTagStatus.BLOCKED, expires_at=at(60 * 24 * 365),
                         parent_tag="GROUP1", **STAMPS),
    Station: lambda: Station(cp_id="CP-FULL", name="Alexanderplatz", owner_id=new_id(),
                             company_id=new_id(), lat=52.521918, lon=13.413215,
                             address="Alexanderplatz 1, Berlin", vendor="ABB",
                             model="Terra 54", serial="SN-1", firmware="1.2.3",
                             registration=Registration.PENDING, online=True,
                             last_seen=at(1.5), auth_password_hash="hash",
                             firmware_status="Installed", diagnostics_status="Uploaded",
                             connected_instance=new_id(), site_id=new_id(),
                             firmware_status_at=at(3), diagnostics_status_at=at(4),
                             firmware_requested_at=at(2.5),
                             firmware_location="https://[hidden]@fw.example.com/1.5.bin",
                             firmware_retrieve_date=at(2.75),
                             diagnostics_requested_at=at(3.5),
                             diagnostics_file_name="diag-2.zip",
                             diagnostics_previous_uploading=True, **STAMPS),
    Connector: lambda: Connector(station_id=new_id(), cp_id="CP-FULL", connector_id=2,
                                 status=ConnectorStatus.SUSPENDED_EV, error_code="OtherError",
                                 info="lid open", status_at=at(2), type=ConnectorType.CCS2,
                                 max_kw=150.0, **STAMPS),
    Session: lambda: Session(transaction_id=987654, station_id=new_id(), cp_id="CP-FULL",
                             connector_id=2, id_tag="04A2B3C4", start_time=at(3),
                             meter_start_wh=1_000_000, user_id=new_id(), vehicle_id=new_id(),
                             end_time=at(93), meter_stop_wh=1_042_500, energy_wh=42_500,
                             power_w=11_000.5, stop_reason="EVDisconnected",
                             state=SessionState.COMPLETED, reservation_id=77,
                             cost_minor=1659, currency="EUR", idle_seconds=1234,
                             band_energy_wh=[30_000, 12_500],
                             connector_type=ConnectorType.CHADEMO, **STAMPS),
    MeterSample: lambda: MeterSample(session_id=new_id(), cp_id="CP-FULL", connector_id=2,
                                     at=at(4), measurand="Power.Active.Import", value=7.25,
                                     unit="kW", phase="L1", context="Sample.Periodic",
                                     transaction_id=987654, **STAMPS),
    SignedMeterValue: lambda: SignedMeterValue(
        session_id=new_id(), station_id=new_id(), cp_id="CP-FULL", connector_id=2,
        transaction_id=987654, at=at(4), measurand="Energy.Active.Import.Register",
        context="Transaction.End", location="Outlet", phase="L1",
        encoding=SignedEncoding.OCMF, data='OCMF|{"FV":"1.0","RD":[]}|{"SD":"3045"} ✓',
        data_length=20_000, truncated=True, **STAMPS),
    StatusEvent: lambda: StatusEvent(station_id=new_id(), cp_id="CP-FULL", connector_id=2,
                                     status=ConnectorStatus.FAULTED,
                                     error_code="GroundFailure", info="RCD tripped",
                                     at=at(5), company_id=new_id(),
                                     station_owner_id=new_id(), **STAMPS),
    ConnectionEvent: lambda: ConnectionEvent(station_id=new_id(), cp_id="CP-FULL",
                                             online=True, at=at(7), company_id=new_id(),
                                             station_owner_id=new_id(), **STAMPS),
    ConnectorInterval: lambda: ConnectorInterval(
        station_id=new_id(), cp_id="CP-FULL", connector_id=2, status=ConnectorStatus.FAULTED,
        error_code="GroundFailure", online=False, start=at(8), end=at(9),
        company_id=new_id(), station_owner_id=new_id(), **STAMPS),
    Reservation: lambda: Reservation(reservation_id=4242, station_id=new_id(),
                                     cp_id="CP-FULL", connector_id=2, id_tag="04A2B3C4",
                                     expires_at=at(45), user_id=new_id(),
                                     state=ReservationState.CANCELLED, company_id=new_id(),
                                     station_owner_id=new_id(), **STAMPS),
    Tariff: lambda: Tariff(company_id=new_id(), station_id=new_id(),
                           price_per_kwh=Decimal("0.3450"), currency="EUR",
                           price_per_minute=Decimal("0.050000"), session_fee=Decimal("1.00"),
                           tax_rate=Decimal("0.19"), valid_from=at(-60),
                           idle_price_per_minute=Decimal("0.10"), idle_grace_minutes=15,
                           idle_fee_cap=Decimal("12.50"), time_zone="Europe/Berlin",
                           energy_bands=[{"days": ["MON", "SAT"], "start": "07:00",
                                          "end": "24:00", "price_per_kwh": "0.450"}],
                           connector_type=ConnectorType.CCS2, power_type=PowerType.DC,
                           valid_until=at(-30),
                           **STAMPS),
    Payment: lambda: Payment(session_id=new_id(), station_id=new_id(), user_id=new_id(),
                             amount_minor=1659, currency="EUR", status=PaymentStatus.REFUNDED,
                             provider="stripe", provider_ref="pi_123", **STAMPS),
    Refund: lambda: Refund(payment_id=new_id(), session_id=new_id(), station_id=new_id(),
                           cp_id="CP-7", connector_id=2, user_id=new_id(),
                           vehicle_id=new_id(), amount_minor=345, currency="JPY", at=at(3),
                           provider_ref="re_123", company_id=new_id(),
                           station_owner_id=new_id(), **STAMPS),
    AuditEntry: lambda: AuditEntry(entity="station", entity_id=new_id(),
                                   action=AuditAction.DELETE, actor=new_id(), at=at(6),
                                   before={"name": "Alt", "lat": 52.5, "tags": ["a", "b"],
                                           "nested": {"x": None, "ok": True, "n": 3}},
                                   after={"name": "Neu ✓"}, **STAMPS),
    InstanceLease: lambda: InstanceLease(host="node-1:4242", started_at=at(-1),
                                         expires_at=at(0.5), **STAMPS),
    Webhook: lambda: Webhook(url="https://billing.example.com/hooks?src=cg",
                             events=["session.ended", "fault.reported"],
                             secret="whsec_abc", owner_id=new_id(), company_id=new_id(),
                             description="Billing ✓", active=False,
                             disabled_reason="disabled after 10 failures",
                             last_status=503, last_error="Service Unavailable",
                             last_attempt_at=at(10), last_success_at=at(9),
                             consecutive_failures=10, dropped_events=3, **STAMPS),
    OfflineNotice: lambda: OfflineNotice(station_id=new_id(), cp_id="CP-FULL",
                                         connection=4242, offline_at=at(15),
                                         state=NoticeState.ANNOUNCED, announced_at=at(16),
                                         company_id=new_id(), owner_id=new_id(),
                                         returned_connection=4243, **STAMPS),
    # The body byte for byte, with what JSON writes unescaped (a receiver's signature is
    # over these bytes).
    PendingDelivery: lambda: PendingDelivery(
        webhook_id=new_id(), delivery_id="dlv_" + "a" * 32, event_type="payment.captured",
        body='{"id":"evt_1","type":"payment.captured","data":{"note":"Zahlung ✓ é\\u0000"}}',
        event='{"topic":"payment","amount_minor":1234}', tries_made=3, due_at=at(20),
        queued_at=at(19), **STAMPS),
    DeliveryClaim: lambda: DeliveryClaim(claimant=new_id(), claimed_at=at(21), **STAMPS),
    PendingStart: lambda: PendingStart(station_id=new_id(), cp_id="CP-FULL", connector_id=2,
                                       id_tag="04A2B3C4", user_id=new_id(),
                                       vehicle_id=new_id(), expires_at=at(2),
                                       settled_at=at(1), **STAMPS),
    RefreshFamily: lambda: RefreshFamily(user_id=new_id(), token_epoch=3, expires_at=at(43200),
                                         last_refreshed_at=at(11), revoked_at=at(12),
                                         **STAMPS),
    RefreshToken: lambda: RefreshToken(family_id=new_id(), user_id=new_id(),
                                       token_hash="ab" * 32, expires_at=at(43200),
                                       used_at=at(13), **STAMPS),
    Site: lambda: Site(name="Depot Nord ✓", company_id=new_id(), max_power_kw=120.5,
                       min_power_kw=4.2, unit=ChargingRateUnit.A, voltage=400.0, phases=1,
                       **STAMPS),
    SiteAllocation: lambda: SiteAllocation(
        site_id=new_id(), company_id=new_id(), session_id=new_id(), station_id=new_id(),
        cp_id="CP-FULL", connector_id=2, transaction_id=987654, power_kw=11.04, bound_kw=22.0,
        limit=16.0, unit=ChargingRateUnit.A, limit_sent_at=at(14),
        answer=LimitAnswer.NOT_SUPPORTED, **STAMPS),
    LocalList: lambda: LocalList(station_id=new_id(), cp_id="CP-FULL", version=41, **STAMPS),
    LocalListEntry: lambda: LocalListEntry(station_id=new_id(), cp_id="CP-FULL",
                                           tag="04A2B3C4", status="Accepted",
                                           wanted="Blocked", card_id=new_id(),
                                           restore="Accepted", **STAMPS),
    ConfigurationKey: lambda: ConfigurationKey(
        station_id=new_id(), cp_id="CP-FULL", key="MeterValueSampleInterval",
        folded_key="metervaluesampleinterval", value="60 ✓", readonly=True, secret=True,
        read_at=at(15), changed_at=at(16), reboot_required=True, value_in_force="30 ✓",
        **STAMPS),
    # The answer kept byte for byte: a retry gets exactly what the first request got.
    IdempotencyKey: lambda: IdempotencyKey(
        user_id=new_id(), key="6f1c-✗-key", fingerprint="ef" * 32,
        state=IdempotencyState.DONE, claimant=new_id(), access="OPERATOR ✓", lease_until=at(17),
        response='{"data":{"addVehicle":{"vehicle":{"plate":"B-EV 1 ✓"},"errors":[]}}}',
        expires_at=at(1440), **STAMPS),
    KnownChargerAddress: lambda: KnownChargerAddress(
        id="ab" * 12, station_id=new_id(), pair="ab" * 16, passed_at=at(18), **STAMPS),
    FreedIdTag: lambda: FreedIdTag(tag_digest="ef" * 32, holder_id=new_id(),
                                   company_id=new_id(), freed_at=at(19), **STAMPS),
}


def test_samples_cover_every_entity_type() -> None:
    assert set(FULL) == set(ENTITY_TYPES)


@pytest.mark.parametrize("kind", ENTITY_TYPES, ids=lambda k: k.kind)
async def test_every_entity_type_round_trips_with_all_fields(store: Store,
                                                             kind: type[Record]) -> None:
    record = FULL[kind]()
    await put(store, record)

    assert await store.get_many(kind, [record.id]) == [record]
    assert await store.find_one(kind, Eq("id", record.id)) == record
    # Every non-default value survived (the samples set them all on purpose).
    for f in dataclasses.fields(kind):
        assert getattr((await store.get_many(kind, [record.id]))[0], f.name) == getattr(
            record, f.name
        ), f.name


MINIMAL: dict[type[Record], Callable[[], Record]] = {
    Company: lambda: Company(name="C"),
    User: lambda: User(email="min@example.com", name="M", role=Role.DRIVER),
    Vehicle: lambda: Vehicle(owner_id=new_id(), license_plate="MIN1", plate_key="MIN1"),
    IdTag: lambda: IdTag(tag="MIN", user_id=new_id()),
    Station: lambda: Station(cp_id="CP-MIN", name="S"),
    Connector: lambda: Connector(station_id=new_id(), cp_id="CP-MIN", connector_id=1),
    Session: lambda: Session(transaction_id=1, station_id=new_id(), cp_id="CP-MIN",
                             connector_id=1, id_tag="MIN", start_time=T0, meter_start_wh=0),
    MeterSample: lambda: MeterSample(session_id=None, cp_id="CP-MIN", connector_id=1, at=T0,
                                     measurand="Energy.Active.Import.Register", value=0.0),
    StatusEvent: lambda: StatusEvent(station_id=new_id(), cp_id="CP-MIN", connector_id=1,
                                     status=ConnectorStatus.AVAILABLE),
    ConnectionEvent: lambda: ConnectionEvent(station_id=new_id(), cp_id="CP-MIN",
                                             online=False),
    ConnectorInterval: lambda: ConnectorInterval(station_id=new_id(), cp_id="CP-MIN",
                                                 connector_id=1,
                                                 status=ConnectorStatus.AVAILABLE, start=T0),
    Reservation: lambda: Reservation(reservation_id=1, station_id=new_id(), cp_id="CP-MIN",
                                     connector_id=1, id_tag="MIN", expires_at=T0),
    Tariff: lambda: Tariff(price_per_kwh=Decimal("0"), currency="EUR"),
    Payment: lambda: Payment(session_id=new_id(), station_id=new_id(), user_id=None,
                             amount_minor=0, currency="EUR"),
    Refund: lambda: Refund(payment_id=new_id(), session_id=new_id(), station_id=new_id(),
                           cp_id="CP", connector_id=1, user_id=None, amount_minor=1,
                           currency="EUR", at=T0),
    AuditEntry: lambda: AuditEntry(entity="user", entity_id=new_id(),
                                   action=AuditAction.CREATE, actor="system"),
    Webhook: lambda: Webhook(url="https://x.example", events=["ping"], secret="s",
                             owner_id=new_id()),
    OfflineNotice: lambda: OfflineNotice(station_id=new_id(), cp_id="CP-MIN", offline_at=T0),
    PendingDelivery: lambda: PendingDelivery(webhook_id=new_id(), delivery_id="dlv_1",
                                             event_type="ping", body="{}", event="{}",
                                             due_at=T0, queued_at=T0),
    DeliveryClaim: lambda: DeliveryClaim(claimant="c", claimed_at=T0),
    RefreshFamily: lambda: RefreshFamily(user_id=new_id(), token_epoch=0, expires_at=T0),
    RefreshToken: lambda: RefreshToken(family_id=new_id(), user_id=new_id(),
                                       token_hash="cd" * 32, expires_at=T0),
    IdempotencyKey: lambda: IdempotencyKey(user_id=new_id(), key="k", fingerprint="f",
                                           state=IdempotencyState.RUNNING, claimant="c",
                                           access="", lease_until=T0, expires_at=T0),
    KnownChargerAddress: lambda: KnownChargerAddress(station_id=new_id(), pair="cd" * 16,
                                                     passed_at=T0),
    FreedIdTag: lambda: FreedIdTag(tag_digest="0f" * 32, holder_id=new_id(), freed_at=T0),
}


async def test_optional_fields_round_trip_as_none_and_defaults_survive(store: Store) -> None:
    records = [make() for make in MINIMAL.values()]
    await put(store, *records)
    for record in records:
        got = (await store.get_many(type(record), [record.id]))[0]
        assert got == record
        nullable = [f.name for f in dataclasses.fields(record) if getattr(record, f.name) is None]
        assert nullable == [f.name for f in dataclasses.fields(got) if getattr(got, f.name) is None]


async def test_datetimes_come_back_aware_utc_and_millisecond_exact(store: Store) -> None:
    berlin = timezone(timedelta(hours=2))
    local = datetime(2025, 6, 1, 14, 30, 15, 987000, tzinfo=berlin)  # 12:30:15.987 UTC
    sample = MeterSample(session_id=None, cp_id="CP", connector_id=1, at=local,
                         measurand="Voltage", value=230.0, created_at=local)
    await put(store, sample)

    got = (await store.get_many(MeterSample, [sample.id]))[0]
    assert got is not None
    assert got.at == datetime(2025, 6, 1, 12, 30, 15, 987000, tzinfo=UTC)
    assert got.at.utcoffset() == timedelta(0)
    assert got.at.microsecond == 987000
    assert got.created_at == local


async def test_decimals_keep_their_exact_digits(store: Store) -> None:
    exact = tariff(price_per_kwh=Decimal("0.3450"), price_per_minute=Decimal("0.000001"),
                   session_fee=Decimal("1234.5"), tax_rate=Decimal("0"))
    await put(store, exact)

    got = (await store.get_many(Tariff, [exact.id]))[0]
    assert got is not None
    assert isinstance(got.price_per_kwh, Decimal)
    assert str(got.price_per_kwh) == "0.3450"
    assert str(got.price_per_minute) == "0.000001"
    assert str(got.session_fee) == "1234.5"
    assert got.tax_rate == Decimal("0")


async def test_enums_come_back_as_their_enum_type(store: Store) -> None:
    st = station(registration=Registration.REJECTED)
    await put(store, st)
    got = (await store.get_many(Station, [st.id]))[0]
    assert got is not None
    assert type(got.registration) is Registration
    assert got.registration is Registration.REJECTED


async def test_json_snapshots_round_trip_before_and_after(store: Store) -> None:
    created = AuditEntry(entity="user", entity_id=new_id(), action=AuditAction.CREATE,
                         actor="system", before=None,
                         after={"email": "a@b.c", "role": "DRIVER", "active": True,
                                "battery": 52.5, "tags": [], "company": None})
    changed = AuditEntry(entity="user", entity_id=created.entity_id,
                         action=AuditAction.UPDATE, actor="system",
                         before=created.after, after={"name": "Zoë \"Z\" O'Neil"})
    await put(store, created, changed)

    got = await store.get_many(AuditEntry, [created.id, changed.id])
    assert got == [created, changed]
    assert got[0] is not None and got[0].before is None
    assert got[1] is not None and got[1].after == {"name": "Zoë \"Z\" O'Neil"}


async def test_booleans_round_trip_both_ways(store: Store) -> None:
    on, off = station(online=True), station(online=False)
    active, inactive = user(active=True), user(active=False)
    await put(store, on, off, active, inactive)

    assert [s.online for s in await store.get_many(Station, [on.id, off.id]) if s] == [True, False]
    assert [u.active for u in await store.get_many(User, [active.id, inactive.id]) if u] == [
        True, False
    ]


async def test_get_many_is_aligned_with_ids_including_missing_and_repeated(store: Store
                                                                           ) -> None:
    a, b = company(name="A"), company(name="B")
    await put(store, a, b)
    missing = new_id()

    got = await store.get_many(Company, [b.id, missing, a.id, b.id])
    assert got == [b, None, a, b]


async def test_get_many_applies_where_as_if_missing(store: Store) -> None:
    mine, other = company(name="Mine"), company(name="Other")
    await put(store, mine, other)

    assert await store.get_many(Company, [mine.id, other.id], Eq("name", "Mine")) == [mine, None]
    assert await store.get_many(Company, [mine.id, other.id], NONE) == [None, None]
    assert await store.get_many(Company, [mine.id, other.id], ALL) == [mine, other]


async def test_get_many_of_no_ids_is_empty(store: Store) -> None:
    assert await store.get_many(Company, []) == []


async def test_get_many_does_not_mix_kinds(store: Store) -> None:
    c = company()
    await put(store, c)
    assert await store.get_many(User, [c.id]) == [None]


async def test_find_one_and_count(store: Store) -> None:
    a, b, c = user(name="Dup"), user(name="Dup"), user(name="Solo")
    await put(store, a, b, c)

    assert await store.find_one(User, Eq("name", "Solo")) == c
    assert await store.find_one(User, Eq("name", "Nobody")) is None
    assert await store.find_one(User, Eq("name", "Dup")) == min(a, b, key=lambda u: u.id)
    assert await store.count(User, Eq("name", "Dup")) == 2
    assert await store.count(User, ALL) == 3
    assert await store.count(User, NONE) == 0
    assert await store.count(Company, ALL) == 0


async def test_find_one_is_the_first_match_in_id_order(store: Store) -> None:
    """Whatever order the matches were stored in (SQLite returned the first row it
    came across: the one stored first)."""
    later, first = station(id=oid(2), lat=52.4, lon=13.4), station(id=oid(1), lat=52.6, lon=13.4)
    await put(store, later, first)

    assert await store.find_one(Station, Range("lat", gte=0)) == first
