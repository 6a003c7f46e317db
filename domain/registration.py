"""What a charger may send before its station is Accepted.

OCPP 1.6 (4.2, BootNotification) has a Pending charge point send nothing but its boot
and what the central system asks for, and a Rejected one nothing but its next boot; the
1.6 security whitepaper has the central system answer anything else with a CALLERROR
SecurityError. Without it a charger nobody accepted (a Pending one that registered itself,
with ``CHARGEGRAPH_AUTO_REGISTER``) could check every card with Authorize and open
sessions on drivers' cards, which then read ConcurrentTx at real stations.

A charger learns its registration only from the answer to its BootNotification, and acts
on it until its next boot (``Station.charger_registration``). A station made Pending or
Rejected while its charger was told Accepted goes on sending what an Accepted one does:
its stops, meter values, connector states and starts it made on its own (a local list,
free vend). Those reports are judged by the registration the charger was told: refused,
it drops a StopTransaction after its TransactionMessageAttempts, the session ACTIVE and
unbilled for good, and its connector left Finishing once the stop is taken (review s25).
The station's registration as it is now withholds new authorizations alone: Authorize is
refused (``NEW_AUTHORIZATIONS``), a start or stop is answered without its card's status
(``ChargingService``), and no remote start or reservation is sent (``commands``).

Whatever a charger was told, what closes what is open on record is taken: the stop of
its session still ACTIVE or closed without its stop, readings of its session still ACTIVE
on that session's connector, and the states of the connectors its station has
(``CLOSES_RECORDED``, ``STATE_REPORTS``, judged by ``ChargingService._on_record``);
nothing it names creates or reopens a record (review r32-a).
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

#: What asks the central system for a new authorization (a card checked): judged by the
#: station's registration as it is now, not by the one its charger was told.
NEW_AUTHORIZATIONS = frozenset({"Authorize"})

#: What a charger not admitted still has taken when it names its transaction open on
#: record: the stop and the readings that close it. Told Rejected at a
#: reboot mid-session, its charger sends its queued stop anyway; refused, the session
#: stayed ACTIVE for good and its card read ConcurrentTx everywhere until staff ended it
#: (QA s32). OCPP 1.6 (4.2) has a Rejected charger send nothing but its boot, and 2.0.1
#: (B03.FR.07) the central system answer the rest SecurityError: a transaction we issued
#: is closed on the charger's word rather than left open for good, as that opens nothing
#: and checks no card.
CLOSES_RECORDED = frozenset({"StopTransaction", "MeterValues"})

#: What a charger not admitted may report of a connector its station has: its state, so
#: the connector a stop above leaves Finishing is seen free again (review s25). It opens
#: nothing, creates no connector (review r32-a) and checks no card.
STATE_REPORTS = frozenset({"StatusNotification"})


def admits(registration: Registration, action: str,
           told: Registration | None = None) -> bool:
    """Whether a charger of a station in ``registration`` may send ``action``, its last
    boot answered ``told`` (``Station.charger_registration``; ``None``: ``registration``):
    what either lets it send, but a new authorization (``NEW_AUTHORIZATIONS``) only by
    ``registration``. An operator's acceptance admits at once what the charger, still
    Pending, sends anyway."""
    if _may_send(registration, action):
        return True
    return told is not None and action not in NEW_AUTHORIZATIONS and _may_send(told, action)


def _may_send(registration: Registration, action: str) -> bool:
    if registration is Registration.ACCEPTED:
        return True
    if registration is Registration.PENDING:
        return action in PENDING_MAY_SEND
    return action == "BootNotification"
