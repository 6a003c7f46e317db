"""Time buckets aligned in an IANA zone (``domain/timebuckets.py``)."""

from __future__ import annotations

import pytest

from domain.errors import ValidationError
from domain.timebuckets import zone


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/Argentina/ComodRivadavia",
                                  "Australia/Lord_Howe", "Etc/GMT+5"])
def test_iana_zone_names_are_accepted(name: str) -> None:
    assert zone(name).key == name


@pytest.mark.parametrize("name", [
    # Loadable files of the host's zoneinfo tree that are no IANA zone: the leap-second
    # and POSIX copies, the factory placeholder, the host's own setting (whatever it is).
    "right/Europe/Berlin", "posix/Europe/Berlin", "Factory", "localtime", "posixrules",
    "Mars/Olympus", "europe/berlin", "../zoneinfo/UTC", "Europe/Berlin/", "", "x" * 65])
def test_other_names_are_an_unknown_zone(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        zone(name, "timeZone")
    assert (err.value.field, err.value.code) == ("timeZone", "INVALID")
