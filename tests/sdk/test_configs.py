"""Prompts, tools and configs (evi-platform.md §2–§4) through the official Python SDK, on both
backends: every one of the 27 operations, paging over several pages, version numbers after
deletes, renames, descriptions, references between configs and prompts/tools, isolation
between accounts, authentication, and every validation error with its message.

Every answer is checked against /openapi.json by method and path (`PlatformChecker`): JSON
bodies against their schema, deletes empty, renames empty `text/plain`, creates `201`.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Dict, List, Optional

import httpx
import pytest
from hume.core.api_error import ApiError
from hume.empathic_voice import (
    BadRequestError,
    PostedBuiltinTool,
    PostedConfigEllmModel,
    PostedConfigEventMessages,
    PostedConfigEventMessagesOnNewChat,
    PostedConfigLanguageModel,
    PostedConfigNudges,
    PostedConfigPrompt,
    PostedConfigTimeouts,
    PostedConfigTimeoutsInactivity,
    PostedConfigTimeoutsMaxDuration,
    PostedInterruptionSpec,
    PostedTurnDetectionSpec,
    PostedUserDefinedToolSpec,
    PostedWebhookSpec,
    PromptExpansionSpec,
    VoiceId,
    VoiceName,
)

from colloquy_testkit import ContractChecker

PARAMS = json.dumps({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]})
AVA_SONG = "5bb7de05-c8fe-426a-8fcc-ba4fc4ce9f9c"

# (method, path pattern, success schema) of the platform operations.
_ROUTES = []
for _kind, _one, _paged in (
    ("prompts", "ReturnPrompt", "ReturnPagedPrompts"),
    ("tools", "ReturnUserDefinedTool", "ReturnPagedUserDefinedTools"),
    ("configs", "ReturnConfig", "ReturnPagedConfigs"),
):
    _ROUTES += [
        ("GET", re.compile(rf"^/v0/evi/{_kind}$"), _paged),
        ("POST", re.compile(rf"^/v0/evi/{_kind}$"), _one),
        ("GET", re.compile(rf"^/v0/evi/{_kind}/[^/]+$"), _paged),
        ("POST", re.compile(rf"^/v0/evi/{_kind}/[^/]+$"), _one),
        ("PATCH", re.compile(rf"^/v0/evi/{_kind}/[^/]+$"), "text"),
        ("DELETE", re.compile(rf"^/v0/evi/{_kind}/[^/]+$"), "empty"),
        ("GET", re.compile(rf"^/v0/evi/{_kind}/[^/]+/version/[^/]+$"), _one),
        ("PATCH", re.compile(rf"^/v0/evi/{_kind}/[^/]+/version/[^/]+$"), _one),
        ("DELETE", re.compile(rf"^/v0/evi/{_kind}/[^/]+/version/[^/]+$"), "empty"),
    ]


class PlatformChecker(ContractChecker):
    """The suite's contract checker, by method and path for the platform operations."""

    def _check(self, response: httpx.Response) -> None:
        req = response.request
        path = req.url.path
        route = next((r for r in _ROUTES if r[0] == req.method and r[1].match(path)), None)
        if route is None:
            return super()._check(response)
        where = f"{req.method} {path} -> {response.status_code}"
        kind = route[2]
        if response.status_code >= 400:
            kind = "ErrorResponse"
        elif req.method == "POST" and response.status_code != 201:
            self.failures.append(f"{where}: a create answers 201")
        elif req.method != "POST" and response.status_code != 200:
            self.failures.append(f"{where}: expected 200")
        ctype = response.headers.get("content-type", "")
        body: Any = None
        if kind == "empty":
            if response.content:
                self.failures.append(f"{where}: a delete answers an empty body, got {response.text[:100]!r}")
        elif kind == "text":
            if not ctype.startswith("text/plain") or response.content:
                self.failures.append(f"{where}: a rename answers empty text/plain, got {ctype!r} {response.text[:100]!r}")
        else:
            if not ctype.startswith("application/json"):
                self.failures.append(f"{where}: content-type {ctype!r}")
            body = json.loads(response.content)
            for err in self.book.errors(kind, body):
                self.failures.append(f"{where}: {kind}: {err}")
        from colloquy_testkit import Checked

        self.checked.append(Checked(req.method, path, req.url.query.decode(), response.status_code, kind, body))


@pytest.fixture
def checker(server):
    c = PlatformChecker(server.schema_book)
    yield c
    c.assert_ok()


@pytest.fixture
def evi(account, checker):
    return account.client(checker).empathic_voice


@pytest.fixture
def other_evi(other_account, checker):
    return other_account.client(checker).empathic_voice


