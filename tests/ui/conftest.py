"""Fixtures of the web UI suite: one real `colloquy serve` (SQLite, one reconstruction
worker), chats recorded through the real chat socket with the official `hume` SDK, one chat
with emotion scores written straight into the SQLite file (a client-driven socket cannot
produce prosody scores), and headless Chromium driven by Playwright.

* One account's chats are relayed (engine mode `relay` for its key) to a fake upstream EVI
  socket that answers like the hosted API: transcribed user messages with prosody scores,
  assistant replies with `assistant_prosody`, a tool call. Its scores reach the UI through
  the real recording path.
* The server binary comes from $COLLOQUY_BIN (scripts/test builds it); nothing is built here.
  It is started by the shared fixture of every suite, tests/colloquy_server.py.
* Chromium is Debian's `chromium` (or $COLLOQUY_CHROMIUM); Playwright's own browser download
  is never used.
* Screenshots go to test-artifacts/ui/, server logs to test-artifacts/ui/logs/.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "ui"
os.environ.setdefault("COLLOQUY_TEST_ARTIFACTS", str(SCREENSHOTS / "logs"))
# The shared server fixture (tests/colloquy_server.py) and the SDK suite's helpers (socket,
# test signals).
sys.path[:0] = [str(REPO_ROOT / "tests"), str(REPO_ROOT / "tests" / "sdk")]

from hume.empathic_voice import (  # noqa: E402
    AssistantInput,
    AudioInput,
    ConnectSessionSettings,
    ConnectSessionSettingsAudio,
    PauseAssistantMessage,
    ResumeAssistantMessage,
    ToolErrorMessage,
    ToolResponseMessage,
    UserInput,
)

from colloquy_server import (  # noqa: E402
    Account,
    ServerFactory,
    ServerProcess,
    colloquy_bin,  # noqa: F401 - the fixture
    now_ms,
    outcome_counts,
    write_summary,
)
from colloquy_testkit import pcm_chunks_b64, recv, tone_pcm  # noqa: E402

RATE = 16000
AUDIO_SECONDS = 3.0

# Emotion scores of the seeded chat: three clear leaders, two runners-up, and background
# noise, as Hume's prosody model reports them (emotion name -> score).
LEADERS = ["Joy", "Calmness", "Interest"]
RUNNERS_UP = ["Amusement", "Boredom"]
BACKGROUND = ["Anger", "Awe", "Confusion", "Contempt", "Doubt", "Fear", "Sadness", "Tiredness"]
EMOTION_MESSAGES = 30

# The relayed chat: what the fake upstream scores, and what the user says.
RELAY_LEADERS = ["Determination", "Excitement", "Contentment"]
RELAY_LINES = [
    "I finally finished the marathon training plan.",
    "Tomorrow is race day!",
    "weather?",
    "I think I am ready.",
]


class FakeUpstream:
    """Stands in for the hosted EVI chat socket (`engine.relay.url`). Per user_input it sends
    what EVI sends: the transcribed user_message with prosody scores, an assistant_message, its
    assistant_prosody and assistant_end. "weather?" gets a tool_call instead, answered after the
    client's tool_response."""

    def __init__(self):
        from websockets.sync.server import serve

        self._count = itertools.count()
        self.server = serve(self._handle, "127.0.0.1", 0)
        self.port = self.server.socket.getsockname()[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v0/evi/chat"

    @staticmethod
    def all_emotions(**scores: float) -> Dict[str, float]:
        """All 48 emotions EVI scores (the SDK requires every one), 0.01 unless given."""
        from hume.empathic_voice import EmotionScores

        names = [f.alias or k for k, f in EmotionScores.model_fields.items()]
        given = {k.replace("_", " "): v for k, v in scores.items()}
        assert set(given) <= set(names), set(given) - set(names)
        return {name: round(given.get(name, 0.01), 4) for name in names}

    @classmethod
    def user_scores(cls, k: int) -> Dict[str, float]:
        return cls.all_emotions(
            Determination=0.7 - 0.05 * k, Excitement=0.5 + 0.05 * k, Contentment=0.35, Anxiety=0.2, Tiredness=0.1
        )

    def _handle(self, ws) -> None:
        n = next(self._count)
        send = lambda m: ws.send(json.dumps(m))  # noqa: E731
        send({"type": "chat_metadata", "chat_id": f"up-chat-{n}", "chat_group_id": f"up-group-{n}",
              "request_id": f"up-request-{n}"})
        k = 0
        for raw in ws:
            m = json.loads(raw)
            if m.get("type") == "user_input" and m.get("text") == "weather?":
                send({"type": "user_message", "message": {"role": "user", "content": m["text"]},
                      "models": {"prosody": {"scores": self.user_scores(k)}}, "from_text": False, "interim": False,
                      "time": {"begin": 0, "end": 500}})
                k += 1
                send({"type": "tool_call", "name": "get_weather", "parameters": json.dumps({"city": "Boston"}),
                      "tool_call_id": f"call-{n}", "tool_type": "function", "response_required": True})
            elif m.get("type") in ("user_input", "tool_response"):
                if m["type"] == "user_input":
                    send({"type": "user_message", "message": {"role": "user", "content": m["text"]},
                          "models": {"prosody": {"scores": self.user_scores(k)}}, "from_text": False,
                          "interim": False, "time": {"begin": 0, "end": 500}})
                    reply = f"Noted: {m['text']}"
                else:
                    reply = f"The forecast says {m['content']}."
                msg_id = f"up-msg-{n}-{k}"
                k += 1
                send({"type": "assistant_message", "id": msg_id, "message": {"role": "assistant", "content": reply},
                      "models": {}, "from_text": False, "is_quick_response": False})
                send({"type": "assistant_prosody", "id": msg_id,
                      "models": {"prosody": {"scores": self.all_emotions(Calmness=0.6, Interest=0.4, Joy=0.3)}}})
                send({"type": "assistant_end"})

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="session")
def upstream():
    up = FakeUpstream()
    yield up
    up.stop()


