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

import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from colloquy_testkit import (
    Api,
    ServerProcess,
    create_pg_database,
    drop_pg_database,
    new_temp_dir,
    pg_url_for,
    postgres_problem,
)

BACKENDS = ("sqlite", "postgres")


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


_pg_problem: Dict[str, Optional[str]] = {}


def _require_backend(backend: str) -> None:
    if backend != "postgres":
        return
    if "p" not in _pg_problem:
        _pg_problem["p"] = postgres_problem()
    problem = _pg_problem["p"]
    if problem:
        if os.environ.get("COLLOQUY_TEST_POSTGRES") == "required":
            pytest.fail(f"COLLOQUY_TEST_POSTGRES=required but {problem}", pytrace=False)
        pytest.skip(f"PostgreSQL unavailable ({problem}); set COLLOQUY_TEST_POSTGRES=required to fail instead")


class ServerFactory:
    """Creates servers with their own temp data dir (and own database on postgres)."""

    def __init__(self, binary: str, backend: str):
        self.binary = binary
        self.backend = backend
        self.servers: List[ServerProcess] = []
        self.databases: List[str] = []
        self.dirs: List[Path] = []

    def new(
        self,
        label: str,
        env: Optional[Dict[str, str]] = None,
        share_database_with: Optional[ServerProcess] = None,
        explicit_sqlite_url: bool = False,
        start: bool = True,
    ) -> ServerProcess:
        data_dir = new_temp_dir(f"colloquy-{label}-{self.backend}-")
        self.dirs.append(data_dir)
        url: Optional[str] = None
        if share_database_with is not None:
            url = share_database_with.database_url
            assert url, "share_database_with needs a server with an explicit database URL"
        elif self.backend == "postgres":
            db = create_pg_database()
            self.databases.append(db)
            url = pg_url_for(db)
        elif explicit_sqlite_url:
            url = f"sqlite://{data_dir / 'colloquy.db'}"
        srv = ServerProcess(self.binary, self.backend, data_dir, url, env=env, label=label)
        self.servers.append(srv)
        if start:
            srv.start()
        return srv

    def cleanup(self) -> None:
        errors = []
        for srv in self.servers:
            try:
                srv.stop()
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                errors.append(f"stop {srv.label}: {e}")
        for db in self.databases:
            try:
                drop_pg_database(db)
            except Exception as e:  # noqa: BLE001
                errors.append(str(e))
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        assert not errors, errors


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    _require_backend(request.param)
    return request.param


@pytest.fixture(scope="session")
def server(colloquy_bin, backend):
    """The shared server of this backend (one per test session). It runs no reconstruction
    workers, so audio records stay QUEUED while tests inspect them (tests/sdk/test_audio.py
    uses dedicated servers with workers)."""
    factory = ServerFactory(colloquy_bin, backend)
    try:
        srv = factory.new("shared", env={"COLLOQUY_AUDIO__WORKERS": "0"})
        yield srv
        assert srv.running, f"the shared {backend} server died; log {srv.log_path}:\n{srv.log_tail()}"
        rc = srv.stop()
        assert rc == 0, f"the shared {backend} server exited with {rc} on SIGTERM; log:\n{srv.log_tail()}"
    finally:
        factory.cleanup()


@pytest.fixture
def dedicated(colloquy_bin, backend):
    """Factory for servers owned by one test: dedicated(label, env=..., ...)."""
    factory = ServerFactory(colloquy_bin, backend)
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
    from colloquy_testkit import ARTIFACTS

    if ARTIFACTS.is_dir():
        for old in ARTIFACTS.glob("*.log"):
            old.unlink(missing_ok=True)


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
    target = os.environ.get("COLLOQUY_TEST_SUMMARY")
    if target:
        Path(target).write_text(line + "\n")
