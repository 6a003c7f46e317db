"""How a site's power is shared (``domain.load_sharing``): equal shares, capped at each
connector's rating with the rest shared again, never below the minimum (the sessions
started last paused instead), deterministic; and the limit as a charger is told it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from domain.entities import ChargingRateUnit, min_session_kw
from domain.load_sharing import (
    PROFILE_ID_BASE,
    STACK_LEVEL,
    Demand,
    allocate,
    limit_in_unit,
    tx_profile,
)

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def demand(n: int, max_kw: float | None = None) -> Demand:
    """Session ``s<n>``, started ``n`` minutes after T0 (a higher n started later)."""
    return Demand(f"s{n}", T0 + timedelta(minutes=n), 100 + n, max_kw)


def test_one_session_gets_the_whole_limit() -> None:
    assert allocate(40, 1.4, [demand(1)]) == {"s1": 40}


def test_one_session_gets_no_more_than_its_connector_delivers() -> None:
    assert allocate(40, 1.4, [demand(1, max_kw=22)]) == {"s1": 22}


def test_sessions_share_equally() -> None:
    assert allocate(40, 1.4, [demand(1), demand(2)]) == {"s1": 20, "s2": 20}


def test_what_a_capped_session_leaves_is_shared_by_the_others() -> None:
    # 60 kW: three equal shares would be 20; the 7.4 kW wall box takes 7.4, the other
    # two share the remaining 52.6, and the 11 kW one is capped at 11 in turn.
    shares = allocate(60, 1.4, [demand(1, 7.4), demand(2, 11), demand(3)])
    assert shares == {"s1": 7.4, "s2": 11, "s3": 41.6}


def test_every_session_capped_leaves_power_unused() -> None:
    assert allocate(100, 1.4, [demand(1, 22), demand(2, 11)]) == {"s1": 22, "s2": 11}


def test_the_most_recently_started_are_paused_when_the_minimum_does_not_fit() -> None:
    # 4 kW cannot give three sessions 1.4 kW each: the last started is paused (0), the
    # other two share the 4 kW.
    shares = allocate(4, 1.4, [demand(3), demand(1), demand(2)])
    assert shares == {"s1": 2, "s2": 2, "s3": 0}


def test_no_session_gets_less_than_the_minimum() -> None:
    shares = allocate(10, 3, [demand(n) for n in range(1, 6)])
    assert shares == {"s1": 3.333, "s2": 3.333, "s3": 3.333, "s4": 0, "s5": 0}
    assert all(kw == 0 or kw >= 3 for kw in shares.values())


def test_a_connector_rated_below_the_minimum_still_charges_at_its_rating() -> None:
    # It can never reach 6 kW; it takes its 3.7 kW, leaving room for the other.
    assert allocate(10, 6, [demand(1, 3.7), demand(2)]) == {"s1": 3.7, "s2": 6.3}


def test_reserved_power_is_not_shared_out() -> None:
    assert allocate(40, 1.4, [demand(1), demand(2)], reserved_kw=10) == {"s1": 15, "s2": 15}


def test_nothing_left_pauses_everyone() -> None:
    assert allocate(10, 1.4, [demand(1)], reserved_kw=12) == {"s1": 0}


def test_no_sessions_no_shares() -> None:
    assert allocate(40, 1.4, []) == {}


def test_ties_in_start_are_broken_by_transaction_id() -> None:
    a = Demand("a", T0, 7)
    b = Demand("b", T0, 5)
    assert allocate(2, 1.4, [a, b]) == {"a": 0, "b": 2}


def test_shares_are_deterministic_and_never_exceed_the_limit() -> None:
    rng = random.Random(7)
    for _ in range(300):
        demands = [demand(n, rng.choice([None, 3.7, 7.4, 11, 22, 50, 150]))
                   for n in range(rng.randint(1, 12))]
        limit, minimum = rng.uniform(1, 200), rng.choice([1.4, 4.2, 6])
        shares = allocate(limit, minimum, demands)
        shuffled = demands[:]
        rng.shuffle(shuffled)
        assert allocate(limit, minimum, shuffled) == shares  # order of input is no matter
        assert sum(shares.values()) <= limit + 1e-9
        for d in demands:
            kw = shares[d.session_id]
            floor = minimum if d.max_kw is None else min(minimum, d.max_kw)
            assert kw == 0 or kw >= floor - 1e-3
            assert d.max_kw is None or kw <= d.max_kw
        # Paused sessions started after every session still charging.
        paused = [d.started for d in demands if shares[d.session_id] == 0]
        charging = [d.started for d in demands if shares[d.session_id] > 0]
        if paused and charging:
            assert min(paused) > max(charging)


@pytest.mark.parametrize(("kw", "unit", "volts", "phases", "expected"), [
    (22, ChargingRateUnit.W, 230, 3, 22_000.0),
    (3.3333, ChargingRateUnit.W, 230, 3, 3333.3),
    (11, ChargingRateUnit.A, 230, 3, 15.9),  # 15.94 A per phase, rounded down
    (7.36, ChargingRateUnit.A, 230, 1, 32.0),
    (0, ChargingRateUnit.A, 230, 3, 0.0),
])
def test_limits_are_sent_in_the_site_s_unit_rounded_down(
        kw: float, unit: ChargingRateUnit, volts: float, phases: int, expected: float
) -> None:
    assert limit_in_unit(kw, unit, volts, phases) == expected


def test_the_profile_is_a_tx_profile_of_chargegraph_s_own() -> None:
    profile = tx_profile(2, 4711, 16.0, ChargingRateUnit.A, 3)
    assert profile == {
        "connectorId": 2,
        "csChargingProfiles": {
            "chargingProfileId": PROFILE_ID_BASE + 2, "transactionId": 4711,
            "stackLevel": STACK_LEVEL, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 16.0, "numberPhases": 3}]}}}


def test_what_a_charger_may_draw_after_each_answer() -> None:
    from domain.entities import LimitAnswer as A
    from domain.services.site_load import bound_after

    assert [bound_after(22.0, 15.0, answer) for answer in (
        A.ACCEPTED, A.REJECTED, A.NOT_SUPPORTED, A.TIMEOUT, A.OFFLINE, A.ERROR)] == [
        15.0, 22.0, 22.0, 22.0, 22.0, 22.0]
    assert bound_after(11.0, 22.0, A.TIMEOUT) == 22.0  # a raise it may have taken


def test_the_stack_level_is_the_chargers_highest_when_lower() -> None:
    from domain.load_sharing import STACK_LEVEL
    from domain.services.site_load import stack_level_of

    def answer(value: str) -> dict[str, object]:
        return {"configurationKey": [{"key": "ChargeProfileMaxStackLevel",
                                      "value": value, "readonly": True}]}

    assert [stack_level_of(answer(v)) for v in ("10", " 3 ", "500", "x")] == [
        10, 3, STACK_LEVEL, STACK_LEVEL]
    assert stack_level_of({"unknownKey": ["ChargeProfileMaxStackLevel"]}) == STACK_LEVEL


def test_the_stack_level_is_read_whatever_the_keys_case() -> None:
    # OCPP keys are CiStrings: a charger echoing them lowercased had its units
    # followed and was sent level 90 above its own 10, refusing every limit (review r27).
    from domain.services.site_load import allowed_units_of, stack_level_of
    answer = {"configurationKey": [
        {"key": "chargeprofilemaxstacklevel", "value": "10", "readonly": True},
        {"key": "chargingscheduleallowedchargingrateunit", "value": "Current",
         "readonly": True}]}
    assert allowed_units_of(answer)
    assert stack_level_of(answer) == 10


def test_a_limit_goes_in_the_unit_the_charger_takes() -> None:
    from domain.entities import ChargingRateUnit as U
    from domain.services.site_load import allowed_units_of, unit_to_send

    def answer(value: str) -> dict[str, object]:
        return {"configurationKey": [{"key": "ChargingScheduleAllowedChargingRateUnit",
                                      "value": value, "readonly": True}]}

    assert [allowed_units_of(answer(v)) for v in ("Current", " power ", "Current,Power",
                                                  "Watts", "")] == [
        {U.A}, {U.W}, {U.A, U.W}, set(), set()]
    assert allowed_units_of({"unknownKey": ["ChargingScheduleAllowedChargingRateUnit"]}) \
        == set()
    assert allowed_units_of({"configurationKey": [{
        "key": "chargingscheduleallowedchargingrateunit", "value": "Current"}]}) == {U.A}
    # The site's own unit unless the charger takes only the other.
    assert [unit_to_send(U.W, frozenset(given)) for given in ({U.A}, {U.W}, {U.A, U.W}, ())
            ] == [U.A, U.W, U.W, U.W]
    assert unit_to_send(U.A, frozenset({U.W})) is U.W


def amps(n: int, max_kw: float | None, phases: int) -> Demand:
    """Session ``s<n>`` on a site limited in amperes (230 V): its least is 6 A on its
    connector's ``phases``."""
    return Demand(f"s{n}", T0 + timedelta(minutes=n), 100 + n, max_kw,
                  least_kw=6 * 230 * phases / 1000)


