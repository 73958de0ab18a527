"""The Insights page in headless Chromium (Debian's), against the API, the dev server and a
worker: a reviewer signs in, and sees the charts drawn by the vendored Chart.js (no CDN,
no CSP violation) and the tables. The screenshot is kept: test-artifacts/insights.png.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Request, expect
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from hitl import contract
from hitl.api.routers.inbox import WEB_FILES
from tests.conftest import make_logs
from tests.helpers import decision, start_run, turn, wait_pending
from tests.review_api import ServedApi, write_reviewers
from tests.test_inbox import browser  # noqa: F401  (the fixture: Debian's Chromium)

pytestmark = pytest.mark.usefixtures("worker")
ROOT = Path(__file__).resolve().parent.parent
HOSTILE_REASON = "<img src=x onerror=window.__pwned=1>\u202eevil\x1b[2K"


@pytest.fixture
async def api(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[tuple[ServedApi, dict]]:
    reviewers = tmp_path / "reviewers.toml"
    tokens = write_reviewers(reviewers)
    async with ServedApi(env.client, reviewers) as served:
        yield served, tokens


async def test_insights_page_draws_its_charts_under_the_csp(
    api: tuple[ServedApi, dict[str, str]],
    browser: BrowserContext,  # noqa: F811
    client: Client,
    task_queue: str,
    tmp_path: Path,
) -> None:
    served, tokens = api
    workspace = make_logs(tmp_path / "w")
    # Twenty times the same action, approved unchanged, under a name that, shown as markup,
    # would run script, and, shown raw, would read right to left: a candidate, as text.
    hostile = f"logs/<img src=x onerror=window.__pwned=1>\u202e{uuid.uuid4().hex[:8]}.log"
    calls = [("delete_files", {"paths": [hostile]})] * 20 + [("delete_files", {"paths": ["x"]})]
    handle = await start_run(
        client,
        task_queue,
        workspace,
        # A turn asks for at most a few calls: these come in three turns.
        script=[turn(*calls[i : i + 7]) for i in range(0, 21, 7)],
    )
    decided: set[str] = set()
    while len(decided) < 21:
        for record in await wait_pending(handle):
            if record.id in decided:
                continue
            if record.action_json.args["paths"] == ["x"]:
                await handle.signal(
                    contract.SIGNAL_REJECT, decision(record.id, "dave", reason=HOSTILE_REASON)
                )
            else:
                await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "bob"))
            decided.add(record.id)
    await handle.result()

    page = await browser.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text} at {m.location['url']}"))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    outside: list[str] = []

    def seen(request: Request) -> None:
        if not request.url.startswith(served.url):
            outside.append(request.url)

    page.on("request", seen)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    # The inbox links to it.
    await page.goto(served.url + "/")
    await page.click("#to-insights")
    await expect(page).to_have_title("Insights · hitl-agents")
    await page.fill("#token", tokens["bob"])
    await page.click("#signin button[type=submit]")
    await expect(page.locator("#who")).to_have_text("signed in as bob")
    await expect(page.locator("body")).to_have_attribute("data-loaded", "30d", timeout=60_000)

    assert await page.evaluate("typeof window.Chart") == "function", "the vendored script ran"
    for chart in ("outcomes-chart", "wait-chart", "load-chart"):
        drawn = await page.evaluate(
            "(id) => { const c = Chart.getChart(document.getElementById(id));"
            " return c ? [c.canvas.width, c.data.datasets.length] : null }",
            chart,
        )
        assert drawn is not None and drawn[0] > 0 and drawn[1] >= 1, chart
    stacked = await page.evaluate(
        "() => { const c = Chart.getChart(document.getElementById('outcomes-chart'));"
        " const i = c.data.labels.indexOf('delete_files');"
        " return Object.fromEntries(c.data.datasets.map(d => [d.label, d.data[i]])) }"
    )
    assert stacked["approved"] >= 20 and stacked["rejected"] >= 1

    reviewers = page.locator("#reviewers tbody tr")
    await expect(reviewers.filter(has_text="bob")).to_have_count(1)
    await expect(reviewers.filter(has_text="dave")).to_have_count(1)
    shown_name = hostile.replace("\u202e", "\\u202e")
    candidate = page.locator("#candidates tbody tr").filter(has_text=shown_name)
    await expect(candidate).to_have_count(1)
    await expect(candidate.locator("td").first).to_have_text("action")
    await expect(candidate.locator("td").nth(3)).to_have_text("20 of 20")
    assert await page.locator("#candidates img").count() == 0
    assert await page.evaluate("window.__pwned") is None

    screenshot = tmp_path / "insights.png"
    await page.screenshot(path=str(screenshot), full_page=True)
    kept = ROOT / "test-artifacts" / "insights.png"
    kept.parent.mkdir(exist_ok=True)
    shutil.copyfile(screenshot, kept)
    assert errors == []
    assert outside == [], "nothing but this server is asked for anything"
    assert not [line for line in console if "Content Security Policy" in line], console
    # The browser asks for /favicon.ico on its own (there is none): the only miss allowed.
    assert failed == []
    assert [c for c in console if c.startswith("error") and "/favicon.ico" not in c] == []


async def test_the_page_and_the_vendored_library_are_served_with_the_csp(
    api: tuple[ServedApi, dict[str, str]],
) -> None:
    served, _ = api
    async with served.http() as anyone:
        for name in WEB_FILES:
            path = "/" if name == "index.html" else f"/{name}"
            answer = await anyone.get(path)
            assert answer.status_code == 200, path
            assert "script-src 'self'" in answer.headers["content-security-policy"]
        script = (await anyone.get("/vendor/chart.umd.min.js")).text
        assert script.startswith("/*!\n * Chart.js v4") and "MIT" in script[:300]
        licence = (await anyone.get("/vendor/chart.js.LICENSE.md")).text
        assert "Permission is hereby granted" in licence
        page = (await anyone.get("/insights.html")).text
        assert "<script>" not in page and "style=" not in page and "http" not in page
        assert '<a href="/insights.html"' in (await anyone.get("/")).text


def test_the_page_puts_text_in_only_through_text_content() -> None:
    for name in ("insights.js", "common.js"):
        script = (ROOT / "hitl" / "web" / name).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in script, (name, sink)
