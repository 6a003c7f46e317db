"""CSV export over HTTP for analytics clients and back offices: ``GET /export/<name>.csv``
with ``sessions``, ``payments``, ``energy`` (the ``energyTrend`` figures) and ``audit``
(the ``auditLog``).

The same door as GraphQL, not a second one: the viewer comes from the same bearer token
(``graph.app.resolve_viewer``), the filters are the GraphQL filter inputs themselves
(``SessionFilter``, ``PaymentFilter``, ``AuditFilter``, ``AnalyticsFilter``) built from
query parameters of the same names, and every read goes through the domain services
the resolvers use (``ReadService.page``, ``AnalyticsService.energy_trend``), so the
policy's scopes decide what a row is and a related record's id (a session's station,
driver, vehicle) is shown only where the GraphQL relation would not read null.

Rows are streamed: lists are read a page at a time with keyset cursors (``PAGE_ROWS``)
and each page is written out before the next is read, so an export of a million
sessions holds one page. The first page is read before the answer starts, so bad
parameters are a 400 and a store that is down a 503, not a broken 200; a failure later
can only cut the transfer (the chunked body then has no end, which clients report).

The format: RFC 4180 (comma, CRLF, fields quoted when they hold a comma, a quote or a
line break, quotes doubled), a header row of the GraphQL field names, UTF-8 without a
BOM, times ISO 8601 in UTC to the millisecond (``2024-05-01T08:00:00.000Z``), money in
major units with the currency's digits (``domain.currencies``: ``12.34`` EUR, ``1234``
JPY), energy in kWh exact to the Wh, enumerations as the API spells them, ids as global
ids. Text cells beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
get a leading apostrophe (OWASP's advice against CSV injection): a spreadsheet would
otherwise run a station id or a card tag a charger reported (``-2+3``, ``=HYPERLINK(…)``)
as a formula. Numbers and times we write ourselves are never prefixed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from domain import entities as d
from domain.clock import utcnow
from domain.currencies import major_units
from domain.errors import DomainError, StoreBusy, StoreUnavailable, Unauthenticated
from domain.policy import Viewer
from domain.ports import NO_METRICS, Metrics
from domain.query import MAX_PAGE_SIZE, Filter, PageRequest, Sort
from domain.services import Services
from domain.services.analytics import BucketBudget, EnergyBucket, GroupBy
from domain.services.reads import ReadService
from domain.timebuckets import Bucket
from domain.wire import rfc3339
from graph.analytics import AnalyticsFilter
from graph.errors import camel
from graph.filters import AuditFilter, PaymentFilter, SessionFilter
from graph.ids import TYPE_BY_KIND, shown_actor, to_global_id
from graph.query import NEWEST_AUDIT, NEWEST_SESSIONS
from graph.scalars import parse_instant

log = logging.getLogger("chargegraph.graph")

#: Rows read per store call while streaming: the API's largest page.
PAGE_ROWS = MAX_PAGE_SIZE
MEDIA_TYPE = "text/csv; charset=utf-8; header=present"
#: What a spreadsheet reads as the start of a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

Row = Sequence[object]
Pages = AsyncIterator[list[Row]]
ViewerOf = Callable[[str | None], Awaitable[Viewer]]


# ------------------------------------------------------------------------ cells and lines
def defuse(text: str) -> str:
    """``text`` as a spreadsheet shows it rather than runs it: an apostrophe before a
    formula's start, at the start of the text and after each separator a spreadsheet
    may split on instead of our comma (QA s22: German Excel opens a ``.csv`` with ``;``,
    and a tag ``B;=SUM(1;2);`` made a cell ``=SUM(1;2)``; a quote opening that cell does
    not stop it)."""
    text = _FORMULA_AFTER_SEPARATOR.sub(r"\1'\2", text)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


#: A separator other than the comma a reader may split on (``;`` in locales whose
#: decimal mark is the comma, a tab), any quotes or spaces, then a formula's start.
_FORMULA_AFTER_SEPARATOR = re.compile(r"([;\t][\s\"]*)([=+\-@])")


def cell(value: object) -> str:
    """One value as CSV text. Only text that came from someone (a tag, a cpId, an audit
    image) can start a formula; what we format (numbers, times, enums) is left as is."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):  # before str: our enums are StrEnums
        return value.name
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, Decimal):
        return format(value, "f")  # never an exponent: 1E+3 would not read as a number
    if isinstance(value, int | float):
        return str(value)
    return defuse(str(value))


