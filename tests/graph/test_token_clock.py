"""``TokenService`` checks a token's times on its own clock, ``exp`` as ``iat`` and
``nbf``, each with ``LEEWAY`` (review s31: PyJWT checked ``iat``/``nbf`` on the system's
clock, so under a clock set ahead a fresh token was refused INVALID_TOKEN)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from domain.errors import Unauthenticated
from graph.auth import AUDIENCE, ISSUER, LEEWAY, TokenService

SECRET = "s" * 32
YEAR = timedelta(days=365)


def code(tokens: TokenService, token: str) -> str | None:
    try:
        tokens.subject(token)
    except Unauthenticated as refused:
        return refused.code
    return None


@pytest.mark.parametrize("apart", [YEAR, -YEAR])
def test_a_token_is_judged_on_the_services_clock_however_far_from_the_systems(
        apart: timedelta) -> None:
    issued = datetime.now(UTC).replace(microsecond=0) + apart
    clock = [issued]
    tokens = TokenService(SECRET, timedelta(hours=1), clock=lambda: clock[0])
    token = tokens.issue("u1").token
    assert tokens.subject(token).user_id == "u1"
    # Issued later than the clock by the leeway: taken; by more: refused, not expired.
    clock[0] = issued - LEEWAY
    assert code(tokens, token) is None
    clock[0] = issued - LEEWAY - timedelta(seconds=1)
    assert code(tokens, token) == "INVALID_TOKEN"
    clock[0] = issued + timedelta(hours=1) + LEEWAY  # ``exp`` as before
    assert code(tokens, token) == "TOKEN_EXPIRED"


def test_a_token_not_before_a_later_time_is_refused_until_then() -> None:
    clock = [datetime.now(UTC).replace(microsecond=0) - YEAR]
    tokens = TokenService(SECRET, timedelta(hours=1), clock=lambda: clock[0])
    now = int(clock[0].timestamp())
    later = jwt.encode({"sub": "u1", "iat": now, "nbf": now + 600, "exp": now + 3600,
                        "iss": ISSUER, "aud": AUDIENCE}, SECRET, algorithm="HS256")
    assert code(tokens, later) == "INVALID_TOKEN"
    clock[0] += timedelta(seconds=600) - LEEWAY
    assert code(tokens, later) is None
