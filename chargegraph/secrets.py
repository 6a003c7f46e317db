"""The JWT signing secret: configured, or generated once and kept — never hard-coded."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from pathlib import Path

from chargegraph.errors import ConfigError
from chargegraph.settings import Settings
from chargegraph.stores import make_database_folder

log = logging.getLogger("chargegraph")
MIN_SECRET = 32


def secret_beside_database(settings: Settings) -> str:
    """``resolve_jwt_secret`` on a path that opens the database (`serve`, create-user):
    the database's folder made first, as ``make_database_folder`` says why (the secret's
    state folder is beside it by default); one it cannot make is the store start's."""
    make_database_folder(settings.database_url, or_leave_it=True)
    return resolve_jwt_secret(settings)


def resolve_jwt_secret(settings: Settings) -> str:
    """``CHARGEGRAPH_JWT_SECRET``, else ``<state_dir>/jwt_secret``, else a new secret stored
    there (mode 0600) with a warning."""
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value()
        if len(secret) < MIN_SECRET:
            raise ConfigError(f"CHARGEGRAPH_JWT_SECRET must be at least {MIN_SECRET} "
                              f"characters (it has {len(secret)})")
        return secret
    path = settings.resolved_state_dir() / "jwt_secret"
    try:
        if path.exists():
            return _read(path)
        created = _create(path)
        if created is not None:
            log.warning("No CHARGEGRAPH_JWT_SECRET set: generated one and stored it in %s. "
                        "Set CHARGEGRAPH_JWT_SECRET when running several instances.", path)
            return created
        return _read(path)  # another process starting at the same moment created it first
    except OSError as error:
        # A state dir that cannot be made, written or read is the operator's to fix.
        where = f": {error.filename}" if error.filename else ""
        raise ConfigError(f"cannot keep the JWT secret in {path}: "
                          f"{error.strerror or error}{where}; make CHARGEGRAPH_STATE_DIR a "
                          "writable folder or set CHARGEGRAPH_JWT_SECRET") from None


def _read(path: Path) -> str:
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < MIN_SECRET:
        # Not regenerated silently: a short file was written by someone, not by us.
        raise ConfigError(f"{path} holds a secret shorter than {MIN_SECRET} characters; "
                          "delete the file to generate a new one")
    return secret


def _create(path: Path) -> str | None:
    """Writes a new secret to ``path`` atomically; ``None`` when the file appeared
    meanwhile. The secret goes to a private temporary file first and is linked into place,
    so nobody ever reads a half-written or world-readable secret."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secret)
        try:
            os.link(temporary, path)  # fails if the file exists: the first process wins
        except FileExistsError:
            return None
        except OSError:
            os.replace(temporary, path)  # a filesystem without hard links: last one wins
    finally:
        temporary.unlink(missing_ok=True)
    return secret


def derived_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for ``purpose`` from the deployment's secret (the JWT secret every
    instance shares): what it keys never reveals the secret, nor is it the secret
    itself (a key that leaks, a digest on the bus, forges no token)."""
    return hashlib.sha256(f"chargegraph {purpose}\0{secret}".encode()).digest()
