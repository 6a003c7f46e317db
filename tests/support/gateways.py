"""Charger gateways standing in for the OCPP bridge in tests that are about the
domain's side of a command, not the wire."""

from __future__ import annotations

from typing import Any


class Accepting:
    """A charger that accepts every command it is sent."""

    def is_connected(self, cp_id: str, newest: int | None = None) -> bool:
        return True

    def connected(self) -> list[str]:
        return []

    async def call(self, cp_id: str, action: str, payload: dict[str, Any], timeout: float,
                   newest: int | None = None) -> dict[str, Any]:
        return {"status": "Accepted"}
