"""Helpers of the SDK conformance suite: contract checks against the server's
/openapi.json, socket helpers, audio signals and decoders, an S3 store. (The UI and fuzzing
suites use some of them too.)

Server processes, accounts and logs are the shared fixture of every suite,
tests/colloquy_server.py; the suites' conftest.py put both folders on `sys.path`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import httpx
import jsonschema
from hume import HumeClient
from hume.core.pydantic_utilities import parse_obj_as
from hume.empathic_voice import SubscribeEvent
from websockets.exceptions import ConnectionClosed

from colloquy_server import ARTIFACTS, ServerProcess

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


class ContractServer(ServerProcess):
    """A server process whose responses tests check against its own /openapi.json."""

    _schema_book: Optional[SchemaBook] = None

    @property
    def schema_book(self) -> SchemaBook:
        if self._schema_book is None:
            self._schema_book = SchemaBook(self.openapi())
        return self._schema_book

    def contract(self) -> "ContractChecker":
        """A fresh response checker bound to this server's /openapi.json."""
        return ContractChecker(self.schema_book)


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


def expect_answer(sock, text: str, timeout: float = 10.0):
    """Reads the answer to an `assistant_input` of `text`: its `assistant_message`, the
    `audio_output` chunks of its speech (the server speaks it by default, with the built-in
    voice), up to `assistant_end`. Checks each chunk's `id` (= the message's) and `index`
    (0, 1, ...); returns the message and the chunks."""
    am = expect(sock, "assistant_message", timeout)
    assert am.message.content == text, am
    chunks = []
    while True:
        msg = recv(sock, timeout)
        if msg.type == "assistant_end":
            return am, chunks
        assert msg.type == "audio_output", f"expected audio_output or assistant_end, got {msg!r}"
        assert (msg.id, msg.index) == (am.id, len(chunks)), msg
        chunks.append(msg)


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


# --------------------------------------------------------------------------------------------
# Audio (tests/sdk/test_audio.py): test signals, ffprobe, signatures, an S3 store, Chromium
# --------------------------------------------------------------------------------------------


def tone_pcm(seconds: float, freq: float = 440.0, rate: int = 16000, amplitude: float = 0.5) -> bytes:
    """A sine tone as mono 16-bit little-endian PCM."""
    n = int(round(seconds * rate))
    peak = amplitude * 32767
    return struct.pack(f"<{n}h", *(int(peak * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)))


