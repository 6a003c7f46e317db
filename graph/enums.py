"""The domain's enumerations as GraphQL enums. Member names are the SCREAMING_SNAKE_CASE
GraphQL values (``SUSPENDED_EV``); member values stay the OCPP spelling (``SuspendedEV``)."""

from __future__ import annotations

import strawberry

from domain import entities as d

Role = strawberry.enum(d.Role, description="What a user may do and see.")
IdTagStatus = strawberry.enum(d.IdTagStatus, description="OCPP authorization status of a tag.")
Registration = strawberry.enum(
    d.Registration, description="OCPP registration status a station gets on boot."
)
ConnectorStatus = strawberry.enum(d.ConnectorStatus, description="OCPP 1.6 ChargePointStatus.")
ConnectorType = strawberry.enum(d.ConnectorType, description="Plug standard.")
SessionState = strawberry.enum(d.SessionState)
ReservationState = strawberry.enum(d.ReservationState)
PaymentStatus = strawberry.enum(d.PaymentStatus)
AuditAction = strawberry.enum(d.AuditAction)
