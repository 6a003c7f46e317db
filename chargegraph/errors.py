"""Errors of the service shell."""

from __future__ import annotations


class ConfigError(ValueError):
    """The configuration cannot work (bad URL, weak secret). The CLI prints the message and
    exits 2 instead of showing a traceback; a ``ValueError`` so callers may catch either."""