def test_a_connector_rated_below_6_a_is_given_6_a_not_its_rating() -> None:
    """QA sites s5: a 3.7 kW wallbox counted on three phases was given 3.7 kW, sent as
    5.3 A, which no AC charger charges at. It is given 6 A (4.14 kW), which it cannot
    draw more than its rating of anyway; on its one phase 3.7 kW is 16 A, above."""
    shares = allocate(40, 4.14, [amps(1, 3.7, 3), amps(2, 3.7, 1)])
    assert shares == {"s1": 4.14, "s2": 3.7}
    assert limit_in_unit(shares["s1"], ChargingRateUnit.A, 230, 3) == 6.0
    assert limit_in_unit(shares["s2"], ChargingRateUnit.A, 230, 1) == 16.0


def test_a_share_below_a_session_s_6_a_pauses_the_last_started_instead() -> None:
    # A single-phase site (minimum 1.38 kW) with a three-phase charger: equal shares of
    # 6 kW (3 kW each) are 4.3 A on three phases. The last started is paused, and the
    # three-phase one gets what is left, at least 6 A.
    shares = allocate(6, 1.38, [amps(1, None, 3), amps(2, None, 1)])
    assert shares == {"s1": 6, "s2": 0}
    shares = allocate(6, 1.38, [amps(1, None, 1), amps(2, None, 3)])
    assert shares == {"s1": 6, "s2": 0}
    # Enough for both: equal shares, each at least its 6 A.
    assert allocate(9, 1.38, [amps(1, None, 3), amps(2, None, 1)]) == {"s1": 4.5, "s2": 4.5}


def test_a_share_of_6_a_is_not_rounded_below_it_at_any_voltage() -> None:
    """6 A at 231.7 V is 1.3902 kW, no whole number of watts: the share the site's limit
    gives exactly that is not rounded down to 1.390 kW (sent as 5.9 A, or paused as
    below its least; review r4), and it is sent as 6.0 A."""
    least = min_session_kw(231.7, 1)
    demand = Demand("s1", T0, 1, max_kw=3.7, least_kw=least)
    share = allocate(least, least, [demand])["s1"]
    assert share >= least - 1e-9
    assert limit_in_unit(share, ChargingRateUnit.A, 231.7, 1) == 6.0
    # Two at 6 A each on a limit 1 W short of both: the last started is paused, and
    # the other is given its 6 A, no more than the limit.
    shares = allocate(2 * least - 0.001, least, [
        demand, Demand("s2", T0 + timedelta(seconds=1), 2, max_kw=3.7, least_kw=least)])
    assert shares["s2"] == 0.0 and shares["s1"] >= least - 1e-9
    assert sum(shares.values()) <= 2 * least - 0.001
