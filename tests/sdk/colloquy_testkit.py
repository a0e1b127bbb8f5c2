"""Helpers shared by the SDK conformance suite: server processes, accounts, contract checks.

Nothing here builds the server: the binary comes from the COLLOQUY_BIN environment variable
(scripts/test sets it after `cargo build -p colloquy`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import httpx
import jsonschema
from hume import AsyncHumeClient, HumeClient
from hume.core.pydantic_utilities import parse_obj_as
from hume.empathic_voice import SubscribeEvent
from websockets.exceptions import ConnectionClosed

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("COLLOQUY_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts" / "sdk"))
LISTEN_LINE = re.compile(r"Colloquy listening on (http://127\.0\.0\.1:(\d+))")
PG_ADMIN_URL = os.environ.get(
    "COLLOQUY_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def now_ms() -> int:
    return int(time.time() * 1000)


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
# Server processes
# --------------------------------------------------------------------------------------------


class ServerProcess:
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
        self.proc: Optional[subprocess.Popen] = None
        self.base_url: Optional[str] = None
        self.port: Optional[int] = None
        self.stdout_lines: List[str] = []
        self.log_path: Optional[Path] = None
        self._openapi: Optional[dict] = None
        self._schema_book: Optional[SchemaBook] = None
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
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log_path = ARTIFACTS / f"{self.label}-{self.backend}-{os.getpid()}-{id(self):x}-{self.starts}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--listen", "127.0.0.1:0", *self.store_args()],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=self._env(),
            start_new_session=True,
        )
        log.close()
        found = threading.Event()
        lines = self.stdout_lines
        holder: Dict[str, str] = {}

        def pump(stream):
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                lines.append(line)
                m = LISTEN_LINE.search(line)
                if m and not found.is_set():
                    holder["url"], holder["port"] = m.group(1), m.group(2)
                    found.set()
            stream.close()

        threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"colloquy serve exited with {self.proc.returncode} before listening; "
                    f"stdout={lines!r}; log {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError(f"colloquy serve did not print its listen line in {timeout}s")
        self.base_url, self.port = holder["url"], int(holder["port"])
        r = httpx.get(f"{self.base_url}/healthz", timeout=10)
        assert r.status_code == 200 and r.text.strip() == "ok", (r.status_code, r.text)
        return self

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except (OSError, AttributeError):
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> Optional[int]:
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

    @property
    def schema_book(self) -> "SchemaBook":
        if self._schema_book is None:
            self._schema_book = SchemaBook(self.openapi())
        return self._schema_book

    def contract(self) -> "ContractChecker":
        """A fresh response checker bound to this server's /openapi.json."""
        return ContractChecker(self.schema_book)


@dataclass
class Account:
    server: ServerProcess
    user_id: str
    api_key: str
    secret_key: str

    def client(self, contract: Optional["ContractChecker"] = None, **kw) -> HumeClient:
        hooks = {"response": [contract.on_response]} if contract else {}
        kw.setdefault("api_key", self.api_key)
        return HumeClient(
            base_url=self.server.base_url,
            httpx_client=httpx.Client(timeout=30, event_hooks=hooks),
            **kw,
        )

    def async_client(self, contract: Optional["ContractChecker"] = None) -> AsyncHumeClient:
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


# --------------------------------------------------------------------------------------------
# Contract checks against the server's own OpenAPI document
# --------------------------------------------------------------------------------------------

# Success body schema per REST route (names from the wire spec §2/§3).
ROUTE_SCHEMAS: Sequence = (
    (re.compile(r"^/v0/evi/chats$"), "ReturnPagedChats"),
    (re.compile(r"^/v0/evi/chats/[^/]+$"), "ReturnChatPagedEvents"),
    (re.compile(r"^/v0/evi/chats/[^/]+/audio$"), "ReturnChatAudioReconstruction"),
    (re.compile(r"^/v0/evi/chat_groups$"), "ReturnPagedChatGroups"),
    (re.compile(r"^/v0/evi/chat_groups/[^/]+$"), "ReturnChatGroupPagedChats"),
    (re.compile(r"^/v0/evi/chat_groups/[^/]+/events$"), "ReturnChatGroupPagedEvents"),
    (re.compile(r"^/v0/evi/chat_groups/[^/]+/audio$"), "ReturnChatGroupPagedAudioReconstructions"),
    (re.compile(r"^/oauth2-cc/token$"), "AccessTokenResponse"),
)
SCHEMA_NAMES = tuple(name for _, name in ROUTE_SCHEMAS) + ("ReturnChat", "ReturnChatEvent", "ReturnChatGroup", "ErrorResponse")


def schema_for(path: str, status: int) -> Optional[str]:
    if status >= 400:
        return "ErrorResponse"
    if 200 <= status < 300:
        for pattern, name in ROUTE_SCHEMAS:
            if pattern.match(path):
                return name
    return None


