"""Where the suite's shared files are, for a test at any depth under tests/."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"  # shipped, scrubbed cores (tests/make_fixtures.py)
GOLDEN = TESTS / "golden"  # expected terminal views
PROGS = TESTS / "progs"  # C programs the oracles compile
