"""The dashboard in a real browser: Debian's Chromium driven headless by Playwright, against
real `taskmaster serve` processes (two instances sharing one SQLite file and Redis).

What it proves: two tabs of one user stay in step within a second (create, edit, move by
button and by drag and drop, delete; the counters too), another user sees none of it; a
tab taken offline catches up through its cursor and `sync` pages when it comes back, without
a reload; a change made through REST on the other instance appears within a second; a
conflicting write is shown, not overwritten; task text is text; the page runs under its
Content-Security-Policy with no violation; without the Socket.IO client installed the page
says so and still works; logging out in one tab signs out the others. Screenshots go to
test-artifacts/dashboard/. Every tab is its own browser context (a second tab of one profile
starts from the first one's storage): see Browsing.second_tab for why.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    APIRequestContext,
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    Playwright,
    WebSocket,
    expect,
    sync_playwright,
)

from conftest import TEST_SECRET
from processes import Instance
from redis_server import shared_redis_url

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
PASSWORD = "correct horse"
LIVE_MS = 1000  # a change must show in the other tab within this, measured from the write
CATCH_UP_MS = 5000  # a tab back online reconnects and applies its sync pages within this
# Recorded before any page script runs (an init script is not subject to the page's CSP).
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI}`);
});
"""


def remaining_ms(started: float, budget_ms: int = LIVE_MS) -> float:
    """What is left of the budget since `started` (the write), for an expect timeout."""
    return max(1.0, budget_ms - (time.monotonic() - started) * 1000)


# -- servers and browser (once per module: Chromium on 2 cores is slow to start) --------


