"""Test support: backends and servers the suites share."""
