"""Which tariff version prices a session: one set after its start came never does."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.clock import utcnow
from domain.entities import Role, Session
from domain.errors import ValidationError
from domain.policy import Viewer
from domain.services.tariffs import _valid_from

OPERATOR = Viewer(user_id="op", role=Role.OPERATOR, company_id="co")
ADMIN = Viewer(user_id="ad", role=Role.ADMIN)


def test_an_operator_s_version_dated_a_moment_back_starts_now() -> None:
    """QA s21: a validFrom 55 s back (within the slack for clients' clocks) was stored
    as given, and the sessions started in those 55 s were billed at the new price."""
    asked = utcnow() - timedelta(seconds=55)
    before = utcnow()
    assert _valid_from(asked, OPERATOR) >= before
    assert _valid_from(asked, ADMIN) == asked  # admins correct history
    later = utcnow() + timedelta(hours=1)
    assert _valid_from(later, OPERATOR) == later
    with pytest.raises(ValidationError) as raised:
        _valid_from(utcnow() - timedelta(minutes=5), OPERATOR)
    assert (raised.value.field, raised.value.code) == ("validFrom", "OUT_OF_RANGE")


def test_a_start_stamped_ahead_of_our_clock_is_priced_when_it_came() -> None:
    """QA s21: a charger 4 minutes ahead; a version set a second after its start came
    priced the session (its start instant was later)."""
    came = utcnow()
    ahead = Session(station_id="st", cp_id="CP", connector_id=1, transaction_id=1,
                    id_tag="T", user_id="u", meter_start_wh=0,
                    start_time=came + timedelta(minutes=4), created_at=came)
    assert ahead.priced_at == came
    queued = Session(station_id="st", cp_id="CP", connector_id=1, transaction_id=2,
                     id_tag="T", user_id="u", meter_start_wh=0,
                     start_time=came - timedelta(hours=3), created_at=came)
    assert queued.priced_at == queued.start_time  # sent later, priced when it began
