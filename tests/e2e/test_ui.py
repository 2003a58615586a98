"""The web UI in a real browser (Debian's Chromium driven by Playwright), on one server with the
quickstart's data and API keys on: every page loads with no console error and no failed
request, passes axe-core, fits 1366×768 without sideways scrolling and holds no PII value; the
lineage graph leads to a model; a promotion made with the keyboard moves the alias the API
reports; a read-only key sees no action and is refused if it posts anyway."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from headwater import Project
from tests.e2e.servers import free_port, start_server
from tests.e2e.test_quickstart import EMAIL, ENV, quickstart

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
# where the screenshots go (docs/screenshots/ holds small copies of them)
SHOTS = (
    Path(os.environ.get("HEADWATER_SCREENSHOTS", ""))
    if os.environ.get("HEADWATER_SCREENSHOTS")
    else None
)
PAGES = {
    "overview": "/ui",
    "streams": "/ui/streams",
    "stream": "/ui/streams/signups",
    "features": "/ui/features",
    "feature": "/ui/features/spend",
    "lineage": "/ui/lineage",
    "models": "/ui/models",
    "model": "/ui/models/churn",
    "compare": "/ui/models/churn/compare?a=1&b=2",
    "services": "/ui/services",
    "service": "/ui/services/retention",
    "monitoring": "/ui/monitoring",
    "monitored": "/ui/monitoring/churn",
}


class Shop:
    def __init__(self, folder: Path, base: str, keys: dict[str, str]) -> None:
        self.folder, self.base, self.keys = folder, base, keys


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Iterator[Shop]:
    folder = tmp_path_factory.mktemp("ui") / "shop"
    proc = quickstart(folder, users=300, days=35)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    toml = folder / "headwater.toml"
    toml.write_text(toml.read_text().replace("[server]\n", '[server]\nauth = "keys"\n'))
    with Project(folder) as p:
        owner = p.definitions.models["churn"].owner
        keys = {
            "admin": p.create_key("platform", ["admin"])[1],
            "owner": p.create_key(owner, [f"{owner}:*", "alerts:ack"])[1],
            "reader": p.create_key("analysts", ["predict:retention"])[1],
        }
    port = free_port()
    old = os.environ.get("HEADWATER_PII_SECRET")
    os.environ.pop("HEADWATER_PII_SECRET", None)  # the quickstart's own secret file serves
    try:
        server = start_server(folder, port)
    finally:
        if old is not None:
            os.environ["HEADWATER_PII_SECRET"] = old
    try:
        yield Shop(folder, f"http://127.0.0.1:{port}", keys)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: apt-get install chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


def signed_in(browser: Browser, shop: Shop, key: str) -> BrowserContext:
    """A browser session signed in through the login page, as a person does."""
    context = browser.new_context(viewport={"width": 1366, "height": 768}, bypass_csp=True)
    page = context.new_page()
    page.goto(shop.base + "/ui/models")
    assert "/ui/login" in page.url
    page.get_by_label("API key").fill(shop.keys[key])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(shop.base + "/ui/models")
    page.close()
    return context


class Watch:
    """Console errors and failed requests of a page."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("requestfailed", lambda r: self.problems.append(f"failed {r.url}"))
        page.on("response", self._response)

    def _console(self, message) -> None:  # type: ignore[no-untyped-def]
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")

    def _response(self, response) -> None:  # type: ignore[no-untyped-def]
        if response.status >= 400:
            self.problems.append(f"{response.status} {response.url}")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where every page's screenshot goes: ``$HEADWATER_SCREENSHOTS`` (docs/screenshots/ holds
    the ones made so), else a temporary folder."""
    chosen = os.environ.get("HEADWATER_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_every_page_loads_clean_fits_the_screen_passes_axe_and_shows_no_pii(browser, shop, shots):
    context = signed_in(browser, shop, "admin")
    page = context.new_page()
    watch = Watch(page)
    for name, url in PAGES.items():
        page.goto(shop.base + url)
        page.wait_for_load_state("networkidle")
        assert page.locator("h1").count() == 1, name
        html = page.content()
        assert not EMAIL.search(html.encode()), f"a clear email on {name}"
        assert "Traceback" not in html and "Not found" not in page.title(), name
        wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"{name} scrolls sideways by {wide}px at 1366x768"
        page.add_script_tag(path=str(AXE))
        found = page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))"
        )
        serious = [v for v in found if v["impact"] in ("critical", "serious")]
        assert serious == [], (name, serious)
        page.screenshot(path=str(shots / f"{name}.png"))
    assert watch.problems == []
    assert sorted(p.stem for p in shots.glob("*.png")) == sorted(PAGES)
    context.close()


def test_pages_hold_the_figures_the_platform_records(browser, shop):
    context = signed_in(browser, shop, "admin")
    page = context.new_page()
    page.goto(shop.base + "/ui/streams/signups")
    schema = page.locator("section", has=page.locator("h2", has_text="Schema"))
    assert "PII: pseudonymize" in schema.inner_text()
    latest = page.locator("section", has=page.locator("h2", has_text="Latest events"))
    assert latest.locator(".badge", has_text="mock").count() == 10  # every email is a fake
    summaries = page.locator("section", has=page.locator("h2", has_text="Field summaries"))
    email_row = summaries.locator("tr", has=page.locator("td", has_text=re.compile("^email$")))
    assert email_row.locator("td").nth(5).inner_text() == "masked"
    page.goto(shop.base + "/ui/streams/purchases")
    dead = page.locator("section", has=page.locator("h2", has_text="Dead letters"))
    assert "expected float" in dead.inner_text()  # the quickstart's two rejected events
    amounts = page.locator("figure", has=page.locator("figcaption", has_text="amount: histogram"))
    bins = amounts.locator("rect title").all_text_contents()
    assert len(bins) == 12 and all(re.match(r"events · [\d.e+-]+–[\d.e+-]+: ", b) for b in bins)
    with Project(shop.folder) as p:
        versions = p.registry.versions("churn")
        importance = p.registry.version("churn", "champion")["importance"]
    top, share = max(importance.items(), key=lambda kv: kv[1])
    page.goto(shop.base + "/ui/models/churn")
    # a hover value on every mark of a chart: the importance bars name feature and value
    titles = page.locator("svg.chart rect title").all_text_contents()
    assert f"{top}: {share:.4g}" in titles, titles[:5]
    assert page.locator("#v1").count() == 1 and page.locator(f"#v{len(versions)}").count() == 1
    page.goto(shop.base + "/ui/monitoring/churn")
    drift = page.locator("section", has=page.locator("h2", has_text="Drift per feature"))
    assert "<title>PSI alert line 0.25</title>" in drift.inner_html()
    context.close()


def test_the_lineage_graph_leads_to_a_model_and_filters_by_team(browser, shop):
    context = signed_in(browser, shop, "admin")
    page = context.new_page()
    page.goto(shop.base + "/ui/lineage")
    every = page.locator("a.node").count()
    page.get_by_label("Team").select_option("payments@shop.example")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"team=payments"))
    assert 0 < page.locator("a.node").count() < every
    assert page.locator('a.node[data-node="stream:purchases"]').count() == 1
    page.locator('a.node[data-node="model:churn"]').click()
    page.wait_for_url(shop.base + "/ui/models/churn")
    assert page.locator("h1").inner_text() == "churn"
    context.close()


def test_a_promotion_made_with_the_keyboard_moves_the_alias_the_api_reports(browser, shop):
    api = {"authorization": f"Bearer {shop.keys['admin']}"}
    before = _champion(shop, api)
    context = signed_in(browser, shop, "owner")
    page = context.new_page()
    page.goto(shop.base + "/ui/models/churn")
    button = page.get_by_role("button", name="Promote to champion").first
    target = int(re.search(r"v(\d+)", button.get_attribute("data-title") or "").group(1))
    assert target != before
    for _ in range(200):  # Tab until the button has the focus, as a keyboard user does
        page.keyboard.press("Tab")
        if button.evaluate("b => b === document.activeElement"):
            break
    else:
        raise AssertionError("the promote button is not reachable with Tab")
    outline = button.evaluate("b => getComputedStyle(b).outlineStyle")
    assert outline not in ("none", ""), "no visible focus"
    page.keyboard.press("Enter")
    dialog = page.locator("dialog#confirm")
    assert dialog.is_visible()
    page.keyboard.type("better on live traffic")
    page.keyboard.press("Tab")  # to Confirm
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert _champion(shop, api) == target
    history = page.locator("section", has=page.locator("h2", has_text="Aliases")).inner_text()
    assert "better on live traffic" in history
    context.close()


def test_a_read_only_key_sees_no_action_and_is_refused_if_it_posts_anyway(browser, shop):
    context = signed_in(browser, shop, "reader")
    page = context.new_page()
    page.goto(shop.base + "/ui/models/churn")
    assert page.locator("button[data-action]").count() == 0
    page.goto(shop.base + "/ui/monitoring")
    assert page.get_by_role("button", name="Acknowledge").count() == 0
    page.goto(shop.base + "/ui/streams/purchases")  # another team's events: not shown
    assert "are shown to its team (payments@shop.example)" in page.content()
    assert page.locator("text=Field summaries").count() == 1
    assert page.locator("figure", has=page.locator("figcaption", has_text="amount")).count() == 0
    answer = page.evaluate(
        """async () => {
            const r = await fetch('/v1/models/churn/aliases/champion', {method: 'POST',
              headers: {'content-type': 'application/json'},
              body: JSON.stringify({version: 1, reason: 'sneaky'})});
            return [r.status, (await r.json()).error];
        }"""
    )
    assert answer == [403, "Forbidden"]
    context.close()


def test_an_alert_is_acknowledged_from_the_ui(browser, shop):
    context = signed_in(browser, shop, "owner")
    page = context.new_page()
    page.goto(shop.base + "/ui/monitoring/churn")
    buttons = page.get_by_role("button", name="Acknowledge")
    open_before = buttons.count()
    assert open_before > 0
    buttons.first.click()
    page.get_by_label("Reason (kept in the history)").fill("looked at it: seasonal")
    with page.expect_navigation():
        page.get_by_role("button", name="Confirm").click()
    assert page.get_by_role("button", name="Acknowledge").count() == open_before - 1
    with Project(shop.folder) as p:
        acked = [a for a in p.alerts.list() if a.ack]
    assert [a.ack["reason"] for a in acked] == ["looked at it: seasonal"]
    context.close()


def test_the_ui_asks_for_a_key_and_keeps_it_only_for_the_session(browser, shop):
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.goto(shop.base + "/ui/monitoring/churn?x=1")
    assert page.url.startswith(shop.base + "/ui/login?next=")
    page.get_by_label("API key").fill("hw_0000000000000000_" + "x" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("[data-error]")).to_have_text("unknown API key")
    page.get_by_label("API key").fill(shop.keys["reader"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(shop.base + "/ui/monitoring/churn?x=1")
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] == -1
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/ui/login"))
    assert context.cookies() == []
    context.close()


def test_a_cookie_write_needs_the_uis_origin_and_pages_need_a_key(shop):
    cookie = {"headwater_key": shop.keys["admin"]}
    with httpx.Client(base_url=shop.base, cookies=cookie) as client:
        body = {"version": 1, "reason": "forged"}
        refused = client.post("/v1/models/churn/aliases/challenger", json=body)
        assert refused.status_code == 403 and "Origin" in refused.json()["detail"]
        other = client.post(
            "/v1/models/churn/aliases/challenger",
            json=body,
            headers={"origin": "https://evil.example"},
        )
        assert other.status_code == 403
        page = client.get("/ui/models")
        assert (
            page.status_code == 200
            and "default-src 'self'" in page.headers["content-security-policy"]
        )
    anonymous = httpx.get(shop.base + "/ui/models", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/ui/login?next=%2Fui%2Fmodels"
    assert httpx.get(shop.base + "/ui/assets/ui.css").status_code == 200  # public


def test_headwater_ui_prints_the_url_of_the_running_server_or_starts_one(shop):
    port = shop.base.rsplit(":", 1)[1]
    env = {k: v for k, v in ENV.items() if k != "HEADWATER_PII_SECRET"}
    command = [sys.executable, "-m", "headwater", "ui", "--project", str(shop.folder)]
    found = subprocess.run(
        [*command, "--port", port], capture_output=True, text=True, timeout=60, env=env
    )
    assert found.returncode == 0 and found.stdout.strip() == shop.base + "/ui", found.stderr
    fresh = free_port()
    started = subprocess.Popen(
        [*command, "--port", str(fresh)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert started.stdout is not None
        line = started.stdout.readline().strip()
        assert line == f"http://127.0.0.1:{fresh}/ui"
        assert httpx.get(line, follow_redirects=False).status_code == 303  # keys are on
    finally:
        started.terminate()
        started.wait(timeout=30)
        assert started.stdout is not None
        started.stdout.close()


def _champion(shop: Shop, headers: dict[str, str]) -> int:
    models = httpx.get(shop.base + "/v1/models", headers=headers).json()["models"]
    return next(m for m in models if m["name"] == "churn")["aliases"]["champion"]


def test_the_screenshots_in_the_docs_are_small_pngs():
    folder = Path(__file__).parents[2] / "docs" / "screenshots"
    shots = sorted(folder.glob("*.png"))
    assert {s.stem for s in shots} >= set(PAGES) - {"compare", "feature", "stream", "service"}
    assert all(s.stat().st_size < 400_000 for s in shots)
    assert shutil.which("chromium") or Path(CHROMIUM).exists()
