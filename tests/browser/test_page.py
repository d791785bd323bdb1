"""A person at the chat page: signing up, chatting with answers streaming in,
stopping one, and nothing a model writes ever running as a script."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot
from tests.contract.live import PASSWORD, Account, LiveServer
from tests.images import png

pytestmark = pytest.mark.postgres
TIMEOUT_MS = 20_000


def enter(page: Any, server: LiveServer, account: Account) -> None:
    """Opens the page and signs in as ``account`` with its form."""
    page.goto(server.base_url + "/")
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def sign_in(page: Any, server: LiveServer, username: str) -> None:
    """A new account, signed in on the page, its message box ready."""
    enter(page, server, server.sign_up(username))
    page.get_by_label("Message").wait_for(timeout=TIMEOUT_MS)


@contextmanager
def api_as(server: LiveServer, account: Account) -> Iterator[httpx.Client]:
    """The API as ``account``, to set up what a test then looks at in the page."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        login = client.post(
            "/auth/login", json={"email": account.email, "password": account.password}
        )
        assert login.status_code == 200, login.text
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        yield client


def ask(page: Any, question: str) -> Any:
    """Sends ``question`` with Enter; the answer's element, once it is complete."""
    answers = page.locator(".message.assistant")
    before = answers.count()
    page.get_by_label("Message").fill(question)
    page.get_by_label("Message").press("Enter")
    answer = answers.nth(before)
    answer.and_(page.locator("[data-status=complete]")).wait_for(timeout=TIMEOUT_MS)
    return answer


def test_a_newcomer_signs_up_and_chats(page: Any, live_server: LiveServer) -> None:
    page.goto(live_server.base_url + "/")
    page.get_by_role("tab", name="Create account").click()
    page.get_by_label("Email").fill("newcomer@example.com")
    page.get_by_role("button", name="Send me a code").click()
    code = live_server.smtp.wait_for_code("newcomer@example.com", timeout=TIMEOUT_MS / 1000)
    page.get_by_label("Code").fill(code)
    page.get_by_label("Username").fill("newcomer")
    page.get_by_label("Password (8 characters or more)").fill(PASSWORD)
    page.get_by_role("button", name="Create account", exact=True).click()

    answer = ask(page, "Hello, **bold** world")
    # The question as typed; the answer's markdown as HTML.
    question = page.locator(".message.user .plain").last
    assert question.inner_text() == "Hello, **bold** world"
    assert answer.locator("strong").inner_text() == "bold"
    assert "offline echo model" in answer.inner_text()
    # The new chat is listed under the title its first message gave it.
    expect(page.locator(".chats li").first).to_contain_text("Hello", timeout=TIMEOUT_MS)

    page.reload()  # still signed in: the refresh token was kept
    page.get_by_role("button", name=re.compile("Hello")).click()
    page.locator(".message.assistant strong").wait_for(timeout=TIMEOUT_MS)
    assert page.locator(".message").count() == 2

    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("You are signed out.").wait_for(timeout=TIMEOUT_MS)
    page.reload()
    page.get_by_role("button", name="Sign in", exact=True).wait_for(timeout=TIMEOUT_MS)


def test_an_answer_can_be_stopped(page: Any, live_server: LiveServer) -> None:
    sign_in(page, live_server, "stopper")
    # The offline model repeats the question, a piece of 3 words every 20 ms:
    # 900 words take 6 seconds.
    page.get_by_label("Message").fill(" ".join(["word"] * 900))
    page.get_by_label("Message").press("Enter")
    answer = page.locator(".message.assistant").last
    answer.locator(".markdown").wait_for(timeout=TIMEOUT_MS)  # the first delta is in
    page.get_by_role("button", name="Stop").click()
    answer.and_(page.locator("[data-status=stopped]")).wait_for(timeout=TIMEOUT_MS)
    assert answer.locator(".status").inner_text() == "Stopped."
    expect(page.get_by_role("button", name="Stop")).to_be_hidden(timeout=TIMEOUT_MS)
    # What was written before the stop stays, and a new question can follow.
    assert answer.inner_text().count("word") < 900
    ask(page, "And now?")


HOSTILE = (
    "Look: <img src=x onerror=alert(1)> <img src=x onerror=\"window.__pwned='img'\"> "
    "<script>window.__pwned='script'</script> "
    "[a link](javascript:window.__pwned='link') "
    "<a href=\"javascript:window.__pwned='anchor'\">another</a> "
    "<svg onload=\"window.__pwned='svg'\"></svg> "
    "<iframe src=\"javascript:window.__pwned='frame'\"></iframe>"
)


