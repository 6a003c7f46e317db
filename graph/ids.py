"""Relay global ids: ``base64("<TypeName>:<24-hex id>")``, opaque to clients."""

from __future__ import annotations

import base64
import binascii

from domain.errors import ValidationError
from domain.ids import is_id

#: GraphQL type name for every entity kind that is a Node.
TYPE_BY_KIND = {
    "company": "Company",
    "user": "User",
    "vehicle": "Vehicle",
    "id_tag": "IdTag",
    "station": "Station",
    "connector": "Connector",
    "session": "Session",
    "reservation": "Reservation",
    "tariff": "Tariff",
    "payment": "Payment",
    "audit_entry": "AuditEntry",
    "status_event": "StatusEvent",
    "meter_sample": "MeterSample",
    "webhook": "Webhook",
    "site": "Site",
    # Not a Node (``node(id:)`` reads null): a signed-in device is no record anyone
    # reads by the policy, only its person and admins through ``User.devices``.
    "refresh_family": "Device",
}
KIND_BY_TYPE = {v: k for k, v in TYPE_BY_KIND.items()}


def to_global_id(kind: str, record_id: str) -> str:
    return base64.b64encode(f"{TYPE_BY_KIND[kind]}:{record_id}".encode()).decode()


def from_global_id(global_id: str, field: str = "id") -> tuple[str, str]:
    """(entity kind, record id). Raises a ValidationError naming ``field`` when the id is
    not one of ours."""
    try:
        decoded = base64.b64decode(global_id.encode(), validate=True).decode()
        type_name, record_id = decoded.split(":", 1)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("not a valid id", field=field, code="INVALID_ID") from exc
    kind = KIND_BY_TYPE.get(type_name)
    if kind is None or not is_id(record_id):
        raise ValidationError("not a valid id", field=field, code="INVALID_ID")
    return kind, record_id


def expect_id(global_id: str, kind: str, field: str) -> str:
    """The record id inside ``global_id``, which must name a ``kind``. A raw 24-hex id is
    accepted too (handy in scripts and the CLI)."""
    if is_id(global_id):
        return global_id
    found_kind, record_id = from_global_id(global_id, field)
    if found_kind != kind:
        raise ValidationError(
            f"expected the id of a {TYPE_BY_KIND[kind]}", field=field, code="INVALID_ID"
        )
    return record_id


def shown_actor(actor: str) -> str:
    """Who did something (an audit stamp, an entry's actor, who asked for a command) as
    the API shows it: a user as their global id, the ``User.id`` a client compares it
    with; ``ocpp:<cpId>``, ``system`` (and ``anonymous``) as they are."""
    return to_global_id("user", actor) if is_id(actor) else actor


def stored_actor(actor: str, field: str) -> str:
    """``shown_actor``'s inverse, as a filter or a resolver takes it: ``system``,
    ``anonymous`` and ``ocpp:<cpId>`` as they are, else a user's global id (or,
    deprecated, their raw id, as the API showed actors before session 31), its record
    id. Anything else is ``INVALID_ID`` naming ``field``."""
    if actor in ("system", "anonymous") or actor.startswith("ocpp:"):
        return actor
    return expect_id(actor, "user", field)
