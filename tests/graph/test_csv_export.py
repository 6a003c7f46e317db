"""The CSV export's cells and streaming, below HTTP: how values are written, that a list
is read one page ahead of what was sent and no further, and that a client going away is
counted as such (the end-to-end behaviour is tests/e2e/test_export.py)."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from starlette.datastructures import QueryParams

from chargegraph.metrics import MetricsRegistry
from domain import entities as d
from domain.policy import Viewer
from domain.query import ALL
from domain.services import Services
from graph import csv_export
from graph.csv_export import CsvExports, _paged, _session_rows, cell, lines, money
from graph.ids import to_global_id
from graph.query import NEWEST_SESSIONS
from tests.graph.world import World


def test_text_that_would_start_a_formula_gets_an_apostrophe() -> None:
    for text in ("=1+1", "+49 30", "-2+3", "@SUM(A1)", "\tx", "\rx"):
        assert cell(text) == "'" + text
    for text in ("CP-1", "a=b", "", "'quoted"):
        assert cell(text) == text
    # QA s22: a reader splitting on ";" (German Excel) or tabs made cells of these.
    assert cell("B;=SUM(1;2);") == "B;'=SUM(1;2);"
    assert cell("x; \"@A1") == "x; \"'@A1"
    assert cell("a\t+1") == "a\t'+1"
    assert cell("=a;-b") == "'=a;'-b"
    assert cell("a;b, c=d") == "a;b, c=d"
    # What we format ourselves is a number, never a formula: not prefixed.
    assert cell(Decimal("-1.50")) == "-1.50"
    assert cell(-3) == "-3"


def test_values_are_written_as_the_api_spells_them() -> None:
    assert cell(None) == ""
    assert cell(True) == "true"
    assert cell(d.SessionState.COMPLETED) == "COMPLETED"
    berlin = timezone(timedelta(hours=2))
    assert cell(datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=berlin)) == \
        "2024-05-01T08:00:00.123Z"
    assert cell(Decimal(10).scaleb(3)) == "10000"  # no exponent
    assert [cell(money(1234, c)) for c in ("EUR", "JPY", "KWD")] == [
        "12.34", "1234", "1.234"]
    assert money(None, "EUR") is None


def test_lines_are_rfc_4180() -> None:
    assert lines([("a,b", 'say "hi"', "two\nlines", None, 1)]) == \
        b'"a,b","say ""hi""","two\nlines",,1\r\n'
    assert lines([("ü€",)]) == "ü€\r\n".encode()


async def test_a_list_is_read_one_page_at_a_time(services: Services, world: World,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_export, "PAGE_ROWS", 1)
    reads = services.reads
    real_page = reads.page
    read = []

    async def page(*args: Any, **kwargs: Any) -> Any:
        read.append(args[4].after)
        return await real_page(*args, **kwargs)

    monkeypatch.setattr(reads, "page", page)
    admin = world.viewer("admin")
    pages = await _paged(reads, admin, d.Session, ALL, NEWEST_SESSIONS, _session_rows)
    assert len(read) == 1  # the first page: its errors come before the answer starts
    sent = [await anext(pages)]
    assert len(read) == 1  # nothing read ahead of what is being sent
    sent += [p async for p in pages]
    assert len(read) == 3 and [len(p) for p in sent] == [1, 1, 1]
    assert [row[0] for p in sent for row in p] == [
        row[0] for row in await _session_rows(reads, admin, [
            *(await real_page(admin, d.Session, ALL, NEWEST_SESSIONS,
                              csv_export.PageRequest(first=3))).items])]


async def test_a_client_going_away_ends_the_export_as_aborted(
        services: Services, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_export, "PAGE_ROWS", 1)
    metrics = MetricsRegistry()

    async def admin(authorization: str | None) -> Viewer:
        return world.viewer("admin")

    exports = CsvExports(services, admin, metrics)
    first_rows = asyncio.Event()
    sent: list[MutableMapping[str, Any]] = []
    received = []

    async def receive() -> dict[str, Any]:
        received.append(1)
        if len(received) == 1:  # the (empty) request body
            return {"type": "http.request", "body": b"", "more_body": False}
        await first_rows.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) == 3:
            first_rows.set()  # the header and one row are out: the client leaves
            await asyncio.sleep(3600)  # a client that reads no more

    scope = {"type": "http", "method": "GET", "path": "/export/sessions.csv",
             "path_params": {"name": "sessions.csv"}, "query_string": b"", "headers": [],
             "asgi": {"version": "3.0", "spec_version": "2.3"}}
    await asyncio.wait_for(exports(scope, receive, send), 10)
    assert metrics.exports == {("sessions", "aborted"): 1}
    assert not any(m.get("more_body") is False for m in sent)  # no end was sent


