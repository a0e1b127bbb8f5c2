"""The one server fixture of the Python suites (tests/sdk, tests/ui, tests/fuzz): the
`colloquy serve` and `colloquy worker` processes, their data dirs and throwaway PostgreSQL
databases, accounts (keys), logs, and the one-line result each suite leaves for scripts/test.

Nothing here builds the server: the binary comes from the COLLOQUY_BIN environment variable
(scripts/test sets it after `cargo build -p colloquy`). Each suite's conftest.py puts this
folder on `sys.path`, sets COLLOQUY_TEST_ARTIFACTS (where server logs go) and imports from
here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("COLLOQUY_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts" / "sdk"))
LISTEN_LINE = re.compile(r"Colloquy listening on (http://127\.0\.0\.1:(\d+))")
WORKER_LINE = re.compile(r"Colloquy worker running (\d+) reconstruction worker\(s\)")
PG_ADMIN_URL = os.environ.get(
    "COLLOQUY_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
BACKENDS = ("sqlite", "postgres")


def now_ms() -> int:
    return int(time.time() * 1000)


def new_temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def _psql(sql: str, url: str = PG_ADMIN_URL, timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(os.environ, PGCONNECT_TIMEOUT="5")
    return subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-t", "-A", "-c", sql],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def postgres_problem() -> Optional[str]:
    """None when PostgreSQL answers, else why not."""
    if shutil.which("psql") is None:
        return "psql is not installed"
    try:
        r = _psql("SELECT 1")
    except (subprocess.TimeoutExpired, OSError) as e:
        return f"psql failed: {e}"
    if r.returncode != 0 or r.stdout.strip() != "1":
        return f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {r.stderr.strip()}"
    return None


_pg_problem: Dict[str, Optional[str]] = {}


def require_backend(backend: str) -> None:
    """Skips a postgres test when PostgreSQL is unreachable (asked once per run), or fails it
    when COLLOQUY_TEST_POSTGRES=required."""
    if backend != "postgres":
        return
    if "p" not in _pg_problem:
        _pg_problem["p"] = postgres_problem()
    problem = _pg_problem["p"]
    if problem:
        if os.environ.get("COLLOQUY_TEST_POSTGRES") == "required":
            pytest.fail(f"COLLOQUY_TEST_POSTGRES=required but {problem}", pytrace=False)
        pytest.skip(f"PostgreSQL unavailable ({problem}); set COLLOQUY_TEST_POSTGRES=required to fail instead")


def pg_url_for(db: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{db}"


def create_pg_database() -> str:
    name = f"colloquy_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    r = _psql(f'CREATE DATABASE "{name}"')
    if r.returncode != 0:
        raise RuntimeError(f"CREATE DATABASE {name} failed: {r.stderr}")
    return name


def drop_pg_database(name: str) -> None:
    r = _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if r.returncode != 0:
        raise RuntimeError(f"DROP DATABASE {name} failed: {r.stderr}")


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


class ChildProcess:
    """A `colloquy` child process: stdout read line by line (kept in `stdout_lines`),
    stderr in a log file under ARTIFACTS."""

    proc: Optional[subprocess.Popen]
    log_path: Optional[Path]
    stdout_lines: List[str]

    def _spawn(self, what: str, args: List[str], env: Dict[str, str], ready: "re.Pattern[str]",
               timeout: float) -> "re.Match[str]":
        """Starts `args` and waits for the first stdout line that matches `ready`; that match."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()
        found = threading.Event()
        lines = self.stdout_lines
        holder: Dict[str, "re.Match[str]"] = {}

        def pump(stream):
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                lines.append(line)
                m = ready.search(line)
                if m and not found.is_set():
                    holder["m"] = m
                    found.set()
            stream.close()

        threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{what} exited with {self.proc.returncode} before it was ready; "
                    f"stdout={lines!r}; log {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError(f"{what} printed no ready line in {timeout}s; stdout={lines!r}")
        return holder["m"]

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except (OSError, AttributeError):
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> Optional[int]:
        """SIGTERM (SIGKILL after `timeout`); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class ServerProcess(ChildProcess):
    """One `colloquy serve` process on a given data dir / database."""

    def __init__(
        self,
        binary: str,
        backend: str,
        data_dir: Path,
        database_url: Optional[str],
        env: Optional[Dict[str, str]] = None,
        label: str = "server",
    ):
        self.binary = binary
        self.backend = backend
        self.data_dir = Path(data_dir)
        self.database_url = database_url
        self.extra_env = dict(env or {})
        self.label = label
        self.proc = None
        self.base_url: Optional[str] = None
        self.port: Optional[int] = None
        self.stdout_lines: List[str] = []
        self.log_path = None
        self._openapi: Optional[dict] = None
        self.starts = 0

    # -- process control ----------------------------------------------------------------

    def _env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLLOQUY_")}
        env.update(self.extra_env)
        return env

    def store_args(self) -> List[str]:
        args = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        return args

    def start(self, timeout: float = 60) -> "ServerProcess":
        """Starts the server and waits until it listens and answers /healthz."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.log_path = ARTIFACTS / f"{self.label}-{self.backend}-{os.getpid()}-{id(self):x}-{self.starts}.log"
        m = self._spawn(
            "colloquy serve",
            [self.binary, "serve", "--listen", "127.0.0.1:0", *self.store_args()],
            self._env(),
            LISTEN_LINE,
            timeout,
        )
        self.base_url, self.port = m.group(1), int(m.group(2))
        r = httpx.get(f"{self.base_url}/healthz", timeout=10)
        assert r.status_code == 200 and r.text.strip() == "ok", (r.status_code, r.text)
        return self

    def assert_stops_cleanly(self, what: str) -> None:
        """Asserts that the server is still running and exits with 0 on SIGTERM."""
        assert self.running, f"{what} died; log {self.log_path}:\n{self.log_tail()}"
        rc = self.stop()
        assert rc == 0, f"{what} exited with {rc} on SIGTERM; log:\n{self.log_tail()}"

    # -- CLI ----------------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [self.binary, *args, *self.store_args()],
            capture_output=True,
            text=True,
            timeout=60,
            env=self._env(),
            stdin=subprocess.DEVNULL,
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"colloquy {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def create_account(self, name: Optional[str] = None, no_retention: bool = False) -> "Account":
        """A new account and its key (`colloquy keys create`)."""
        args = ["keys", "create"]
        if name:
            args += ["--name", name]
        if no_retention:
            args.append("--no-retention")
        out = self.cli(*args).stdout.strip()
        obj = json.loads(out)
        assert set(obj) >= {"user_id", "api_key", "secret_key"}, obj
        assert UUID_RE.match(obj["user_id"]), obj
        return Account(server=self, user_id=obj["user_id"], api_key=obj["api_key"], secret_key=obj["secret_key"])

    def revoke(self, api_key: str) -> subprocess.CompletedProcess:
        return self.cli("keys", "revoke", api_key)

    # -- HTTP ---------------------------------------------------------------------------

    def openapi(self) -> dict:
        if self._openapi is None:
            r = httpx.get(f"{self.base_url}/openapi.json", timeout=10)
            assert r.status_code == 200, r.text
            self._openapi = r.json()
        return self._openapi


