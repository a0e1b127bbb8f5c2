"""The pipeline engine end to end through the official SDK.

A dedicated server runs with `engine.mode = "pipeline"` against a fake OpenAI-compatible
service (streamed chat completions and a speech endpoint returning WAV) served from this
process. The SDK sends typed turns and answers a tool call; the model says goodbye and hangs
up. The history (REST) and the assistant's recorded voice are then checked.
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import threading
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List

import pytest
from hume.empathic_voice import (
    AssistantEnd,
    AssistantMessage,
    AudioOutput,
    BuiltinToolConfig,
    ChatMetadata,
    SessionSettings,
    Tool,
    ToolCallMessage,
    ToolResponseMessage,
    UserInput,
    UserMessage,
)

from colloquy_testkit import all_events, expect_closed, poll, recv


def _wav(ms: int = 300, rate: int = 24000) -> bytes:
    frames = b"".join(
        struct.pack("<h", int(0.4 * 32767 * math.sin(2 * math.pi * 330 * i / rate))) for i in range(rate * ms // 1000)
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


def _chunk(delta: dict, finish=None) -> bytes:
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


class FakeOpenAI(BaseHTTPRequestHandler):
    """`/v1/chat/completions` (SSE) and `/v1/audio/speech` (WAV)."""

    requests: List[dict] = []
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/v1/audio/speech":
            assert body["response_format"] == "wav"
            data = _wav()
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        assert self.path == "/v1/chat/completions", self.path
        FakeOpenAI.requests.append(body)
        last = body["messages"][-1]
        said = last.get("content") or ""
        if last["role"] == "tool":
            parts = [_chunk({"content": f"The weather: {said}."})]
            finish = "stop"
        elif said.startswith("weather"):
            call = {"index": 0, "id": "call-7", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
            parts = [_chunk({"content": "One moment."}), _chunk({"tool_calls": [call]})]
            finish = "tool_calls"
        elif said.startswith("bye"):
            call = {"index": 0, "id": "call-8", "type": "function", "function": {"name": "hang_up", "arguments": "{}"}}
            parts = [_chunk({"content": "Goodbye!"}), _chunk({"tool_calls": [call]})]
            finish = "tool_calls"
        else:
            parts = [_chunk({"content": "Hi there! How"}), _chunk({"content": " can I help?"})]
            finish = "stop"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for p in parts:
            self.wfile.write(p)
            self.wfile.flush()
        self.wfile.write(_chunk({}, finish))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture
def fake_openai():
    FakeOpenAI.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def _sentence(sock, text: str) -> str:
    """An assistant_message and its audio_output chunks (300 ms at 48 kHz, 100 ms each)."""
    am = recv(sock)
    assert isinstance(am, AssistantMessage), am
    assert am.message.content == text
    assert am.models.prosody is None, "no invented emotion scores"
    for index in range(3):
        ao = recv(sock)
        assert isinstance(ao, AudioOutput), ao
        assert (ao.id, ao.index) == (am.id, index)
        wav = base64.b64decode(ao.data)
        with wave.open(io.BytesIO(wav)) as w:
            assert (w.getframerate(), w.getnchannels()) == (48000, 1)
    return am.id


def _tool_call_carrier(sock, call_id: str) -> None:
    """The assistant_message of the turn that calls a tool: `message.tool_call` parses as the
    SDK's ToolCallMessage (spec choice: no words, those went out as the turn's sentences)."""
    am = recv(sock)
    assert isinstance(am, AssistantMessage), am
    assert am.message.role == "assistant" and am.message.content == ""
    assert isinstance(am.message.tool_call, ToolCallMessage), am.message
    assert (am.message.tool_call.name, am.message.tool_call.tool_call_id) == ("get_weather", call_id)


def _tool_result_carrier(sock, call_id: str, content: str) -> None:
    """The answer as it reaches the assistant: a user_message with role `tool` whose
    `message.tool_result` parses as the SDK's ToolResponseMessage."""
    um = recv(sock)
    assert isinstance(um, UserMessage), um
    assert (um.message.role, um.message.content, um.interim) == ("tool", content, False)
    assert isinstance(um.message.tool_result, ToolResponseMessage), um.message
    assert (um.message.tool_result.tool_call_id, um.message.tool_result.content) == (call_id, content)