@pytest.fixture
def http(server, account, checker):
    """Raw calls with the account's key (for what the SDK cannot send)."""
    with httpx.Client(
        base_url=server.base_url,
        headers={"X-Hume-Api-Key": account.api_key},
        timeout=30,
        event_hooks={"response": [checker.on_response]},
    ) as c:
        yield c


def bad_request(fn, *args, **kwargs) -> Dict[str, Any]:
    with pytest.raises(BadRequestError) as e:
        fn(*args, **kwargs)
    body = e.value.body
    return {"code": body.code, "message": body.message}


def not_found(fn, *args, **kwargs) -> None:
    with pytest.raises(ApiError) as e:
        fn(*args, **kwargs)
    assert e.value.status_code == 404, (e.value.status_code, e.value.body)
    assert e.value.body["code"] == "not_found", e.value.body


def new_tool(evi, name="get_weather", **kw):
    return evi.tools.create_tool(name=name, parameters=PARAMS, **kw)


# ---- prompts ---------------------------------------------------------------------------


def test_prompt_versions_descriptions_renames_and_deletes(evi, checker):
    p = evi.prompts.create_prompt(name="Weather", text="You are a weather assistant.", version_description="first")
    assert (p.version, p.version_type, p.name, p.text) == (0, "FIXED", "Weather", "You are a weather assistant.")
    assert p.version_description == "first" and p.created_on == p.modified_on
    assert p.created_on > 1_600_000_000_000, "epoch milliseconds"
    assert [c.status for c in checker.checked if c.method == "POST"] == [201]

    v1 = evi.prompts.create_prompt_version(p.id, text="v1", prompt_expansion=PromptExpansionSpec(enabled=False))
    v2 = evi.prompts.create_prompt_version(p.id, text="v2")
    assert (v1.version, v2.version) == (1, 2)
    assert v1.created_on == p.created_on and v1.modified_on >= p.modified_on
    assert v1.prompt_expansion.enabled is False and v1.name == "Weather"

    # Deleted numbers are never reused.
    evi.prompts.delete_prompt_version(p.id, 2)
    not_found(evi.prompts.get_prompt_version, p.id, 2)
    v3 = evi.prompts.create_prompt_version(p.id, text="v3")
    assert v3.version == 3
    versions = evi.prompts.list_prompt_versions(p.id)
    assert [x.version for x in versions.prompts_page] == [0, 1, 3], "all versions by default"
    assert versions.total_pages == 1
    newest = evi.prompts.list_prompt_versions(p.id, restrict_to_most_recent=True)
    assert [x.version for x in newest.prompts_page] == [3]

    got = evi.prompts.get_prompt_version(p.id, 1)
    assert got.text == "v1" and got.version_type == "FIXED"

    described = evi.prompts.update_prompt_description(p.id, 1, version_description="better")
    assert described.version_description == "better" and described.text == "v1"
    assert described.modified_on >= v1.modified_on and described.created_on == p.created_on
    cleared = evi.prompts.update_prompt_description(p.id, 1)
    assert cleared.version_description is None, "a description PATCH with {} clears it"

    assert evi.prompts.update_prompt_name(p.id, name="Forecast") == ""
    assert {x.name for x in evi.prompts.list_prompt_versions(p.id).prompts_page} == {"Forecast"}

    for v in (0, 1):
        evi.prompts.delete_prompt_version(p.id, v)
    evi.prompts.delete_prompt_version(p.id, 3)
    not_found(evi.prompts.list_prompt_versions, p.id)
    not_found(evi.prompts.get_prompt_version, p.id, 3)

    q = evi.prompts.create_prompt(name="Gone", text="x")
    evi.prompts.create_prompt_version(q.id, text="y")
    evi.prompts.delete_prompt(q.id)
    not_found(evi.prompts.list_prompt_versions, q.id)
    not_found(evi.prompts.delete_prompt, q.id)
    not_found(evi.prompts.delete_prompt_version, q.id, 0)
    not_found(evi.prompts.create_prompt_version, q.id, text="z")
    not_found(evi.prompts.update_prompt_name, q.id, name="z")
    not_found(evi.prompts.update_prompt_description, q.id, 0, version_description="z")


