from pathlib import Path

from graph import export_sdl

ROOT = Path(__file__).resolve().parents[2]


def test_schema_graphql_matches_code() -> None:
    committed = (ROOT / "schema.graphql").read_text(encoding="utf-8")
    assert committed == export_sdl(), "run: chargegraph export-schema > schema.graphql"


def test_ocpp_style_enums_are_screaming_snake_case() -> None:
    sdl = export_sdl()
    assert "SUSPENDED_EV" in sdl and "SUSPENDED_EVSE" in sdl and "SuspendedEV" not in sdl