@pytest.fixture(scope="session")
def relay_account(server) -> Account:
    return server.relay_account


@pytest.fixture(scope="session")
def server(colloquy_bin, upstream):
    factory = ServerFactory(colloquy_bin, "sqlite")
    try:
        srv = factory.new("ui", start=False)
        # The relayed account's key exists before the start: engine modes are read at start.
        relay = srv.create_account(name="ui-relay")
        srv.extra_env.update({
            "COLLOQUY_AUDIO__WORKERS": "1",
            "COLLOQUY_ENGINE__RELAY__URL": upstream.url,
            "COLLOQUY_ENGINE__RELAY__API_KEY": "upstream-test-key",
            f"COLLOQUY_ENGINE__KEYS__{relay.api_key[:8]}__MODE": "relay",
        })
        srv.start()
        srv.relay_account = relay
        yield srv
        srv.assert_stops_cleanly("the server")
    finally:
        factory.cleanup()


# ---- seeding -----------------------------------------------------------------------------


def _drain_until_echo(sock, text: str, timeout: float = 30) -> None:
    """Reads server messages until the echo of the user_input `text` (so every message sent
    before it was recorded); fails on an `error`."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no echo of {text!r} within {timeout}s"
        msg = recv(sock, left)
        assert msg.type != "error", f"the server refused a message: {msg!r}"
        if msg.type == "user_message" and msg.message.content == text:
            return


def record_chat(account: Account, steps: List, *, audio_rate: Optional[int] = None, resume: Optional[str] = None,
                config_id: Optional[str] = None, config_version: Optional[int] = None):
    """One chat over the real socket: `steps` (SDK messages, the last a UserInput) are sent in
    order; returns the chat_metadata message."""
    assert isinstance(steps[-1], UserInput), "the last step must be a UserInput (its echo ends the chat)"
    kwargs = {}
    if audio_rate:
        kwargs["session_settings"] = ConnectSessionSettings(
            audio=ConnectSessionSettingsAudio(channels=1, encoding="linear16", sample_rate=audio_rate)
        )
    if resume:
        kwargs["resumed_chat_group_id"] = resume
    if config_id:
        kwargs["config_id"] = config_id
    if config_version is not None:
        kwargs["config_version"] = config_version
    with account.client().empathic_voice.chat.connect(**kwargs) as sock:
        meta = recv(sock)
        assert meta.type == "chat_metadata", meta
        for step in steps:
            sock.send_publish(step)
        _drain_until_echo(sock, steps[-1].text)
    return meta


def emotion_scores(i: int) -> Dict[str, float]:
    """Scores of the i-th user message of the emotion chat."""
    phase = i / (EMOTION_MESSAGES - 1)
    scores = {
        "Joy": round(0.55 + 0.25 * math.sin(phase * math.pi * 2), 4),
        "Calmness": round(0.45 - 0.15 * phase, 4),
        "Interest": round(0.30 + 0.1 * math.cos(phase * math.pi), 4),
        "Amusement": 0.2,
        "Boredom": round(0.05 + 0.1 * phase, 4),
    }
    for k, name in enumerate(BACKGROUND):
        scores[name] = round(0.01 + 0.004 * ((i + k) % 5), 4)
    return scores


def seed_emotion_chat(srv: ServerProcess, user_id: str, config_id: str) -> Dict[str, str]:
    """Writes a finished chat (status INACTIVITY_TIMEOUT) with scored user messages, a tool
    call, a tool error and an interruption directly into the server's SQLite file, matching
    crates/colloquy-storage-sqlite/migrations. Returns its ids and texts."""
    chat_id, group_id = str(uuid.uuid4()), str(uuid.uuid4())
    start = now_ms() - 3 * 3600 * 1000  # three hours ago: the oldest chat of the account
    rows = []

    def add(ts, role, type_, text="", emotions="", metadata=""):
        rows.append((str(uuid.uuid4()), chat_id, len(rows), group_id, ts, role, type_, text, emotions, metadata, None))

    add(start, "SYSTEM", "CHAT_START_MESSAGE")
    t = start
    for i in range(EMOTION_MESSAGES):
        t += 4000
        add(t, "USER", "USER_MESSAGE", f"Emotion sample {i}: the harbour was lovely today",
            json.dumps(emotion_scores(i)))
        t += 1500
        add(t, "AGENT", "AGENT_MESSAGE", f"Reply {i}: tell me more about the harbour")
        if i == 2:
            t += 500
            add(t, "AGENT", "FUNCTION_CALL", "",
                metadata=json.dumps({"tool_call_id": "call_tide", "name": "tide_times",
                                     "parameters": json.dumps({"port": "Porto"})}))
            t += 500
            add(t, "TOOL", "FUNCTION_CALL_RESPONSE", "High tide at 14:05",
                metadata=json.dumps({"type": "tool_response", "tool_call_id": "call_tide",
                                     "tool_name": "tide_times", "content": "High tide at 14:05"}))
        if i == 3:
            t += 300
            add(t, "USER", "USER_INTERRUPTION")
    last_user_text = f"Emotion sample {EMOTION_MESSAGES - 1}: the harbour was lovely today"
    t += 1000
    add(t, "SYSTEM", "CHAT_END_MESSAGE",
        metadata=json.dumps({"status": "INACTIVITY_TIMEOUT", "reason": "inactivity_timeout"}))
    end = t
    db = srv.data_dir / "colloquy.db"
    conn = sqlite3.connect(db, timeout=30)
    try:
        with conn:
            conn.execute(
                "INSERT INTO chat_groups (id, user_id, first_start_timestamp, most_recent_start_timestamp, "
                "most_recent_chat_id, most_recent_config_id, most_recent_config_version, num_chats) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                (group_id, user_id, start, start, chat_id, config_id, 3),
            )
            conn.execute(
                "INSERT INTO chats (id, user_id, chat_group_id, status, start_timestamp, end_timestamp, "
                "last_event_timestamp, event_count, metadata, config_id, config_version, instance_id) "
                "VALUES (?, ?, ?, 'INACTIVITY_TIMEOUT', ?, ?, ?, ?, ?, ?, 3, NULL)",
                (chat_id, user_id, group_id, start, end, end, len(rows),
                 json.dumps({"request_id": "seeded-emotions"}), config_id),
            )
            conn.executemany(
                "INSERT INTO chat_events (id, chat_id, seq, chat_group_id, timestamp, role, type, "
                "message_text, emotion_features, metadata, related_event_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            # What was said goes into the search index, as the store does (migration 0006).
            conn.executemany(
                "INSERT INTO chat_text (text, chat_id) VALUES (?, ?)",
                [(r[7], chat_id) for r in rows if r[6] in ("USER_MESSAGE", "AGENT_MESSAGE") and r[7]],
            )
    finally:
        conn.close()
    return {"chat_id": chat_id, "group_id": group_id, "events": str(len(rows)), "last_user_text": last_user_text}


@dataclass
class Seed:
    main: Account
    other: Account
    empty: Account
    weather_chat: str = ""
    weather_group: str = ""
    resumed_chat: str = ""
    emotion_chat: str = ""
    emotion_group: str = ""
    emotion_config: str = ""
    emotion_events: int = 0
    emotion_last_text: str = ""
    filler_chats: List[str] = field(default_factory=list)
    other_chat: str = ""
    other_group: str = ""
    relay: Optional[Account] = None
    relay_chat: str = ""

    @property
    def main_chat_count(self) -> int:
        return 3 + len(self.filler_chats)


@pytest.fixture(scope="session")
def seed(server) -> Seed:
    s = Seed(
        main=server.create_account(name="ui-main"),
        other=server.create_account(name="ui-other"),
        empty=server.create_account(name="ui-empty"),
    )
    s.emotion_config = str(uuid.uuid4())
    emo = seed_emotion_chat(server, s.main.user_id, s.emotion_config)
    s.emotion_chat, s.emotion_group = emo["chat_id"], emo["group_id"]
    s.emotion_events, s.emotion_last_text = int(emo["events"]), emo["last_user_text"]

    chunks = pcm_chunks_b64(tone_pcm(AUDIO_SECONDS, 440.0, RATE), RATE, 100)
    meta = record_chat(
        s.main,
        [
            *[AudioInput(data=c) for c in chunks],
            UserInput(text="What's the weather like in Lisbon?"),
            AssistantInput(text="Sunny and 24 degrees in Lisbon, with a light breeze."),
            ToolResponseMessage(tool_call_id="call_1", tool_name="get_weather", content='{"temp": 24}'),
            ToolErrorMessage(tool_call_id="call_2", error="forecast service unavailable", content="try later"),
            PauseAssistantMessage(),
            ResumeAssistantMessage(),
            UserInput(text="Thanks, that is all for now."),
        ],
        audio_rate=RATE,
    )
    s.weather_chat, s.weather_group = meta.chat_id, meta.chat_group_id
    meta = record_chat(
        s.main,
        [UserInput(text="Remind me to pack an umbrella tomorrow.")],
        resume=s.weather_group,
    )
    s.resumed_chat = meta.chat_id
    assert meta.chat_group_id == s.weather_group
    for k in range(6):
        meta = record_chat(s.main, [AssistantInput(text=f"Filler reply {k}"), UserInput(text=f"Filler chat number {k}")])
        s.filler_chats.append(meta.chat_id)
    meta = record_chat(s.other, [UserInput(text="A secret of the other account.")])
    s.other_chat, s.other_group = meta.chat_id, meta.chat_group_id
    s.relay = server.relay_account
    s.relay_chat = record_relayed_chat(s.relay)
    return s


def record_relayed_chat(account: Account) -> str:
    """A chat through the relay engine: each line is answered by the fake upstream (the tool
    call with a tool_response). Returns the chat id."""
    with account.client().empathic_voice.chat.connect() as sock:
        meta = recv(sock)
        assert meta.type == "chat_metadata", meta
        for line in RELAY_LINES:
            time.sleep(0.3)  # spread the scores over time
            sock.send_publish(UserInput(text=line))
            while True:
                msg = recv(sock, 15)
                assert msg.type != "error", msg
                if msg.type == "tool_call":
                    sock.send_publish(ToolResponseMessage(tool_call_id=msg.tool_call_id, content="light rain"))
                if msg.type == "assistant_end":
                    break
    return meta.chat_id


# ---- configs ------------------------------------------------------------------------------

HARBOUR_PROMPT_V0 = "You are a harbour guide.\nSpeak of tides, boats and the lighthouse."
HARBOUR_PROMPT_V1 = "You are a harbour guide, version two.\nAlways give the next high tide first."
TIDE_TOOL_PARAMETERS = {
    "type": "object",
    "properties": {"port": {"type": "string", "description": "Port name"}},
    "required": ["port"],
}


def rest(account: Account, method: str, path: str, body=None) -> dict:
    """A REST call of the platform API with the account's key; fails unless 2xx."""
    r = httpx.request(method, account.server.base_url + path, json=body,
                      headers={"X-Hume-Api-Key": account.api_key}, timeout=30)
    assert r.is_success, (method, path, r.status_code, r.text)
    return r.json() if r.content else {}


