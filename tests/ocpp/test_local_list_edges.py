"""QA s26, local lists and card answers at the charger: a charger told the truth about a
card it lists or is asked about. Real ``ocpp`` chargers (the simulator) against a real
central system on a real SQLite file."""

from __future__ import annotations

from ocpp.v16 import call

from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central


async def test_authorize_of_a_card_charging_elsewhere_is_accepted(central: Central) -> None:
    """OCPP 1.6 (7.2, AuthorizationStatus): ConcurrentTx is "only relevant for a
    StartTransaction.req". Authorize answered it for a card charging anywhere: a charger
    that authorizes the card presented to end its own session (or a group member's, by
    parentIdTag) refused it, and the driver could not stop charging with their card.
    Authorize answers Accepted (with the card's group); the start elsewhere is still
    ConcurrentTx."""
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        _, status = await cp.start_transaction(1, "TAG-OK")
        assert status == "Accepted"
        answer = await cp.call(call.Authorize(id_tag="TAG-OK"))
        assert answer.id_tag_info["status"] == "Accepted", answer
        assert answer.id_tag_info.get("expiry_date")  # still bounded for the cache
        _, again = await cp.start_transaction(2, "TAG-OK")
        assert again == "ConcurrentTx"  # StartTransaction is where it belongs
        await cp.stop_transaction(1)
