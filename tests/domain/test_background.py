"""Follow-ups run in the background: waited for by ``settled``, a failure logged and
never raised into what started it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from domain.services.background import Background


async def test_a_failing_follow_up_is_logged_and_settled(
        caplog: pytest.LogCaptureFixture) -> None:
    background = Background()
    done: list[str] = []

    async def fine() -> None:
        await asyncio.sleep(0.01)
        done.append("fine")

    async def broken() -> None:
        raise RuntimeError("charger gone")

    background.run(fine(), "fine", "fine failed")
    background.run(broken(), "broken", "asking charger CP-1 to boot again failed")
    await background.settled()
    assert done == ["fine"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "asking charger CP-1 to boot again failed"
    assert record.exc_info is not None and "charger gone" in str(record.exc_info[1])
