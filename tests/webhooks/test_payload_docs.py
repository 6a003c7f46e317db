"""The README's table of webhook payloads is what receivers get: each type's ``data``
keys, as ``event_data`` writes them for an event of that type (QA s19: the payment's
ids were named nowhere)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from chargegraph.webhooks import event_data
from domain import events as e
from domain.entities import WebhookEvent
from domain.ids import new_id
from domain.services.webhooks import webhook_event

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `([a-z_.]+)` \| (`[^|]+`) \|$")
CHARGER: dict[str, Any] = {"station_id": new_id(), "cp_id": "CP-1"}
SESSION: dict[str, Any] = {"session_id": new_id(), "transaction_id": 7, "connector_id": 1,
           "user_id": new_id(), "vehicle_id": None, "energy_wh": 1_000, "power_w": None,
           "state": "ACTIVE"}
PAYMENT: dict[str, Any] = {"station_id": new_id(), "cp_id": "", "payment_record_id": new_id(),
           "session_record_id": new_id(), "user_id": new_id(), "amount_minor": 100,
           "currency": "EUR"}
#: An event of every webhook type.
EVENTS: list[e.DomainEvent] = [
    e.SessionChanged(**CHARGER, **SESSION, change="STARTED"),
    e.SessionChanged(**CHARGER, **SESSION, change="ENDED"),
    e.ConnectorStatusChanged(**CHARGER, connector_record_id=new_id(), connector_id=1,
                             status="Available"),
    e.FaultReported(**CHARGER, connector_id=1, error_code="GroundFailure",
                    status="Faulted"),
    e.MaintenanceStatusChanged(**CHARGER, kind="FIRMWARE", status="Installed"),
    e.MaintenanceStatusChanged(**CHARGER, kind="DIAGNOSTICS", status="Uploaded"),
    e.StationConnectionChanged(**CHARGER, online=True),
    e.StationConnectionChanged(**CHARGER, online=False),
    e.ReservationChanged(**CHARGER, reservation_record_id=new_id(), reservation_id=3,
                         connector_id=1, user_id=new_id(), state="ACTIVE"),
    e.CommandCompleted(**CHARGER, command_id=new_id(), action="Reset",
                       requested_by=new_id(), status="Accepted"),
    e.PaymentChanged(**PAYMENT, status="CAPTURED", refunded_minor=0, change="CAPTURED"),
    e.PaymentChanged(**PAYMENT, status="FAILED", refunded_minor=0, change="FAILED"),
    e.PaymentChanged(**PAYMENT, status="REFUNDED", refunded_minor=100, change="REFUNDED"),
    e.PaymentChanged(**PAYMENT, status="PENDING", refunded_minor=0, change="REPRICED"),
    e.PaymentChanged(**PAYMENT, status="VOIDED", refunded_minor=0, change="VOIDED"),
]


def documented() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match is not None and match.group(1) in set(WebhookEvent):
            rows[match.group(1)] = [key.strip(" `") for key in match.group(2).split(",")]
    return rows


def test_the_readme_names_every_key_of_every_webhook_type() -> None:
    sent: dict[str, list[str]] = {}
    for event in EVENTS:
        kind = webhook_event(event)
        assert kind is not None, event
        sent[kind.value] = list(event_data(event))
    assert set(sent) == set(WebhookEvent), "an event for every type"
    assert documented() == sent


def test_the_architecture_says_a_graphql_only_instance_holds_a_lease_as_the_readme_does(
        ) -> None:
    """Review r27-durable3: the README says an instance serving GraphQL only holds a
    lease (for its webhook deliveries), which restore and demo refuse under; the
    architecture's restore and demo sections still said it holds none."""
    text = re.sub(r"\s+", " ", (README.parent / "docs" / "architecture.md").read_text())
    readme = re.sub(r"\s+", " ", README.read_text())
    assert "serving GraphQL only holds a lease too" in readme
    assert "GraphQL only holds no lease" not in text
    assert "counts for nothing else" not in text
