"""Persistence adapters implementing ``domain.ports.Store``: ``sqlite`` (embedded default)
and ``mongo`` (large networks). Both pass ``tests/contract``."""
