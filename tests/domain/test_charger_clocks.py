"""Which timestamps tell a charger's clock "now" (``domain.services.charger_clocks``, QA
s19 conformance 3): pure rules, on a clock the test moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.services.charger_clocks import CONFIRM_AFTER, ChargerClocks

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


def test_a_queue_flushed_slowly_never_becomes_the_clock() -> None:
    """Readings queued a minute apart over two hours, flushed one a second: neighbours
    agree within a minute or two, but never over ``CONFIRM_AFTER`` of our time. The
    timeline of the reports follows them all the same."""
    ours = Clock()
    clocks = ChargerClocks(ours)
    for k in range(120):
        ours.at = T0 + timedelta(seconds=k)
        clocks.observe("CP", T0 - timedelta(hours=2) + timedelta(minutes=k))
    assert clocks.charger_now("CP") == ours.at
    assert clocks.stamped_now("CP") == T0 - timedelta(hours=2) + timedelta(minutes=119)


def test_a_clock_ahead_or_a_moment_behind_is_taken_at_once() -> None:
    ours = Clock()
    clocks = ChargerClocks(ours)
    clocks.observe("AHEAD", T0 + timedelta(minutes=3))  # nothing is queued from the future
    clocks.observe("LAG", T0 - timedelta(seconds=20))  # stamped a moment before sending
    ours.at = T0 + timedelta(seconds=10)
    assert clocks.charger_now("AHEAD") == T0 + timedelta(minutes=3, seconds=10)
    assert clocks.charger_now("LAG") == T0 - timedelta(seconds=10)


def test_a_clock_behind_is_confirmed_by_the_same_offset_later() -> None:
    ours = Clock()
    clocks = ChargerClocks(ours)
    behind = timedelta(hours=1)
    clocks.observe("CP", T0 - behind)
    assert clocks.charger_now("CP") == T0  # a queued one looks the same: not yet
    ours.at = T0 + CONFIRM_AFTER
    clocks.observe("CP", ours.at - behind + timedelta(seconds=3))
    assert clocks.charger_now("CP") == ours.at - behind + timedelta(seconds=3)
    # From then on an older queued reading says nothing about its clock.
    clocks.observe("CP", T0 - timedelta(hours=5))
    assert clocks.charger_now("CP") == ours.at - behind + timedelta(seconds=3)
