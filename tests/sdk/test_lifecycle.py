"""Chat lifecycle on dedicated servers: timeouts, message size limit, crash recovery."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time

import pytest

from hume.empathic_voice import AssistantInput, AudioConfiguration, AudioInput, SessionSettings, UserInput

from websockets.exceptions import ConnectionClosed

from colloquy_server import now_ms
from colloquy_testkit import all_events, audio_chunk, expect, expect_answer, expect_closed, poll, recv, send_raw


def _chat(client, chat_id):
    (chat,) = [c for c in client.empathic_voice.chats.list_chats(page_size=100) if c.id == chat_id]
    return chat


def test_inactivity_and_max_duration_timeouts(dedicated):
    srv = dedicated(
        "timeouts",
        env={"COLLOQUY_CHAT__INACTIVITY_TIMEOUT_SECS": "2", "COLLOQUY_CHAT__MAX_DURATION_SECS": "5"},
    )
    acct = srv.create_account()
    contract = srv.contract()
    client = acct.client(contract)

    # idle after one turn -> INACTIVITY_TIMEOUT about 2 s later
    with client.empathic_voice.chat.connect() as sock:
        idle = expect(sock, "chat_metadata")
        sock.send_publish(UserInput(text="then silence"))
        expect(sock, "user_message")
        t_last = now_ms()
        got = expect_closed(sock, timeout=10)
        t_closed = now_ms()
    assert all(m.type == "error" for m in got), got
    assert 1500 <= t_closed - t_last <= 6000, t_closed - t_last

    # busy (a message every 0.5 s, so never idle for 2 s) -> MAX_DURATION_TIMEOUT after 5 s
    with client.empathic_voice.chat.connect() as sock:
        busy = expect(sock, "chat_metadata")
        t_open = now_ms()
        sent = 0
        try:
            while now_ms() - t_open < 9000:
                sock.send_publish(UserInput(text=f"tick {sent}"))
                m = recv(sock, timeout=5)
                if m.type == "user_message":
                    assert m.message.content == f"tick {sent}"
                    sent += 1
                time.sleep(0.5)
        except ConnectionClosed:
            pass
        elapsed = now_ms() - t_open
    assert 4000 <= elapsed <= 8500, elapsed
    assert sent >= 6, sent  # activity kept the chat alive well past the 2 s inactivity limit

    c_idle, c_busy = _chat(client, idle.chat_id), _chat(client, busy.chat_id)
    assert c_idle.status == "INACTIVITY_TIMEOUT", c_idle
    assert c_busy.status == "MAX_DURATION_TIMEOUT", c_busy

    ev_idle = all_events(client, idle.chat_id)
    assert [e.type for e in ev_idle] == ["CHAT_START_MESSAGE", "USER_MESSAGE", "CHAT_END_MESSAGE"]
    assert c_idle.end_timestamp == ev_idle[-1].timestamp
    assert 1500 <= c_idle.end_timestamp - ev_idle[1].timestamp <= 6000
    assert c_idle.event_count == 3

    ev_busy = all_events(client, busy.chat_id)
    assert ev_busy[0].type == "CHAT_START_MESSAGE" and ev_busy[-1].type == "CHAT_END_MESSAGE"
    ticks = [e.message_text for e in ev_busy if e.type == "USER_MESSAGE"]
    assert ticks[:sent] == [f"tick {i}" for i in range(sent)]
    assert c_busy.end_timestamp == ev_busy[-1].timestamp
    assert 4500 <= c_busy.end_timestamp - c_busy.start_timestamp <= 8000
    assert contract.schemas_seen() >= {"ReturnPagedChats", "ReturnChatPagedEvents"}
    contract.assert_ok()


def test_oversized_frames_are_rejected_and_session_continues(dedicated):
    limit = 1024
    srv = dedicated("limits", env={"COLLOQUY_CHAT__MAX_MESSAGE_BYTES": str(limit)})
    client = srv.create_account().client()

    def user_frame(total_bytes: int) -> str:
        head, tail = '{"type":"user_input","text":"', '"}'
        frame = head + "a" * (total_bytes - len(head) - len(tail)) + tail
        assert len(frame.encode()) == total_bytes
        return frame

    with client.empathic_voice.chat.connect() as sock:
        meta = expect(sock, "chat_metadata")
        # exactly at the limit: accepted
        send_raw(sock, user_frame(limit))
        assert len(expect(sock, "user_message").message.content) == limit - 31
        for size in (limit + 1, 3 * limit):
            send_raw(sock, user_frame(size))
            err = expect(sock, "error")
            assert err.code == "E0102", err
            assert str(limit) in err.message, err
            sock.send_publish(UserInput(text="small one"))
            assert expect(sock, "user_message").message.content == "small one"
        # an oversized audio chunk is a size error too, not an audio error
        sock.send_publish(AudioInput(data=audio_chunk(2 * limit)))
        assert expect(sock, "error").code == "E0102"
        sock.send_publish(UserInput(text="last"))
        assert expect(sock, "user_message").message.content == "last"
    events = all_events(client, meta.chat_id)
    assert [(e.type, len(e.message_text or "")) for e in events] == [
        ("CHAT_START_MESSAGE", 0), ("USER_MESSAGE", limit - 31), ("USER_MESSAGE", 9),
        ("USER_MESSAGE", 9), ("USER_MESSAGE", 4), ("CHAT_END_MESSAGE", 0),
    ]


def _open_sessions(stack, plans):
    """Opens one socket per plan and plays its turns; returns what was echoed per chat."""
    record = []
    for client, turns in plans:
        sock = stack.enter_context(client.empathic_voice.chat.connect())
        meta = expect(sock, "chat_metadata")
        echoed = {"meta": meta, "client": client, "user": [], "agent_ids": [], "sock": sock}
        for kind, text in turns:
            if kind == "user":
                sock.send_publish(UserInput(text=text))
                m = expect(sock, "user_message")
                assert m.message.content == text
                echoed["user"].append(text)
            elif kind == "agent":
                sock.send_publish(AssistantInput(text=text))
                m, _ = expect_answer(sock, text)
                echoed["agent_ids"].append((m.id, text))
            elif kind == "settings":
                sock.send_publish(SessionSettings(system_prompt=text))
            elif kind == "audio":
                if not echoed.get("audio_format_sent"):
                    # raw PCM needs its format declared first (else it must be WebM/Opus or WAV)
                    sock.send_publish(
                        SessionSettings(audio=AudioConfiguration(channels=1, encoding="linear16", sample_rate=16000))
                    )
                    echoed["audio_format_sent"] = True
                sock.send_publish(AudioInput(data=audio_chunk()))
        record.append(echoed)
    return record


def _check_crashed_chat(rec):
    client, meta = rec["client"], rec["meta"]
    events = all_events(client, meta.chat_id, page_size=3)
    chat = _chat(client, meta.chat_id)
    assert chat.status == "ERROR", chat
    assert events[0].type == "CHAT_START_MESSAGE"
    assert events[-1].type == "CHAT_END_MESSAGE", [e.type for e in events]
    assert sum(e.type == "CHAT_END_MESSAGE" for e in events) == 1
    assert chat.end_timestamp is not None
    # the end is the time of the last event recorded before the crash, not the recovery time
    assert chat.end_timestamp == events[-2].timestamp == events[-1].timestamp, (
        chat.end_timestamp, [(e.type, e.timestamp) for e in events[-3:]],
    )
    assert chat.event_count == len(events)
    # every message whose echo the client saw survived the crash, in order
    users = [e.message_text for e in events if e.type == "USER_MESSAGE"]
    assert users[: len(rec["user"])] == rec["user"], (users, rec["user"])
    agents = [(e.id, e.message_text) for e in events if e.type == "AGENT_MESSAGE"]
    assert agents[: len(rec["agent_ids"])] == rec["agent_ids"]


def test_crash_recovery_on_restart(dedicated):
    srv = dedicated("crash")
    a, b = srv.create_account(), srv.create_account()
    contract = srv.contract()
    ca, cb = a.client(contract), b.client(contract)

    # a chat that ended normally before the crash must be left alone
    with ca.empathic_voice.chat.connect() as sock:
        done = expect(sock, "chat_metadata")
        sock.send_publish(UserInput(text="finished before the crash"))
        expect(sock, "user_message")
    done_events = [e.id for e in all_events(ca, done.chat_id)]

    plans = [
        (ca, [("user", "a1 first"), ("user", "a1 second"), ("user", "a1 third")]),
        (ca, [("settings", "crash prompt"), ("user", "a2 hello"), ("agent", "a2 answer"), ("user", "a2 bye")]),
        (cb, [("audio", ""), ("audio", ""), ("user", "b1 only")]),
    ]
    with contextlib.ExitStack() as stack:
        records = _open_sessions(stack, plans)
        # one more message in flight, echo not awaited: it may or may not survive
        records[0]["sock"].send_publish(UserInput(text="a1 in flight"))
        for r in records:
            assert _chat(r["client"], r["meta"].chat_id).status == "ACTIVE"
        srv.kill9()
        for r in records:  # the server is gone; closing must not hang
            with contextlib.suppress(Exception):
                r["sock"]._websocket.close()
        stack.pop_all()

    srv.start()  # same data dir / database (new port)
    ca, cb = a.client(contract), b.client(contract)
    for r, c in zip(records, (ca, ca, cb)):
        r["client"] = c
    for c in (ca, cb):
        poll(lambda: list(c.empathic_voice.chats.list_chats(status="ACTIVE")) == [], 20, what="no ACTIVE chat")
    for r in records:
        _check_crashed_chat(r)

    # the finished chat is untouched
    d = _chat(ca, done.chat_id)
    assert d.status == "USER_ENDED" and [e.id for e in all_events(ca, done.chat_id)] == done_events

    # after recovery the crashed conversation can be resumed and the server works normally
    crashed_group = records[0]["meta"].chat_group_id
    with ca.empathic_voice.chat.connect(resumed_chat_group_id=crashed_group) as sock:
        meta = expect(sock, "chat_metadata")
        assert meta.chat_group_id == crashed_group
        sock.send_publish(UserInput(text="back after the crash"))
        expect(sock, "user_message")
    group = ca.empathic_voice.chat_groups.get_chat_group(crashed_group)
    assert group.num_chats == 2 and not group.active
    assert [c.status for c in group.chats_page] == ["ERROR", "USER_ENDED"]
    contract.assert_ok()


def test_live_peer_closes_chats_of_a_crashed_server(dedicated):
    """Two servers on one database: when one dies, the other closes its chats as ERROR."""
    first = dedicated("peer-a", explicit_sqlite_url=True)
    second = dedicated("peer-b", share_database_with=first)
    acct = first.create_account()
    on_first = acct.client()
    with contextlib.ExitStack() as stack:
        records = _open_sessions(stack, [(on_first, [("user", "p1"), ("agent", "p2"), ("user", "p3")])])
        first.kill9()
        with contextlib.suppress(Exception):
            records[0]["sock"]._websocket.close()
        stack.pop_all()
    t_kill = time.monotonic()
    contract = second.contract()
    on_second = dataclasses.replace(acct, server=second).client(contract)
    records[0]["client"] = on_second
    poll(lambda: list(on_second.empathic_voice.chats.list_chats(status="ACTIVE")) == [], 20,
         interval=0.5, what="peer closes the crashed chat")
    assert time.monotonic() - t_kill <= 20
    _check_crashed_chat(records[0])
    # the live server keeps serving its own chats
    with on_second.empathic_voice.chat.connect() as sock:
        expect(sock, "chat_metadata")
        sock.send_publish(UserInput(text="peer alive"))
        expect(sock, "user_message")
    contract.assert_ok()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_shutdown_ends_open_chats(dedicated, sig):
    srv = dedicated("shutdown")
    acct = srv.create_account()
    client = acct.client()
    with client.empathic_voice.chat.connect() as sock:
        meta = expect(sock, "chat_metadata")
        sock.send_publish(UserInput(text="before shutdown"))
        expect(sock, "user_message")
        t_signal = time.monotonic()
        srv.proc.send_signal(sig)
        expect_closed(sock, timeout=15)  # the server closes the socket itself
        assert srv.proc.wait(15) == 0, f"exit code {srv.proc.returncode}; log:\n{srv.log_tail()}"
    assert time.monotonic() - t_signal < 15
    srv.start()
    client = acct.client()
    (chat,) = list(client.empathic_voice.chats.list_chats())
    assert chat.id == meta.chat_id and chat.status != "ACTIVE" and chat.end_timestamp is not None
    events = all_events(client, meta.chat_id)
    assert [(e.type, e.message_text or "") for e in events] == [
        ("CHAT_START_MESSAGE", ""), ("USER_MESSAGE", "before shutdown"), ("CHAT_END_MESSAGE", ""),
    ]
    assert chat.end_timestamp == events[-1].timestamp >= events[1].timestamp
