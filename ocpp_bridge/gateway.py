"""The ``ChargerGateway`` port over live OCPP connections: which chargers are connected,
and sending one command to one of them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ocpp.charge_point import (
    remove_nones,
    serialize_as_dict,
)
from ocpp.exceptions import OCPPError
from ocpp.v16 import call as ocpp_call

from domain.errors import ChargerError, ChargerOffline, ChargerTimeout, ValidationError
from domain.wire import wire_json
from ocpp_bridge.casing import to_camel, to_snake
from ocpp_bridge.handler import ChargePointHandler

log = logging.getLogger("chargegraph.ocpp")


class OcppGateway:
    def __init__(self) -> None:
        self._handlers: dict[str, ChargePointHandler] = {}

    # ------------------------------------------------------------- registry
    def register(self, handler: ChargePointHandler) -> ChargePointHandler | None:
        """Make ``handler`` the live connection of its charger; returns the one it
        replaces (a charger that reconnected before its old socket timed out)."""
        previous = self._handlers.get(handler.id)
        self._handlers[handler.id] = handler
        return previous if previous is not handler else None

    def unregister(self, handler: ChargePointHandler) -> bool:
        """Forget ``handler`` if it is still the live one; False if it was replaced."""
        if self._handlers.get(handler.id) is handler:
            del self._handlers[handler.id]
            return True
        return False

    def is_connected(self, cp_id: str) -> bool:
        return cp_id in self._handlers

    def handler_of(self, cp_id: str) -> ChargePointHandler | None:
        return self._handlers.get(cp_id)

    def connected(self) -> list[str]:
        return list(self._handlers)

    # ------------------------------------------------------------- commands
    async def call(self, cp_id: str, action: str, payload: dict[str, Any], timeout: float
                   ) -> dict[str, Any]:
        handler = self._handlers.get(cp_id)
        if handler is None:
            raise ChargerOffline(f"{cp_id} is not connected", field="cpId")
        request_type = getattr(ocpp_call, action, None)
        if request_type is None:
            raise ValidationError(f"unknown OCPP action {action}", field="action")
        try:
            request = request_type(**to_snake(wire_json(payload)))
        except TypeError as exc:
            raise ValidationError(f"{action}: {exc}", field="input") from exc
        try:
            # ``command`` fails at once when the socket closes (ChargerOffline) or the
            # answer is malformed (ChargerError), rather than at the timeout.
            response = await asyncio.wait_for(handler.command(request), timeout)
        except TimeoutError as exc:
            raise ChargerTimeout(f"{cp_id} did not answer {action} within {timeout:g}s"
                                 ) from exc
        except OCPPError as exc:
            # A CALLERROR from the charger, or an answer that breaks the 1.6 schema.
            raise ChargerError(f"{cp_id} answered {action} with {exc.code}: "
                               f"{exc.description}") from exc
        except ChargerOffline as exc:
            raise ChargerOffline(f"{cp_id} went offline before answering {action}"
                                 ) from exc
        except ChargerError as exc:  # the only other failure ``command`` raises
            raise ChargerError(f"{cp_id} answered {action} with a malformed frame: "
                               f"{exc.message}") from exc
        except Exception as exc:  # the socket closed under us, an unknown error code, …
            log.warning("%s: %s failed: %r", cp_id, action, exc)
            if not self.is_connected(cp_id):
                raise ChargerOffline(f"{cp_id} went offline") from exc
            raise ChargerError(f"{cp_id}: {action} failed ({exc.__class__.__name__})"
                               ) from exc
        return to_camel(remove_nones(serialize_as_dict(response)))  # type: ignore[no-any-return]
