"""sendLocalList takes a card's end as `expiresAt`, the name `IdTag.expiresAt` reads it
by, or as the deprecated `expiryDate` (OCPP's name), not both, as reserveNow takes its end
(QA s31: the list's `idTagInfo` kept OCPP's name where the rest of the API says
`expiresAt`). A real charger is sent OCPP's `expiryDate` either way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ocpp_bridge.simulator import connected
from tests.ocpp.conftest import STATION_PASSWORD, Central
from tests.ocpp.test_commands import run
from tests.ocpp.test_reserve_expires_at import faults

SELECTION = "status errors { field code }"


def card(tag: str, **info: Any) -> dict[str, Any]:
    return {"idTag": tag, "idTagInfo": {"status": "ACCEPTED", **info}}


def sent_list(version: int, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"cpId": "CP-1", "listVersion": version, "updateType": "FULL",
            "localAuthorizationList": list(entries)}


async def test_a_cards_end_is_expires_at_or_the_deprecated_expiry_date(
        central: Central) -> None:
    end = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    async with connected(central.url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        made = await run(central, "sendLocalList", sent_list(
            1, card("TAG-A", expiresAt=end.isoformat()),
            card("TAG-B", expiryDate=end.isoformat()), card("TAG-C")), SELECTION)
        assert made["status"] == "ACCEPTED" and made["errors"] == [], made
        # The charger's ocpp library validates the call against the 1.6 schema: each
        # end went as OCPP's expiryDate, a card without one with none.
        ends = {tag: info.get("expiry_date") for tag, info in cp.local_list.items()}
        assert ends.pop("TAG-C") is None
        assert {tag: datetime.fromisoformat(str(e)) for tag, e in ends.items()} == {
            "TAG-A": end, "TAG-B": end}

        # Refused before anything is sent, on the field given: both, and a time out of
        # range under either name, with the list's other faults in its order.
        far = "2300-01-01T00:00:00Z"
        at = "localAuthorizationList.{}.idTagInfo.{}".format
        for entries, expected in (
                ((card("TAG-A", expiresAt=end.isoformat(), expiryDate=end.isoformat()),),
                 [(at(0, "expiresAt"), "INVALID")]),
                ((card("TAG-A", expiresAt=far),), [(at(0, "expiresAt"), "OUT_OF_RANGE")]),
                ((card("TAG-A", expiryDate=far),), [(at(0, "expiryDate"), "OUT_OF_RANGE")]),
                ((card("TAG-A", expiryDate=far), card("T" * 21),
                  card("TAG-B", expiresAt=end.isoformat(), expiryDate=end.isoformat())),
                 [(at(0, "expiryDate"), "OUT_OF_RANGE"),
                  ("localAuthorizationList.1.idTag", "TOO_LONG"),
                  (at(2, "expiresAt"), "INVALID")])):
            refused = await run(central, "sendLocalList", sent_list(2, *entries), SELECTION)
            assert refused["status"] is None, entries
            assert faults(refused) == expected, entries
        assert [a for a, _ in cp.received if a == "SendLocalList"] == ["SendLocalList"]
