"""Password hashing with argon2id (the ``PasswordHasher`` port)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError


class Argon2Hasher:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()  # argon2-cffi's RFC 9106 low-memory profile

    @classmethod
    def fast(cls) -> Argon2Hasher:
        """Cheap parameters for tests and benchmarks; never for production."""
        return cls(PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (Argon2Error, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (Argon2Error, InvalidHashError):
            return False