def test_listings_page_over_several_pages(evi, checker):
    made = [evi.prompts.create_prompt(name=f"p{i:02d}" if i % 5 else "Same", text=f"t{i}") for i in range(23)]
    for p in made[:4]:
        evi.prompts.create_prompt_version(p.id, text="again")
    pager = evi.prompts.list_prompts(page_size=10)
    seen = [(p.id, p.version) for p in pager]
    expected = [(p.id, 1 if i < 4 else 0) for i, p in enumerate(made)]
    assert seen == expected, "newest version of each, oldest first, over three pages"
    assert pager.response.total_pages == 3 and pager.response.page_size == 10
    pages = [c for c in checker.checked if c.path == "/v0/evi/prompts" and c.method == "GET"]
    assert [re.search(r"page_number=(\d+)", c.query).group(1) for c in pages] == ["0", "1", "2", "3"]
    assert pages[-1].body["prompts_page"] == [] and pages[-1].body["total_pages"] == 3

    every = list(evi.prompts.list_prompts(page_size=7, restrict_to_most_recent=False))
    assert len(every) == 27
    assert (every[0].id, every[0].version, every[1].id, every[1].version) == (made[0].id, 0, made[0].id, 1)
    same = list(evi.prompts.list_prompts(name="Same"))
    assert [p.id for p in same] == [made[i].id for i in (0, 5, 10, 15, 20)]
    assert list(evi.prompts.list_prompts(name="same")) == [], "names match exactly"
    assert list(evi.prompts.list_prompts(name="Sam")) == []

    # Tools and configs page the same way (their version lists are pagers too).
    tool = new_tool(evi)
    for _ in range(11):
        evi.tools.create_tool_version(tool.id, parameters=PARAMS)
    versions = list(evi.tools.list_tool_versions(tool.id, page_size=5))
    assert [t.version for t in versions] == list(range(12))
    configs = [evi.configs.create_config(name=f"c{i}", evi_version="3") for i in range(6)]
    for c in configs[:2]:
        evi.configs.create_config_version(c.id, evi_version="4-mini")
    listed = list(evi.configs.list_configs(page_size=4))
    assert [(c.id, c.version) for c in listed] == [(c.id, 1 if i < 2 else 0) for i, c in enumerate(configs)]
    assert len(list(evi.configs.list_configs(page_size=4, restrict_to_most_recent=False))) == 8
    assert [c.version for c in evi.configs.list_config_versions(configs[0].id, page_size=1)] == [0, 1]


# ---- tools -----------------------------------------------------------------------------


def test_tool_operations(evi):
    t = new_tool(evi, description="Current weather", fallback_content="unknown", version_description="d0")
    assert (t.tool_type, t.version, t.version_type, t.name) == ("FUNCTION", 0, "FIXED", "get_weather")
    assert (t.parameters, t.description, t.fallback_content, t.version_description) == (PARAMS, "Current weather", "unknown", "d0")
    t1 = evi.tools.create_tool_version(t.id, parameters='{"type":"object"}', description="v1")
    assert (t1.version, t1.parameters, t1.description, t1.fallback_content) == (1, '{"type":"object"}', "v1", None)
    assert t1.created_on == t.created_on
    assert evi.tools.get_tool_version(t.id, 0).description == "Current weather"
    assert evi.tools.update_tool_description(t.id, 0, version_description="x").version_description == "x"
    assert evi.tools.update_tool_name(t.id, name="get-forecast_2") == ""
    assert {v.name for v in evi.tools.list_tool_versions(t.id)} == {"get-forecast_2"}
    assert [v.version for v in evi.tools.list_tools()] == [1]
    evi.tools.delete_tool_version(t.id, 1)
    assert evi.tools.create_tool_version(t.id, parameters=PARAMS).version == 2
    evi.tools.delete_tool(t.id)
    not_found(evi.tools.get_tool_version, t.id, 0)
    not_found(evi.tools.delete_tool, t.id)
    not_found(evi.tools.delete_tool_version, t.id, 2)


# ---- configs ---------------------------------------------------------------------------


