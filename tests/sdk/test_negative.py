"""Negative paths: foreign/unknown ids, bad parameters, malformed socket frames, refused
resumes, retention-disabled accounts."""

from __future__ import annotations

import json
import uuid

import pytest
from hume.core.api_error import ApiError
from hume.empathic_voice import AssistantInput, BadRequestError, ConnectSessionSettings, UserInput

from colloquy_testkit import all_events, expect, expect_answer, expect_closed, send_raw

ID_ENDPOINTS = (
    "/v0/evi/chats/{chat}",
    "/v0/evi/chats/{chat}/audio",
    "/v0/evi/chat_groups/{group}",
    "/v0/evi/chat_groups/{group}/events",
    "/v0/evi/chat_groups/{group}/audio",
)
PAGED_ENDPOINTS = (
    "/v0/evi/chats",
    "/v0/evi/chats/{chat}",
    "/v0/evi/chat_groups",
    "/v0/evi/chat_groups/{group}",
    "/v0/evi/chat_groups/{group}/events",
    "/v0/evi/chat_groups/{group}/audio",
)


def _make_chat(client, text="hello"):
    with client.empathic_voice.chat.connect() as sock:
        meta = expect(sock, "chat_metadata")
        sock.send_publish(UserInput(text=text))
        expect(sock, "user_message")
    return meta


def test_foreign_and_unknown_ids_are_404(account, other_account, client, api):
    meta = _make_chat(client)
    ids = {"chat": meta.chat_id, "group": meta.chat_group_id}
    for template in ID_ENDPOINTS:
        path = template.format(**ids)
        # the owner can read it ...
        assert api.get(path, key=account.api_key).status_code == 200, path
        # ... another account gets the same answer as for an id that does not exist
        r = api.get(path, key=other_account.api_key)
        assert r.status_code == 404, (path, r.status_code, r.text)
        body = r.json()
        assert body.get("message") and body.get("code"), body
        assert meta.chat_id not in json.dumps({k: v for k, v in body.items() if k != "message"})
        unknown = template.format(chat=str(uuid.uuid4()), group=str(uuid.uuid4()))
        r = api.get(unknown, key=account.api_key)
        assert r.status_code == 404, (unknown, r.status_code, r.text)
        # a chat id is not a group id and vice versa
        swapped = template.format(chat=meta.chat_group_id, group=meta.chat_id)
        assert api.get(swapped, key=account.api_key).status_code == 404, swapped

    # through the SDK: a generic ApiError carrying 404
    foreign = other_account.client()
    for call in (
        lambda: foreign.empathic_voice.chats.list_chat_events(meta.chat_id),
        lambda: foreign.empathic_voice.chats.get_audio(meta.chat_id),
        lambda: foreign.empathic_voice.chat_groups.get_chat_group(meta.chat_group_id),
        lambda: foreign.empathic_voice.chat_groups.list_chat_group_events(meta.chat_group_id),
        lambda: foreign.empathic_voice.chat_groups.get_audio(meta.chat_group_id),
    ):
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status_code == 404


BAD_PAGING = [
    ("page_size", "0"),
    ("page_size", "101"),
    ("page_size", "-5"),
    ("page_size", "ten"),
    ("page_number", "-1"),
    ("page_number", "first"),
    ("ascending_order", "maybe"),
    ("ascending_order", "yes"),
]


def test_bad_parameters_are_400_naming_the_parameter(account, client, api):
    meta = _make_chat(client)
    ids = {"chat": meta.chat_id, "group": meta.chat_group_id}
    key = account.api_key

    def bad(path, params, name):
        r = api.get(path, key=key, params=params)
        assert r.status_code == 400, (path, params, r.status_code, r.text)
        body = r.json()
        assert name in (body.get("message") or ""), (path, params, body)
        assert body.get("code"), body

    for template in PAGED_ENDPOINTS:
        path = template.format(**ids)
        for name, value in BAD_PAGING:
            bad(path, {name: value}, name)
        # the limits themselves are fine
        for params in ({"page_size": 1}, {"page_size": 100}, {"page_number": 0},
                       {"ascending_order": "true"}, {"ascending_order": "false"}):
            assert api.get(path, key=key, params=params).status_code == 200, (path, params)

    bad("/v0/evi/chats", {"status": "FINISHED"}, "status")
    bad("/v0/evi/chat_groups/{}".format(meta.chat_group_id), {"status": "FINISHED"}, "status")
    bad("/v0/evi/chats", {"config_id": "not-a-uuid"}, "config_id")
    bad("/v0/evi/chat_groups", {"config_id": "not-a-uuid"}, "config_id")
    for template in ID_ENDPOINTS:
        bad(template.format(chat="not-a-uuid", group="not-a-uuid"), {}, "id")
        bad(template.format(chat="1234", group="1234"), {}, "id")

    # valid filters that match nothing are empty pages, not errors
    for status in ("ACTIVE", "USER_ENDED", "USER_TIMEOUT", "MAX_DURATION_TIMEOUT", "INACTIVITY_TIMEOUT", "ERROR"):
        r = api.get("/v0/evi/chats", key=key, params={"status": status})
        assert r.status_code == 200, (status, r.text)
        assert [c["id"] for c in r.json()["chats_page"]] == ([meta.chat_id] if status == "USER_ENDED" else [])
    r = api.get("/v0/evi/chats", key=key, params={"config_id": str(uuid.uuid4())})
    assert r.status_code == 200 and r.json()["chats_page"] == []

    # the SDK raises its typed BadRequestError with the parsed ErrorResponse
    with pytest.raises(BadRequestError) as info:
        client.empathic_voice.chats.list_chats(page_size=0)
    assert info.value.status_code == 400 and "page_size" in info.value.body.message
    with pytest.raises(BadRequestError) as info:
        client.empathic_voice.chat_groups.get_chat_group(meta.chat_group_id, page_size=1000)
    assert "page_size" in info.value.body.message
    with pytest.raises(BadRequestError) as info:
        client.empathic_voice.chats.list_chat_events("definitely-not-a-uuid")
    assert "id" in info.value.body.message


