"""Site load management: how a site's power is shared among the sessions charging behind
its grid connection, and the charging profile that tells a charger its share.

Pure functions: ``allocate`` decides the shares, ``limit_in_unit`` converts one to what the
charger is sent, ``tx_profile`` builds the SetChargingProfile payload. The enforcement
(when to recompute, sending, recording answers) is ``services/site_load.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from domain.entities import ChargingRateUnit

#: ChargeGraph's TxProfiles have the id ``PROFILE_ID_BASE + connectorId``: one per
#: connector, since a profile with an id the charger holds replaces that one (OCPP 1.6,
#: 3.13.2), and one id for all connectors would move the limit from plug to plug. Far
#: above what back offices number their own profiles from.
PROFILE_ID_BASE = 7_160_000
#: The id of a site charger's fallback (``fallback_profile``): connector 0's, which no
#: TxProfile of ours uses.
FALLBACK_PROFILE_ID = PROFILE_ID_BASE
#: Their stack level: above the TxProfiles an operator sets by hand at the usual levels,
#: so the site's limit wins; an operator who must override it uses a level above this.
#: A charger whose ChargeProfileMaxStackLevel is lower gets that (``site_load``).
STACK_LEVEL = 90


@dataclass(frozen=True, slots=True)
class Demand:
    """A session charging on a site: who, when it started (the later, the first paused),
    its connector's rating (``None``: not known, no cap) and the least it may be given
    unless paused (``least_kw``: for limits in amperes 6 A on its connector's phases,
    ``entities.min_session_kw``, the least IEC 61851 lets an AC charger offer; 0 for
    limits in watts)."""

    session_id: str
    started: datetime
    transaction_id: int
    max_kw: float | None = None
    least_kw: float = 0.0


def allocate(limit_kw: float, min_kw: float, demands: Sequence[Demand],
             reserved_kw: float = 0.0) -> dict[str, float]:
    """Each session's share (kW) of ``limit_kw`` less ``reserved_kw`` (what sessions
    outside the sharing still hold: an offline charger keeps applying its last limit).

    Equal shares, each capped at its connector's rating, what a cap leaves over shared by
    the others (water-filling). Nobody gets less than ``min_kw`` (or its rating, if that
    is lower), nor less than its ``least_kw`` (in amperes, 6 A on its phases: a
    connector rated below that is given that, which it cannot draw more than anyway):
    when the site cannot give every session that much, the sessions started last get 0
    (paused) until each of the rest gets its least. Deterministic: by start, then
    transaction id. Shares are rounded down to whole watts, so they never add up to more
    than the limit, but never below the least they were given (``floor_share``).
    """
    available = max(limit_kw - reserved_kw, 0.0)
    ordered = [_capped(d) for d in sorted(
        demands, key=lambda d: (d.started, d.transaction_id, d.session_id))]
    floors = [least_share(d, min_kw) for d in ordered]
    kept = len(ordered)
    shares = {d.session_id: 0.0 for d in ordered}
    while kept:
        if sum(floors[:kept]) <= available + 1e-9:
            fill = _water_fill(available, ordered[:kept])
            # Equal shares may leave one below its own least when the leasts differ (a
            # three-phase connector's 6 A on a single-phase site's minimum): it is not
            # sent less than it charges at; the last started is paused instead.
            if all(fill[d.session_id] >= d.least_kw - 1e-9 for d in ordered[:kept]):
                shares.update(fill)
                break
        kept -= 1  # the most recently started of those left is paused
    least = {d.session_id: floor for d, floor in zip(ordered, floors, strict=True)}
    return {sid: floor_share(kw, least[sid]) for sid, kw in shares.items()}


def floor_to(value: float, step: float) -> float:
    """``value`` rounded down to a multiple of ``step`` (whole watts of kW: 0.001; OCPP's
    0.1), so that a limit is never rounded up. The epsilon keeps a float that is a hair
    below a step (0.3 * 1000 = 299.99999999999994) on it."""
    per_step = round(1 / step)
    return math.floor(value * per_step + 1e-6) / per_step


def floor_share(power_kw: float, least_kw: float) -> float:
    """``power_kw`` rounded down to whole watts, but one that is at least ``least_kw``
    (a session's ``least_share``) not below that: 6 A is no whole number of watts at
    most voltages (1.3902 kW at 231.7 V), and rounded down (1.390 kW) it was sent as
    5.9 A, or the session paused as below its least (review r4). Never more than
    ``power_kw`` (but for a float's last bits): shares still add up to the limit at most."""
    rounded = floor_to(power_kw, 0.001)
    return max(rounded, least_kw) if power_kw >= least_kw - 1e-9 else rounded


def least_share(demand: Demand, min_kw: float) -> float:
    """The least a session may be given but 0: the site's minimum, or its connector's
    rating when that is lower (it can never reach the minimum; it still charges), and
    never less than its ``least_kw``."""
    capped = _capped(demand)
    if capped.max_kw is None:
        return max(min_kw, capped.least_kw)
    return max(min(min_kw, capped.max_kw), capped.least_kw)


def _capped(demand: Demand) -> Demand:
    """``demand`` with its rating raised to its ``least_kw``: a connector rated below 6 A
    on its phases is given 6 A (it draws its rating), not a limit it cannot charge at."""
    if demand.max_kw is None or demand.max_kw >= demand.least_kw:
        return demand
    return replace(demand, max_kw=demand.least_kw)


def _water_fill(available: float, demands: Sequence[Demand]) -> dict[str, float]:
    """Equal shares of ``available``; a session capped below its share keeps its cap and
    the others share what it leaves."""
    shares: dict[str, float] = {}
    left = list(demands)
    remaining = available
    while left:
        level = remaining / len(left)
        capped = [d for d in left if d.max_kw is not None and d.max_kw <= level]
        if not capped:
            shares.update((d.session_id, level) for d in left)
            break
        for demand in capped:
            assert demand.max_kw is not None
            shares[demand.session_id] = demand.max_kw
            remaining -= demand.max_kw
        done = {d.session_id for d in capped}
        left = [d for d in left if d.session_id not in done]
    return shares


def limit_in_unit(power_kw: float, unit: ChargingRateUnit, voltage: float, phases: int
                  ) -> float:
    """A share as the charger is told it: W, or A per phase at the site's voltage and the
    phases of the session's connector (the site's when not given). Rounded down to
    OCPP's 0.1 steps, so the charger never gets more."""
    watts = power_kw * 1000
    value = watts if unit is ChargingRateUnit.W else watts / (voltage * phases)
    return floor_to(value, 0.1)


def profile_id(connector_id: int) -> int:
    return PROFILE_ID_BASE + connector_id


def tx_profile(connector_id: int, transaction_id: int, limit: float,
               unit: ChargingRateUnit, phases: int, stack_level: int = STACK_LEVEL
               ) -> dict[str, Any]:
    """The SetChargingProfile request for a session's share: a TxProfile for its
    transaction on its connector, one period from its start on."""
    payload = _profile(connector_id, "TxProfile", limit, unit, phases, stack_level)
    payload["csChargingProfiles"]["transactionId"] = transaction_id
    return payload


def fallback_profile(limit: float, unit: ChargingRateUnit, phases: int,
                     stack_level: int = STACK_LEVEL) -> dict[str, Any]:
    """The SetChargingProfile request for a site charger's fallback: a TxDefaultProfile
    on connector 0 (every connector's transactions to come), ``FALLBACK_PROFILE_ID``.
    A transaction draws it from its start until its own TxProfile (the site's share)
    arrives, which overrules it whatever the stack levels (OCPP 1.6, 3.13.2), and
    while the charger cannot reach the central system."""
    return _profile(0, "TxDefaultProfile", limit, unit, phases, stack_level)


def _profile(connector_id: int, purpose: str, limit: float, unit: ChargingRateUnit,
             phases: int, stack_level: int) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "chargingRateUnit": unit.value,
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
    }
    if unit is ChargingRateUnit.A:
        schedule["chargingSchedulePeriod"][0]["numberPhases"] = phases
    return {
        "connectorId": connector_id,
        "csChargingProfiles": {
            "chargingProfileId": profile_id(connector_id),
            "stackLevel": stack_level,
            "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Relative",
            "chargingSchedule": schedule,
        },
    }