def tone_wav(seconds: float, freq: float = 440.0, rate: int = 16000) -> bytes:
    """A complete mono 16-bit WAV file holding a sine tone."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone_pcm(seconds, freq, rate))
    return buf.getvalue()


def split_b64(data: bytes, size: int) -> List[str]:
    """`data` cut into chunks of `size` bytes, each base64-encoded (for `audio_input`)."""
    return [base64.b64encode(data[i : i + size]).decode() for i in range(0, len(data), size)]


def pcm_chunks_b64(pcm: bytes, rate: int = 16000, chunk_ms: int = 20, channels: int = 1) -> List[str]:
    """16-bit PCM cut into `chunk_ms` chunks (whole frames), each base64-encoded."""
    return split_b64(pcm, rate * 2 * channels * chunk_ms // 1000)


def require_ffmpeg() -> None:
    """Fails (not skips) when ffmpeg/ffprobe are missing: the audio tests need them."""
    missing = [t for t in ("ffprobe", "ffmpeg") if shutil.which(t) is None]
    if missing:
        import pytest

        pytest.fail(
            f"{' and '.join(missing)} not found on PATH: install ffmpeg (Debian: apt-get install "
            "ffmpeg; .ci/run does this) to run the audio tests",
            pytrace=False,
        )


def ffprobe(path: Path) -> Dict[str, Any]:
    """`ffprobe -v error -show_streams -show_format -of json <path>` as a dict."""
    require_ffmpeg()
    r = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, f"ffprobe rejected {path}: {r.stderr}"
    return json.loads(r.stdout)


def decode_mono(path: Path, rate: int = 48000) -> List[int]:
    """The file decoded by ffmpeg (an independent decoder) to mono 16-bit samples."""
    require_ffmpeg()
    r = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", str(rate), "-"],
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 0, f"ffmpeg could not decode {path}: {r.stderr.decode(errors='replace')}"
    n = len(r.stdout) // 2
    return list(struct.unpack(f"<{n}h", r.stdout[: 2 * n]))


def tone_stats(samples: Sequence[int], rate: int = 48000) -> Dict[str, float]:
    """RMS (0..1) and dominant frequency (from zero crossings) of a stretch of samples."""
    if not samples:
        return {"rms": 0.0, "freq": 0.0}
    rms = math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
    return {"rms": rms, "freq": crossings / 2 / (len(samples) / rate)}


def make_webm_opus(seconds: float, freq: float = 440.0, amplitude: float = 0.5) -> bytes:
    """A WebM/Opus file of a sine tone, encoded by ffmpeg (libopus or ffmpeg's own encoder)."""
    require_ffmpeg()
    source = f"aevalsrc={amplitude}*sin(2*PI*{freq}*t):s=48000:d={seconds}"
    base = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", source]
    errors = []
    for codec in (["-c:a", "libopus"], ["-c:a", "opus", "-strict", "-2", "-ac", "2"]):
        r = subprocess.run([*base, *codec, "-f", "webm", "-"], capture_output=True, timeout=60)
        if r.returncode == 0 and r.stdout:
            return r.stdout
        errors.append(r.stderr.decode(errors="replace"))
    raise AssertionError(f"ffmpeg could not encode WebM/Opus: {errors}")


def read_capture_records(data: bytes) -> List[tuple]:
    """Parses captured segment bytes: records `offset_ms: i64 LE | len: u32 LE | bytes`."""
    out, pos = [], 0
    while pos < len(data):
        offset, n = struct.unpack_from("<qI", data, pos)
        pos += 12
        out.append((offset, data[pos : pos + n]))
        pos += n
    assert pos == len(data), "a truncated capture record"
    return out


def local_signature(data_dir: Path, path: str, expires_ms: int) -> str:
    """The signature Colloquy puts on a local download URL (HMAC-SHA256 over
    `GET\\n<path>\\n<expires>` with `<data_dir>/signing.key`)."""
    key = bytes.fromhex((Path(data_dir) / "signing.key").read_text().strip())
    return hmac.new(key, f"GET\n{path}\n{expires_ms}".encode(), hashlib.sha256).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoS3:
    """A moto S3 server (`python -m moto.server`, from `moto[server]`) on a free port."""

    ACCESS_KEY = "colloquy-test-key"
    SECRET_KEY = "colloquy-test-secret"
    REGION = "us-east-1"

    def __init__(self, label: str = "moto"):
        self.label = label
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None
        self.log_path: Optional[Path] = None

    def start(self, timeout: float = 30) -> "MotoS3":
        try:
            import moto  # noqa: F401
        except ImportError:
            import pytest

            pytest.fail("moto is not installed: pip install -r tests/sdk/requirements.txt", pytrace=False)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log_path = ARTIFACTS / f"{self.label}-{os.getpid()}-{self.port}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=2)
                return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto server did not answer on {self.endpoint} within {timeout}s")
            time.sleep(0.1)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.REGION,
            aws_access_key_id=self.ACCESS_KEY,
            aws_secret_access_key=self.SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def colloquy_env(self, bucket: str) -> Dict[str, str]:
        """The `COLLOQUY_STORAGE__*` settings that point a server at this store."""
        return {
            "COLLOQUY_STORAGE__BUCKET": bucket,
            "COLLOQUY_STORAGE__ENDPOINT": self.endpoint,
            "COLLOQUY_STORAGE__REGION": self.REGION,
            "COLLOQUY_STORAGE__ACCESS_KEY_ID": self.ACCESS_KEY,
            "COLLOQUY_STORAGE__SECRET_ACCESS_KEY": self.SECRET_KEY,
        }

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def chromium_media_duration(url: str, timeout: float = 60.0) -> str:
    """Loads `url` in an <audio> element of headless Chromium (Debian's `chromium`) and
    returns what the page saw: `meta:<duration>` once Chromium's demuxer and decoder accepted
    the file, or `error:<MediaError code>` (4 = format/codec not supported)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is required: apt-get install -y chromium (CI's .ci/run installs it)"
    work = Path(tempfile.mkdtemp(prefix="colloquy-chromium-"))
    try:
        page = work / "play.html"
        page.write_text(
            "<html><head><title>loading</title></head><body>"
            f"<audio id='a' preload='auto' src='{url}'></audio><script>"
            "const a=document.getElementById('a');"
            "a.onerror=()=>{document.title='error:'+(a.error&&a.error.code)};"
            "a.onloadedmetadata=()=>{document.title='meta:'+a.duration};"
            "</script></body></html>"
        )
        out = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={work / 'profile'}", "--virtual-time-budget=8000", "--dump-dom",
             page.as_uri()],
            capture_output=True, text=True, timeout=timeout,
        )
        m = re.search(r"<title>([^<]*)</title>", out.stdout)
        return m.group(1) if m else f"no title (exit {out.returncode}): {out.stderr[-500:]}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
