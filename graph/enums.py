"""The domain's enumerations as GraphQL enums. Member names are the SCREAMING_SNAKE_CASE
GraphQL values (``SUSPENDED_EV``); member values stay the OCPP spelling (``SuspendedEV``).

``strawberry.enum`` registers the class itself, so the names below are the domain classes
(plain aliases, which type checkers understand), not wrappers.
"""

from __future__ import annotations

import strawberry

from domain import entities as d

strawberry.enum(d.Role, description="What a user may do and see.")
strawberry.enum(d.IdTagStatus, description="OCPP authorization status of a tag.")
strawberry.enum(d.Registration, description="OCPP registration status a station gets on boot.")
strawberry.enum(d.ConnectorStatus, description="OCPP 1.6 ChargePointStatus.")
strawberry.enum(d.ConnectorType, description="Plug standard.")
strawberry.enum(d.PowerType, description="The current a plug delivers.")
strawberry.enum(d.SessionState, description="Whether a session is still charging.")
strawberry.enum(d.ReservationState, description="Where a reservation (OCPP ReserveNow) is.")
strawberry.enum(d.PaymentStatus, description=(
    "Where a payment is: PENDING, then CAPTURED or FAILED (FAILED, then CAPTURED on a "
    "later try); CAPTURED, then REFUNDED; PENDING or FAILED, then VOIDED when its "
    "session's corrected cost is 0. A capture already under way when a payment is "
    "failed or voided records it CAPTURED after that: its money moved."))
strawberry.enum(d.AuditAction, description="What a change log entry records.")
strawberry.enum(d.MeterAnomaly, description=(
    "What a session's energy register did that its energy is counted across, or a "
    "final register (meterStop, or the next start's meterStart) that was not believed "
    "or that its readings passed; or a session that is a replay of an earlier one."))

Role = d.Role
IdTagStatus = d.IdTagStatus
Registration = d.Registration
ConnectorStatus = d.ConnectorStatus
ConnectorType = d.ConnectorType
PowerType = d.PowerType
SessionState = d.SessionState
ReservationState = d.ReservationState
PaymentStatus = d.PaymentStatus
AuditAction = d.AuditAction
MeterAnomaly = d.MeterAnomaly

