"""The JWT signing secret: configured, or generated once and kept — never hard-coded."""

from __future__ import annotations

import logging
import os
import secrets

from chargegraph.settings import Settings

log = logging.getLogger("chargegraph")
MIN_SECRET = 32


def resolve_jwt_secret(settings: Settings) -> str:
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value()
        if len(secret) < MIN_SECRET:
            raise ValueError(f"CHARGEGRAPH_JWT_SECRET must be at least {MIN_SECRET} characters")
        return secret
    path = settings.resolved_state_dir() / "jwt_secret"
    if path.exists():
        secret = path.read_text(encoding="utf-8").strip()
        if len(secret) >= MIN_SECRET:
            return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # Created with 0600 from the start: the secret is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret)
    log.warning("No CHARGEGRAPH_JWT_SECRET set: generated one and stored it in %s. "
                "Set CHARGEGRAPH_JWT_SECRET when running several instances.", path)
    return secret