def test_a_config_with_every_setting_reads_back_resolved(evi, checker):
    prompt = evi.prompts.create_prompt(name="Weather prompt", text="You are a weather assistant.")
    tool = new_tool(evi)
    c = evi.configs.create_config(
        name="Weather Assistant",
        evi_version="3",
        version_description="first",
        prompt=PostedConfigPrompt(id=prompt.id, version=0),
        voice=VoiceName(name="Ava Song", provider="HUME_AI"),
        language_model=PostedConfigLanguageModel(model_provider="ANTHROPIC", model_resource="claude-sonnet-4-5-20250929", temperature=0.5),
        ellm_model=PostedConfigEllmModel(allow_short_responses=True),
        tools=[PostedUserDefinedToolSpec(id=tool.id)],
        builtin_tools=[PostedBuiltinTool(name="hang_up", fallback_content="bye")],
        event_messages=PostedConfigEventMessages(on_new_chat=PostedConfigEventMessagesOnNewChat(enabled=True, text="Hi!")),
        timeouts=PostedConfigTimeouts(
            inactivity=PostedConfigTimeoutsInactivity(enabled=True, duration_secs=60),
            max_duration=PostedConfigTimeoutsMaxDuration(enabled=False),
        ),
        nudges=PostedConfigNudges(enabled=True, interval_secs=5),
        interruption=PostedInterruptionSpec(min_interruption_ms=300),
        turn_detection=PostedTurnDetectionSpec(end_of_turn_silence_ms=800, prefix_padding_ms=200, speech_detection_threshold=0.5),
        webhooks=[PostedWebhookSpec(url="https://example.com/hook", events=["chat_started", "tool_call"])],
    )
    assert (c.version, c.name, c.evi_version, c.version_description) == (0, "Weather Assistant", "3", "first")
    assert (c.prompt.id, c.prompt.version, c.prompt.version_type, c.prompt.text) == (prompt.id, 0, "FIXED", prompt.text)
    assert (c.voice.id, c.voice.name, c.voice.provider) == (AVA_SONG, "Ava Song", "HUME_AI")
    assert (c.language_model.model_provider, c.language_model.temperature) == ("ANTHROPIC", 0.5)
    assert c.ellm_model.allow_short_responses is True
    assert [(t.id, t.version, t.version_type, t.tool_type) for t in c.tools] == [(tool.id, 0, "LATEST", "FUNCTION")]
    assert [(b.name, b.tool_type, b.fallback_content) for b in c.builtin_tools] == [("hang_up", "BUILTIN", "bye")]
    ev = c.event_messages
    assert (ev.on_new_chat.enabled, ev.on_new_chat.text) == (True, "Hi!")
    assert (ev.on_inactivity_timeout.enabled, ev.on_max_duration_timeout.enabled) == (False, False)
    assert (c.timeouts.inactivity.enabled, c.timeouts.inactivity.duration_secs) == (True, 60)
    assert (c.timeouts.max_duration.enabled, c.timeouts.max_duration.duration_secs) == (False, 1800)
    assert (c.nudges.enabled, c.nudges.interval_secs) == (True, 5)
    assert c.interruption.min_interruption_ms == 300
    assert c.turn_detection.end_of_turn_silence_ms == 800
    assert [(w.url, w.events) for w in c.webhooks] == [("https://example.com/hook", ["chat_started", "tool_call"])]

    # A reference to the latest tool follows its new versions; a fixed prompt does not.
    evi.tools.create_tool_version(tool.id, parameters=PARAMS, description="newer")
    evi.prompts.create_prompt_version(prompt.id, text="newer prompt")
    again = evi.configs.get_config_version(c.id, 0)
    assert [(t.version, t.description) for t in again.tools] == [(1, "newer")]
    assert again.prompt.version == 0

    # A new version replaces every setting but keeps allow_short_responses when omitted.
    v1 = evi.configs.create_config_version(c.id, evi_version="4-mini", prompt=PostedConfigPrompt(id=prompt.id))
    assert (v1.version, v1.name, v1.evi_version, v1.created_on) == (1, "Weather Assistant", "4-mini", c.created_on)
    assert (v1.prompt.version, v1.prompt.version_type, v1.prompt.text) == (1, "LATEST", "newer prompt")
    assert v1.ellm_model.allow_short_responses is True
    assert (v1.voice, v1.tools, v1.builtin_tools, v1.nudges, v1.webhooks) == (None, [], [], None, None)
    assert (v1.timeouts.inactivity.duration_secs, v1.timeouts.max_duration.enabled) == (120, True)
    v2 = evi.configs.create_config_version(c.id, evi_version="3", ellm_model=PostedConfigEllmModel(allow_short_responses=False))
    assert v2.ellm_model.allow_short_responses is False

    assert [x.version for x in evi.configs.list_config_versions(c.id)] == [0, 1, 2]
    assert evi.configs.update_config_description(c.id, 1, version_description="latest prompt").version_description == "latest prompt"
    assert evi.configs.update_config_name(c.id, name="Renamed") == ""
    assert evi.configs.get_config_version(c.id, 2).name == "Renamed"
    evi.configs.delete_config_version(c.id, 2)
    assert evi.configs.create_config_version(c.id, evi_version="3").version == 3
    evi.configs.delete_config(c.id)
    not_found(evi.configs.get_config_version, c.id, 0)
    not_found(evi.configs.create_config_version, c.id, evi_version="3")
    assert {"ReturnConfig", "ReturnPagedConfigs", "ReturnUserDefinedTool", "text", "empty"} <= checker.schemas_seen()