def test_a_hostile_answer_runs_nothing(page: Any, live_server: LiveServer) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, live_server, "target")
    answer = ask(page, HOSTILE)  # the offline model says it all back
    markdown = answer.locator(".markdown")
    for link in markdown.locator("a").all():
        assert not (link.get_attribute("href") or "").lower().startswith("javascript:")
        link.click()  # a stripped link goes nowhere
    assert markdown.locator("script, iframe, svg, [onerror], [onload]").count() == 0
    for image in markdown.locator("img").all():
        assert image.get_attribute("src") is None
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []
    # And the question, shown as the text it is.
    assert page.locator(".message.user .plain").last.inner_text() == HOSTILE


def test_the_page_forbids_any_script_but_its_own(page: Any, live_server: LiveServer) -> None:
    served = httpx.get(live_server.base_url + "/", timeout=30)
    policy = served.headers["content-security-policy"]
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ]:
        assert directive in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert "/app/app.js?v=" in served.text

    sign_in(page, live_server, "inspector")
    blocked = page.evaluate(
        """() => new Promise((resolve) => {
            document.addEventListener("securitypolicyviolation",
                (event) => resolve(event.violatedDirective), { once: true });
            const script = document.createElement("script");
            script.textContent = "window.__inline = 1";
            document.body.append(script);
            setTimeout(() => resolve(null), 2000);
        })"""
    )
    assert blocked is not None
    assert blocked.startswith("script-src")
    assert page.evaluate("window.__inline") is None
    # Even markup that got past the sanitiser could not run its handlers.
    handled = page.evaluate(
        """() => new Promise((resolve) => {
            document.body.insertAdjacentHTML("beforeend",
                '<img id="bait" src="/nothing-here" onerror="window.__handler = 1">');
            // Listeners run after the attribute's handler would have.
            document.getElementById("bait").addEventListener(
                "error", () => resolve(window.__handler ?? null));
        })"""
    )
    assert handled is None


def versions(message: Any) -> str:
    return str(message.locator(".version").inner_text())


def test_edit_regenerate_and_switch_branches(page: Any, live_server: LiveServer) -> None:
    sign_in(page, live_server, "brancher")
    ask(page, "first question")
    ask(page, "a follow-up")

    # Regenerate the last answer: a second version beside the first.
    page.locator(".message.assistant").last.get_by_role("button", name="Regenerate").click()
    answer = page.locator(".message.assistant").last
    expect(answer.locator(".version")).to_have_text("2/2", timeout=TIMEOUT_MS)
    answer.get_by_role("button", name="Previous version").click()
    expect(page.locator(".message.assistant").last.locator(".version")).to_have_text(
        "1/2", timeout=TIMEOUT_MS
    )

    # Edit the first question: a new branch from there, without the follow-up.
    first = page.locator(".message.user").first
    first.get_by_role("button", name="Edit").click()
    page.get_by_label("Edited message").fill("an edited question")
    page.get_by_label("Edited message").press("Enter")
    expect(page.locator(".message.user").first.locator(".version")).to_have_text(
        "2/2", timeout=TIMEOUT_MS
    )
    expect(page.locator(".message")).to_have_count(2)
    expect(page.locator(".message.assistant").last).to_contain_text("an edited question")
    assert "an edited question" in page.locator(".message.user").first.inner_text()

    # And back to the original branch, follow-up and all.
    page.locator(".message.user").first.get_by_role("button", name="Previous version").click()
    expect(page.locator(".message")).to_have_count(4, timeout=TIMEOUT_MS)
    assert "first question" in page.locator(".message.user").first.inner_text()
    screenshot(page, "conversation")


def test_an_image_is_attached_and_shown(page: Any, live_server: LiveServer) -> None:
    sign_in(page, live_server, "photographer")
    page.locator("#attach").set_input_files(
        files=[{"name": "dot.png", "mimeType": "image/png", "buffer": png(6, 4)}]
    )
    expect(page.locator(".tray li:not(.uploading) img")).to_have_count(1, timeout=TIMEOUT_MS)
    answer = ask(page, "What is in this picture?")
    assert "1 image" in answer.inner_text()  # the offline model counts what it was sent
    shown = page.locator(".message.user img").first
    expect(shown).to_have_attribute("src", re.compile(r"^/files/\d+/content\?"))
    # Loaded through its signed link, with no token: the browser decoded it.
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth === 6", arg=shown.element_handle()
    )
    assert page.locator(".tray li").count() == 0


