"""Fixtures of the API fuzzing suite (schemathesis against the server's /openapi.json).

* The server binary comes from $COLLOQUY_BIN (scripts/test builds it); nothing is built here.
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
# The server helpers of the SDK suite (process control, accounts, signatures).
os.environ.setdefault("COLLOQUY_TEST_ARTIFACTS", str(ARTIFACTS))
sys.path.insert(0, str(REPO_ROOT / "tests" / "sdk"))

_SUMMARY: dict = {}


@pytest.fixture(scope="session")
def colloquy_bin() -> str:
    path = os.environ.get("COLLOQUY_BIN")
    if not path:
        pytest.exit(
            "COLLOQUY_BIN is not set: build with `cargo build -p colloquy` and point it at "
            "$CARGO_TARGET_DIR/debug/colloquy (scripts/test does this)",
            returncode=4,
        )
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.exit(f"COLLOQUY_BIN={path} is not an executable file", returncode=4)
    return path


def pytest_sessionstart(session):
    """Old server logs from previous runs are removed (logs of this run stay for inspection)."""
    if ARTIFACTS.is_dir():
        for old in ARTIFACTS.glob("*.log"):
            old.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def summary() -> dict:
    """Tests put a short note here (e.g. how many cases schemathesis generated)."""
    return _SUMMARY


def pytest_terminal_summary(terminalreporter):
    stats = terminalreporter.stats
    counts = {k: len(stats.get(k, [])) for k in ("passed", "failed", "error", "skipped")}
    line = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no tests"
    if _SUMMARY.get("note"):
        line += f"; {_SUMMARY['note']}"
    target = os.environ.get("COLLOQUY_TEST_SUMMARY")
    if target:
        Path(target).write_text(line + "\n")
