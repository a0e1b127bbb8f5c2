"""Schemathesis against a fresh server: requests generated from /openapi.json (valid ones
and invalid ones), every answer checked against the document, with every check enabled.

The run is bounded (fixed seed, a fixed number of examples per operation, a time limit) and
must end without any failure. Before it, the test records chats (one with audio, whose
reconstruction completes) so that list endpoints return data, links between operations lead
somewhere, and the signed download serves a real file: its path, expiry and signature are
given to schemathesis, which fuzzes the rest (the `Range` header among them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from websockets.sync.client import connect

from colloquy_server import ServerFactory, ServerProcess
from colloquy_testkit import pcm_chunks_b64, tone_pcm

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "fuzz"
HOOKS = Path(__file__).resolve().with_name("schemathesis_hooks.py")

# Fixed, so that a run can be repeated; COLLOQUY_FUZZ_SEED explores others.
SEED = int(os.environ.get("COLLOQUY_FUZZ_SEED", "20240611"))
MAX_EXAMPLES = 150
# Schemathesis' budget: fuzzing and stateful testing repeat until it is spent.
MAX_TIME_SECS = 120


def _schemathesis() -> str:
    exe = Path(sys.executable).with_name("schemathesis")
    if exe.exists():
        return str(exe)
    found = shutil.which("schemathesis")
    if not found:
        pytest.skip(
            "schemathesis is not installed (tests/fuzz/requirements.txt; it needs Python 3.11+)"
        )
    return found


def _chat(srv: ServerProcess, api_key: str, query: str = "", audio: bool = False) -> dict:
    """Runs one short chat over the socket; its chat_metadata."""
    url = f"ws://127.0.0.1:{srv.port}/v0/evi/chat?api_key={api_key}"
    if audio:
        url += (
            "&session_settings[audio][encoding]=linear16"
            "&session_settings[audio][sample_rate]=16000&session_settings[audio][channels]=1"
        )
    if query:
        url += f"&{query}"
    with connect(url, open_timeout=10) as ws:
        meta = json.loads(ws.recv(timeout=10))
        assert meta["type"] == "chat_metadata", meta
        if audio:
            for chunk in pcm_chunks_b64(tone_pcm(1.0)):
                ws.send(json.dumps({"type": "audio_input", "data": chunk}))
        ws.send(json.dumps({"type": "user_input", "text": "hello fuzzer"}))
        while json.loads(ws.recv(timeout=10))["type"] != "user_message":
            pass
    return meta


def _completed_audio(srv: ServerProcess, api_key: str, chat_id: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        r = httpx.get(
            f"{srv.base_url}/v0/evi/chats/{chat_id}/audio",
            headers={"X-Hume-Api-Key": api_key},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] not in ("QUEUED", "IN_PROGRESS"):
            assert body["status"] == "COMPLETE", body
            return body
        assert time.monotonic() < deadline, f"reconstruction did not finish: {body}"
        time.sleep(0.25)


@pytest.fixture(scope="module")
def server(colloquy_bin):
    factory = ServerFactory(colloquy_bin, "sqlite")
    try:
        yield factory.new("fuzz")
    finally:
        factory.cleanup()


def test_schemathesis_finds_nothing(server, summary):
    account = server.create_account("fuzz")
    other = server.create_account("fuzz-other")
    first = _chat(server, account.api_key, audio=True)
    _chat(server, account.api_key, query=f"resumed_chat_group_id={first['chat_group_id']}")
    doomed_chat = _chat(server, account.api_key)
    doomed_group = _chat(server, account.api_key)
    _chat(server, other.api_key)
    audio = _completed_audio(server, account.api_key, first["chat_id"])
    link = urlsplit(audio["signed_audio_url"])
    m = re.fullmatch(r"/v0/evi/audio/([^/]+)/([^/]+)/reconstructed_audio\.mp4", link.path)
    assert m, link.path
    query = parse_qs(link.query)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out_dir = ARTIFACTS / "schemathesis"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    # (Each `include-*` key of a block is one more filter, any of which selects an operation,
    # hence one regex over the operation's name, "METHOD /path".)
    # Real ids for the read operations (random ones only ever find nothing), chats of their
    # own for the deletes (which the stateful phase, following links from the lists, would
    # otherwise aim at the data the reads need), the key's Basic credentials for the token
    # endpoint, and the signed link of the reconstruction.
    config = out_dir / "schemathesis.toml"
    config.write_text(
        f"""
[[operations]]
include-name-regex = '^GET /v0/evi/chats/.'
parameters = {{ "path.id" = "{first['chat_id']}" }}

[[operations]]
include-name-regex = '^GET /v0/evi/chat_groups/.'
parameters = {{ "path.id" = "{first['chat_group_id']}" }}

[[operations]]
include-name-regex = '^DELETE /v0/evi/chats/.'
parameters = {{ "path.id" = "{doomed_chat['chat_id']}" }}
phases.stateful.enabled = false

[[operations]]
include-name-regex = '^DELETE /v0/evi/chat_groups/.'
parameters = {{ "path.id" = "{doomed_group['chat_group_id']}" }}
phases.stateful.enabled = false

[[operations]]
include-name-regex = '^POST /oauth2-cc/token$'
auth.basic = {{ username = "{account.api_key}", password = "{account.secret_key}" }}

[[operations]]
include-path-regex = '^/v0/evi/audio/'
[operations.parameters]
"path.user_id" = "{m.group(1)}"
"path.chat_id" = "{m.group(2)}"
"query.expires" = {int(query["expires"][0])}
"query.signature" = "{query["signature"][0]}"
"""
    )
    cmd = [
        _schemathesis(),
        "--config-file", str(config),
        "run", f"{server.base_url}/openapi.json",
        "--header", f"X-Hume-Api-Key: {account.api_key}",
        "--checks", "all",
        "--seed", str(SEED),
        "--max-examples", str(MAX_EXAMPLES),
        "--max-time", str(MAX_TIME_SECS),
        # One worker: with two, hypothesis' function-description cache (shared by the worker
        # threads) raced and failed the run with an internal KeyError, not a finding.
        "--workers", "1",
        "--generation-database", "none",
        # Credentials are the ones given here, never generated: a generated (malformed)
        # `Authorization` header next to a valid `X-Hume-Api-Key` is a request the server
        # rightly accepts (the key satisfies one of the operation's security alternatives),
        # which schemathesis would report as "schema-violating request accepted".
        "--generation-with-security-parameters", "false",
        "--request-timeout", "30",
        "--report", "junit",
        "--report-dir", str(out_dir),
        "--no-color",
    ]
    started = time.monotonic()
    run = subprocess.run(
        cmd,
        cwd=out_dir,
        capture_output=True,
        text=True,
        timeout=MAX_TIME_SECS + 120,
        env=dict(os.environ, SCHEMATHESIS_HOOKS=str(HOOKS)),
    )
    took = time.monotonic() - started
    output = run.stdout + run.stderr
    (out_dir / "output.txt").write_text(output)
    cases = re.search(r"(\d+) generated", output)
    summary["note"] = (
        f"{cases.group(1) if cases else '?'} generated cases in {took:.0f}s; "
        "output in test-artifacts/fuzz/schemathesis/"
    )
    assert run.returncode == 0, (
        f"schemathesis found problems (exit {run.returncode}); full output in "
        f"{out_dir / 'output.txt'}:\n{output[-12000:]}"
    )
    # Nothing was left untested for want of data or credentials.
    assert "Tested: " in output, output[-3000:]
