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


def test_the_cors_row_lists_the_headers_the_code_allows_and_exposes() -> None:
    """README's CHARGEGRAPH_CORS_ORIGINS row names each header a preflight allows and an
    answer exposes (brief x33-secfix: Idempotency-Key, Retry-After and
    Idempotent-Replayed were missing)."""
    from chargegraph.cors import EXPOSED, HEADERS

    [row] = [line for line in README.read_text(encoding="utf-8").splitlines()
             if line.startswith("| `CHARGEGRAPH_CORS_ORIGINS`")]
    allowed, _, exposed = row.partition("a page may read")
    exposed = exposed.partition("credentials mode")[0]
    assert set(re.findall(r"`([A-Z][A-Za-z-]+)`", allowed)) == {
        *HEADERS, "Accept", "Accept-Language", "Content-Language"}
    assert set(re.findall(r"`([A-Z][A-Za-z-]+)`", exposed)) == set(EXPOSED)