def test_a_pipeline_chat_through_the_sdk(dedicated, fake_openai):
    srv = dedicated(
        "pipeline",
        env={
            "COLLOQUY_ENGINE__MODE": "pipeline",
            "COLLOQUY_ENGINE__PIPELINE__LLM__BASE_URL": fake_openai,
            "COLLOQUY_ENGINE__PIPELINE__LLM__MODEL": "llama3.2",
            "COLLOQUY_ENGINE__PIPELINE__TTS__BASE_URL": fake_openai,
            "COLLOQUY_ENGINE__PIPELINE__TTS__MODEL": "tts-1",
            "COLLOQUY_ENGINE__PIPELINE__SYSTEM_PROMPT": "Be brief.",
        },
    )
    acct = srv.create_account()
    client = acct.client(srv.contract())
    ev = client.empathic_voice
    with ev.chat.connect() as sock:
        meta = sock.recv()
        assert isinstance(meta, ChatMetadata), meta
        sock.send_publish(
            SessionSettings(
                tools=[Tool(type="function", name="get_weather", description="Weather of a city",
                            parameters='{"type": "object", "properties": {"city": {"type": "string"}}}')],
                builtin_tools=[BuiltinToolConfig(name="hang_up")],
            )
        )
        sock.send_publish(UserInput(text="hello"))
        um = recv(sock)
        assert isinstance(um, UserMessage) and um.message.content == "hello", um
        _sentence(sock, "Hi there!")
        _sentence(sock, "How can I help?")
        assert isinstance(recv(sock), AssistantEnd)

        sock.send_publish(UserInput(text="weather please"))
        assert isinstance(recv(sock), UserMessage)
        _sentence(sock, "One moment.")
        _tool_call_carrier(sock, "call-7")
        call = recv(sock)
        assert isinstance(call, ToolCallMessage), call
        assert (call.name, call.tool_call_id, call.response_required) == ("get_weather", "call-7", True)
        assert json.loads(call.parameters) == {"city": "Oslo"}
        sock.send_publish(ToolResponseMessage(tool_call_id="call-7", content="cold", tool_name="get_weather"))
        _tool_result_carrier(sock, "call-7", "cold")
        _sentence(sock, "The weather: cold.")
        assert isinstance(recv(sock), AssistantEnd)

        sock.send_publish(UserInput(text="bye"))
        assert isinstance(recv(sock), UserMessage)
        _sentence(sock, "Goodbye!")
        assert expect_closed(sock) == []

    tools = [t["function"]["name"] for t in FakeOpenAI.requests[0]["tools"]]
    assert tools == ["get_weather", "hang_up"]
    assert FakeOpenAI.requests[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert FakeOpenAI.requests[2]["messages"][-1] == {"role": "tool", "content": "cold", "tool_call_id": "call-7"}

    chat = ev.chats.list_chats().items[0]
    assert chat.id == meta.chat_id and chat.status == "USER_ENDED", chat
    assert json.loads(chat.metadata)["engine"] == "pipeline"
    events = all_events(client, meta.chat_id)
    types = [e.type for e in events]
    assert types == [
        "CHAT_START_MESSAGE", "SYSTEM_PROMPT", "SESSION_SETTINGS",
        "USER_MESSAGE", "AGENT_MESSAGE", "AGENT_MESSAGE",
        "USER_MESSAGE", "AGENT_MESSAGE", "FUNCTION_CALL", "FUNCTION_CALL_RESPONSE", "AGENT_MESSAGE",
        "USER_MESSAGE", "AGENT_MESSAGE", "FUNCTION_CALL", "CHAT_END_MESSAGE",
    ], types
    assert [e.message_text for e in events if e.type == "AGENT_MESSAGE"] == [
        "Hi there!", "How can I help?", "One moment.", "The weather: cold.", "Goodbye!"
    ]
    assert json.loads(events[-1].metadata)["reason"] == "hang_up"

    # The assistant's voice is recorded: 5 sentences x 3 chunks.
    cap = srv.data_dir / "objects" / "capture" / acct.user_id / meta.chat_id / "assistant"
    assert json.loads((cap / "format.json").read_text())["format"] == "wav_clips"
    rec = poll(
        lambda: (r := ev.chats.get_audio(meta.chat_id)).status not in ("QUEUED", "IN_PROGRESS") and r,
        timeout=30,
        what="the reconstruction",
    )
    assert rec.status == "COMPLETE", rec


class _Receiver(BaseHTTPRequestHandler):
    """A webhook receiver: keeps every body, answers 200."""

    bodies: List[dict] = []
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_POST(self):
        _Receiver.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_configs_tools_and_webhooks_in_a_pipeline_chat(dedicated, fake_openai):
    """A config with a tool and webhooks: the model calls the tool (a `tool_call` webhook,
    parsed by the SDK's WebhookEventToolCall), then hangs up (`chat_ended`, parsed by
    WebhookEventChatEnded)."""
    from hume.empathic_voice import PostedUserDefinedToolSpec, PostedWebhookSpec
    from hume.empathic_voice.types import WebhookEventChatEnded, WebhookEventToolCall

    _Receiver.bodies = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    try:
        srv = dedicated(
            "pipeline-config",
            env={
                "COLLOQUY_ENGINE__MODE": "pipeline",
                "COLLOQUY_ENGINE__PIPELINE__LLM__BASE_URL": fake_openai,
                "COLLOQUY_ENGINE__PIPELINE__LLM__MODEL": "llama3.2",
                "COLLOQUY_ENGINE__PIPELINE__TTS__BASE_URL": fake_openai,
                "COLLOQUY_ENGINE__PIPELINE__TTS__MODEL": "tts-1",
            },
        )
        acct = srv.create_account()
        ev = acct.client(srv.contract()).empathic_voice
        tool = ev.tools.create_tool(name="get_weather", parameters='{"type": "object", "properties": {"city": {"type": "string"}}}',
                                    description="Weather of a city")
        cfg = ev.configs.create_config(
            name="Weather", evi_version="3",
            tools=[PostedUserDefinedToolSpec(id=tool.id)],
            builtin_tools=[BuiltinToolConfig(name="hang_up")],
            webhooks=[PostedWebhookSpec(url=hook, events=["tool_call", "chat_ended"])],
        )
        with ev.chat.connect(config_id=cfg.id) as sock:
            meta = sock.recv()
            assert isinstance(meta, ChatMetadata), meta
            sock.send_publish(UserInput(text="weather please"))
            assert isinstance(recv(sock), UserMessage)
            _sentence(sock, "One moment.")
            _tool_call_carrier(sock, "call-7")
            call = recv(sock)
            assert isinstance(call, ToolCallMessage) and call.tool_call_id == "call-7", call
            sock.send_publish(ToolResponseMessage(tool_call_id="call-7", content="cold", tool_name="get_weather"))
            _tool_result_carrier(sock, "call-7", "cold")
            _sentence(sock, "The weather: cold.")
            assert isinstance(recv(sock), AssistantEnd)
            sock.send_publish(UserInput(text="bye"))
            assert isinstance(recv(sock), UserMessage)
            _sentence(sock, "Goodbye!")
            assert expect_closed(sock) == []
        assert [t["function"]["name"] for t in FakeOpenAI.requests[0]["tools"]] == ["get_weather", "hang_up"]
        poll(lambda: len(_Receiver.bodies) >= 3, timeout=15, what="three webhooks")
        by_event = {}
        for b in _Receiver.bodies:
            by_event.setdefault(b["event_name"], []).append(b)
        assert sorted(by_event) == ["chat_ended", "tool_call"], by_event
        calls = [WebhookEventToolCall.model_validate(b) for b in by_event["tool_call"]]
        names = sorted(c.tool_call_message.name for c in calls)
        assert names == ["get_weather", "hang_up"], names
        weather = next(c for c in calls if c.tool_call_message.name == "get_weather")
        assert (weather.chat_id, weather.config_id, weather.tool_call_message.tool_call_id) == (meta.chat_id, cfg.id, "call-7")
        assert json.loads(weather.tool_call_message.parameters) == {"city": "Oslo"}
        (ended,) = [WebhookEventChatEnded.model_validate(b) for b in by_event["chat_ended"]]
        assert (ended.chat_id, ended.end_reason, ended.config_id) == (meta.chat_id, "USER_ENDED", cfg.id)
    finally:
        httpd.shutdown()