@dataclass
class Account:
    server: ServerProcess
    user_id: str
    api_key: str
    secret_key: str

    def client(self, contract=None, **kw):
        """A `hume.HumeClient` on this account (every response checked by `contract`, a
        tests/sdk ContractChecker, when given)."""
        from hume import HumeClient

        hooks = {"response": [contract.on_response]} if contract else {}
        kw.setdefault("api_key", self.api_key)
        return HumeClient(
            base_url=self.server.base_url,
            httpx_client=httpx.Client(timeout=30, event_hooks=hooks),
            **kw,
        )

    def async_client(self, contract=None):
        """A `hume.AsyncHumeClient` on this account (see `client`)."""
        from hume import AsyncHumeClient

        hooks = {"response": [contract.on_response_async]} if contract else {}
        return AsyncHumeClient(
            api_key=self.api_key,
            base_url=self.server.base_url,
            httpx_client=httpx.AsyncClient(timeout=30, event_hooks=hooks),
        )

    def fetch_token(self, secret: Optional[str] = None) -> httpx.Response:
        return httpx.post(
            f"{self.server.base_url}/oauth2-cc/token",
            auth=(self.api_key, self.secret_key if secret is None else secret),
            data={"grant_type": "client_credentials"},
            timeout=10,
        )


class WorkerProcess(ChildProcess):
    """One `colloquy worker` process (reconstruction workers only, no HTTP). Logs go to a
    file in JSON (`log.format = json`) so tests can parse them."""

    def __init__(
        self,
        binary: str,
        data_dir: Path,
        database_url: str,
        workers: int = 1,
        env: Optional[Dict[str, str]] = None,
        label: str = "worker",
    ):
        self.binary = binary
        self.data_dir = Path(data_dir)
        self.database_url = database_url
        self.workers = workers
        self.extra_env = dict(env or {})
        self.label = label
        self.proc = None
        self.stdout_lines: List[str] = []
        self.log_path = None

    def start(self, timeout: float = 30) -> "WorkerProcess":
        self.log_path = ARTIFACTS / f"{self.label}-{os.getpid()}-{id(self):x}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLLOQUY_") and k != "RUST_LOG"}
        env.update({"COLLOQUY_LOG__FORMAT": "json", "COLLOQUY_LOG__FILTER": "info"})
        env.update(self.extra_env)
        m = self._spawn(
            "colloquy worker",
            [
                self.binary, "worker", "--data-dir", str(self.data_dir),
                "--database-url", self.database_url, "--workers", str(self.workers),
            ],
            env,
            WORKER_LINE,
            timeout,
        )
        assert int(m.group(1)) == self.workers, self.stdout_lines
        return self

    def log_records(self) -> List[Dict[str, Any]]:
        """The JSON log lines written so far (a torn last line is ignored)."""
        out = []
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, AttributeError):
            return out
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def chats_logged(self, message: str) -> List[str]:
        """chat_id of every log line whose message is `message`, in order."""
        out = []
        for rec in self.log_records():
            fields = rec.get("fields") or {}
            if fields.get("message") == message and "chat_id" in fields:
                out.append(str(fields["chat_id"]))
        return out

    def finished(self) -> List[str]:
        return self.chats_logged("reconstruction finished")

    def started(self) -> List[str]:
        return self.chats_logged("reconstructing audio")