@dataclass
class Servers:
    a: Instance  # the browsers' instance
    b: Instance  # another instance: same SQLite file, same Redis


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("dashboard")
    env = {"TASKMASTER_STORE_URL": f"sqlite:///{tmp}/shared.db",
           "REDIS_URL": shared_redis_url(), "JWT_SECRET": TEST_SECRET}
    pair = Servers(Instance(tmp, env, name="dash-a"), Instance(tmp, env, name="dash-b"))
    try:
        pair.a.start(wait=False)
        pair.b.start(wait=False)
        pair.a.wait_until("/api/ready", 200)
        pair.b.wait_until("/api/ready", 200)
        yield pair
    finally:
        pair.a.stop()
        pair.b.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    assert CHROMIUM.exists(), (
        "the browser tests need Debian's Chromium at /usr/bin/chromium "
        "(scripts/test installs it: apt-get install chromium)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    yield browser
    browser.close()


# -- tabs -----------------------------------------------------------------------------


@dataclass
class Tab:
    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sockets: list[WebSocket] = field(default_factory=list)

    def column(self, status: str) -> Locator:
        return self.page.locator(f'.column[data-status="{status}"]')

    def card(self, title: str, status: str | None = None) -> Locator:
        scope = self.column(status) if status else self.page.locator(".board")
        return scope.locator(".card").filter(
            has=self.page.locator("h3", has_text=title))

    def cards(self) -> Locator:
        return self.page.locator(".board .card")

    def stat(self, name: str) -> Locator:
        return self.page.locator(f'[data-stat="{name}"]')

    def info(self, name: str) -> Any:
        return self.page.evaluate(f"window.taskmaster.{name}")

    def expect_live(self) -> None:
        expect(self.page.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=CATCH_UP_MS)

    def create(self, title: str, priority: str = "medium", due: str = "") -> None:
        form = self.page.locator("#create-form")
        form.locator('input[name="title"]').fill(title)
        form.locator('select[name="priority"]').select_option(priority)
        form.locator('input[name="due_date"]').fill(due)
        form.get_by_role("button", name="Add task").click()

    def open_editor(self, title: str) -> Locator:
        self.card(title).get_by_role("button", name="Edit").click()
        editor = self.page.locator("#editor")
        expect(editor).to_be_visible()
        return editor

    def csp_violations(self) -> list[str]:
        return list(self.page.evaluate("window.__cspViolations"))


class Browsing:
    """The contexts and tabs of one test; at the end every tab must be free of CSP
    violations and script errors."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.browser, self.url = browser, url
        self.contexts: list[BrowserContext] = []
        self.tabs: list[Tab] = []

    def context(self, **options: Any) -> BrowserContext:
        context = self.browser.new_context(viewport={"width": 1280, "height": 820}, **options)
        context.add_init_script(RECORD_VIOLATIONS)
        self.contexts.append(context)
        return context

    def tab(self, context: BrowserContext | None = None) -> Tab:
        page = (context or self.context()).new_page()
        tab = Tab(page)

        def on_dialog(dialog: Dialog) -> None:
            tab.dialogs.append(dialog.message)
            dialog.dismiss()

        def on_console(message: ConsoleMessage) -> None:
            if "Content Security Policy" in message.text:
                tab.errors.append(f"console: {message.text}")

        page.on("dialog", on_dialog)
        page.on("console", on_console)
        page.on("pageerror", lambda error: tab.errors.append(f"page error: {error}"))
        page.on("websocket", lambda ws: tab.sockets.append(ws))
        page.goto(self.url)
        self.tabs.append(tab)
        return tab

    def second_tab(self, tab: Tab) -> Tab:
        """Another tab of the same browser profile: it starts with the first one's storage
        (so it is signed in from localStorage, as a real second tab is). Its own context,
        because headless Chromium draws a tab that shares a window with the tab being
        driven at one frame per second, which turns every Playwright action there into
        a 1-2 s wait."""
        return self.tab(self.context(storage_state=tab.page.context.storage_state()))

    def register(self, name: str, context: BrowserContext | None = None) -> tuple[Tab, str]:
        tab = self.tab(context)
        email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
        form = tab.page.locator("#auth-form")
        form.locator('input[name="email"]').fill(email)
        form.locator('input[name="password"]').fill(PASSWORD)
        form.locator('input[name="name"]').fill(name)
        form.get_by_role("button", name="Register").click()
        expect(tab.page.locator("#board-view")).to_be_visible()
        tab.expect_live()
        return tab, email

    def log_in(self, email: str, context: BrowserContext | None = None) -> Tab:
        tab = self.tab(context)
        form = tab.page.locator("#auth-form")
        form.locator('input[name="email"]').fill(email)
        form.locator('input[name="password"]').fill(PASSWORD)
        form.get_by_role("button", name="Log in").click()
        expect(tab.page.locator("#board-view")).to_be_visible()
        tab.expect_live()
        return tab

    def check_and_close(self) -> None:
        problems = []
        for number, tab in enumerate(self.tabs):
            if tab.page.is_closed():
                continue
            problems += [f"tab {number}: CSP {v}" for v in tab.csp_violations()]
            problems += [f"tab {number}: {e}" for e in tab.errors]
            problems += [f"tab {number}: dialog {d!r}" for d in tab.dialogs]
        for context in self.contexts:
            context.close()
        assert not problems, problems


@pytest.fixture
def browsing(browser: Browser, servers: Servers) -> Iterator[Browsing]:
    session = Browsing(browser, servers.a.url + "/")
    yield session
    session.check_and_close()


@pytest.fixture
def rest_b(playwright: Playwright, servers: Servers) -> Iterator[APIRequestContext]:
    """REST on the other instance."""
    context = playwright.request.new_context(base_url=servers.b.url)
    yield context
    context.dispose()


def screenshot(tab: Tab, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    tab.page.screenshot(path=str(path), full_page=True, animations="disabled")
    print(f"screenshot: {path}")
    return path


def token_of(tab: Tab) -> str:
    return str(tab.page.evaluate("localStorage.getItem('taskmaster.token')"))


# -- the tests ------------------------------------------------------------------------


def test_two_tabs_stay_in_step_and_another_user_sees_nothing(browsing: Browsing) -> None:
    first, _ = browsing.register("Ada")
    second = browsing.second_tab(first)  # signed in from localStorage
    second.expect_live()
    other, _ = browsing.register("Bob")

    started = time.monotonic()
    first.create("Write the report", priority="high", due="2030-01-15")
    expect(second.card("Write the report", "todo")).to_be_visible(timeout=remaining_ms(started))
    expect(first.card("Write the report", "todo")).to_be_visible()
    expect(second.stat("todo")).to_have_text("1", timeout=LIVE_MS)

    editor = second.open_editor("Write the report")
    editor.locator('input[name="title"]').fill("Write the final report")
    editor.locator('textarea[name="description"]').fill("Numbers from Q3, then the summary.")
    started = time.monotonic()
    editor.get_by_role("button", name="Save").click()
    expect(first.card("Write the final report")).to_contain_text(
        "Numbers from Q3", timeout=remaining_ms(started))

    started = time.monotonic()
    first.card("Write the final report").get_by_role(
        "button", name="Move to In progress").click()
    expect(second.card("Write the final report", "in_progress")).to_be_visible(
        timeout=remaining_ms(started))
    expect(second.stat("in_progress")).to_have_text("1", timeout=LIVE_MS)
    expect(second.stat("todo")).to_have_text("0", timeout=LIVE_MS)

    started = time.monotonic()
    second.card("Write the final report").drag_to(second.column("done"))
    expect(first.card("Write the final report", "done")).to_be_visible(
        timeout=remaining_ms(started))
    expect(first.stat("done")).to_have_text("1", timeout=LIVE_MS)
    screenshot(first, "two-tabs")

    started = time.monotonic()
    second.card("Write the final report").get_by_role("button", name="Delete").click()
    expect(first.cards()).to_have_count(0, timeout=remaining_ms(started))
    expect(first.stat("total")).to_have_text("0", timeout=LIVE_MS)

    # Bob's own task reaches Bob; nothing of Ada's ever reached his page.
    other.create("Bob's errand")
    expect(other.card("Bob's errand")).to_be_visible()
    expect(other.cards()).to_have_count(1)
    expect(other.stat("total")).to_have_text("1", timeout=LIVE_MS)
    assert other.info("tasks") == 1
    assert first.info("tasks") == 0 and second.info("tasks") == 0
    expect(first.card("Bob's errand")).to_have_count(0)


def test_an_offline_tab_catches_up_through_sync_without_reloading(
        browsing: Browsing, rest_b: APIRequestContext) -> None:
    online, email = browsing.register("Cleo")
    offline_context = browsing.context()
    away = browsing.log_in(email, offline_context)
    online.create("Stays the same")
    online.create("Moves while away")
    online.create("Deleted while away")
    expect(away.cards()).to_have_count(3, timeout=LIVE_MS)
    away.page.evaluate("window.__marker = 'the same page'")
    syncs_before, cursor_before = away.info("syncPages"), away.info("cursor")
    assert away.info("fullLoads") == 1

    offline_context.set_offline(True)
    expect(away.page.locator("#connection")).to_have_attribute("data-state", "offline")
    sockets = [ws for ws in away.sockets if "/socket.io/" in ws.url]
    assert sockets, "the tab never opened its websocket"
    for ws in sockets:  # the websocket really went down, not just the indicator
        if not ws.is_closed():
            ws.wait_for_event("close", timeout=CATCH_UP_MS)
    assert away.info("socketConnected") is False

    online.create("Created while away", priority="high")
    online.card("Moves while away").get_by_role("button", name="Move to In progress").click()
    online.card("Deleted while away").get_by_role("button", name="Delete").click()
    made = rest_b.post("/api/tasks", data={"title": "Made on the other instance"},
                       headers={"Authorization": f"Bearer {token_of(online)}"})
    assert made.status == 201, made.text()
    expect(online.cards()).to_have_count(4, timeout=LIVE_MS)
    expect(online.card("Made on the other instance")).to_be_visible(timeout=LIVE_MS)
    # Nothing reached the offline tab.
    assert away.info("cursor") == cursor_before
    expect(away.card("Created while away")).to_have_count(0)
    expect(away.card("Deleted while away")).to_have_count(1)

    offline_context.set_offline(False)
    away.expect_live()
    expect(away.card("Created while away", "todo")).to_be_visible(timeout=CATCH_UP_MS)
    expect(away.card("Made on the other instance", "todo")).to_be_visible(timeout=CATCH_UP_MS)
    expect(away.card("Moves while away", "in_progress")).to_be_visible(timeout=CATCH_UP_MS)
    expect(away.card("Deleted while away")).to_have_count(0, timeout=CATCH_UP_MS)
    expect(away.stat("total")).to_have_text("4", timeout=CATCH_UP_MS)
    # The same page (no reload, no second full load), brought up to date by sync pages.
    assert away.page.evaluate("window.__marker") == "the same page"
    assert away.info("fullLoads") == 1
    assert away.info("syncPages") > syncs_before
    assert away.info("cursor") == online.info("cursor")
    expect(away.page.locator("body")).to_have_attribute(
        "data-sync-pages", str(away.info("syncPages")))

    # And it is live again.
    started = time.monotonic()
    online.create("After the return")
    expect(away.card("After the return")).to_be_visible(timeout=remaining_ms(started))


def test_a_rest_change_on_another_instance_appears_within_a_second(
        browsing: Browsing, rest_b: APIRequestContext) -> None:
    tab, _ = browsing.register("Dan")
    auth = {"Authorization": f"Bearer {token_of(tab)}"}

    started = time.monotonic()
    created = rest_b.post("/api/tasks", headers=auth,
                          data={"title": "From instance B", "priority": "high"})
    assert created.status == 201, created.text()
    expect(tab.card("From instance B", "todo")).to_be_visible(timeout=remaining_ms(started))
    task = created.json()["task"]

    started = time.monotonic()
    moved = rest_b.patch(f"/api/tasks/{task['id']}", data={"status": "done"},
                         headers={**auth, "If-Match": f'"{task["version"]}"'})
    assert moved.status == 200, moved.text()
    expect(tab.card("From instance B", "done")).to_be_visible(timeout=remaining_ms(started))

    started = time.monotonic()
    deleted = rest_b.delete(f"/api/tasks/{task['id']}", headers=auth)
    assert deleted.status == 200, deleted.text()
    expect(tab.cards()).to_have_count(0, timeout=remaining_ms(started))


def test_a_title_with_markup_is_shown_as_text(browsing: Browsing) -> None:
    tab, _ = browsing.register("Eve")
    other = browsing.second_tab(tab)
    other.expect_live()
    title = "<img src=x onerror=alert(1)>"
    tab.create(title, priority="high")
    for each in (tab, other):
        card = each.card(title)
        expect(card).to_be_visible(timeout=LIVE_MS)
        expect(card.locator("h3")).to_have_text(title)
        expect(each.page.locator(".board img")).to_have_count(0)
    editor = tab.open_editor(title)
    editor.locator('textarea[name="description"]').fill("<b>bold?</b><script>alert(2)</script>")
    editor.get_by_role("button", name="Save").click()
    expect(other.card(title).locator(".desc")).to_have_text(
        "<b>bold?</b><script>alert(2)</script>", timeout=LIVE_MS)
    expect(other.page.locator(".board b, .board script")).to_have_count(0)
    assert tab.dialogs == [] and other.dialogs == []  # no alert ran (checked again at the end)


def test_a_conflict_is_shown_and_nothing_is_overwritten(browsing: Browsing) -> None:
    mine, _ = browsing.register("Fay")
    theirs = browsing.second_tab(mine)
    theirs.expect_live()
    mine.create("Plan the offsite")
    expect(theirs.card("Plan the offsite")).to_be_visible(timeout=LIVE_MS)

    editor = mine.open_editor("Plan the offsite")  # holds version 1
    editor.locator('input[name="title"]').fill("Plan the offsite (mine)")

    other_editor = theirs.open_editor("Plan the offsite")
    other_editor.locator('input[name="title"]').fill("Plan the offsite (theirs)")
    other_editor.get_by_role("button", name="Save").click()
    expect(mine.card("Plan the offsite (theirs)")).to_be_attached(timeout=LIVE_MS)

    editor.get_by_role("button", name="Save").click()
    conflict = mine.page.locator("#conflict")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text("changed elsewhere")
    expect(conflict).to_contain_text("Plan the offsite (theirs)")
    expect(conflict).to_contain_text("Your change: title “Plan the offsite (mine)”")
    expect(mine.card("Plan the offsite (theirs)")).to_be_visible()
    expect(mine.card("Plan the offsite (mine)")).to_have_count(0)
    expect(theirs.card("Plan the offsite (theirs)")).to_be_visible()
    screenshot(mine, "conflict")

    started = time.monotonic()
    conflict.get_by_role("button", name="Apply my change anyway").click()
    expect(theirs.card("Plan the offsite (mine)")).to_be_visible(timeout=remaining_ms(started))
    expect(conflict).to_be_hidden()
    expect(mine.card("Plan the offsite (mine)")).to_have_attribute("data-version", "3")


def test_filters_and_search_stay_live(browsing: Browsing) -> None:
    tab, _ = browsing.register("Gus")
    other = browsing.second_tab(tab)
    other.expect_live()
    tab.create("Buy coffee", priority="high")
    tab.create("Café with Ana", priority="medium")
    tab.create("Write the report", priority="low")
    expect(other.cards()).to_have_count(3, timeout=LIVE_MS)

    search = other.page.locator("#search")
    search.fill("caf")  # the server's search: word prefixes, accents folded
    expect(other.cards()).to_have_count(1)
    expect(other.card("Café with Ana")).to_be_visible()
    search.fill("cof")
    expect(other.cards()).to_have_count(1)
    expect(other.card("Buy coffee")).to_be_visible()

    started = time.monotonic()
    tab.create("Coffee beans", priority="low")  # matches the search: shows up live
    expect(other.cards()).to_have_count(2, timeout=remaining_ms(started))

    search.fill("")
    other.page.locator("#filter-priority").select_option("high")
    expect(other.cards()).to_have_count(1)
    expect(other.card("Buy coffee")).to_be_visible()
    other.page.locator("#filter-priority").select_option("")
    other.page.locator("#filter-status").select_option("done")
    expect(other.cards()).to_have_count(0)
    started = time.monotonic()
    tab.card("Write the report").get_by_role("button", name="Move to In progress").click()
    tab.card("Write the report").get_by_role("button", name="Move to Done").click()
    expect(other.card("Write the report", "done")).to_be_visible(timeout=2 * LIVE_MS)
    expect(other.cards()).to_have_count(1)
    assert time.monotonic() - started < 2 * LIVE_MS / 1000


def test_logging_out_in_one_tab_signs_out_the_others(browsing: Browsing) -> None:
    tab, _ = browsing.register("Jo")
    other = browsing.second_tab(tab)
    other.expect_live()
    tab.page.get_by_role("button", name="Log out").click()
    expect(tab.page.locator("#auth-view")).to_be_visible()
    # The server revoked the token and ended the other tab's socket with session:ended.
    expect(other.page.locator("#auth-view")).to_be_visible(timeout=CATCH_UP_MS)
    expect(other.page.locator("#auth-error")).to_contain_text("revoked")
    assert other.page.evaluate("localStorage.getItem('taskmaster.token')") is None


def test_a_busy_board_screenshot(browsing: Browsing, rest_b: APIRequestContext) -> None:
    tab, _ = browsing.register("Hana")
    auth = {"Authorization": f"Bearer {token_of(tab)}"}
    tasks = [
        ("Draft the Q3 report", "high", "todo", "2020-01-10", "Numbers from finance first."),
        ("Book the offsite venue", "medium", "todo", "2099-03-01", ""),
        ("Review pull requests", "low", "todo", None, "Two are waiting since Monday."),
        ("Migrate the search index", "high", "in_progress", "2099-02-20", "FTS5, per scope."),
        ("Update the onboarding guide", "medium", "in_progress", None, ""),
        ("Ship the dashboard", "high", "done", None, "Live in every tab."),
        ("Rotate the JWT secret", "medium", "done", None, ""),
    ]
    for title, priority, status, due, description in tasks:
        body = {"title": title, "priority": priority, "status": status, "due_date": due,
                "description": description}
        assert rest_b.post("/api/tasks", headers=auth, data=body).status == 201
    expect(tab.cards()).to_have_count(len(tasks), timeout=LIVE_MS)
    expect(tab.stat("total")).to_have_text(str(len(tasks)), timeout=LIVE_MS)
    expect(tab.stat("overdue")).to_have_text("1", timeout=LIVE_MS)
    assert screenshot(tab, "board").stat().st_size > 10_000


def test_the_csp_check_catches_a_violation(browsing: Browsing) -> None:
    """The detector the other tests rely on works: an inline style is reported."""
    tab = browsing.tab()
    response = tab.page.request.get(browsing.url)
    assert "style-src 'self'" in response.headers["content-security-policy"]
    with tab.page.expect_console_message(
            lambda message: "Content Security Policy" in message.text, timeout=2000):
        tab.page.evaluate("document.body.setAttribute('style', 'color: red')")
    tab.page.wait_for_function("window.__cspViolations.length > 0", timeout=2000)
    assert any("style-src" in v for v in tab.csp_violations())
    assert any("Content Security Policy" in e for e in tab.errors)
    browsing.tabs.remove(tab)  # this violation was on purpose


def test_without_the_socket_client_the_page_says_so_and_still_works(
        browser: Browser, tmp_path: Path) -> None:
    web = tmp_path / "web"
    shutil.copytree(ROOT / "web", web, ignore=shutil.ignore_patterns("node_modules"))
    instance = Instance(tmp_path, {"TASKMASTER_STORE_URL": f"sqlite:///{tmp_path}/t.db",
                                   "JWT_SECRET": TEST_SECRET,
                                   "TASKMASTER_HTTP_DASHBOARD_DIR": str(web)},
                        name="dash-no-client")
    try:
        instance.start()
        session = Browsing(browser, instance.url + "/")
        try:
            tab = session.tab()
            form = tab.page.locator("#auth-form")
            form.locator('input[name="email"]').fill(f"ivy-{uuid.uuid4().hex[:8]}@example.com")
            form.locator('input[name="password"]').fill(PASSWORD)
            form.get_by_role("button", name="Register").click()
            expect(tab.page.locator("#notice")).to_contain_text("not installed")
            expect(tab.page.locator("#connection")).to_have_attribute("data-state", "offline")
            expect(tab.page.locator("#connection-text")).to_contain_text("not installed")
            tab.create("Still works over REST")
            expect(tab.card("Still works over REST")).to_be_visible()
            expect(tab.stat("total")).to_have_text("1")
        finally:
            session.check_and_close()
    finally:
        instance.stop()
