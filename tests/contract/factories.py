"""Small builders for contract tests: valid records with every required field filled and
unique fields made unique, overridable by keyword.

Times are millisecond-precise (what every backend round-trips, see ``domain.clock``) and
fixed, so expectations can be computed by hand.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from domain.entities import (
    AuditAction,
    AuditEntry,
    Company,
    ConfigurationKey,
    Connector,
    ConnectorStatus,
    IdTag,
    MeterSample,
    Payment,
    Record,
    Refund,
    Reservation,
    Role,
    Session,
    SignedEncoding,
    SignedMeterValue,
    Station,
    StatusEvent,
    Tariff,
    User,
    Vehicle,
)
from domain.ids import new_id
from domain.ports import Insert, Store
from domain.services.base import books_of
from domain.validation import name_key, plate_key

T0 = datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)

_serial = itertools.count(1)


def oid(n: int) -> str:
    """A fixed, valid ObjectId-shaped id; ``oid(1) < oid(2)`` in every backend's order."""
    return f"{n:024x}"


def at(minutes: float) -> datetime:
    """``T0`` plus ``minutes``."""
    return T0 + timedelta(minutes=minutes)


async def put(store: Store, *records: Record) -> None:
    """Insert ``records`` in one write, without audit entries."""
    await store.write([Insert(r) for r in records], [])


def ids(records: Iterable[Record | None]) -> list[str | None]:
    return [r.id if r is not None else None for r in records]


def _keyed(kw: dict[str, Any]) -> None:
    """The name's sort key, as the services write it with the name (a test may give a
    name the store refuses, ``None``: that has no key)."""
    if isinstance(kw["name"], str):
        kw.setdefault("name_key", name_key(kw["name"]))


def company(**kw: Any) -> Company:
    kw.setdefault("name", f"Company {next(_serial)}")
    _keyed(kw)
    return Company(**kw)


def user(**kw: Any) -> User:
    n = next(_serial)
    kw.setdefault("email", f"user{n}@example.com")
    kw.setdefault("name", f"User {n}")
    kw.setdefault("role", Role.DRIVER)
    _keyed(kw)
    return User(**kw)


def vehicle(owner: User, **kw: Any) -> Vehicle:
    kw.setdefault("license_plate", f"B-EV {next(_serial)}")
    kw.setdefault("plate_key", plate_key(kw["license_plate"]))
    return Vehicle(owner_id=owner.id, **kw)


def id_tag(owner: User, **kw: Any) -> IdTag:
    kw.setdefault("tag", f"TAG{next(_serial)}")
    return IdTag(user_id=owner.id, **kw)


def station(**kw: Any) -> Station:
    n = next(_serial)
    kw.setdefault("cp_id", f"CP-{n}")
    kw.setdefault("name", f"Station {n}")
    _keyed(kw)
    return Station(**kw)


def connector(st: Station, connector_id: int = 1, **kw: Any) -> Connector:
    return Connector(station_id=st.id, cp_id=st.cp_id, connector_id=connector_id, **kw)


def configuration_key(st: Station, key: str = "HeartbeatInterval", **kw: Any
                      ) -> ConfigurationKey:
    return ConfigurationKey(station_id=st.id, cp_id=st.cp_id, key=key,
                            folded_key=key.lower(), value="300", read_at=T0, **kw)


def session(st: Station, connector_id: int = 1, **kw: Any) -> Session:
    kw.setdefault("transaction_id", next(_serial))
    kw.setdefault("id_tag", "TAG")
    kw.setdefault("start_time", T0)
    kw.setdefault("meter_start_wh", 0)
    company_id, station_owner_id = books_of(st)  # as the charging service sets them
    kw.setdefault("company_id", company_id)
    kw.setdefault("station_owner_id", station_owner_id)
    return Session(station_id=st.id, cp_id=st.cp_id, connector_id=connector_id, **kw)


def meter_sample(st: Station, sess: Session | None, **kw: Any) -> MeterSample:
    kw.setdefault("at", T0)
    kw.setdefault("measurand", "Energy.Active.Import.Register")
    kw.setdefault("value", 1000.0)
    return MeterSample(session_id=sess.id if sess else None, cp_id=st.cp_id,
                       connector_id=kw.pop("connector_id", 1), **kw)


