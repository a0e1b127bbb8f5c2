"""The EVI control plane (evi-platform.md §6) through the official Python SDK's
`control_plane.send` and a raw observer socket (the SDK 0.14.1's `control_plane.connect`
builds its URL without the chat id, so observers connect as Hume's own example does), on
both backends; and across two `colloquy serve` processes sharing one PostgreSQL database,
including after the server running the chat is killed.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
import websockets.sync.client as ws_client
from hume.empathic_voice import AssistantInput, SessionSettings, UnprocessableEntityError, UserInput

from colloquy_server import Account, ServerProcess, create_pg_database, drop_pg_database, new_temp_dir, pg_url_for, require_backend
from colloquy_testkit import all_events, expect, expect_answer, poll


def observe(base_url: str, chat_id: str, api_key: str):
    url = base_url.replace("http://", "ws://") + f"/v0/evi/chat/{chat_id}/connect?api_key={api_key}"
    return ws_client.connect(url, open_timeout=10, max_size=None)


def next_json(sock, timeout: float = 10.0) -> dict:
    return json.loads(sock.recv(timeout=timeout))


def test_send_reaches_the_chat_as_its_own_message(account, client):
    ev = client.empathic_voice
    with ev.chat.connect() as sock:
        meta = expect(sock, "chat_metadata")
        ev.control_plane.send(meta.chat_id, request=UserInput(text="from the backend"))
        echo = expect(sock, "user_message")
        assert echo.message.content == "from the backend"
        ev.control_plane.send(meta.chat_id, request=SessionSettings(system_prompt="Be terse."))
        ev.control_plane.send(meta.chat_id, request=AssistantInput(text="Noted."))
        expect_answer(sock, "Noted.")
        # audio_input is refused with the validation body the SDK parses
        r = httpx.post(
            f"{account.server.base_url}/v0/evi/chat/{meta.chat_id}/send",
            headers={"X-Hume-Api-Key": account.api_key},
            json={"type": "audio_input", "data": "AAAA"},
        )
        assert r.status_code == 422 and "audio_input" in r.json()["detail"][0]["msg"], r.text
        with pytest.raises(UnprocessableEntityError):
            ev.control_plane.send(meta.chat_id, request={"type": "user_input"})
    events = [(e.type, e.message_text) for e in all_events(client, meta.chat_id)]
    assert ("USER_MESSAGE", "from the backend") in events
    assert ("SYSTEM_PROMPT", "Be terse.") in events
    assert ("AGENT_MESSAGE", "Noted.") in events
    # the chat has ended: 404
    r = httpx.post(
        f"{account.server.base_url}/v0/evi/chat/{meta.chat_id}/send",
        headers={"X-Hume-Api-Key": account.api_key},
        json={"type": "user_input", "text": "late"},
    )
    assert r.status_code == 404 and r.json()["code"] == "not_found", r.text


def test_chats_on_one_server_are_steered_and_observed_through_another(colloquy_bin, backend):
    """Two servers on one PostgreSQL database: the chat runs on A; `send` and an observer
    go through B. Then A is killed: B answers 404 and closes the observer."""
    if backend != "postgres":
        pytest.skip("servers share a database on PostgreSQL")
    require_backend("postgres")
    db = create_pg_database()
    servers = []
    try:
        for label in ("cp-a", "cp-b"):
            servers.append(ServerProcess(colloquy_bin, "postgres", new_temp_dir(label), pg_url_for(db), label=label).start())
        a, b = servers
        acct = a.create_account()
        on_a = acct.client().empathic_voice
        on_b = Account(server=b, user_id=acct.user_id, api_key=acct.api_key, secret_key=acct.secret_key).client().empathic_voice
        with on_a.chat.connect(allow_connection=True) as sock:
            meta = expect(sock, "chat_metadata")
            sock.send_publish(UserInput(text="before the observer"))
            expect(sock, "user_message")

            # send through B reaches the chat on A
            on_b.control_plane.send(meta.chat_id, request=UserInput(text="via b"))
            assert expect(sock, "user_message").message.content == "via b"

            # an observer through B: metadata, the history, then live messages, in order
            obs = observe(b.base_url, meta.chat_id, acct.api_key)
            first = next_json(obs)
            assert first["type"] == "chat_metadata" and first["chat_id"] == meta.chat_id
            history = [next_json(obs), next_json(obs)]
            assert [m["message"]["content"] for m in history] == ["before the observer", "via b"]
            long_text = "word " * 4_000  # longer than one NOTIFY: sent in parts
            sock.send_publish(UserInput(text=long_text))
            assert expect(sock, "user_message").message.content == long_text
            got = next_json(obs)
            assert got["type"] == "user_message" and got["message"]["content"] == long_text
            sock.send_publish(AssistantInput(text="Short."))
            said, _ = expect_answer(sock, "Short.")
            got = next_json(obs)
            assert got["type"] == "assistant_message" and got["id"] == said.id
            while got["type"] != "assistant_end":
                got = next_json(obs)
            # the observer posts through B
            obs.send(json.dumps({"type": "user_input", "text": "from the observer"}))
            assert expect(sock, "user_message").message.content == "from the observer"
            assert next_json(obs)["message"]["content"] == "from the observer"

            # the server running the chat dies: B stops reaching it
            a.kill9()
            started = time.monotonic()
            poll(
                lambda: httpx.post(
                    f"{b.base_url}/v0/evi/chat/{meta.chat_id}/send",
                    headers={"X-Hume-Api-Key": acct.api_key},
                    json={"type": "user_input", "text": "anyone?"},
                    timeout=40,
                ).status_code
                == 404,
                timeout=40,
                what="404 once the owner is gone",
            )
            assert time.monotonic() - started < 40
            try:
                while True:
                    obs.recv(timeout=30)
            except websockets.exceptions.ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1000, closed
            obs.close()
    finally:
        for srv in servers:
            srv.stop()
        drop_pg_database(db)


import websockets  # noqa: E402  (websockets.exceptions, used above)


def test_typescript_sdk_observes_and_sends(account, client):
    """The official TypeScript SDK's `controlPlane.connect` and `controlPlane.send` (the npm
    package of tests/sdk/ts, installed on first use; skipped when node or the package
    cannot be had)."""
    import shutil
    import subprocess
    from pathlib import Path

    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are needed for the TypeScript SDK check")
    here = Path(__file__).parent / "ts"
    if not (here / "node_modules" / "hume").exists():
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=here, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            pytest.skip(f"could not install the hume npm package: {r.stderr[-300:]}")
    ev = client.empathic_voice
    with ev.chat.connect(allow_connection=True) as sock:
        meta = expect(sock, "chat_metadata")
        sock.send_publish(UserInput(text="before the observer"))
        expect(sock, "user_message")
        r = subprocess.run(
            [node, "control_plane.mjs", account.server.base_url, account.api_key, meta.chat_id],
            cwd=here, capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["types"][0] == "chat_metadata" and out["chat_id"] == meta.chat_id, out
        assert out["echoed"] is True and "user_message" in out["types"], out
        assert expect(sock, "user_message").message.content == "from typescript"
