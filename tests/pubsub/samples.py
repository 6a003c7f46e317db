"""Events and stream helpers the pubsub suites share."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.events import (
    AccessChanged,
    ChargerCommandAnswered,
    ChargerCommandConfirmed,
    ChargerCommandRelayed,
    CommandCompleted,
    ConnectorStatusChanged,
    DomainEvent,
    EventsDropped,
    FaultReported,
    MaintenanceStatusChanged,
    PaymentChanged,
    ReservationChanged,
    SessionChanged,
    SignInsCounted,
    StationChanged,
    StationConnectionChanged,
    StationPasswordChanged,
    StationRemoved,
    StationSightChanged,
    WebhookChanged,
)

AT = datetime(2026, 3, 29, 1, 59, 59, 123456, tzinfo=UTC)
STATION = "a" * 24
COMPANY = "c" * 24
OWNER = "0" * 24

#: One of every event type, every optional field set to something, so a field the codec
#: drops or mangles shows up as an inequality.
SAMPLES: list[DomainEvent] = [
    ConnectorStatusChanged(station_id=STATION, cp_id="CP-1", company_id=COMPANY,
                           owner_id=OWNER, at=AT, connector_record_id="b" * 24,
                           connector_id=2, status="Faulted", error_code="GroundFailure",
                           info="RCD tripped – ünïcode", version=2),
    StationConnectionChanged(station_id=STATION, cp_id="CP-1", company_id=COMPANY,
                             owner_id=OWNER, at=AT, online=False, connection=42),
    SessionChanged(station_id=STATION, cp_id="CP-1", company_id=None, owner_id=OWNER, at=AT,
                   change="UPDATED", session_id="d" * 24, transaction_id=7, connector_id=1,
                   user_id="e" * 24, vehicle_id=None, energy_wh=1234, power_w=7200.5,
                   state="ACTIVE"),
    FaultReported(station_id=None, cp_id="CP-2", company_id=COMPANY, owner_id=None, at=AT,
                  connector_id=1, error_code="HighTemperature", status="Faulted",
                  info="hot", vendor_error_code="E42"),
    MaintenanceStatusChanged(station_id=STATION, cp_id="CP-1", company_id=COMPANY,
                             owner_id=OWNER, at=AT, kind="FIRMWARE", status="Installing",
                             on_map=False, requested_at=AT - timedelta(hours=1)),
    ReservationChanged(station_id=STATION, cp_id="CP-1", company_id=COMPANY, owner_id=OWNER,
                       at=AT, reservation_record_id="f" * 24, reservation_id=3,
                       connector_id=1, user_id=None, state="CANCELLED",
                       books_company_id="a" * 24, books_station_owner_id="1" * 24),
    CommandCompleted(station_id=STATION, cp_id="CP-1", company_id=COMPANY, owner_id=OWNER,
                     at=AT, command_id="9" * 24, action="GetConfiguration",
                     requested_by="e" * 24, status="Accepted", error_code=None,
                     result={"configurationKey": [{"key": "HeartbeatInterval",
                                                   "readonly": False, "value": "300"}],
                             "unknownKey": [], "$dt": "not a date", "n": 1.5}),
    PaymentChanged(station_id=STATION, cp_id="", at=AT, payment_record_id="5" * 24,
                   session_record_id="6" * 24, user_id="e" * 24, status="CAPTURED",
                   amount_minor=660, refunded_minor=100, currency="EUR",
                   books_company_id=COMPANY, books_station_owner_id=None,
                   change="REFUNDED"),
    ChargerCommandRelayed(station_id=None, cp_id="CP-1", at=AT, request_id="1" * 24,
                          origin="2" * 24, action="ReserveNow",
                          payload={"connectorId": 1, "expiryDate": "2026-03-29T02:00:00+00:00",
                                   "idTag": "TAG"}, timeout=30.0),
    ChargerCommandAnswered(station_id=None, cp_id="CP-1", at=AT, request_id="1" * 24,
                           origin="2" * 24, holder="3" * 24, stage="failed",
                           result={"status": "Accepted"},
                           error_type="ChargerTimeout", error_code="CHARGER_TIMEOUT",
                           error_message="no answer",
                           error_field="cpId", error_lost=True),
    ChargerCommandConfirmed(station_id=None, cp_id="CP-1", at=AT, request_id="1" * 24,
                            origin="2" * 24, holder="3" * 24),
    AccessChanged(station_id=None, cp_id="", at=AT, user_id="e" * 24),
    StationRemoved(station_id=STATION, cp_id="CP-9", company_id=COMPANY, owner_id=None,
                   at=AT),
    StationChanged(station_id=STATION, cp_id="CP-9", company_id=COMPANY, owner_id=OWNER,
                   at=AT),
    StationPasswordChanged(station_id=STATION, cp_id="CP-9", company_id=COMPANY,
                           owner_id=OWNER, at=AT),
    SignInsCounted(station_id=None, cp_id="", at=AT, origin="7" * 24,
                   counted=["email failed " + "8" * 32, "sign_in succeeded " + "9" * 32]),
    StationSightChanged(station_id=STATION, cp_id="CP-1", company_id=COMPANY, owner_id=None,
                        on_map=False, at=AT, joined=True, online=True,
                        was_company_id=None, was_owner_id=OWNER, was_on_map=True,
                        version=3, sight=9, connection=42),
    WebhookChanged(station_id=None, cp_id="", at=AT, webhook_id="4" * 24),
]
ALL_TOPICS = [event.topic for event in SAMPLES]


def connection(i: int, source: str = "P") -> StationConnectionChanged:
    """The ``i``-th event of publisher ``source`` (its number is in ``cp_id``)."""
    return StationConnectionChanged(station_id=STATION, cp_id=f"{source}-{i}", at=AT,
                                    online=i % 2 == 0)


def number(event: Any) -> int:
    return int(event.cp_id.rsplit("-", 1)[1])


async def take(stream: Any, n: int, timeout: float = 5) -> list[Any]:
    return [await asyncio.wait_for(anext(stream), timeout) for _ in range(n)]


async def read_until(stream: Any, last: DomainEvent, timeout: float = 10
                     ) -> list[DomainEvent | EventsDropped]:
    """Everything ``stream`` yields up to and including ``last``."""
    seen: list[Any] = []
    async with asyncio.timeout(timeout):
        async for item in stream:
            seen.append(item)
            if item == last:
                return seen
    raise AssertionError(f"the stream ended before {last}")