def test_a_prompt_given_as_text_is_created_for_the_config(evi):
    c = evi.configs.create_config(name="Inline", evi_version="3", prompt=PostedConfigPrompt(text="Be brief.", prompt_expansion=PromptExpansionSpec(enabled=False)))
    assert (c.prompt.name, c.prompt.text, c.prompt.version, c.prompt.version_type) == ("Inline", "Be brief.", 0, "FIXED")
    assert c.prompt.prompt_expansion.enabled is False
    listed = evi.prompts.list_prompts(name="Inline").response.prompts_page
    assert [p.id for p in listed] == [c.prompt.id]
    minimal = evi.configs.create_config(name="Defaults", evi_version="3")
    assert (minimal.prompt, minimal.voice, minimal.language_model, minimal.tools, minimal.builtin_tools) == (None, None, None, [], [])
    assert minimal.ellm_model.allow_short_responses is False
    assert minimal.event_messages.on_new_chat.enabled is False
    assert (minimal.timeouts.inactivity.duration_secs, minimal.timeouts.max_duration.duration_secs) == (120, 1800)
    by_id = evi.configs.create_config(name="By id", evi_version="3", voice=VoiceId(id=AVA_SONG, provider="HUME_AI"))
    assert by_id.voice.name == "Ava Song"
    other = evi.configs.create_config(name="Kora", evi_version="3", voice=VoiceName(name="Kora", provider="HUME_AI"))
    again = evi.configs.create_config(name="Kora 2", evi_version="3", voice=VoiceName(name="Kora", provider="HUME_AI"))
    assert other.voice.id == again.voice.id != AVA_SONG, "a stable id per name"
    uuid.UUID(other.voice.id)
    # Without a provider (the SDK's default), the account's saved voices first, then the
    # voice library: a library name works.
    plain = evi.configs.create_config(name="Plain", evi_version="3", voice=VoiceName(name="Ava Song"))
    assert (plain.voice.id, plain.voice.provider) == (AVA_SONG, "HUME_AI")


def test_what_a_config_uses_cannot_be_deleted(evi):
    prompt = evi.prompts.create_prompt(name="p", text="t")
    evi.prompts.create_prompt_version(prompt.id, text="t1")
    tool = new_tool(evi)
    c = evi.configs.create_config(name="User", evi_version="3", prompt=PostedConfigPrompt(id=prompt.id, version=0), tools=[PostedUserDefinedToolSpec(id=tool.id)])
    err = bad_request(evi.prompts.delete_prompt, prompt.id)
    assert err["code"] == "still_referenced"
    assert err["message"] == (
        f'prompt {prompt.id} is used by config "User" ({c.id}) version 0; delete those config '
        "versions (or give them other prompts) first"
    )
    err = bad_request(evi.prompts.delete_prompt_version, prompt.id, 0)
    assert err["message"].startswith(f"version 0 of prompt {prompt.id} is used by config \"User\"")
    evi.prompts.delete_prompt_version(prompt.id, 1)  # not referenced
    err = bad_request(evi.tools.delete_tool_version, tool.id, 0)
    assert "is used by config" in err["message"], "the latest reference holds the last version"
    evi.configs.create_config_version(c.id, evi_version="3", tools=[PostedUserDefinedToolSpec(id=tool.id, version=0)])
    err = bad_request(evi.tools.delete_tool, tool.id)
    assert f'config "User" ({c.id}) versions 0, 1' in err["message"]
    evi.configs.delete_config(c.id)
    evi.tools.delete_tool(tool.id)
    evi.prompts.delete_prompt(prompt.id)


def test_accounts_never_see_each_other(evi, other_evi, account, other_account):
    p = evi.prompts.create_prompt(name="mine", text="t")
    t = new_tool(evi)
    c = evi.configs.create_config(name="mine", evi_version="3")
    for kind, obj, create in (
        ("prompts", p, lambda i: other_evi.prompts.create_prompt_version(i, text="x")),
        ("tools", t, lambda i: other_evi.tools.create_tool_version(i, parameters=PARAMS)),
        ("configs", c, lambda i: other_evi.configs.create_config_version(i, evi_version="3")),
    ):
        api = getattr(other_evi, kind)
        one = kind[:-1]
        not_found(getattr(api, f"get_{one}_version"), obj.id, 0)
        not_found(getattr(api, f"list_{one}_versions"), obj.id)
        not_found(getattr(api, f"update_{one}_name"), obj.id, name="theirs")
        not_found(getattr(api, f"update_{one}_description"), obj.id, 0, version_description="theirs")
        not_found(getattr(api, f"delete_{one}_version"), obj.id, 0)
        not_found(getattr(api, f"delete_{one}"), obj.id)
        not_found(create, obj.id)
        assert list(getattr(api, f"list_{kind}")()) == []
    err = bad_request(other_evi.configs.create_config, name="x", evi_version="3", prompt=PostedConfigPrompt(id=p.id))
    assert err == {"code": "unknown_reference", "message": f"prompt.id: no prompt {p.id} exists for this account (create it first with POST /v0/evi/prompts)"}
    err = bad_request(other_evi.configs.create_config, name="x", evi_version="3", tools=[PostedUserDefinedToolSpec(id=t.id, version=0)])
    assert err["message"] == f"tools[0].id: no tool {t.id} version 0 exists for this account (create it first with POST /v0/evi/tools)"
    assert evi.prompts.get_prompt_version(p.id, 0).name == "mine", "untouched"


