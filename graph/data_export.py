"""A person's copy of their data as one JSON document over HTTP (GDPR art. 15 and 20):
``GET /export/me.json`` (the signed-in person's) and ``GET /export/users/{id}.json``
(an admin's answer to a person's request; ``id`` a global or raw user id). Who may take
which, what it holds and what it leaves out: ``domain/services/personal_data.py``.

The same door as the CSV exports (``graph/csv_export.py``): the viewer from the same
bearer token, the same error bodies (``{"errors": [{field, code, message}]}``: 401 without
a valid token, 404 ``NOT_FOUND``, 403 ``FORBIDDEN``, 410 ``ERASED``, 429
``TOO_MANY_REQUESTS`` with ``Retry-After`` (too many copies of one person within the
hour: ``domain/services/personal_data.py``), 503 while the store is
down), the same streaming: each list is read and written a page at a time, so a heavy
user's years of sessions are never held whole; the export is authorized and recorded
before the answer starts, and a failure after that cuts the transfer (no end of the
chunked body: a client reports an error, and the JSON does not parse) rather than
ending as if complete.

The document: an object of the sections below, keys the API's field names (a related
record's as its field's with ``Id``, ``stationId``; a ``Money`` field's as the field, in
major units as text, ``"4.94"``, beside ``<field>Minor``, exact in minor units, and
``currency``; a webhook's ``health`` spread on it), and the few the API has not
(``EXPORT_ONLY``); ids as the API's global ids, instants RFC 3339 in UTC, energy in Wh.
``tests/e2e/test_personal_data.py`` walks a document against the schema. Each list in
creation order, oldest first (the API lists sessions newest first). Related records the
person does not see (a station since handed off the map) read null, as in GraphQL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from decimal import Decimal
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from domain import entities as d
from domain.clock import utcnow
from domain.currencies import major_units
from domain.errors import DomainError, Forbidden, NotFound, TooManyRequests
from domain.policy import Seen, Viewer
from domain.services import Services
from domain.services.personal_data import AUDIT_CAP, AuditItem, PersonalData
from domain.services.refresh_tokens import still_signs_in
from domain.wire import rfc3339
from graph.csv_export import CsvStream, ExportDoor, error_response
from graph.ids import TYPE_BY_KIND, expect_id, shown_actor, to_global_id

log = logging.getLogger("chargegraph.graph")

MEDIA_TYPE = "application/json"
#: The document's ``format``: a reader checks it before reading the rest.
FORMAT = "chargegraph.personal-data/1"

R = TypeVar("R")
Item = dict[str, Any]


def _gid(kind: str, record_id: str | None, shown: set[str] | None = None) -> str | None:
    if record_id is None or (shown is not None and record_id not in shown):
        return None
    return to_global_id(kind, record_id)


def _when(value: Any) -> str | None:
    return None if value is None else rfc3339(value)


def _major(amount_minor: int | None, currency: str | None) -> str | None:
    if amount_minor is None:
        return None
    return format(major_units(amount_minor, currency), "f")


def _text(value: Any) -> Any:
    """JSON for what ``json`` does not write itself (an audit image's odd value)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                      default=_text).encode("utf-8", errors="replace")


#: Keys the API's types have no field for, by the type their section is of: the export
#: is the whole record, whether or not the API shows it so.
EXPORT_ONLY: dict[str, set[str]] = {
    "Session": {"energyWh"},  # exact, where the API gives energyKwh
    "Refund": {"id", "paymentId"},  # listed under its payment in the API
    "Webhook": {"companyId"},
    "AuditEntry": {"aboutYou"},
    # ``User.devices`` lists the signed-in ones only; the copy every device kept.
    "Device": {"signedOutAt", "signedIn"},
}


# ------------------------------------------------------------------------ the records
def _profile(user: d.User) -> Item:
    # No password hash, no token epoch: credentials, not data about the person.
    return {"id": _gid("user", user.id), "email": user.email, "name": user.name,
            "role": user.role.name, "companyId": _gid("company", user.company_id),
            "active": user.active, "createdAt": _when(user.created_at),
            "updatedAt": _when(user.updated_at)}


def _vehicle(v: d.Vehicle) -> Item:
    return {"id": _gid("vehicle", v.id), "licensePlate": v.license_plate, "make": v.make,
            "model": v.model, "batteryKwh": v.battery_kwh, "createdAt": _when(v.created_at),
            "removedAt": _when(v.removed_at)}


def _id_tag(t: d.IdTag) -> Item:
    return {"id": _gid("id_tag", t.id), "tag": t.tag, "vehicleId": _gid("vehicle", t.vehicle_id),
            "status": t.status_at(utcnow()).name, "expiresAt": _when(t.expires_at),
            "parentIdTag": t.parent_tag, "createdAt": _when(t.created_at)}


def _session(s: d.Session, stations: set[str], vehicles: set[str]) -> Item:
    return {"id": _gid("session", s.id), "transactionId": s.transaction_id,
            "stationId": _gid("station", s.station_id, stations), "cpId": s.cp_id,
            "connectorId": s.connector_id, "vehicleId": _gid("vehicle", s.vehicle_id, vehicles),
            "idTag": s.id_tag, "state": s.state.name, "startTime": _when(s.start_time),
            "endTime": _when(s.end_time), "meterStartWh": s.meter_start_wh,
            "meterStopWh": s.meter_stop_wh, "energyWh": s.energy_wh,
            "stopReason": s.stop_reason, "costMinor": s.cost_minor,
            "cost": _major(s.cost_minor, s.currency), "currency": s.currency}


def _payment(p: d.Payment, sessions: set[str]) -> Item:
    return {"id": _gid("payment", p.id), "sessionId": _gid("session", p.session_id, sessions),
            "status": p.status.name, "amountMinor": p.amount_minor,
            "amount": _major(p.amount_minor, p.currency), "refundedMinor": p.refunded_minor,
            "refunded": _major(p.refunded_minor, p.currency),
            "refundingMinor": p.refunding_minor,
            "refunding": _major(p.refunding_minor, p.currency), "currency": p.currency,
            "provider": p.provider, "providerRef": p.provider_ref,
            "createdAt": _when(p.created_at), "updatedAt": _when(p.updated_at)}


def _refund(r: d.Refund, payments: set[str]) -> Item:
    # A refund has no global id of its own (it is listed under its payment).
    return {"id": r.id, "paymentId": _gid("payment", r.payment_id, payments),
            "amountMinor": r.amount_minor, "amount": _major(r.amount_minor, r.currency),
            "currency": r.currency, "at": _when(r.at), "provider": r.provider,
            "providerRef": r.provider_ref}


def _reservation(r: d.Reservation, stations: set[str]) -> Item:
    return {"id": _gid("reservation", r.id), "reservationId": r.reservation_id,
            "stationId": _gid("station", r.station_id, stations), "cpId": r.cp_id,
            "connectorId": r.connector_id, "idTag": r.id_tag,
            "state": r.state_at(utcnow()).name, "expiresAt": _when(r.expires_at),
            "createdAt": _when(r.created_at)}


def _webhook(w: d.Webhook) -> Item:
    # Never its signing secret (shown once, when it was made).
    return {"id": _gid("webhook", w.id), "url": w.url, "events": list(w.events),
            "description": w.description, "companyId": _gid("company", w.company_id),
            "active": w.active, "disabledReason": w.disabled_reason,
            "lastStatus": w.last_status, "lastError": w.last_error,
            "lastAttemptAt": _when(w.last_attempt_at),
            "lastSuccessAt": _when(w.last_success_at), "createdAt": _when(w.created_at)}


def _device(f: d.RefreshFamily, user: d.User) -> Item:
    # When each device signed in and last refreshed; never a token nor its hash.
    # Signed in while its refresh tokens still sign in, by the rule refreshing uses:
    # not once the account is deactivated or its tokens revoked: those ``User.devices``
    # lists, by the same id and user agent.
    return {"id": _gid("refresh_family", f.id), "userAgent": f.user_agent,
            "signedInAt": _when(f.created_at), "lastRefreshedAt": _when(f.last_refreshed_at),
            "expiresAt": _when(f.expires_at), "signedOutAt": _when(f.revoked_at),
            "signedIn": still_signs_in(f, user, utcnow())}


# ------------------------------------------------------------------------ the document
Render = Callable[[list[R]], Awaitable[list[Item]]]


async def _array(pages: AsyncIterator[list[R]], render: Render[R]
                 ) -> AsyncGenerator[bytes, None]:
    yield b"["
    first = True
    async for page in pages:
        items = await render(page)
        if items:
            yield (b"" if first else b",") + b",".join(dump(i) for i in items)
            first = False
    yield b"]"


async def document(services: Services, data: PersonalData) -> AsyncGenerator[bytes, None]:
    """The JSON document, a page of records at a time."""
    holder, user = data.holder, data.subject

    async def plain(page: list[Any], to: Callable[[Any], Item]) -> list[Item]:
        return [to(r) for r in page]

    async def shown(kind: type[d.Record], ids: Iterable[str | None]) -> set[str]:
        return await services.reads.visible_ids(holder, kind, ids)

    async def sessions(page: list[d.Session]) -> list[Item]:
        stations = await shown(d.Station, (s.station_id for s in page))
        vehicles = await shown(d.Vehicle, (s.vehicle_id for s in page))
        return [_session(s, stations, vehicles) for s in page]

    async def payments(page: list[d.Payment]) -> list[Item]:
        seen = await shown(d.Session, (p.session_id for p in page))
        return [_payment(p, seen) for p in page]

    async def refunds(page: list[d.Refund]) -> list[Item]:
        seen = await shown(d.Payment, (r.payment_id for r in page))
        return [_refund(r, seen) for r in page]

    async def reservations(page: list[d.Reservation]) -> list[Item]:
        stations = await shown(d.Station, (r.station_id for r in page))
        return [_reservation(r, stations) for r in page]

    policy = services.policy

    def audit_item(entry: d.AuditEntry, about_them: bool, seen: Seen) -> Item:
        # Images only of what was theirs, as they read them; of what they changed
        # that was someone else's, that they did it, not what it held.
        return {"id": _gid("audit_entry", entry.id), "at": _when(entry.at),
                "entity": entry.entity,
                "entityId": _gid(entry.entity, entry.entity_id)
                if entry.entity in TYPE_BY_KIND else entry.entity_id,
                "action": entry.action.name, "actor": shown_actor(entry.actor),
                "aboutYou": about_them,
                "before": policy.audit_snapshot(holder, entry, entry.before, seen)
                if about_them else None,
                "after": policy.audit_snapshot(holder, entry, entry.after, seen)
                if about_them else None}

    async def audit_items(page: list[AuditItem]) -> list[Item]:
        seen = await services.reads.audit_seen(
            holder, [item.entry for item in page if item.about_them])
        return [audit_item(item.entry, item.about_them, seen) for item in page]

    yield (b'{"format":' + dump(FORMAT) + b',"exportedAt":' + dump(_when(data.exported_at))
           + b',"exportedBy":' + dump(shown_actor(data.exported_by)) + b',"user":'
           + dump(_profile(user)))
    sections: list[tuple[str, AsyncGenerator[bytes, None]]] = [
        ("vehicles", _array(data.vehicles(), lambda p: plain(p, _vehicle))),
        ("idTags", _array(data.id_tags(), lambda p: plain(p, _id_tag))),
        ("sessions", _array(data.sessions(), sessions)),
        ("payments", _array(data.payments(), payments)),
        ("refunds", _array(data.refunds(), refunds)),
        ("reservations", _array(data.reservations(), reservations)),
        ("webhooks", _array(data.webhooks(), lambda p: plain(p, _webhook))),
        ("devices", _array(data.devices(), lambda p: plain(p, lambda f: _device(f, user)))),
    ]
    for name, chunks in sections:
        yield b',"' + name.encode() + b'":'
        async for chunk in chunks:
            yield chunk
    log_ = data.audit_log()
    yield b',"auditLog":'
    async for chunk in _array(aiter(log_), audit_items):
        yield chunk
    yield (b',"auditLogCap":' + dump(AUDIT_CAP) + b',"auditLogComplete":'
           + dump(log_.complete) + b"}")


# ------------------------------------------------------------------------ HTTP
_STATUS = {NotFound: 404, Forbidden: 403, TooManyRequests: 429}


class PersonalDataExport(ExportDoor):
    """The ASGI app behind ``/export/me.json`` and ``/export/users/{user}.json``."""

    def status_of(self, error: DomainError) -> int:
        """410 for an erased account, 404 and 403 as the API's errors say, else as the
        CSV exports answer (the store's conditions 503)."""
        if error.code == "ERASED":
            return 410
        return next((s for kind, s in _STATUS.items() if isinstance(error, kind)),
                    super().status_of(error))

    async def respond(self, request: Request) -> Response:
        if (refused := self.refused_method(request)) is not None:
            return refused
        raw = request.path_params.get("user")
        name = "me" if raw is None else "user"
        if request.query_params:
            # Named in the message as sent (the error's field would be camel-cased): a
            # token sent as ``?access_token=`` belongs in the Authorization header.
            return error_response(DomainError(
                f"this export takes no parameters (got {next(iter(request.query_params))!r})",
                code="INVALID"), 400)
        try:
            viewer = await self.signed_in(request)
            user_id = None if raw is None else expect_id(str(raw), "user", "id")
            if request.method == "HEAD":
                # Checked (the hourly limit too: refused as the GET would be), but
                # neither counted, recorded nor read: no copy was taken.
                await self.services.personal_data.check(viewer, user_id, limited=True)
                self.metrics.export_request(name, "ok")
                return Response(media_type=MEDIA_TYPE, headers=_attachment(user_id, viewer))
            data = await self.services.personal_data.open(viewer, user_id)
        except TooManyRequests as exc:
            refused = self.refusal(name, exc, request)
            refused.headers["Retry-After"] = str(exc.retry_after_s)
            return refused
        except DomainError as exc:
            return self.refusal(name, exc, request)
        except Exception:
            self.metrics.export_request(name, "error")
            raise
        return CsvStream(self._stream(name, data), _attachment(data.subject.id, viewer),
                         media_type=MEDIA_TYPE)

    async def _stream(self, name: str, data: PersonalData) -> AsyncGenerator[bytes, None]:
        outcome = "aborted"
        try:
            async for chunk in document(self.services, data):
                yield chunk
            outcome = "ok"
        except Exception as exc:
            outcome = "error"
            log.warning("personal data export of user %s cut: %r", data.subject.id, exc)
            raise
        finally:
            self.metrics.export_request(name, outcome)


def _attachment(user_id: str | None, viewer: Viewer) -> dict[str, str]:
    whose = user_id or viewer.user_id
    filename = f"personal-data-{whose}-{utcnow().strftime('%Y%m%dT%H%M%SZ')}.json"
    return {"Content-Disposition": f'attachment; filename="{filename}"'}
