"""Node objects are built without the dataclass ``__init__`` (``graph/nodes.py: _node``):
each ``wrap`` must set exactly the fields of its type, as ``__init__`` would, for every
viewer (fields a viewer may not see are present and null)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from domain import entities as d
from domain.ids import new_id
from domain.policy import SYSTEM, Policy, Viewer
from domain.services import ServiceContext, Services
from graph import TokenService
from graph.context import GraphContext
from graph.nodes import NODE_BY_KIND
from store.sqlite import SqliteStore
from tests.contract import factories as f
from tests.graph.conftest import SECRET
from tests.helpers import FastHasher


def one_record_of_each_kind() -> dict[str, d.Record]:
    owner = f.user()
    station = f.station(owner_id=owner.id, lat=52.5, lon=13.4, address="Street 1")
    session = f.session(station, user_id=owner.id)
    return {
        "company": f.company(),
        "user": owner,
        "vehicle": f.vehicle(owner),
        "id_tag": f.id_tag(owner),
        "station": station,
        "connector": f.connector(station),
        "session": session,
        "reservation": f.reservation(station),
        "tariff": f.tariff(station_id=station.id),
        "payment": f.payment(session),
        "audit_entry": f.audit(station, "system"),
        "status_event": f.status_event(station),
        "webhook": d.Webhook(url="https://hooks.example.com", events=["session.ended"],
                             secret="whsec_x", owner_id=owner.id),
        "site": d.Site(name="Depot", company_id=new_id(), max_power_kw=50),
    }


RECORDS = one_record_of_each_kind()
STRANGER = f.user(role=d.Role.DRIVER)


def context(viewer: Viewer, tmp_path: Path) -> GraphContext:
    services = Services(ServiceContext(store=SqliteStore(str(tmp_path / "unused.db")),
                                       policy=Policy(), hasher=FastHasher()))
    return GraphContext.build(services, TokenService(SECRET, timedelta(hours=1)), viewer)


def test_every_node_type_is_covered() -> None:
    assert set(RECORDS) == set(NODE_BY_KIND)


@pytest.mark.parametrize("kind", sorted(NODE_BY_KIND))
@pytest.mark.parametrize("who", ["system", "stranger"])
def test_wrap_sets_exactly_the_dataclass_fields(kind: str, who: str, tmp_path: Path) -> None:
    viewer = SYSTEM if who == "system" else Viewer.of(STRANGER)
    node_type: Any = NODE_BY_KIND[kind]
    node = node_type.wrap(RECORDS[kind], context(viewer, tmp_path))
    fields = {field.name for field in dataclasses.fields(node_type) if field.init}
    assert set(vars(node)) == fields
    # The same object ``__init__`` makes from those values.
    assert node_type(**vars(node)) == node
    assert type(node) is node_type


@pytest.mark.parametrize("answer", [None, d.LimitAnswer.ACCEPTED])
def test_site_allocation_wrap_sets_exactly_its_fields(answer: d.LimitAnswer | None,
                                                      tmp_path: Path) -> None:
    from graph.sites import SiteAllocation

    record = d.SiteAllocation(site_id=new_id(), company_id=new_id(), session_id=new_id(),
                              station_id=new_id(), cp_id="CP-1", connector_id=1,
                              transaction_id=7, power_kw=11, bound_kw=22, answer=answer)
    node = SiteAllocation.wrap(record, context(SYSTEM, tmp_path))
    fields = {field.name for field in dataclasses.fields(SiteAllocation) if field.init}
    assert set(vars(node)) == fields
    assert SiteAllocation(**vars(node)) == node


def test_refund_wrap_sets_exactly_its_fields(tmp_path: Path) -> None:
    """Its fields only: who sees a refund is its payment's business (test_refund_ledger)."""
    from graph.nodes import Refund

    session = RECORDS["session"]
    assert isinstance(session, d.Session)
    record = f.refund(session, RECORDS["payment"].id, provider_ref="manual:x")
    node = Refund.wrap(record, context(SYSTEM, tmp_path))
    fields = {field.name for field in dataclasses.fields(Refund) if field.init}
    assert set(vars(node)) == fields
    assert Refund(**vars(node)) == node