def test_chats_are_searched_renamed_pinned_and_deleted(page: Any, live_server: LiveServer) -> None:
    sign_in(page, live_server, "organiser")
    ask(page, "Tell me about zeppelins")
    page.get_by_role("button", name="New chat").click()
    ask(page, "Something else entirely")

    page.get_by_label("Search your chats").fill("zeppelins")
    page.get_by_label("Search your chats").press("Enter")
    hit = page.locator(".chats .hit").first
    expect(hit.locator("mark").first).to_have_text(re.compile("zeppelin", re.I), timeout=TIMEOUT_MS)
    hit.click()
    expect(page.locator(".message.user").first).to_contain_text("zeppelins")
    page.get_by_label("Search your chats").fill("")
    page.get_by_label("Search your chats").press("Enter")

    page.get_by_role("button", name="Rename").click()
    page.get_by_label("Title").fill("Airships")
    page.get_by_label("Title").press("Enter")
    expect(page.locator("header h2")).to_have_text("Airships", timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Pin").click()
    expect(page.locator(".chats li").first).to_contain_text("Airships", timeout=TIMEOUT_MS)
    expect(page.get_by_role("button", name="Unpin")).to_be_visible()

    # Archived: out of the list, under Archived chats, and back.
    page.get_by_role("button", name="Archive", exact=True).click()
    airships = page.locator(".chats li", has_text="Airships")
    expect(airships).to_have_count(0, timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Archived chats").click()
    expect(airships).to_have_count(1, timeout=TIMEOUT_MS)
    airships.get_by_role("button").click()
    page.get_by_role("button", name="Unarchive").click()
    expect(airships).to_have_count(0, timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Archived chats").click()
    expect(airships).to_have_count(1, timeout=TIMEOUT_MS)
    expect(page.locator("header h2")).to_have_text("Airships")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.locator(".chats li", has_text="Airships")).to_have_count(0, timeout=TIMEOUT_MS)
    assert page.locator(".chats li").count() == 1


def test_a_reload_during_an_answer_resumes_it(page: Any, live_server: LiveServer) -> None:
    sign_in(page, live_server, "reloader")
    page.get_by_label("Message").fill(" ".join(["long"] * 600))  # 4 s of pieces
    page.get_by_label("Message").press("Enter")
    page.locator(".message.assistant .markdown").wait_for(timeout=TIMEOUT_MS)
    page.reload()
    page.locator(".chats li").first.get_by_role("button").click()
    answer = page.locator(".message.assistant").last
    answer.and_(page.locator("[data-status=complete]")).wait_for(timeout=TIMEOUT_MS)
    # Whole: the offline model said every word back, none lost or doubled.
    assert answer.inner_text().count("long") == 600


def test_an_admin_manages_users(page: Any, live_server: LiveServer, database_url: str) -> None:
    live_server.sign_up("someone")
    live_server.sign_up("leaver")
    account = live_server.sign_up("chief")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET is_admin = true WHERE email = %s", (account.email,))
    enter(page, live_server, account)
    page.get_by_role("button", name="Administration").click()

    figures = page.get_by_label("Statistics")
    expect(figures.locator(".figure", has_text="Users").locator("dd")).to_have_text("3")
    expect(page.locator(".users tbody tr")).to_have_count(3, timeout=TIMEOUT_MS)

    page.get_by_label("Search users").fill("someone")
    page.get_by_label("Search users").press("Enter")
    expect(page.locator(".users tbody tr")).to_have_count(1, timeout=TIMEOUT_MS)
    page.locator(".users tbody tr").get_by_role("button", name="Edit").click()
    editor = page.get_by_role("form", name="Edit someone@example.com")
    editor.get_by_label("Full name").fill("Some One")
    editor.get_by_label("Answers a day (empty: the default)").fill("5")
    editor.get_by_label("Active").uncheck()
    editor.get_by_role("button", name="Save").click()
    row = page.locator(".users tbody tr", has_text="someone@example.com")
    expect(row).to_contain_text("Some One", timeout=TIMEOUT_MS)
    expect(row).to_contain_text("deactivated")
    expect(row).to_contain_text("5 answers")
    screenshot(page, "admin")

    # Deactivated: the right password is refused.
    refused = httpx.post(
        live_server.base_url + "/auth/login",
        json={"email": "someone@example.com", "password": PASSWORD},
        timeout=30,
    )
    assert refused.status_code == 403

    page.get_by_label("Search users").fill("leaver")
    page.get_by_label("Search users").press("Enter")
    expect(page.locator(".users tbody tr")).to_have_count(1, timeout=TIMEOUT_MS)
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(".users tbody tr").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("No user matches.")).to_be_visible(timeout=TIMEOUT_MS)


def test_a_forgotten_password_is_reset_with_a_mailed_code(
    page: Any, live_server: LiveServer
) -> None:
    account = live_server.sign_up("forgetful")
    page.goto(live_server.base_url + "/")
    page.get_by_role("tab", name="Forgot password").click()
    page.get_by_label("Email").fill(account.email)
    page.get_by_role("button", name="Send me a code").click()
    # The page says where the code went (this test server runs in "test").
    expect(page.get_by_role("status")).to_contain_text(account.email, timeout=TIMEOUT_MS)
    code = live_server.smtp.wait_for_code(account.email, timeout=TIMEOUT_MS / 1000)
    page.get_by_label("Code").fill(code)
    page.get_by_label("New password (8 characters or more)").fill("a brand new passphrase")
    page.get_by_role("button", name="Set the new password").click()
    expect(page.get_by_text("Your password is changed")).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill("a brand new passphrase")
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_label("Message").wait_for(timeout=TIMEOUT_MS)


def test_the_keyboard_alone_signs_in_and_chats(page: Any, live_server: LiveServer) -> None:
    account = live_server.sign_up("typist")
    page.goto(live_server.base_url + "/")
    page.get_by_label("Email").wait_for(timeout=TIMEOUT_MS)
    # Focus starts in the form; Tab moves through it in order; Enter submits.
    page.keyboard.type(account.email)
    page.keyboard.press("Tab")
    page.keyboard.type(account.password)
    page.keyboard.press("Enter")
    message = page.get_by_label("Message")
    expect(message).to_be_focused(timeout=TIMEOUT_MS)
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")  # a new line, not a send
    page.keyboard.type("line two")
    assert message.input_value() == "line one\nline two"
    page.keyboard.press("Enter")
    question = page.locator(".message.user .plain").last
    expect(question).to_have_text("line one\nline two", timeout=TIMEOUT_MS)
    page.locator(".message.assistant[data-status=complete]").wait_for(timeout=TIMEOUT_MS)


def test_a_phone_screen_gets_one_column_and_loads_more_chats_on_scroll(
    browser: Any, live_server: LiveServer
) -> None:
    account = live_server.sign_up("phoner")
    with api_as(live_server, account) as client:
        for number in range(35):  # more than one page of 30
            made = client.post("/chats", json={"title": f"chat {number:02d}"})
            assert made.status_code == 201
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        enter(page, live_server, account)
        chats = page.locator(".chats li[data-chat]")
        expect(chats).to_have_count(30, timeout=TIMEOUT_MS)
        # Nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        chats.last.scroll_into_view_if_needed()  # the list's end: the next page comes
        expect(chats).to_have_count(35, timeout=TIMEOUT_MS)
        answer = ask(page, "Hello from a phone")
        assert answer.is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        context.close()


def test_errors_are_said_in_words_and_dark_mode_is_dark(
    browser: Any, live_server: LiveServer
) -> None:
    context = browser.new_context(color_scheme="dark")
    page = context.new_page()
    try:
        page.goto(live_server.base_url + "/")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        red, green, blue = (int(n) for n in re.findall(r"\d+", background)[:3])
        assert max(red, green, blue) < 64, background  # a dark page, light text
        page.get_by_label("Email").fill("nobody@example.com")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in", exact=True).click()
        # The problem's own detail, as the API wrote it.
        detail = httpx.post(
            live_server.base_url + "/auth/login",
            json={"email": "nobody@example.com", "password": "not the password"},
            timeout=30,
        ).json()["detail"]
        expect(page.get_by_role("alert")).to_have_text(detail, timeout=TIMEOUT_MS)
    finally:
        context.close()


def test_a_long_chat_shows_its_newest_messages_then_the_earlier_ones(
    page: Any, live_server: LiveServer
) -> None:
    account = live_server.sign_up("talker")
    with api_as(live_server, account) as client:
        chat = client.post("/chats", json={"title": "A long one"}).json()
        for number in range(55):  # 110 messages: more than the newest 100 a chat opens with
            sent = client.post(
                f"/chats/{chat['id']}/messages", json={"content": f"question {number}"}
            )
            assert sent.status_code == 201, sent.text
    enter(page, live_server, account)
    page.get_by_role("button", name="A long one").click()
    messages = page.locator(".messages > li.message")
    expect(messages).to_have_count(100, timeout=TIMEOUT_MS)
    expect(messages.first.locator(".plain")).to_have_text("question 5")
    page.get_by_role("button", name="Earlier messages").click()
    expect(messages).to_have_count(110, timeout=TIMEOUT_MS)
    expect(messages.first.locator(".plain")).to_have_text("question 0")
    expect(page.get_by_role("button", name="Earlier messages")).to_have_count(0)


def test_a_refused_question_is_said_and_kept(
    page: Any, live_server: LiveServer, database_url: str
) -> None:
    sign_in(page, live_server, "counted")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET daily_message_quota = 1 WHERE username = 'counted'")
    ask(page, "the one answer of today")
    page.get_by_label("Message").fill("one too many")
    page.get_by_label("Message").press("Enter")
    # The quota's problem, in its own words; the question waits in the box.
    expect(page.get_by_role("alert")).to_contain_text("quota", timeout=TIMEOUT_MS)
    expect(page.get_by_label("Message")).to_have_value("one too many")
    expect(page.locator(".message")).to_have_count(2)