def run_sql(srv: ServerProcess, sql: str) -> str:
    """Runs one statement directly on a server's database (SQLite file or PostgreSQL);
    returns psql-style output (rows `|`-separated, one per line)."""
    if srv.backend == "postgres":
        url = srv.database_url
        assert url, "a postgres server always has an explicit database URL"
        r = _psql(sql, url=url)
        assert r.returncode == 0, f"psql failed: {r.stderr}"
        return r.stdout.strip()
    url = srv.database_url
    path = url.split("://", 1)[1] if url else str(srv.data_dir / "colloquy.db")
    conn = sqlite3.connect(path, timeout=30)
    try:
        with conn:
            rows = conn.execute(sql).fetchall()
        return "\n".join("|".join("" if v is None else str(v) for v in row) for row in rows)
    finally:
        conn.close()


class ServerFactory:
    """Creates servers with their own temp data dir (and own database on postgres);
    `cleanup` stops them and removes what they used."""

    def __init__(self, binary: str, backend: str, server_class: type = ServerProcess):
        self.binary = binary
        self.backend = backend
        self.server_class = server_class
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
        srv = self.server_class(self.binary, self.backend, data_dir, url, env=env, label=label)
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


# --------------------------------------------------------------------------------------------
# pytest: the binary, old logs, the one-line result for scripts/test
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def colloquy_bin() -> str:
    """The server binary ($COLLOQUY_BIN); the run stops when it is missing."""
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


def remove_old_logs() -> None:
    """Removes the server logs of previous runs from ARTIFACTS (this run's stay)."""
    if ARTIFACTS.is_dir():
        for old in ARTIFACTS.glob("*.log"):
            old.unlink(missing_ok=True)


def outcome_counts(terminalreporter, outcomes: Sequence[str] = ("passed", "failed", "error", "skipped")) -> str:
    """`3 passed, 1 failed` (or `no tests`) from pytest's terminal reporter."""
    stats = terminalreporter.stats
    counts = {k: len(stats.get(k, [])) for k in outcomes}
    return ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no tests"


def write_summary(line: str) -> None:
    """Leaves the suite's one-line result in $COLLOQUY_TEST_SUMMARY (scripts/test's summary)."""
    target = os.environ.get("COLLOQUY_TEST_SUMMARY")
    if target:
        Path(target).write_text(line + "\n")