def test_a_retention_disabled_account_manages_configs(server, checker):
    quiet = server.create_account(name="no-retention", no_retention=True).client(checker).empathic_voice
    c = quiet.configs.create_config(name="Private", evi_version="3", prompt=PostedConfigPrompt(text="hi"))
    assert [x.id for x in quiet.configs.list_configs()] == [c.id]
    quiet.configs.delete_config(c.id)


# ---- errors ----------------------------------------------------------------------------

PATHS = [
    ("GET", "/v0/evi/{k}"), ("POST", "/v0/evi/{k}"), ("GET", "/v0/evi/{k}/{id}"), ("POST", "/v0/evi/{k}/{id}"),
    ("DELETE", "/v0/evi/{k}/{id}"), ("PATCH", "/v0/evi/{k}/{id}"), ("GET", "/v0/evi/{k}/{id}/version/0"),
    ("DELETE", "/v0/evi/{k}/{id}/version/0"), ("PATCH", "/v0/evi/{k}/{id}/version/0"),
]


@pytest.mark.parametrize("kind", ["prompts", "tools", "configs"])
def test_credentials_and_ids(server, http, kind):
    # A request whose body the server does not read (refused before it, or a GET with a
    # body) ends its connection: one connection per request, and bodies only where read.
    anonymous = httpx.Client(base_url=server.base_url, timeout=30, headers={"Connection": "close"})
    for method, template in PATHS:
        path = template.format(k=kind, id=uuid.uuid4())
        body = {"json": {"name": "n", "text": "t", "parameters": "{}", "evi_version": "3"}} if method in ("POST", "PATCH") else {}
        r = anonymous.request(method, path, **body)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.json()["code"] == "unauthorized"
        if "{id}" in template:
            r = http.request(method, path, **body)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
            bad = template.format(k=kind, id="your-config-id")
            r = http.request(method, bad, **body)
            assert r.status_code == 400 and "must be a UUID" in r.json()["message"], (method, bad, r.text)
    r = http.get(f"/v0/evi/{kind}/{uuid.uuid4()}/version/-1")
    assert r.status_code == 400 and r.json()["message"] == "version must be a whole number from 0 to 2147483647 (got `-1`)"
    for q, msg in (
        ("page_size=0", "page_size must be between 1 and 100 inclusive (got 0)"),
        ("restrict_to_most_recent=maybe", "restrict_to_most_recent must be `true` or `false` (got `maybe`)"),
    ):
        r = http.get(f"/v0/evi/{kind}?{q}")
        assert (r.status_code, r.json()["message"]) == (400, msg)
    r = http.post(f"/v0/evi/{kind}", content=b"not json")
    assert r.status_code == 400 and r.json()["message"].startswith("the request body is not valid"), r.text


def test_prompt_and_tool_validation(evi, http):
    cases = [
        (lambda: evi.prompts.create_prompt(name=" ", text="t"), "invalid_parameter", "name must not be empty or blank"),
        (lambda: evi.prompts.create_prompt(name="x" * 257, text="t"), "invalid_parameter", "name must be at most 256 characters long (got 257)"),
        (lambda: evi.tools.create_tool(name="get weather", parameters=PARAMS), "invalid_parameter", "name must be 1 to 64 characters among a-z, A-Z, 0-9, `_` and `-` (^[a-zA-Z0-9_-]{1,64}$), as the model calls it (got \"get weather\")"),
        (lambda: evi.tools.create_tool(name="t" * 65, parameters=PARAMS), "invalid_parameter", None),
        (lambda: evi.tools.create_tool(name="ok", parameters="[]"), "invalid_json", "parameters must be a JSON Schema object written as a string"),
        (lambda: evi.tools.create_tool(name="ok", parameters="{oops"), "invalid_json", None),
    ]
    for call, code, start in cases:
        err = bad_request(call)
        assert err["code"] == code, err
        assert start is None or err["message"].startswith(start), err
    t = new_tool(evi)
    err = bad_request(evi.tools.update_tool_name, t.id, name="no spaces allowed")
    assert err["message"].startswith("name must be 1 to 64 characters")
    err = bad_request(evi.tools.create_tool_version, t.id, parameters="1")
    assert err["message"].endswith("it is JSON, but not an object (got 1)")
    p = evi.prompts.create_prompt(name="p", text="t")
    err = bad_request(evi.prompts.update_prompt_name, p.id, name="")
    assert err["message"] == "name must not be empty or blank"
    r = http.post("/v0/evi/prompts", json={"name": "p"})
    assert r.status_code == 400 and r.json()["message"].startswith("the request body is not valid: missing field `text`"), r.text
    r = http.post("/v0/evi/tools", json={"name": "t", "parameters": {"type": "object"}})
    assert r.status_code == 400 and r.json()["message"].startswith("`parameters`: invalid type: map, expected a string"), r.text