#: An OCMF record as a charger signs it (the signature is made up: nothing here checks it).
OCMF = ('OCMF|{"FV":"1.0","GI":"ABL SBC-301","GS":"808829900001","GV":"1.4p3",'
        '"PG":"T12345","MV":"Phoenix Contact","MM":"EEM-350-D-MCB","MS":"BQ27400330016",'
        '"MF":"1.0","IS":true,"IL":"VERIFIED","IF":["RFID_PLAIN","OCPP_RS_TLS"],'
        '"IT":"ISO14443","ID":"1F2D3A4F5506C7","CT":"EVSEID","CI":"DE*ABC*E123",'
        '"RD":[{"TM":"2018-07-24T13:22:04,000+0200 S","TX":"B","RV":2935.6,'
        '"RI":"1-b:1.8.0","RU":"kWh","RT":"AC","EF":"","ST":"G"},'
        '{"TM":"2018-07-24T14:02:11,250+0200 S","TX":"E","RV":2947.05,'
        '"RI":"1-b:1.8.0","RU":"kWh","RT":"AC","EF":"","ST":"G"}]}'
        '|{"SA":"ECDSA-secp256r1-SHA256","SD":"887FABF407AC82782EEFFF2220C2F856AEB0BC22364B'
        'BCC6B55761911ED651D1A922BADA88818C9671AFEE7094D7F536"}')


def signed_value(st: Station, sess: Session | None, **kw: Any) -> SignedMeterValue:
    kw.setdefault("at", T0)
    kw.setdefault("measurand", "Energy.Active.Import.Register")
    kw.setdefault("data", OCMF)
    kw.setdefault("encoding", SignedEncoding.OCMF)
    kw.setdefault("station_id", st.id)
    return SignedMeterValue(session_id=sess.id if sess else None, cp_id=st.cp_id,
                            connector_id=kw.pop("connector_id", 1),
                            data_length=len(kw["data"]), **kw)


def status_event(st: Station, **kw: Any) -> StatusEvent:
    kw.setdefault("status", ConnectorStatus.AVAILABLE)
    kw.setdefault("connector_id", 1)
    kw.setdefault("at", T0)
    # In its station's books, as a report arriving now is (``books_of``).
    kw.setdefault("company_id", st.company_id)
    kw.setdefault("station_owner_id", None if st.company_id else st.owner_id)
    return StatusEvent(station_id=st.id, cp_id=st.cp_id, **kw)


def reservation(st: Station, **kw: Any) -> Reservation:
    kw.setdefault("reservation_id", next(_serial))
    kw.setdefault("connector_id", 1)
    kw.setdefault("id_tag", "TAG")
    kw.setdefault("expires_at", at(30))
    company_id, station_owner_id = books_of(st)  # as the command service sets them
    kw.setdefault("company_id", company_id)
    kw.setdefault("station_owner_id", station_owner_id)
    return Reservation(station_id=st.id, cp_id=st.cp_id, **kw)


def tariff(**kw: Any) -> Tariff:
    kw.setdefault("price_per_kwh", Decimal("0.39"))
    kw.setdefault("currency", "EUR")
    kw.setdefault("valid_from", T0)
    return Tariff(**kw)


def payment(sess: Session, **kw: Any) -> Payment:
    kw.setdefault("amount_minor", 1234)
    kw.setdefault("currency", "EUR")
    kw.setdefault("user_id", sess.user_id)
    kw.setdefault("company_id", sess.company_id)
    kw.setdefault("station_owner_id", sess.station_owner_id)
    # Its session's plug and car, as the charging service copies them.
    kw.setdefault("cp_id", sess.cp_id)
    kw.setdefault("connector_id", sess.connector_id)
    kw.setdefault("vehicle_id", sess.vehicle_id)
    return Payment(session_id=sess.id, station_id=sess.station_id, **kw)


def refund(sess: Session, payment_id: str | None = None, **kw: Any) -> Refund:
    """Part of ``sess``'s payment paid back, in its books (as ``PaymentService`` records
    it)."""
    kw.setdefault("amount_minor", 200)
    kw.setdefault("currency", "EUR")
    kw.setdefault("at", T0)
    kw.setdefault("user_id", sess.user_id)
    kw.setdefault("vehicle_id", sess.vehicle_id)
    kw.setdefault("company_id", sess.company_id)
    kw.setdefault("station_owner_id", sess.station_owner_id)
    return Refund(payment_id=payment_id or new_id(), session_id=sess.id,
                  station_id=sess.station_id, cp_id=sess.cp_id,
                  connector_id=sess.connector_id, **kw)


def audit(entity: Record, actor: str, **kw: Any) -> AuditEntry:
    kw.setdefault("action", AuditAction.UPDATE)
    kw.setdefault("at", T0)
    return AuditEntry(entity=entity.kind, entity_id=entity.id, actor=actor, **kw)