# Wire values of the API's enums (spec §3.6).
WIRE_ENUMS: Dict[str, List[str]] = {
    "ChatStatus": ["ACTIVE", "USER_ENDED", "USER_TIMEOUT", "MAX_DURATION_TIMEOUT", "INACTIVITY_TIMEOUT", "ERROR"],
    "EventRole": ["USER", "AGENT", "SYSTEM", "TOOL"],
    "EventType": [
        "AGENT_MESSAGE", "ASSISTANT_PROSODY", "CHAT_START_MESSAGE", "CHAT_END_MESSAGE", "FUNCTION_CALL",
        "FUNCTION_CALL_RESPONSE", "PAUSE_ONSET", "RESUME_ONSET", "SESSION_SETTINGS", "SYSTEM_PROMPT",
        "USER_INTERRUPTION", "USER_MESSAGE", "USER_RECORDING_START_MESSAGE",
    ],
    "PaginationDirection": ["ASC", "DESC"],
    "ReconstructionStatus": ["QUEUED", "IN_PROGRESS", "COMPLETE", "ERROR", "CANCELLED"],
}


class SchemaBook:
    """Validators for `#/components/schemas/<name>` of one OpenAPI 3.1 document."""

    def __init__(self, openapi: dict):
        self.openapi = openapi
        self._validators: Dict[str, jsonschema.Draft202012Validator] = {}

    def validator(self, name: str) -> jsonschema.Draft202012Validator:
        if name not in self._validators:
            schemas = self.openapi.get("components", {}).get("schemas", {})
            assert name in schemas, f"/openapi.json has no components/schemas/{name}"
            root = {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$ref": f"#/components/schemas/{name}",
                "components": self.openapi["components"],
            }
            jsonschema.Draft202012Validator.check_schema(root)
            self._validators[name] = jsonschema.Draft202012Validator(
                root, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
            )
        return self._validators[name]

    def errors(self, name: str, body: Any) -> List[str]:
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in self.validator(name).iter_errors(body)
        ]


@dataclass
class Checked:
    method: str
    path: str
    query: str
    status: int
    schema: Optional[str]
    body: Any


class ContractChecker:
    """httpx response hook: validates every JSON body the SDK (or a raw call) receives."""

    def __init__(self, book: SchemaBook):
        self.book = book
        self.checked: List[Checked] = []
        self.failures: List[str] = []

    def _check(self, response: httpx.Response) -> None:
        req = response.request
        path = req.url.path
        name = schema_for(path, response.status_code)
        body: Any = None
        ctype = response.headers.get("content-type", "")
        where = f"{req.method} {path}?{req.url.query.decode()} -> {response.status_code}"
        if name is not None:
            if not ctype.startswith("application/json"):
                self.failures.append(f"{where}: content-type {ctype!r}, expected application/json")
            try:
                body = json.loads(response.content)
            except ValueError:
                self.failures.append(f"{where}: body is not JSON: {response.text[:200]!r}")
            else:
                for err in self.book.errors(name, body):
                    self.failures.append(f"{where}: {name}: {err}")
        self.checked.append(Checked(req.method, path, req.url.query.decode(), response.status_code, name, body))

    def on_response(self, response: httpx.Response) -> None:
        response.read()
        self._check(response)

    async def on_response_async(self, response: httpx.Response) -> None:
        await response.aread()
        self._check(response)

    def requests_to(self, path: str) -> List[Checked]:
        return [c for c in self.checked if c.path == path]

    def schemas_seen(self) -> set:
        return {c.schema for c in self.checked if c.schema}

    def assert_ok(self) -> None:
        assert not self.failures, "responses that break /openapi.json:\n" + "\n".join(self.failures)


class Api:
    """Raw HTTP calls (for what the SDK cannot express), schema-checked like SDK calls."""

    def __init__(self, server: ServerProcess, contract: ContractChecker):
        self.server = server
        self.http = httpx.Client(
            base_url=server.base_url, timeout=30, event_hooks={"response": [contract.on_response]}
        )

    def get(self, path: str, key: Optional[str] = None, params=None, headers=None) -> httpx.Response:
        h = dict(headers or {})
        if key is not None:
            h["X-Hume-Api-Key"] = key
        return self.http.get(path, params=params, headers=h)


# --------------------------------------------------------------------------------------------
# Socket helpers
# --------------------------------------------------------------------------------------------


def recv(sock, timeout: float = 10.0):
    """Same as ChatSocketClient.recv() (parse into the SDK's SubscribeEvent), with a timeout."""
    raw = sock._websocket.recv(timeout=timeout)
    return parse_obj_as(SubscribeEvent, json.loads(raw))  # type: ignore[arg-type]


def expect(sock, type_: str, timeout: float = 10.0):
    msg = recv(sock, timeout)
    assert msg.type == type_, f"expected {type_}, got {msg!r}"
    return msg


def send_raw(sock, data) -> None:
    """Sends a frame the SDK's typed API would never produce (bad JSON, binary, …)."""
    sock._websocket.send(data)


def expect_closed(sock, timeout: float = 10.0) -> List[Any]:
    """Reads until the server closes the socket; returns what arrived before the close."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"socket still open after {timeout}s; received {got!r}"
        try:
            got.append(recv(sock, left))
        except ConnectionClosed:
            return got
        except TimeoutError:
            raise AssertionError(f"socket still open after {timeout}s; received {got!r}")


def audio_chunk(n: int = 640) -> str:
    """A base64 chunk of silent 16-bit PCM (n bytes)."""
    return base64.b64encode(bytes(n)).decode()


def all_events(client: HumeClient, chat_id: str, page_size: int = 100, ascending: bool = True):
    return list(
        client.empathic_voice.chats.list_chat_events(
            chat_id, page_size=page_size, page_number=0, ascending_order=ascending
        )
    )


def poll(fn: Callable[[], Any], timeout: float, interval: float = 0.25, what: str = "condition"):
    """Calls fn until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def new_temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
