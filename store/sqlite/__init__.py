"""The embedded default store: one SQLite file in WAL mode (``SqliteStore``)."""

from store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