def harbour_config(tool_id: str, prompt: str, inactivity: int, description: str) -> dict:
    return {
        "evi_version": "3",
        "version_description": description,
        "prompt": {"text": prompt},
        "voice": {"provider": "HUME_AI", "name": "Ava Song"},
        "language_model": {"model_provider": "ANTHROPIC", "model_resource": "claude-3-7-sonnet-latest",
                           "temperature": 0.5},
        "tools": [{"id": tool_id}],
        "builtin_tools": [{"name": "hang_up"}],
        "event_messages": {"on_new_chat": {"enabled": True, "text": "Ahoy! Welcome aboard."}},
        "timeouts": {"inactivity": {"enabled": True, "duration_secs": inactivity},
                     "max_duration": {"enabled": True, "duration_secs": 900}},
        "nudges": {"enabled": True, "interval_secs": 20},
        "webhooks": [{"url": "https://hooks.example.com/evi", "events": ["chat_ended"]}],
    }


def seed_plain_chat(srv: ServerProcess, user_id: str, chat_id: str, group_id: str, start: int) -> None:
    """A finished chat of one user message, written straight into the SQLite file (so its
    id can be chosen: two UUIDv7 of the same millisecond)."""
    text = f"Seeded chat {chat_id[-4:]}"
    rows = [
        (str(uuid.uuid4()), chat_id, 0, group_id, start, "SYSTEM", "CHAT_START_MESSAGE", "", "", "", None),
        (str(uuid.uuid4()), chat_id, 1, group_id, start + 500, "USER", "USER_MESSAGE", text, "", "", None),
        (str(uuid.uuid4()), chat_id, 2, group_id, start + 1000, "SYSTEM", "CHAT_END_MESSAGE", "",
         "", json.dumps({"status": "USER_ENDED", "reason": "user_ended"}), None),
    ]
    conn = sqlite3.connect(srv.data_dir / "colloquy.db", timeout=30)
    try:
        with conn:
            conn.execute(
                "INSERT INTO chat_groups (id, user_id, first_start_timestamp, most_recent_start_timestamp, "
                "most_recent_chat_id, most_recent_config_id, most_recent_config_version, num_chats) "
                "VALUES (?, ?, ?, ?, ?, NULL, NULL, 1)",
                (group_id, user_id, start, start, chat_id),
            )
            conn.execute(
                "INSERT INTO chats (id, user_id, chat_group_id, status, start_timestamp, end_timestamp, "
                "last_event_timestamp, event_count, metadata, config_id, config_version, instance_id) "
                "VALUES (?, ?, ?, 'USER_ENDED', ?, ?, ?, 3, NULL, NULL, NULL, NULL)",
                (chat_id, user_id, group_id, start, start + 1000, start + 1000),
            )
            conn.executemany(
                "INSERT INTO chat_events (id, chat_id, seq, chat_group_id, timestamp, role, type, "
                "message_text, emotion_features, metadata, related_event_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
    finally:
        conn.close()


def uuid7_pair(ms: int) -> List[str]:
    """Two UUIDv7 of the same millisecond: equal in their first 13 characters."""
    prefix = f"{ms:012x}"
    out = []
    for _ in range(2):
        rand = uuid.uuid4().hex
        out.append(f"{prefix[:8]}-{prefix[8:]}-7{rand[:3]}-{'89ab'[int(rand[3], 16) % 4]}{rand[4:7]}-{rand[7:19]}")
    return out


@dataclass
class ConfigSeed:
    account: Account
    tool_id: str = ""
    harbour_id: str = ""
    second_id: str = ""
    doomed_id: str = ""
    chat_v0: str = ""
    chat_v1: str = ""
    doomed_chat: str = ""
    twin_chats: List[str] = field(default_factory=list)
    twin_groups: List[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def configs_seed(server) -> ConfigSeed:
    """An account of its own (the main account's chat counts stay as they are) with a tool,
    the config "Harbour guide" in two versions, a second config, chats that used them, a
    config one of whose versions was deleted after a chat used it, and two chats (in two
    groups) whose UUIDv7 ids share the same millisecond."""
    acct = server.create_account(name="ui-configs")
    s = ConfigSeed(account=acct)
    tool = rest(acct, "POST", "/v0/evi/tools", {
        "name": "get_tide_times", "description": "High and low tide times for a port",
        "parameters": json.dumps(TIDE_TOOL_PARAMETERS), "version_description": "tides v0",
    })
    s.tool_id = tool["id"]
    v0 = rest(acct, "POST", "/v0/evi/configs", {"name": "Harbour guide",
                                                 **harbour_config(s.tool_id, HARBOUR_PROMPT_V0, 300, "first draft")})
    s.harbour_id = v0["id"]
    v1 = rest(acct, "POST", f"/v0/evi/configs/{s.harbour_id}",
              harbour_config(s.tool_id, HARBOUR_PROMPT_V1, 600, "second draft"))
    assert v1["version"] == 1, v1
    s.second_id = rest(acct, "POST", "/v0/evi/configs", {"name": "Second config", "evi_version": "3"})["id"]
    s.doomed_id = rest(acct, "POST", "/v0/evi/configs", {"name": "Doomed config", "evi_version": "3"})["id"]
    rest(acct, "POST", f"/v0/evi/configs/{s.doomed_id}", {"evi_version": "3", "version_description": "kept"})

    s.chat_v0 = record_chat(acct, [UserInput(text="When is high tide?")],
                            config_id=s.harbour_id, config_version=0).chat_id
    s.chat_v1 = record_chat(acct, [UserInput(text="And the lighthouse?")],
                            config_id=s.harbour_id, config_version=1).chat_id
    s.doomed_chat = record_chat(acct, [UserInput(text="This config will lose a version.")],
                                config_id=s.doomed_id, config_version=0).chat_id
    rest(acct, "DELETE", f"/v0/evi/configs/{s.doomed_id}/version/0")

    ms = now_ms() - 3600 * 1000
    s.twin_chats, s.twin_groups = uuid7_pair(ms), uuid7_pair(ms)
    for chat_id, group_id in zip(s.twin_chats, s.twin_groups):
        seed_plain_chat(server, acct.user_id, chat_id, group_id, ms)
    return s


# ---- browser -------------------------------------------------------------------------------


def chromium_path() -> str:
    path = os.environ.get("COLLOQUY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail(
            "headless Chromium is required: apt-get install -y chromium (CI's .ci/run installs it), "
            "or set COLLOQUY_CHROMIUM",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -r tests/ui/requirements.txt", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--mute-audio", "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session", autouse=True)
def _screenshot_dir():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()


class UI:
    """A browser context on the server, with helpers."""

    def __init__(self, browser, server: ServerProcess, **context_args):
        context_args.setdefault("viewport", {"width": 1280, "height": 900})
        context_args.setdefault("locale", "en-US")
        context_args.setdefault("timezone_id", "America/New_York")
        self.server = server
        self.base = server.base_url
        self.context = browser.new_context(base_url=self.base, **context_args)
        self.context.set_default_timeout(20_000)
        self.page = self.context.new_page()
        self.console_errors: List[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))

    def goto(self, path: str):
        return self.page.goto(self.base + path)

    def sign_in(self, key: str) -> None:
        self.goto("/ui/sign-in")
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url("**/ui/chats**")

    def shot(self, name: str, full_page: bool = True) -> None:
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def ui(browser, server, seed):
    u = UI(browser, server)
    yield u
    u.close()
    assert not u.console_errors, f"browser console errors: {u.console_errors}"


@pytest.fixture
def signed_in(ui, seed):
    ui.sign_in(seed.main.api_key)
    return ui


# ---- a one-line summary for scripts/test -------------------------------------------------------


def pytest_terminal_summary(terminalreporter):
    write_summary(outcome_counts(terminalreporter) + "; screenshots in test-artifacts/ui/")
