"""The words both stores use for a unique rule that said no."""

from __future__ import annotations

from domain.ports import PARTIAL_UNIQUE_RULES, UNIQUE_RULES
from store.fields import duplicate_message

#: Every unique rule's message, as a person reads it: no column names, no "cp".
EXPECTED = {
    ("user", ("email",)): "another user has the same email",
    ("company", ("name",)): "another company has the same name",
    # Names of one identity are one name ("BÄCKEREI X" is "Bäckerei X").
    ("company", ("name_identity",)): "another company has the same name",
    ("vehicle", ("plate_key", "owner_id")):
        "another vehicle has the same license plate and owner",
    ("id_tag", ("tag",)): "another id tag has the same tag",
    ("station", ("cp_id",)): "another station has the same charge point id (cpId)",
    ("connector", ("cp_id", "connector_id")):
        "another connector has the same charge point id (cpId) and connector id",
    ("session", ("transaction_id",)): "another session has the same transaction id",
    ("reservation", ("reservation_id",)):
        "another reservation has the same reservation id",
    ("payment", ("session_id",)): "another payment has the same session",
    # Never shown to anyone: tokens are drawn at random, a clash is a bug.
    ("refresh_token", ("token_hash",)): "another refresh token has the same token hash",
    # Never shown either: written from chargers' accepted lists, one entry per tag.
    ("local_list_entry", ("station_id", "tag")):
        "another local list entry has the same station and tag",
    # Never shown either: written from chargers' answers, recorded again on a clash.
    ("configuration_key", ("station_id", "folded_key")):
        "another configuration key has the same station and key",
}


def test_every_unique_rule_is_told_in_the_words_people_use() -> None:
    rules = {(kind, rule) for kind, kind_rules in UNIQUE_RULES.items() for rule in kind_rules}
    # A partial rule's words too (the session's own are the stores' ``_MESSAGES``).
    rules |= {(kind, rule) for kind, kind_rules in PARTIAL_UNIQUE_RULES.items()
              for rule, _ in kind_rules if kind != "session"}
    assert rules == set(EXPECTED)  # a new rule gets its message checked here
    assert {rule: duplicate_message(*rule) for rule in rules} == EXPECTED


def test_a_repeated_id_is_the_id() -> None:
    assert duplicate_message("station", ("id",)) == "another station has the same id"