def lines(rows: Iterable[Row]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180: CRLF, minimal quoting
    writer.writerows([cell(value) for value in row] for row in rows)
    # "replace": one unencodable character (a lone surrogate) must not cut the export.
    return out.getvalue().encode("utf-8", errors="replace")


def kwh(wh: int) -> Decimal:
    return Decimal(wh).scaleb(-3)


def money(amount_minor: int | None, currency: str | None) -> Decimal | None:
    return None if amount_minor is None else major_units(amount_minor, currency)


def global_id(kind: str, record_id: str | None, shown: set[str] | None = None) -> str | None:
    """The global id, or None where the viewer does not see the record (``shown``)."""
    if record_id is None or (shown is not None and record_id not in shown):
        return None
    return to_global_id(kind, record_id)


# ------------------------------------------------------------------------ parameters
def _text(name: str, raw: str) -> str:
    return raw


class ParamError(DomainError):
    """A query parameter refused; its field is the parameter as sent, never camel-cased
    as a filter input's is (brief x33-secfix: ``?foo_bar=1`` was told ``fooBar``)."""


_WHOLE = re.compile(r"[+-]?[0-9]{1,18}")


def _integer(name: str, raw: str) -> int:
    if _WHOLE.fullmatch(raw) is None:
        raise ParamError("a whole number", field=name, code="INVALID")
    return int(raw)


#: A time of day, then a space where its offset's ``+`` was: a ``+`` left unencoded in a
#: URL (``?from=2024-05-01T02:00:00+02:00`` typed in curl or a browser) reads as a space.
_PLUS_READ_AS_SPACE = re.compile(r"(.*[T ][0-9]{2}(?::?[0-9]{2}){0,2}(?:[.,][0-9]+)?) "
                                 r"([0-9]{2}(?::?[0-9]{2})?)")


def _instant(name: str, raw: str) -> datetime:
    # Nothing else ends in a space and an offset's digits: the "+" is put back (ops QA
    # s26: the 400 said to give an offset to someone who had given one).
    if (decoded := _PLUS_READ_AS_SPACE.fullmatch(raw)) is not None:
        raw = f"{decoded[1]}+{decoded[2]}"
    try:
        return parse_instant(raw)
    except ValueError:
        raise ParamError("an ISO 8601 date-time with an offset, such as "
                          "2024-05-01T00:00:00Z", field=name, code="INVALID") from None


def _enum(kind: type[Enum]) -> Callable[[str, str], Enum]:
    def parse(name: str, raw: str) -> Enum:
        member = kind.__members__.get(raw)
        if member is None:
            raise ParamError(f"one of {', '.join(kind.__members__)}", field=name,
                              code="INVALID")
        return member
    return parse


@dataclass(frozen=True, slots=True)
class Param:
    parse: Callable[[str, str], Any] = _text
    #: A list: the parameter repeated (``stationIds=A&stationIds=B``), its values joined
    #: by commas (``cpIds=A,B``), or both.
    many: bool = False


def _items(given: list[str]) -> list[str]:
    """A list parameter's values, each given one split at its commas: no list item can
    hold one (a cpId is letters, digits and ``._~-*+|@``, ``validation.cp_id``; an id is
    base64 or hex), so ``cpIds=A,B`` is two cpIds (QA s31: it was one, "A,B", that
    silently matched nothing)."""
    return [item.strip() for value in given for item in value.split(",")]


class Params:
    """The query string checked against an export's parameters: an unknown or repeated
    one is refused rather than ignored (a misspelt filter must not export everything)."""

    def __init__(self, raw: QueryParams, accepted: Mapping[str, Param]) -> None:
        self._values: dict[str, Any] = {}
        for name in dict.fromkeys(raw.keys()):
            spec = accepted.get(name)
            if spec is None:
                raise ParamError(f"not a parameter of this export; it takes "
                                  f"{', '.join(accepted)}", field=name, code="INVALID")
            given = raw.getlist(name)
            if len(given) > 1 and not spec.many:
                raise ParamError("given more than once", field=name, code="INVALID")
            if spec.many:
                given = _items(given)
            if any(not value.strip() for value in given):
                raise ParamError("give a value or leave the parameter out" + (
                    " (no empty item between commas)" if spec.many else ""), field=name,
                    code="REQUIRED")
            parsed = [spec.parse(name, value) for value in given]
            self._values[name] = parsed if spec.many else parsed[0]

    def get(self, name: str) -> Any:
        return self._values.get(name)

    def required(self, name: str) -> Any:
        value = self._values.get(name)
        if value is None:
            raise ParamError("required", field=name, code="REQUIRED")
        return value


def _one_cp_id(name: str, value: str) -> str:
    """The deprecated ``cpId``: one cpId, which holds no comma (``_items``), so one given
    is a list asked of the wrong parameter (QA s31: it silently matched nothing)."""
    if "," in value:
        raise ParamError("one cpId (no cpId holds a comma): give several as cpIds=A,B",
                          field=name, code="INVALID")
    return value


_ID = Param()
_IDS = Param(many=True)
_WHEN = Param(_instant)


# ------------------------------------------------------------------------ reading
ToRows = Callable[[ReadService, Viewer, list[Any]], Awaitable[list[Row]]]


async def _paged(reads: ReadService, viewer: Viewer, kind: type[d.Record], where: Filter,
                 sort: Sequence[Sort], to_rows: ToRows) -> Pages:
    """The list a page at a time, after each one's last cursor (keyset: rows written
    meanwhile neither repeat nor shift one out). The first page is read now, so the
    filter's and the store's errors come before the answer starts."""
    page = await reads.page(viewer, kind, where, sort, PageRequest(first=PAGE_ROWS))

    async def pages() -> Pages:
        current = page
        while True:
            yield await to_rows(reads, viewer, current.items)
            if not current.has_next or not current.cursors:
                return
            current = await reads.page(viewer, kind, where, sort,
                                       PageRequest(first=PAGE_ROWS,
                                                   after=current.cursors[-1]))

    return pages()


# ------------------------------------------------------------------------ the exports
SESSION_COLUMNS = ("id", "transactionId", "stationId", "cpId", "connectorId", "userId",
                   "vehicleId", "idTag", "state", "startTime", "endTime", "meterStartWh",
                   "meterStopWh", "energyKwh", "stopReason", "cost", "currency")


async def _session_rows(reads: ReadService, viewer: Viewer, sessions: list[d.Session]
                        ) -> list[Row]:
    stations = await reads.visible_ids(viewer, d.Station, (s.station_id for s in sessions))
    users = await reads.visible_ids(viewer, d.User, (s.user_id for s in sessions))
    vehicles = await reads.visible_ids(viewer, d.Vehicle, (s.vehicle_id for s in sessions))
    return [(global_id("session", s.id), s.transaction_id,
             global_id("station", s.station_id, stations), s.cp_id, s.connector_id,
             global_id("user", s.user_id, users),
             global_id("vehicle", s.vehicle_id, vehicles), s.id_tag, s.state, s.start_time,
             s.end_time, s.meter_start_wh, s.meter_stop_wh, kwh(s.energy_wh), s.stop_reason,
             money(s.cost_minor, s.currency), s.currency) for s in sessions]


async def _sessions(services: Services, viewer: Viewer, q: Params) -> Pages:
    where = SessionFilter(
        cp_ids=q.get("cpIds"), cp_id=q.get("cpId"), connector_id=q.get("connectorId"),
        station_id=q.get("stationId"), station_ids=q.get("stationIds"),
        user_id=q.get("userId"), vehicle_id=q.get("vehicleId"), state=q.get("state"),
        from_=q.get("from"), to=q.get("to"), id_tag=q.get("idTag")).to_domain()
    return await _paged(services.reads, viewer, d.Session, where, NEWEST_SESSIONS,
                        _session_rows)


PAYMENT_COLUMNS = ("id", "sessionId", "userId", "status", "amount", "refunded", "currency",
                   "provider", "providerRef", "createdAt", "updatedAt")


async def _payment_rows(reads: ReadService, viewer: Viewer, payments: list[d.Payment]
                        ) -> list[Row]:
    sessions = await reads.visible_ids(viewer, d.Session, (p.session_id for p in payments))
    users = await reads.visible_ids(viewer, d.User, (p.user_id for p in payments))
    return [(global_id("payment", p.id), global_id("session", p.session_id, sessions),
             global_id("user", p.user_id, users), p.status,
             money(p.amount_minor, p.currency), money(p.refunded_minor, p.currency),
             p.currency, p.provider, p.provider_ref, p.created_at, p.updated_at)
            for p in payments]


async def _payments(services: Services, viewer: Viewer, q: Params) -> Pages:
    where = PaymentFilter(
        status=q.get("status"), user_id=q.get("userId"), session_id=q.get("sessionId"),
        station_ids=q.get("stationIds"), station_id=q.get("stationId"), from_=q.get("from"),
        to=q.get("to")).to_domain()
    # The order ``payments`` lists them in by default: by id, which is creation order.
    return await _paged(services.reads, viewer, d.Payment, where, (), _payment_rows)


AUDIT_COLUMNS = ("id", "at", "entity", "entityId", "action", "actor", "before", "after")


def _image(snapshot: dict[str, Any] | None) -> str | None:
    if snapshot is None:
        return None
    return json.dumps(snapshot, ensure_ascii=False, separators=(",", ":"), default=str)


async def _audit_rows(reads: ReadService, viewer: Viewer, entries: list[d.AuditEntry]
                      ) -> list[Row]:
    policy = reads.policy  # the images as the GraphQL AuditEntry shows them
    seen = await reads.audit_seen(viewer, entries)
    return [(global_id("audit_entry", e.id), e.at, e.entity,
             to_global_id(e.entity, e.entity_id) if e.entity in TYPE_BY_KIND
             else e.entity_id, e.action, shown_actor(e.actor),
             _image(policy.audit_snapshot(viewer, e, e.before, seen)),
             _image(policy.audit_snapshot(viewer, e, e.after, seen))) for e in entries]


async def _audit(services: Services, viewer: Viewer, q: Params) -> Pages:
    where = AuditFilter(
        entity=q.get("entity"), entity_id=q.get("entityId"), actor_id=q.get("actorId"),
        action=q.get("action"), command_id=q.get("commandId"), from_=q.get("from"),
        to=q.get("to")).to_domain()
    return await _paged(services.reads, viewer, d.AuditEntry, where, NEWEST_AUDIT,
                        _audit_rows)


#: ``refunds`` and ``netRevenue`` came after the others, at the end: files read by
#: position keep reading the same columns.
ENERGY_COLUMNS = ("start", "cpId", "connectorId", "stationId", "energyKwh", "sessions",
                  "revenue", "currency", "refunds", "netRevenue")


async def _energy_rows(reads: ReadService, viewer: Viewer, buckets: list[EnergyBucket]
                       ) -> list[Row]:
    # ``EnergyBucket.station`` of the API: energy follows its sessions' books, which an
    # operator may keep for a station they no longer run (and so do not see).
    stations = await reads.visible_ids(viewer, d.Station, (b.station_id for b in buckets))
    return [(b.start, b.cp_id, b.connector_id, global_id("station", b.station_id, stations),
             kwh(b.energy_wh), b.sessions, money(b.revenue_minor, b.currency), b.currency,
             money(b.refunds_minor, b.currency), money(b.net_minor, b.currency))
            for b in buckets]


async def _energy(services: Services, viewer: Viewer, q: Params) -> Pages:
    # The window is energy_trend's own arguments, as energyTrend's from/to (the filter's
    # are deprecated); read first, as they were when the filter held them.
    start, end = q.required("from"), q.required("to")
    scope = AnalyticsFilter(
        station_ids=q.get("stationIds"), cp_ids=q.get("cpIds"),
        company_id=q.get("companyId"), site_id=q.get("siteId"), user_id=q.get("userId"),
        vehicle_id=q.get("vehicleId")).to_domain()
    group: GroupBy | None = q.get("groupBy")
    buckets = await services.analytics.energy_trend(
        viewer, scope, start, end, q.required("bucket"),
        q.get("timeZone") or "UTC", q.get("currency"), BucketBudget(), group)
    reads = services.reads

    # Computed in one go (at most ``analytics.MAX_CELLS`` rows, the API's bound);
    # written, and their stations looked up, a page at a time.
    async def pages() -> Pages:
        for at in range(0, len(buckets), PAGE_ROWS):
            yield await _energy_rows(reads, viewer, buckets[at:at + PAGE_ROWS])

    return pages()


Opener = Callable[[Services, Viewer, Params], Awaitable[Pages]]


@dataclass(frozen=True, slots=True)
class Export:
    columns: tuple[str, ...]
    params: Mapping[str, Param]
    open: Opener


EXPORTS: dict[str, Export] = {
    "sessions": Export(SESSION_COLUMNS, {
        "cpIds": _IDS, "cpId": Param(_one_cp_id), "connectorId": Param(_integer),
        "stationIds": _IDS, "stationId": _ID, "userId": _ID, "vehicleId": _ID,
        "state": Param(_enum(d.SessionState)), "from": _WHEN, "to": _WHEN,
        "idTag": Param()}, _sessions),
    "payments": Export(PAYMENT_COLUMNS, {
        "status": Param(_enum(d.PaymentStatus)), "userId": _ID, "sessionId": _ID,
        "stationIds": _IDS, "stationId": _ID, "from": _WHEN, "to": _WHEN}, _payments),
    "energy": Export(ENERGY_COLUMNS, {
        "from": _WHEN, "to": _WHEN, "bucket": Param(_enum(Bucket)), "timeZone": Param(),
        "currency": Param(), "groupBy": Param(_enum(GroupBy)), "stationIds": _IDS,
        "cpIds": _IDS, "companyId": _ID, "siteId": _ID, "userId": _ID,
        "vehicleId": _ID}, _energy),
    "audit": Export(AUDIT_COLUMNS, {
        "entity": Param(), "entityId": _ID, "actorId": _ID,
        "action": Param(_enum(d.AuditAction)), "commandId": _ID, "from": _WHEN,
        "to": _WHEN}, _audit),
}


# ------------------------------------------------------------------------ HTTP
def _field(error: DomainError) -> str | None:
    """The query parameter at fault: a filter input's field (``filter.station_ids``) as
    the parameter it came from, a refused parameter as it was sent."""
    if error.field is None or isinstance(error, ParamError):
        return error.field
    return camel(error.field.removeprefix("filter."))


def error_response(error: DomainError, status: int,
                   headers: dict[str, str] | None = None) -> Response:
    """``{errors: [{field, code, message}]}``, the API's user errors."""
    return JSONResponse({"errors": [{"field": _field(error), "code": error.code,
                                     "message": error.message}]},
                        status_code=status, headers=headers)


#: The metrics' outcome of a refusal by its status (QA s31: a 403 or 404 of a personal
#: data copy was counted ``invalid``, as a malformed request): who may not, and what is
#: not there (or no longer: an erased account's 410), are told apart from requests that
#: are wrong. Any other 4xx is ``invalid`` (400, and 401 as GraphQL counts an
#: unauthenticated request), a 5xx ``error``.
REFUSAL_OUTCOMES = {403: "forbidden", 404: "not_found", 410: "not_found", 429: "limited"}
#: The ``export`` label of a file name that is no export (``/export/nope.csv``).
UNKNOWN_EXPORT = "unknown"


def _status(error: DomainError) -> int:
    # The store's "try again" conditions are the service's, not the request's fault.
    return 503 if isinstance(error, StoreBusy | StoreUnavailable) else 400


class ExportDoor(ABC):
    """What the export apps share (the CSV exports here, the personal data copy in
    ``graph/data_export.py``): the services, who is asking, the metrics, and GET or HEAD
    only. ``respond`` answers one request."""

    def __init__(self, services: Services, viewer_of: ViewerOf,
                 metrics: Metrics = NO_METRICS) -> None:
        self.services = services
        self.viewer_of = viewer_of
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.respond(Request(scope, receive))
        await response(scope, receive, send)

    @abstractmethod
    async def respond(self, request: Request) -> Response:
        """The answer to ``request``: each door its own."""

    async def signed_in(self, request: Request) -> Viewer:
        """Who asks, by the request's bearer token; every export is of someone's records
        (the public map has none to give), so a signed-out caller is ``Unauthenticated``."""
        viewer = await self.viewer_of(request.headers.get("authorization"))
        if viewer.anonymous:
            raise Unauthenticated("sign in: send 'Authorization: Bearer <token>'")
        return viewer

    def status_of(self, error: DomainError) -> int:
        """The HTTP status a refusal other than ``Unauthenticated`` is answered with."""
        return _status(error)

    def refusal(self, name: str, error: DomainError, request: Request) -> Response:
        """The answer to ``error``, counted: 401 with its challenge for a caller not
        signed in, else ``status_of``, the store's conditions counted as errors."""
        if isinstance(error, Unauthenticated):
            self.metrics.export_request(name, "invalid")
            return error_response(error, 401, {"WWW-Authenticate": _challenge(request)})
        status = self.status_of(error)
        self.metrics.export_request(name, "error" if status >= 500
                                    else REFUSAL_OUTCOMES.get(status, "invalid"))
        return error_response(error, status)

    @staticmethod
    def refused_method(request: Request) -> Response | None:
        """The answer to a method other than GET or HEAD (an OPTIONS that is no CORS
        preflight); ``None`` for those two."""
        if request.method in ("GET", "HEAD"):
            return None
        return error_response(DomainError("use GET", code="METHOD_NOT_ALLOWED"), 405,
                              {"Allow": "GET, HEAD"})


class CsvExports(ExportDoor):
    """The ASGI app behind ``/export/{name}``: ``name`` is ``<export>.csv``."""

    async def respond(self, request: Request) -> Response:
        if (refused := self.refused_method(request)) is not None:
            return refused
        file = str(request.path_params.get("name", ""))
        name = file.removesuffix(".csv")
        export = EXPORTS.get(name) if file.endswith(".csv") else None
        if export is None:
            # Counted under one label, ``unknown``, not the name asked: a label per
            # invented name would grow the metrics unbounded (QA s32: not counted at all,
            # though README lists ``not_found``).
            self.metrics.export_request(UNKNOWN_EXPORT, "not_found")
            return error_response(DomainError(
                f"no such export; there are {', '.join(f'{n}.csv' for n in EXPORTS)}",
                code="NOT_FOUND"), 404)
        try:
            pages = await self._open(export, request)
        except DomainError as exc:
            return self.refusal(name, exc, request)
        except Exception:
            self.metrics.export_request(name, "error")
            raise  # Starlette answers 500 and logs the traceback
        filename = f"{name}-{utcnow().strftime('%Y%m%dT%H%M%SZ')}.csv"
        headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
        if request.method == "HEAD":  # checked and authorized, but no rows read for nothing
            self.metrics.export_request(name, "ok")
            return Response(media_type=MEDIA_TYPE, headers=headers)
        return CsvStream(self._stream(name, export.columns, pages), headers)

    async def _open(self, export: Export, request: Request) -> Pages:
        viewer = await self.signed_in(request)
        return await export.open(self.services, viewer,
                                 Params(request.query_params, export.params))

    async def _stream(self, name: str, columns: Sequence[str], pages: Pages
                      ) -> AsyncGenerator[bytes, None]:
        outcome, rows = "aborted", 0  # unless it ends or fails: the client went away
        try:
            yield lines([columns])
            async for page in pages:
                rows += len(page)
                yield lines(page)
            outcome = "ok"
        except Exception as exc:
            outcome = "error"
            # The status is sent: all that is left is cutting the transfer, which the
            # client sees as a body without its end.
            log.warning("CSV export %s cut after %d rows: %r", name, rows, exc)
            raise
        finally:
            self.metrics.export_request(name, outcome)


class CsvStream(StreamingResponse):
    """Closes its rows however the answer ends. A client that goes away cancels the
    sending, which leaves the rows' generator suspended mid-export: its ``finally``
    (the metrics' ``aborted``) would run only whenever the garbage collector came by."""

    def __init__(self, rows: AsyncGenerator[bytes, None], headers: Mapping[str, str],
                 media_type: str = MEDIA_TYPE) -> None:
        super().__init__(rows, media_type=media_type, headers=headers)
        self._rows = rows

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self._rows.aclose()


def _challenge(request: Request) -> str:
    if request.headers.get("authorization"):
        return 'Bearer error="invalid_token"'
    return "Bearer"
