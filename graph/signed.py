"""A session's signed meter values (``Session.signedMeterValues``): the records its charger
signed (German calibration law: OCMF; other vendors' formats), as sent, oldest first,
with an OCMF record's readings read out (``domain/ocmf.py``) for display.

A nested connection like ``Session.meterValues`` (``relay.nested_connection``): a page
of sessions reads them in one batched call, and whoever sees the session sees them
(``Policy.scope_under``, ``policy.FOLLOW_PARENT``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import strawberry

from domain import entities as d
from domain import ocmf
from domain.ocpp16 import Measurand, member
from domain.query import ALL
from graph.command_types import MeterLocation, Phase, ReadingContext
from graph.history import OLDEST_FIRST
from graph.relay import Connection, PageArgs, nested_connection

if TYPE_CHECKING:
    from graph.context import GraphContext

strawberry.enum(d.SignedEncoding, description=(
    "The format of a signed meter value: OCMF (`OCMF|{payload}|{signature}`), or another "
    "the service does not read (UNKNOWN; its text is kept as sent all the same)."))
SignedEncoding = d.SignedEncoding


@strawberry.type(description="One reading of an OCMF record (`RD`), as the meter signed it.")
class OcmfReading:
    time: datetime | None = strawberry.field(description=(
        "`TM`, in UTC; null when it is no OCMF time."))
    time_status: str | None = strawberry.field(description=(
        "`TM`'s clock flag: U unknown, I informative, S synchronised, R relative."))
    transaction: str | None = strawberry.field(description=(
        "`TX`: B begin, C charging, E end, X exception, …"))
    value: Decimal | None = strawberry.field(description="`RV`, exact as signed.")
    unit: str | None = strawberry.field(description="`RU`, e.g. `kWh`.")
    identification: str | None = strawberry.field(description=(
        "`RI`, the register's OBIS code, e.g. `1-b:1.8.0`."))
    current_type: str | None = strawberry.field(description="`RT`: AC or DC.")
    status: str | None = strawberry.field(description=(
        "`ST`: G good, T tampered, D deleted, R replaced, …"))
    error_flags: str | None = strawberry.field(description="`EF`.")

    @classmethod
    def wrap(cls, r: ocmf.OcmfReading) -> OcmfReading:
        return cls(time=r.time, time_status=r.time_status, transaction=r.transaction,
                   value=r.value, unit=r.unit, identification=r.identification,
                   current_type=r.current_type, status=r.status, error_flags=r.error_flags)


@strawberry.type(description=(
    "An OCMF record read out for display: what the meter signed. The signature is not "
    "checked here; the record's `data` is the evidence (a transparency software checks "
    "it). A field absent or of another type is null."))
class OcmfRecord:
    version: str | None = strawberry.field(description="`FV`, the format's version.")
    gateway_id: str | None = strawberry.field(description="`GI`.")
    gateway_serial: str | None = strawberry.field(description="`GS`.")
    meter_vendor: str | None = strawberry.field(description="`MV`.")
    meter_model: str | None = strawberry.field(description="`MM`.")
    meter_serial: str | None = strawberry.field(description="`MS`.")
    meter_firmware: str | None = strawberry.field(description="`MF`.")
    pagination: str | None = strawberry.field(description=(
        "`PG`: T<n> a transaction's record, F<n> a fiscal one."))
    charge_point_id: str | None = strawberry.field(description="`CI`.")
    readings: list[OcmfReading] = strawberry.field(description="`RD`, in the record's order.")
    signature_algorithm: str | None = strawberry.field(description="`SA`.")
    signature: str | None = strawberry.field(description="`SD`.")

    @classmethod
    def wrap(cls, r: ocmf.OcmfRecord) -> OcmfRecord:
        return cls(version=r.version, gateway_id=r.gateway_id,
                   gateway_serial=r.gateway_serial, meter_vendor=r.meter_vendor,
                   meter_model=r.meter_model, meter_serial=r.meter_serial,
                   meter_firmware=r.meter_firmware, pagination=r.pagination,
                   charge_point_id=r.charge_point_id,
                   readings=[OcmfReading.wrap(x) for x in r.readings],
                   signature_algorithm=r.signature_algorithm, signature=r.signature)


@strawberry.type(description=(
    "A signed meter value a session's charger sent (OCPP `format: SignedData`), kept as "
    "sent: what a customer is handed under calibration law."))
class SignedMeterValue:
    at: datetime = strawberry.field(description="When it was measured, on the charger's "
                                                "clock.")
    measurand: Measurand | None = strawberry.field(description=(
        "What it measures (OCPP Measurand); null for a stored value OCPP 1.6 has not "
        "(none passes the OCPP server: a row written by another tool)."))
    context: ReadingContext | None = strawberry.field(description=(
        "OCPP ReadingContext, e.g. `TRANSACTION_BEGIN`, `TRANSACTION_END`."))
    location: MeterLocation | None = strawberry.field(description=(
        "OCPP Location, e.g. `OUTLET`."))
    phase: Phase | None = strawberry.field(description="OCPP Phase; null for a total.")
    encoding: SignedEncoding = strawberry.field(description="The format of `data`.")
    data: str = strawberry.field(description=(
        "The signed text as the charger sent it (its first 16,384 characters: see "
        "`truncated`)."))
    truncated: bool = strawberry.field(description=(
        "Whether the charger sent more than `data` holds (`dataLength` characters): the "
        "record cannot be verified from `data` then; ask the charger for it."))
    data_length: int = strawberry.field(description="The length of the text as sent.")
    _r: strawberry.Private[d.SignedMeterValue]

    @classmethod
    def wrap(cls, r: d.SignedMeterValue, ctx: GraphContext) -> SignedMeterValue:
        return cls(at=r.at, measurand=member(Measurand, r.measurand),
                   context=member(ReadingContext, r.context, ReadingContext.OTHER),
                   location=member(MeterLocation, r.location), phase=member(Phase, r.phase),
                   encoding=r.encoding, data=r.data,
                   truncated=r.truncated, data_length=r.data_length, _r=r)

    @strawberry.field(description=(
        "An OCMF record's content; null for another encoding and for a record that is "
        "not well-formed (or cut: `truncated`)."))
    def ocmf(self) -> OcmfRecord | None:
        # Read on demand from the stored text: a better reader shows old records too.
        if self._r.encoding is not d.SignedEncoding.OCMF:
            return None
        record = ocmf.parse(self._r.data)
        return OcmfRecord.wrap(record) if record is not None else None


async def signed_meter_values(ctx: GraphContext, session: d.Session, args: PageArgs
                              ) -> Connection[SignedMeterValue]:
    """The session's signed meter values, oldest first."""
    return await nested_connection(ctx, d.SignedMeterValue, SignedMeterValue.wrap,
                                   "session_id", session.id, ALL, OLDEST_FIRST, args)
