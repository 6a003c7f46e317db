"""What a charger may send before its station is Accepted.

OCPP 1.6 (4.2, BootNotification) has a Pending charge point send nothing but its boot
and what the central system asks for, and a Rejected one nothing but its next boot; the
1.6 security whitepaper has the central system answer anything else with a CALLERROR
SecurityError. Without it a charger nobody accepted (a Pending one that registered itself,
with ``CHARGEGRAPH_AUTO_REGISTER``) could check every card with Authorize and open
sessions on drivers' cards, which then read ConcurrentTx at real stations.

A station made Pending or Rejected while its charger was Accepted is another matter: the
charger learns its registration only at its next boot (4.2), and until then sends what an
Accepted one does. Its messages about a transaction already open on the station
(``ABOUT_OPEN_TRANSACTIONS``: its StopTransaction, its meter values, its connectors'
states) are admitted whatever the registration (``ChargingService.admits``): refused, the
charger drops them after its TransactionMessageAttempts, and the session stays ACTIVE and
unbilled for good (review s25). Nothing opens a transaction: no StartTransaction, no
Authorize, whatever is open.
"""

from __future__ import annotations

from domain.entities import Registration

#: What a Pending charger may send: its boot, and the reports about its state an operator
#: may ask it for while deciding (TriggerMessage's Heartbeat, StatusNotification,
#: DiagnosticsStatusNotification, FirmwareStatusNotification). Nothing about cards,
#: sessions or energy, and no vendor DataTransfer.
PENDING_MAY_SEND = frozenset({
    "BootNotification", "Heartbeat", "StatusNotification",
    "DiagnosticsStatusNotification", "FirmwareStatusNotification",
})


#: What a charger may send about a transaction open on its station (ACTIVE, awaiting its
#: late stop, or closed without its stop), whatever the station's registration: the
#: messages that close it, measure it, and report its connector.
ABOUT_OPEN_TRANSACTIONS = frozenset({"StopTransaction", "MeterValues", "StatusNotification"})


def admits(registration: Registration, action: str) -> bool:
    """Whether a charger of a station in ``registration`` may send ``action``."""
    if registration is Registration.ACCEPTED:
        return True
    if registration is Registration.PENDING:
        return action in PENDING_MAY_SEND
    return action == "BootNotification"
