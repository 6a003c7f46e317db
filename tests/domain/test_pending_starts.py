"""Which live remote starts hold their card and plug (``pending_starts.holds``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain import entities as d
from domain.services.pending_starts import holds

BOOT = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


def start(created_at: datetime, booted_at: datetime | None) -> d.PendingStart:
    return d.PendingStart(station_id="s", cp_id="CP-1", id_tag="TAG", created_at=created_at,
                          expires_at=created_at + timedelta(minutes=2),
                          station_booted_at=booted_at)


def test_a_start_holds_until_its_station_boots_again_whatever_the_clocks() -> None:
    """By the boot it was sent in, compared as a value (review s25: by time, a start
    stored on a clock behind the booting instance's held nothing)."""
    station = d.Station(cp_id="CP-1", name="A", booted_at=BOOT)
    behind = BOOT - timedelta(seconds=3)
    assert holds(start(behind, BOOT), station)
    assert not holds(start(BOOT + timedelta(seconds=5), BOOT - timedelta(hours=1)), station)
    assert not holds(start(behind, BOOT), None)  # its station removed


def test_a_start_stored_without_its_boot_is_judged_by_time() -> None:
    """Rows from before SQLite migration 62 (MongoDB: the field missing), and a start
    sent to a station never booted: as before, by ``created_at`` against ``booted_at``."""
    station = d.Station(cp_id="CP-1", name="A", booted_at=BOOT)
    assert holds(start(BOOT + timedelta(seconds=1), None), station)
    assert not holds(start(BOOT - timedelta(seconds=1), None), station)
    assert holds(start(BOOT, None), d.Station(cp_id="CP-1", name="A"))
