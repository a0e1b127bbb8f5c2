"""The web UI in headless Chromium: sign-in, the chat list (filters, search, paging, local
times), a chat (transcript, raw events, audio playback with seeking, emotion chart), a chat
group, sign-out, 404s, CSRF, keyboard use and a 375 px wide screen.

Every page visited is screenshotted into test-artifacts/ui/.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import expect

from conftest import (
    EMOTION_MESSAGES,
    HARBOUR_PROMPT_V0,
    HARBOUR_PROMPT_V1,
    LEADERS,
    RELAY_LEADERS,
    RELAY_LINES,
    RUNNERS_UP,
    UI,
    UserInput,
    recv,
)


def rows(ui: UI):
    return ui.page.locator("#results tbody tr")


def row_ids(ui: UI):
    # One DOM read (htmx may swap the table between two locator calls).
    return ui.page.eval_on_selector_all("#results tbody tr", "rows => rows.map(r => r.dataset.chatId)")


def expect_ids(ui: UI, ids, timeout: float = 15):
    """Waits until the results table lists exactly `ids` (htmx swaps it asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        got = row_ids(ui)
        if got == list(ids):
            return
        assert time.monotonic() < deadline, f"rows {got} != {list(ids)}"
        time.sleep(0.1)


# ---- sign-in ----------------------------------------------------------------------------------


def test_sign_in_with_a_wrong_then_the_right_key(ui, seed):
    r = ui.goto("/ui/chats")
    assert "/ui/sign-in" in ui.page.url, "strangers are sent to sign in"
    expect(ui.page.get_by_role("heading", name="Sign in to Colloquy")).to_be_visible()
    ui.page.get_by_label("API key").fill("not-a-real-key")
    ui.page.get_by_role("button", name="Sign in").click()
    expect(ui.page.locator("#sign-in-error")).to_contain_text("That API key is not valid")
    expect(ui.page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    ui.shot("sign-in-error")
    ui.console_errors.clear()  # the 401 of the failed attempt

    ui.page.get_by_label("API key").fill(seed.main.api_key)
    ui.page.get_by_role("button", name="Sign in").click()
    ui.page.wait_for_url("**/ui/chats")
    expect(ui.page.get_by_role("heading", name="Chats", exact=True)).to_be_visible()
    expect(rows(ui)).to_have_count(seed.main_chat_count)
    expect(ui.page.locator(".account")).to_contain_text(seed.main.user_id[-8:])

    session = [c for c in ui.context.cookies() if c["name"] == "colloquy_session"]
    assert len(session) == 1, ui.context.cookies()
    assert session[0]["httpOnly"] and session[0]["sameSite"] == "Strict", session[0]
    assert session[0]["path"] == "/ui"
    assert seed.main.api_key not in session[0]["value"], "the key itself is never the cookie"
    assert r is not None


def test_sign_in_returns_to_the_page_asked_for(ui, seed):
    ui.goto(f"/ui/chats/{seed.weather_chat}")
    assert "/ui/sign-in" in ui.page.url and "next=" in ui.page.url
    ui.page.get_by_label("API key").fill(seed.main.api_key)
    ui.page.get_by_role("button", name="Sign in").click()
    ui.page.wait_for_url(f"**/ui/chats/{seed.weather_chat}")
    expect(ui.page.locator("#chat-id")).to_have_text(seed.weather_chat)


# ---- the chat list -----------------------------------------------------------------------------


def test_chat_list_columns_and_local_times(signed_in, seed):
    ui = signed_in
    first = rows(ui).first
    # Newest first by default: the last filler chat recorded.
    assert first.get_attribute("data-chat-id") == seed.filler_chats[-1]
    cells = first.locator("td")
    # Ids: the last 8 hex digits (UUIDv7 start with the time), the whole id on hover.
    chat_link = cells.nth(0).locator("a")
    expect(chat_link).to_have_text("\u2026" + seed.filler_chats[-1][-8:])
    expect(chat_link).to_have_attribute("title", seed.filler_chats[-1])
    expect(cells.nth(3)).to_have_text("4")  # start, assistant, user message, end
    expect(cells.nth(4)).to_have_text("USER_ENDED")
    expect(cells.nth(2)).to_have_text(re.compile(r"^\d+ s$"))
    # Local time: the UTC text became New York time; the UTC text stays as the tooltip.
    t = first.locator("time")
    expect(t).to_have_attribute("data-localized", "1")
    assert "UTC" not in t.inner_text() and "UTC" in t.get_attribute("title")
    iso = t.get_attribute("datetime")
    ny = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(ZoneInfo("America/New_York"))
    assert f"{ny.hour % 12 or 12}:{ny.minute:02d}:{ny.second:02d}" in t.inner_text(), (t.inner_text(), iso)
    # The group column links to the group page.
    emotion_row = ui.page.locator(f'tr[data-chat-id="{seed.emotion_chat}"]')
    expect(emotion_row.locator("td").nth(5).locator("a")).to_have_attribute("href", f"/ui/groups/{seed.emotion_group}")
    expect(emotion_row.locator("td").nth(2)).to_have_text("2 min 47 s")
    expect(ui.page.locator("#result-count")).to_have_text(f"Showing 1–{seed.main_chat_count} of {seed.main_chat_count} chats")
    ui.shot("chats")


def test_filter_by_status_config_and_date(signed_in, seed):
    ui = signed_in
    ui.page.get_by_label("Status").select_option("INACTIVITY_TIMEOUT")
    expect_ids(ui, [seed.emotion_chat])
    assert "status=INACTIVITY_TIMEOUT" in ui.page.url, "htmx pushed the filtered URL"
    ui.shot("chats-status-filter")

    ui.page.get_by_label("Status").select_option("USER_ENDED")
    expect(rows(ui)).to_have_count(seed.main_chat_count - 1)
    assert seed.emotion_chat not in row_ids(ui)

    ui.goto(f"/ui/chats?config={seed.emotion_config}")
    assert row_ids(ui) == [seed.emotion_chat]
    expect(ui.page.get_by_label("Config id")).to_have_value(seed.emotion_config)

    today = datetime.now(timezone.utc)
    tomorrow = (today + timedelta(days=2)).strftime("%Y-%m-%d")
    ui.goto("/ui/chats")
    ui.page.get_by_label("Started on or after").fill(tomorrow)
    ui.page.get_by_role("button", name="Apply").click()
    expect(ui.page.locator("#empty-state")).to_contain_text("No chats match these filters")
    ui.shot("chats-no-match")
    ui.page.get_by_label("Started on or after").fill((today - timedelta(days=2)).strftime("%Y-%m-%d"))
    ui.page.get_by_role("button", name="Apply").click()
    expect(rows(ui)).to_have_count(seed.main_chat_count)
    assert "tz=" in ui.page.url, "the viewer's zone is sent with date filters"


def test_search_finds_chats_by_their_words(signed_in, seed):
    ui = signed_in
    box = ui.page.get_by_label("Search transcripts")
    box.fill("umbrella")
    box.press("Enter")
    expect_ids(ui, [seed.resumed_chat])
    assert "q=umbrella" in ui.page.url
    ui.shot("chats-search")
    box.fill("Lisbon breeze")  # words of the assistant's turn, all must match
    box.press("Enter")
    expect_ids(ui, [seed.weather_chat])
    box.fill("harbour")  # the chat written straight into the database is searchable too
    box.press("Enter")
    expect_ids(ui, [seed.emotion_chat])
    box.fill("zebra-crossing-nowhere")
    box.press("Enter")
    expect(ui.page.locator("#empty-state")).to_contain_text("No chats match")


def test_pagination_and_order(signed_in, seed):
    ui = signed_in
    ui.goto("/ui/chats?size=4")
    expect(ui.page.locator(".pager .pages")).to_have_text(f"Page 1 of 3")
    page1 = row_ids(ui)
    assert len(page1) == 4
    ui.page.get_by_role("link", name="Next →").click()
    expect(ui.page.locator(".pager .pages")).to_have_text("Page 2 of 3")
    ui.page.wait_for_url(re.compile(r"page=2"))
    page2 = row_ids(ui)
    assert len(page2) == 4 and not set(page1) & set(page2)
    ui.page.get_by_role("link", name="Next →").click()
    expect(ui.page.locator(".pager .pages")).to_have_text("Page 3 of 3")
    page3 = row_ids(ui)
    assert len(page3) == seed.main_chat_count - 8
    assert seed.emotion_chat == page3[-1], "newest first: the oldest chat is last"
    ui.shot("chats-page-3")
    ui.page.get_by_role("link", name="← Previous").click()
    expect(ui.page.locator(".pager .pages")).to_have_text("Page 2 of 3")
    assert row_ids(ui) == page2

    ui.goto("/ui/chats?size=4")
    ui.page.get_by_label("Order").select_option("oldest")
    expect(rows(ui).first).to_have_attribute("data-chat-id", seed.emotion_chat)
    assert "order=oldest" in ui.page.url
    # The page itself (not just htmx) honours the URL: reload keeps order and page size.
    ui.page.reload()
    expect(rows(ui)).to_have_count(4)
    expect(rows(ui).first).to_have_attribute("data-chat-id", seed.emotion_chat)


def test_empty_account_has_an_empty_state(ui, seed):
    ui.sign_in(seed.empty.api_key)
    expect(ui.page.locator("#empty-state")).to_contain_text("No chats yet")
    expect(ui.page.locator("#empty-state")).to_contain_text(ui.base)
    ui.shot("chats-empty")


# ---- one chat -----------------------------------------------------------------------------------


def test_chat_page_transcript_raw_events_and_audio(signed_in, seed):
    ui = signed_in
    ui.page.locator(f'a[href="/ui/chats/{seed.weather_chat}"]').first.click()
    ui.page.wait_for_url(f"**/ui/chats/{seed.weather_chat}")
    facts = ui.page.locator("#chat-facts")
    expect(facts).to_contain_text("USER_ENDED")
    expect(ui.page.locator("#chat-id")).to_have_text(seed.weather_chat)
    expect(ui.page.locator("#group-link")).to_have_attribute("href", f"/ui/groups/{seed.weather_group}")
    expect(facts).to_contain_text("(2 chats)")
    expect(facts.locator("time")).to_have_count(2)  # start and end

    t = ui.page.locator("#transcript")
    expect(t.locator(".turn-user .bubble").first).to_have_text("What's the weather like in Lisbon?")
    expect(t.locator(".turn-assistant .bubble")).to_have_text("Sunny and 24 degrees in Lisbon, with a light breeze.")
    expect(t.locator(".turn-tool").first).to_contain_text("Tool result · get_weather")
    expect(t.locator(".turn-tool.is-error")).to_contain_text("forecast service unavailable")
    expect(t.locator(".turn-note.is-pause").first).to_contain_text("Assistant paused")
    expect(t.locator(".turn-note.is-pause").nth(1)).to_contain_text("Assistant resumed")
    expect(t).to_contain_text("The user's microphone audio starts")
    expect(t.locator(".turn-note").last).to_contain_text("Chat ended: USER_ENDED")
    expect(ui.page.locator("#no-emotions")).to_contain_text("No emotion scores recorded")

    # Raw events: loaded only when the panel is opened.
    assert ui.page.locator("#raw-events .event").count() == 0
    ui.page.locator("#raw-events summary").click()
    events = ui.page.locator("#raw-events .event")
    expect(events.first).to_be_visible()
    user_event = events.filter(has_text='"message_text": "What\'s the weather like in Lisbon?"')
    expect(user_event).to_have_count(1)
    expect(user_event).to_contain_text('"type": "USER_MESSAGE"')
    expect(user_event).to_contain_text(f'"chat_id": "{seed.weather_chat}"')
    tool = events.filter(has_text="metadata, parsed").filter(has_text="get_weather")
    expect(tool.first).to_contain_text('"tool_call_id": "call_1"')

    # Audio: the reconstruction starts on the first visit; the panel polls until it is ready.
    player = ui.page.locator("audio#player")
    expect(player).to_be_attached(timeout=60_000)
    src = player.get_attribute("src")
    assert src.startswith("/v0/evi/audio/") and "signature=" in src, src
    ui.page.wait_for_function("document.querySelector('#player').readyState >= 1", timeout=30_000)
    duration = ui.page.evaluate("document.querySelector('#player').duration")
    assert 2.5 < duration < 6, f"{duration} s (a {3.0} s tone was sent)"
    # Seeking needs byte ranges from the download route.
    part = httpx.get(ui.base + src, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100, part.status_code
    assert part.headers["content-type"] == "audio/mp4"
    seeked = ui.page.evaluate(
        """() => new Promise((resolve, reject) => {
            const a = document.querySelector('#player');
            a.addEventListener('seeked', () => resolve(a.currentTime), {once: true});
            a.addEventListener('error', () => reject(String(a.error && a.error.code)), {once: true});
            a.currentTime = 2.0;
        })"""
    )
    assert abs(seeked - 2.0) < 0.1, seeked
    played = ui.page.evaluate(
        """() => new Promise((resolve) => {
            const a = document.querySelector('#player');
            a.addEventListener('timeupdate', () => resolve(a.currentTime), {once: true});
            a.play().catch((e) => resolve('play failed: ' + e));
        })"""
    )
    assert isinstance(played, (int, float)) and played >= 2.0, played
    ui.page.evaluate("document.querySelector('#player').pause()")
    ui.shot("chat")


def test_emotion_chart_and_long_transcript(signed_in, seed):
    ui = signed_in
    ui.goto(f"/ui/chats/{seed.emotion_chat}")
    top = ui.page.locator("#top-emotions .name")
    expect(top).to_have_text(LEADERS)
    scores = [float(s) for s in ui.page.locator("#top-emotions .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True) and 0.5 < scores[0] < 0.6, scores
    chart = ui.page.locator("svg#emotion-chart")
    expect(chart).to_be_visible()
    lines = chart.locator("g[data-emotion]")
    assert [g.get_attribute("data-emotion") for g in lines.all()] == LEADERS + RUNNERS_UP
    for g in lines.all():
        points = g.locator("polyline").get_attribute("points").split()
        assert len(points) == EMOTION_MESSAGES, (g.get_attribute("data-emotion"), len(points))
        xs = [float(p.split(",")[0]) for p in points]
        assert xs == sorted(xs), "points go forward in time"
        expect(g.locator("circle")).to_have_count(EMOTION_MESSAGES)
    expect(ui.page.locator(".legend")).to_contain_text("Joy")
    # The strongest emotions of a message are shown with it.
    expect(ui.page.locator("#transcript .turn-user .emotions").first).to_contain_text("Joy")
    # Seeded without audio: the empty state, not an endless spinner.
    expect(ui.page.locator("#no-audio")).to_contain_text("No audio was recorded", timeout=30_000)
    ui.page.locator("#emotions").screenshot(path=str(ui_path("chat-emotions")))

    # Long chats are paged: tool call, tool result and interruption are on page 1.
    t = ui.page.locator("#transcript")
    expect(t.locator(".turn-tool").first).to_contain_text("Tool call · tide_times")
    expect(t.locator(".turn-tool").first).to_contain_text('"port": "Porto"')
    expect(t.locator(".turn-tool").nth(1)).to_contain_text("High tide at 14:05")
    expect(t.locator(".turn-note.is-interruption")).to_contain_text("The user interrupted the assistant")
    expect(t.locator(".pager .pages")).to_have_text("Page 1 of 2")
    expect(t).not_to_contain_text(seed.emotion_last_text)
    t.get_by_role("link", name="Next →").click()
    expect(t.locator(".pager .pages")).to_have_text("Page 2 of 2")
    expect(t).to_contain_text(seed.emotion_last_text)
    expect(t.locator(".turn-note").last).to_contain_text("Chat ended: INACTIVITY_TIMEOUT (inactivity timeout)")
    ui.page.wait_for_url(re.compile(r"page=2"))
    ui.shot("chat-emotions-page-2")
    # The pushed URL is a real page.
    ui.page.reload()
    expect(t.locator(".pager .pages")).to_have_text("Page 2 of 2")
    # Offsets from the chat's start.
    expect(t.locator(".turn .meta").last).to_contain_text("02:47")


def ui_path(name: str):
    from conftest import SCREENSHOTS

    return SCREENSHOTS / f"{name}.png"


def test_group_page_lists_chats_and_combined_transcript(signed_in, seed):
    ui = signed_in
    ui.goto(f"/ui/chats/{seed.resumed_chat}")
    ui.page.locator("#group-link").click()
    ui.page.wait_for_url(f"**/ui/groups/{seed.weather_group}")
    expect(ui.page.locator("#group-id")).to_have_text(seed.weather_group)
    table = ui.page.locator("#group-chats tbody tr")
    assert [r.get_attribute("data-chat-id") for r in table.all()] == [seed.weather_chat, seed.resumed_chat]
    t = ui.page.locator("#transcript")
    separators = t.locator(".separator")
    expect(separators).to_have_count(2)
    expect(separators.nth(0)).to_contain_text("Chat 1")
    expect(separators.nth(1)).to_contain_text("Chat 2")
    expect(t).to_contain_text("What's the weather like in Lisbon?")
    expect(t).to_contain_text("Remind me to pack an umbrella tomorrow.")
    text = t.inner_text()
    assert text.index("Lisbon") < text.index("umbrella"), "in time order"
    ui.shot("group")


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/ui/chats/{random}",
        "/ui/chats/{other_chat}",
        "/ui/chats/{other_chat}/events",
        "/ui/groups/{other_group}",
        "/ui/groups/{random}",
        "/ui/chats/not-a-chat-id",
        "/ui/no-such-page",
    ],
)
def test_unknown_and_foreign_ids_are_404_pages(signed_in, seed, path):
    ui = signed_in
    url = path.format(random=uuid.uuid4(), other_chat=seed.other_chat, other_group=seed.other_group)
    r = ui.goto(url)
    assert r.status == 404, (url, r.status)
    assert r.headers["content-type"].startswith("text/html")
    expect(ui.page.locator("#error-page h1")).to_have_text("Not found")
    expect(ui.page.locator("#error-page")).not_to_contain_text("secret")
    expect(ui.page.get_by_role("link", name="Go to your chats")).to_be_visible()
    if path == "/ui/chats/{other_chat}":
        expect(ui.page.locator("#error-page")).to_contain_text(seed.other_chat)
        ui.shot("not-found")
    ui.console_errors.clear()


def test_csrf_sign_out_and_expired_sessions(signed_in, seed, browser, server):
    ui = signed_in
    # A POST without the form's token (or with another session's) is refused.
    r = ui.page.request.post(ui.base + "/ui/sign-out", form={})
    assert r.status == 403 and "security token" in r.text(), (r.status, r.text()[:300])
    r = ui.page.request.post(ui.base + "/ui/sign-out", form={"csrf": "0" * 64})
    assert r.status == 403
    r = ui.page.request.post(ui.base + "/ui/sign-in", form={"api_key": seed.main.api_key})
    assert r.status == 403 and "sign-in form had expired" in r.text()
    ui.goto("/ui/chats")
    expect(rows(ui)).to_have_count(seed.main_chat_count)  # still signed in
    old_cookie = [c for c in ui.context.cookies() if c["name"] == "colloquy_session"][0]

    # Signing out with the button works and ends the session.
    ui.page.get_by_role("button", name="Sign out").click()
    ui.page.wait_for_url("**/ui/sign-in?m=signed_out")
    expect(ui.page.get_by_role("status")).to_have_text("You have signed out.")
    ui.shot("signed-out")
    ui.goto(f"/ui/chats/{seed.weather_chat}")
    assert "/ui/sign-in" in ui.page.url

    # The old token is dead everywhere: a browser still holding it is sent to sign in with
    # a message, and htmx fragments answer with HX-Redirect.
    other = UI(browser, server)
    try:
        other.context.add_cookies([old_cookie])
        other.goto(f"/ui/chats/{seed.weather_chat}")
        assert "/ui/sign-in" in other.page.url and "m=expired" in other.page.url
        expect(other.page.get_by_role("status")).to_contain_text("Your session has ended")
        other.page.get_by_label("API key").fill(seed.main.api_key)
        other.page.get_by_role("button", name="Sign in").click()
        other.page.wait_for_url(f"**/ui/chats/{seed.weather_chat}")
    finally:
        other.close()
    r = httpx.get(
        f"{ui.base}/ui/chats/{seed.weather_chat}/audio",
        headers={"HX-Request": "true", "Cookie": f"colloquy_session={old_cookie['value']}"},
    )
    assert r.status_code == 401 and r.headers["hx-redirect"].startswith("/ui/sign-in?"), (r.status_code, r.headers)
    assert "m=expired" in r.headers["hx-redirect"]


# ---- assets, keyboard, small screens -----------------------------------------------------------


def test_assets_are_served_by_the_binary_with_cache_headers(signed_in):
    ui = signed_in
    srcs = ui.page.evaluate(
        "[...document.querySelectorAll('script[src], link[href]')].map(e => e.src || e.href)"
    )
    assert srcs and all(s.startswith(ui.base + "/ui/assets/") for s in srcs), srcs
    for s in srcs:
        r = httpx.get(s)
        assert r.status_code == 200, s
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable", (s, r.headers)
        again = httpx.get(s, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
    htmx = httpx.get(next(s for s in srcs if "htmx" in s)).text
    assert htmx.startswith("/*! htmx 2.") and "0BSD" in htmx[:300]
    page = httpx.get(ui.base + "/ui/sign-in")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


def test_keyboard_navigation(signed_in, seed):
    ui = signed_in
    ui.page.keyboard.press("Tab")
    focused = ui.page.evaluate("document.activeElement.textContent.trim()")
    assert focused == "Skip to content", focused
    outline = ui.page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "focused elements are outlined"
    # Every form control has a label.
    unlabeled = ui.page.evaluate(
        """[...document.querySelectorAll('input:not([type=hidden]), select')]
             .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name)"""
    )
    assert unlabeled == [], unlabeled
    # Reach the search box by keyboard, type, press Enter.
    for _ in range(15):
        ui.page.keyboard.press("Tab")
        if ui.page.evaluate("document.activeElement.id") == "q":
            break
    assert ui.page.evaluate("document.activeElement.id") == "q"
    ui.page.keyboard.type("umbrella")
    ui.page.keyboard.press("Enter")
    expect_ids(ui, [seed.resumed_chat])
    # Then Tab on to the chat link and open it with Enter.
    for _ in range(20):
        ui.page.keyboard.press("Tab")
        href = ui.page.evaluate("document.activeElement.getAttribute('href') || ''")
        if href == f"/ui/chats/{seed.resumed_chat}":
            break
    ui.page.keyboard.press("Enter")
    ui.page.wait_for_url(f"**/ui/chats/{seed.resumed_chat}")
    # Paging by keyboard: focus moves to the new results, not back to the top of the page.
    ui.goto("/ui/chats?size=4")
    ui.page.get_by_role("link", name="Next →").focus()
    ui.page.keyboard.press("Enter")
    expect(ui.page.locator(".pager .pages")).to_have_text("Page 2 of 3")
    ui.page.wait_for_function("document.activeElement && document.activeElement.id === 'results'")
    ui.page.keyboard.press("Tab")
    assert ui.page.evaluate("document.activeElement.closest('#results') !== null")


@pytest.mark.parametrize("name, path", [("chats", "/ui/chats"), ("chat", "chat"), ("emotions", "emotions"), ("group", "group")])
def test_usable_at_375px(browser, server, seed, name, path):
    ui = UI(browser, server, viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True, device_scale_factor=2)
    try:
        ui.sign_in(seed.main.api_key)
        target = {
            "chat": f"/ui/chats/{seed.weather_chat}",
            "emotions": f"/ui/chats/{seed.emotion_chat}",
            "group": f"/ui/groups/{seed.weather_group}",
        }.get(path, path)
        ui.goto(target)
        overflow = ui.page.evaluate("document.documentElement.scrollWidth")
        wide = ui.page.evaluate(
            """[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 375.5)
                 .map(e => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`).slice(0, 10)"""
        )
        assert overflow <= 375, f"{target} is {overflow}px wide at a 375px viewport: {wide}"
        if path == "/ui/chats":
            # The table collapses into cards: headers hidden, each cell labelled.
            first_cell = rows(ui).first.locator("td").first
            assert ui.page.evaluate("getComputedStyle(document.querySelector('#results thead')).display") == "none"
            assert first_cell.evaluate("e => getComputedStyle(e, '::before').content") == '"Chat"'
            box = rows(ui).first.bounding_box()
            assert box["width"] <= 375
        ui.shot(f"mobile-{name}")
        assert not ui.console_errors, ui.console_errors
    finally:
        ui.close()


def test_pages_work_without_javascript(browser, server, seed):
    ui = UI(browser, server, java_script_enabled=False)
    try:
        ui.sign_in(seed.main.api_key)
        expect(rows(ui)).to_have_count(seed.main_chat_count)
        expect(rows(ui).first.locator("time")).to_contain_text("UTC")  # the server's fallback
        # Copy buttons need the script: without it none is shown, the whole id is in the title.
        expect(ui.page.locator("button.copy-id").first).to_be_hidden()
        expect(rows(ui).first.locator("td").first.locator("a")).to_have_attribute("title", seed.filler_chats[-1])
        ui.page.get_by_label("Status").select_option("INACTIVITY_TIMEOUT")
        ui.page.get_by_role("button", name="Apply").click()
        ui.page.wait_for_url("**status=INACTIVITY_TIMEOUT**")
        expect(rows(ui)).to_have_count(1)
        rows(ui).first.locator("td").first.locator("a").click()
        ui.page.wait_for_url(f"**/ui/chats/{seed.emotion_chat}")
        expect(ui.page.locator("#top-emotions .name").first).to_have_text(LEADERS[0])
        t = ui.page.locator("#transcript")
        t.get_by_role("link", name="Next →").click()
        ui.page.wait_for_url(re.compile(r"page=2"))
        expect(t).to_contain_text(seed.emotion_last_text)
        ui.page.locator("#raw-events summary").click()
        ui.page.get_by_role("link", name="Open the raw events as a page").click()
        ui.page.wait_for_url(f"**/ui/chats/{seed.emotion_chat}/events")
        expect(ui.page.locator(".event").first).to_contain_text('"type": "CHAT_START_MESSAGE"')
        ui.page.get_by_role("link", name="Next →").click()
        ui.page.wait_for_url(re.compile(r"/events\?page=2"))
        expect(ui.page.locator(".event").first).to_contain_text("#25")
        ui.page.get_by_role("button", name="Sign out").click()
        ui.page.wait_for_url("**/ui/sign-in?m=signed_out")
    finally:
        ui.close()


def test_active_chat_audio_panel_polls_until_the_chat_ends(browser, server):
    acct = server.create_account(name="ui-active")
    ui = UI(browser, server)
    try:
        ui.sign_in(acct.api_key)
        with acct.client().empathic_voice.chat.connect() as sock:
            meta = recv(sock)
            sock.send_publish(UserInput(text="Still talking"))
            echo = recv(sock)
            assert echo.type == "user_message", echo
            ui.goto(f"/ui/chats/{meta.chat_id}")
            expect(ui.page.locator(".page-head .badge")).to_have_text("ACTIVE")
            expect(ui.page.locator("#chat-facts")).to_contain_text("not yet (the chat is active)")
            expect(ui.page.locator("#chat-facts")).to_contain_text("ongoing")
            audio = ui.page.locator("#audio")
            expect(audio).to_have_attribute("data-status", "QUEUED")
            expect(audio).to_have_attribute("hx-trigger", re.compile(r"^every \d+s$"))
            expect(audio).to_contain_text("still going on")
            expect(audio.locator("progress")).to_be_visible()
            ui.shot("chat-active")
        # The client hung up: the panel's polling picks up the finished reconstruction (this
        # chat was text only) without a reload.
        expect(ui.page.locator("#no-audio")).to_contain_text("No audio was recorded", timeout=30_000)
        expect(ui.page.locator("#audio")).not_to_have_attribute("hx-trigger", re.compile(".*"))
        assert ui.page.locator(".page-head .badge").inner_text() == "ACTIVE", "only the panel was swapped"
    finally:
        ui.close()
    assert not ui.console_errors, ui.console_errors


def test_relayed_chat_shows_the_upstreams_prosody(ui, seed):
    """Scores recorded by the relay engine from a (fake) hosted EVI upstream: the user's
    prosody drives the chart, the assistant's prosody is shown with its replies."""
    ui.sign_in(seed.relay.api_key)
    assert row_ids(ui) == [seed.relay_chat]
    ui.page.locator(f'a[href="/ui/chats/{seed.relay_chat}"]').click()
    ui.page.wait_for_url(f"**/ui/chats/{seed.relay_chat}")
    expect(ui.page.locator("#top-emotions .name")).to_have_text(RELAY_LEADERS)
    lines = ui.page.locator("svg#emotion-chart g[data-emotion]")
    expect(lines).to_have_count(5)
    for g in lines.all():
        assert len(g.locator("polyline").get_attribute("points").split()) == len(RELAY_LINES)
    t = ui.page.locator("#transcript")
    expect(t.locator(".turn-user .bubble").first).to_have_text(RELAY_LINES[0])
    expect(t.locator(".turn-user .emotions").first).to_contain_text("Determination 0.70")
    expect(t.locator(".turn-assistant .emotions").first).to_contain_text("Calmness 0.60")
    call = t.locator(".turn-tool").first
    expect(call).to_contain_text("Tool call · get_weather")
    expect(call.locator(".bubble")).to_contain_text('"city": "Boston"')
    expect(t.locator(".turn-assistant .bubble").filter(has_text="The forecast says light rain.")).to_have_count(1)
    ui.shot("chat-relayed")


# ---- configs ------------------------------------------------------------------------------------


@pytest.fixture
def configs_ui(ui, configs_seed):
    ui.sign_in(configs_seed.account.api_key)
    return ui


def test_configs_page_lists_the_accounts_configs(configs_ui, configs_seed):
    ui, s = configs_ui, configs_seed
    ui.page.get_by_role("navigation", name="Main").get_by_role("link", name="Configs").click()
    ui.page.wait_for_url("**/ui/configs")
    expect(ui.page.get_by_role("link", name="Configs")).to_have_attribute("aria-current", "page")
    table = ui.page.locator("#configs-table tbody tr")
    expect(table).to_have_count(3)
    assert [r.get_attribute("data-config-id") for r in table.all()] == [s.harbour_id, s.second_id, s.doomed_id]
    harbour = ui.page.locator(f'tr[data-config-id="{s.harbour_id}"] td')
    expect(harbour.nth(0)).to_have_text("Harbour guide")
    expect(harbour.nth(1).locator("a")).to_have_text("\u2026" + s.harbour_id[-8:])
    expect(harbour.nth(1).locator("a")).to_have_attribute("title", s.harbour_id)
    expect(harbour.nth(2)).to_have_text("2")
    expect(harbour.nth(3)).to_have_text("version 1")
    expect(harbour.nth(4).locator("time")).to_have_attribute("data-localized", "1")
    doomed = ui.page.locator(f'tr[data-config-id="{s.doomed_id}"] td')
    expect(doomed.nth(2)).to_have_text("1")  # version 0 was deleted
    expect(ui.page.locator("#config-count")).to_have_text("Showing 1–3 of 3 configs")
    ui.shot("configs")


def test_config_page_shows_the_chosen_version(configs_ui, configs_seed):
    ui, s = configs_ui, configs_seed
    ui.goto("/ui/configs")
    ui.page.get_by_role("link", name="Harbour guide").click()
    ui.page.wait_for_url(f"**/ui/configs/{s.harbour_id}")
    expect(ui.page.locator("#config-name")).to_have_text("Harbour guide")
    expect(ui.page.locator("#config-id")).to_have_text(s.harbour_id)
    versions = ui.page.locator("#config-versions tbody tr")
    expect(versions).to_have_count(2)
    expect(versions.nth(0)).to_contain_text("second draft")
    expect(versions.nth(1)).to_contain_text("first draft")
    expect(versions.nth(0)).to_have_attribute("aria-current", "true")  # the newest by default
    expect(versions.nth(0).locator("time")).to_have_count(2)  # created and modified

    # The newest version: its prompt, tools, voice, timeouts and the rest.
    card = ui.page.locator("#config-version")
    expect(card).to_have_attribute("data-version", "1")
    expect(ui.page.locator("#prompt-text")).to_have_text(HARBOUR_PROMPT_V1)
    setting = lambda key: ui.page.locator(f'#config-settings dd[data-setting="{key}"]')  # noqa: E731
    expect(setting("inactivity_timeout")).to_have_text("on, after 600 s")
    expect(setting("max_duration_timeout")).to_have_text("on, after 900 s")
    expect(setting("voice")).to_contain_text("Ava Song (HUME_AI")
    expect(setting("language_model")).to_have_text("ANTHROPIC, claude-3-7-sonnet-latest, temperature 0.5")
    expect(setting("on_new_chat")).to_have_text("on: \u201cAhoy! Welcome aboard.\u201d")
    expect(setting("on_inactivity_timeout")).to_have_text("off")
    expect(setting("nudges")).to_have_text("on, every 20 s")
    expect(setting("evi_version")).to_have_text("3")
    tool = ui.page.locator('#config-tools tr[data-tool="get_tide_times"]')
    expect(tool).to_contain_text("High and low tide times for a port")
    expect(tool.locator("pre")).to_contain_text('"port"')
    expect(tool.locator("pre")).to_contain_text('"required"')
    expect(ui.page.locator("#config-builtin-tools")).to_contain_text("hang_up")
    expect(ui.page.locator("#config-webhooks")).to_contain_text("https://hooks.example.com/evi")
    expect(ui.page.locator("#config-webhooks")).to_contain_text("chat_ended")
    ui.shot("config")

    # Version 0, chosen from the version table.
    versions.nth(1).get_by_role("link", name="0").click()
    ui.page.wait_for_url(f"**/ui/configs/{s.harbour_id}?version=0")
    expect(card).to_have_attribute("data-version", "0")
    expect(ui.page.locator("#prompt-text")).to_have_text(HARBOUR_PROMPT_V0)
    expect(setting("inactivity_timeout")).to_have_text("on, after 300 s")
    expect(ui.page.locator("#version-description")).to_have_text("first draft")
    expect(versions.nth(1)).to_have_attribute("aria-current", "true")

    # A version that does not exist: a 404 that still lists the versions.
    r = ui.goto(f"/ui/configs/{s.harbour_id}?version=7")
    assert r.status == 404
    expect(ui.page.locator("#missing-version")).to_contain_text("no version 7")
    expect(versions).to_have_count(2)
    # Another account's config is not found.
    r = ui.goto(f"/ui/configs/{uuid.uuid4()}")
    assert r.status == 404
    ui.console_errors.clear()


def test_chat_links_to_the_config_version_it_used(configs_ui, configs_seed, browser, server, seed):
    ui, s = configs_ui, configs_seed
    ui.goto(f"/ui/chats/{s.chat_v0}")
    link = ui.page.locator("#config-link")
    expect(link).to_have_text("config Harbour guide, version 0")
    expect(link).to_have_attribute("href", f"/ui/configs/{s.harbour_id}?version=0")
    expect(ui.page.locator("#chat-config .id")).to_have_attribute("title", s.harbour_id)
    ui.shot("chat-with-config")
    link.click()
    ui.page.wait_for_url(f"**/ui/configs/{s.harbour_id}?version=0")
    expect(ui.page.locator("#prompt-text")).to_have_text(HARBOUR_PROMPT_V0)

    ui.goto(f"/ui/chats/{s.chat_v1}")
    expect(ui.page.locator("#config-link")).to_have_text("config Harbour guide, version 1")

    # A deleted version: said plainly, the link goes to the config (no broken link).
    r = ui.goto(f"/ui/chats/{s.doomed_chat}")
    assert r.status == 200
    expect(ui.page.locator("#config-link")).to_have_text("config Doomed config, version 0")
    expect(ui.page.locator("#config-link")).to_have_attribute("href", f"/ui/configs/{s.doomed_id}")
    expect(ui.page.locator("#config-note")).to_have_text("(this version was deleted)")

    # A config that no longer exists (the seeded emotion chat's): no link, the id shown.
    other = UI(browser, server)
    try:
        other.sign_in(seed.main.api_key)
        r = other.goto(f"/ui/chats/{seed.emotion_chat}")
        assert r.status == 200
        facts = other.page.locator("#chat-config")
        expect(facts).to_contain_text("deleted config, version 3")
        expect(facts.locator("a")).to_have_count(0)
        expect(facts.locator(".id")).to_have_attribute("title", seed.emotion_config)
        expect(other.page.locator("#config-note")).to_contain_text("no longer exists")
        assert not other.console_errors, other.console_errors
    finally:
        other.close()


def test_ids_of_the_same_millisecond_read_differently(configs_ui, configs_seed):
    ui, s = configs_ui, configs_seed
    a, b = s.twin_chats
    ga, gb = s.twin_groups
    assert a[:13] == b[:13] and ga[:13] == gb[:13], "the same millisecond: the old 8-character form was equal"
    ui.goto("/ui/chats?order=oldest")
    shown = {}
    for chat, group in zip(s.twin_chats, s.twin_groups):
        row = ui.page.locator(f'tr[data-chat-id="{chat}"]')
        chat_link = row.locator("td").nth(0).locator("a")
        group_link = row.locator("td").nth(5).locator("a")
        expect(chat_link).to_have_attribute("title", chat)
        expect(group_link).to_have_attribute("title", group)
        shown[chat] = (chat_link.inner_text(), group_link.inner_text())
        assert shown[chat][0].lstrip("\u2026") in chat and shown[chat][1].lstrip("\u2026") in group
    assert shown[a][0] != shown[b][0], shown
    assert shown[a][1] != shown[b][1], shown
    ui.shot("chats-same-minute")
    # The chat and group pages' headings too.
    ui.goto(f"/ui/chats/{a}")
    expect(ui.page.locator("h1 .id")).to_have_attribute("title", a)
    expect(ui.page.locator("h1 .id .mono")).to_have_text("\u2026" + a[-8:])
    ui.goto(f"/ui/groups/{gb}")
    expect(ui.page.locator("h1 .id")).to_have_attribute("title", gb)
    expect(ui.page.locator("h1 .id .mono")).to_have_text("\u2026" + gb[-8:])


def test_copy_button_copies_the_whole_id(browser, server, configs_seed):
    ui = UI(browser, server)
    try:
        ui.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=ui.base)
        ui.sign_in(configs_seed.account.api_key)
        chat = configs_seed.chat_v0
        ui.goto(f"/ui/chats/{chat}")
        button = ui.page.locator("h1 .id button.copy-id")
        expect(button).to_be_visible()
        expect(button).to_have_attribute("aria-label", f"Copy id {chat}")
        button.click()
        expect(button).to_have_text("Copied")
        assert ui.page.evaluate("navigator.clipboard.readText()") == chat
        # The fallback when the Clipboard API is unavailable: a selected textarea and
        # execCommand("copy").
        ui.goto(f"/ui/configs/{configs_seed.harbour_id}")
        ui.page.evaluate("Object.defineProperty(navigator, 'clipboard', {value: undefined, configurable: true})")
        ui.page.evaluate(
            """window.__copied = null;
               document.addEventListener('copy', () => { window.__copied = String(window.getSelection()
                 || document.activeElement.value.substring(document.activeElement.selectionStart,
                                                           document.activeElement.selectionEnd)); });"""
        )
        fallback = ui.page.locator("h1 .id button.copy-id")
        fallback.click()
        expect(fallback).to_have_text("Copied")
        assert ui.page.evaluate("window.__copied") == configs_seed.harbour_id
        assert not ui.console_errors, ui.console_errors
    finally:
        ui.close()


@pytest.mark.parametrize("name", ["configs", "config"])
def test_config_pages_are_usable_at_375px(browser, server, configs_seed, name):
    ui = UI(browser, server, viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True, device_scale_factor=2)
    try:
        ui.sign_in(configs_seed.account.api_key)
        target = "/ui/configs" if name == "configs" else f"/ui/configs/{configs_seed.harbour_id}"
        ui.goto(target)
        overflow = ui.page.evaluate("document.documentElement.scrollWidth")
        wide = ui.page.evaluate(
            """[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 375.5)
                 .map(e => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`).slice(0, 10)"""
        )
        assert overflow <= 375, f"{target} is {overflow}px wide at a 375px viewport: {wide}"
        ui.shot(f"mobile-{name}")
        assert not ui.console_errors, ui.console_errors
    finally:
        ui.close()


def test_speak_page_plays_the_chosen_voice(signed_in):
    """The Speak page: type text, pick a library voice and a format, and the player plays the
    server's synthesis of it (decoded by the browser: it has a duration)."""
    ui = signed_in
    ui.goto("/ui/speak")
    ui.page.get_by_label("Text").fill("Hello from the speak page, in a chosen voice.")
    ui.page.select_option("#speak-voice", value="HUME_AI:Ava Song")
    ui.page.select_option("#speak-format", value="wav")
    ui.page.get_by_role("button", name="Speak").click()
    player = ui.page.locator("#speak-player")
    expect(player).to_be_visible()
    src = player.get_attribute("src") or ""
    assert "Ava" in src or "voice=" in src, src
    ui.page.wait_for_function(
        "() => { const a = document.getElementById('speak-player'); return a && a.readyState >= 1 && a.duration > 1; }",
        timeout=15000,
    )
    duration = player.evaluate("a => a.duration")
    assert 1.0 < duration < 20.0, duration
    expect(ui.page.get_by_role("link", name="Download the audio")).to_have_attribute("href", src)
    # The chosen voice and format stay selected after the page reloads with the audio.
    assert ui.page.locator("#speak-voice").input_value() == "HUME_AI:Ava Song"
    assert ui.page.locator("#speak-format").input_value() == "wav"
