"""Who did something, wherever the API shows it, names a user by their global id, the
``me.id`` a client compares it with (QA s31: ``actor``, ``createdBy``/``updatedBy``,
``requestedBy`` and audit.csv's ``actor`` were raw record ids, while the webhooks and the
personal data export gave global ids). ``ocpp:<cpId>`` and ``system`` stay as they are.
``commandCompleted.requestedBy`` over a real charger: tests/e2e/test_live.py."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from starlette.routing import Route, Router

from domain import entities as d
from domain.services import Services
from graph.app import create_graphql_app
from graph.ids import to_global_id
from tests.graph.conftest import Api
from tests.graph.world import World

AUDIT = """query($actor: ID!) { auditLog(first: 100, filter: {actorId: $actor}) {
  nodes { entity entityId actor createdBy } } }"""


@pytest.fixture
async def audit_csv(api: Api, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """/export/{name} as the service mounts it, over the services and tokens of ``api``."""
    exports = create_graphql_app(services, api.tokens).export
    router = Router([Route("/export/{name}", exports, methods=None)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router),
                                 base_url="http://testserver") as client:
        yield client


async def _csv_actors(client: httpx.AsyncClient, token: str, actor: str
                      ) -> list[dict[str, str]]:
    answer = await client.get("/export/audit.csv", params={"actorId": actor},
                              headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    return list(csv.DictReader(io.StringIO(answer.text)))


async def test_a_users_change_names_them_by_their_me_id_everywhere(
        api: Api, world: World, audit_csv: httpx.AsyncClient) -> None:
    admin = world.users["admin"]
    token = api.token_for(admin.id)
    me = (await api.gql("{ me { id } }", as_user=admin.id))["me"]["id"]
    made = await api.gql("""mutation { createCompany(input: {name: "Gamma GmbH"}) {
      company { id createdBy updatedBy createdByUser { id } } errors { code } } }""",
                         as_user=admin.id)
    company = made["createCompany"]["company"]
    assert (company["createdBy"], company["updatedBy"], company["createdByUser"]) == (
        me, me, {"id": me})
    # The change log filtered by that id finds the entry, and shows its actor as it.
    entries = (await api.gql(AUDIT, {"actor": me}, as_user=admin.id))["auditLog"]["nodes"]
    [entry] = [e for e in entries if e["entityId"] == company["id"]]
    assert (entry["actor"], entry["createdBy"]) == (me, me)
    rows = await _csv_actors(audit_csv, token, me)
    [row] = [r for r in rows if r["entityId"] == company["id"]]
    assert row["actor"] == me
    assert {r["actor"] for r in rows} == {me}
    # The raw id, which the API showed before, still filters alike (deprecated).
    assert (await api.gql(AUDIT, {"actor": admin.id}, as_user=admin.id))["auditLog"][
        "nodes"] == entries
    assert await _csv_actors(audit_csv, token, admin.id) == rows


async def test_a_charger_and_the_service_stay_as_they_are(
        api: Api, services: Services, world: World, audit_csv: httpx.AsyncClient) -> None:
    admin = world.users["admin"]
    station = world.stations["A-001"]
    at = datetime(2031, 1, 1, tzinfo=UTC)  # after everything the world wrote
    await services.ctx.store.write([], [d.AuditEntry(
        entity="station", entity_id=station.id, action=d.AuditAction.UPDATE,
        actor="ocpp:A-001", at=at, created_by="ocpp:A-001", updated_by="ocpp:A-001"),
        d.AuditEntry(entity="station", entity_id=station.id, action=d.AuditAction.UPDATE,
                     actor="anonymous", at=at, created_by="anonymous",
                     updated_by="anonymous")])
    station_id = to_global_id("station", station.id)
    # Filtered by as they are shown (review s31: "anonymous" was INVALID_ID).
    for actor in ("ocpp:A-001", "system", "anonymous"):
        entries = (await api.gql(AUDIT, {"actor": actor}, as_user=admin.id))[
            "auditLog"]["nodes"]
        assert entries and {e["actor"] for e in entries} == {actor}
        rows = await _csv_actors(audit_csv, api.token_for(admin.id), actor)
        assert len(rows) == len(entries) and {r["actor"] for r in rows} == {actor}
    [by_charger] = (await api.gql(AUDIT, {"actor": "ocpp:A-001"}, as_user=admin.id))[
        "auditLog"]["nodes"]
    assert (by_charger["entityId"], by_charger["createdBy"]) == (station_id, "ocpp:A-001")
    # The world's companies were made by the service itself.
    stamps = await api.gql("{ companies(first: 10) { nodes { createdBy updatedBy } } }",
                           as_user=admin.id)
    assert {(c["createdBy"], c["updatedBy"]) for c in stamps["companies"]["nodes"]} == {
        ("system", "system")}
