"""Authentication: API keys, OAuth2 client-credentials tokens, bad credentials, revocation."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from hume import AsyncHumeClient, HumeClient
from hume.core.api_error import ApiError
from hume.empathic_voice import UserInput
from websockets.exceptions import InvalidStatus

from colloquy_testkit import expect, expect_closed, recv


def _upgrade_status(exc: BaseException) -> int:
    """Status of a refused socket upgrade, whichever way the SDK surfaces it.

    hume 0.14.1 maps 401 to ApiError(status_code=401) when websockets raises the legacy
    InvalidStatusCode; with websockets >= 14 the sync client raises InvalidStatus instead.
    """
    if isinstance(exc, ApiError):
        return exc.status_code
    if isinstance(exc, InvalidStatus):
        return exc.response.status_code
    raise AssertionError(f"unexpected exception type {type(exc)!r}: {exc!r}")


def _connect_status(client: HumeClient, **kw) -> int:
    with pytest.raises((ApiError, InvalidStatus)) as info:
        with client.empathic_voice.chat.connect(**kw) as sock:
            recv(sock)
    return _upgrade_status(info.value)


def test_access_token_flow(server, account, contract, api):
    r = account.fetch_token()
    contract.on_response(r)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expires_in"] == 1800
    assert body["token_type"].lower() == "bearer"
    token = body["access_token"]
    assert isinstance(token, str) and len(token) >= 16 and token != account.api_key

    # REST with Authorization: Bearer, through the SDK (custom header, no api key)
    bearer = account.client(contract, api_key=None, headers={"Authorization": f"Bearer {token}"})
    assert list(bearer.empathic_voice.chats.list_chats()) == []

    # chat socket with ?access_token=
    with bearer.empathic_voice.chat.connect(access_token=token) as sock:
        meta = expect(sock, "chat_metadata")
        sock.send_publish(UserInput(text="token auth"))
        assert expect(sock, "user_message").message.content == "token auth"

    # the chat belongs to the key's account
    chats = list(account.client(contract).empathic_voice.chats.list_chats())
    assert [c.id for c in chats] == [meta.chat_id]
    assert [c.id for c in bearer.empathic_voice.chats.list_chats()] == [meta.chat_id]
    r = api.get(f"/v0/evi/chats/{meta.chat_id}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and [e["type"] for e in r.json()["events_page"]] == [
        "CHAT_START_MESSAGE", "USER_MESSAGE", "CHAT_END_MESSAGE",
    ]


def test_access_token_refused_for_bad_credentials(server, account, other_account, contract):
    for resp in (
        account.fetch_token(secret="wrong-secret"),
        account.fetch_token(secret=other_account.secret_key),
        httpx.post(f"{server.base_url}/oauth2-cc/token", data={"grant_type": "client_credentials"}, timeout=10),
        httpx.post(
            f"{server.base_url}/oauth2-cc/token",
            auth=("no-such-key", account.secret_key),
            data={"grant_type": "client_credentials"},
            timeout=10,
        ),
    ):
        contract.on_response(resp)
        assert resp.status_code == 401, resp.text
        assert "access_token" not in resp.json()
        assert resp.json().get("message")


def test_bad_bearer_token(server, account, contract, api):
    r = api.get("/v0/evi/chats", headers={"Authorization": "Bearer not-a-real-token"})
    assert r.status_code == 401 and r.json().get("message"), r.text
    # an API key is not a bearer token
    r = api.get("/v0/evi/chats", headers={"Authorization": f"Bearer {account.api_key}"})
    assert r.status_code == 401, r.text
    anon = HumeClient(base_url=server.base_url)
    assert _connect_status(anon, access_token="not-a-real-token") == 401


def test_rest_rejects_missing_and_bad_api_keys(server, account, contract, api):
    for headers in ({}, {"X-Hume-Api-Key": "not-a-key"}, {"X-Hume-Api-Key": account.api_key + "x"},
                    {"X-Hume-Api-Key": ""}):
        for path in ("/v0/evi/chats", "/v0/evi/chat_groups"):
            r = api.get(path, headers=headers)
            assert r.status_code == 401, (headers, path, r.text)
            body = r.json()
            assert body.get("message") and body.get("code"), body
    # the SDK surfaces it as an ApiError carrying the status
    bad = HumeClient(api_key="not-a-key", base_url=server.base_url)
    with pytest.raises(ApiError) as info:
        bad.empathic_voice.chats.list_chats()
    assert info.value.status_code == 401
    with pytest.raises(ApiError) as info:
        bad.empathic_voice.chat_groups.get_chat_group("470a49f6-1dec-4afe-8b61-035d3b2d63b0")
    assert info.value.status_code == 401
    # ... while the good key works
    assert list(account.client(contract).empathic_voice.chats.list_chats()) == []


def test_socket_rejects_bad_credentials_with_401(server, account):
    assert _connect_status(HumeClient(api_key="not-a-key", base_url=server.base_url)) == 401
    assert _connect_status(HumeClient(base_url=server.base_url)) == 401  # no credentials at all
    # api_key query parameter with a bad key
    assert _connect_status(HumeClient(base_url=server.base_url), api_key="not-a-key") == 401
    # a good key in the query works (browser style)
    with HumeClient(base_url=server.base_url).empathic_voice.chat.connect(api_key=account.api_key) as sock:
        expect(sock, "chat_metadata")
    # the async client maps the refused upgrade to the SDK's "invalid credentials" ApiError
    async def async_attempt():
        bad = AsyncHumeClient(api_key="not-a-key", base_url=server.base_url)
        with pytest.raises(ApiError) as info:
            async with bad.empathic_voice.chat.connect():
                pass
        return info.value

    err = asyncio.run(async_attempt())
    assert err.status_code == 401 and "invalid credentials" in str(err.body)
    # and no chat was stored by the refused attempts
    assert [c.status for c in account.client().empathic_voice.chats.list_chats()] == ["USER_ENDED"]


def test_revoked_key_ends_open_socket_and_rest_access(server, account, other_account, contract):
    client = account.client(contract)
    bystander = other_account.client(contract)
    token = account.fetch_token().json()["access_token"]
    with client.empathic_voice.chat.connect() as sock, bystander.empathic_voice.chat.connect() as other:
        meta = expect(sock, "chat_metadata")
        expect(other, "chat_metadata")
        sock.send_publish(UserInput(text="before revoke"))
        expect(sock, "user_message")

        out = server.revoke(account.api_key)
        assert out.returncode == 0

        sock.send_publish(UserInput(text="after revoke"))
        got = expect_closed(sock, timeout=10)
        assert [m.type for m in got] == ["error"], got
        assert got[0].code == "E0300", got[0]

        # other accounts' sockets are unaffected
        other.send_publish(UserInput(text="still fine"))
        assert expect(other, "user_message").message.content == "still fine"

    with pytest.raises(ApiError) as info:
        client.empathic_voice.chats.list_chats()
    assert info.value.status_code == 401
    assert _connect_status(HumeClient(api_key=account.api_key, base_url=server.base_url)) == 401
    r = account.fetch_token()
    assert r.status_code == 401, r.text
    # tokens minted before the revocation die with the key
    r = httpx.get(f"{server.base_url}/v0/evi/chats", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 401, r.text
    assert _connect_status(HumeClient(base_url=server.base_url), access_token=token) == 401
    listed = server.cli("keys", "list", "--json").stdout
    assert account.api_key not in listed  # never shows whole keys
    (entry,) = [k for k in json.loads(listed) if account.api_key.startswith(k["prefix"])]
    assert entry["user_id"] == account.user_id and entry["revoked_at"] is not None
    (other_entry,) = [k for k in json.loads(listed) if other_account.api_key.startswith(k["prefix"])]
    assert other_entry["revoked_at"] is None
    assert meta.chat_id


def test_wrong_keys_past_the_limit_get_429_while_the_right_key_works(dedicated):
    """[limits] auth_failures_per_minute: past the limit, failing attempts from the address
    are refused with 429 and Retry-After (as an ErrorResponse); correct credentials from the
    same address keep working, on REST and on the socket."""
    srv = dedicated("auth-limit", env={"COLLOQUY_LIMITS__AUTH_FAILURES_PER_MINUTE": "3"})
    account = srv.create_account()
    contract = srv.contract()
    bad = HumeClient(
        api_key="not-a-key",
        base_url=srv.base_url,
        httpx_client=httpx.Client(timeout=30, event_hooks={"response": [contract.on_response]}),
    )
    no_retries = {"max_retries": 0}  # the SDK would otherwise wait Retry-After and retry
    statuses = []
    for _ in range(4):
        with pytest.raises(ApiError) as info:
            bad.empathic_voice.chats.list_chats(request_options=no_retries)
        statuses.append(info.value.status_code)
    assert statuses == [401, 401, 401, 429]
    err = info.value
    assert err.body["code"] == "too_many_requests", err.body
    retry_after = int(err.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert f"wait {retry_after} seconds" in err.body["message"]
    assert _connect_status(HumeClient(api_key="not-a-key", base_url=srv.base_url)) == 429
    r = httpx.post(
        f"{srv.base_url}/oauth2-cc/token",
        auth=(account.api_key, "wrong-secret"),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    contract.on_response(r)
    assert r.status_code == 429 and r.headers["retry-after"], r.text
    # The right key, from the same address, at the same time.
    assert list(account.client(contract).empathic_voice.chats.list_chats()) == []
    with account.client().empathic_voice.chat.connect() as sock:
        expect(sock, "chat_metadata")
    assert account.fetch_token().status_code == 200
    contract.assert_ok()
