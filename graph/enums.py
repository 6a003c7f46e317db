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
strawberry.enum(d.SessionState)
strawberry.enum(d.ReservationState)
strawberry.enum(d.PaymentStatus)
strawberry.enum(d.AuditAction)
strawberry.enum(d.MeterAnomaly, description=(
    "What a session's energy register did that its energy is counted across, or a "
    "final register (meterStop) that was not believed."))

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
