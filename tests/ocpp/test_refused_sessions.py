"""A session whose start the CSMS refused (``start_refused``) holds neither its card nor
its car (README "Cards at the charger", ``holding_card``, ``holding_car``): every check
of "a session holding the card" goes by that rule (review r26-tx3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ocpp.v16 import call

from domain import entities as d
from domain.policy import Viewer
from ocpp_bridge.simulator import connected
from tests.ocpp import test_commands
from tests.ocpp.conftest import STATION_PASSWORD, Central

central = test_commands.central


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def _refused_left_open(central: Central) -> int:
    """TAG-OK charges on connector 1, is presented at connector 2 (told ConcurrentTx:
    the charger cuts the energy and never sends a StopTransaction for it), then the
    first session ends. Returns the refused transaction, still ACTIVE."""
    start = datetime.now(UTC).replace(microsecond=0)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.report_all()

        async def started(connector_id: int, meter: int, at: datetime) -> tuple[int, str]:
            answer = await cp.call(call.StartTransaction(
                connector_id=connector_id, id_tag="TAG-OK", meter_start=meter,
                timestamp=_stamp(at)))
            return answer.transaction_id, answer.id_tag_info["status"]

        first, told = await started(1, 5_000, start)
        assert told == "Accepted"
        refused, told = await started(2, 8_000, start + timedelta(seconds=1))
        assert told == "ConcurrentTx"
        await cp.call(call.StopTransaction(meter_stop=6_000,
                                           timestamp=_stamp(start + timedelta(seconds=2)),
                                           transaction_id=first))
    held = await central.session(refused)
    assert held is not None and held.start_refused == "ConcurrentTx"
    assert held.state is d.SessionState.ACTIVE
    return refused


async def test_a_refused_session_does_not_keep_its_card_from_being_removed(
        central: Central) -> None:
    """The driver lost the card: removeIdTag was refused IN_USE "the card is charging
    right now" for good, because of a session that holds the card for nothing (its
    StartTransaction was refused; the card's next start elsewhere is Accepted)."""
    await _refused_left_open(central)
    driver = Viewer.of(central.users["driver"])
    # The card is not held: a new start of it would be Accepted...
    info = await central.services.charging.authorize_start(
        "CP-1", "TAG-OK", (), before=None)
    assert info.status == "Accepted"
    # ...and it can be removed.
    await central.services.fleet.remove_id_tag(driver, central.tags["ok"].id)
    assert await central.services.ctx.store.get_many(d.IdTag, [central.tags["ok"].id]) == [None]
