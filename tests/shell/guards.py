"""Guards for command-line tests that expect a command to stop before it serves."""

from __future__ import annotations

import pytest
import uvicorn


def never_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes serving fail the test at once: a command that should have refused its
    configuration must not sit serving (and binding real ports) until the suite times out."""
    async def serve(self: uvicorn.Server, sockets: object = None) -> None:
        raise AssertionError("the command started serving")

    monkeypatch.setattr(uvicorn.Server, "serve", serve)


def never_simulate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for `simulate`, whose chargers would otherwise retry forever."""
    import ocpp_bridge.simulator

    async def run_fleet(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command started simulating")

    monkeypatch.setattr(ocpp_bridge.simulator, "run_fleet", run_fleet)
