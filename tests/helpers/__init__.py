"""Shared test helpers, imported as ``helpers.<module>`` (pyproject.toml puts tests/ on the path)."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
