"""Every record kind is either audited or written unaudited on purpose, and
docs/architecture.md says which ("Which record kinds are audited"): a kind added without
a line there fails here until that is decided (QA s28 audit2: the kinds not audited were
spelt out for a few of them only, scattered)."""

from __future__ import annotations

import re
from pathlib import Path

from store.fields import ALL_KINDS

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def _table() -> dict[str, str]:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    start = text.index("Which record kinds are audited")
    rows: dict[str, str] = {}
    for line in text[start:].splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 3 or cells[1] in ("audited", "---"):
            continue
        for kind in re.findall(r"`([a-z_]+)`", cells[0]):
            rows[kind] = cells[1]
    return rows


def test_every_record_kind_is_said_to_be_audited_or_not() -> None:
    table = _table()
    kinds = {k.kind for k in ALL_KINDS}
    assert kinds - table.keys() == set(), "kinds the table does not name"
    assert table.keys() - kinds == set(), "the table names kinds that are none"
    assert {k for k, audited in table.items() if audited.startswith("yes")} == {
        "company", "user", "vehicle", "id_tag", "reservation", "tariff", "site", "station",
        "connector", "session", "payment", "webhook"}
