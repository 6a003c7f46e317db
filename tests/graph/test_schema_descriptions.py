"""Every type, field, argument, input field and enum value of ours is described: the
README promises GraphiQL's docs pane (and schema.graphql) explains the whole API. The walk
is ``graph.schema_docs.undescribed``, the one scripts/schema_doc_coverage.py counts by."""

from pathlib import Path

from graphql import build_schema

from domain.entities import WebhookEvent
from domain.services.live_updates import SESSION_UPDATE_INTERVAL_S
from graph.schema import export_sdl, schema
from graph.schema_docs import undescribed


def _missing(found: dict[str, list[str]]) -> list[str]:
    return [coordinate for names in found.values() for coordinate in names]


def test_every_coordinate_of_ours_is_described() -> None:
    found, totals = undescribed(schema._schema)
    assert all(totals.values())  # the walk saw every kind
    missing = _missing(found)
    assert missing == [], f"{len(missing)} undescribed: " + ", ".join(missing)


def test_the_exported_sdl_keeps_every_description() -> None:
    # What schema.graphql (and a client's introspection) reads, not only the objects.
    assert _missing(undescribed(build_schema(export_sdl()))[0]) == []


def test_the_walk_finds_what_is_undescribed() -> None:
    sdl = ('"""Root."""\ntype Query {\n  """Described."""\n  a(x: Int): E\n  b: Int\n}\n'
           'enum E {\n  """Described."""\n  ONE\n  TWO\n}\n'
           'input I {\n  f: Int\n}\n"""   """\nscalar Blank\n')
    found, totals = undescribed(build_schema(sdl))
    assert found == {"types": ["Blank", "E", "I"], "fields": ["I.f", "Query.b"],
                     "arguments": ["Query.a(x:)"], "enum values": ["E.TWO"]}
    assert totals == {"types": 4, "fields": 3, "arguments": 1, "enum values": 2}


def test_each_webhook_event_names_the_type_it_delivers() -> None:
    # A client maps the enum value it subscribes with to the `type` deliveries carry.
    values = schema._schema.type_map["WebhookEvent"].values  # type: ignore[attr-defined]
    for event in WebhookEvent:
        assert values[event.name].description.startswith(f"`{event.value}`: "), event.name


def test_session_updates_say_they_are_throttled_and_where_every_reading_is() -> None:
    # QA s32: only internal docs said so, and five MeterValues came as one UPDATED and
    # the ENDED to a client drawing a curve from the events.
    every = f"one every {SESSION_UPDATE_INTERVAL_S:g} s"
    field = schema._schema.subscription_type.fields["sessionUpdated"]  # type: ignore[union-attr]
    updated = schema._schema.type_map["SessionChange"].values["UPDATED"]  # type: ignore[attr-defined]
    for description in (field.description, updated.description):
        assert every in description and "`meterValues`" in description, description
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert "throttled to one a second per session" in readme
    assert SESSION_UPDATE_INTERVAL_S == 1.0  # README says "one a second"


def test_a_session_ending_twice_is_told_where_its_subscription_is() -> None:
    # QA s32: endSession's ENDED completed a per-session subscription, and the charger's
    # later stop corrected the session with a second ENDED that nobody had said exists.
    types = schema._schema.type_map
    ended = types["SessionChange"].values["ENDED"].description  # type: ignore[attr-defined]
    by_id = types["SessionEventFilter"].fields["sessionId"].description  # type: ignore[attr-defined]
    field = schema._schema.subscription_type.fields["sessionUpdated"]  # type: ignore[union-attr]
    assert "another ENDED" in ended and "`closedWithoutStop`" in ended
    assert "read the session again" in by_id and "`endSession`" in by_id
    assert "second ENDED" in (field.description or "")
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert "A session can end twice." in readme


def test_blocking_a_charging_card_says_it_stops_the_session_and_removal_why_not() -> None:
    # QA s33: a driver's block of their own card while it charged sent a
    # RemoteStopTransaction said only in domain/services/withdrawal.py, while removing it
    # then is refused IN_USE: an app team reads the schema and the README.
    status = schema._schema.type_map["UpdateIdTagInput"].fields["status"]  # type: ignore[attr-defined]
    assert "RemoteStopTransaction" in status.description
    assert "`removeIdTag` is refused IN_USE" in status.description
    remove = schema._schema.mutation_type.fields["removeIdTag"]  # type: ignore[union-attr]
    assert "unlike a block" in remove.description and "BLOCKED" in remove.description
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert "**Cards** (`issueIdTag`, `updateIdTag`, `removeIdTag`)" in readme
    assert "has that session stopped at once (RemoteStopTransaction" in readme
