"""Released SQLite migrations are never edited (``store/sqlite/migrations.py``): a
database that ran version N never sees N's text again, so an edit reaches only new
databases (QA s18, upgrade: four had been edited after they shipped on main, and
databases of those builds lacked columns the code reads). ``migrations.lock`` holds each
released text's digest; a new migration is added to it when it is committed to main:
``python -m tests.store.test_migrations_frozen``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from store.sqlite.migrations import MIGRATIONS

LOCK = Path(__file__).with_name("migrations.lock")


def digests() -> dict[str, str]:
    return {str(version): hashlib.sha256(text.encode()).hexdigest()
            for version, text in MIGRATIONS}


def test_released_migrations_are_unchanged() -> None:
    locked = json.loads(LOCK.read_text())
    now = digests()
    changed = [v for v, digest in locked.items() if now.get(v) != digest]
    assert not changed, (
        f"migrations {changed} differ from the text they were released with: append a "
        "new migration instead (a database that ran one never runs it again)")
    assert set(now) == set(locked), (
        f"migrations {sorted(set(now) - set(locked), key=int)} are not in {LOCK.name}: "
        "add them once final (python -m tests.store.test_migrations_frozen)")


if __name__ == "__main__":
    # Adds the versions not locked yet; a locked one is never overwritten (one that never
    # left a branch may be edited: delete its line first).
    locked = json.loads(LOCK.read_text()) if LOCK.exists() else {}
    LOCK.write_text(json.dumps({**digests(), **locked}, indent=1) + "\n")
