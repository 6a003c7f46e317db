"""A credential not sent as ``Bearer <token>`` is told apart by its type
(``BadBearerFormat``), not by its message: over HTTP it reads as any bad token, a socket
closes with the format's words."""

from __future__ import annotations

import pytest

from domain.errors import Unauthenticated
from graph.auth import BEARER_FORMAT, BadBearerFormat, bearer_token
from graph.live_ws import _close_reason


@pytest.mark.parametrize("header", ["a-bare-token", "Token abc", "Bearer ", "Basic a b"])
def test_a_header_not_of_the_bearer_form_is_a_bad_bearer_format(header: str) -> None:
    with pytest.raises(BadBearerFormat) as refused:
        bearer_token(header)
    # HTTP's answer unchanged: the code and message of a token refused.
    assert isinstance(refused.value, Unauthenticated)
    assert (refused.value.code, refused.value.message) == ("INVALID_TOKEN", BEARER_FORMAT)
    assert _close_reason(refused.value) == BEARER_FORMAT


def test_the_close_reason_goes_by_the_error_s_kind_not_its_words() -> None:
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token(None) is None
    assert _close_reason(Unauthenticated(BEARER_FORMAT, code="INVALID_TOKEN")) == "Forbidden"
    assert _close_reason(Unauthenticated("expired", code="TOKEN_EXPIRED")) == "Token expired"
