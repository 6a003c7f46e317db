"""Figures the README quotes from the code stay the code's: the schema version its
``/healthz`` examples show (QA s19: they said 30 and 40 at 43)."""

from __future__ import annotations

import re
from pathlib import Path

from store.sqlite.migrations import MIGRATIONS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_healthz_examples_show_the_current_schema() -> None:
    text = README.read_text(encoding="utf-8")
    shown = {int(n) for n in re.findall(r'"schema":\s*(\d+)', text)}
    assert shown == {MIGRATIONS[-1][0]}


def test_upgrading_says_how_long_a_start_waits_for_another_migrating() -> None:
    from store.sqlite.migrations import MIGRATION_LOCK_WAIT_S

    text = " ".join(README.read_text(encoding="utf-8").split())
    assert f"up to {MIGRATION_LOCK_WAIT_S // 60} minutes" in text