def test_every_export_names_its_columns_once() -> None:
    for name, export in csv_export.EXPORTS.items():
        assert len(set(export.columns)) == len(export.columns), name


def test_an_offsets_plus_left_unencoded_in_the_url_is_still_its_offset() -> None:
    """Ops QA s25: ``?from=2024-05-01T02:00:00+02:00`` (curl, a browser's address bar)
    arrives as ``…02:00:00 02:00``, a URL's ``+`` being a space: the export answered
    400, "an ISO 8601 date-time with an offset", to someone who had given one."""
    from starlette.datastructures import QueryParams

    sessions = csv_export.EXPORTS["sessions"].params
    for query in ("from=2024-05-01T02:00:00+02:00", "from=2024-05-01T02:00:00%2B02:00",
                  "from=2024-05-01T02:00+0200", "from=2024-05-01T00:00:00Z"):
        given = csv_export.Params(QueryParams(query), sessions).get("from")
        assert given == datetime(2024, 5, 1, tzinfo=UTC), query
    for query in ("from=2024-05-01T02:00:00 2", "from=2024-05-01T02:00:00 02:00 x"):
        with pytest.raises(csv_export.DomainError) as refused:
            csv_export.Params(QueryParams(query), sessions)
        assert refused.value.code == "INVALID"


def test_every_list_parameter_of_every_export_takes_commas_and_repetition_alike() -> None:
    """QA s31: a list joined by commas was one value; every list parameter of every
    export splits it, and a single-valued one keeps its comma (it is the value's)."""
    lists = [(name, param) for name, export in csv_export.EXPORTS.items()
             for param, spec in export.params.items() if spec.many]
    assert {p for _, p in lists} == {"cpIds", "stationIds"}
    assert {n for n, _ in lists} == {"sessions", "payments", "energy"}
    for name, param in lists:
        accepted = csv_export.EXPORTS[name].params
        for query in (f"{param}=A,B&{param}=C", f"{param}=A&{param}=B,C",
                      f"{param}=A&{param}=B&{param}=C"):
            got = csv_export.Params(QueryParams(query), accepted).get(param)
            assert got == ["A", "B", "C"], (name, query)
    idtag = csv_export.Params(QueryParams("idTag=A,B"), csv_export.EXPORTS["sessions"].params)
    assert idtag.get("idTag") == "A,B"
    # The deprecated cpId is one cpId: a list given it is refused, not matched as one
    # value (QA s31), as stationId=A,B is (no id holds a comma).
    for name, export in csv_export.EXPORTS.items():
        if "cpId" in export.params:
            with pytest.raises(csv_export.DomainError) as refused:
                csv_export.Params(QueryParams("cpId=A,B"), export.params)
            assert (refused.value.field, refused.value.code) == ("cpId", "INVALID"), name
            assert csv_export.Params(QueryParams("cpId=A"), export.params).get("cpId") == "A"


async def test_audit_csv_lists_entries_of_one_instant_last_written_first(
        services: Services, world: World) -> None:
    """As ``auditLog`` does (QA s30: the store's ascending ``id`` tie-breaker put a
    command's ``SENT`` above its ``ANSWERED`` of the same millisecond)."""
    at = datetime(2031, 1, 1, tzinfo=UTC)  # after everything the world wrote
    written = [d.AuditEntry(entity="station", entity_id=world.stations["A-001"].id,
                            action=d.AuditAction.UPDATE, actor="system", at=at)
               for _ in range(3)]
    await services.ctx.store.write([], written)
    params = csv_export.Params(QueryParams(), {})
    pages = await csv_export._audit(services, world.viewer("admin"), params)
    first = [row[0] for row in await anext(pages)][:3]
    assert first == [to_global_id("audit_entry", e.id) for e in reversed(written)]