CONFIG_ERRORS = [
    ({"evi_version": "2"}, "invalid_parameter", "`evi_version`: unknown variant `2`, expected `3` or `4-mini`"),
    ({"timeouts": PostedConfigTimeouts(inactivity=PostedConfigTimeoutsInactivity(enabled=True, duration_secs=29))}, "invalid_parameter", "timeouts.inactivity.duration_secs must be between 30 and 1800 inclusive (got 29)"),
    ({"timeouts": PostedConfigTimeouts(max_duration=PostedConfigTimeoutsMaxDuration(enabled=True, duration_secs=1801))}, "invalid_parameter", "timeouts.max_duration.duration_secs must be between 30 and 1800 inclusive (got 1801)"),
    ({"interruption": PostedInterruptionSpec(min_interruption_ms=49)}, "invalid_parameter", "interruption.min_interruption_ms must be between 50 and 2000 inclusive (got 49)"),
    ({"interruption": PostedInterruptionSpec(min_interruption_ms=2001)}, "invalid_parameter", "interruption.min_interruption_ms must be between 50 and 2000 inclusive (got 2001)"),
    ({"turn_detection": PostedTurnDetectionSpec(end_of_turn_silence_ms=3001)}, "invalid_parameter", "turn_detection.end_of_turn_silence_ms must be between 500 and 3000 inclusive (got 3001)"),
    ({"turn_detection": PostedTurnDetectionSpec(prefix_padding_ms=-1)}, "invalid_parameter", "turn_detection.prefix_padding_ms must be between 0 and 1000 inclusive (got -1)"),
    ({"turn_detection": PostedTurnDetectionSpec(speech_detection_threshold=1.01)}, "invalid_parameter", "turn_detection.speech_detection_threshold must be between 0 and 1 inclusive (got 1.01)"),
    ({"language_model": PostedConfigLanguageModel(temperature=1.5)}, "invalid_parameter", "language_model.temperature must be between 0 and 1 inclusive (got 1.5)"),
    ({"language_model": PostedConfigLanguageModel(model_provider="ACME")}, "invalid_parameter", "`language_model.model_provider`: unknown variant `ACME`, expected one of `GROQ`"),
    ({"nudges": PostedConfigNudges(interval_secs=0)}, "invalid_parameter", "nudges.interval_secs must be between 1 and 1800 inclusive (got 0)"),
    ({"builtin_tools": [PostedBuiltinTool(name="dance")]}, "invalid_parameter", "`builtin_tools[0].name`: unknown variant `dance`, expected `web_search` or `hang_up`"),
    ({"builtin_tools": [PostedBuiltinTool(name="hang_up"), PostedBuiltinTool(name="hang_up")]}, "invalid_combination", "builtin_tools[1].name repeats hang_up; list each built-in tool once"),
    ({"webhooks": [PostedWebhookSpec(url="ftp://example.com", events=["chat_ended"])]}, "invalid_parameter", "webhooks[0].url must be an http:// or https:// URL"),
    ({"webhooks": [PostedWebhookSpec(url="https://example.com", events=["chat_paused"])]}, "invalid_parameter", "`webhooks[0].events[0]`: unknown variant `chat_paused`, expected one of `chat_started`, `chat_ended`, `tool_call`"),
    ({"webhooks": [PostedWebhookSpec(url="https://example.com", events=[])]}, "invalid_parameter", "webhooks[0].events must name at least one of chat_started, chat_ended, tool_call"),
    ({"prompt": PostedConfigPrompt(id=str(uuid.UUID(int=1)), text="t")}, "invalid_combination", "prompt: give either id (an existing prompt, optionally with version) or text (a new prompt), not both"),
    ({"prompt": PostedConfigPrompt()}, "invalid_combination", "prompt: give id (an existing prompt, optionally with version) or text (a new prompt)"),
    ({"prompt": PostedConfigPrompt(id="pid")}, "invalid_parameter", 'prompt.id must be a UUID (got "pid")'),
    ({"prompt": PostedConfigPrompt(id=str(uuid.UUID(int=1)))}, "unknown_reference", f"prompt.id: no prompt {uuid.UUID(int=1)} exists for this account"),
    ({"tools": [PostedUserDefinedToolSpec(id=str(uuid.UUID(int=2)), version=3)]}, "unknown_reference", f"tools[0].id: no tool {uuid.UUID(int=2)} version 3 exists for this account"),
    ({"voice": VoiceName(name="Ava Song", provider="CUSTOM_VOICE")}, "unknown_reference", 'voice: no CUSTOM_VOICE voice with name "Ava Song" in this account'),
    ({"voice": VoiceName(name="Nobody Here", provider="HUME_AI")}, "unknown_reference", 'voice: no voice with name "Nobody Here" in the voice library'),
    ({"voice": VoiceId(id=str(uuid.UUID(int=3)), provider="HUME_AI")}, "unknown_reference", f'voice: no voice with id "{uuid.UUID(int=3)}" in the voice library'),
    ({"voice": VoiceName(name="x", provider="ELEVEN")}, "invalid_parameter", "`voice.provider`: unknown variant `ELEVEN`, expected `HUME_AI` or `CUSTOM_VOICE`"),
]


