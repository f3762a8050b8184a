"""Shared test helpers (import as ``helpers.<module>``; tests/models/conftest.py puts tests/ on sys.path)."""
