"""Fixtures of the API fuzzing suite (schemathesis against the server's /openapi.json).

* The server binary comes from $COLLOQUY_BIN (scripts/test builds it); nothing is built here.
* The server is started by the shared fixture of every suite, tests/colloquy_server.py.
* Server logs, schemathesis' output and its JUnit report go to test-artifacts/fuzz/.
* The one-line result for scripts/test's summary goes to $COLLOQUY_TEST_SUMMARY.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "fuzz"
os.environ.setdefault("COLLOQUY_TEST_ARTIFACTS", str(ARTIFACTS))
# The shared server fixture (tests/colloquy_server.py) and the SDK suite's helpers (test
# signals).
sys.path[:0] = [str(REPO_ROOT / "tests"), str(REPO_ROOT / "tests" / "sdk")]

from colloquy_server import (  # noqa: E402
    colloquy_bin,  # noqa: F401 - the fixture
    outcome_counts,
    remove_old_logs,
    write_summary,
)

_SUMMARY: dict = {}


def pytest_sessionstart(session):
    """Old server logs from previous runs are removed (logs of this run stay for inspection)."""
    remove_old_logs()


@pytest.fixture(scope="session")
def summary() -> dict:
    """Tests put a short note here (e.g. how many cases schemathesis generated)."""
    return _SUMMARY


def pytest_terminal_summary(terminalreporter):
    line = outcome_counts(terminalreporter)
    if _SUMMARY.get("note"):
        line += f"; {_SUMMARY['note']}"
    write_summary(line)
