"""MongoDB backend (PyMongo's async API) for large networks."""

from store.mongo.store import MongoStore

__all__ = ["MongoStore"]