MALFORMED = [
    ("not_json", "this is not json", "E0100"),
    ("truncated_json", '{"type": "user_input", "text": ', "E0100"),
    ("unknown_type", '{"type": "dance_party"}', "E0101"),
    ("missing_type", '{"text": "hi"}', "E0101"),
    ("missing_field", '{"type": "user_input"}', "E0101"),
    ("wrong_field_type", '{"type": "user_input", "text": 42}', "E0101"),
    ("not_an_object", "[1, 2, 3]", "E0101"),
    ("binary_frame", b"\x00\x01\x02binary audio?", "E0101"),
    ("bad_base64", '{"type": "audio_input", "data": "@@@ not base64 @@@"}', "E0104"),
    ("settings_nested_variable", '{"type": "session_settings", "variables": {"x": {"nested": 1}}}', "E0101"),
    ("tool_response_without_id", '{"type": "tool_response", "content": "42"}', "E0101"),
]


@pytest.mark.parametrize("frame,code", [(f, c) for _, f, c in MALFORMED], ids=[n for n, _, _ in MALFORMED])
def test_malformed_frame_gets_error_and_session_continues(client, frame, code):
    with client.empathic_voice.chat.connect() as sock:
        meta = expect(sock, "chat_metadata")
        send_raw(sock, frame)
        err = expect(sock, "error")
        assert err.code == code, err
        assert err.slug and err.message, err
        sock.send_publish(UserInput(text="still listening?"))
        assert expect(sock, "user_message").message.content == "still listening?"
    events = all_events(client, meta.chat_id)
    # a rejected frame leaves no trace in the history
    assert [(e.type, e.message_text or "") for e in events] == [
        ("CHAT_START_MESSAGE", ""), ("USER_MESSAGE", "still listening?"), ("CHAT_END_MESSAGE", ""),
    ]
    (chat,) = list(client.empathic_voice.chats.list_chats())
    assert chat.status == "USER_ENDED"


def test_many_bad_frames_in_one_session(client):
    with client.empathic_voice.chat.connect() as sock:
        meta = expect(sock, "chat_metadata")
        for i, (_, frame, code) in enumerate(MALFORMED):
            send_raw(sock, frame)
            assert expect(sock, "error").code == code
            sock.send_publish(UserInput(text=f"turn {i}"))
            assert expect(sock, "user_message").message.content == f"turn {i}"
    texts = [e.message_text for e in all_events(client, meta.chat_id) if e.type == "USER_MESSAGE"]
    assert texts == [f"turn {i}" for i in range(len(MALFORMED))]


def test_resume_of_unknown_group_is_refused(account, client):
    with client.empathic_voice.chat.connect(resumed_chat_group_id=str(uuid.uuid4())) as sock:
        got = expect_closed(sock)
    assert [m.type for m in got] == ["error"], got
    assert got[0].code == "E0201", got[0]
    assert list(client.empathic_voice.chats.list_chats()) == []
    assert list(client.empathic_voice.chat_groups.list_chat_groups()) == []


def test_resume_of_another_accounts_group_is_refused(account, other_account):
    owner, intruder = account.client(), other_account.client()
    meta = _make_chat(owner, "private")
    with intruder.empathic_voice.chat.connect(resumed_chat_group_id=meta.chat_group_id) as sock:
        got = expect_closed(sock)
    assert [m.type for m in got] == ["error"], got
    assert got[0].code == "E0201", got[0]
    assert list(intruder.empathic_voice.chats.list_chats()) == []
    assert list(intruder.empathic_voice.chat_groups.list_chat_groups()) == []
    group = owner.empathic_voice.chat_groups.get_chat_group(meta.chat_group_id)
    assert group.num_chats == 1 and [c.id for c in group.chats_page] == [meta.chat_id]


def test_resume_with_malformed_group_id_is_refused(account, client):
    with client.empathic_voice.chat.connect(resumed_chat_group_id="not-a-uuid") as sock:
        got = expect_closed(sock)
    assert [m.type for m in got] == ["error"], got
    assert got[0].code.startswith("E") and "resumed_chat_group_id" in got[0].message, got[0]
    assert list(client.empathic_voice.chats.list_chats()) == []


def test_retention_disabled_account(server, contract):
    acct = server.create_account(name="no-retention", no_retention=True)
    client = acct.client(contract)
    ev = client.empathic_voice
    with ev.chat.connect(session_settings=ConnectSessionSettings(system_prompt="x", variables={"a": "b"})) as sock:
        meta = expect(sock, "chat_metadata")
        sock.send_publish(UserInput(text="not recorded"))
        assert expect(sock, "user_message").message.content == "not recorded"
        sock.send_publish(AssistantInput(text="me neither"))
        expect_answer(sock, "me neither")
        # nothing is listed even while the chat is open
        assert list(ev.chats.list_chats()) == []
    assert list(ev.chats.list_chats()) == []
    assert list(ev.chats.list_chats(status="USER_ENDED")) == []
    assert list(ev.chat_groups.list_chat_groups()) == []

    with ev.chat.connect(resumed_chat_group_id=meta.chat_group_id) as sock:
        got = expect_closed(sock)
    assert [m.type for m in got] == ["error"], got
    assert got[0].code == "E0202", got[0]
    assert list(ev.chats.list_chats()) == []
