"""Fixtures of the SDK conformance suite.

* The server binary comes from $COLLOQUY_BIN (nothing is built here).
* `server` is one long-lived server per backend (`sqlite`, `postgres`); tests isolate
  themselves by creating a fresh account (`account`, `other_account`).
* `dedicated` starts extra servers (own data dir / database, own env) for tests that need
  special settings or kill the process.
* PostgreSQL: each server gets a uniquely named database, dropped afterwards. If PostgreSQL
  is unreachable the postgres variants are skipped, unless COLLOQUY_TEST_POSTGRES=required.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict

import pytest

# The shared server fixture of every suite (tests/colloquy_server.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colloquy_server import (  # noqa: E402
    BACKENDS,
    ServerFactory,
    colloquy_bin,  # noqa: F401 - the fixture
    remove_old_logs,
    require_backend,
    write_summary,
)
from colloquy_testkit import Api, ContractServer  # noqa: E402


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    require_backend(request.param)
    return request.param


@pytest.fixture(scope="session")
def server(colloquy_bin, backend):
    """The shared server of this backend (one per test session). It runs no reconstruction
    workers, so audio records stay QUEUED while tests inspect them (tests/sdk/test_audio.py
    uses dedicated servers with workers)."""
    factory = ServerFactory(colloquy_bin, backend, ContractServer)
    try:
        srv = factory.new("shared", env={"COLLOQUY_AUDIO__WORKERS": "0"})
        yield srv
        srv.assert_stops_cleanly(f"the shared {backend} server")
    finally:
        factory.cleanup()


@pytest.fixture
def dedicated(colloquy_bin, backend):
    """Factory for servers owned by one test: dedicated(label, env=..., ...)."""
    factory = ServerFactory(colloquy_bin, backend, ContractServer)
    yield factory.new
    factory.cleanup()


@pytest.fixture
def contract(server):
    """Validates every response body of the test against the server's /openapi.json."""
    checker = server.contract()
    yield checker
    checker.assert_ok()


@pytest.fixture
def account(server, request):
    return server.create_account(name=f"{request.node.name}-a"[:60])


@pytest.fixture
def other_account(server, request):
    return server.create_account(name=f"{request.node.name}-b"[:60])


@pytest.fixture
def client(account, contract):
    return account.client(contract)


@pytest.fixture
def api(server, contract):
    return Api(server, contract)


# ---- housekeeping and a per-backend summary ------------------------------------------------

_TALLY: Dict[str, Dict[str, int]] = {}


def pytest_sessionstart(session):
    """Old server logs from previous runs are removed (logs of this run stay for inspection)."""
    remove_old_logs()


def _backend_of(nodeid: str) -> str:
    import re

    m = re.search(r"\[(sqlite|postgres)(?:-|\])", nodeid)
    return m.group(1) if m else "other"


def pytest_runtest_logreport(report):
    outcome = None
    if report.when == "call":
        outcome = "xfailed" if hasattr(report, "wasxfail") and report.skipped else report.outcome
    elif report.when == "setup" and not report.passed:
        outcome = "skipped" if report.skipped else "error"
    elif report.when == "teardown" and report.failed:
        outcome = "error"
    if outcome:
        counts = _TALLY.setdefault(_backend_of(report.nodeid), {})
        counts[outcome] = counts.get(outcome, 0) + 1


def pytest_terminal_summary(terminalreporter):
    if not _TALLY:
        return
    parts = []
    for backend in sorted(_TALLY):
        counts = _TALLY[backend]
        parts.append(f"{backend}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    line = "; ".join(parts)
    terminalreporter.write_sep("-", "per backend")
    terminalreporter.write_line(line)
    write_summary(line)