@pytest.mark.parametrize("fields,code,start", CONFIG_ERRORS, ids=[e[2][:40] for e in CONFIG_ERRORS])
def test_config_validation(evi, fields, code, start):
    args = {"evi_version": "3", **fields}
    err = bad_request(evi.configs.create_config, name="Invalid", **args)
    assert err["code"] == code and err["message"].startswith(start), err
    c = evi.configs.create_config(name="Valid", evi_version="3")
    err = bad_request(evi.configs.create_config_version, c.id, **args)
    assert err["code"] == code and err["message"].startswith(start), err
    assert [v.version for v in evi.configs.list_config_versions(c.id)] == [0], "nothing stored"
    assert list(evi.configs.list_configs(name="Invalid")) == []


def test_a_refused_config_leaves_no_prompt_behind(evi):
    err = bad_request(
        evi.configs.create_config,
        name="Orphan",
        evi_version="3",
        prompt=PostedConfigPrompt(text="t"),
        tools=[PostedUserDefinedToolSpec(id=str(uuid.uuid4()))],
    )
    assert err["code"] == "unknown_reference"
    assert list(evi.prompts.list_prompts(name="Orphan")) == []


def test_servers_sharing_a_database_see_a_new_config_version_at_once(colloquy_bin, backend):
    """Two `colloquy serve` processes on one PostgreSQL database: a config version created
    through one is what the other's next connect uses (nothing is cached), seen here by the
    greeting each version says."""
    if backend != "postgres":
        pytest.skip("servers share a database on PostgreSQL")
    from colloquy_server import Account, ServerProcess, create_pg_database, drop_pg_database, new_temp_dir, pg_url_for, require_backend
    from colloquy_testkit import expect, expect_answer

    require_backend("postgres")
    db = create_pg_database()
    servers = []
    try:
        for label in ("cfg-a", "cfg-b"):
            servers.append(ServerProcess(colloquy_bin, "postgres", new_temp_dir(label), pg_url_for(db), label=label).start())
        a, b = servers
        acct = a.create_account()
        on_a = acct.client().empathic_voice
        on_b = Account(server=b, user_id=acct.user_id, api_key=acct.api_key, secret_key=acct.secret_key).client().empathic_voice

        def greeting(text):
            return PostedConfigEventMessages(on_new_chat=PostedConfigEventMessagesOnNewChat(enabled=True, text=text))

        cfg = on_a.configs.create_config(name="shared", evi_version="3", event_messages=greeting("Version zero."))
        said = []
        for version in ("Version zero.", "Version one.", "Version two."):
            if version != "Version zero.":
                on_a.configs.create_config_version(cfg.id, evi_version="3", event_messages=greeting(version))
            with on_b.chat.connect(config_id=cfg.id) as sock:
                expect(sock, "chat_metadata")
                am, _ = expect_answer(sock, version)
                said.append(am.message.content)
        assert said == ["Version zero.", "Version one.", "Version two."]
        versions = sorted(c.config.version for c in on_a.chats.list_chats(config_id=cfg.id))
        assert versions == [0, 1, 2]
    finally:
        for srv in servers:
            srv.stop()
        drop_pg_database(db)
