"""Happy-path conformance: the official `hume` SDK against Colloquy, end to end.

One chat carries every client message type; its history is then read back through every
REST endpoint with small page sizes (the SDK pager must stop on an empty page), and every
response body is validated against the server's own /openapi.json (see `contract`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import struct
import time
import uuid
import wave

import httpx
import jsonschema
from hume.empathic_voice import (
    AssistantEnd,
    AssistantInput,
    AssistantMessage,
    AudioConfiguration,
    AudioOutput,
    AudioInput,
    ChatMetadata,
    ConnectSessionSettings,
    ConnectSessionSettingsAudio,
    ConnectSessionSettingsContext,
    PauseAssistantMessage,
    ResumeAssistantMessage,
    ReturnChat,
    ReturnChatAudioReconstruction,
    ReturnChatEvent,
    ReturnChatGroup,
    ReturnChatGroupPagedAudioReconstructions,
    ReturnChatGroupPagedChats,
    SessionSettings,
    ToolErrorMessage,
    ToolResponseMessage,
    UserInput,
    UserMessage,
)

from colloquy_server import UUID_RE, now_ms
from colloquy_testkit import (
    ROUTE_SCHEMAS,
    WIRE_ENUMS,
    all_events,
    audio_chunk,
    expect,
    expect_answer,
    expect_closed,
    recv,
)

PROMPT = "You are a terse assistant. Answer in one sentence."
PROMPT_2 = "From now on, answer like a pirate."

REST_SCHEMAS = {name for _, name in ROUTE_SCHEMAS} - {"AccessTokenResponse"}


def _pages_requested(contract, path):
    """(page_number, number of items) of every request the SDK made to `path`, in order."""
    out = []
    for c in contract.requests_to(path):
        q = httpx.QueryParams(c.query)
        items = next((v for k, v in c.body.items() if k.endswith("_page")), None)
        out.append((int(q.get("page_number", "0")), len(items)))
    return out


def _assert_pager_walk(contract, path, n_items, page_size):
    """The SDK asked pages 0..k in order and stopped on the first empty one."""
    full, rest = divmod(n_items, page_size)
    expected_sizes = [page_size] * full + ([rest] if rest else []) + [0]
    walk = _pages_requested(contract, path)
    assert walk == list(enumerate(expected_sizes)), walk


def test_healthz_and_openapi_document(server):
    r = httpx.get(f"{server.base_url}/healthz", timeout=10)
    assert (r.status_code, r.text.strip()) == (200, "ok")

    doc = server.openapi()
    assert str(doc.get("openapi", "")).startswith("3.1"), doc.get("openapi")
    schemas = doc["components"]["schemas"]
    required_names = REST_SCHEMAS | {
        "ReturnChat", "ReturnChatEvent", "ReturnChatGroup", "ErrorResponse", "AccessTokenResponse",
    }
    assert required_names <= set(schemas), sorted(required_names - set(schemas))

    # Every REST route declares the spec's schema for 200, and ErrorResponse for 400.
    for path, name in [
        ("/v0/evi/chats", "ReturnPagedChats"),
        ("/v0/evi/chats/{id}", "ReturnChatPagedEvents"),
        ("/v0/evi/chats/{id}/audio", "ReturnChatAudioReconstruction"),
        ("/v0/evi/chat_groups", "ReturnPagedChatGroups"),
        ("/v0/evi/chat_groups/{id}", "ReturnChatGroupPagedChats"),
        ("/v0/evi/chat_groups/{id}/events", "ReturnChatGroupPagedEvents"),
        ("/v0/evi/chat_groups/{id}/audio", "ReturnChatGroupPagedAudioReconstructions"),
    ]:
        op = doc["paths"][path]["get"]
        ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{name}", (path, ref)
        ref400 = op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
        assert ref400 == "#/components/schemas/ErrorResponse", (path, ref400)
    token_op = doc["paths"]["/oauth2-cc/token"]["post"]
    assert token_op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] == (
        "#/components/schemas/AccessTokenResponse"
    )

    book = server.schema_book
    # The spec's own example bodies (§3.7) conform ...
    chat = {
        "id": "470a49f6-1dec-4afe-8b61-035d3b2d63b0", "chat_group_id": "9fc18597-3567-42d5-94d6-935bde84bf2f",
        "status": "USER_ENDED", "start_timestamp": 1716244940648, "end_timestamp": 1716244958546,
        "event_count": 3, "metadata": None, "config": {"id": "1b60e1a0-cc59-424a-8d2c-189d354db3f3", "version": 0},
    }
    paged = {"page_number": 0, "page_size": 10, "total_pages": 1, "pagination_direction": "ASC", "chats_page": [chat]}
    assert book.errors("ReturnPagedChats", paged) == []
    audio = {
        "id": chat["id"], "user_id": "e6235940-cfda-3988-9147-ff531627cf42", "status": "COMPLETE",
        "filename": "e6235940-cfda-3988-9147-ff531627cf42/470a49f6-1dec-4afe-8b61-035d3b2d63b0/reconstructed_audio.mp4",
        "modified_at": 1729875432555, "signed_audio_url": "https://example.com/x",
        "signed_url_expiration_timestamp_millis": 1729879032555,
    }
    assert book.errors("ReturnChatAudioReconstruction", audio) == []
    # ... and the schemas are strict enough to catch a broken body (so validation is not vacuous).
    for name in REST_SCHEMAS:
        assert book.errors(name, {}), f"{name} accepts an empty object"
    assert book.errors("ReturnChat", dict(chat, status="FINISHED")), "status enum not enforced"
    assert book.errors("ReturnPagedChats", dict(paged, pagination_direction="UP")), "direction enum not enforced"
    assert book.errors("ReturnChat", dict(chat, start_timestamp="yesterday")), "timestamp type not enforced"
    for name in ("ReturnChat", "ReturnChatEvent", "ReturnChatGroup"):
        jsonschema.Draft202012Validator.check_schema(schemas[name])


def _enum_of(doc: dict, schema: dict):
    """The `enum` list a property schema resolves to ($ref / allOf / oneOf / anyOf)."""
    if "enum" in schema:
        return schema["enum"]
    if "$ref" in schema:
        return _enum_of(doc, doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
    for key in ("allOf", "oneOf", "anyOf"):
        for sub in schema.get(key, []):
            found = _enum_of(doc, sub)
            if found is not None:
                return found
    return None


def test_openapi_enums_use_wire_spellings(server):
    """/openapi.json lists every enum with its wire values (spec §3.6: `USER_ENDED`, `ASC`,
    `CHAT_START_MESSAGE`, `QUEUED`, ...), not the Rust variant names (a regression this suite
    once caught)."""
    doc = server.openapi()
    schemas = doc["components"]["schemas"]
    wrong = {}
    for schema, prop, enum in [
        ("ReturnChat", "status", "ChatStatus"),
        ("ReturnChatPagedEvents", "status", "ChatStatus"),
        ("ReturnChatEvent", "role", "EventRole"),
        ("ReturnChatEvent", "type", "EventType"),
        ("ReturnPagedChats", "pagination_direction", "PaginationDirection"),
        ("ReturnPagedChatGroups", "pagination_direction", "PaginationDirection"),
        ("ReturnChatPagedEvents", "pagination_direction", "PaginationDirection"),
        ("ReturnChatGroupPagedChats", "pagination_direction", "PaginationDirection"),
        ("ReturnChatGroupPagedEvents", "pagination_direction", "PaginationDirection"),
        ("ReturnChatGroupPagedAudioReconstructions", "pagination_direction", "PaginationDirection"),
        ("ReturnChatAudioReconstruction", "status", "ReconstructionStatus"),
    ]:
        got = _enum_of(doc, schemas[schema]["properties"][prop])
        if sorted(got or []) != sorted(WIRE_ENUMS[enum]):
            wrong[f"{schema}.{prop}"] = got
    # the chats list `status` query parameter documents the same values
    for param in doc["paths"]["/v0/evi/chats"]["get"]["parameters"]:
        if param["name"] == "status":
            got = _enum_of(doc, param["schema"])
            if sorted(got or []) != sorted(WIRE_ENUMS["ChatStatus"]):
                wrong["GET /v0/evi/chats ?status"] = got
    assert not wrong, "enums in /openapi.json that are not the wire values:\n" + "\n".join(
        f"  {k}: {v}" for k, v in wrong.items()
    )
    # A body straight from the spec (§3.7) validates with strict enums.
    body = {"page_number": 0, "page_size": 10, "total_pages": 0, "pagination_direction": "ASC", "chats_page": []}
    assert server.schema_book.errors("ReturnPagedChats", body) == []


def test_chat_roundtrip_history_resume_and_audio(server, account, client, contract, api):
    """The main conformance scenario (see module docstring)."""
    ev = client.empathic_voice
    settings = ConnectSessionSettings(
        system_prompt=PROMPT,
        variables={"name": "Ann", "age": 30, "ok": True},
        audio=ConnectSessionSettingsAudio(channels=1, encoding="linear16", sample_rate=16000),
        context=ConnectSessionSettingsContext(text="The user is called Ann.", type="persistent"),
        custom_session_id="session-ann-1",
        event_limit=50,
        voice_id="5bb7de05-c8fe-426a-8fcc-ba4fc4ce9f9c",  # Ava Song, in the voice library
    )
    t_before = now_ms()
    with ev.chat.connect(session_settings=settings) as sock:
        meta = sock.recv()  # the SDK's own recv: first message must be chat_metadata
        assert isinstance(meta, ChatMetadata), meta
        assert UUID_RE.match(meta.chat_id) and UUID_RE.match(meta.chat_group_id), meta
        assert meta.chat_id != meta.chat_group_id
        assert meta.request_id

        sock.send_publish(UserInput(text="Hello there"))
        um = sock.recv()
        assert isinstance(um, UserMessage), um
        assert (um.message.role, um.message.content) == ("user", "Hello there")
        assert um.from_text is True and um.interim is False
        assert um.models.prosody is None
        assert um.time.begin <= um.time.end

        sock.send_publish(AssistantInput(text="Hi! How can I help?"))
        am = recv(sock)
        assert isinstance(am, AssistantMessage), am
        assert (am.message.role, am.message.content) == ("assistant", "Hi! How can I help?")
        assert am.from_text is True and am.is_quick_response is False
        assert am.id and UUID_RE.match(am.id), am
        # Spoken by the built-in voice (the default): the SDK's AudioOutput, then AssistantEnd.
        msg = recv(sock)
        spoken = 0
        while isinstance(msg, AudioOutput):
            assert (msg.id, msg.index) == (am.id, spoken), msg
            spoken += 1
            msg = recv(sock)
        assert spoken > 0
        assert isinstance(msg, AssistantEnd), msg

        # None of these is echoed; the final user_input's echo proves they were all handled.
        sock.send_publish(
            SessionSettings(
                system_prompt=PROMPT_2,
                variables={"city": "Paris", "score": 1.5, "vip": False},
                audio=AudioConfiguration(channels=1, encoding="linear16", sample_rate=8000),
            )
        )
        sock.send_publish(AudioInput(data=audio_chunk()))
        sock.send_publish(AudioInput(data=audio_chunk()))
        sock.send_publish(ToolResponseMessage(tool_call_id="call-1", content='{"temp": 21}', tool_name="weather"))
        sock.send_publish(ToolErrorMessage(tool_call_id="call-2", error="lookup failed", code="E42"))
        sock.send_publish(PauseAssistantMessage())
        sock.send_publish(ResumeAssistantMessage())
        sock.send_publish(UserInput(text="Second question"))
        um2 = expect(sock, "user_message")
        assert um2.message.content == "Second question"
    t_after = now_ms()

    chat_id, group_id = meta.chat_id, meta.chat_group_id

    # --- events of the chat, read right after the close, 2 per page -----------------------
    pager = ev.chats.list_chat_events(chat_id, page_size=2, page_number=0, ascending_order=True)
    first = pager.response
    events = list(pager)
    assert all(isinstance(e, ReturnChatEvent) for e in events)
    got = [(e.type, e.role, e.message_text or "") for e in events]
    ss1, ss2 = (e for e in events if e.type == "SESSION_SETTINGS")
    fr_resp, fr_err = (e for e in events if e.type == "FUNCTION_CALL_RESPONSE")
    expected = [
        ("CHAT_START_MESSAGE", "SYSTEM", ""),
        ("SESSION_SETTINGS", "USER", ss1.message_text),
        ("SYSTEM_PROMPT", "SYSTEM", PROMPT),
        ("USER_MESSAGE", "USER", "Hello there"),
        ("AGENT_MESSAGE", "AGENT", "Hi! How can I help?"),
        ("SESSION_SETTINGS", "USER", ss2.message_text),
        ("SYSTEM_PROMPT", "SYSTEM", PROMPT_2),
        ("USER_RECORDING_START_MESSAGE", "USER", ""),
        ("FUNCTION_CALL_RESPONSE", "TOOL", '{"temp": 21}'),
        ("FUNCTION_CALL_RESPONSE", "TOOL", fr_err.message_text),
        ("PAUSE_ONSET", "USER", ""),
        ("RESUME_ONSET", "USER", ""),
        ("USER_MESSAGE", "USER", "Second question"),
        ("CHAT_END_MESSAGE", "SYSTEM", ""),
    ]
    assert got == expected
    assert "lookup failed" in fr_err.message_text
    assert "call-1" in f"{fr_resp.message_text}{fr_resp.metadata}"
    assert "call-2" in f"{fr_err.message_text}{fr_err.metadata}"
    _assert_pager_walk(contract, f"/v0/evi/chats/{chat_id}", len(expected), 2)

    # SESSION_SETTINGS: wire-form JSON incl. "type", every variables value a string (§7).
    s1 = json.loads(ss1.message_text)
    assert s1["type"] == "session_settings"
    assert s1["system_prompt"] == PROMPT
    assert s1["variables"] == {"name": "Ann", "age": "30.0", "ok": "true"}  # as the SDK sent them
    assert s1["audio"] == {"channels": 1, "encoding": "linear16", "sample_rate": 16000}
    assert s1["context"] == {"text": "The user is called Ann.", "type": "persistent"}
    assert (s1["custom_session_id"], s1["event_limit"], s1["voice_id"]) == ("session-ann-1", 50, "5bb7de05-c8fe-426a-8fcc-ba4fc4ce9f9c")
    s2 = json.loads(ss2.message_text)
    assert s2["type"] == "session_settings"
    assert s2["system_prompt"] == PROMPT_2
    assert s2["variables"] == {"city": "Paris", "score": "1.5", "vip": "false"}
    assert s2["audio"] == {"channels": 1, "encoding": "linear16", "sample_rate": 8000}

    ids = [e.id for e in events]
    assert all(UUID_RE.match(i) for i in ids) and len(set(ids)) == len(ids)
    assert all(e.chat_id == chat_id for e in events)
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps)
    assert t_before - 1000 <= stamps[0] and stamps[-1] <= t_after + 1000, (t_before, stamps, t_after)  # epoch ms
    agent = next(e for e in events if e.type == "AGENT_MESSAGE")
    assert agent.id == am.id, "assistant_message.id must be the AGENT_MESSAGE event id"

    # chat metadata on the events response
    assert (first.id, first.chat_group_id, first.status) == (chat_id, group_id, "USER_ENDED")
    assert (first.page_number, first.page_size, first.total_pages, first.pagination_direction) == (0, 2, 7, "ASC")
    assert first.start_timestamp <= stamps[0]
    assert first.end_timestamp == stamps[-1], "end_timestamp must be the CHAT_END_MESSAGE time"

    # newest first
    desc_pager = ev.chats.list_chat_events(chat_id, page_size=5, ascending_order=False)
    assert desc_pager.response.pagination_direction == "DESC"
    assert [e.id for e in desc_pager] == ids[::-1]

    # a page past the end is an empty 200 page
    r = api.get(f"/v0/evi/chats/{chat_id}", key=account.api_key, params={"page_number": 99, "page_size": 2})
    assert r.status_code == 200 and r.json()["events_page"] == [] and r.json()["total_pages"] == 7

    # --- the chat record ----------------------------------------------------------------
    chats = list(ev.chats.list_chats(page_size=1))
    assert [c.id for c in chats] == [chat_id]
    chat1 = chats[0]
    assert isinstance(chat1, ReturnChat)
    assert (chat1.chat_group_id, chat1.status, chat1.event_count) == (group_id, "USER_ENDED", len(events))
    assert chat1.start_timestamp == first.start_timestamp and chat1.end_timestamp == first.end_timestamp

    # --- resume into the same group ------------------------------------------------------
    with ev.chat.connect(resumed_chat_group_id=group_id) as sock:
        meta2 = expect(sock, "chat_metadata")
        assert meta2.chat_group_id == group_id
        assert meta2.chat_id not in (chat_id, group_id)
        sock.send_publish(UserInput(text="Back again"))
        assert expect(sock, "user_message").message.content == "Back again"
    chat2_id = meta2.chat_id
    events2 = all_events(client, chat2_id, page_size=1)
    assert [(e.type, e.message_text or "") for e in events2] == [
        ("CHAT_START_MESSAGE", ""), ("USER_MESSAGE", "Back again"), ("CHAT_END_MESSAGE", ""),
    ]

    # --- list chats, both orders and status filters --------------------------------------
    contract.checked.clear()
    chats = list(ev.chats.list_chats(page_size=1, ascending_order=True))
    assert [c.id for c in chats] == [chat_id, chat2_id]
    _assert_pager_walk(contract, "/v0/evi/chats", 2, 1)
    assert all(c.chat_group_id == group_id and c.status == "USER_ENDED" for c in chats)
    chat2 = chats[1]
    assert chat2.event_count == 3 and chat2.start_timestamp >= chat1.start_timestamp
    assert [c.id for c in ev.chats.list_chats(page_size=1, ascending_order=False)] == [chat2_id, chat_id]
    assert [c.id for c in ev.chats.list_chats(status="USER_ENDED")] == [chat_id, chat2_id]
    assert list(ev.chats.list_chats(status="ACTIVE")) == []
    assert list(ev.chats.list_chats(status="ERROR")) == []

    # --- chat groups --------------------------------------------------------------------
    contract.checked.clear()
    groups = list(ev.chat_groups.list_chat_groups(page_size=1))
    _assert_pager_walk(contract, "/v0/evi/chat_groups", 1, 1)
    assert len(groups) == 1
    g = groups[0]
    assert isinstance(g, ReturnChatGroup)
    assert (g.id, g.num_chats, g.most_recent_chat_id) == (group_id, 2, chat2_id)
    assert g.first_start_timestamp == chat1.start_timestamp
    assert g.most_recent_start_timestamp == chat2.start_timestamp
    assert not g.active

    page0 = ev.chat_groups.get_chat_group(group_id, page_size=1, page_number=0)
    assert isinstance(page0, ReturnChatGroupPagedChats)
    assert (page0.id, page0.num_chats, page0.total_pages, page0.pagination_direction) == (group_id, 2, 2, "ASC")
    assert page0.first_start_timestamp == chat1.start_timestamp
    assert page0.most_recent_start_timestamp == chat2.start_timestamp
    assert not page0.active
    assert [c.id for c in page0.chats_page] == [chat_id]
    page1 = ev.chat_groups.get_chat_group(group_id, page_size=1, page_number=1)
    assert [c.id for c in page1.chats_page] == [chat2_id]
    assert page1.chats_page[0].event_count == 3
    assert ev.chat_groups.get_chat_group(group_id, page_size=1, page_number=2).chats_page == []
    newest = ev.chat_groups.get_chat_group(group_id, page_size=1, ascending_order=False)
    assert newest.pagination_direction == "DESC" and [c.id for c in newest.chats_page] == [chat2_id]
    ended = ev.chat_groups.get_chat_group(group_id, status="USER_ENDED", page_size=10)
    assert [c.id for c in ended.chats_page] == [chat_id, chat2_id]
    assert ev.chat_groups.get_chat_group(group_id, status="ACTIVE").chats_page == []

    contract.checked.clear()
    group_events = list(ev.chat_groups.list_chat_group_events(group_id, page_size=3, page_number=0))
    _assert_pager_walk(contract, f"/v0/evi/chat_groups/{group_id}/events", len(events) + 3, 3)
    assert [e.id for e in group_events] == ids + [e.id for e in events2]
    assert [e.chat_id for e in group_events] == [chat_id] * len(ids) + [chat2_id] * 3
    rev = list(ev.chat_groups.list_chat_group_events(group_id, page_size=4, ascending_order=False))
    assert [e.id for e in rev] == [e.id for e in group_events][::-1]

    # --- audio reconstruction -----------------------------------------------------------
    a1 = ev.chats.get_audio(chat_id)
    assert isinstance(a1, ReturnChatAudioReconstruction)
    assert (a1.id, a1.user_id, a1.status) == (chat_id, account.user_id, "QUEUED")
    assert a1.signed_audio_url is None and a1.filename is None
    assert ev.chats.get_audio(chat_id).dict() == a1.dict(), "a repeated GET must return the same record"

    ga0 = ev.chat_groups.get_audio(group_id, page_size=1, page_number=0)
    assert isinstance(ga0, ReturnChatGroupPagedAudioReconstructions)
    assert (ga0.id, ga0.user_id, ga0.num_chats, ga0.total_pages) == (group_id, account.user_id, 2, 2)
    assert [a.id for a in ga0.audio_reconstructions_page] == [chat_id]
    assert ga0.audio_reconstructions_page[0].dict() == a1.dict()
    ga1 = ev.chat_groups.get_audio(group_id, page_size=1, page_number=1)
    assert [(a.id, a.user_id, a.status) for a in ga1.audio_reconstructions_page] == [
        (chat2_id, account.user_id, "QUEUED")
    ]
    assert ev.chat_groups.get_audio(group_id, page_size=1, page_number=1).dict() == ga1.dict()
    assert ev.chat_groups.get_audio(group_id, page_size=1, page_number=2).audio_reconstructions_page == []
    assert ev.chats.get_audio(chat2_id).dict() == ga1.audio_reconstructions_page[0].dict()

    # Every schema of the seven endpoints was exercised and validated (fixture teardown
    # reports the failures, if any).
    contract.checked.clear()
    ev.chats.list_chats()
    ev.chats.list_chat_events(chat_id)
    ev.chat_groups.list_chat_groups()
    ev.chat_groups.get_chat_group(group_id)
    ev.chat_groups.list_chat_group_events(group_id)
    ev.chats.get_audio(chat_id)
    ev.chat_groups.get_audio(group_id)
    assert contract.schemas_seen() == REST_SCHEMAS
    contract.assert_ok()


def test_event_history_is_readable_while_the_chat_is_active(account, client):
    """Events are queryable immediately (§7) and an open chat is ACTIVE with no end."""
    ev = client.empathic_voice
    with ev.chat.connect() as sock:
        meta = expect(sock, "chat_metadata")
        sock.send_publish(UserInput(text="still here"))
        expect(sock, "user_message")
        pager = ev.chats.list_chat_events(meta.chat_id, page_size=10)
        assert pager.response.status == "ACTIVE" and pager.response.end_timestamp is None
        assert [(e.type, e.message_text) for e in pager] == [
            ("CHAT_START_MESSAGE", ""), ("USER_MESSAGE", "still here"),
        ]
        (chat,) = list(ev.chats.list_chats())
        assert (chat.status, chat.end_timestamp, chat.event_count) == ("ACTIVE", None, 2)
        assert [c.id for c in ev.chats.list_chats(status="ACTIVE")] == [meta.chat_id]
        group = ev.chat_groups.get_chat_group(meta.chat_group_id)
        assert group.active is True
        (g,) = list(ev.chat_groups.list_chat_groups())
        assert g.active is True
    (chat,) = list(ev.chats.list_chats())
    assert chat.status == "USER_ENDED" and chat.end_timestamp is not None


def test_assistant_input_is_spoken_by_default(server, account, client):
    """With the default configuration the server speaks `assistant_input` with its built-in
    voice: the SDK receives `audio_output` (AudioOutput) chunks for the message before
    `assistant_end`, each a 48 kHz mono 16-bit WAV file, together real (non-silent) speech."""
    with client.empathic_voice.chat.connect() as sock:
        expect(sock, "chat_metadata")
        text = "Hello, I am the built-in voice."
        sock.send_publish(AssistantInput(text=text))
        am, chunks = expect_answer(sock, text)
    assert chunks, "no audio_output before assistant_end"
    assert all(isinstance(c, AudioOutput) for c in chunks)
    samples = []
    for c in chunks:
        wav = base64.b64decode(c.data)
        assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE", wav[:16]
        with wave.open(io.BytesIO(wav)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48000, 1, 2)
            frames = w.readframes(w.getnframes())
        samples.extend(struct.unpack(f"<{len(frames) // 2}h", frames))
    seconds = len(samples) / 48000
    assert 0.8 < seconds < 6, seconds
    rms = math.sqrt(sum(x * x for x in samples) / len(samples))
    assert rms > 300, f"speech, not silence: rms {rms:.0f}"


def test_async_client(account, contract):
    """AsyncHumeClient: socket via async iteration and the async pagers (chat-history example flow)."""

    async def scenario():
        client = account.async_client(contract)
        ev = client.empathic_voice
        async with ev.chat.connect(
            session_settings=ConnectSessionSettings(variables={"who": "async"})
        ) as sock:
            meta = await sock.recv()
            assert meta.type == "chat_metadata"
            await sock.send_publish(UserInput(text="async hello"))
            await sock.send_publish(AssistantInput(text="async answer"))
            seen = []
            async for msg in sock:
                seen.append(msg.type)
                if msg.type == "assistant_end":
                    break
            assert "audio_output" in seen, seen  # spoken by default
            assert [t for t in seen if t != "audio_output"] == ["user_message", "assistant_message", "assistant_end"]
            assert seen.index("audio_output") > seen.index("assistant_message")
        texts = []
        pager = await ev.chats.list_chat_events(meta.chat_id, page_number=0, ascending_order=True, page_size=2)
        async for e in pager:
            if e.type in ("USER_MESSAGE", "AGENT_MESSAGE"):
                texts.append((e.role, e.message_text))
        assert texts == [("USER", "async hello"), ("AGENT", "async answer")]
        groups = [g async for g in await ev.chat_groups.list_chat_groups(page_size=1)]
        assert [g.id for g in groups] == [meta.chat_group_id]
        audio = await ev.chats.get_audio(meta.chat_id)
        assert audio.id == meta.chat_id and audio.status == "QUEUED"

    asyncio.run(scenario())


def test_accounts_are_isolated_in_lists(account, other_account, contract):
    """Each account only sees its own chats and groups."""
    a, b = account.client(contract), other_account.client(contract)
    with a.empathic_voice.chat.connect() as sock:
        meta = expect(sock, "chat_metadata")
    assert [c.id for c in a.empathic_voice.chats.list_chats()] == [meta.chat_id]
    assert [g.id for g in a.empathic_voice.chat_groups.list_chat_groups()] == [meta.chat_group_id]
    assert list(b.empathic_voice.chats.list_chats()) == []
    assert list(b.empathic_voice.chat_groups.list_chat_groups()) == []


def test_config_id_is_recorded_and_filters_lists(account, client, api):
    """config_id/config_version of the socket end up in ReturnChat.config and drive the
    config_id filters of list_chats (chat's config) and list_chat_groups (most recent chat)."""
    ev = client.empathic_voice
    cfg_a = ev.configs.create_config(name="a", evi_version="3").id
    for _ in range(2):
        ev.configs.create_config_version(cfg_a, evi_version="3")
    cfg_b = ev.configs.create_config(name="b", evi_version="3").id
    with ev.chat.connect(config_id=cfg_a, config_version=2) as sock:
        first = expect(sock, "chat_metadata")
    with ev.chat.connect() as sock:
        plain = expect(sock, "chat_metadata")

    chats = {c.id: c for c in ev.chats.list_chats()}
    assert chats[first.chat_id].config is not None
    assert (chats[first.chat_id].config.id, chats[first.chat_id].config.version) == (cfg_a, 2)
    assert chats[plain.chat_id].config is None
    assert [c.id for c in ev.chats.list_chats(config_id=cfg_a)] == [first.chat_id]
    assert list(ev.chats.list_chats(config_id=cfg_b)) == []
    groups = list(ev.chat_groups.list_chat_groups(config_id=cfg_a))
    assert [g.id for g in groups] == [first.chat_group_id]
    assert groups[0].most_recent_config.id == cfg_a

    # resuming with another config moves the group to that config's filter
    with ev.chat.connect(resumed_chat_group_id=first.chat_group_id, config_id=cfg_b) as sock:
        resumed = expect(sock, "chat_metadata")
    assert resumed.chat_group_id == first.chat_group_id
    assert list(ev.chat_groups.list_chat_groups(config_id=cfg_a)) == []
    (g,) = list(ev.chat_groups.list_chat_groups(config_id=cfg_b))
    assert (g.id, g.most_recent_chat_id, g.most_recent_config.id) == (first.chat_group_id, resumed.chat_id, cfg_b)
    assert sorted(c.id for c in ev.chats.list_chats(config_id=cfg_b)) == [resumed.chat_id]

    # resolved at connect: without a version, the newest (2); a config's chats keep
    # their resolved version
    with ev.chat.connect(config_id=cfg_a) as sock:
        newest = expect(sock, "chat_metadata")
    (c,) = [c for c in ev.chats.list_chats(config_id=cfg_a) if c.id == newest.chat_id]
    assert (c.config.id, c.config.version) == (cfg_a, 2)

    # a malformed config_id on the socket is refused and stores nothing
    with ev.chat.connect(config_id="not-a-uuid") as sock:
        got = expect_closed(sock)
    assert [m.type for m in got] == ["error"] and "config_id" in got[0].message, got
    # an unknown config (or version) is E0204 and stores nothing either
    for kwargs in [dict(config_id=str(uuid.uuid4())), dict(config_id=cfg_b, config_version=5)]:
        with ev.chat.connect(**kwargs) as sock:
            got = expect_closed(sock)
        assert [(m.type, m.code) for m in got] == [("error", "E0204")], got
        assert "config" in got[0].message, got
    assert len(list(ev.chats.list_chats())) == 4


def test_default_paging_values_are_echoed(account, client, api):
    with client.empathic_voice.chat.connect() as sock:
        meta = expect(sock, "chat_metadata")
    for path, items in [
        ("/v0/evi/chats", "chats_page"),
        (f"/v0/evi/chats/{meta.chat_id}", "events_page"),
        ("/v0/evi/chat_groups", "chat_groups_page"),
        (f"/v0/evi/chat_groups/{meta.chat_group_id}", "chats_page"),
        (f"/v0/evi/chat_groups/{meta.chat_group_id}/events", "events_page"),
        (f"/v0/evi/chat_groups/{meta.chat_group_id}/audio", "audio_reconstructions_page"),
    ]:
        body = api.get(path, key=account.api_key).json()
        assert (body["page_number"], body["page_size"], body["pagination_direction"]) == (0, 10, "ASC"), path
        assert body["total_pages"] == 1 and len(body[items]) >= 1, (path, body)
        body = api.get(path, key=account.api_key, params={"page_number": 3, "page_size": 7, "ascending_order": "false"}).json()
        assert (body["page_number"], body["page_size"], body["pagination_direction"]) == (3, 7, "DESC"), path
        assert body[items] == [], path


def test_long_chat_keeps_order_across_pages(account, client, contract):
    """150 pipelined user_inputs: echoes and stored events keep the sending order, also when
    many share a millisecond, and the events pager walks 100 + 50 + empty."""
    texts = [f"#{i:03d} {'héllo 👋 — 日本語 ✓' if i % 7 == 0 else 'x'}" for i in range(150)]
    with client.empathic_voice.chat.connect() as sock:
        meta = expect(sock, "chat_metadata")
        for t in texts:
            sock.send_publish(UserInput(text=t))
        echoed = [expect(sock, "user_message").message.content for _ in texts]
    assert echoed == texts
    contract.checked.clear()
    events = all_events(client, meta.chat_id, page_size=100)
    _assert_pager_walk(contract, f"/v0/evi/chats/{meta.chat_id}", 152, 100)
    assert [e.message_text for e in events if e.type == "USER_MESSAGE"] == texts
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    assert events[0].type == "CHAT_START_MESSAGE" and events[-1].type == "CHAT_END_MESSAGE"
    (chat,) = list(client.empathic_voice.chats.list_chats())
    assert chat.event_count == 152
    desc = all_events(client, meta.chat_id, page_size=100, ascending=False)
    assert [e.id for e in desc] == [e.id for e in events][::-1]


def test_concurrent_sessions_keep_their_own_order(account, contract):
    """20 sockets of one account pipelining 30 messages each, at the same time."""

    async def session(client, tag):
        async with client.empathic_voice.chat.connect() as sock:
            meta = await sock.recv()
            for i in range(30):
                await sock.send_publish(UserInput(text=f"{tag}-{i}"))
            got = []
            while len(got) < 30:
                msg = await sock.recv()
                assert msg.type == "user_message", msg
                got.append(msg.message.content)
            assert got == [f"{tag}-{i}" for i in range(30)]
            return meta

    async def scenario():
        client = account.async_client(contract)
        metas = await asyncio.gather(*(session(client, f"s{k}") for k in range(20)))
        for k, meta in enumerate(metas):
            pager = await client.empathic_voice.chats.list_chat_events(meta.chat_id, page_size=100)
            texts = [e.message_text async for e in pager if e.type == "USER_MESSAGE"]
            assert texts == [f"s{k}-{i}" for i in range(30)], k
        chats = [c async for c in await client.empathic_voice.chats.list_chats(page_size=100)]
        assert sorted(c.id for c in chats) == sorted(m.chat_id for m in metas)
        assert {(c.status, c.event_count) for c in chats} == {("USER_ENDED", 32)}
        assert len({m.chat_group_id for m in metas}) == 20

    asyncio.run(scenario())


def test_group_events_interleave_chats_by_time(account, client):
    """Two live chats of one group (the second resumes the first's group while it is open):
    the group is active, and its events merge both chats by timestamp."""
    ev = client.empathic_voice
    with ev.chat.connect() as first:
        m1 = expect(first, "chat_metadata")
        with ev.chat.connect(resumed_chat_group_id=m1.chat_group_id) as second:
            m2 = expect(second, "chat_metadata")
            assert m2.chat_group_id == m1.chat_group_id
            for i in range(5):
                first.send_publish(UserInput(text=f"A{i}"))
                expect(first, "user_message")
                time.sleep(0.003)
                second.send_publish(UserInput(text=f"B{i}"))
                expect(second, "user_message")
                time.sleep(0.003)
            group = ev.chat_groups.get_chat_group(m1.chat_group_id)
            assert group.active is True and group.num_chats == 2
            assert {c.status for c in group.chats_page} == {"ACTIVE"}
    events = list(ev.chat_groups.list_chat_group_events(m1.chat_group_id, page_size=4))
    assert [e.message_text for e in events if e.type == "USER_MESSAGE"] == [
        t for i in range(5) for t in (f"A{i}", f"B{i}")
    ]
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    by_chat = {e.id: e.chat_id for e in events}
    assert {by_chat[e.id] for e in events if (e.message_text or "").startswith("A")} == {m1.chat_id}
    assert {by_chat[e.id] for e in events if (e.message_text or "").startswith("B")} == {m2.chat_id}
    assert [e.type for e in events].count("CHAT_START_MESSAGE") == 2
    assert [e.type for e in events].count("CHAT_END_MESSAGE") == 2
    group = ev.chat_groups.get_chat_group(m1.chat_group_id)
    assert not group.active and {c.status for c in group.chats_page} == {"USER_ENDED"}


def test_search_extension_through_the_sdk(account, client):
    """Colloquy's `search` extension reaches the server through the SDK's extra query
    parameters, and the pager keeps it on every page it fetches."""
    ev = client.empathic_voice
    ids = []
    for text in ["book a flight to Lisbon", "weather in Porto", "another flight, to Porto"]:
        with ev.chat.connect() as sock:
            meta = expect(sock, "chat_metadata")
            sock.send_publish(UserInput(text=text))
            expect(sock, "user_message")
        ids.append(meta.chat_id)

    def search(words, **kw):
        opts = {"additional_query_parameters": {"search": words}}
        return [c.id for c in ev.chats.list_chats(request_options=opts, **kw)]

    assert search("flight") == [ids[0], ids[2]]
    assert search("flight", page_size=1) == [ids[0], ids[2]], "every page keeps the filter"
    assert search("porto FLIGHT") == [ids[2]]
    assert search("lis") == [ids[0]]
    assert search("madrid") == []
    assert len(list(ev.chats.list_chats())) == 3