#: The values' descriptions, by GraphQL enum and value name. The enums are the domain's
#: classes, which know nothing of GraphQL (and two of the graph's, ``OrderDirection`` and
#: ``AnalyticsGroup``, whose values are read as plain strings), so these are given to the
#: schema when it is built (``graph.schema.describe_shared_arguments``). The OCPP 1.6
#: enumerations' are ``graph.command_types.OCPP_VALUE_DESCRIPTIONS``.
VALUE_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "Role": {
        "DRIVER": "Charges: sees themselves, their vehicles, cards, sessions, reservations "
                  "and payments, and the public map.",
        "OPERATOR": "Runs their company's stations and sees what happens on them.",
        "ADMIN": "Sees and may change everything.",
    },
    "IdTagStatus": {
        "ACCEPTED": "May charge.",
        "BLOCKED": "Refused: blocked by its holder or their operator, or its user is "
                   "deactivated.",
        "EXPIRED": "Refused: past its expiry.",
    },
    "Registration": {
        "ACCEPTED": "The charger is accepted at boot; the station is on the map.",
        "PENDING": "Registered itself; waits for an operator to accept it.",
        "REJECTED": "Refused at boot.",
    },
    "ConnectorStatus": {
        "AVAILABLE": "Free to plug in.",
        "PREPARING": "A car is plugged in or a driver authorized; not charging yet.",
        "CHARGING": "Delivering energy.",
        "SUSPENDED_EVSE": "The charger paused delivery (e.g. a power limit).",
        "SUSPENDED_EV": "The car paused taking energy (e.g. full).",
        "FINISHING": "The session ended; the car is still plugged in.",
        "RESERVED": "Held by a reservation.",
        "UNAVAILABLE": "Out of service on purpose (ChangeAvailability).",
        "FAULTED": "Broken: see its error code.",
    },
    "ConnectorType": {
        "TYPE2": "IEC 62196 Type 2 (Mennekes), AC.",
        "CCS2": "Combined Charging System Combo 2, DC.",
        "CCS1": "Combined Charging System Combo 1, DC.",
        "CHADEMO": "CHAdeMO, DC.",
        "TYPE1": "SAE J1772 Type 1, AC.",
        "NACS": "North American Charging Standard (SAE J3400).",
        "SCHUKO": "Domestic socket (CEE 7/4).",
        "OTHER": "Any other plug.",
    },
    "PowerType": {
        "AC": "Alternating current: the car's on-board charger converts it.",
        "DC": "Direct current: fast charging.",
    },
    "SessionState": {
        "ACTIVE": "Charging or plugged in: the transaction has not ended.",
        "COMPLETED": "Ended. A session closed without its StopTransaction (`endSession`, or "
                     "closed as lost) is corrected by the stop if it comes later: its "
                     "energy and cost change then, and a payment not yet collected "
                     "follows.",
    },
    "ReservationState": {
        "PENDING": "Sent to the charger; its answer is not known yet.",
        "ACTIVE": "The charger holds the plug until `expiresAt`.",
        "USED": "A session started with it.",
        "CANCELLED": "Cancelled by its driver or an operator, or its plug was removed.",
        "EXPIRED": "Ran out before it was used.",
        "REJECTED": ("The charger answered no (Rejected, Occupied, Faulted, Unavailable) "
                     "or with an error (a CALLERROR such as NotSupported). A reservation "
                     "the charger never got (offline, busy) is not kept at all."),
    },
    "PaymentStatus": {
        "PENDING": "Created when the session completed; not collected yet.",
        "CAPTURED": "Collected (a partial refund leaves it CAPTURED).",
        "FAILED": "Collecting failed; it may be captured on a later try (of its amount "
                  "as it is then: a late stop correcting its session reprices it, or "
                  "voids it).",
        "REFUNDED": "Paid back in full.",
        "VOIDED": "Nothing to collect: a late stop corrected its session's cost to 0 "
                  "(a session free from the start has no payment). No capture, fail or "
                  "refund asked afterwards moves it; a capture already under way when it "
                  "was voided is recorded CAPTURED at what it collected (its money "
                  "moved).",
    },
    "AuditAction": {
        "CREATE": "A record was created.",
        "UPDATE": "A record was changed.",
        "DELETE": "A record was removed.",
        "COMMAND": "A command was sent to a charger (who sent which, and its answer).",
        "ERASE": "A person's account was erased (`eraseUser`, `eraseMyAccount`): their "
                 "name, email and plates are gone from it and from the entries about "
                 "them; this entry names none.",
        "EXPORT": "A copy of a person's data was downloaded (`/export/me.json`, "
                  "`/export/users/{id}.json`): `actor` is who took it; about the "
                  "person, whose audit log shows it.",
    },
    "OrderDirection": {
        "ASC": "Smallest, earliest or A first.",
        "DESC": "Largest, latest or Z first.",
    },
    "MeterAnomaly": {
        "ROLLOVER": "The register rolled over at its limit (a 32-bit or 999,999.9 kWh "
                    "counter).",
        "RESET": "The register restarted near 0 (a meter reset or replaced).",
        "IMPLAUSIBLE_STOP": "The transaction's final register (meterStop) was below "
                            "meterStart, more than the connector could deliver, "
                            "meterStart itself though the transaction's readings moved, "
                            "or no register at all (negative, beyond 10^12 Wh: not "
                            "recorded): the session was billed what its readings "
                            "metered.",
        "STOP_BELOW_READINGS": "The final register (meterStop) was believed and billed, "
                               "but the transaction's own readings had gone more than "
                               "500 Wh higher (a glitching reading, or a register not "
                               "read at the stop): for an operator to review.",
        "NEXT_START_BELOW_READINGS": "Its stop lost, the session was closed by a newer "
                                     "start on its connector whose meterStart lay below "
                                     "its readings: it was billed up to that meterStart "
                                     "(the energy above it is the newer session's, "
                                     "billed there), not to its last reading; a "
                                     "StopTransaction of its own arriving later still "
                                     "decides. For an operator to review.",
        "REPLAYED": "A duplicate: its charger, whose clock was never set, replayed an "
                    "earlier session's start (and stop) from its queue after that "
                    "session's stop, repeating its card, start stamp and meterStart "
                    "(and its meterStop and stop stamp, or metering nothing until the "
                    "next start closed it). Priced nothing, no payment: the earlier "
                    "session is the charge.",
    },
    # Registered in graph/webhooks.py. Each value says the `type` its deliveries carry.
    "WebhookEvent": {
        "SESSION_STARTED": "`session.started`: a session started on a charger.",
        "SESSION_ENDED": "`session.ended`: a session ended, with its final energy and "
                         "cost.",
        "CONNECTOR_STATUS_CHANGED": "`connector.status_changed`: a connector (0: the "
                                    "charge point) reported a new status, error code, "
                                    "info or vendor error code.",
        "FAULT_REPORTED": "`fault.reported`: a connector (0: the charge point) reported "
                          "an error code other than NoError, or the status Faulted.",
        "FIRMWARE_STATUS": "`station.firmware_status`: a charger's firmware update moved "
                           "on (a FirmwareStatusNotification, or `Requested`: an "
                           "`updateFirmware` it accepted).",
        "DIAGNOSTICS_STATUS": "`station.diagnostics_status`: a charger's diagnostics "
                              "upload moved on (a DiagnosticsStatusNotification, or "
                              "`Requested`: a `getDiagnostics` it accepted).",
        "STATION_ONLINE": "`station.online`: a charger is back, after a delivered "
                          "`station.offline`.",
        "STATION_OFFLINE": "`station.offline`: a charger has stayed offline for the "
                           "grace, dated when it went.",
        "RESERVATION_CHANGED": "`reservation.changed`: a reservation was accepted, "
                               "refused, used, cancelled or expired.",
        "COMMAND_COMPLETED": "`command.completed`: a command reached its charger and was "
                             "answered, or failed to.",
        "PAYMENT_CAPTURED": "`payment.captured`: a session's payment was collected.",
        "PAYMENT_FAILED": "`payment.failed`: collecting a session's payment failed.",
        "PAYMENT_REFUNDED": "`payment.refunded`: a payment was paid back, in full or in "
                            "part.",
        "PAYMENT_REPRICED": "`payment.repriced`: a late StopTransaction corrected the "
                            "session of a payment not yet collected (PENDING or FAILED): "
                            "collect the new `amountMinor`.",
        "PAYMENT_VOIDED": "`payment.voided`: a late StopTransaction corrected the session "
                          "of a payment not yet collected to cost nothing: collect nothing.",
    },
    # Registered in graph/sites.py.
    "ChargingRateUnit": {
        "W": "Watts: chargers are sent power limits.",
        "A": "Amperes per phase: chargers are sent current limits, converted with the "
             "site's `voltage` and `phases`.",
    },
    "LimitAnswer": {
        "ACCEPTED": "The charger took the limit: the session is under control.",
        "REJECTED": "The charger refused the limit (SetChargingProfile Rejected).",
        "NOT_SUPPORTED": "The charger does no smart charging (NotSupported or "
                         "NotImplemented).",
        "TIMEOUT": "The charger did not answer in time; it may have taken the limit.",
        "OFFLINE": "The charger was not connected: nothing was sent.",
        "ERROR": "The charger answered with another error, or an answer that could not be "
                 "read.",
        "PENDING": "A higher limit is being sent now: the site holds that much for the "
                   "session until the charger answers.",
        "OVERRIDDEN": "An operator's own TxProfile above the site's stack level governs "
                      "the session: the site holds its connector's rating for it, not "
                      "under control, until every TxProfile on its connector is cleared "
                      "(a clear naming no profile id or stack level) or the session ends.",
    },
    # Registered in graph/signed.py.
    "SignedEncoding": {
        "OCMF": "Open Charge Metering Format (`OCMF|{payload}|{signature}`): read out in "
                "`ocmf`.",
        "UNKNOWN": "Another format, kept as sent and not read.",
    },
    # Registered in graph/analytics.py; its values are read as the domain's ``GroupBy``
    # (``AnalyticsGroup.STATION.value``), so they stay plain strings.
    "AnalyticsGroup": {
        "STATION": "A row per station: the sum of its connectors' rows.",
        "CONNECTOR": "A row per connector.",
    },
    # Registered in graph/analytics.py (``domain.timebuckets.Bucket``).
    "TimeBucket": {
        "HOUR": "An hour, from the full hour in the time zone asked for.",
        "DAY": "A day, from local midnight.",
        "WEEK": "A week, from Monday's local midnight.",
        "MONTH": "A calendar month, from the first's local midnight.",
    },
}
