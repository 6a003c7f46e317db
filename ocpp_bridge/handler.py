"""One connected charge point: routes its frames to the domain and carries commands to it.

Built on the ``ocpp`` package's ``ChargePoint`` (route map, outgoing ``call()`` with its
response queue and lock) with framing, validation and error codes done by
``ocpp_bridge.frames`` for 1.6 correctness. Incoming messages of one charger are handled
one at a time, in order; handlers never call the charger (the package would deadlock
until the timeout), they only talk to the domain.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ocpp.charge_point import (
    remove_nones,
    serialize_as_dict,
)
from ocpp.messages import CallError, CallResult
from ocpp.routing import on
from ocpp.v16 import ChargePoint
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action

from domain.errors import DomainError
from domain.services.charging import (
    BootInfo,
    ChargingService,
    IdTagInfo,
    MeterReading,
    SampledValue,
)
from ocpp_bridge import frames
from ocpp_bridge.casing import to_camel, to_snake
from ocpp_bridge.frames import FrameError
from ocpp_bridge.timefmt import parse_timestamp, rfc3339

log = logging.getLogger("chargegraph.ocpp")
#: Every frame in and out, at INFO: quiet unless this logger is turned up.
wire_log = logging.getLogger("chargegraph.ocpp.wire")

Send = Callable[[str], Awaitable[None]]


def id_tag_info(info: IdTagInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"status": info.status}
    if info.expiry_date is not None:
        out["expiryDate"] = rfc3339(info.expiry_date)
    if info.parent_id_tag is not None:
        out["parentIdTag"] = info.parent_id_tag
    return out


class ChargePointHandler(ChargePoint):
    def __init__(self, cp_id: str, connection: Any, charging: ChargingService, *,
                 response_timeout: float = 30) -> None:
        super().__init__(cp_id, connection, response_timeout=response_timeout,
                         logger=wire_log)
        self.charging = charging
        self._highest_connector: int | None = None
        self._unique_id = ""

    # ------------------------------------------------------------- routing
    async def route_message(self, raw_msg: str | bytes) -> None:
        """Every frame gets an answer: a CALLRESULT, or a CALLERROR with the 1.6 code.
        The connection stays up whatever arrives."""
        try:
            frame = frames.parse(raw_msg)
        except FrameError as exc:
            log.info("%s: bad frame (%s): %.200r", self.id, exc.description, raw_msg)
            await self._send(frames.call_error(exc.unique_id, exc.code, exc.description))
            return
        if frame.message_type == frames.CALL:
            await self._answer(frame)
        elif frame.message_type == frames.CALLRESULT:
            self._response_queue.put_nowait(CallResult(frame.unique_id, frame.payload))
        else:
            self._response_queue.put_nowait(CallError(
                frame.unique_id, frame.error_code, frame.error_description,
                frame.error_details))

    async def _answer(self, frame: frames.Frame) -> None:
        uid = frame.unique_id
        action = frame.action or ""
        try:
            if action not in frames.CHARGER_ACTIONS:
                code = frames.NOT_SUPPORTED if action in frames.KNOWN_UNSERVED \
                    else frames.NOT_IMPLEMENTED
                raise FrameError(code, f"{action} is not served here", uid)
            frames.validate(frames.CALL, action, frame.payload, uid)
            handler = self.route_map[action]["_on_action"]
            self._unique_id = uid
            response = await handler(**to_snake(frame.payload))
            payload = to_camel(remove_nones(serialize_as_dict(response)))
        except FrameError as exc:
            await self._send(frames.call_error(uid, exc.code, exc.description))
            return
        except DomainError as exc:
            code = frames.PROPERTY_CONSTRAINT_VIOLATION if exc.code in (
                "OUT_OF_RANGE", "INVALID", "NOT_FOUND") else frames.GENERIC_ERROR
            await self._send(frames.call_error(uid, code, exc.message))
            return
        except Exception:
            log.exception("%s: %s failed", self.id, action)
            await self._send(frames.call_error(uid, frames.INTERNAL_ERROR,
                                               "the central system failed to process this"))
            return
        await self._send(frames.call_result(uid, payload))

    def _time(self, value: str, field: str) -> Any:
        return parse_timestamp(value, field, self._unique_id)

    async def _connector_ok(self, connector_id: int, *, allow_zero: bool) -> None:
        """Connector ids the station cannot have are a PropertyConstraintViolation. The
        station's highest id is cached per connection and re-read before refusing."""
        low = 0 if allow_zero else 1
        if connector_id >= low and self._highest_connector is not None \
                and connector_id <= self._highest_connector:
            return
        try:
            await self.charging.check_connector_id(self.id, connector_id,
                                                   allow_zero=allow_zero)
        except DomainError as exc:
            raise FrameError(frames.PROPERTY_CONSTRAINT_VIOLATION, exc.message,
                             self._unique_id) from exc
        if connector_id > (self._highest_connector or 0):
            self._highest_connector = connector_id

    # ------------------------------------------------------------- charger → us
    @on(Action.boot_notification)
    async def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str,
                                   **extra: Any) -> result.BootNotification:
        boot = await self.charging.boot(self.id, BootInfo(
            vendor=charge_point_vendor, model=charge_point_model,
            serial=extra.get("charge_point_serial_number")
            or extra.get("charge_box_serial_number"),
            firmware=extra.get("firmware_version"), extra=extra))
        return result.BootNotification(current_time=rfc3339(boot.current_time),
                                       interval=boot.interval,
                                       status=boot.status.value)  # type: ignore[arg-type]

    @on(Action.heartbeat)
    async def on_heartbeat(self) -> result.Heartbeat:
        now = await self.charging.heartbeat(self.id)
        return result.Heartbeat(current_time=rfc3339(now))

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str) -> result.Authorize:
        info = await self.charging.authorize(self.id, id_tag)
        return result.Authorize(id_tag_info=id_tag_info(info))  # type: ignore[arg-type]

    @on(Action.start_transaction)
    async def on_start_transaction(self, connector_id: int, id_tag: str, meter_start: int,
                                   timestamp: str, reservation_id: int | None = None
                                   ) -> result.StartTransaction:
        await self._connector_ok(connector_id, allow_zero=False)
        transaction_id, info = await self.charging.start_transaction(
            self.id, connector_id, id_tag, meter_start, self._time(timestamp, "timestamp"),
            reservation_id)
        return result.StartTransaction(transaction_id=transaction_id,
                                       id_tag_info=id_tag_info(info))  # type: ignore[arg-type]

    @on(Action.stop_transaction)
    async def on_stop_transaction(self, meter_stop: int, timestamp: str, transaction_id: int,
                                  reason: str | None = None, id_tag: str | None = None,
                                  transaction_data: list[dict[str, Any]] | None = None
                                  ) -> result.StopTransaction:
        info = await self.charging.stop_transaction(
            self.id, transaction_id, meter_stop, self._time(timestamp, "timestamp"),
            reason=reason, id_tag=id_tag, readings=self._readings(transaction_data or []))
        return result.StopTransaction(
            id_tag_info=id_tag_info(info) if info else None)  # type: ignore[arg-type]

    @on(Action.meter_values)
    async def on_meter_values(self, connector_id: int, meter_value: list[dict[str, Any]],
                              transaction_id: int | None = None) -> result.MeterValues:
        await self._connector_ok(connector_id, allow_zero=True)
        await self.charging.meter_values(self.id, connector_id, transaction_id,
                                         self._readings(meter_value))
        return result.MeterValues()

    @on(Action.status_notification)
    async def on_status_notification(self, connector_id: int, error_code: str, status: str,
                                     info: str | None = None, timestamp: str | None = None,
                                     vendor_id: str | None = None,
                                     vendor_error_code: str | None = None
                                     ) -> result.StatusNotification:
        await self._connector_ok(connector_id, allow_zero=True)
        await self.charging.status_notification(
            self.id, connector_id, status, error_code, info=info,
            timestamp=self._time(timestamp, "timestamp") if timestamp else None,
            vendor_error_code=vendor_error_code)
        return result.StatusNotification()

    @on(Action.data_transfer)
    async def on_data_transfer(self, vendor_id: str, message_id: str | None = None,
                               data: str | None = None) -> result.DataTransfer:
        status, reply = await self.charging.data_transfer(self.id, vendor_id, message_id, data)
        return result.DataTransfer(status=status, data=reply)  # type: ignore[arg-type]

    @on(Action.diagnostics_status_notification)
    async def on_diagnostics_status_notification(self, status: str
                                                 ) -> result.DiagnosticsStatusNotification:
        await self.charging.diagnostics_status(self.id, status)
        return result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    async def on_firmware_status_notification(self, status: str
                                              ) -> result.FirmwareStatusNotification:
        await self.charging.firmware_status(self.id, status)
        return result.FirmwareStatusNotification()

    # ------------------------------------------------------------- helpers
    def _readings(self, meter_values: list[dict[str, Any]]) -> list[MeterReading]:
        # camel_to_snake_case already turned nested keys into snake case.
        readings = []
        for mv in meter_values:
            values = tuple(
                SampledValue(value=str(sv["value"]), measurand=sv.get("measurand"),
                             unit=sv.get("unit"), phase=sv.get("phase"),
                             context=sv.get("context"), location=sv.get("location"),
                             format=sv.get("format"))
                for sv in mv.get("sampled_value", [])
            )
            readings.append(MeterReading(self._time(mv["timestamp"], "meterValue.timestamp"),
                                         values))
        return readings
