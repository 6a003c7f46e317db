"""Bearer tokens: HS256 JWTs naming the user and the user's token epoch. The token only
carries identity; role and company are read fresh on every request, so a demotion takes
effect at once, and a password change or deactivation raises the epoch, which revokes
every token issued before (also once the account is active again). A token issued with a
refresh token names its device (``fid``, the refresh family), so ``User.devices`` can tell
the caller's own; it is not checked against the family: signing one device out ends its
refresh chain, and its access tokens live until they expire (README)."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from domain.clock import utcnow
from domain.errors import Unauthenticated

ISSUER = "chargegraph"
AUDIENCE = "chargegraph-api"
#: How long past its ``exp`` a token is still taken, and how long before its ``iat`` and
#: ``nbf`` (as PyJWT's own checks allowed): the issuer's and the checker's clocks may be
#: apart (instances on machines of their own). README (Accounts and sign-in) tells
#: clients so.
LEEWAY = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TokenSubject:
    user_id: str
    #: The user's token epoch when it was issued (0 for tokens older than epochs).
    epoch: int
    #: When ``subject`` starts refusing the token as expired: its ``exp`` and the
    #: ``LEEWAY``.
    valid_until: datetime
    #: The device (refresh family) it was issued to; ``None`` for tokens issued without
    #: one (the CLI's, and those older than devices).
    family_id: str | None = None


class TokenService:
    def __init__(self, secret: str, ttl: timedelta,
                 clock: Callable[[], datetime] = utcnow) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        self._secret = secret
        self._ttl = ttl
        #: Issues and expires tokens: PyJWT's own check would read the system's clock,
        #: which no test can set.
        self._clock = clock

    def now(self) -> datetime:
        """The time tokens are issued and expire by (``clock``)."""
        return self._clock()

    def keyed_digest(self, purpose: str, data: bytes) -> str:
        """HMAC-SHA256 of ``data`` under a key derived from the secret for ``purpose``:
        a digest kept in the database (an idempotency key's fingerprint, over variables
        that may hold a password) that a copy of the database alone cannot test guesses
        against, as it could a plain hash."""
        key = hmac.new(self._secret.encode(), purpose.encode(), hashlib.sha256).digest()
        return hmac.new(key, data, hashlib.sha256).hexdigest()

    def issue(self, user_id: str, epoch: int = 0, family_id: str | None = None
              ) -> IssuedToken:
        now = self._clock()
        expires = now + self._ttl
        claims: dict[str, object] = {
            "sub": user_id,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "iss": ISSUER,
            "aud": AUDIENCE,
            "jti": uuid.uuid4().hex,
            "epoch": epoch,
        }
        if family_id is not None:
            claims["fid"] = family_id
        return IssuedToken(jwt.encode(claims, self._secret, algorithm="HS256"), expires)

    def subject(self, token: str) -> TokenSubject:
        """Who a valid token names; ``Unauthenticated`` for anything else."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],  # never trust the token's own "alg"
                audience=AUDIENCE,
                issuer=ISSUER,
                # ``exp``, ``iat`` and ``nbf`` are checked on ``clock`` below: PyJWT's own
                # checks read the system's clock, so a clock set ahead (a test's, or an
                # instance's) found a fresh token "not yet valid" (review s31).
                options={"require": ["exp", "sub", "iat"], "verify_exp": False,
                         "verify_iat": False, "verify_nbf": False},
            )
            # As PyJWT reads them (whole numbers of seconds), on ``clock``.
            valid_until = datetime.fromtimestamp(int(claims["exp"]), UTC) + LEEWAY
            valid_from = datetime.fromtimestamp(
                max(int(claims["iat"]), int(claims.get("nbf", 0))), UTC) - LEEWAY
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError, OSError) as exc:
            raise Unauthenticated("the token is not valid", code="INVALID_TOKEN") from exc
        now = self._clock()
        if now < valid_from:  # issued in the future, past the clocks' leeway
            raise Unauthenticated("the token is not valid", code="INVALID_TOKEN")
        if now >= valid_until:
            raise Unauthenticated("the token has expired", code="TOKEN_EXPIRED")
        epoch = claims.get("epoch", 0)
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise Unauthenticated("the token is not valid", code="INVALID_TOKEN")
        family = claims.get("fid")
        return TokenSubject(str(claims["sub"]), epoch, valid_until,
                            family if isinstance(family, str) else None)


#: What a credential not of the ``Bearer <token>`` form is told, over HTTP and as a
#: websocket's close reason (``live_ws``): a format mistake, not a sign-out.
BEARER_FORMAT = "use 'Authorization: Bearer <token>'"


class BadBearerFormat(Unauthenticated):
    """A credential not of the ``Bearer <token>`` form: over HTTP the same code and
    message as any bad token's; a websocket closes with ``BEARER_FORMAT`` as its reason."""

    def __init__(self) -> None:
        super().__init__(BEARER_FORMAT, code="INVALID_TOKEN")


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header (scheme case-insensitive)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise BadBearerFormat()
    return token.strip()
